"""Meeting 5's figures."""
