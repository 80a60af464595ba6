"""The BPE benchmark still runs and checks what it claims (its timings are not tested)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_benchmark_runs_end_to_end_on_small_inputs():
    out = subprocess.run(
        [sys.executable, str(ROOT / "Supporting/tools/benchmark_bpe.py"),
         "--vocab-size", "400", "--megabytes", "2"],
        capture_output=True, text=True, check=True,
    ).stdout
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    assert rows[0] == "| measurement | result | ratio |"
    assert any("same merges" in row for row in rows)  # the naive and fast trainers agreed
    assert any("identical ids" in row for row in rows)  # our ids equal tiktoken's
    assert any("encode_iterable over a 2 MB file" in row for row in rows)
