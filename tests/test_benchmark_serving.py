"""The serving benchmark still runs and checks what it claims (its timings are not tested)."""

import subprocess
import sys
from pathlib import Path

import benchmark_serving
import pytest

from buildllm.chat import ChatSession

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--clients", "2", "--requests", "2", "--max-tokens", "4", "--max-batch", "2",
        "--repeats", "1", "--threads", "1"]


def test_the_benchmark_runs_end_to_end_on_tiny_settings():
    out = subprocess.run([sys.executable, str(ROOT / "Supporting/tools/benchmark_serving.py"),
                          *TINY], capture_output=True, text=True, check=True).stdout
    assert "torch.set_num_threads(1); 2 clients, 4 requests of 4 tokens" in out
    rows = [line.strip("| ").split(" | ") for line in out.splitlines() if line.startswith("| ")]
    assert rows[0] == ["serving", "requests/s", "tokens/s", "p50 latency", "p95 latency"]
    assert [r[0] for r in rows[1:]] == ["one at a time (max_batch=1)",
                                         "continuous batching (max_batch=2)"]
    assert "×" not in rows[1][2] and rows[2][2].endswith("×)")  # the ratio to the baseline
    assert all(cell.endswith(" s") for r in rows[1:] for cell in r[3:])
    assert "All 8 replies were identical to one-at-a-time greedy generation" in out


@pytest.mark.usefixtures("one_thread")
def test_a_reply_that_differs_from_one_at_a_time_generation_fails_the_benchmark(
        monkeypatch, capsys):
    monkeypatch.setattr(ChatSession, "reply", lambda self, messages, **settings: "not it")
    assert benchmark_serving.main(TINY) == 1
    assert "4 of 4 replies differ from one-at-a-time greedy generation" in capsys.readouterr().err
