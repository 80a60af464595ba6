"""Meeting 6's figures."""
