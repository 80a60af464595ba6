"""Meeting 4's figures: the pieces of a block, GPT-2's shapes, and generating with a KV cache."""

import math

from figures import figure
from figures.kit import COLORS, INK, MUTED, Canvas

# Notebook 1's LayerNorm example: two tokens of five features, and what its cell prints.
LN_ROWS = [(["1.0", "2.0", "3.0", "4.0", "10.0"], "4.0", "10.0",
            ["-0.949", "-0.632", "-0.316", "0.0", "1.897"]),
           (["-20.0", "0.0", "5.0", "5.0", "10.0"], "0.0", "110.0",
            ["-1.907", "0.0", "0.477", "0.477", "0.953"])]
PROMPT_IDS = [464, 2050, 1448, 1138, 319, 3431, 284]  # "The study group met on Tuesday to"


def add_node(c: Canvas, x: float, y: float) -> None:
    """A small round "+" centred at (x, y): where a branch is added back to the stream."""
    c.box(x - 13, y - 13, 26, 26, "+", color="orange", radius=13, size=12, weight="bold")


@figure("m4_layer_norm", "Layer normalization, row by row",
        alt="The two tokens of the example, five features each. Each row gets its own mean and "
            "variance (4.0 and 10.0; 0.0 and 110.0), is shifted and divided by the square root "
            "of its variance, and comes out with mean 0 and variance 1. Rows never mix.",
        shows=("dim=-1", "unbiased=False", "110.0", "1.897"))
def layer_norm() -> Canvas:
    c = Canvas(880, 310)
    cell, x_in, x_out, top = 56, 30, 570, 70
    c.text(x_in + 2.5 * cell, top - 30, "x: 2 tokens × 5 features", size=11)
    c.text(x_out + 2.5 * cell, top - 30, "normed", size=11)
    for r, (row, mean, var, normed) in enumerate(LN_ROWS):
        y = top + r * (cell + 40)
        c.grid(x_in, y, [row], cell=cell, fills=[["blue"] * 5], size=10)
        c.grid(x_out, y, [normed], cell=cell, fills=[["blue"] * 5], size=9)
        c.box(346, y + 4, 188, cell - 8, f"mean {mean}, var {var}", color="orange", mono=True,
              size=10)
        c.arrow((x_in + 5 * cell + 4, y + cell / 2), (344, y + cell / 2))
        c.arrow((536, y + cell / 2), (x_out - 4, y + cell / 2))
    c.text(440, top - 30, "(x - mean) / sqrt(var + 1e-5)", mono=True, size=10)
    c.text(440, 254, "mean = x.mean(dim=-1)    var = x.var(dim=-1, unbiased=False)", mono=True,
           size=10)
    c.text(440, 284, "each row (one token) on its own: after it, mean 0 and variance 1; "
           "then scale · normed + shift", size=10, color=MUTED)
    return c


def vector_bar(c: Canvas, x: float, mid: float, height: float, label: str) -> None:
    """One token's vector drawn as an upright bar, `height` tall, centred on y = mid."""
    c.box(x, mid - height / 2, 26, height, color="blue", radius=3)
    c.text(x + 13, mid + height / 2 + 16, label, mono=True, size=10)


def linear(c: Canvas, x: float, mid: float, first: str, second: str) -> None:
    """An nn.Linear box, its two arguments written as in the code, on two lines."""
    c.box(x, mid - 40, 224, 80, color="green")
    c.text(x + 112, mid - 10, "nn.Linear(" + first, mono=True, size=9)
    c.text(x + 112, mid + 12, second, mono=True, size=9)


@figure("m4_feed_forward", "The feed-forward network",
        alt="One token's vector of 768 numbers is widened by a Linear layer to 3,072, passed "
            "through GELU, and narrowed back to 768 by a second Linear layer. The same weights "
            "act on every token alone: (2, 3, 768) becomes (2, 3, 3072) and then (2, 3, 768).",
        shows=("(2, 3, 768)", "(2, 3, 3072)", "4 * cfg.emb_dim", "GELU", "4,722,432"))
