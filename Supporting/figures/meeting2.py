"""Meeting 2's figures."""
