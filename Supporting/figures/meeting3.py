"""Meeting 3's figures: attention, from one query's dot products to heads split and joined.

The numbers drawn are the ones the notebooks print: notebook 1's six hand-made word vectors
`x` and its seeded `W_query`, `W_key`, `W_value` (d_in=3, d_out=2); notebook 2's batch of
shape (2, 6, 12) cut into 3 heads of 4.
"""

from figures import figure
from figures.kit import MUTED, Canvas

WORDS = ["the", "cat", "chased", "a", "small", "mouse"]  # notebook 1's `words`
X = [[0.1, 0.2, 0.1], [0.9, 0.1, 0.3], [0.2, 0.9, 0.1],
     [0.1, 0.1, 0.2], [0.3, 0.1, 0.8], [0.8, 0.2, 0.4]]  # notebook 1's `x`
# Notebook 1, section 3: weights_b, the causal weights of the seeded projections, and one draw
# of nn.Dropout(p=0.5) on them after set_seed(123), as the notebook prints it.
CAUSAL_WEIGHTS = [[1.000], [0.468, 0.532], [0.334, 0.316, 0.350], [0.247, 0.255, 0.251, 0.247],
                  [0.187, 0.217, 0.196, 0.189, 0.211],
                  [0.155, 0.176, 0.164, 0.156, 0.172, 0.177]]
DROPPED = [[2.000], [0, 0], [0.668, 0.633, 0.699], [0, 0.510, 0.502, 0],
           [0, 0.433, 0, 0.378, 0], [0, 0.352, 0.328, 0.312, 0.344]]


def cells(c: Canvas, x: float, y: float, values: list[list[str]], fills: list[list[str]], *,
          w: float, h: float, size: float = 10) -> None:
    """A table of w-by-h cells, for numbers too wide for the kit's square grid."""
    for i, row in enumerate(values):
        for j, value in enumerate(row):
            c.box(x + j * w, y + i * h, w, h, value, color=fills[i][j], mono=True, size=size,
                  radius=0)


def tensor(c: Canvas, x: float, y: float, w: float, h: float, name: str, shape: str, *,
           color: str = "blue") -> None:
    """A box naming a tensor (or a layer) above its shape, both as the code writes them."""
    c.box(x, y, w, h, color=color)
    c.text(x + w / 2, y + h / 2 - 9, name, mono=True, size=11)
    c.text(x + w / 2, y + h / 2 + 9, shape, mono=True, size=10, color=MUTED)


def op(c: Canvas, x: float, y: float, w: float, h: float, label: str) -> None:
    """An orange box for an operation: a matrix product, a mask, a softmax."""
    c.box(x, y, w, h, label, color="orange", mono=True, size=10)


def word_labels(c: Canvas, x: float, y: float, h: float) -> None:
    """Notebook 1's six words down the left of a table whose rows are h high."""
    for i, word in enumerate(WORDS):
        c.text(x, y + (i + 0.5) * h, word, ha="right", mono=True, size=10)


@figure("m3_one_query", "One query against every token",
        alt="The query x[5], the vector of 'mouse', is dotted with each of the six word "
            "vectors to give six scores, from 0.16 for 'the' to 0.86 for 'cat'. The softmax "
            "turns the scores into weights that sum to 1, and the weighted sum of the six "
            "vectors is the context vector of 'mouse', [0.490, 0.247, 0.346].",
        shows=("query", "weights", "context", "0.490"))