def feed_forward() -> Canvas:
    c = Canvas(890, 370)
    mid = 150
    vector_bar(c, 20, mid, 56, "768")
    linear(c, 80, mid, "cfg.emb_dim,", "4 * cfg.emb_dim)")
    vector_bar(c, 338, mid, 224, "3072")
    c.box(398, mid - 24, 100, 48, "GELU()", color="orange", mono=True, size=11)
    vector_bar(c, 532, mid, 224, "3072")
    linear(c, 592, mid, "4 * cfg.emb_dim,", "cfg.emb_dim)")
    vector_bar(c, 850, mid, 56, "768")
    for x0, x1 in [(46, 78), (304, 336), (364, 396), (500, 530), (558, 590), (816, 848)]:
        c.arrow((x0, mid), (x1, mid))
    c.text(445, 302, "x (2, 3, 768)  →  (2, 3, 3072)  →  ff(x) (2, 3, 768)", mono=True, size=11)
    c.text(445, 334, "each of the 3 tokens alone, with the same weights: 8d² + 5d = 4,722,432 "
           "parameters", size=10, color=MUTED)
    return c


def branch(c: Canvas, stream: float, y: float, names: list[str], note: str) -> None:
    """A pre-norm sub-block: leave the stream at y, run `names`, add the result back below."""
    widths, colors = [100, 160, 150], ["green", "green", "orange"]
    x = stream + 70
    c.arrow((stream, y), (x - 2, y))
    for name, w, color in zip(names, widths, colors, strict=True):
        c.box(x, y - 18, w, 36, name, color=color, mono=True, size=10)
        end = x + w
        x = end + 36
        if name != names[-1]:
            c.arrow((end + 2, y), (x - 2, y))
    back = y + 64
    c.line([(end - 75, y + 18), (end - 75, back)])
    c.arrow((end - 75, back), (stream + 14, back))
    c.text((stream + end) / 2 - 30, back - 12, note, size=10, color=MUTED)
    add_node(c, stream, back)


@figure("m4_transformer_block", "A pre-norm transformer block",
        alt="The residual stream x runs straight down through two additions. The first branch "
            "applies norm1, attention and dropout and adds the result back; the second applies "
            "norm2, the feed-forward network and dropout and adds it back. The shape stays "
            "(2, 6, 128) throughout.",
        shows=("norm1", "norm2", "drop_shortcut", "(2, 6, 128)"))
def transformer_block() -> Canvas:
    c = Canvas(680, 470)
    stream = 80
    c.box(stream - 60, 20, 120, 34, "x (2, 6, 128)", color="blue", mono=True, size=10)
    for top, bottom in [(54, 151), (177, 271), (297, 316)]:  # the stream, between the "+"s
        c.line([(stream, top), (stream, bottom)], width=3)
    c.arrow((stream, 316), (stream, 348))
    c.box(stream - 60, 350, 120, 34, "(2, 6, 128)", color="blue", mono=True, size=10)
    branch(c, stream, 100, ["norm1", "att", "drop_shortcut"], "tokens look at earlier tokens")
    branch(c, stream, 220, ["norm2", "ff", "drop_shortcut"], "each token on its own")
    c.text(stream + 16, 336, "residual stream: nothing on it but additions", ha="left",
           size=10, color=MUTED)
    c.text(30, 414, "x = x + self.drop_shortcut(self.att(self.norm1(x)))", ha="left",
           mono=True, size=10)
    c.text(30, 440, "x = x + self.drop_shortcut(self.ff(self.norm2(x)))", ha="left",
           mono=True, size=10)
    return c


def shape(c: Canvas, y: float, s: str) -> None:
    """A tensor's shape in the right-hand column of the GPT-2 figure."""
    c.text(470, y, s, ha="left", mono=True, size=10)


@figure("m4_gpt_shapes", "GPT-2, shape by shape",
        alt="The batch of 2 sequences of 4 token ids goes through the token and position "
            "embeddings to (2, 4, 128), through 4 transformer blocks and the final LayerNorm "
            "at the same shape, and through the output layer to logits of shape (2, 4, 50257): "
            "one score per vocabulary entry at every position.",
        shows=("(2, 4, 50257)", "tok_emb", "pos_emb", "final_norm", "out_head"))
