"""Does our training learn as fast as the recipe everyone knows, and does the script cost time?

    BUILDLLM_MIRROR=../shared/data python Supporting/tools/benchmark_pretrain.py \
        --seeds 0,1,2 --plot Meeting-5/benchmark_pretrain.png

Prints a Markdown table for Meeting-5/README.md (and, with --plot, draws the curves):

- learning: nanoGPT's character-level Shakespeare recipe for a laptop CPU, as its README gives
  it (4 layers, 4 heads, 128 dimensions, context 64, batch 12, 2,000 iterations, no dropout,
  learning rate 1e-3 with 100 warmup steps and a cosine down to 1e-4, beta2 0.99, weight decay
  0.1 on the matrices, gradient clipping at 1.0; it reports a validation loss of about 1.88 after
  about 3 minutes on a laptop; its train.py prints 1.8857 for that command), rebuilt from
  buildllm's GPTModel, AdamW, lr_at and clip_grad_norm and trained here, with as many seeds as
  asked. Then the course's tricks (by default a 3× higher learning rate, which warmup and
  clipping keep stable) get exactly the training time the recipe took;
- throughput: tokens/s of `buildllm.pretrain.run` against the plainest loop (batch_loss,
  backward, AdamW step), timed in alternating rounds. Both start from the same seed and draw
  the same batches, and the script runs at a constant learning rate without clipping, so the
  two must end with identical weights: the script asserts it before it reports a speed.

The model is our GPTModel with nanoGPT's choices where it has the switch: tied embeddings and no
query/key/value bias. nanoGPT's recipe also drops the other biases and LayerNorm's shift, 4,224
parameters of our 808,320; GPTModel keeps them, and `--no-biases` holds them at 0. The data
split is nanoGPT's: one token per character (65 of them), the first 90% of tinyshakespeare.txt
to train, the last 10% to validate. Every run is scored on the whole validation text, cut into
consecutive windows of 64 characters, in float32 without dropout: the loss nanoGPT's random
validation batches estimate, without their sampling noise, so the numbers compare; at the end,
as much training text, spread over all of it, is scored the same way. Each model is also scored
nanoGPT's way, many times over, to show how far one printed number can stray. Evaluation is not
timed. Everything runs on the CPU with a fixed, printed thread count. Times depend on the
machine; the loss goal (at most 1.88) and the ratio are what to quote.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from benchmark_report import machine, markdown_table
from torch import nn
from tqdm.auto import tqdm

from buildllm.data import fetch
from buildllm.datasets import random_windows
from buildllm.model import GPTConfig, GPTModel
from buildllm.pretrain import RunConfig, run
from buildllm.pretrain_data import WindowStream, encode_documents, make_tokenizer, read_texts
from buildllm.training import (
    AdamW,
    batch_loss,
    clip_grad_norm,
    evaluate,
    lr_at,
    param_groups,
)
from buildllm.utils import set_seed

DTYPES = {"fp32": None, "bf16": torch.bfloat16}  # None: no autocast
PUBLISHED_VAL_LOSS = 1.88  # nanoGPT's README, the CPU run of train_shakespeare_char
# What nanoGPT's train.py prints for that README command, at each evaluation: step ->
# (train loss, val loss), each the mean of 20 random batches. Its seed is fixed (1337), so
# every rerun prints the same numbers; public reruns report step 2,000 exactly like this.
NANOGPT_LOG = {0: (4.1676, 4.1649), 250: (2.4293, 2.4447), 500: (2.2732, 2.3141),
               750: (2.1338, 2.1905), 1000: (1.9714, 2.0528), 1250: (1.8756, 2.0089),
               1500: (1.8557, 1.9225), 1750: (1.7790, 1.8921), 2000: (1.7648, 1.8857)}
TRICK_LR = 3e-3  # the course's tricks: 3× the recipe's peak learning rate


@dataclass(frozen=True)
class Recipe:
    """How to train. The defaults are nanoGPT's CPU recipe for character-level Shakespeare."""

    n_layers: int = 4
    n_heads: int = 4
    emb_dim: int = 128
    context: int = 64
    batch: int = 12
    steps: int = 2000
    warmup: int = 100
    max_lr: float = 1e-3
    min_lr: float = 1e-4
    beta2: float = 0.99
    weight_decay: float = 0.1
    clip: float = 1.0
    dropout: float = 0.0
    dtype: str = "fp32"
    biases: bool = True  # False: nanoGPT's bias=False, every bias and LayerNorm shift held at 0

    def model_config(self, vocab_size: int) -> GPTConfig:
        return GPTConfig(vocab_size=vocab_size, context_length=self.context,
                         emb_dim=self.emb_dim, n_heads=self.n_heads, n_layers=self.n_layers,
                         drop_rate=self.dropout, qkv_bias=False, tie_embeddings=True)


