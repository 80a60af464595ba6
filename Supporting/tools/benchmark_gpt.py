"""How fast is our GPTModel? Ratios against Hugging Face's GPT-2, timed side by side in one run.

    BUILDLLM_MIRROR=../shared/data python Supporting/tools/benchmark_gpt.py

Prints a Markdown table for Meeting-4/README.md:

- training: tokens/s of a full step (forward, cross-entropy loss, backward, AdamW) of our
  GPTModel against transformers' GPT2LMHeadModel built with the same config, for the 124M and
  cpu-small configs, in float32 and with bfloat16 autocast;
- generation: tokens/s of 200 greedy tokens with our KV cache against Hugging Face's
  `generate` with its cache, and against our own loop without the cache.

Both models hold the same weights (ours are copied from the Hugging Face model), and the
script asserts that they compute the same logits, losses and tokens before it reports a time.
Dropout is off in both (drop_rate=0.0), so their losses must agree step for step.
Steps of the two models alternate (A, B, A, B), so a change in the machine's load hits both;
each result is the median. Everything runs on the CPU with a fixed, printed thread count.
Absolute numbers depend on the machine; ratios measured together are what to quote.
"""

import argparse
import platform
import statistics
import time
from dataclasses import replace
from importlib.metadata import version

import torch
import torch.nn.functional as F
from benchmark_report import machine, markdown_table
from transformers import GPT2Config, GPT2LMHeadModel

from buildllm.data import fetch, gpt2_encoding
from buildllm.datasets import random_windows
from buildllm.generation import generate
from buildllm.gpt2 import load_hf_state_dict
from buildllm.model import CONFIGS, GPTConfig, GPTModel

PROMPT = "Every effort moves you"
DTYPES = {"fp32": None, "bf16": torch.bfloat16}  # None: no autocast


def twin_models(cfg: GPTConfig, seed: int = 123) -> tuple[GPTModel, GPT2LMHeadModel]:
    """Our model and Hugging Face's, built from one config and holding the same weights."""
    torch.manual_seed(seed)
    hf = GPT2LMHeadModel(GPT2Config(
        vocab_size=cfg.vocab_size, n_positions=cfg.context_length, n_embd=cfg.emb_dim,
        n_head=cfg.n_heads, n_layer=cfg.n_layers, resid_pdrop=cfg.drop_rate,
        embd_pdrop=cfg.drop_rate, attn_pdrop=cfg.drop_rate, tie_word_embeddings=True,
        attn_implementation="sdpa",  # PyTorch's fused attention, as ours uses
    ))
    ours = load_hf_state_dict(GPTModel(cfg), hf.state_dict())
    return ours, hf


@torch.no_grad()
def assert_same_logits(ours: GPTModel, hf: GPT2LMHeadModel, ids: torch.Tensor,
                       atol: float = 1e-4) -> None:
    """Fail, saying by how much, unless both models give the same logits for `ids`."""
    ours.eval()
    hf.eval()
    diff = (ours(ids) - hf(ids, use_cache=False).logits).abs().max().item()
    assert diff <= atol, f"the models' logits differ by up to {diff:.2e} (allowed {atol:.0e})"


def training_step(forward, optimizer, x, y, dtype) -> tuple[float, float]:
    """One full step: forward, cross entropy, backward, AdamW. Returns (seconds, loss)."""
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        logits = forward(x)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start, loss.item()


def training(name: str, dtype_name: str, tokens: torch.Tensor, args) -> list[tuple[str, ...]]:
    cfg = replace(CONFIGS[name], drop_rate=0.0)
    seq_len = min(args.seq_len, cfg.context_length)
    ours, hf = twin_models(cfg)
    gen = torch.Generator().manual_seed(0)
    batches = [random_windows(tokens, args.batch, seq_len, gen)
               for _ in range(args.warmup + args.steps)]
    assert_same_logits(ours, hf, batches[0][0])

    dtype = DTYPES[dtype_name]
    models = {"ours": ours.train(), "hf": hf.train()}
    forwards = {"ours": ours, "hf": lambda x: hf(x, use_cache=False).logits}
    optimizers = {k: torch.optim.AdamW(m.parameters(), lr=3e-4, weight_decay=0.1)
                  for k, m in models.items()}
    seconds = {k: [] for k in models}
    losses = {k: [] for k in models}
    for i, (x, y) in enumerate(batches):
        for k in models:  # alternate: ours, theirs, ours, theirs, ...
            s, loss = training_step(forwards[k], optimizers[k], x, y, dtype)
            losses[k].append(loss)
            if i >= args.warmup:
                seconds[k].append(s)

    # Same weights, batches and optimizer: the losses agree step by step, up to rounding
    # (bfloat16 rounds coarsely). So both did the same work, and the times compare.
    tol = 1e-3 if dtype is None else 1e-2
    diff = max(abs(a - b) for a, b in zip(losses["ours"], losses["hf"], strict=True))
    assert diff <= tol, f"the losses differ by up to {diff:.1e}: {losses}"
    tps = {k: args.batch * seq_len / statistics.median(s) for k, s in seconds.items()}
    label = f"train {name} {dtype_name}"
    return [
        (f"{label}, Hugging Face", f"{tps['hf']:,.0f} tokens/s", ""),
        (f"{label}, ours", f"{tps['ours']:,.0f} tokens/s",
         f"ours {tps['ours'] / tps['hf']:.2f}× (goal ≥ 1.0×); same losses"),
    ]