def gpt_shapes() -> Canvas:
    c = Canvas(780, 590)
    cx = 250
    c.text(20, 20, "cpu-tiny: emb_dim 128, n_layers 4, vocab_size 50257", ha="left", size=10,
           color=MUTED)
    c.grid(cx - 92, 46, [["464", "3797", "3332", "319"], ["32", "2746", "9743", "16326"]],
           cell=46, fills=[["blue"] * 4] * 2)
    c.text(cx - 104, 92, "ids", ha="right", mono=True, size=11)
    shape(c, 92, "(2, 4) = (batch, tokens)")
    c.arrow((cx - 60, 140), (cx - 80, 166))
    c.arrow((cx + 60, 140), (cx + 90, 166), dashed=True)  # only the length of ids
    c.box(cx - 180, 168, 170, 36, "tok_emb(ids)", color="green", mono=True, size=10)
    c.box(cx + 10, 168, 190, 36, "pos_emb(positions)", color="green", mono=True, size=10)
    shape(c, 186, "(2, 4, 128) + (4, 128)")
    c.arrow((cx - 95, 206), (cx - 14, 232))
    c.arrow((cx + 105, 206), (cx + 14, 232))
    c.box(cx - 90, 234, 180, 34, "add, drop_emb", color="orange", mono=True, size=10)
    shape(c, 251, "x (2, 4, 128)")
    c.arrow((cx, 270), (cx, 298))
    for k in (2, 1):  # the stack of blocks, drawn as cards behind the first
        c.box(cx - 160 + 6 * k, 300 + 6 * k, 300, 40, color="green")
    c.box(cx - 160, 300, 300, 40, "trf_blocks: 4 × TransformerBlock", color="green",
          mono=True, size=10)
    shape(c, 326, "(2, 4, 128), every block")
    c.arrow((cx, 354), (cx, 380))
    c.box(cx - 90, 382, 180, 34, "final_norm", color="green", mono=True, size=10)
    shape(c, 399, "(2, 4, 128)")
    c.arrow((cx, 418), (cx, 444))
    c.box(cx - 130, 446, 260, 34, "out_head: 128 → 50257", color="green", mono=True, size=10)
    shape(c, 463, "tied: tok_emb.weight, (50257, 128)")
    c.arrow((cx, 482), (cx, 508))
    c.box(cx - 90, 510, 180, 36, "logits", color="purple", mono=True, size=11)
    shape(c, 528, "(2, 4, 50257)")
    c.text(470, 552, "= (batch, tokens, vocab_size)", ha="left", size=10, color=MUTED)
    return c


def weight(c: Canvas, x: float, y: float, rows: int, cols: int, name: str, dims: str) -> None:
    """A weight matrix drawn to scale as squares of d × d, its name and size beneath it."""
    u = 64
    c.grid(x, y, [[""] * cols] * rows, cell=u, fills=[["green"] * cols] * rows)
    c.text(x + cols * u / 2, y + rows * u + 16, name, mono=True, size=10)
    c.text(x + cols * u / 2, y + rows * u + 34, dims, size=10, color=MUTED)


@figure("m4_block_parameters", "Where a block's parameters are",
        alt="GPT-2 small's four weight matrices in one block, drawn to scale: the query, key "
            "and value layer (768 by 2,304) and the output projection (768 by 768) make "
            "attention's 2,362,368 parameters; the two feed-forward layers (768 by 3,072 and "
            "back) make 4,722,432, two thirds of the block's 7,087,872.",
        shows=("12d² + 13d", "7,087,872", "2,362,368", "4,722,432"))
