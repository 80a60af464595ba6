"""The cost of pretraining GPT-2 124M and 355M in FLOPs, GPU-hours and dollars, for SCALING.md.

    python Supporting/tools/scaling_estimates.py           # rewrite the page's tables
    python Supporting/tools/scaling_estimates.py --check   # exit 1 if the page is out of date

The FLOPs come from the course's own counter, `buildllm.model.forward_flops_per_token`, times 3
for training (the backward pass costs about twice the forward). The time on a GPU is those
FLOPs over what the GPU really delivers: its data-sheet peak times an assumed MFU (model FLOPs
utilization, the share of the peak a training run turns into the model's arithmetic). Every
assumption is a constant below, with where it comes from; change one and rerun.
"""

from __future__ import annotations

import sys
from pathlib import Path

from markdown_section import update_section

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from buildllm.capstone import GPUS, training_cost  # noqa: E402  (the capstone notebook's GPUs)
from buildllm.model import CONFIGS, GPTConfig, count_parameters, forward_flops_per_token  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "Meeting-7" / "SCALING.md"

MODELS = ("124M", "355M")  # names in buildllm.model.CONFIGS, at GPT-2's context of 1,024
MFU = 0.40  # assumed; SCALING.md says where 40% comes from and how to use your own
TOKENS_PER_PARAMETER = 20  # Hoffmann et al. 2022 ("Chinchilla"): compute-optimal data size
FIXED_BUDGETS = (
    # (tokens, what they are)
    (10_000_000_000, "the length of build-nanogpt's GPT-2 124M run (one pass over "
                     "FineWeb-Edu's 10B sample)"),
)
BYTES_PER_PARAMETER = 16  # fp32 weights (4) + gradients (4) + AdamW's two moments (8)
# A published run to check the estimate against: nanoGPT's GPT-2 124M reproduction,
# 600,000 steps of 491,520 tokens on one node of 8 A100 40GB, "about 4 days" (its README).
NANOGPT_TOKENS, NANOGPT_GPUS, NANOGPT_DAYS = 600_000 * 491_520, 8, 4.0


def parameters(cfg: GPTConfig) -> int:
    """The parameter count of GPTModel(cfg), tied embedding counted once, without allocating
    any weights: the model is built on PyTorch's "meta" device, which only records shapes."""
    import torch

    from buildllm.model import GPTModel

    with torch.device("meta"):
        return count_parameters(GPTModel(cfg))


def training_flops_per_token(cfg: GPTConfig) -> int:
    """Forward and backward FLOPs per token: 3 × the course's forward count."""
    return 3 * forward_flops_per_token(cfg)


def budgets(params: int) -> list[tuple[int, str]]:
    """The token budgets to price for a model of `params` parameters."""
    chinchilla = TOKENS_PER_PARAMETER * params
    return [(chinchilla, f"{TOKENS_PER_PARAMETER} tokens per parameter (Chinchilla)"),
            *FIXED_BUDGETS]


def _tokens(n: float) -> str:
    return f"{n / 1e9:.3g}B" if n >= 1e9 else f"{n / 1e6:.3g}M"


def _flops(x: float) -> str:
    mantissa, exponent = f"{x:.2e}".split("e")
    return f"{mantissa}e{int(exponent)}"  # 2.13e18


def _hours(h: float) -> str:
    if h < 1:
        return f"{h * 60:.0f} min"
    return f"{h:.1f} h" if h < 10 else f"{h:,.0f} h"


def _usd(x: float) -> str:
    return f"${x:.2f}" if x < 10 else f"${x:,.0f}"


def render() -> str:
    """The page's generated part: models, GPUs, the cost table and the check against nanoGPT."""
    out = [f"FLOPs per token at a context of {CONFIGS[MODELS[0]].context_length:,}, from "
           "`buildllm.model.forward_flops_per_token`; training counts 3× the forward pass.",
           "",
           "| model | parameters | forward FLOPs per token | training FLOPs per token | "
           "6 × parameters, for comparison | weights, gradients and AdamW state in fp32 |",
           "|---|---|---|---|---|---|"]
    sizes = {}
    for name in MODELS:
        cfg = CONFIGS[name]
        sizes[name] = params = parameters(cfg)
        out.append(f"| GPT-2 {name} | {params:,} | {forward_flops_per_token(cfg) / 1e6:,.0f}M "
                   f"| {training_flops_per_token(cfg) / 1e6:,.0f}M | {6 * params / 1e6:,.0f}M "
                   f"| {BYTES_PER_PARAMETER * params / 1e9:.1f} GB |")

    out += ["", "| GPU | peak used | example price per GPU-hour (2026) | data sheet |",
            "|---|---|---|---|"]
    for gpu in GPUS:
        out.append(f"| {gpu.name} | {gpu.peak_tflops:g} TFLOP/s {gpu.precision} | "
                   f"{_usd(gpu.usd_per_hour)} | [NVIDIA {gpu.name.split()[0]}]({gpu.spec_sheet}) |")

    out += ["", f"One GPU at {MFU:.0%} MFU: GPU-hours, and the cost at the example price.",
            "", "| model | tokens | training FLOPs | " + " | ".join(g.name for g in GPUS) + " |",
            "|---|---|---|" + "---|" * len(GPUS)]
    for name in MODELS:
        for tokens, why in budgets(sizes[name]):
            costs = [training_cost(CONFIGS[name], tokens, g, MFU) for g in GPUS]
            flops = costs[0]["flops"]
            cells = [f"{_hours(c['hours'])}, {_usd(c['usd'])}" for c in costs]
            out.append(f"| GPT-2 {name} | {_tokens(tokens)}: {why} | {_flops(flops)} | "
                       + " | ".join(cells) + " |")

    a100 = next(g for g in GPUS if g.name == "A100 40GB")
    days = training_cost(CONFIGS["124M"], NANOGPT_TOKENS, a100, MFU, NANOGPT_GPUS)["hours"] / 24
    implied = MFU * days / NANOGPT_DAYS
    out += ["", "Checked against a published run: "
                "[nanoGPT](https://github.com/karpathy/nanoGPT)'s GPT-2 124M reproduction "
                f"trains on {_tokens(NANOGPT_TOKENS)} tokens on {NANOGPT_GPUS} A100 40GB. "
                f"At {MFU:.0%} MFU this counter predicts {days:.1f} days; its README reports about "
                f"{NANOGPT_DAYS:g}, an MFU of about {implied:.0%} by the same count."]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args not in ([], ["--check"]):
        print(__doc__, file=sys.stderr)
        return 2
    try:  # between the page's <!-- scaling-estimates:start --> and <!-- scaling-estimates:end -->
        stale = update_section(PAGE, "scaling-estimates", render(), write=args == [])
    except ValueError as err:
        print(err, file=sys.stderr)
        return 1
    if args == ["--check"]:
        if stale:
            print(f"{PAGE.name} is out of date: run python Supporting/tools/scaling_estimates.py",
                  file=sys.stderr)
            return 1
        print(f"{PAGE.name}'s estimates are current")
    else:
        print(f"{PAGE.name}'s estimates {'rewritten' if stale else 'were already current'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