def one_query() -> Canvas:
    c = Canvas(880, 330)
    top, h, mid = 92, 30, 92 + 3 * 30
    c.text(20, 29, 'query = x[5]  ("mouse")', ha="left", mono=True, size=11)
    cells(c, 250, 14, [[f"{v:.1f}" for v in X[5]]], [["yellow"] * 3], w=38, h=h)
    c.text(80 + 57, top - 14, "x", mono=True, size=11)
    word_labels(c, 72, top, h)
    fills = [["yellow" if i == 5 else "blue"] * 3 for i in range(6)]
    cells(c, 80, top, [[f"{v:.1f}" for v in row] for row in X], fills, w=38, h=h)
    scores = [0.160, 0.860, 0.380, 0.180, 0.580, 0.840]
    weights = [0.114, 0.229, 0.142, 0.116, 0.173, 0.225]
    c.arrow((200, mid), (300, mid))
    c.text(250, mid - 14, "x @ query", mono=True, size=10)
    c.text(330, top - 14, "scores", mono=True, size=11)
    cells(c, 304, top, [[f"{s:.3f}"] for s in scores], [["blue"]] * 6, w=52, h=h)
    c.text(330, top + 6 * h + 16, "x[j] · query", mono=True, size=10, color=MUTED)
    c.arrow((362, mid), (398, mid))
    op(c, 402, mid - 18, 90, 36, "softmax")
    c.arrow((496, mid), (530, mid))
    c.text(560, top - 14, "weights", mono=True, size=11)
    cells(c, 534, top, [[f"{w:.3f}"] for w in weights], [["blue"]] * 6, w=52, h=h)
    c.text(560, top + 6 * h + 16, "sum = 1", size=10, color=MUTED)
    c.arrow((592, mid), (700, mid))
    c.text(646, mid - 14, "weights @ x", mono=True, size=10)
    c.text(704 + 75, mid - 32, "context", mono=True, size=11)
    cells(c, 704, mid - h / 2, [["0.490", "0.247", "0.346"]], [["blue"] * 3], w=50, h=h)
    c.text(704 + 75, mid + 36, "Σ weights[j] · x[j]", mono=True, size=10, color=MUTED)
    return c


@figure("m3_causal_mask", "The causal mask",
        alt="Three 6 by 6 grids for the words 'the cat chased a small mouse', one row per "
            "query. causal_mask(6) is 1 on and below the diagonal; masked_fill sets the scores "
            "above it, the later tokens, to -inf; after the softmax those weights are 0 and "
            "each row's weights, shared among the token and those before it, sum to 1.",
        shows=("causal_mask(6)", "masked_fill(~mask", "-inf", "softmax(dim=-1)"))
def causal_mask() -> Canvas:
    c = Canvas(860, 350)
    top, cell = 100, 34
    lefts = [90, 360, 630]
    word_labels(c, lefts[0] - 8, top, cell)
    kept = [[j <= i for j in range(6)] for i in range(6)]
    grids = [
        ("mask = causal_mask(6)", [["1" if k else "0" for k in row] for row in kept],
         [["white" if k else "grey" for k in row] for row in kept]),
        ("masked_fill(~mask, -inf)", [["" if k else "-inf" for k in row] for row in kept],
         [["blue" if k else "grey" for k in row] for row in kept]),
        ("softmax(dim=-1)",
         [[f"{CAUSAL_WEIGHTS[i][j]:.2f}" if k else "0" for j, k in enumerate(row)]
          for i, row in enumerate(kept)],
         [["blue" if k else "grey" for k in row] for row in kept]),
    ]
    for left, (title, values, fills) in zip(lefts, grids, strict=True):
        c.text(left + 3 * cell, top - 64, title, mono=True, size=11)
        c.grid(left, top, values, cell=cell, fills=fills, size=8)
        for j, word in enumerate(WORDS):
            c.text(left + (j + 0.3) * cell, top - 4, word, mono=True, size=8, color=MUTED,
                   ha="left", va="bottom", rotation=40)
    for a, b in ((lefts[0], lefts[1]), (lefts[1], lefts[2])):
        c.arrow((a + 6 * cell + 8, top + 3 * cell), (b - 8, top + 3 * cell))
    c.text(lefts[1] + 3 * cell, top + 6 * cell + 20, "scores of later tokens: -inf",
           size=10, color=MUTED)
    c.text(lefts[2] + 3 * cell, top + 6 * cell + 20, "e^(-inf) = 0; each row sums to 1",
           size=10, color=MUTED)
    c.text(lefts[0] + 3 * cell, top + 6 * cell + 20, "1: the token and its past", size=10,
           color=MUTED)
    return c


@figure("m3_qkv_projections", "Queries, keys and values",
        alt="The same input x, 6 tokens by d_in = 3, is multiplied by the transposed weights of "
            "W_query, W_key and W_value, each nn.Linear(d_in, d_out) with a 3 by 2 weight, "
            "giving queries, keys and values of 6 by 2. Scores are then queries @ keys.T, "
            "a 6 by 6 table with one row per query.",
        shows=("W_query", "W_key", "W_value", "d_in", "d_out"))
