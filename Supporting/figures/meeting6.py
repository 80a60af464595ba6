"""Meeting 6's figures: a classification head, instruction batches, LoRA and DPO."""

from figures import figure
from figures.kit import MUTED, Canvas

ENDOFTEXT = "50256"


def row(c: Canvas, x: float, y: float, values: list[str], colors: list[str], *,
        w: float = 56, h: float = 30, size: float = 9) -> None:
    """A row of token cells, `w` wide each: ids, targets, segments of a prompt."""
    for i, (value, color) in enumerate(zip(values, colors, strict=True)):
        c.box(x + i * w, y, w, h, value, color=color, mono=True, size=size, radius=2)


def bracket(c: Canvas, x0: float, x1: float, y: float, label: str, *, up: bool = True,
            color: str = MUTED, size: float = 10) -> None:
    """A square bracket over (up) or under the span x0..x1, with `label` beyond it."""
    tip = -6 if up else 6
    c.line([(x0, y - tip), (x0, y), (x1, y), (x1, y - tip)], color=color, width=1.1)
    c.text((x0 + x1) / 2, y + (-9 if up else 10), label, size=size, color=color)


# --- Notebook 1: spam classification ---------------------------------------------------------

@figure("m6_class_head", "Reading the last real token",
        alt="'Win cash now!' as 4 token ids padded with 50256 to 7 positions goes through the "
            "model, whose new out_head has out_features=2, giving two logits at every "
            "position. class_logits reads the position of the last id that is not 50256; the "
            "last position, which the book reads, has also seen the padding.",
        shows=("class_logits", ENDOFTEXT, "out_features=2"))
def class_head() -> Canvas:
    c = Canvas(820, 396)
    x, w = 170, 70
    tokens = ["Win", " cash", " now", "!", "<pad>", "<pad>", "<pad>"]
    ids = ["16643", "5003", "783", "0"] + [ENDOFTEXT] * 3
    kinds = ["blue"] * 4 + ["grey"] * 3
    for i, token in enumerate(tokens):
        c.text(x + (i + 0.5) * w, 22, repr(token) if i < 4 else token, mono=True, size=9,
               color=MUTED)
    c.text(x - 14, 52, "input_ids", ha="right", mono=True, size=10)
    row(c, x, 37, ids, kinds, w=w)
    for i in range(7):
        c.arrow((x + (i + 0.5) * w, 69), (x + (i + 0.5) * w, 96))
    c.box(x, 98, 7 * w, 40, "tok_emb + pos_emb → trf_blocks → final_norm", color="green",
          mono=True, size=10)
    c.text(x - 14, 118, "pretrained", ha="right", size=10, color=MUTED)
    for i in range(7):
        c.arrow((x + (i + 0.5) * w, 140), (x + (i + 0.5) * w, 162))
    c.box(x, 164, 7 * w, 36, "out_head = Linear(in_features=128, out_features=2)",
          color="green", mono=True, size=10)
    c.text(x - 14, 182, "new head", ha="right", size=10, color=MUTED)
    top = 222
    fills = ["purple"] * 3 + ["yellow"] + ["grey"] * 3
    for r, name in enumerate(["ham", "spam"]):
        c.text(x - 14, top + 15 + 30 * r, name, ha="right", mono=True, size=10)
        row(c, x, top + 30 * r, [""] * 7, fills, w=w)
    c.text(x + 3.5 * w, top - 10, "(batch, tokens, 2): two logits at every position", size=9,
           color=MUTED)
    last = x + 3.5 * w
    c.arrow((last, top + 62), (last, 314))
    c.box(last - 120, 316, 240, 36, "class_logits: (batch, 2)", color="purple", mono=True,
          size=10, weight="bold")
    c.text(last, 372, "position 3, the last id that is not 50256: it has seen the whole "
           "message and nothing else", size=10)
    end = x + 7 * w
    c.line([(end - w, top - 4), (end + 4, top - 4), (end + 4, top + 64), (end - w, top + 64),
            (end - w, top - 4)], color="#c2410c", dashed=True)
    c.text(end + 14, top + 30, "the book reads\nposition -1, which\nhas seen the\npadding too",
           ha="left", size=9, color="#c2410c")
    return c