def block_parameters() -> Canvas:
    c = Canvas(800, 400)
    u, top = 64, 60  # one square of u × u pixels is d × d = 768 × 768 weights
    c.text(30 + 2 * u, top - 26, "attention: 4d² + 4d = 2,362,368", size=11)
    weight(c, 30, top, 1, 3, "att.qkv", "768 → 2,304")
    weight(c, 30 + 3 * u + 30, top, 1, 1, "att.out_proj", "768 → 768")
    x_ff = 30 + 4 * u + 90
    c.text(x_ff + 2.6 * u, top - 26, "feed-forward: 8d² + 5d = 4,722,432", size=11)
    weight(c, x_ff, top, 1, 4, "ff.layers[0]", "768 → 3,072")
    weight(c, x_ff + 4 * u + 40, top, 4, 1, "ff.layers[2]", "3,072 → 768")
    c.text(30, top + u + 84, "each square: d × d = 768 × 768 = 589,824 weights", ha="left",
           size=10, color=MUTED)
    c.text(30, top + u + 108, "12 squares, plus 13d for the biases and 2 LayerNorms:", ha="left",
           size=10, color=MUTED)
    c.text(30, top + u + 150, "a whole block: 12d² + 13d = 7,087,872", ha="left", mono=True,
           size=11)
    c.text(30, top + u + 190, "two thirds of it is the feed-forward network", ha="left",
           size=10, color=MUTED)
    return c


@figure("m4_greedy_loop", "Greedy decoding",
        alt="The 7 prompt ids go through the model, which returns logits of shape "
            "(1, 7, 50257). Only the last position's row, logits[:, -1], is kept; its argmax, "
            "284 (' to'), is appended to ids with torch.cat, and the loop runs again.",
        shows=("logits[:, -1]", "argmax", "torch.cat", "2050", "284"))
def greedy_loop() -> Canvas:
    c = Canvas(860, 400)
    cell, top = 44, 60
    c.text(30, top - 22, 'ids (1, 7): "The study group met on Tuesday to"', ha="left", size=10)
    c.grid(30, top, [[str(i) for i in PROMPT_IDS] + ["284"]], cell=cell,
           fills=[["blue"] * 7 + ["purple"]], size=9)
    c.text(30 + 7.5 * cell, top + cell + 14, "new", size=9, color=MUTED)
    c.box(560, top, 270, cell, "model(ids[:, -context:])", color="green", mono=True, size=10)
    c.arrow((30 + 8 * cell + 4, top + cell / 2), (558, top + cell / 2))
    grid_x, grid_y, small = 712, 170, 18
    c.arrow((grid_x + 54, top + cell + 2), (grid_x + 54, grid_y - 2))
    c.text(grid_x + 44, 136, "logits (1, 7, 50257)", ha="right", mono=True, size=10)
    fills = [["purple"] * 6 for _ in range(6)] + [["yellow"] * 6]
    c.grid(grid_x, grid_y, [[""] * 6] * 7, cell=small, fills=fills)
    last = grid_y + 6.5 * small
    c.text(grid_x - 10, last - 26, "logits[:, -1]", ha="right", mono=True, size=10)
    c.box(450, last - 18, 200, 36, "argmax(dim=-1)", color="orange", mono=True, size=10)
    c.arrow((grid_x - 2, last), (652, last))
    c.box(30 + 7 * cell - 10, last - 18, cell + 20, 36, "284", color="purple", mono=True,
          size=10)
    c.text(30 + 7.5 * cell, last + 32, "next_id (1, 1)", mono=True, size=10)
    c.arrow((448, last), (30 + 8 * cell + 12, last))
    c.arrow((30 + 7.5 * cell, last - 20), (30 + 7.5 * cell, top + cell + 26))
    c.text(30 + 7.5 * cell - 12, 190, "torch.cat([ids, next_id], dim=1)", ha="right", mono=True,
           size=10)
    c.text(30, 360, "repeat max_new_tokens times: the model sees at most context_length ids",
           ha="left", size=10, color=MUTED)
    return c


@figure("m4_tied_embeddings", "Tied embeddings",
        alt="One matrix of vocab_size rows and emb_dim columns serves both ends of the model. "
            "On the way in, token id 284 (' to') looks up its row. On the way out, the vector h "
            "at the last position is scored against every row, giving one logit per token; "
            "an untrained h is still close to row 284, so ' to' scores highest.",
        shows=("tie_embeddings=True", "' to'"))