def qkv_projections() -> Canvas:
    c = Canvas(880, 410)
    cell, top, step = 13, 70, 100
    roles = [("W_query", "queries", "what token i looks for"),
             ("W_key", "keys", "what token j offers"),
             ("W_value", "values", "what token j passes on")]
    c.text(61, top - 30, "x", mono=True, size=11)
    c.text(61, top - 14, "(6, 3)", mono=True, size=10, color=MUTED)
    c.text(158, top - 30, "W.weight.T", mono=True, size=11)
    c.text(158, top - 14, "(3, 2)", mono=True, size=10, color=MUTED)
    c.text(252, top - 14, "(6, 2)", mono=True, size=10, color=MUTED)
    for r, (layer, name, role) in enumerate(roles):
        y = top + r * step
        c.grid(42, y, [[""] * 3] * 6, cell=cell, fills=[["blue"] * 3] * 6)
        c.text(105, y + 3 * cell, "@", mono=True, size=12)
        c.grid(145, y + 1.5 * cell, [[""] * 2] * 3, cell=cell, fills=[["green"] * 2] * 3)
        c.text(158, y + 4.5 * cell + 12, layer, mono=True, size=10)
        c.text(205, y + 3 * cell, "=", mono=True, size=12)
        c.grid(239, y, [[""] * 2] * 6, cell=cell, fills=[["blue"] * 2] * 6)
        c.text(285, y + 3 * cell - 9, f"{name} = {layer}(x)", mono=True, size=11, ha="left")
        c.text(285, y + 3 * cell + 10, role, size=10, color=MUTED, ha="left")
    c.text(42, top + 3 * step, "each W is nn.Linear(d_in, d_out, bias=False):",
           ha="left", size=10)
    c.text(42, top + 3 * step + 20, "d_in = 3 numbers per token in, d_out = 2 out", ha="left",
           size=10, color=MUTED)
    mid_qk = top + step / 2 + 3 * cell
    c.arrow((505, top + 3 * cell), (560, mid_qk - 10))
    c.arrow((505, top + step + 3 * cell), (560, mid_qk + 10))
    op(c, 564, mid_qk - 20, 150, 40, "queries @ keys.T")
    c.arrow((718, mid_qk), (748, mid_qk))
    c.grid(752, mid_qk - 3 * cell, [[""] * 6] * 6, cell=cell, fills=[["blue"] * 6] * 6)
    c.text(791, mid_qk - 3 * cell - 26, "scores", mono=True, size=11)
    c.text(791, mid_qk - 3 * cell - 10, "(6, 6)", mono=True, size=10, color=MUTED)
    c.text(791, mid_qk + 3 * cell + 14, "row i: query i", size=10, color=MUTED)
    c.text(791, mid_qk + 3 * cell + 30, "column j: key j", size=10, color=MUTED)
    mid_v = top + 2 * step + 3 * cell
    c.arrow((505, mid_v), (560, mid_v), dashed=True)
    c.text(566, mid_v - 9, "context = weights @ values", mono=True, size=10, ha="left")
    c.text(566, mid_v + 10, "after the softmax of the scores", size=10, color=MUTED, ha="left")
    return c


@figure("m3_attention_dropout", "Dropout on the attention weights",
        alt="On the left, the causal weights weights_b, each row summing to 1. nn.Dropout(p=0.5) "
            "sets about half of them to 0 and doubles the rest, 1/(1 - p) = 2, so the first "
            "row's 1.000 becomes 2.000 and the second row loses both its weights: in this "
            "training step the rows no longer sum to 1.",
        shows=("weights_b", "nn.Dropout(p=0.5)", "2.000", "0.668"))
def attention_dropout() -> Canvas:
    c = Canvas(880, 350)
    top, w, h = 86, 46, 30
    left, right = 90, 560
    word_labels(c, left - 8, top, h)
    before = [[f"{row[j]:.3f}" if j < len(row) else "" for j in range(6)]
              for row in CAUSAL_WEIGHTS]
    after = [[(f"{row[j]:.3f}" if row[j] else "0") if j < len(row) else "" for j in range(6)]
             for row in DROPPED]
    fills_before = [["blue" if j < len(row) else "white" for j in range(6)]
                    for row in CAUSAL_WEIGHTS]
    fills_after = [[("blue" if row[j] else "grey") if j < len(row) else "white"
                    for j in range(6)] for row in DROPPED]
    cells(c, left, top, before, fills_before, w=w, h=h, size=9)
    cells(c, right, top, after, fills_after, w=w, h=h, size=9)
    c.text(left + 3 * w, top - 40, "weights_b", mono=True, size=11)
    c.text(left + 3 * w, top - 20, "each row sums to 1", size=10, color=MUTED)
    c.text(right + 3 * w, top - 40, "dropout(weights_b)", mono=True, size=11)
    c.text(right + 3 * w, top - 20, "one training step", size=10, color=MUTED)
    mid = top + 3 * h
    c.arrow((left + 6 * w + 8, mid), (right - 8, mid))
    op(c, left + 6 * w + 14, mid - 46, 170, 32, "nn.Dropout(p=0.5)")
    c.text(left + 6 * w + 99, mid + 22, "in training mode", size=10, color=MUTED)
    legend = top + 6 * h + 26
    for x, color, label in ((left, "blue", "kept, times 1/(1 - p) = 2"),
                            (left + 260, "grey", "dropped: 0"),
                            (left + 420, "white", "masked by the causal mask")):
        c.key(x, legend - 9, color, label)
    return c