MODES = {"head": ["out_head"], "last_block": ["out_head", "final_norm", "trf_blocks[3]"]}
PARTS = ["out_head", "final_norm", "trf_blocks[3]", "trf_blocks[2]", "trf_blocks[1]",
         "trf_blocks[0]", "tok_emb, pos_emb"]


@figure("m6_trainable_modes", "What trains in each mode",
        alt="The course model drawn three times, from the embeddings at the bottom to out_head "
            "at the top. set_trainable(model, 'head') trains only out_head (258 weights), "
            "'last_block' also trains final_norm and the last transformer block (198,786), and "
            "'all' trains every one of the 7,259,266 weights; the rest stay frozen.",
        shows=("set_trainable", "258", "198,786", "7,259,266"))
def trainable_modes() -> Canvas:
    c = Canvas(780, 470)
    counts = {"head": "258 (0.00%)", "last_block": "198,786 (2.74%)",
              "all": "7,259,266 (100%)"}
    c.text(390, 20, "set_trainable(model, mode) for each mode, on the course model "
           "(4 blocks, emb_dim 128)", size=10, color=MUTED)
    for k, mode in enumerate(["head", "last_block", "all"]):
        x = 40 + 250 * k
        c.text(x + 95, 52, f'"{mode}"', mono=True, size=12, weight="bold")
        for j, part in enumerate(PARTS):
            trains = mode == "all" or part in MODES[mode]
            c.box(x, 76 + 40 * j, 190, 30, part, color="green" if trains else "grey",
                  mono=True, size=10, dashed=not trains)
        c.text(x + 95, 368, "trainable weights:", size=10, color=MUTED)
        c.text(x + 95, 388, counts[mode], mono=True, size=11, weight="bold")
    c.text(20, 216, "input at the bottom, logits at the top", rotation=90, size=9, color=MUTED)
    c.key(40, 428, "green", "trains")
    c.key(140, 428, "grey", "frozen: requires_grad = False, as pretraining left it", dashed=True)
    return c


# --- Notebook 2: instruction tuning ----------------------------------------------------------

@figure("m6_alpaca_prompt", "The Alpaca prompt layout",
        alt="One training example in the Alpaca layout: a preamble, '### Instruction:' with "
            "the instruction, '### Input:' with the input, then '### Response:' and the answer. "
            "format_prompt writes the first parts and format_response the header and the "
            "answer; everything up to the response header is the prompt, 49 tokens here.",
        shows=("format_prompt", "format_response", "### Response:"))
def alpaca_prompt() -> Canvas:
    c = Canvas(820, 380)
    lines = [  # (text, colour of the text, header?)
        ("Below is an instruction that describes a task. Write a", "blue", False),
        ("response that appropriately completes the request.", "blue", False),
        ("", "", False),
        ("### Instruction:", "blue", True),
        ("Convert the following statement into an exclamation.", "blue", False),
        ("", "", False),
        ("### Input:", "blue", True),
        ("This is amazing", "blue", False),
        ("", "", False),
        ("### Response:", "blue", True),
        ("This is amazing!", "purple", False),
    ]
    x, y0, step, width = 236, 34, 28, 424
    c.box(x - 12, y0 - 18, width, 312, color="white", radius=4)
    for i, (text, _, header) in enumerate(lines):
        if text:
            c.text(x, y0 + i * step, text, ha="left", mono=True, size=9,
                   weight="bold" if header else "normal")
    c.box(x - 8, y0 + 10 * step - 11, 130, 22, color="purple", radius=3)
    c.text(x, y0 + 10 * step, "This is amazing!", ha="left", mono=True, size=9)
    left = x - 24

    def span(first: int, last: int, label: str, sub: str) -> None:
        top, bottom = y0 + first * step - 10, y0 + last * step + 10
        c.line([(left + 6, top), (left, top), (left, bottom), (left + 6, bottom)], width=1.1)
        c.text(left - 8, (top + bottom) / 2 - 8, label, ha="right", mono=True, size=10)
        c.text(left - 8, (top + bottom) / 2 + 9, sub, ha="right", size=9, color=MUTED)

    span(0, 7, "format_prompt(entry)", "input section left out if empty")
    span(9, 10, "format_response(entry)", "header, then the answer")
    right = x + width - 4

    def side(first: int, last: int, label: str, sub: str, color: str) -> None:
        top, bottom = y0 + first * step - 10, y0 + last * step + 10
        c.line([(right - 6, top), (right, top), (right, bottom), (right - 6, bottom)],
               color=color, width=1.1)
        c.text(right + 10, (top + bottom) / 2 - 8, label, ha="left", size=10, color=color)
        c.text(right + 10, (top + bottom) / 2 + 9, sub, ha="left", size=9, color=MUTED)

    side(0, 9, "prompt: 49 tokens", "given at answer time", "#1d4ed8")
    side(10, 10, "answer: 4 tokens", "what the model writes", "#6d28d9")
    c.text(x - 12 + width / 2, y0 + 11 * step + 6, "the same 24 tokens of preamble and header open "
           "every example", size=9, color=MUTED)
    return c


