"""Meeting 4's figures."""
