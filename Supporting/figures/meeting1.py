"""Meeting 1's figures: from text to tokens, to training windows, to vectors.

Every id, shape and value below is one the notebooks print (the toy weights are nn.Embedding(6, 3)
after set_seed(123)), so a figure reads like the cell beside it.
"""

from figures import figure
from figures.kit import COLORS, MUTED, Canvas

CHAR = 0.84  # width of one monospace character, in layout units per point of font size


def width(label: str, size: float = 10, pad: float = 14) -> float:
    """The width a box needs to hold `label` in monospace at `size`."""
    return len(label) * CHAR * size + pad


def row(c: Canvas, x: float, y: float, labels: list[str], widths: list[float], *,
        colors: list[str], h: float = 26, size: float = 10, gap: float = 6) -> list[float]:
    """Boxes side by side from (x, y), one per label; returns their centres' x."""
    centres = []
    for label, w, color in zip(labels, widths, colors, strict=True):
        c.box(x, y, w, h, label, color=color, mono=True, size=size, radius=4)
        centres.append(x + w / 2)
        x += w + gap
    return centres


def vector(c: Canvas, x: float, y: float, color: str = "blue", n: int = 5,
           cell: float = 14) -> None:
    """A vector drawn as a strip of `n` cells and an ellipsis: 256 numbers, in short."""
    c.grid(x, y, [[""] * n], cell=cell, fills=[[color] * n])
    c.text(x + n * cell + 4, y + cell / 2, "…", ha="left", size=10, color=MUTED)


# --- Notebook 1: the vocabulary and GPT-2's subwords -------------------------------------

VOCAB = [("'!'", "0"), ("'\"'", "1"), ("','", "5"), ("…", ""), ("'yourself'", "1129"),
         ("'<|endoftext|>'", "1130"), ("'<|unk|>'", "1131")]
PIECES = ["I", "had", "always", "thought", "so", ".", "<|endoftext|>", "Hello", ",", "do",
          "you", "like", "tea", "?"]
PIECE_IDS = [53, 514, 149, 1003, 908, 7, 1130, 1131, 5, 355, 1126, 628, 975, 10]


@figure("m1_vocabulary", "A vocabulary, with its special tokens",
        alt="The vocabulary gives the story's 1,130 sorted pieces the ids 0 to 1129 and appends "
            "two special tokens: end of text (1130) and unknown (1131). Encoding two_docs "
            "splits it into pieces and looks each one up; 'Hello' is not in the vocabulary, so "
            "it becomes 1131, and decoding gives back the unknown token in its place.",
        shows=("1130", "1131", "two_docs", "tokenizer.decode"))
def vocabulary() -> Canvas:
    c = Canvas(900, 312)
    c.text(20, 24, "vocab: piece → id", mono=True, ha="left", weight="bold")
    for i, (piece, index) in enumerate(VOCAB):
        y = 42 + i * 30
        if piece == "…":
            c.text(110, y + 12, piece, mono=True, size=9)
            continue
        c.box(20, y, 180, 24, color="yellow" if index in ("1130", "1131") else "white",
              radius=3)
        c.text(30, y + 12, piece, mono=True, size=9, ha="left")
        c.text(190, y + 12, index, mono=True, size=9, ha="right")
    c.text(110, 270, "sorted pieces of the story,\nthen the two specials",
           size=9, color=MUTED)

    x0 = 240
    c.text(x0, 24, 'two_docs = "I had always thought so. <|endoftext|> Hello, do you like tea?"',
           mono=True, size=9, ha="left")
    widths = [max(width(p, 9, 10), width(str(i), 9, 10)) for p, i in zip(PIECES, PIECE_IDS,
                                                                           strict=True)]
    colors = ["white"] * len(PIECES)
    colors[7] = "red"
    centres = row(c, x0, 74, PIECES, widths, colors=colors, size=9, gap=4)
    c.arrow((x0 + 200, 36), (x0 + 200, 72))
    c.text(x0 + 210, 54, "tokenizer.encode(two_docs): split_words, then vocab[piece]",
           mono=True, size=9, color=MUTED, ha="left")
    ids = [str(i) for i in PIECE_IDS]
    id_colors = ["yellow" if i >= 1130 else "blue" for i in PIECE_IDS]
    for cx in centres:
        c.arrow((cx, 101), (cx, 133))
    row(c, x0, 135, ids, widths, colors=id_colors, size=9, gap=4)
    c.text(centres[7], 176, "not in vocab:\n<|unk|>", size=9, color=COLORS["red"][1])
    c.text(centres[6], 176, "kept whole:\none piece", size=9, color=MUTED)

    c.arrow((x0 + 200, 196), (x0 + 200, 234))
    c.text(x0 + 210, 215, "tokenizer.decode(ids)", mono=True, size=9, color=MUTED, ha="left")
    c.text(x0, 254, '"I had always thought so. <|endoftext|> <|unk|>, do you like tea?"',
           mono=True, size=9, ha="left")
    c.text(x0, 290, "The boundary survives as id 1130; 'Hello' is lost for good.", size=10,
           color=MUTED, ha="left")
    return c