@figure("m3_causal_attention", "One causal attention head",
        alt="The forward pass of CausalAttention on a batch x of shape (2, 6, 3): W_query, "
            "W_key and W_value make q, k and v of shape (2, 6, 2); q @ k.transpose(-2, -1) "
            "divided by the square root of d_out gives scores (2, 6, 6); the mask, softmax and "
            "dropout turn them into weights, and weights @ v is the output, (2, 6, 2).",
        shows=("W_query", "masked_fill", "(2, 6, 2)", "(batch, tokens, d_out)"))
def causal_attention() -> Canvas:
    c = Canvas(900, 400)
    tensor(c, 20, 115, 110, 48, "x", "(2, 6, 3)")
    c.text(84, 182, "(batch, tokens, d_in)", mono=True, size=9, color=MUTED)
    names = [("W_query", "q"), ("W_key", "k"), ("W_value", "v")]
    for i, (layer, out) in enumerate(names):
        y = 40 + 75 * i
        c.arrow((132, 139), (194, y + 24))
        tensor(c, 198, y, 120, 48, layer, "Linear(3, 2)", color="green")
        c.arrow((320, y + 24), (352, y + 24))
        tensor(c, 356, y, 90, 48, out, "(2, 6, 2)")
    c.arrow((448, 64), (490, 90))
    c.arrow((448, 139), (490, 114))
    c.box(494, 76, 220, 52, color="orange")
    c.text(604, 92, "q @ k.transpose(-2, -1)", mono=True, size=10)
    c.text(604, 112, "/ math.sqrt(d_out)", mono=True, size=10)
    c.arrow((716, 102), (740, 102))
    tensor(c, 744, 78, 130, 48, "scores", "(2, 6, 6)")
    c.text(809, 142, "(batch, tokens, tokens)", mono=True, size=9, color=MUTED)
    row = 290
    c.arrow((809, 152), (809, row - 4))
    op(c, 650, row, 230, 40, "masked_fill(~mask, -inf)")
    c.arrow((648, row + 20), (610, row + 20))
    op(c, 466, row, 140, 40, "softmax(dim=-1)")
    c.arrow((464, row + 20), (432, row + 20))
    op(c, 338, row, 90, 40, "dropout")
    c.arrow((336, row + 20), (304, row + 20))
    op(c, 190, row, 110, 40, "weights @ v")
    c.arrow((380, 240), (262, row - 4))
    c.arrow((188, row + 20), (152, row + 20))
    tensor(c, 20, row - 4, 128, 48, "output", "(2, 6, 2)")
    c.text(84, row + 62, "(batch, tokens, d_out)", mono=True, size=9, color=MUTED)
    c.text(880, row + 58, "mask: causal_mask, cut to n tokens", size=10, color=MUTED,
           ha="right")
    return c


def split_stage(c: Canvas, x: float, y: float, blocks: list[list[list[int]]],
                titles: list[str], cell: float = 30) -> None:
    """Blocks of notebook 2's numbers 0..11 side by side; head 1's (2, 3, 8, 9) in yellow."""
    for b, (block, title) in enumerate(zip(blocks, titles, strict=True)):
        left = x + b * (len(block[0]) * cell + 24)
        fills = [["yellow" if v in (2, 3, 8, 9) else "blue" for v in row] for row in block]
        c.grid(left, y, [[str(v) for v in row] for row in block], cell=cell, fills=fills,
               size=10)
        c.text(left + len(block[0]) * cell / 2, y - 10, title, size=10, color=MUTED)


