"""Shared fixtures: an empty cache per test, the repository root, GPT-2's tokenizer, and tiny
random models (see stand_ins.py) for the tests that need a model but not a particular one."""

import sys
from pathlib import Path

import pytest
from stand_ins import READS_GPT2, tiny_gpt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "Supporting" / "tools"))  # make_exercises, run_notebooks
sys.path.insert(0, str(ROOT / "Supporting"))  # figures: the code that draws the course's figures


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh, empty download cache, so no test sees another's files."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("BUILDLLM_CACHE", str(folder))
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


@pytest.fixture(scope="session")
def enc(tmp_path_factory):
    """GPT-2's tokenizer (tiktoken), from the mirror through a cache of the session's own,
    so that no test depends on what the user's cache holds."""
    from buildllm.data import gpt2_encoding

    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BUILDLLM_CACHE", str(folder))
        return gpt2_encoding()


@pytest.fixture(scope="module")
def model():
    """A tiny random GPT with a 97-token vocabulary (stand_ins.TINY, seed 0, eval mode)."""
    return tiny_gpt()


@pytest.fixture(scope="module")
def chat(enc):
    """A chat session over a tiny random GPT that reads GPT-2's tokens (context 128)."""
    from buildllm.chat import ChatSession

    return ChatSession(tiny_gpt(**READS_GPT2), enc, max_new_tokens=16)


@pytest.fixture
def started_replies(chat, monkeypatch) -> list:
    """Every reply `chat` starts from now on, to see where a server stopped an abandoned one."""
    from buildllm.chat import ChatSession

    replies = []

    def stream(messages, **settings):
        replies.append(ChatSession.stream(chat, messages, **settings))
        return replies[-1]

    monkeypatch.setattr(chat, "stream", stream)
    return replies
