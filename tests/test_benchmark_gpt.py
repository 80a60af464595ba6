"""The GPT benchmark still runs and checks what it claims (its timings are not tested)."""

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from benchmark_gpt import assert_same_logits, twin_models

from buildllm.model import CONFIGS

ROOT = Path(__file__).resolve().parents[1]

TINY = replace(CONFIGS["cpu-tiny"], n_layers=2, drop_rate=0.0)


def test_the_benchmark_runs_end_to_end_on_tiny_settings():
    out = subprocess.run(
        [sys.executable, str(ROOT / "Supporting/tools/benchmark_gpt.py"),
         "--configs", "cpu-tiny", "--dtypes", "fp32,bf16", "--batch", "2", "--seq-len", "16",
         "--steps", "2", "--gen-config", "cpu-tiny", "--new-tokens", "10",
         "--gen-repeats", "1", "--threads", "1"],
        capture_output=True, text=True, check=True,
    ).stdout
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    assert rows[0] == "| measurement | result | ratio |"
    body = [row.split(" | ") for row in rows[1:]]
    assert [cells[0].removeprefix("| ") for cells in body] == [
        "train cpu-tiny fp32, Hugging Face",
        "train cpu-tiny fp32, ours",
        "train cpu-tiny bf16, Hugging Face",
        "train cpu-tiny bf16, ours",
        "generate 10 tokens, cpu-tiny, Hugging Face with its cache",
        "generate 10 tokens, cpu-tiny, ours with the KV cache",
        "generate 10 tokens, cpu-tiny, ours without the cache",
    ]
    assert all(cells[1].endswith("tokens/s") for cells in body)
    assert sum("same losses" in row for row in rows) == 2  # both dtypes trained alike
    assert sum("identical tokens" in row for row in rows) == 2  # Hugging Face, and no cache
    assert "1 thread;" in out


def test_twin_models_compute_the_same_logits():
    ours, hf = twin_models(TINY)
    assert_same_logits(ours, hf, torch.randint(0, TINY.vocab_size, (2, 9)))


def test_the_logits_check_refuses_models_that_differ():
    ours, hf = twin_models(TINY)
    with torch.no_grad():
        ours.trf_blocks[1].ff.layers[0].bias += 0.1
    with pytest.raises(AssertionError, match="logits differ by up to"):
        assert_same_logits(ours, hf, torch.randint(0, TINY.vocab_size, (2, 9)))
