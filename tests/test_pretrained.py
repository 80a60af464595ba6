"""The course's own pretrained model: small enough to ship, trained, and the offline fallback."""

import json
import math

import pytest
import torch

from buildllm.data import fetch, gpt2_encoding
from buildllm.pretrained import COURSE_MODEL_DIR, course_model, gpt2_or_course_model
from buildllm.training import evaluate

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def test_the_course_model_ships_within_25_mb():
    size = sum(f.stat().st_size for f in COURSE_MODEL_DIR.iterdir())
    assert size <= 25_000_000, f"{size:,} bytes"


def test_the_course_model_has_learned_shakespeare():
    """Its validation loss on the held-out tail of Tiny Shakespeare must be far below chance
    (ln 50257 = 10.8) and match what its run.json recorded."""
    model = course_model()
    assert not model.training
    recorded = json.loads((COURSE_MODEL_DIR / "run.json").read_text("utf-8"))["result"]
    ids = gpt2_encoding().encode_ordinary(fetch("tinyshakespeare.txt").read_text("utf-8"))
    tail = torch.tensor(ids[int(0.9 * len(ids)):])
    ctx = model.cfg.context_length
    windows = tail[: (len(tail) - 1) // ctx * ctx + 1]
    batches = [(windows[i : i + ctx][None], windows[i + 1 : i + ctx + 1][None])
               for i in range(0, 40 * ctx, ctx)]
    loss = evaluate(model, batches)
    assert loss < math.log(50257) - 4
    assert loss == pytest.approx(recorded["val_loss"], abs=0.3)


def test_offline_the_fallback_is_the_course_model_and_says_so(cache, tmp_path, monkeypatch,
                                                               capsys):
    for name in ("encoder.json", "vocab.bpe"):  # a mirror with the tokenizer, without GPT-2
        (tmp_path / name).write_bytes(fetch(name).read_bytes())
    monkeypatch.setenv("BUILDLLM_MIRROR", str(tmp_path))  # and nothing is downloaded
    model, name = gpt2_or_course_model("124M")
    assert name == "the course model"
    assert model.cfg == course_model().cfg
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "gpt2-124M.safetensors" in out
