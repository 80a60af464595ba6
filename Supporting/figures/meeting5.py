"""Meeting 5's figures: the loss, the training loop, sampling, the extras and GPT-2's names."""

import math

from buildllm.training import lr_at
from figures import figure
from figures.kit import COLORS, MUTED, Canvas

# Notebook 1, section 1: the first 8 predictions of The Verdict by the untrained cpu-tiny, with
# the probability it gives each target (the notebook prints them, rounded to 3 digits).
TARGETS = ["' H'", "'AD'", "' always'", "' thought'", "' Jack'", "' G'", "'is'", "'burn'"]
P_TARGET = [1.91e-05, 2.22e-05, 1.90e-05, 2.02e-05, 1.46e-05, 1.91e-05, 1.41e-05, 1.15e-05]


def _column(c: Canvas, x: float, y: float, values: list[str], *, w: float = 70,
            h: float = 22, color: str = "white", size: float = 9) -> None:
    """A column of values in cells wider than a grid's squares: a vector of numbers."""
    for i, value in enumerate(values):
        c.box(x, y + i * h, w, h, value, color=color, mono=True, size=size, radius=0)


@figure("m5_cross_entropy", "Cross entropy, step by step",
        alt="The untrained model's logits of shape (1, 8, 50257) go through log_softmax; "
            "gather picks, in each of the 8 rows, the log-probability of the token that came "
            "next, about -10.9 each; their mean, negated, is the loss, 10.9755.",
        shows=("log_softmax(dim=-1)", "target_log_probs", "loss_by_hand", "10.9755"))
def cross_entropy() -> Canvas:
    c = Canvas(880, 350)
    c.box(20, 20, 210, 36, "logits (1, 8, 50257)", color="purple", mono=True, size=10)
    c.arrow((230, 38), (280, 38))
    c.box(280, 20, 190, 36, "log_softmax(dim=-1)", color="orange", mono=True, size=10)
    c.text(490, 38, "logit - log(sum(exp(logits))): never log(0)", ha="left", size=10,
           color=MUTED)
    x, y, cell, columns = 150, 110, 22, 10
    c.arrow((375, 56), (375, y - 24))
    hits = [3, 6, 1, 8, 4, 3, 9, 5]  # where each target sits in its row (for the picture)
    c.text(x + columns * cell / 2 + 40, y - 14, "log_probs (1, 8, 50257)", mono=True, size=10)
    c.text(x - 10, y - 14, "target", ha="right", size=10, color=MUTED)
    for i, token in enumerate(TARGETS):
        c.text(x - 10, y + (i + 0.5) * cell, token, ha="right", mono=True, size=9)
    c.grid(x, y, [[""] * columns for _ in TARGETS], cell=cell,
           fills=[["yellow" if j == hit else "white" for j in range(columns)] for hit in hits])
    c.text(x + columns * cell / 2, y + 8 * cell + 14, "one row per position, 50,257 columns",
           size=9, color=MUTED)
    mid = y + 4 * cell
    c.arrow((x + columns * cell + 4, mid), (398, mid))
    c.box(398, mid - 26, 214, 52, "gather(-1,\ntargets.unsqueeze(-1))", color="orange",
          mono=True, size=10)
    c.arrow((612, mid), (640, mid))
    c.text(675, y - 30, "target_log_probs", mono=True, size=10)
    c.text(675, y - 12, "(1, 8)", mono=True, size=10)
    _column(c, 640, y, [f"{math.log(p):.2f}" for p in P_TARGET], color="yellow")
    c.arrow((710, mid), (740, mid))
    c.box(740, mid - 18, 120, 36, "-mean()", color="orange", mono=True, size=10)
    c.arrow((800, mid + 18), (800, mid + 56))
    c.box(740, mid + 56, 120, 50, "loss_by_hand\n10.9755", color="red", mono=True, size=10)
    c.text(675, y + 8 * cell + 24, "ln p of each target:\nabout ln(1/50,257)", size=9,
           color=MUTED)
    code = "F.cross_entropy(logits.flatten(0, 1), targets.flatten())"
    c.text(20, 330, code, ha="left", mono=True, size=10)
    c.text(34 + 8.4 * len(code), 330, "gives the same number", ha="left", size=10)
    return c