@figure("m3_split_heads", "Heads split with view and transpose",
        alt="The tensor t = torch.arange(12.0).view(1, 2, 6), two tokens of 6 features, is cut "
            "by view(1, 2, 3, 2) into 3 heads of 2 features per token, and transpose(1, 2) "
            "puts the heads first: head 1 (in yellow) holds features 2, 3 of token 0 and 8, 9 "
            "of token 1. Merging back takes transpose(1, 2) then reshape(1, 2, 6).",
        shows=("view(1, 2, 3, 2)", "transpose(1, 2)", "reshape(1, 2, 6)"))
def split_heads() -> Canvas:
    c = Canvas(880, 440)
    x, cell = 290, 30
    stages = [
        (40, "t", "(1, 2, 6)", "(batch, tokens, d_out)", [[list(range(6)), list(range(6, 12))]],
         ["token 0 / token 1: 6 features each"]),
        (180, "t.view(1, 2, 3, 2)", "(1, 2, 3, 2)", "(batch, tokens, heads, head_dim)",
         [[[0, 1], [2, 3], [4, 5]], [[6, 7], [8, 9], [10, 11]]], ["token 0", "token 1"]),
        (350, ".transpose(1, 2)", "(1, 3, 2, 2)", "(batch, heads, tokens, head_dim)",
         [[[0, 1], [6, 7]], [[2, 3], [8, 9]], [[4, 5], [10, 11]]],
         ["head 0", "head 1", "head 2"]),
    ]
    for y, code, shape, meaning, blocks, titles in stages:
        rows = len(blocks[0])
        mid = y + rows * cell / 2
        c.text(20, mid - 18, code, mono=True, size=11, ha="left")
        c.text(20, mid, shape, mono=True, size=10, color=MUTED, ha="left")
        c.text(20, mid + 17, meaning, mono=True, size=9, color=MUTED, ha="left")
        split_stage(c, x, y, blocks, titles, cell)
    notes = ((108, "view: 3 heads of 2 features per token,", "no data moves"),
             (278, "transpose: heads before tokens, so each",
              "head holds a (tokens, head_dim) matrix"))
    for top, first, second in notes:
        c.arrow((x + 90, top), (x + 90, top + 52))
        c.text(x + 102, top + 17, first, size=10, color=MUTED, ha="left")
        c.text(x + 102, top + 35, second, size=10, color=MUTED, ha="left")
    c.line([(x + 240, 380), (680, 380), (680, 70)])
    c.arrow((680, 70), (x + 186, 70))
    c.text(692, 170, "merge the heads:", size=10, ha="left")
    c.text(692, 192, ".transpose(1, 2)", mono=True, size=10, ha="left")
    c.text(692, 210, ".reshape(1, 2, 6)", mono=True, size=10, ha="left")
    c.text(692, 236, "(view refuses: after", size=10, color=MUTED, ha="left")
    c.text(692, 252, "weights @ v the numbers", size=10, color=MUTED, ha="left")
    c.text(692, 268, "are stored head by head)", size=10, color=MUTED, ha="left")
    return c


def column(c: Canvas, x: float, nodes: list[tuple[str, str, str, str]], ops: list[str], *,
           top: float, step: float, up: bool) -> None:
    """A column of boxes (name, shape, what the shape means, colour) joined by arrows.

    The arrows run down the column, or up it when `up`; each is labelled with its op, on the
    side facing the middle of the figure.
    """
    w, h = 200, 58
    for i, (name, shape, meaning, color) in enumerate(nodes):
        y = top + i * step
        c.box(x, y, w, h, color=color)
        c.text(x + w / 2, y + 14, name, mono=True, size=11)
        c.text(x + w / 2, y + 31, shape, mono=True, size=10, color=MUTED)
        c.text(x + w / 2, y + 46, meaning, mono=True, size=9, color=MUTED)
    for i, label in enumerate(ops):
        y1, y2 = top + i * step + h + 2, top + (i + 1) * step - 2
        ends = [(x + w / 2, y1), (x + w / 2, y2)]
        c.arrow(*(ends[::-1] if up else ends))
        c.text(x + w / 2 + (-10 if up else 10), (y1 + y2) / 2, label, mono=True, size=10,
               ha="right" if up else "left")


@figure("m3_multi_head_attention", "Heads split, attended and joined",
        alt="The batched MultiHeadAttention on x of shape (2, 6, 12) with 3 heads of 4: one qkv "
            "layer makes every head's queries, keys and values, view and transpose split them "
            "to (batch, heads, tokens, head_dim), attention runs for every head at once, and "
            "transpose, reshape and out_proj join the heads back to (2, 6, 12).",
        shows=("qkv", "out_proj", "(2, 6, 12)", "(b, heads, n, head_dim)", "(36, 12)"))
