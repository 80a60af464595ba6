"""Shared fixtures: an empty cache per test, and the repository root."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "Supporting" / "tools"))  # make_exercises, run_notebooks


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh, empty download cache, so no test sees another's files."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("BUILDLLM_CACHE", str(folder))
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    return folder