@figure("m6_collate_batch", "Padding, shifting and -100",
        alt="The toy_batch of three examples of 5, 2 and 3 token ids, padded with 50256 to the "
            "longest and shifted by one: inputs on the left, targets on the right. Each row keeps "
            "its first end-of-text target, which teaches the model to stop; the padding after "
            "it becomes -100, which the loss skips.",
        shows=("toy_batch", ENDOFTEXT, "-100", "collate_by_hand"))
def collate_batch() -> Canvas:
    c = Canvas(860, 300)
    w, h = 52, 34
    c.text(70, 28, "toy_batch", mono=True, size=10, weight="bold")
    for r, ids in enumerate(["[1, 2, 3, 4, 5]", "[6, 7]", "[8, 9, 10]"]):
        c.text(70, 70 + r * h, ids, mono=True, size=9)
    inputs = [["1", "2", "3", "4", "5"], ["6", "7"] + [ENDOFTEXT] * 3,
              ["8", "9", "10"] + [ENDOFTEXT] * 2]
    targets = [["2", "3", "4", "5", ENDOFTEXT], ["7", ENDOFTEXT] + ["-100"] * 3,
               ["9", "10", ENDOFTEXT, "-100", "-100"]]
    first_end = [4, 1, 2]
    xi, xt, y = 200, 570, 53
    c.text(xi + 2.5 * w, 28, "inputs", mono=True, size=11, weight="bold")
    c.text(xt + 2.5 * w, 28, "targets", mono=True, size=11, weight="bold")
    for r in range(3):
        row(c, xi, y + r * h, inputs[r], ["grey" if v == ENDOFTEXT else "blue"
                                          for v in inputs[r]], w=w, h=h)
        colors = ["grey" if v == "-100" else "yellow" if j == first_end[r] else "blue"
                  for j, v in enumerate(targets[r])]
        row(c, xt, y + r * h, targets[r], colors, w=w, h=h)
    c.arrow((140, 70 + h), (xi - 6, 70 + h), label="")
    c.text(xi + 2.5 * w, y + 3 * h + 18, "padded to the longest example", size=9, color=MUTED)
    c.arrow((xi + 5 * w + 12, y + 1.5 * h), (xt - 12, y + 1.5 * h))
    c.text((xi + 5 * w + xt) / 2, y + 1.5 * h - 16, "shifted", size=9, color=MUTED)
    c.text((xi + 5 * w + xt) / 2, y + 1.5 * h + 16, "left by one", size=9, color=MUTED)
    c.text(xt + 2.5 * w, y + 3 * h + 18, "what each position must predict", size=9,
           color=MUTED)
    legend = [("blue", "token ids"),
              ("grey", "padding: 50256 in the inputs, -100 in the targets (the loss skips it)"),
              ("yellow", "the first end-of-text: kept, so the model learns to stop")]
    for i, (color, text) in enumerate(legend):
        c.key(200, 208 + 26 * i, color, text)
    c.text(840, 217, "collate_by_hand(toy_batch)", ha="right", mono=True, size=9,
           color=MUTED)
    return c


