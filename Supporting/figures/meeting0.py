"""Meeting 0's figures."""
