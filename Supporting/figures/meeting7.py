"""Meeting 7's figures."""
