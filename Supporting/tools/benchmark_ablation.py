"""Which of today's decoder tricks buy what on a laptop? One change at a time (issue 21).

    BUILDLLM_MIRROR=../shared/data python Supporting/tools/benchmark_ablation.py \
        --seeds 0,1,2 --threads 2 --out ablation.md

The task, the data and the score are benchmark_pretrain.py's: nanoGPT's CPU recipe for
character-level Shakespeare, scored on the whole validation text in float32 (its `train`,
`char_data` and `val_loss`, imported). First the recipe runs as Meeting 5 runs it (GPTModel,
the course's AdamW) with the first seed, and its training time becomes the budget. Then every
other row trains on that budget, its schedule on the clock (`train(budget=)`), so a change
that slows a step pays for it in steps:

- `decoder`: the recipe as a `buildllm.decoder.Decoder` (`DecoderConfig.from_gpt`), to show
  that the family alone changes nothing;
- one change each from that decoder: `rope` (rotary positions instead of learned ones),
  `rmsnorm`, `swiglu` (its hidden size chosen for GPT-2's parameter count,
  `swiglu_hidden_dim`), `qknorm` (it works with learned positions too), `nobias` (no bias
  in any linear layer; the query/key/value ones are already off in the recipe, LayerNorm
  keeps its shift), `untied` (an output layer of its own), `muon` (`buildllm.muon.MuonAdamW`:
  Muon for the blocks' matrices, AdamW for the rest);
- `all`: every change together; `all-lr` the same at the tricks' learning rate;
- `tricks`: the course's tricks row of benchmark_pretrain.py (GPTModel at 3× the learning
  rate), the score to beat by 0.05.

Every row trains with every seed, seed by seed (seed 0 for all rows, then seed 1, ...), so a
change in the machine's load hits all rows alike. Times depend on the machine; compare rows
within one run only. The default run, 12 rows × 3 seeds of the recipe's time (110 s on the
reference 2-core CPU) and about 5 s of scoring each, takes about 70 minutes; `--layers 1
--emb-dim 16 --iters 6 --seeds 0` checks the script in seconds.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
from dataclasses import dataclass, field, replace

import torch
from benchmark_pretrain import TRICK_LR, CharData, Recipe, at_lr, char_data, nanogpt_recipe, train
from benchmark_report import machine, markdown_table

from buildllm.data import fetch
from buildllm.decoder import Decoder, DecoderConfig, swiglu_hidden_dim
from buildllm.muon import MuonAdamW
from buildllm.utils import write_atomically

GOAL = 0.05  # how far below the tricks row the combined row must end (issue 21)


@dataclass(frozen=True)
class Row:
    """One way to train: a model (GPTModel, or a Decoder with `changes` to the recipe's
    config), an optimizer (AdamW, or Muon for the matrices) and a learning rate."""

    what: str
    changes: dict | None = field(default_factory=dict)  # None: the recipe's GPTModel
    muon: bool = False
    lr: float | None = None  # None: the recipe's


CHANGES = {
    "rope": {"positions": "rope"},
    "rmsnorm": {"norm": "rms"},
    "swiglu": {"mlp": "swiglu"},  # its hidden size: swiglu_hidden_dim, in `decoder`
    "qknorm": {"qk_norm": True},
    "nobias": {"proj_bias": False, "mlp_bias": False},
    "untied": {"tie_embeddings": False},
}
ALL = {key: value for changes in CHANGES.values() for key, value in changes.items()}
ROWS = {
    "recipe": Row("nanoGPT's recipe: GPTModel, AdamW; its time is the budget", None),
    "tricks": Row(f"the course's tricks: GPTModel at lr {TRICK_LR:g}", None, lr=TRICK_LR),
    "decoder": Row("the recipe as a Decoder"),
    "rope": Row("RoPE instead of learned positions", CHANGES["rope"]),
    "rmsnorm": Row("RMSNorm instead of LayerNorm", CHANGES["rmsnorm"]),
    "swiglu": Row("SwiGLU instead of GELU, at equal parameters", CHANGES["swiglu"]),
    "qknorm": Row("QK-norm", CHANGES["qknorm"]),
    "nobias": Row("no biases in the linear layers", CHANGES["nobias"]),
    "untied": Row("untied embeddings", CHANGES["untied"]),
    "muon": Row("Muon for the matrices, AdamW for the rest", muon=True),
    "all": Row("all of them together", ALL, muon=True),
    "all-lr": Row(f"all of them together at lr {TRICK_LR:g}", ALL, muon=True, lr=TRICK_LR),
}


def decoder(recipe: Recipe, vocab_size: int, changes: dict) -> DecoderConfig:
    """The recipe's GPTModel as a DecoderConfig, changed; SwiGLU gets the hidden size that
    keeps GPT-2's feed-forward parameter count (`swiglu_hidden_dim`)."""
    cfg = replace(DecoderConfig.from_gpt(recipe.model_config(vocab_size)), **changes)
    if cfg.mlp == "swiglu":
        cfg = replace(cfg, hidden_dim=swiglu_hidden_dim(cfg.emb_dim))
    return cfg