def generation(name: str, new_tokens: int, repeats: int) -> list[tuple[str, ...]]:
    cfg = replace(CONFIGS[name], drop_rate=0.0)
    ours, hf = twin_models(cfg)
    prompt = torch.tensor([gpt2_encoding().encode(PROMPT)])
    assert_same_logits(ours, hf, prompt)

    def hf_generate():
        return hf.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                           max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                           use_cache=True, pad_token_id=cfg.vocab_size - 1)

    runs = {
        "cached": lambda: generate(ours, prompt, new_tokens, use_cache=True),
        "hf": hf_generate,
        "uncached": lambda: generate(ours, prompt, new_tokens, use_cache=False),
    }
    seconds, outputs = {k: [] for k in runs}, {}
    with torch.no_grad():
        for _ in range(repeats):  # interleaved: cached, Hugging Face, uncached, cached, ...
            for k, run in runs.items():
                start = time.perf_counter()
                outputs[k] = run()
                seconds[k].append(time.perf_counter() - start)

    for k in ("hf", "uncached"):
        if not torch.equal(outputs["cached"], outputs[k]):
            n = min(outputs["cached"].shape[1], outputs[k].shape[1])
            where = (outputs["cached"][0, :n] != outputs[k][0, :n]).nonzero()
            at = where[0].item() if len(where) else n
            raise AssertionError(f"ours (cached) and {k} differ from position {at} on")
    tps = {k: new_tokens / statistics.median(s) for k, s in seconds.items()}
    label = f"generate {new_tokens} tokens, {name}"
    return [
        (f"{label}, Hugging Face with its cache", f"{tps['hf']:,.1f} tokens/s", ""),
        (f"{label}, ours with the KV cache", f"{tps['cached']:,.1f} tokens/s",
         f"ours {tps['cached'] / tps['hf']:.2f}× (goal ≥ 1.0×); identical tokens"),
        (f"{label}, ours without the cache", f"{tps['uncached']:,.1f} tokens/s",
         f"the cache is {tps['cached'] / tps['uncached']:.1f}× faster (goal ≥ 5×); "
         "identical tokens"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="124M,cpu-small", help="comma-separated CONFIGS")
    parser.add_argument("--dtypes", default="fp32,bf16", help="fp32 and/or bf16 (autocast)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256, help="capped at the context length")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per model first")
    parser.add_argument("--gen-config", default="124M")
    parser.add_argument("--new-tokens", type=int, default=200)
    parser.add_argument("--gen-repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    configs, dtypes = args.configs.split(","), args.dtypes.split(",")
    for name in {*configs, args.gen_config} - CONFIGS.keys():
        parser.error(f"unknown config {name!r}; choose from {', '.join(CONFIGS)}")
    for name in set(dtypes) - DTYPES.keys():
        parser.error(f"unknown dtype {name!r}; choose from {', '.join(DTYPES)}")

    torch.set_num_threads(args.threads)
    text = fetch("tinyshakespeare.txt").read_text("utf-8")
    tokens = torch.tensor(gpt2_encoding().encode_ordinary(text))
    rows = []
    for name in configs:
        for dtype_name in dtypes:
            rows += training(name, dtype_name, tokens, args)
    rows += generation(args.gen_config, args.new_tokens, args.gen_repeats)

    print(f"{machine()}, {args.threads} thread{'s' * (args.threads > 1)}; "
          f"Python {platform.python_version()}, "
          f"torch {torch.__version__}, transformers {version('transformers')}\n")
    print(f"Training: batch {args.batch} × {args.seq_len} tokens (at most the context length), "
          f"AdamW, cross entropy, dropout off; median of {args.steps} steps after {args.warmup} "
          f"untimed. Generation: greedy, batch 1, median of {args.gen_repeats} runs.\n")
    print(markdown_table(["measurement", "result", "ratio"], rows))


if __name__ == "__main__":
    main()