@figure("m5_loss_landmarks", "Landmarks on the loss scale",
        alt="A vertical loss scale from 11 down to 0 with The Verdict's landmarks: 10.82 for a "
            "uniform guess over GPT-2's 50,257 tokens, 7.26 for a uniform guess over the "
            "story's 1,416 tokens, 6.01 for knowing only token frequencies (perplexity 408), "
            "and 0 for the story memorized. Above 6.01 a model learns which tokens are "
            "common; below it, it must use the context.",
        shows=("10.82", "7.26", "6.01", "50,257", "1,416", "408"))
def loss_landmarks() -> Canvas:
    c = Canvas(730, 540)
    top, bottom, axis = 40, 460, 190

    def at(loss: float) -> float:
        return bottom - loss * (bottom - top) / 11

    c.line([(axis, at(11)), (axis, bottom)])
    c.text(axis, 20, "loss", size=11)
    for loss in range(0, 12, 2):
        c.line([(axis - 5, at(loss)), (axis, at(loss))])
        c.text(axis - 10, at(loss), str(loss), ha="right", size=9, color=MUTED)
    landmarks = [
        (10.82, "50,257", "uniform over GPT-2's vocabulary: ln(50,257)"),
        (7.26, "1,416", "uniform over the story's own 1,416 tokens"),
        (6.01, "408", "token frequencies, no context"),
        (0.0, "1", "the whole story memorized"),
    ]
    for loss, ppl, meaning in landmarks:
        c.line([(axis, at(loss)), (axis + 90, at(loss))], color=COLORS["red"][1], dashed=True)
        c.text(axis + 100, at(loss) - 8, f"{loss:.2f}", ha="left", mono=True, size=11,
               weight="bold", color=COLORS["red"][1])
        c.text(axis + 160, at(loss) - 8, meaning, ha="left", size=11)
        c.text(axis + 160, at(loss) + 9, f"perplexity {ppl}", ha="left", size=10,
               color=MUTED)
    for lo, hi, label in [(6.01, 10.82, "which tokens are common"),
                          (0.0, 6.01, "what the context says")]:
        c.line([(120, at(hi) + 4), (110, at(hi) + 4), (110, at(lo) - 4), (120, at(lo) - 4)],
               color=MUTED)
        c.text(95, (at(lo) + at(hi)) / 2, label, rotation=90, size=10, color=MUTED)
    c.text(20, 500, "perplexity = exp(loss): as unsure as a uniform choice among that many "
           "tokens", ha="left", size=10)
    c.text(20, 520, "The Verdict, in GPT-2's tokens: 5,145 tokens, 1,416 different ones",
           ha="left", size=10, color=MUTED)
    return c


@figure("m5_training_loop", "The training loop",
        alt="One training step as a loop: take the next batch, clear the gradients with "
            "optimizer.zero_grad(), compute the loss with batch_loss, backpropagate with "
            "loss.backward(), and update the weights with optimizer.step(), 360 times. Every "
            "eval_every steps, evaluate measures the training and validation loss into history.",
        shows=("zero_grad", "batch_loss", "backward()", "optimizer.step()", "eval_every",
               "evaluate"))
def training_loop() -> Canvas:
    c = Canvas(880, 380)
    boxes = [  # (x, y, w, code, colour, what it does)
        (30, 30, 210, "next(batches)", "blue", "inputs, targets: (1, 128) ids"),
        (290, 30, 250, "optimizer.zero_grad()", "orange", "backward() adds to .grad: clear it"),
        (590, 30, 270, "loss = batch_loss(model, ...)", "green",
         "forward pass, then cross entropy"),
        (590, 170, 270, "loss.backward()", "orange", "every weight's gradient, into .grad"),
        (290, 170, 250, "optimizer.step()", "orange", "AdamW (lr=1e-3) moves the weights"),
    ]
    for x, y, w, code, color, note in boxes:
        c.box(x, y, w, 56, color=color)
        c.text(x + w / 2, y + 20, code, mono=True, size=10)
        c.text(x + w / 2, y + 41, note, size=9, color=MUTED)
    c.arrow((240, 58), (290, 58))
    c.arrow((540, 58), (590, 58))
    c.arrow((725, 86), (725, 170))
    c.arrow((590, 198), (540, 198))
    c.line([(290, 198), (135, 198)])
    c.arrow((135, 198), (135, 86))
    c.text(430, 128, "repeat: steps = 10 * steps_per_epoch = 360", size=10, color=MUTED)
    c.arrow((415, 226), (415, 270), label="every eval_every steps", size=9)
    c.box(150, 270, 530, 90, color="white", dashed=True)
    c.text(415, 290, "evaluate(model, train_loader, eval_batches)", mono=True, size=10)
    c.text(415, 312, "evaluate(model, val_loader, eval_batches)", mono=True, size=10)
    c.text(415, 338, "into history, with the tokens seen; no gradients, dropout off", size=9,
           color=MUTED)
    return c