SEGMENTS = [("preamble", "18 tokens", 84), ("### Instruction: …", "6 + 10", 132),
            ("### Input: …", "6 + 3", 100), ("### Response:", "5", 110)]


@figure("m6_prompt_mask", "Masking the prompt",
        alt="The 53 input tokens of one example, prompt then answer, above its targets. With "
            "mask_prompt=True the 48 targets that are prompt tokens are -100; only the answer's 4 "
            "tokens and its end-of-text token stay targets, so the loss counts just those 5.",
        shows=("mask_prompt=True", "-100", "49", "<|endoftext|>"))
def prompt_mask() -> Canvas:
    c = Canvas(850, 310)
    x0, y_in, y_out, h, w = 80, 62, 140, 40, 64
    c.text(x0 - 10, y_in + h / 2, "inputs", ha="right", mono=True, size=10)
    c.text(x0 - 10, y_out + h / 2, "targets", ha="right", mono=True, size=10)
    x = x0
    for name, count, width in SEGMENTS:
        c.box(x, y_in, width, h, color="blue", radius=2)
        c.text(x + width / 2, y_in + 13, name, size=9)
        c.text(x + width / 2, y_in + 29, count, size=9, color=MUTED)
        x += width
    row(c, x, y_in, ["\\n", "This", " is", " amazing", "!"], ["blue"] * 5, w=w, h=h)
    c.box(x0, y_out, x - x0, h, "-100 × 48: every target inside the prompt", color="grey",
          size=10, radius=2, dashed=True)
    row(c, x, y_out, ["This", " is", " amazing", "!", ENDOFTEXT], ["blue"] * 5, w=w, h=h)
    for i in range(5):
        c.arrow((x + (i + 0.5) * w, y_in + h + 2), (x + (i + 0.5) * w, y_out - 2))
    c.text(x + 4.5 * w, y_out + h + 12, "<|endoftext|>", mono=True, size=9, color=MUTED)
    bracket(c, x0, x + w, y_in - 12, "prompt: 49 tokens, given at answer time", color="#1d4ed8")
    bracket(c, x + w, x + 5 * w, y_in - 12, "answer: 4 tokens", color="#6d28d9")
    bracket(c, x, x + 5 * w, y_out + h + 32, "the loss counts these 5", up=False,
            color="#b91c1c")
    c.text(20, 266, "collate([(ids, n_prompt)], mask_prompt=True): 53 targets, 48 of them -100;",
           ha="left", mono=True, size=9, color=MUTED)
    c.text(20, 286, "answer_loss computes logits only for the other 5", ha="left", size=9,
           color=MUTED)
    return c


# --- Notebook 3: LoRA ------------------------------------------------------------------------

@figure("m6_lora_layer", "A LoRA layer",
        alt="A linear layer from 768 to 3072 features with LoRA of rank 8. The input x goes "
            "through the frozen weight W (2,359,296 numbers) and, beside it, through A (8 by "
            "768, random) and B (3072 by 8, zero at the start), scaled by alpha / r; the two "
            "results are added. Only A and B train: 30,720 numbers, 1.3% of W.",
        shows=("768", "3072", "2,359,296", "30,720"))