def multi_head_attention() -> Canvas:
    c = Canvas(900, 560)
    top, step = 56, 96
    c.text(130, 24, "split into heads", size=11, weight="bold")
    c.text(770, 24, "join the heads", size=11, weight="bold")
    c.text(450, 24, "num_heads = 3, head_dim = 4", mono=True, size=10, color=MUTED)
    split = [("x", "(2, 6, 12)", "(b, n, d_in)", "blue"),
             ("qkv", "Linear(12, 36)", "weight (36, 12)", "green"),
             ("q, k, v", "(2, 6, 12) each", "(b, n, d_out)", "blue"),
             ("q, k, v", "(2, 6, 3, 4)", "(b, n, heads, head_dim)", "blue"),
             ("q, k, v", "(2, 3, 6, 4)", "(b, heads, n, head_dim)", "blue")]
    column(c, 30, split, ["", ".chunk(3, dim=-1)", ".view(b, n, 3, -1)", ".transpose(1, 2)"],
           top=top, step=step, up=False)
    join = [("output", "(2, 6, 12)", "(b, n, d_out)", "blue"),
            ("out_proj", "Linear(12, 12)", "mixes the heads", "green"),
            ("out", "(2, 6, 12)", "(b, n, d_out)", "blue"),
            ("out", "(2, 6, 3, 4)", "(b, n, heads, head_dim)", "blue"),
            ("out", "(2, 3, 6, 4)", "(b, heads, n, head_dim)", "blue")]
    column(c, 670, join, ["", "", ".reshape(b, n, 12)", ".transpose(1, 2)"], top=top,
           step=step, up=True)
    y = top + 4 * step + 29
    c.arrow((232, y), (296, y))
    c.box(300, y - 40, 300, 80, color="orange")
    c.text(450, y - 22, "every head at once:", size=10)
    c.text(450, y - 2, "q @ k.transpose(-2, -1) / √4", mono=True, size=10)
    c.text(450, y + 18, "mask, softmax, dropout, @ v", mono=True, size=10)
    c.text(450, y + 56, "scores (2, 3, 6, 6)", mono=True, size=10, color=MUTED)
    c.arrow((602, y), (666, y))
    return c


@figure("m3_fused_qkv", "Three heads in one qkv matrix",
        alt="On the left, the wrapper's three heads, each with its own W_query, W_key and "
            "W_value of shape (4, 12). On the right, the batched module's qkv.weight of shape "
            "(36, 12): rows 0-11 are the three heads' W_query, rows 12-23 their W_key and rows "
            "24-35 their W_value, so one matrix product computes every head's q, k and v.",
        shows=("wrapper.heads", "qkv.weight", "W_query", "W_value", "head_dim"))
def fused_qkv() -> Canvas:
    c = Canvas(880, 420)
    roles = ["W_query", "W_key", "W_value"]
    band, top, right = 32, 60, 560
    c.text(166, 24, "MultiHeadAttentionWrapper", mono=True, size=11)
    c.text(166, 42, "3 heads, each its own Linear(12, 4)", size=10, color=MUTED)
    c.text(right + 80, 24, "MultiHeadAttention", mono=True, size=11)
    c.text(right + 80, 42, "qkv.weight (36, 12)", mono=True, size=10, color=MUTED)
    for h in range(3):
        y0 = top + 8 + h * 118
        c.text(20, y0 + 48, f"wrapper.heads[{h}]", mono=True, size=10, ha="left")
        for r, role in enumerate(roles):
            y = y0 + r * 34
            c.box(166, y, 146, 28, f"{role} (4, 12)", color="green", mono=True, size=9)
            row = (r * 3 + h) * band
            c.arrow((314, y + 14), (right - 4, top + row + band / 2))
    for r, role in enumerate(roles):
        for h in range(3):
            first = (r * 3 + h) * 4
            y = top + (r * 3 + h) * band
            c.box(right, y, 160, band, f"head {h}'s {role}", color="green", mono=True, size=9,
                  radius=0)
            c.text(right + 170, y + band / 2, f"rows {first}-{first + 3}", mono=True, size=9,
                   color=MUTED, ha="left")
    c.text(right + 80, top + 9 * band + 22, "head_dim = 4 rows per head and role", size=10,
           color=MUTED)
    return c
