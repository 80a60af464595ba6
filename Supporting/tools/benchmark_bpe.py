"""How fast is our pure-Python BPE? Ratios against references timed side by side, in one run.

    BUILDLLM_MIRROR=../shared/data python Supporting/tools/benchmark_bpe.py

Prints a Markdown table for Meeting-2/README.md:

- training: a 4,096-token vocabulary on Tiny Shakespeare, against Hugging Face's Rust BPE
  trainer (byte-level, same corpus and size) and against our naive recount-every-merge trainer;
- encoding: throughput in MB/s with GPT-2's merges, against tiktoken, with identical ids;
- memory: peak RSS of `encode_iterable` over a file of 100 MB or more.

Everything runs on one thread (Rust's too), so the ratios compare algorithms, not core counts.
Absolute times depend on the machine and its load; ratios measured together are what to quote.
"""

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmark_report import machine, markdown_table

from buildllm.data import fetch, gpt2_encoding
from buildllm.tokenizers import ENDOFTEXT, gpt2_tokenizer, train_bpe, train_bpe_naive


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def train_rust(path: Path, vocab_size: int) -> int:
    """Hugging Face's byte-level BPE trainer, set up like ours: GPT-2 split, 256 bytes first."""
    os.environ["RAYON_RS_NUM_CPUS"] = "1"  # one thread, like ours; read when Rust starts
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[ENDOFTEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train([str(path)], trainer)
    return tokenizer.get_vocab_size()


def training(vocab_size: int, naive: bool) -> list[tuple[str, str, str]]:
    path = fetch("tinyshakespeare.txt")
    ours, (vocab, merges) = timed(train_bpe, path, vocab_size, [ENDOFTEXT])
    rust, rust_size = timed(train_rust, path, vocab_size)
    rows = [
        (f"train {vocab_size:,} tokens, ours (incremental)", f"{ours:.2f} s", ""),
        (f"train, Hugging Face Rust ({rust_size:,} tokens)", f"{rust:.2f} s",
         f"ours takes {ours / rust:.1f}× as long"),
    ]
    if naive:
        slow, result = timed(train_bpe_naive, path, vocab_size, [ENDOFTEXT])
        assert result == (vocab, merges), "the naive and fast trainers disagree"
        rows.append(("train, ours naive (recount every merge)", f"{slow:.1f} s",
                     f"ours is {slow / ours:.0f}× faster; same merges"))
    return rows


def encoding() -> list[tuple[str, str, str]]:
    text = fetch("tinyshakespeare.txt").read_text("utf-8")
    mb = len(text.encode()) / 1e6
    enc, tok = gpt2_encoding(), gpt2_tokenizer()
    reference, expected = timed(enc.encode_ordinary, text)
    cold, ids = timed(tok.encode_ordinary, text)  # first pass: fills the per-word cache
    warm, again = timed(tok.encode_ordinary, text)
    assert ids == again == expected, "our ids differ from tiktoken's"
    return [
        (f"encode {mb:.1f} MB, tiktoken", f"{mb / reference:.1f} MB/s", ""),
        ("encode, ours, first pass", f"{mb / cold:.1f} MB/s",
         f"{cold / reference:.1f}× tiktoken's time; identical ids"),
        ("encode, ours, words cached", f"{mb / warm:.1f} MB/s", f"{warm / reference:.1f}×"),
    ]


# Peak resident memory in MB. ru_maxrss is in kB on Linux and in bytes on macOS (no Windows).
PEAK_RSS = """
import resource, sys
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(rss / (2**20 if sys.platform == "darwin" else 2**10))
"""
LOAD_ONLY = f"from buildllm.tokenizers import gpt2_tokenizer; gpt2_tokenizer()\n{PEAK_RSS}"
STREAM = f"""
import sys, time
from buildllm.tokenizers import gpt2_tokenizer
tok = gpt2_tokenizer()
start, n = time.perf_counter(), 0
with open(sys.argv[1], encoding="utf-8") as f:
    for _ in tok.encode_iterable(f):
        n += 1
print(n, time.perf_counter() - start)
{PEAK_RSS}
"""


def in_fresh_python(code: str, *args: str) -> list[str]:
    """Run `code` in a new interpreter (so its peak memory is its own); return its output."""
    run = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         check=True)
    return run.stdout.split()


def memory(megabytes: int) -> list[tuple[str, str, str]]:
    text = fetch("tinyshakespeare.txt").read_text("utf-8")
    with tempfile.TemporaryDirectory() as folder:
        big = Path(folder) / "big.txt"
        with big.open("w", encoding="utf-8") as f:
            for _ in range(megabytes * 10**6 // len(text.encode()) + 1):
                f.write(text)
        size = big.stat().st_size / 1e6
        (baseline,) = in_fresh_python(LOAD_ONLY)
        n, seconds, peak = in_fresh_python(STREAM, str(big))
    baseline, peak = float(baseline), float(peak)
    return [
        ("load GPT-2's tokenizer only: peak RSS", f"{baseline:.0f} MB", ""),
        (f"encode_iterable over a {size:.0f} MB file: peak RSS", f"{peak:.0f} MB",
         f"streaming adds {peak - baseline:.0f} MB; {int(n):,} ids in {float(seconds):.0f} s"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--no-naive", action="store_true", help="skip the slow naive trainer")
    parser.add_argument("--megabytes", type=int, default=200, help="size of the streamed file")
    args = parser.parse_args()

    rows = training(args.vocab_size, naive=not args.no_naive) + encoding() + memory(args.megabytes)
    print(f"{machine()}, Python {platform.python_version()}; one thread everywhere\n")
    print(markdown_table(["measurement", "result", "ratio"], rows))


if __name__ == "__main__":
    main()