def run_row(row: Row, base: Recipe, data: CharData, *, seed: int, budget: float | None,
            muon_lr: float | None, label: str) -> dict:
    """Train one row with one seed; `budget` None trains by the recipe's steps."""
    recipe = base if row.lr is None else at_lr(base, row.lr)

    def make_model(vocab_size: int) -> torch.nn.Module:
        return Decoder(decoder(recipe, vocab_size, row.changes))

    def make_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
        return MuonAdamW(model, lr=recipe.max_lr, weight_decay=recipe.weight_decay,
                         betas=(0.9, recipe.beta2), muon_lr=muon_lr)

    result = train(recipe, data, eval_every=recipe.steps, budget=budget, seed=seed, label=label,
                   make_model=None if row.changes is None else make_model,
                   make_optimizer=make_optimizer if row.muon else None)
    result["parameters"] = sum(p.numel() for p in result.pop("model").parameters())
    return result


def ablate(names: list[str], seeds: list[int], base: Recipe, data: CharData,
           muon_lr: float | None) -> dict[str, list[dict]]:
    """Every row's runs, seed by seed. The recipe's first run sets the budget for the rest."""
    budget = None
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for seed in seeds:
        for name in names:
            on_budget = None if name == "recipe" else budget
            result = run_row(ROWS[name], base, data, seed=seed, budget=on_budget,
                             muon_lr=muon_lr, label=f"{name}, seed {seed}")
            runs[name].append(result)
            if budget is None:
                budget = result["seconds"]
    return runs


def spread(values: list[float]) -> str:
    """The mean, ± the standard deviation over seeds where there are several."""
    mean = f"{statistics.mean(values):.3f}"
    return mean if len(values) < 2 else f"{mean} ± {statistics.stdev(values):.3f}"


def table_rows(runs: dict[str, list[dict]]) -> list[list[str]]:
    recipe = mean_loss(runs["recipe"])
    rows = []
    for name, results in runs.items():
        losses = [run["val_loss"] for run in results]
        steps = sorted(run["steps"] for run in results)
        speed = statistics.mean(run["tokens"] / run["seconds"] for run in results)
        rows.append([name, ROWS[name].what, spread(losses),
                     "" if name == "recipe" else f"{statistics.mean(losses) - recipe:+.3f}",
                     f"{speed:,.0f}",
                     f"{steps[0]:,}" + (f" to {steps[-1]:,}" if steps[-1] != steps[0] else ""),
                     f"{results[0]['parameters']:,}"])
    return rows


def verdict(runs: dict[str, list[dict]]) -> str:
    """One line: does each combined row end GOAL below the tricks row, in this run?"""
    combined = [name for name in ("all", "all-lr") if name in runs]
    if "tricks" not in runs or not combined:
        return "The goal needs the tricks row and a combined row (all, all-lr)."
    tricks = mean_loss(runs["tricks"])
    judged = [f"{name} {mean_loss(runs[name]):.3f} "
              f"({mean_loss(runs[name]) - tricks:+.3f}): "
              f"{'met' if mean_loss(runs[name]) <= tricks - GOAL else 'not met'}"
              for name in combined]
    return (f"Goal, the combined recipe at least {GOAL} below the tricks row ({tricks:.3f}) "
            f"in this run: {'; '.join(judged)}.")