def tied_embeddings() -> Canvas:
    c = Canvas(860, 420)
    mx, my, cell = 340, 110, 30
    rows = ["0", "1", "...", "284", "...", "50256"]
    fills = [["yellow" if r == "284" else "green"] * 5 for r in rows]
    c.text(mx + 75, 38, "tok_emb.weight = out_head.weight", mono=True, size=10)
    c.text(mx + 75, 62, "(vocab_size, emb_dim)", mono=True, size=10, color=MUTED)
    c.grid(mx, my, [[""] * 5 for _ in rows], cell=cell, fills=fills)
    for i, r in enumerate(rows):
        c.text(mx - 8, my + (i + 0.5) * cell, r, ha="right", mono=True, size=9)
    row = my + 3.5 * cell
    c.text(100, 80, "in: tok_emb(ids)", size=11)
    c.box(30, row - 18, 140, 36, "284  (' to')", color="blue", mono=True, size=10)
    c.arrow((172, row), (298, row))
    c.text(235, row - 14, "look up", size=9, color=MUTED)
    c.text(100, row + 40, "the id picks its row:", size=9, color=MUTED)
    c.text(100, row + 58, "the token's vector", size=9, color=MUTED)
    lx = 560
    c.text(lx + 120, 80, "out: out_head(h)", size=11)
    c.grid(lx, my, [["top" if r == "284" else ""] for r in rows], cell=cell,
           fills=[["yellow" if r == "284" else "purple"] for r in rows])
    for i, r in enumerate(rows):
        if r != "...":
            c.arrow((mx + 5 * cell + 4, my + (i + 0.5) * cell), (lx - 4, my + (i + 0.5) * cell),
                    color=MUTED)
    c.text(lx + 15, my + 6 * cell + 16, "logits", mono=True, size=10)
    c.text(lx + 15, my + 6 * cell + 32, "(vocab_size)", mono=True, size=9, color=MUTED)
    c.grid(lx + 80, row - cell / 2, [[""] * 5], cell=26, fills=[["blue"] * 5])
    c.text(lx + 145, row - 32, "h (emb_dim)", mono=True, size=10)
    c.text(lx + 145, row + 30, "each logit: row · h", size=9, color=MUTED)
    c.text(30, 350, "self.out_head.weight = self.tok_emb.weight     # tie_embeddings=True",
           ha="left", mono=True, size=10)
    c.text(30, 380, "untrained, h at the last position is still close to row 284, and a row "
           "scores itself highest", ha="left", size=10, color=MUTED)
    return c


@figure("m4_kv_cache", "A KV cache, step by step",
        alt="Ten token positions processed as generation does: the prefill computes queries, "
            "keys and values for the first 6 tokens, then each step computes them for one new "
            "token, reads the earlier keys and values from the cache, and appends its own, so "
            "the cache grows from (1, 4, 6, 16) to (1, 4, 10, 16).",
        shows=("prefill", "(1, 4, 7, 16)", "(1, 4, 10, 16)", "torch.cat"))
def kv_cache() -> Canvas:
    c = Canvas(840, 430)
    x0, y0, cell, gap = 200, 70, 40, 12
    c.text(x0 - 10, y0 - 18, "position", ha="right", size=10, color=MUTED)
    for j in range(10):
        c.text(x0 + (j + 0.5) * cell, y0 - 18, str(j), mono=True, size=10)
    c.text(x0 + 10 * cell + 24, y0 - 18, "keys.shape after the step", ha="left", size=10,
           color=MUTED)
    steps = [("prefill x[:, :6]", 0, 6)] + [(f"token {t}", t, t + 1) for t in range(6, 10)]
    for r, (label, new_from, end) in enumerate(steps):
        y = y0 + r * (cell + gap)
        c.text(x0 - 10, y + cell / 2, label, ha="right", mono=True, size=10)
        values = [["k,v" if j < new_from else "qkv" for j in range(end)]]
        fills = [["yellow" if j < new_from else "blue" for j in range(end)]]
        c.grid(x0, y, values, cell=cell, fills=fills, size=9)
        c.text(x0 + 10 * cell + 24, y + cell / 2, f"(1, 4, {end}, 16)", ha="left", mono=True,
               size=10)
    legend = y0 + 5 * (cell + gap) + 10
    c.key(30, legend, "yellow", "k,v: from the cache, not computed again")
    c.key(400, legend, "blue", "qkv: computed this step; k, v appended")
    c.text(30, legend + 50, "keys = torch.cat([keys, k], dim=2)    "
           "# (batch, heads, tokens so far, head_dim)", ha="left", mono=True, size=10)
    return c