WORD_LEVEL = ["The", "<|unk|>", "<|unk|>", "<|unk|>", "into", "<|unk|>", "."]
BPE = [["'The'"], ["' token'", "'izer'"], ["' splits'"], ["' sentences'"], ["' into'"],
       ["' sub'", "'words'"], ["'.'"]]
BPE_IDS = [[464], [11241, 7509], [30778], [13439], [656], [850, 10879], [13]]


@figure("m1_words_vs_bpe", "Whole words against subwords",
        alt="The sentence 'The tokenizer splits sentences into subwords.' through both "
            "tokenizers. The word tokenizer built from The Verdict turns 4 of its 7 pieces into "
            "the unknown token; GPT-2's BPE cuts the rare words into known subwords, ' token' "
            "'izer' and ' sub' 'words', and gives 9 tokens with nothing unknown.",
        shows=("9 tokens", "' token'", "'izer'", "' sub'"))
def words_vs_bpe() -> Canvas:
    c = Canvas(880, 250)
    x0, gap = 190, 10
    piece_w = [[width(p, 9, 12) for p in pieces] for pieces in BPE]
    cols = [max(width(w, 9, 12), sum(ws) + 4 * (len(ws) - 1)) for w, ws in
            zip(WORD_LEVEL, piece_w, strict=True)]
    c.text(x0, 22, '"The tokenizer splits sentences into subwords."', mono=True, size=10,
           ha="left")
    c.text(20, 74, "SimpleTokenizer", mono=True, size=10, ha="left")
    c.text(20, 92, "the Verdict's 1,132 entries", size=9, color=MUTED, ha="left")
    c.text(20, 154, "GPT-2's BPE", size=10, ha="left")
    c.text(20, 172, "enc: 50,257 entries", size=9, color=MUTED, ha="left")
    x = x0
    for word, piece_ws, col, pieces, ids in zip(WORD_LEVEL, piece_w, cols, BPE, BPE_IDS,
                                                strict=True):
        c.box(x, 70, col, 26, word, color="grey" if word == "<|unk|>" else "blue", mono=True,
              size=9, radius=4, dashed=word == "<|unk|>")
        px = x + (col - sum(piece_ws) - 4 * (len(pieces) - 1)) / 2
        for piece, w, i in zip(pieces, piece_ws, ids, strict=True):
            c.box(px, 150, w, 26, piece, color="blue", mono=True, size=9, radius=4)
            c.text(px + w / 2, 190, str(i), mono=True, size=9, color=MUTED)
            px += w + 4
        x += col + gap
    c.text(x0, 126, "4 of 7 unknown: what they said is gone", size=10,
           color=COLORS["red"][1], ha="left")
    c.text(x0, 222, "9 tokens, none unknown: rare words are spelled out from known pieces",
           size=10, ha="left")
    return c


# --- Notebook 2: training windows ---------------------------------------------------------

WINDOW = [40, 367, 2885, 1464, 1807, 3619, 402, 271, 10899]
WINDOW_TEXT = ["'I'", "' H'", "'AD'", "' always'", "' thought'", "' Jack'", "' G'", "'is'",
               "'burn'"]