def mean_loss(results: list[dict]) -> float:
    return statistics.mean(run["val_loss"] for run in results)


def report(runs: dict[str, list[dict]], args: argparse.Namespace, base: Recipe) -> str:
    budget = runs["recipe"][0]["seconds"]
    seeds = len(runs["recipe"])
    muon_lr = "each row's own" if args.muon_lr is None else f"{args.muon_lr:g}"
    lines = [
        f"{machine()}, {args.threads} thread{'s' * (args.threads > 1)}; "
        f"Python {platform.python_version()}, torch {torch.__version__}",
        "",
        f"Budget: {budget:.1f} s, the time of nanoGPT's recipe ({base.steps:,} steps) with "
        f"seed {args.seeds[0]}; the recipe's other seeds train by steps, every "
        f"other row on the budget. Validation loss: the mean over every character of the "
        f"last 10% of tinyshakespeare.txt, in float32, at the end of training; the mean "
        f"{'± standard deviation ' if seeds > 1 else ''}over {seeds} seed{'s' * (seeds > 1)}. "
        f"Muon's peak learning rate: {muon_lr}.",
        "",
        markdown_table(["row", "change", "val loss", "against the recipe", "tokens/s",
                        "steps", "parameters"], table_rows(runs),
                       ["---", "---", "---:", "---:", "---:", "---:", "---:"]),
        "",
        verdict(runs),
    ]
    return "\n".join(lines) + "\n"


def fail(message: str) -> None:
    """Refuse bad settings in one line, before anything runs or is written."""
    sys.exit(f"benchmark_ablation.py: {message}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=2000, help="steps of nanoGPT's recipe")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds, every row")
    parser.add_argument("--rows", default=",".join(ROWS),
                        help=f"comma-separated rows, from {', '.join(ROWS)} (recipe always "
                             "runs: it sets the budget)")
    parser.add_argument("--muon-lr", type=float,
                        help="Muon's peak learning rate, on the rows' schedule (default: the "
                             "row's own, right for Muon's match_rms_adamw step size)")
    parser.add_argument("--layers", type=int, default=Recipe.n_layers,
                        help="blocks (fewer, with --emb-dim, for a quick check of the script)")
    parser.add_argument("--emb-dim", type=int, default=Recipe.emb_dim,
                        help=f"model width, a multiple of {2 * Recipe.n_heads}")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", help="also write the report to this Markdown file")
    args = parser.parse_args(argv)
    names = args.rows.split(",")
    for name in names:
        if name not in ROWS:
            fail(f"unknown row {name!r} in --rows; choose from {', '.join(ROWS)}")
    args.rows = ["recipe"] + [name for name in ROWS if name in names and name != "recipe"]
    try:
        args.seeds = [int(seed) for seed in args.seeds.split(",")]
    except ValueError:
        fail(f"--seeds takes whole numbers separated by commas, got {args.seeds!r}")
    for name in ("iters", "threads", "layers"):
        if getattr(args, name) < 1:
            fail(f"--{name} must be 1 or more, got {getattr(args, name)}")
    if args.emb_dim < 1 or args.emb_dim % (2 * Recipe.n_heads):
        fail(f"--emb-dim must be a positive multiple of {2 * Recipe.n_heads} (even features "
             f"per head, for RoPE), got {args.emb_dim}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    base = nanogpt_recipe(args.iters, n_layers=args.layers, emb_dim=args.emb_dim)
    data = char_data(fetch("tinyshakespeare.txt").read_text("utf-8"), base.context)
    runs = ablate(args.rows, args.seeds, base, data, args.muon_lr)
    text = report(runs, args, base)
    print(text, end="")
    if args.out:
        write_atomically(args.out, lambda tmp: tmp.write_text(text, encoding="utf-8"))


if __name__ == "__main__":
    main()