# --- the bonus notebook, 04_bonus_modern_decoder: today's decoder after GPT-2 ---

def circle(c: Canvas, cx: float, cy: float, r: float, **style) -> None:
    """A circle of radius r around (cx, cy), drawn as a closed polyline."""
    turns = [2 * math.pi * t / 96 for t in range(97)]
    c.line([(cx + r * math.cos(t), cy - r * math.sin(t)) for t in turns], **style)


def hand(c: Canvas, cx: float, cy: float, r: float, angle: float, color: str = INK) -> None:
    """An arrow from (cx, cy) at `angle` radians, counter-clockwise from the right."""
    c.arrow((cx, cy), (cx + r * math.cos(angle), cy - r * math.sin(angle)), color=color)


@figure("m4_rope_rotation", "Rotary position embeddings",
        alt="Left: one pair of a query's features, (a, b), drawn as a point in a plane and turned "
            "by one radian per position, so at position m it has turned m times the angle. "
            "Right: the four pairs of a head of 8 features turn at frequencies 1, 0.1, 0.01 and "
            "0.001 radians per position, like clock hands, shown at position m = 10.",
        shows=("a * cos - b * sin", "a * sin + b * cos", "frequencies", "positions"))
def rope_rotation() -> Canvas:
    c = Canvas(900, 420)
    cx, cy, r = 200, 200, 120
    c.line([(cx - r - 20, cy), (cx + r + 20, cy)], color=MUTED, width=1)
    c.line([(cx, cy - r - 20), (cx, cy + r + 20)], color=MUTED, width=1)
    circle(c, cx, cy, r, color=MUTED, width=1, dashed=True)
    c.text(cx + 16, cy + 18, "a = x[..., i]", mono=True, size=9, ha="left")
    c.text(cx - 8, cy - r - 28, "b = x[..., i + d // 2]", mono=True, size=9, ha="right")
    start = 0.3
    for m in range(4):
        angle = start + m * 1.0
        hand(c, cx, cy, r, angle, color=COLORS["blue"][1])
        tx, ty = cx + (r + 22) * math.cos(angle), cy - (r + 22) * math.sin(angle)
        c.text(tx, ty, f"m={m}", mono=True, size=10)
    c.text(cx, 372, "one pair, positions m = 0 to 3: 1 radian each",
           size=10, color=MUTED)
    c.text(cx, 396, "angle = positions × frequencies", mono=True, size=10)
    # Right: the clock hands of one head, at one position.
    c.text(654, 40, "every pair of a head_dim = 8 head, at position m = 10", size=11)
    for i, freq in enumerate([1.0, 0.1, 0.01, 0.001]):
        x = 430 + i * 112
        circle(c, x + 60, 140, 44, color=MUTED, width=1)
        c.line([(x + 60, 140), (x + 104, 140)], color=MUTED, width=1, dashed=True)
        hand(c, x + 60, 140, 44, 10 * freq, color=COLORS["blue"][1])
        c.text(x + 60, 204, f"pair {i}", size=10)
        c.text(x + 60, 222, f"{freq:g}", mono=True, size=10, color=MUTED)
    c.text(654, 246, "frequencies, in radians per position", size=10, color=MUTED)
    c.text(654, 270, "fast hands tell near tokens apart; slow ones still turn", size=10,
           color=MUTED)
    c.text(654, 288, "slowly after thousands of tokens, for long contexts", size=10, color=MUTED)
    c.box(464, 312, 380, 64, color="orange", mono=True)
    c.text(654, 332, "(a, b) → (a * cos - b * sin,", mono=True, size=10)
    c.text(654, 354, "         a * sin + b * cos)", mono=True, size=10)
    return c


@figure("m4_gqa_heads", "Query heads sharing key/value heads",
        alt="Eight query heads and the key/value heads they read, three ways. Multi-head "
            "attention gives each query head its own key and value head (8); grouped-query "
            "attention lets groups of 4 share one (2); multi-query attention has one for all. "
            "The KV cache stores only the key/value heads: 8, 2 or 1 per layer and token.",
        shows=("n_kv_heads", "repeat_interleave", "group"))