@figure("m1_shifted_targets", "Inputs and their shifted targets",
        alt="The first 9 token ids of the story, window. The input x = window[:-1] holds the "
            "first 8 and the target y = window[1:] the last 8, one step to the right: each "
            "input position is paired with the id that follows it, so one window trains 8 "
            "next-token predictions.",
        shows=("window[:-1]", "window[1:]", "10899"))
def shifted_targets() -> Canvas:
    c = Canvas(900, 270)
    x0, col, w, h = 162, 82, 68, 28
    for j, (token, i) in enumerate(zip(WINDOW_TEXT, WINDOW, strict=True)):
        cx = x0 + j * col + w / 2
        c.text(cx, 24, token, mono=True, size=9, color=MUTED)
        c.box(x0 + j * col, 40, w, h, str(i), color="white", mono=True, size=10, radius=4)
        if j < 8:
            c.box(x0 + j * col, 100, w, h, str(i), color="blue", mono=True, size=10, radius=4)
        if j > 0:
            c.box(x0 + j * col, 186, w, h, str(i), color="purple", mono=True, size=10,
                  radius=4)
            c.arrow((cx - col + 8, 130), (cx - 8, 184))
    c.text(20, 54, "window", mono=True, size=10, ha="left")
    c.text(20, 114, "x = window[:-1]", mono=True, size=10, ha="left")
    c.text(20, 132, "input", size=9, color=MUTED, ha="left")
    c.text(20, 200, "y = window[1:]", mono=True, size=10, ha="left")
    c.text(20, 218, "target", size=9, color=MUTED, ha="left")
    c.text(20, 158, "predicts the next", size=9, color=MUTED, ha="left")
    c.text(x0, 244, "y[t] is the answer for x[0], …, x[t]: one window of 8 inputs trains 8 "
           "predictions at once.", size=10, ha="left")
    return c


@figure("m1_sliding_window", "A sliding window and its targets",
        alt="The toy list of ids 0 to 19 cut with context_length=4 and stride=4. Each window "
            "takes 4 inputs starting at i * stride and the 4 targets one step to the right; "
            "the windows tile the list, and 16 to 19 are never inputs, because a window "
            "starting at 16 would need a target at 20.",
        shows=("context_length=4", "stride=4", "[12, 13, 14, 15] -> [13, 14, 15, 16]"))
def sliding_window() -> Canvas:
    c = Canvas(900, 400)
    x0, cell, n = 96, 25, 20
    used = 16
    c.text(20, 48, "toy", mono=True, size=10, ha="left")
    c.grid(x0, 36, [[str(p) for p in range(n)]],
           cell=cell, fills=[["white" if p < used else "grey" for p in range(n)]])
    c.text(x0 + 18 * cell, 26, "never an input", size=9, color=MUTED)
    for i in range(4):
        start, y = 4 * i, 96 + i * 66
        c.text(20, y + cell, f"window {i}", size=10, ha="left")
        c.grid(x0 + start * cell, y, [[str(p) for p in range(start, start + 4)]], cell=cell,
               fills=[["blue"] * 4])
        c.grid(x0 + (start + 1) * cell, y + cell, [[str(p) for p in range(start + 1, start + 5)]],
               cell=cell, fills=[["purple"] * 4])
        inputs, targets = list(range(start, start + 4)), list(range(start + 1, start + 5))
        c.text(x0 + n * cell + 20, y + cell, f"{inputs} -> {targets}", mono=True, size=9,
               ha="left")
    c.arrow((x0, 88), (x0 + 4 * cell, 88))
    c.text(x0 + 2 * cell, 80, "stride=4", mono=True, size=9)
    c.box(x0 + 20 * cell + 20, 40, 14, 14, color="blue", radius=2)
    c.text(x0 + 20 * cell + 42, 47, "inputs", size=9, ha="left")
    c.box(x0 + 20 * cell + 20, 62, 14, 14, color="purple", radius=2)
    c.text(x0 + 20 * cell + 42, 69, "targets, one step right", size=9, ha="left")
    c.text(20, 372, "windows_by_hand(toy, context_length=4, stride=4): "
           "(20 - 4 - 1) // 4 + 1 = 4 windows", mono=True, size=10, ha="left")
    return c