def lora_layer() -> Canvas:
    c = Canvas(860, 340)
    c.box(20, 140, 120, 44, "x  (…, 768)", color="blue", mono=True, size=10)
    c.box(230, 40, 250, 52, "", color="grey", dashed=True)
    c.text(355, 58, "W: 3072 × 768, and b", mono=True, size=10)
    c.text(355, 77, "frozen: 2,359,296 numbers", size=9, color=MUTED)
    c.box(190, 210, 120, 44, "A: 8 × 768", color="green", mono=True, size=10)
    c.text(250, 268, "random, ±1/√768", size=9, color=MUTED)
    c.box(350, 213, 90, 38, "(…, 8)", color="blue", mono=True, size=10)
    c.text(395, 268, "rank r = 8", size=9, color=MUTED)
    c.box(480, 210, 120, 44, "B: 3072 × 8", color="green", mono=True, size=10)
    c.text(540, 268, "zeros at the start", size=9, color=MUTED)
    c.box(632, 213, 64, 38, "× α/r", color="orange", size=10)
    c.box(710, 142, 40, 40, "+", color="orange", size=13, radius=20)
    c.box(640, 34, 180, 58, "", color="blue")
    c.text(730, 52, "y  (…, 3072)", mono=True, size=10)
    c.text(730, 73, "x Wᵀ + b + α/r · x Aᵀ Bᵀ", size=9)
    c.arrow((140, 152), (228, 74))
    c.arrow((140, 172), (188, 228))
    c.arrow((482, 72), (710, 160), bend=-0.15)
    c.arrow((310, 232), (348, 232))
    c.arrow((440, 232), (478, 232))
    c.arrow((600, 232), (630, 232))
    c.arrow((670, 211), (716, 178))
    c.arrow((730, 140), (730, 94))
    c.text(20, 300, "trained: r · (in + out) = 8 · (768 + 3072) = 30,720 numbers, 1.3% of W's",
           ha="left", size=10, weight="bold")
    c.text(20, 320, "at the start B = 0, so y is exactly the pretrained layer's output",
           ha="left", size=10, color=MUTED)
    return c


LORA_ROW = [("att.qkv", "768 → 2304", "24,576"), ("att.out_proj", "768 → 768", "12,288"),
            ("ff.layers.0", "768 → 3072", "30,720"), ("ff.layers.2", "3072 → 768", "30,720")]


@figure("m6_lora_targets", "Where add_lora puts LoRA",
        alt="One transformer block of GPT-2 124M after add_lora with rank 8: its four linear "
            "layers (qkv, out_proj and the feed-forward's two) keep their frozen weights and "
            "gain trainable A and B; LayerNorms, attention and GELU have none. 98,304 numbers "
            "per block, 1,179,648 in 12 blocks, 0.95% of the model.",
        shows=("add_lora", "qkv", "out_proj", "1,179,648"))
def lora_targets() -> Canvas:
    c = Canvas(880, 350)
    y, h = 86, 50
    plan = [("norm1", 58), LORA_ROW[0], ("attention", 80), LORA_ROW[1], ("+", 28),
            ("norm2", 58), LORA_ROW[2], ("GELU", 52), LORA_ROW[3], ("+", 28)]
    x, starts, adds = 24, [], []
    for i, item in enumerate(plan):
        width = 102 if len(item) == 3 else item[1]
        if item[0] == "+":
            c.box(x, y + h / 2 - 14, 28, 28, "+", color="orange", size=12, radius=14)
            adds.append(x + 14)
        elif len(item) == 2:
            op = item[0] in ("attention", "GELU")
            c.box(x, y + 6, width, h - 12, item[0], color="orange" if op else "grey",
                  mono=not op, size=10, dashed=not op)
            if item[0].startswith("norm"):
                starts.append(x - 8)
        else:
            name, shape, count = item
            c.box(x, y, width, h, "", color="grey", dashed=True)
            c.text(x + width / 2, y + 17, name, mono=True, size=9)
            c.text(x + width / 2, y + 34, shape, mono=True, size=9, color=MUTED)
            c.box(x + 8, y + h + 14, width - 16, 44, "", color="green")
            c.text(x + width / 2, y + h + 28, "A, B", mono=True, size=10)
            c.text(x + width / 2, y + h + 45, count, mono=True, size=9)
            c.line([(x + width / 2, y + h), (x + width / 2, y + h + 14)], color="#15803d")
        if i < len(plan) - 1:
            c.arrow((x + width, y + h / 2), (x + width + 14, y + h / 2))
        x += width + 14
    for start, add in zip(starts, adds, strict=True):
        c.line([(start, y + h / 2), (start, y - 16), (add, y - 16)], color=MUTED, width=1.1)
        c.arrow((add, y - 16), (add, y + h / 2 - 14), color=MUTED)
    c.text(24, 24, "add_lora(model, rank=8): one block of GPT-2 124M", ha="left", mono=True,
           size=11, weight="bold")
    c.text(24, 232, "per block: 24,576 + 12,288 + 30,720 + 30,720 = 98,304 trained numbers",
           ha="left", size=10)
    c.text(24, 256, "× 12 blocks = 1,179,648 of 124,439,808 (0.95%)", ha="left", size=10,
           weight="bold")
    c.text(24, 286, "frozen, no LoRA: tok_emb, pos_emb, every LayerNorm, final_norm, out_head",
           ha="left", size=10, color=MUTED)
    c.key(24, 310, "green", "trains: r · (in + out) each")
    c.key(264, 310, "grey", "frozen", dashed=True)
    return c


