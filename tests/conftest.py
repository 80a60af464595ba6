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


@pytest.fixture
def one_thread():
    """Run torch on one thread: tiny models gain nothing from more, and on a busy machine
    a team of threads spends its time waiting on each other."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