INPUTS = [[40, 367, 2885, 1464], [1807, 3619, 402, 271], [10899, 2138, 257, 7026],
          [15632, 438, 2016, 257], [922, 5891, 1576, 438], [568, 340, 373, 645],
          [1049, 5975, 284, 502], [284, 3285, 326, 11]]
TARGETS = [[*r[1:], nxt] for r, nxt in zip(INPUTS, [1807, 10899, 15632, 922, 568, 1049, 284, 287],
                                           strict=True)]
PIPELINE = [("text", "blue", "the story, 20,479 characters"),
            ("enc.encode(text)", "orange", ""),
            ("ids", "blue", "5,145 tokens"),
            ("SlidingWindowDataset", "orange", "context_length=4, stride=4"),
            ("DataLoader", "orange", "batch_size=8, shuffle=False")]


@figure("m1_batch", "A batch of windows",
        alt="create_dataloader encodes the story into 5,145 token ids, cuts them into windows "
            "with SlidingWindowDataset, and a DataLoader stacks 8 windows into inputs and "
            "targets, two tensors of shape torch.Size([8, 4]): one row per window, one column "
            "per position, the targets being the inputs moved left by one.",
        shows=("torch.Size([8, 4])", "batch_size=8", "create_dataloader", "inputs[:, 1:]"))
def batch() -> Canvas:
    c = Canvas(800, 516)
    c.text(120, 22, "create_dataloader(text, …)", mono=True, size=10)
    c.box(10, 34, 220, 390, color="white", dashed=True)
    for k, (label, color, note) in enumerate(PIPELINE):
        y = 44 + k * 80
        c.box(20, y, 200, 32, label, color=color, mono=True, size=10)
        if note:
            c.text(120, y + 46, note, size=9, color=MUTED, mono="=" in note)
        if k:
            c.arrow((120, y - 22 if PIPELINE[k - 1][2] else y - 46), (120, y))
    cell, top = 46, 76
    for x, name, color, values in [(340, "inputs", "blue", INPUTS),
                                   (600, "targets", "purple", TARGETS)]:
        c.grid(x, top, [[str(v) for v in r] for r in values], cell=cell,
               fills=[[color] * 4 for _ in values])
        c.text(x + 2 * cell, 26, name, mono=True, size=11, weight="bold")
        c.text(x + 2 * cell, 52, "context_length=4", mono=True, size=9, color=MUTED)
        c.text(x + 2 * cell, top + 8 * cell + 18, "torch.Size([8, 4])", mono=True, size=10)
    c.text(322, top + 4 * cell, "batch_size=8 windows", mono=True, size=9, color=MUTED,
           rotation=90)
    c.arrow((224, 380), (312, 380))
    c.text(340, 494, "torch.equal(inputs[:, 1:], targets[:, :-1])  →  True", mono=True,
           size=10, ha="left")
    return c


# --- Notebook 3: embeddings -----------------------------------------------------------------

WEIGHT = [["0.3374", "-0.1778", "-0.1690"], ["0.9178", "1.5810", "1.3010"],
          ["1.2753", "-0.2010", "-0.1606"], ["-0.4015", "0.9666", "-1.1481"],
          ["-1.1589", "0.3255", "-0.6315"], ["-2.8400", "-0.7849", "-1.4096"]]
TOKEN_IDS = [2, 3, 5]


@figure("m1_embedding_lookup", "An embedding is a lookup",
        alt="token_ids [2, 3, 5] as one_hot rows of width 6, times emb.weight, the 6 by 3 "
            "table of nn.Embedding(6, 3), give the rows 2, 3 and 5 of the table: the product "
            "is the lookup emb(token_ids). Only those three rows touch the output, so only "
            "they get a gradient.",
        shows=("one_hot", "emb.weight", "[2, 3, 5]", "torch.Size([3, 3])"))