def gqa_heads() -> Canvas:
    c = Canvas(900, 330)
    panels = [("multi-head (GPT-2)", 8), ("grouped-query (Llama 3)", 2), ("multi-query", 1)]
    box, gap = 26, 6
    for p, (label, n_kv) in enumerate(panels):
        left = 20 + p * 300
        mid = left + (8 * box + 7 * gap) / 2
        group = 8 // n_kv
        c.text(mid, 28, label, size=11, weight="bold")
        c.text(mid, 50, f"n_kv_heads = {n_kv}, group = {group}", mono=True, size=10)
        c.text(left - 4, 96, "q", mono=True, size=10, ha="right")
        kv_w = group * box + (group - 1) * gap
        for h in range(8):
            x = left + h * (box + gap)
            c.box(x, 82, box, 28, str(h), color="blue", mono=True, size=9, radius=3)
            j = h // group
            kx = left + j * (kv_w + gap) + kv_w / 2
            c.line([(x + box / 2, 112), (kx, 178)], color=MUTED, width=1)
        for j in range(n_kv):
            x = left + j * (kv_w + gap)
            c.box(x, 180, kv_w, 30, "k,v" if kv_w > 30 else "kv", color="yellow", mono=True,
                  size=9, radius=3)
        c.text(mid, 236, f"cache: {n_kv} head{'s' if n_kv > 1 else ''} per token and layer",
               size=10, color=MUTED)
    c.key(20, 262, "blue", "query heads: n_heads = 8, computed for each new token")
    c.key(470, 262, "yellow", "key/value heads: what the KV cache keeps")
    c.text(20, 310, "k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)",
           ha="left", mono=True, size=10)
    return c


MODERN_ROWS = [  # (GPT-2's piece, its replacement, colour, changed)
    ("token ids", "token ids", "blue", False),
    ("tok_emb + pos_emb", "tok_emb  (positions move into attention)", "green", True),
    ("norm1: LayerNorm", "norm1: RMSNorm", "green", True),
    ("att: 12 query, 12 key/value heads", "att: RoPE on q and k; 32 query, 8 key/value",
     "green", True),
    ("norm2: LayerNorm", "norm2: RMSNorm", "green", True),
    ("ff: Linear → GELU → Linear", "ff: SwiGLU, three Linear and a gate", "green", True),
    ("final_norm: LayerNorm", "final_norm: RMSNorm", "green", True),
    ("out_head → logits", "out_head → logits", "purple", False),
]


@figure("m4_modern_block", "GPT-2's model and today's",
        alt="GPT-2 and Llama 3 side by side, piece by piece. The plan is the same: token ids, "
            "an embedding, n_layers pre-norm blocks of attention and feed-forward, a final norm "
            "and the output layer. Every norm becomes RMSNorm, the position embedding moves "
            "into attention as RoPE with fewer key/value heads, and the feed-forward becomes "
            "SwiGLU.",
        shows=("GPTModel", "Decoder", "RMSNorm", "n_layers"))
def modern_block() -> Canvas:
    c = Canvas(900, 500)
    columns = [(54, "GPTModel: GPT-2 (2019)"), (506, "Decoder: Llama 3 (2024)")]
    w, h, step, top = 370, 34, 50, 70
    for side, (x, title) in enumerate(columns):
        c.text(x + w / 2, 36, title, mono=True, size=11, weight="bold")
        for r, row in enumerate(MODERN_ROWS):
            y = top + r * step
            changed = side == 1 and row[3]
            c.box(x, y, w, h, row[side], color=row[2], size=10, weight="bold" if changed else
                  "normal")
            if r:
                c.arrow((x + w / 2, y - step + h), (x + w / 2, y))
        c.line([(x - 12, top + 2 * step - 6), (x - 18, top + 2 * step - 6),
                (x - 18, top + 5 * step + h + 6), (x - 12, top + 5 * step + h + 6)],
               color=MUTED, width=1)
        c.text(x - 28, top + 3.5 * step + h / 2, "× n_layers", size=10, color=MUTED,
               rotation=90)
    c.text(450, 478, "bold: changed. Also no biases; Qwen3 adds QK-norm, an RMSNorm on each "
           "query and key head", size=10, color=MUTED)
    return c
