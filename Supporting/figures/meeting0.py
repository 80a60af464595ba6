"""Meeting 0's figures: the two PyTorch ideas of the refresher that are easier seen than read.

The numbers are the notebook's: rows + cols in the broadcasting cell, and the one-example
logistic regression whose graph autograd records.
"""

from figures import figure
from figures.kit import COLORS, MUTED, Canvas

ROWS, COLS = [0, 10, 20], [1, 2, 3, 4]


@figure("m0_broadcasting", "Broadcasting a column and a row",
        alt="rows, of shape (3, 1), and cols, of shape (4,), lined up from the right: rows is "
            "stretched along the columns and cols down the rows, without copying memory, so "
            "rows + cols is a 3 by 4 table, torch.Size([3, 4]).",
        shows=("(3, 1)", "(4,)", "torch.Size([3, 4])"))
def broadcasting() -> Canvas:
    c = Canvas(800, 300)
    cell, top = 40, 70
    stretched_rows = [[str(r)] * 4 for r in ROWS]
    stretched_cols = [[str(v) for v in COLS] for _ in ROWS]
    own_rows = [["blue"] + ["white"] * 3 for _ in ROWS]
    own_cols = [["blue"] * 4] + [["white"] * 4 for _ in ROWS[1:]]
    total = [[str(r + v) for v in COLS] for r in ROWS]
    for x, values, fills, name, shape in [
            (40, stretched_rows, own_rows, "rows", "(3, 1) → (3, 4)"),
            (300, stretched_cols, own_cols, "cols", "(4,) → (1, 4) → (3, 4)"),
            (560, total, [["blue"] * 4 for _ in ROWS], "rows + cols", "torch.Size([3, 4])")]:
        c.grid(x, top, values, cell=cell, fills=fills, size=10)
        c.text(x + 2 * cell, top - 40, name, mono=True, size=11, weight="bold")
        c.text(x + 2 * cell, top - 18, shape, mono=True, size=9, color=MUTED)
    c.text(250, top + 1.5 * cell, "+", size=16, color=COLORS["orange"][1], weight="bold")
    c.text(510, top + 1.5 * cell, "=", size=16, color=COLORS["orange"][1], weight="bold")
    c.box(40, 216, 14, 14, color="blue", radius=2)
    c.text(62, 223, "the tensor's own entries", size=10, ha="left")
    c.box(40, 242, 14, 14, color="white", radius=2)
    c.text(62, 249, "stretched from a size-1 (or missing) axis: no memory copied", size=10,
           ha="left")
    c.text(560, 223, "rows  (3, 1)", mono=True, size=10, ha="left")
    c.text(560, 243, "cols     (4,)", mono=True, size=10, ha="left")
    c.text(560, 266, "lined up from the right", size=9, color=MUTED, ha="left")
    return c


# (label, colour, x, y, width): the graph of p = sigmoid(w * x_in + b) and its loss
NODES = {
    "x_in": ("x_in = 2.0", "blue", 20, 40, 100),
    "w": ("w = -0.5", "green", 20, 120, 100),
    "mul": ("*", "orange", 170, 80, 50),
    "b": ("b = 0.1", "green", 250, 10, 90),
    "add": ("+", "orange", 270, 80, 50),
    "sigmoid": ("sigmoid", "orange", 380, 80, 90),
    "bce": ("binary_cross_entropy", "orange", 590, 80, 180),
    "y_true": ("y_true = 1.0", "blue", 620, 160, 120),
    "loss": ("loss", "red", 800, 80, 70),
}
EDGES = [("w", "mul", ""), ("x_in", "mul", ""), ("mul", "add", ""), ("b", "add", ""),
         ("add", "sigmoid", "z"), ("sigmoid", "bce", "p = 0.2891"), ("y_true", "bce", ""),
         ("bce", "loss", "")]
GRAD_FNS = {"mul": "MulBackward0", "add": "AddBackward0", "sigmoid": "SigmoidBackward0",
            "bce": "BinaryCrossEntropyBackward0"}


def port(name: str, side: str) -> tuple[float, float]:
    """The middle of a node's left, right, top or bottom edge (every box is 30 high)."""
    _, _, x, y, w = NODES[name]
    return {"left": (x, y + 15), "right": (x + w, y + 15), "top": (x + w / 2, y),
            "bottom": (x + w / 2, y + 30)}[side]


@figure("m0_autograd_graph", "The graph autograd records",
        alt="The computation p = sigmoid(w * x_in + b) and its binary cross-entropy loss as a "
            "graph: each operation leaves a grad_fn node, ending in "
            "BinaryCrossEntropyBackward0. loss.backward() walks the graph from the loss back to "
            "the leaves w and b and stores dL/dw = -1.4219 in w.grad and dL/db = -0.7109 in "
            "b.grad.",
        shows=("BinaryCrossEntropyBackward0", "p = 0.2891", "loss = 1.2412", "-1.4219"))
def autograd_graph() -> Canvas:
    c = Canvas(900, 290)
    for label, color, x, y, w in NODES.values():
        c.box(x, y, w, 30, label, color=color, mono=True, size=10)
    sides = {"b": ("bottom", "top"), "y_true": ("top", "bottom")}
    for a, b, label in EDGES:
        start_side, end_side = sides.get(a, ("right", "left"))
        start, end = port(a, start_side), port(b, end_side)
        c.arrow(start, end)
        if label:
            c.text((start[0] + end[0]) / 2, start[1] - 24, label, mono=True, size=9,
                   color=MUTED)
    for name, grad_fn in GRAD_FNS.items():
        _, _, x, y, w = NODES[name]
        c.text(x + w / 2, y - 14 if name == "bce" else y + 44, grad_fn, mono=True, size=9,
               color=MUTED)
    c.text(835, 126, "loss = 1.2412", mono=True, size=10)
    red = COLORS["red"][1]
    c.text(20, 172, "w.grad = -1.4219", mono=True, size=10, color=red, ha="left")
    c.text(350, 25, "b.grad = -0.7109", mono=True, size=10, color=red, ha="left")
    c.arrow((835, 222), (40, 222), color=red, dashed=True)
    c.text(440, 244, "loss.backward(): the chain rule applied node by node, from the loss back "
           "to the leaves w and b", size=10, color=red)
    c.text(440, 268, "grey: the grad_fn each operation leaves on its result", size=9, color=MUTED)
    return c
