"""Meeting 3's figures: attention, from scores to heads."""

from figures import figure
from figures.kit import MUTED, Canvas

TOKENS = ["Your", "journey", "starts", "with", "one", "step"]


@figure("m3_causal_mask", "The causal mask",
        alt="A 6 by 6 grid of attention scores for the tokens 'Your journey starts with one "
            "step'. Row i is the query of token i. Cells on and below the diagonal are kept; "
            "cells above it, the future tokens, are set to -inf by causal_mask(6) before the "
            "softmax, so each row's weights cover only the token itself and those before it.",
        shows=("causal_mask(6)", "-inf"))
def causal_mask() -> Canvas:
    c = Canvas(760, 290)
    x, y, cell = 130, 60, 34
    for i, token in enumerate(TOKENS):
        c.text(x - 10, y + (i + 0.5) * cell, token, ha="right", mono=True, size=10)
        c.text(x + (i + 0.5) * cell, y - 10, token, rotation=40, ha="left", va="bottom",
               mono=True, size=9)
    values = [["" if j <= i else "-inf" for j in range(6)] for i in range(6)]
    fills = [["blue" if j <= i else "grey" for j in range(6)] for i in range(6)]
    c.grid(x, y, values, cell=cell, fills=fills, size=8)
    c.text(x - 80, y + 3 * cell, "queries", rotation=90, color=MUTED)
    c.text(x + 6 * cell + 24, y + 1.2 * cell, "masked_fill(~causal_mask(6), -inf)", ha="left",
           mono=True, size=10)
    c.text(x + 6 * cell + 24, y + 2.2 * cell, "future tokens: weight 0 after softmax",
           ha="left", size=10, color=MUTED)
    c.box(x + 6 * cell + 24, y + 3.5 * cell, 18, 18, color="blue", radius=2)
    c.text(x + 6 * cell + 50, y + 3.5 * cell + 9, "kept: the token and its past", ha="left",
           size=10)
    c.box(x + 6 * cell + 24, y + 4.5 * cell, 18, 18, color="grey", radius=2)
    c.text(x + 6 * cell + 50, y + 4.5 * cell + 9, "masked", ha="left", size=10)
    return c
