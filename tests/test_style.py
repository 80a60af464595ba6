"""Lint is part of the test suite, so a learner's pytest run sees what CI sees."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing_in_the_package_tests_tools_and_notebooks():
    # No cache: ruff's cache keys on each file's own contents, so a new module elsewhere (one
    # that changes how imports are grouped) would pass here yet fail on a fresh clone.
    out = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "."],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