def nanogpt_recipe(iters: int, **changes) -> Recipe:
    """nanoGPT's recipe cut to `iters` steps, its warmup 5% of them (at most its 100)."""
    return Recipe(steps=iters, warmup=min(100, iters // 20), **changes)


def at_lr(recipe: Recipe, lr: float) -> Recipe:
    """The recipe at peak learning rate `lr`, its cosine ending at a tenth of it, as the
    recipe's own does."""
    return replace(recipe, max_lr=lr, min_lr=lr / 10)


Batches = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class CharData:
    train: torch.Tensor  # token ids, one per character
    val: torch.Tensor
    vocab_size: int
    val_batches: Batches  # the windows every run is scored on
    train_batches: Batches  # as many from all over the training text, for its loss at the end


def consecutive_windows(ids: torch.Tensor, context: int, windows_per_batch: int) -> Batches:
    """`ids` cut into consecutive windows, so every token is predicted once, from 0 to
    `context - 1` tokens of context: on average what a random window sees."""
    n = (len(ids) - 1) // context
    inputs = ids[: n * context].view(n, context)
    targets = ids[1 : n * context + 1].view(n, context)
    parts = math.ceil(n / windows_per_batch)
    return list(zip(inputs.tensor_split(parts), targets.tensor_split(parts), strict=True))


def char_data(text: str, context: int, windows_per_batch: int = 64) -> CharData:
    """nanoGPT's split: characters as tokens, first 90% to train, last 10% to validate.

    The training loss is taken on every 9th batch of consecutive windows (9 = train / val):
    as much text as validation, drawn from the whole training text, at a ninth of the cost.
    """
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([index[c] for c in text])
    split = int(0.9 * len(ids))
    train, val = ids[:split], ids[split:]
    stride = max(1, round(len(train) / len(val)))
    return CharData(train, val, len(chars), consecutive_windows(val, context, windows_per_batch),
                    consecutive_windows(train, context, windows_per_batch)[::stride])


def loss_per_character(model: GPTModel, batches: Batches) -> float:
    """The mean loss per predicted character (`evaluate` averages batches; these differ)."""
    sizes = [targets.numel() for _, targets in batches]
    losses = [evaluate(model, [batch]) for batch in batches]
    return sum(loss * size for loss, size in zip(losses, sizes, strict=True)) / sum(sizes)


def val_loss(model: GPTModel, data: CharData) -> float:
    return loss_per_character(model, data.val_batches)


def train(recipe: Recipe, data: CharData, *, eval_every: int, budget: float | None = None,
          seed: int = 0, label: str = "training",
          make_model: Callable[[int], nn.Module] | None = None,
          make_optimizer: Callable[[nn.Module], torch.optim.Optimizer] | None = None) -> dict:
    """Train a fresh model by `recipe`, scoring it every `eval_every` steps and at the end.

    By default the model is the recipe's GPTModel and the optimizer the course's AdamW;
    `make_model` (vocabulary size -> model) and `make_optimizer` (model -> optimizer) put
    others in their place (benchmark_ablation.py). The schedule scales every optimizer group's
    learning rate: a group made with another peak than `recipe.max_lr` (Muon's own) keeps
    its ratio to it.

    Without a `budget` the run takes `recipe.steps` steps. With one (seconds), it trains until
    that much time is spent, and its schedule runs on the clock: after a fraction f of the
    budget, warmup, cosine and evaluations are where the step-based run is after f · steps.
    `evals` pairs that position in the schedule (for a run by steps, the step) with the loss,
    so runs by steps and on the clock share an x-axis.
    """
    set_seed(seed)
    if make_model is None:
        model = GPTModel(recipe.model_config(data.vocab_size))
    else:
        model = make_model(data.vocab_size)
    if not recipe.biases:
        hold_biases_at_zero(model)
    if make_optimizer is None:
        optimizer = AdamW(param_groups(model, recipe.weight_decay), lr=recipe.max_lr,
                          betas=(0.9, recipe.beta2))
    else:
        optimizer = make_optimizer(model)
    ratios = [group["lr"] / recipe.max_lr for group in optimizer.param_groups]
    dtype = DTYPES[recipe.dtype]
    g = torch.Generator().manual_seed(seed)
    evals = [(0, val_loss(model, data))]
    step, seconds, position, next_eval = 0, 0.0, 0, eval_every
    bar = tqdm(total=recipe.steps, desc=label)
    while position < recipe.steps:
        start = time.perf_counter()
        lr = lr_at(position, max_lr=recipe.max_lr, warmup_steps=recipe.warmup,
                   total_steps=recipe.steps, min_lr=recipe.min_lr)
        for group, ratio in zip(optimizer.param_groups, ratios, strict=True):
            group["lr"] = lr * ratio
        inputs, targets = random_windows(data.train, recipe.batch, recipe.context, g)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            loss = batch_loss(model, inputs, targets)
        loss.backward()
        clip_grad_norm(model.parameters(), recipe.clip)
        optimizer.step()
        seconds += time.perf_counter() - start
        step += 1
        if budget is None:
            position = step
        else:
            position = min(recipe.steps, int(recipe.steps * seconds / budget))
        bar.update(position - bar.n)
        if position >= next_eval or position == recipe.steps:
            evals.append((position, val_loss(model, data)))
            bar.set_postfix(val=f"{evals[-1][1]:.3f}")
            next_eval = (position // eval_every + 1) * eval_every
    bar.close()
    return {"steps": step, "seconds": seconds, "tokens": step * recipe.batch * recipe.context,
            "evals": evals, "val_loss": evals[-1][1], "best_val_loss": min(v for _, v in evals),
            "model": model}


def hold_biases_at_zero(model: GPTModel) -> None:
    """nanoGPT's bias=False without a new model: biases and shifts start at 0 and, left out of
    training (and of the optimizer, which takes trainable parameters only), stay there."""
    for name, p in model.named_parameters():
        if name.endswith((".bias", ".shift")):
            p.requires_grad_(False)


def nanogpt_estimates(model: GPTModel, data: CharData, context: int, draws: int,
                      seed: int = 0) -> list[float]:
    """`draws` repeats of nanoGPT's CPU-recipe estimate: the mean loss of 20 random batches of
    12 validation windows (--eval_iters=20). Its spread is how far one reported number may sit
    from the model's loss on the whole validation text."""
    g = torch.Generator().manual_seed(seed)
    return [evaluate(model, [random_windows(data.val, 12, context, g) for _ in range(20)])
            for _ in range(draws)]


def learning(args) -> list[tuple[str, ...]]:
    base = nanogpt_recipe(args.iters, biases=not args.no_biases)
    tricks = replace(at_lr(base, args.trick_lr), batch=args.trick_batch, dtype=args.trick_dtype)
    data = char_data(fetch("tinyshakespeare.txt").read_text("utf-8"), base.context)

    first = val_loss(GPTModel(base.model_config(data.vocab_size)), data)
    # An untrained model guesses about uniformly: a loss near ln(65) = 4.17 says that tokens,
    # targets and the loss are wired up right before anything is timed.
    assert abs(first - math.log(data.vocab_size)) < 0.1, f"untrained loss {first:.3f}"

    seeds = [int(seed) for seed in args.seeds.split(",")]

    def by_the_recipe(seed: int) -> dict:
        return train(base, data, eval_every=args.eval_every, seed=seed,
                     label=f"nanoGPT's recipe, seed {seed}")

    ours = by_the_recipe(seeds[0])
    # The tricks run right after the run whose time they get, before this shared machine's
    # speed can drift: the same time then means about the same computer.
    fast = train(tricks, data, eval_every=args.eval_every, budget=ours["seconds"],
                 seed=seeds[0], label="course tricks")
    runs = [ours] + [by_the_recipe(seed) for seed in seeds[1:]]
    assert all(run["steps"] == base.steps for run in runs)
    losses = [run["val_loss"] for run in runs]
    train_losses = [loss_per_character(run["model"], data.train_batches)
                    for run in tqdm(runs, desc="train loss")]
    estimates = sorted(estimate for seed, result in zip(seeds, runs, strict=True)
                       for estimate in nanogpt_estimates(result["model"], data, base.context,
                                                         args.draws, seed=seed))
    low, high = estimates[len(estimates) // 20], estimates[-len(estimates) // 20 - 1]
    nano_train, nano_val = NANOGPT_LOG[max(NANOGPT_LOG)]
    share = sum(estimate <= nano_val for estimate in estimates) / len(estimates)
    assert fast["seconds"] >= ours["seconds"] and len(fast["evals"]) >= 2
    for result in (ours, fast):
        assert result["val_loss"] < first, f"the loss did not fall: {result['evals']}"
    if args.plot:
        plot_curves(runs, fast, args.plot)

    met = "met" if statistics.mean(losses) <= PUBLISHED_VAL_LOSS else "not met"
    what = (f"lr {tricks.max_lr:g}, batch {tricks.batch}, {tricks.dtype}"
            f"{'' if tricks.dtype == 'fp32' else ' autocast'}")
    return [
        ("char Shakespeare, nanoGPT's CPU recipe, published (a laptop)",
         f"val loss {PUBLISHED_VAL_LOSS}, about 3 min", ""),
        (f"the same command, what nanoGPT's train.py prints at step {max(NANOGPT_LOG):,}",
         f"train loss {nano_train}, val loss {nano_val} (20 random batches each)",
         f"{nano_val - PUBLISHED_VAL_LOSS:+.4f} against the published {PUBLISHED_VAL_LOSS}"),
        (f"the same recipe, ours: {base.steps:,} steps, seed {seeds[0]}"
         + ("" if base.biases else ", biases held at 0"),
         f"train loss {train_losses[0]:.3f}, val loss {ours['val_loss']:.3f} "
         f"in {ours['seconds']:.0f} s ({ours['tokens'] / ours['seconds']:,.0f} tokens/s)",
         f"goal ≤ {PUBLISHED_VAL_LOSS}: {met}"
         + (f" (mean of {len(seeds)} seeds)" if len(seeds) > 1 else "")),
        *([(f"the same recipe, seeds {', '.join(map(str, seeds))}",
            f"val loss {statistics.mean(losses):.3f} on average, "
            f"from {min(losses):.3f} to {max(losses):.3f}; "
            f"train loss {statistics.mean(train_losses):.3f}", "")] if len(seeds) > 1 else []),
        (f"{'these models' if len(seeds) > 1 else 'this model'} scored as nanoGPT scores "
         f"(20 random batches), {len(estimates) // len(seeds)} times each",
         f"val loss from {low:.3f} to {high:.3f} (5th to 95th percentile)",
         f"{share:.0%} of them at or below nanoGPT's own {nano_val}"),
        (f"the course's tricks ({what}) in the same time",
         f"best val loss {fast['best_val_loss']:.3f} after {fast['steps']:,} steps "
         f"in {fast['seconds']:.0f} s",
         f"{fast['best_val_loss'] - ours['val_loss']:+.3f} against the recipe"),
    ]


def plot_curves(runs: list[dict], fast: dict, path: str) -> None:
    """Validation loss against the recipe's steps: our seeds, nanoGPT's printed log, the tricks
    (at the step the recipe had reached after the same time), whole and the last half zoomed."""
    from matplotlib.figure import Figure  # no pyplot: no window, no global state

    fig = Figure(figsize=(10, 3.8), layout="constrained")
    for ax in fig.subplots(1, 2):
        for i, result in enumerate(runs):
            ax.plot(*zip(*result["evals"], strict=True), color="tab:blue", alpha=0.6, lw=1,
                    label=None if i else "ours, nanoGPT's recipe")
        ax.plot(list(NANOGPT_LOG), [val for _, val in NANOGPT_LOG.values()], "ko", ms=4,
                label="nanoGPT's train.py, as printed")
        ax.plot(*zip(*fast["evals"], strict=True), color="tab:orange", lw=1.5,
                label="ours, the course's tricks, same time")
        ax.axhline(PUBLISHED_VAL_LOSS, color="gray", ls="--", lw=1, label="goal: 1.88")
        ax.set(xlabel="step of the recipe (for the tricks: the same time)",
               ylabel="validation loss")
        ax.grid(alpha=0.3)
    steps = runs[0]["evals"][-1][0]
    ax.set(xlim=(steps / 2, steps * 1.02), ylim=(1.7, 2.1), title="the second half")
    ax.legend(fontsize=8)
    fig.axes[0].set_title(f"{len(runs)} seed{'s' * (len(runs) > 1)}, whole validation text")
    fig.savefig(path, dpi=100)


def plain_loop(settings: RunConfig, train_ids: torch.Tensor, model_cfg: GPTConfig):
    """The plainest loop doing the script's arithmetic; returns (tokens/s, model).

    Same seed, initial weights, batches (a WindowStream) and dropout masks as the script, and
    a constant learning rate without clipping, so it must end with the script's weights.
    """
    set_seed(settings.seed)
    model = GPTModel(model_cfg).train()
    optimizer = AdamW(param_groups(model, settings.weight_decay), lr=settings.lr,
                      betas=(0.9, settings.beta2))
    stream = WindowStream(train_ids, model_cfg.context_length, settings.batch_size,
                          settings.seed)
    set_seed(settings.seed)  # the script reseeds (seed + rank) before its first step
    start = time.perf_counter()
    for _ in range(settings.steps):
        inputs, targets = stream.next_batch()
        optimizer.zero_grad(set_to_none=True)
        batch_loss(model, inputs, targets).backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    return settings.steps * settings.batch_size * model_cfg.context_length / seconds, model


def throughput(args) -> list[tuple[str, ...]]:
    path = fetch("tinyshakespeare.txt")
    settings = RunConfig(
        inputs=[str(path)], tokenizer=args.tp_tokenizer, model=args.tp_config,
        context_length=args.tp_context, batch_size=args.tp_batch, steps=args.tp_steps,
        warmup_steps=0, min_lr_ratio=1.0, clip=0.0,  # a constant lr, no clipping: plain AdamW
        eval_every=args.tp_steps, eval_batches=1, device="cpu", seed=0,
    )
    texts = read_texts(settings.inputs)  # the script's tokens, split as the script splits them
    tokenizer, _ = make_tokenizer(settings.tokenizer, texts)
    ids = torch.tensor(encode_documents(tokenizer, texts))
    train_ids = ids[: round(len(ids) * (1 - settings.val_fraction))]

    speeds = {"plain": [], "script": []}
    for _ in range(args.tp_rounds):  # alternate: plain loop, script, plain loop, script, ...
        with tempfile.TemporaryDirectory() as out, contextlib.redirect_stdout(sys.stderr):
            script_model, summary = run(replace(settings, out=out))
        tokens_per_s, plain_model = plain_loop(settings, train_ids, script_model.cfg)
        speeds["plain"].append(tokens_per_s)
        speeds["script"].append(summary["tokens_per_s"])
        # Both did the same work, step for step: otherwise their speeds would not compare.
        assert summary["step"] == settings.steps
        for (name, p), q in zip(script_model.named_parameters(), plain_model.parameters(),
                                strict=True):
            assert torch.equal(p, q), f"the script and the plain loop differ in {name}"

    plain, script = (statistics.median(v) for v in speeds.values())
    label = f"throughput, {args.tp_config} ({args.tp_tokenizer} tokens)"
    return [
        (f"{label}, a plain loop", f"{plain:,.0f} tokens/s", ""),
        (f"{label}, python -m buildllm.pretrain", f"{script:,.0f} tokens/s",
         f"the script at {script / plain:.2f}× the plain loop's speed (goal ≥ 0.95×); "
         "same weights"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=2000,
                        help="steps of nanoGPT's recipe (warmup: 5%% of them, at most 100)")
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--seeds", default="0",
                        help="comma-separated seeds to train the recipe with; the goal is "
                             "judged on their mean loss, the tricks run with the first")
    parser.add_argument("--draws", type=int, default=200,
                        help="times each model is scored nanoGPT's way (20 random batches)")
    parser.add_argument("--no-biases", action="store_true",
                        help="hold every bias and LayerNorm shift at 0, as nanoGPT's bias=False")
    parser.add_argument("--plot", help="write the validation curves to this PNG file")
    parser.add_argument("--trick-lr", type=float, default=TRICK_LR)
    parser.add_argument("--trick-batch", type=int, default=12)
    parser.add_argument("--trick-dtype", default="fp32", choices=DTYPES)
    parser.add_argument("--tp-config", default="cpu-tiny", help="throughput: a CONFIGS name")
    parser.add_argument("--tp-tokenizer", default="gpt2", help="throughput: gpt2 or char")
    parser.add_argument("--tp-context", type=int, default=128)
    parser.add_argument("--tp-batch", type=int, default=8)
    parser.add_argument("--tp-steps", type=int, default=30, help="timed steps per round")
    parser.add_argument("--tp-rounds", type=int, default=3)
    parser.add_argument("--parts", default="learning,throughput")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    parts = args.parts.split(",")
    for part in set(parts) - {"learning", "throughput"}:
        parser.error(f"unknown part {part!r}; choose from learning, throughput")

    torch.set_num_threads(args.threads)
    rows = learning(args) if "learning" in parts else []
    rows += throughput(args) if "throughput" in parts else []
    print(f"{machine()}, {args.threads} thread{'s' * (args.threads > 1)}; "
          f"Python {platform.python_version()}, "
          f"torch {torch.__version__}\n")
    if "learning" in parts:
        print("Learning: validation loss is the mean over every character of the last 10% of "
              "tinyshakespeare.txt, in consecutive windows of 64, in float32 without dropout; "
              "evaluation is not timed.")
    if "throughput" in parts:
        print(f"Throughput: batch {args.tp_batch} × {args.tp_context} tokens, AdamW at a "
              f"constant learning rate, no clipping; the median of {args.tp_rounds} alternating "
              f"rounds of {args.tp_steps} steps; evaluations and checkpoints are not timed.")
    print()
    print(markdown_table(["measurement", "result", "goal or comparison"], rows))


if __name__ == "__main__":
    main()