def _softmax(logits: list[float]) -> list[float]:
    top = max(logits)
    exps = [math.exp(x - top) if x > -math.inf else 0.0 for x in logits]
    return [e / sum(exps) for e in exps]


def _sampling_stages() -> list[tuple[list[float], list[bool]]]:
    """Probabilities and kept flags after each stage of next_token, on 12 made-up logits."""
    logits = [2.0 - 0.22 * i for i in range(12)]
    keep = [True] * 12
    sharp = [x / 0.8 for x in logits]  # temperature 0.8
    p = _softmax(sharp)
    top_k = [i < 10 for i in range(12)]  # k = 10
    p_k = _softmax([x if k else -math.inf for x, k in zip(sharp, top_k, strict=True)])
    total, top_p = 0.0, []
    for q in p_k:  # the fewest most likely tokens whose probabilities reach p = 0.9
        top_p.append(total < 0.9)
        total += q
    final = _softmax([x if k else -math.inf for x, k in zip(sharp, top_p, strict=True)])
    return [(_softmax(logits), keep), (p, keep), (p, top_k), (p, top_p), (final, top_p),
            (final, top_p)]


def _bars(c: Canvas, x: float, y: float, probs: list[float], kept: list[bool], scale: float,
          drawn: int | None = None) -> None:
    """A small bar chart, bottom-left at (x, y): probabilities, grey where filtered out."""
    for i, (q, k) in enumerate(zip(probs, kept, strict=True)):
        color = "yellow" if i == drawn else "purple" if k else "grey"
        h = max(2.0, q * scale)
        c.box(x + i * 10, y - h, 8, h, color=color, radius=0)
    c.line([(x - 2, y), (x + 120, y)], color=MUTED, width=1)


@figure("m5_sampling_pipeline", "From logits to the next token",
        alt="next_token's stages, left to right, each with a small bar chart of the "
            "probabilities: the logits; divided by temperature=0.8, sharper; top_k=10 greys "
            "out all but the 10 best; top_p=0.9 keeps the fewest whose probabilities reach "
            "0.9; softmax renormalizes what is left; multinomial draws one token.",
        shows=("temperature=0.8", "top_k=10", "top_p=0.9", "next_token", "generator"))
def sampling_pipeline() -> Canvas:
    c = Canvas(900, 300)
    stages = [("logits", "purple", "the model's scores,\n(1, vocab)"),
              ("/ temperature", "orange", "T = 0.8 < 1:\nsharper"),
              ("top_k", "orange", "k = 10: the rest\nbecome -inf"),
              ("top_p", "orange", "p = 0.9: the fewest\nthat reach p"),
              ("softmax", "orange", "probabilities of\nwhat is left"),
              ("multinomial", "orange", "one draw, from\nthe generator")]
    shown = _sampling_stages()
    scale = 90 / max(max(p) for p, _ in shown)
    for i, ((name, color, note), (probs, kept)) in enumerate(zip(stages, shown, strict=True)):
        x = 20 + i * 146
        c.box(x, 20, 130, 36, name, color=color, mono=True, size=10)
        if i:
            c.arrow((x - 16, 38), (x, 38))
        _bars(c, x + 5, 160, probs, kept, scale, drawn=1 if i == 5 else None)
        c.text(x + 65, 192, note, size=9, color=MUTED)
    c.text(20, 240, "next_token(logits, temperature=0.8, top_k=10, top_p=0.9, generator=g)",
           ha="left", mono=True, size=10)
    c.text(20, 268, "bars: the 12 most likely tokens; grey: filtered out (-inf); yellow: the "
           "token drawn. A made-up distribution, the notebook's settings.", ha="left", size=9,
           color=MUTED)
    return c