def embedding_lookup() -> Canvas:
    c = Canvas(820, 500)
    small, cell, top = 28, 62, 56
    middle = top + 3 * cell
    c.text(20, 24, "token_ids = [2, 3, 5]", mono=True, size=10, ha="left")
    hot = [[("1" if j == i else "0") for j in range(6)] for i in TOKEN_IDS]
    c.grid(60, middle - 1.5 * small, hot, cell=small,
           fills=[["yellow" if v == "1" else "white" for v in r] for r in hot])
    for k, i in enumerate(TOKEN_IDS):
        c.text(50, middle + (k - 1) * small, str(i), mono=True, size=9, ha="right",
               color=MUTED)
    c.text(60 + 3 * small, middle - 1.5 * small - 18, "one_hot  (3, 6)", mono=True, size=10)
    c.text(256, middle, "@", mono=True, size=13)
    wx = 330
    c.grid(wx, top, WEIGHT, cell=cell,
           fills=[["yellow" if i in TOKEN_IDS else "green"] * 3 for i in range(6)])
    for i in range(6):
        c.text(wx - 8, top + (i + 0.5) * cell, f"row {i}", size=9, ha="right", color=MUTED)
    c.text(wx + 1.5 * cell, top - 18, "emb.weight  (6, 3)", mono=True, size=10)
    c.text(wx + 3 * cell + 30, middle, "=", mono=True, size=13)
    ox = wx + 3 * cell + 60
    c.grid(ox, middle - 1.5 * cell, [WEIGHT[i] for i in TOKEN_IDS], cell=cell,
           fills=[["blue"] * 3] * 3)
    for k, i in enumerate(TOKEN_IDS):
        c.text(ox + 3 * cell + 8, middle + (k - 1) * cell, f"row {i}", size=9, ha="left",
               color=MUTED)
    c.text(ox + 1.5 * cell, middle - 1.5 * cell - 36, "emb(token_ids)", mono=True, size=10)
    c.text(ox + 1.5 * cell, middle - 1.5 * cell - 18, "torch.Size([3, 3])", mono=True,
           size=9, color=MUTED)
    c.text(wx + 1.5 * cell, top + 6 * cell + 26, "rows with a gradient: [2, 3, 5]",
           mono=True, size=10)
    c.text(20, top + 6 * cell + 60, "A one-hot row times the table picks one row; "
           "nn.Embedding picks it without the zeros.", size=10, ha="left")
    return c


FIRST = ["'I'", "' H'", "'AD'", "' always'"]  # inputs[0], the first window of the batch
FIRST_IDS = [40, 367, 2885, 1464]


@figure("m1_input_pipeline", "From text to input embeddings",
        alt="The first window of the batch, 'I HAD always', on its way into the model: text, "
            "four GPT-2 tokens, their ids 40, 367, 2885 and 1464, one row of token_embedding "
            "per id, plus one row of position_embedding per position 0 to 3, giving the input "
            "embeddings. For the whole batch the ids are torch.Size([8, 4]) and the vectors "
            "torch.Size([8, 4, 256]).",
        shows=("torch.Size([8, 4])", "torch.Size([8, 4, 256])", "token_embedding", "1464"))
def input_pipeline() -> Canvas:
    c = Canvas(880, 480)
    x0, col, w = 160, 120, 104
    rows = {"text": 20, "tokens": 70, "token ids": 120, "tok": 222, "pos": 328, "sum": 398}
    labels = {"text": "text", "tokens": "tokens", "token ids": "token ids", "tok": "tok",
              "pos": "pos", "sum": "input_embeddings"}
    shapes = {"token ids": "inputs: torch.Size([8, 4])", "tok": "torch.Size([8, 4, 256])",
              "pos": "torch.Size([4, 256])", "sum": "torch.Size([8, 4, 256])"}
    for key, y in rows.items():
        c.text(20, y + 14, labels[key], mono=key in ("tok", "pos", "sum"), size=10, ha="left")
        if key in shapes:
            c.text(x0 + 4 * col + 10, y + 14, shapes[key], mono=True, size=9, ha="left")
    c.text(x0 + 4 * col + 10, rows["token ids"] - 12, "the whole batch:", size=9,
           color=MUTED, ha="left")
    c.box(x0, rows["text"], 4 * col - 16, 28, '"I HAD always"', color="white", mono=True,
          size=10)
    c.box(x0 - 8, 168, 4 * col, 28, "token_embedding: row id of a 50,257 × 256 table",
          color="green", mono=True, size=9)
    c.box(x0 - 8, 270, 4 * col, 28, "position_embedding: row p of a 4 × 256 table",
          color="green", mono=True, size=9)
    for j in range(4):
        x = x0 + j * col
        cx = x + w / 2
        c.arrow((cx, rows["text"] + 30), (cx, rows["tokens"] - 2))
        c.box(x, rows["tokens"], w, 28, FIRST[j], color="white", mono=True, size=10, radius=4)
        c.box(x, rows["token ids"], w, 28, str(FIRST_IDS[j]), color="blue", mono=True,
              size=10, radius=4)
        c.arrow((cx, rows["token ids"] + 28), (cx, 168))
        c.arrow((cx, 196), (cx, rows["tok"] - 2))
        c.arrow((cx, 298), (cx, rows["pos"] - 2))
        c.text(cx + 8, 313, f"p = {j}", mono=True, size=9, color=MUTED, ha="left")
        c.text(cx, 256, "+", size=13, color=COLORS["orange"][1], weight="bold")
        c.text(cx, 380, "=", size=13, color=COLORS["orange"][1], weight="bold")
        for key in ("tok", "pos", "sum"):
            vector(c, x + 8, rows[key] + 4)
    c.text(x0, 456, "Each id picks a row of 256 numbers; each position adds its own row.",
           size=10, ha="left")
    return c


