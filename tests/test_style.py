"""Lint is part of the test suite, so a learner's pytest run sees what CI sees."""

import ast
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


def test_no_function_of_the_package_is_longer_than_80_lines():
    # Complexity is ruff's C901 (max 15, pyproject.toml); length is counted here, so that a
    # reader can hold any function of buildllm in view at once, as in nanoGPT.
    long = []
    for path in sorted((ROOT / "Supporting" / "buildllm").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 80:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {lines}")
    assert long == []