@figure("m5_warmup_cosine", "Warmup, then cosine decay",
        alt="A sketch of the learning rate over a run with max_lr=6e-4, warmup_steps=100, "
            "total_steps=1000 and min_lr=6e-5: it rises linearly during the warmup, falls "
            "along half a cosine to min_lr at total_steps, and stays at min_lr after that.",
        shows=("max_lr", "min_lr", "warmup_steps", "total_steps", "6e-4", "6e-5"))
def warmup_cosine() -> Canvas:
    c = Canvas(860, 390)
    run = dict(max_lr=6e-4, warmup_steps=100, total_steps=1000, min_lr=6e-5)
    left, warm_end, decay_end, right = 140, 290, 700, 820  # the warmup drawn wider than 10%
    base, peak = 220, 50

    def x_of(step: float) -> float:
        if step <= 100:
            return left + (warm_end - left) * step / 100
        if step <= 1000:
            return warm_end + (decay_end - warm_end) * (step - 100) / 900
        return decay_end + (right - decay_end) * (step - 1000) / 200

    def y_of(lr: float) -> float:
        return base - (base - peak) * lr / run["max_lr"]

    c.line([(left, peak - 20), (left, base), (right + 10, base)], color=MUTED, width=1)
    c.text(left - 8, peak - 30, "learning rate", ha="left", size=10, color=MUTED)
    steps = list(range(0, 1200, 4))
    c.line([(x_of(s), y_of(lr_at(s, **run))) for s in steps], color=COLORS["blue"][1], width=2.2)
    c.text(left - 8, y_of(6e-4), "max_lr = 6e-4", ha="right", mono=True, size=9)
    c.text(left - 8, y_of(6e-5), "min_lr = 6e-5", ha="right", mono=True, size=9)
    for lr in (6e-4, 6e-5):
        c.line([(left, y_of(lr)), (right, y_of(lr))], color=MUTED, width=0.8, dashed=True)
    for step, label in [(0, "0"), (100, "warmup_steps = 100"), (1000, "total_steps = 1000")]:
        c.line([(x_of(step), base), (x_of(step), base + 5)], color=MUTED, width=1)
        c.text(x_of(step), base + 14, label, mono=True, size=9)
    c.text(right, base + 14, "step", size=9, color=MUTED)
    phases = [(left, warm_end, "warmup", "yellow"), (warm_end, decay_end, "cosine decay", "white"),
              (decay_end, right, "min_lr", "grey")]
    for x0, x1, label, color in phases:
        c.box(x0, base + 30, x1 - x0, 28, label, color=color, radius=3, size=10)
    formulas = [("step < warmup_steps", "max_lr * (step + 1) / warmup_steps"),
                ("up to total_steps", "min_lr + (max_lr - min_lr) * 0.5 * "
                                      "(1 + cos(pi * progress))"),
                ("after total_steps", "min_lr")]
    for i, (when, formula) in enumerate(formulas):
        c.text(left, 305 + 20 * i, when, ha="left", size=10)
        c.text(left + 175, 305 + 20 * i, formula, ha="left", mono=True, size=9)
    c.text(left, 372, "progress goes from 0 to 1 over the decay. The warmup is drawn wider "
           "than its 10% of the steps.", ha="left", size=9, color=MUTED)
    return c


def _sequences(c: Canvas, x: float, y: float, rows: int, cell: float = 11) -> None:
    """A batch of token windows as a small blue block, one row per sequence."""
    c.grid(x, y, [[""] * 6 for _ in range(rows)], cell=cell,
           fills=[["blue"] * 6 for _ in range(rows)])


@figure("m5_grad_accumulation", "Gradient accumulation",
        alt="Left: one batch of 8 sequences, one batch_loss and one backward() give .grad. "
            "Right: the same 8 split by inputs.chunk(steps) into steps = 4 micro-batches of 2; "
            "each loss is divided by steps and each backward() adds into the same .grad, which "
            "ends up the same, so the optimizer then takes one step.",
        shows=("steps = 4", "chunk", "/ steps", "same gradients"))