def sheets(c: Canvas, x: float, y: float, n: int, *, highlight: int | None = None,
           ghosts: bool = False, w: float = 150, rows: int = 4, row_h: float = 20,
           step: float = 8) -> None:
    """A (n, rows, emb_dim) tensor as n sheets stacked back to front, sheet 0 in front;
    `ghosts` draws sheets 1 to n-1 dashed: one sheet broadcast over n."""
    for k in reversed(range(n)):
        color = "yellow" if k == highlight else "blue"
        if ghosts and k:
            color = "grey"
        c.box(x + k * step, y - k * step, w, rows * row_h, color=color, dashed=ghosts and k > 0,
              radius=0)
    for r in range(1, rows):
        c.line([(x, y + r * row_h), (x + w, y + r * row_h)], color=COLORS["blue"][1], width=0.8)


@figure("m1_token_plus_position", "Token plus position embeddings, by broadcasting",
        alt="tok, the token embeddings of shape torch.Size([8, 4, 256]), is 8 windows of 4 "
            "vectors. pos, torch.Size([4, 256]), has one vector per position; tok + pos adds "
            "it to every window by broadcasting, so input_embeddings[3] equals tok[3] + pos and "
            "the sum keeps the shape (8, 4, 256).",
        shows=("tok + pos", "torch.Size([8, 4, 256])", "torch.Size([4, 256])"))
def token_plus_position() -> Canvas:
    c = Canvas(870, 300)
    y, h = 130, 80
    blocks = [(70, "tok", "torch.Size([8, 4, 256])", {"highlight": 3}),
              (380, "pos", "torch.Size([4, 256])", {"ghosts": True}),
              (650, "input_embeddings", "torch.Size([8, 4, 256])", {"highlight": 3})]
    for x, name, shape, style in blocks:
        sheets(c, x, y, 8, **style)
        c.text(x + 75, y + h + 22, name, mono=True, size=11, weight="bold")
        c.text(x + 75, y + h + 44, shape, mono=True, size=9)
    c.text(300, y + h / 2, "+", size=16, color=COLORS["orange"][1], weight="bold")
    c.text(614, y + h / 2, "=", size=16, color=COLORS["orange"][1], weight="bold")
    c.text(52, y + h / 2, "context_length = 4", size=9, color=MUTED, rotation=90)
    c.text(145, y - 72, "batch = 8 windows", size=9, color=MUTED, ha="left")
    c.text(70 + 75, y + h + 66, "emb_dim = 256 across", size=9, color=MUTED)
    for p in range(4):
        c.text(372, y + 10 + p * 20, f"p = {p}", mono=True, size=9, color=MUTED, ha="right")
    c.text(440, y - 72, "the same 4 rows for every window", size=9, color=MUTED, ha="left")
    c.text(20, 22, "input_embeddings = tok + pos", mono=True, size=11, ha="left")
    c.box(560, 14, 14, 14, color="yellow", radius=2)
    c.text(582, 21, "input_embeddings[3] == tok[3] + pos", mono=True, size=9, ha="left")
    return c