# --- Notebook 4: DPO -------------------------------------------------------------------------

@figure("m6_dpo_loss", "A DPO pair and its loss",
        alt="A prompt with a chosen and a rejected answer is scored by the policy, which "
            "trains, and by the frozen reference: four log-probabilities. Their log-ratios times "
            "beta = 0.1 are the rewards +0.30 and -0.20, the margin is 0.50, and the loss "
            "-log sigmoid(margin) is 0.4741.",
        shows=("pi_chosen", "ref_rejected", "margin", "0.4741"))
def dpo_loss() -> Canvas:
    c = Canvas(880, 410)
    c.box(20, 20, 230, 70, "", color="blue")
    c.text(135, 38, "prompt x", size=10, weight="bold")
    c.text(135, 56, "Generate a sentence using", size=9)
    c.text(135, 71, "the word 'gregarious'.", size=9)
    c.box(270, 20, 590, 30, "", color="blue")
    c.text(280, 35, "chosen y_c:  He was gregarious, making friends wherever he went.",
           ha="left", size=9)
    c.box(270, 60, 590, 30, "", color="blue")
    c.text(280, 75, "rejected y_r:  He was annoyingly gregarious, making friends wherever he "
           "went whether ...", ha="left", size=9)
    c.line([(20, 104), (860, 104)], color=MUTED, width=1.1)
    c.arrow((140, 104), (140, 134))
    c.arrow((740, 104), (740, 134))
    c.text(440, 119, "both answers after the prompt, through both models", size=9,
           color=MUTED)
    c.box(40, 136, 200, 40, "policy π: trains", color="green", size=10)
    c.box(640, 136, 200, 40, "reference π_ref: frozen", color="grey", size=10, dashed=True)
    c.text(440, 156, "log π(y | x): the answer's tokens, summed", size=9, color=MUTED)
    c.arrow((140, 178), (140, 196))
    c.arrow((740, 178), (740, 196))
    for name, value, x, y in [("pi_chosen", "-30", 40, 198), ("pi_rejected", "-42", 40, 246),
                              ("ref_chosen", "-33", 640, 198),
                              ("ref_rejected", "-40", 640, 246)]:
        c.box(x, y, 200, 36, f"{name} = {value}", color="blue", mono=True, size=10)
    for y, text in [(216, "chosen_logratio = +3"), (264, "rejected_logratio = -2")]:
        c.text(440, y, text, mono=True, size=10)
        half = 4.3 * len(text) + 8  # half the width of the monospace text, and a gap
        c.line([(242, y), (440 - half, y)], color=MUTED, width=1.1)
        c.line([(440 + half, y), (638, y)], color=MUTED, width=1.1)
    c.text(440, 234, "policy minus reference", size=9, color=MUTED)
    c.arrow((440, 276), (440, 308))
    c.text(450, 292, "× beta", ha="left", size=9, color=MUTED)
    c.box(290, 310, 300, 36, "rewards: +0.30 and -0.20", color="orange", size=10)
    c.arrow((590, 328), (636, 328))
    c.box(638, 310, 202, 36, "margin = 0.50", color="orange", mono=True, size=10)
    c.arrow((740, 348), (740, 360))
    c.box(560, 362, 280, 36, "loss = -log σ(margin) = 0.4741", color="red", mono=True,
          size=10)
    c.text(20, 372, "beta = 0.1; the numbers are those of the cell below.", ha="left", size=9,
           color=MUTED)
    c.text(20, 390, "At the start π = π_ref: every logratio is 0, the loss ln 2.", ha="left",
           size=9, color=MUTED)
    return c
