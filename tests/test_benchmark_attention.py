"""The attention benchmark still runs and checks what it claims (its timings are not tested)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from benchmark_attention import VERSIONS, build, check

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(*args: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, str(ROOT / "Supporting/tools/benchmark_attention.py"), *args],
        capture_output=True, text=True, check=True,
    ).stdout
    return out.splitlines()


def test_the_benchmark_prints_one_row_per_length_and_pass_with_ratios_to_sdpa():
    lines = run_benchmark("--lengths", "8", "16", "--width", "16", "--heads", "2",
                          "--repeats", "1", "--budget", "0", "--loop-max", "8", "--threads", "1")
    assert "torch.set_num_threads(1)" in lines[0]
    rows = [line.strip("| ").split(" | ") for line in lines if line.startswith("| ")]
    assert rows[0] == ["tokens", "pass", *VERSIONS]
    assert [row[:2] for row in rows[1:]] == [
        ["8", "forward"], ["8", "forward + backward"],
        ["16", "forward"], ["16", "forward + backward"],
    ]
    for row in rows[1:]:
        *others, sdpa = row[2:]
        assert sdpa.endswith("s") and "×" not in sdpa  # the baseline: a time, no ratio
        assert all(cell.endswith("×)") or cell.startswith("skipped") for cell in others)
    assert [row[2] for row in rows[3:]] == ["skipped (> 8 tokens)"] * 2  # said, not left out
    assert "All four versions gave the same outputs and input gradients" in lines[-1]


def test_the_four_versions_share_weights_and_agree():
    modules = build(width=16, heads=4, context_length=12)
    check(modules, torch.randn(2, 12, 16, requires_grad=True))  # raises if any differ


def test_a_version_that_differs_is_caught_before_timing():
    modules = build(width=16, heads=4, context_length=12)
    with torch.no_grad():
        modules["batched"].out_proj.bias.add_(1e-3)
    with pytest.raises(AssertionError, match="batched and sdpa: outputs differ"):
        check(modules, torch.randn(1, 12, 16, requires_grad=True))