def grad_accumulation() -> Canvas:
    c = Canvas(880, 360)
    c.text(20, 20, "one batch of 8 sequences", ha="left", size=11, weight="bold")
    _sequences(c, 30, 95, 8)
    c.text(63, 195, "inputs (8, 64)", mono=True, size=9)
    c.arrow((100, 139), (130, 139))
    c.box(130, 119, 150, 40, "batch_loss(...)", color="green", mono=True, size=10)
    c.arrow((280, 139), (310, 139))
    c.box(310, 114, 80, 50, ".grad", color="yellow", mono=True, size=11)
    c.text(350, 180, "backward()", mono=True, size=9, color=MUTED)
    c.line([(415, 30), (415, 290)], color=MUTED, width=1, dashed=True)
    c.text(440, 20, "4 micro-batches of 2", ha="left", size=11, weight="bold")
    c.text(440, 300, "inputs.chunk(steps), steps = 4", ha="left", mono=True, size=10)
    for i in range(4):
        y = 50 + i * 60
        _sequences(c, 440, y, 2)
        c.text(440 + 33, y + 32, f"micro-batch {i + 1}", size=8, color=MUTED)
        c.arrow((510, y + 11), (540, y + 11))
        c.box(540, y - 7, 220, 36, "batch_loss(...) / steps", color="green", mono=True,
              size=10)
        c.arrow((760, y + 11), (795, 149 + (i - 1.5) * 12))
    c.box(795, 114, 75, 70, ".grad\n+=", color="yellow", mono=True, size=11)
    c.text(832, 202, "backward()\nadds to it", size=9, color=MUTED)
    c.text(20, 300, "same gradients: True", ha="left", mono=True, size=10)
    c.text(20, 322, "The mean over 8 sequences is the mean of 4 means over 2: divide each "
           "micro-batch's loss by steps.", ha="left", size=10)
    c.text(20, 342, "Then one optimizer.step(), in the memory of 2 sequences instead of 8.",
           ha="left", size=10, color=MUTED)
    return c


@figure("m5_checkpoint", "What a checkpoint holds",
        alt="checkpoint.pt as save_checkpoint writes it: the model's weights, the optimizer's "
            "exp_avg and exp_avg_sq for every weight, the scheduler's place, the step and the "
            "random number generators, each restored on resume by load_state_dict or "
            "set_rng_state. The pretraining command's checkpoint adds the data position, the "
            "settings and more.",
        shows=("checkpoint.pt", "exp_avg_sq", "load_state_dict", "set_rng_state",
               "save_checkpoint"))
def checkpoint() -> Canvas:
    c = Canvas(900, 440)
    c.box(20, 20, 430, 310, color="white")
    c.text(35, 40, "checkpoint.pt", ha="left", mono=True, size=11, weight="bold")
    c.text(440, 40, "save_checkpoint(path, ...)", ha="right", mono=True, size=9, color=MUTED)
    rows = [  # key, colour, what it holds, how a resumed run puts it back
        ("model", "green", "the weights: 108,352 numbers",
         'model.load_state_dict(state["model"])'),
        ("optimizer", "yellow", "exp_avg, exp_avg_sq, step per weight:\n216,704 numbers (2x)",
         'optimizer.load_state_dict(state["optimizer"])'),
        ("scheduler", "yellow", "how far along warmup_cosine",
         'scheduler.load_state_dict(state["scheduler"])'),
        ("step", "blue", "20: the steps done",
         'train(..., steps=40 - state["step"])'),
        ("rng", "blue", "rng_state(): python, torch\n(and cuda) generators",
         'set_rng_state(state["rng"])'),
    ]
    c.text(675, 40, "on resume, after load_checkpoint(path)", size=10, color=MUTED)
    for i, (key, color, holds, resume) in enumerate(rows):
        y = 62 + i * 52
        c.box(35, y, 110, 40, key, color=color, mono=True, size=10)
        c.text(160, y + 20, holds, ha="left", size=9)
        c.arrow((450, y + 20), (490, y + 20))
        c.text(495, y + 20, resume, ha="left", mono=True, size=9)
    c.box(20, 345, 860, 52, color="grey", dashed=True)
    c.text(35, 362, "python -m buildllm.pretrain's checkpoint.pt adds: format, each process's "
           "data position and rng, the GradScaler,", ha="left", size=9)
    c.text(35, 380, "the settings (config, model_config, tokenizer), data_sha256, world_size, "
           "history and skipped_steps", ha="left", size=9)
    c.text(20, 420, "Written atomically: a temporary file, fsync, then os.replace, so a crash "
           "leaves the old checkpoint or the new one, never half.", ha="left", size=9,
           color=MUTED)
    return c


