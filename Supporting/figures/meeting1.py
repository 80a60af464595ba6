"""Meeting 1's figures."""
