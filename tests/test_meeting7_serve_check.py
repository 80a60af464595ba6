"""`python -m buildllm.serve --check`: the pre-show check that starts the server, asks it one
question through the chat-completions API, prints the reply and stops, so that it can be run
live and finishes by itself."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from buildllm.chat import ChatSession
from buildllm.pretrained import COURSE_MODEL_DIR
from buildllm.serve import CHECK_QUESTION, check, create_app

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def chat():
    return ChatSession.from_run(COURSE_MODEL_DIR, device="cpu")


def test_check_reports_the_reply_the_session_gives_to_the_same_request(chat):
    report = check(create_app(chat, "shakespeare"), "shakespeare", "Who wrote Hamlet?")
    expected = chat.reply([{"role": "user", "content": "Who wrote Hamlet?"}],
                          temperature=0.8, seed=1, max_new_tokens=24)
    assert expected and repr(expected) in report
    assert "the chat page loads" in report


def test_check_fails_clearly_when_the_model_name_is_not_served(chat):
    with pytest.raises(RuntimeError, match="404"):
        check(create_app(chat, "shakespeare"), "another-model")


def test_the_check_command_finishes_by_itself_and_prints_the_answer(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BUILDLLM_DEVICE": "cpu",
           "BUILDLLM_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "buildllm.serve", "--check"], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"asked {CHECK_QUESTION!r}" in done.stdout and "stopped in" in done.stdout