# Notebook 5, section 1: hf_key_map's pairs for the first block, and the tied output layer.
KEY_PAIRS = [  # (GPT-2's name, ours, stored transposed)
    ("wpe.weight", "pos_emb.weight", False),
    ("h.0.ln_1.weight", "trf_blocks.0.norm1.scale", False),
    ("h.0.attn.c_attn.weight", "trf_blocks.0.att.qkv.weight", True),
    ("h.0.attn.c_proj.weight", "trf_blocks.0.att.out_proj.weight", True),
    ("h.0.mlp.c_fc.weight", "trf_blocks.0.ff.layers.0.weight", True),
    ("h.0.mlp.c_proj.weight", "trf_blocks.0.ff.layers.2.weight", True),
    ("ln_f.weight", "final_norm.scale", False),
]


@figure("m5_hf_key_map", "GPT-2's names, mapped to GPTModel's",
        alt="GPT-2's checkpoint names on the left, GPTModel's on the right, as hf_key_map pairs "
            "them: wte.weight feeds both tok_emb.weight and the tied out_head.weight, and the "
            "four Conv1D weights of each block, such as h.0.attn.c_attn.weight, are transposed "
            "on the way. The causal masks h.0.attn.bias are not weights and are skipped.",
        shows=("wte.weight", "out_head.weight", "h.0.attn.c_attn.weight",
               "trf_blocks.0.att.qkv.weight", "transposed"))
def hf_key_map() -> Canvas:
    c = Canvas(900, 525)
    left, right, w_left, w_right, h = 30, 540, 240, 330, 30
    c.text(left + w_left / 2, 24, "model.safetensors: GPT-2's names", size=10, weight="bold")
    c.text(right + w_right / 2, 24, "GPTModel's state_dict", size=10, weight="bold")

    def row(i: int) -> float:
        return 48 + i * 40

    c.box(left, (row(0) + row(1)) / 2, w_left, h, "wte.weight", color="green", mono=True,
          size=10)
    for i, name in enumerate(["tok_emb.weight", "out_head.weight"]):
        c.box(right, row(i), w_right, h, name, color="green", mono=True, size=10)
        c.arrow((left + w_left, (row(0) + row(1)) / 2 + h / 2), (right, row(i) + h / 2))
    c.text(405, row(1) + 34, "tied: one tensor, two uses", size=9, color=MUTED)
    for i, (theirs, ours, transposed) in enumerate(KEY_PAIRS, start=2):
        y = row(i) + 10
        c.box(left, y, w_left, h, theirs, color="green", mono=True, size=10)
        c.box(right, y, w_right, h, ours, color="green", mono=True, size=10)
        c.arrow((left + w_left, y + h / 2), (right, y + h / 2))
        if transposed:
            c.box(380, y + 3, 50, h - 6, ".T", color="orange", mono=True, size=10, radius=4)
    y = row(len(KEY_PAIRS) + 2) + 10
    c.box(left, y, w_left, h, "h.0.attn.bias", color="grey", mono=True, size=10)
    c.text(right, y + h / 2, "skipped: a causal mask, not a weight", ha="left", size=10,
           color=MUTED)
    c.box(30, 462, 50, 24, ".T", color="orange", mono=True, size=10, radius=4)
    c.text(90, 474, "transposed: Conv1D stores (in, out), nn.Linear (out, in), as in (4, 6) "
           "against (6, 4)", ha="left", size=10)
    c.text(30, 506, "Each .bias maps the same way and is never transposed; h.1 to h.11 map like "
           "h.0.", ha="left", size=10, color=MUTED)
    return c
