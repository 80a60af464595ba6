"""How much faster is batched attention? Four versions of one layer, timed side by side, in one run.

    python Supporting/tools/benchmark_attention.py     # 2 to 3 minutes on 2 CPU cores

Prints a Markdown table for Meeting-3/README.md. The four versions compute the same causal
multi-head attention layer from `buildllm.attention`, with the same weights:

- naive loop: one query position at a time in Python (`attention_by_loop`, heads batched);
- stacked heads: `MultiHeadAttentionWrapper`, one `CausalAttention` module per head, run one
  after another and concatenated;
- batched: `MultiHeadAttention(use_sdpa=False)`, all heads in one tensor, softmax written out;
- sdpa: `MultiHeadAttention(use_sdpa=True)`, PyTorch's fused `scaled_dot_product_attention`.

At every context length, their outputs and input gradients are first asserted equal; that
check also warms them up. Forward passes run under `torch.no_grad()`, as when generating;
forward + backward is what a training step costs. Each time is the best of at least 3 runs
(more when they fit in half a second), batch 1, on a fixed number of threads. Absolute times
depend on the machine and its load; the ratios to sdpa, measured together, are what to quote.
"""

import argparse
import platform
import time

import torch
from benchmark_report import machine, markdown_table
from torch import nn

from buildllm.attention import MultiHeadAttention, MultiHeadAttentionWrapper, attention_by_loop

VERSIONS = ("naive loop", "stacked heads", "batched", "sdpa")


class LoopAttention(MultiHeadAttention):
    """`MultiHeadAttention` with its attention computed one query position at a time."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = map(self.split_heads, self.qkv(x).chunk(3, dim=-1))  # (B, heads, T, head_dim)
        return self.out_proj(self.merge_heads(attention_by_loop(q, k, v)))


@torch.no_grad()
def stacked_heads_like(mha: MultiHeadAttention, context_length: int) -> nn.Module:
    """A wrapper of separate heads, plus `out_proj`, holding exactly the weights of `mha`."""
    d_in, d_head = mha.qkv.in_features, mha.head_dim
    bias = mha.qkv.bias is not None
    wrapper = MultiHeadAttentionWrapper(d_in, d_head, context_length, 0.0, mha.num_heads, bias)
    # The fused weight is (3 * d_out, d_in): every head's query rows, then key rows, then value.
    names = ("W_query", "W_key", "W_value")
    for name, weight in zip(names, mha.qkv.weight.chunk(3), strict=True):
        for head, rows in zip(wrapper.heads, weight.split(d_head), strict=True):
            getattr(head, name).weight.copy_(rows)
    if bias:
        for name, b in zip(names, mha.qkv.bias.chunk(3), strict=True):
            for head, part in zip(wrapper.heads, b.split(d_head), strict=True):
                getattr(head, name).bias.copy_(part)
    out_proj = nn.Linear(mha.out_proj.in_features, mha.out_proj.out_features)
    out_proj.load_state_dict(mha.out_proj.state_dict())
    return nn.Sequential(wrapper, out_proj)


def build(width: int, heads: int, context_length: int) -> dict[str, nn.Module]:
    """The four versions, all with the weights of one randomly initialized sdpa module."""
    torch.manual_seed(0)
    sdpa = MultiHeadAttention(width, width, context_length, 0.0, heads, qkv_bias=True)
    loop = LoopAttention(width, width, context_length, 0.0, heads, qkv_bias=True)
    batched = MultiHeadAttention(width, width, context_length, 0.0, heads, True, use_sdpa=False)
    loop.load_state_dict(sdpa.state_dict())
    batched.load_state_dict(sdpa.state_dict())
    stacked = stacked_heads_like(sdpa, context_length)
    return dict(zip(VERSIONS, (loop, stacked, batched, sdpa), strict=True))


def forward(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return module(x)


def forward_backward(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    module.zero_grad(set_to_none=True)
    x.grad = None
    module(x).sum().backward()
    return x.grad


def check(modules: dict[str, nn.Module], x: torch.Tensor) -> None:
    """Assert that every version gives sdpa's output and sdpa's gradient with respect to x."""
    expected = forward(modules["sdpa"], x), forward_backward(modules["sdpa"], x).clone()
    for name, module in modules.items():
        got = forward(module, x), forward_backward(module, x)
        for what, a, b in zip(("outputs", "input gradients"), got, expected, strict=True):
            torch.testing.assert_close(
                a, b, rtol=1e-4, atol=1e-5,
                msg=lambda m, name=name, what=what: f"{name} and sdpa: {what} differ. {m}",
            )


def best_time(step, module: nn.Module, x: torch.Tensor, repeats: int, budget: float) -> float:
    """The fastest of at least `repeats` runs, more if they fit in `budget` seconds."""
    times, start = [], time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < budget:
        begin = time.perf_counter()
        step(module, x)
        times.append(time.perf_counter() - begin)
    return min(times)


def show(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1e3:.1f} ms" if seconds >= 0.01 else f"{seconds * 1e3:.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 256, 512, 1024, 2048])
    parser.add_argument("--width", type=int, default=256, help="d_in = d_out")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="time the best of this many runs")
    parser.add_argument("--budget", type=float, default=0.5,
                        help="seconds per measurement: fast ones repeat until it is spent")
    parser.add_argument("--loop-max", type=int, default=1024,
                        help="skip the naive loop beyond this context length (it is slow)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    modules = build(args.width, args.heads, max(args.lengths))
    rows = []
    for n in args.lengths:
        timed = {k: m for k, m in modules.items() if k != "naive loop" or n <= args.loop_max}
        x = torch.randn(1, n, args.width, requires_grad=True)
        check(timed, x)  # also the warm-up: first calls allocate memory and pick kernels
        for label, step in (("forward", forward), ("forward + backward", forward_backward)):
            times = {k: best_time(step, m, x, args.repeats, args.budget)
                     for k, m in timed.items()}
            cells = [f"{show(times[k])} ({times[k] / times['sdpa']:.1f}×)" if k in times
                     else f"skipped (> {args.loop_max:,} tokens)" for k in VERSIONS[:-1]]
            rows.append([f"{n:,}", label, *cells, show(times["sdpa"])])

    print(f"{machine()}, Python {platform.python_version()}, PyTorch {torch.__version__}; "
          f"torch.set_num_threads({args.threads}); width {args.width}, {args.heads} heads of "
          f"{args.width // args.heads}, batch 1, float32; best of {args.repeats} runs, or of "
          f"{args.budget} s of runs\n")
    print(markdown_table(["tokens", "pass", *VERSIONS], rows,
                         ["---:", "---", *["---:"] * len(VERSIONS)]))
    print("\nTimes, and in brackets the ratio to sdpa's time. All four versions gave the same "
          "outputs and input gradients (to 1e-4) at every length they were timed.")


if __name__ == "__main__":
    main()
