"""The course's own pretrained model: small enough to ship, trained, and the offline fallback."""

import json
import math

import pytest
import torch

from buildllm.data import fetch, gpt2_encoding
from buildllm.pretrained import (
    COURSE_MODEL_DIR,
    SMOKE_ENV,
    choose_settings,
    course_model,
    gpt2_or_course_model,
)
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


CHOICES = {
    "course": {"lr": 1e-3, "steps": 300, "why": "tuned on the course model"},
    "gpt2_gpu": {"lr": 5e-5, "steps": 2000, "why": "the book's ch. 6"},
    "gpt2_cpu": {"lr": 5e-5, "steps": 40, "why": "a short run"},
}


@pytest.mark.parametrize("model_name, device, chosen, line", [
    ("the course model", "cpu", "course", "Settings for the course model: lr=0.001, steps=300"),
    ("the course model", "cuda", "course", "Settings for the course model:"),
    ("GPT-2 124M", "cuda", "gpt2_gpu", "Settings for GPT-2 124M on a GPU (cuda): lr=5e-05"),
    ("GPT-2 124M", "mps", "gpt2_gpu", "Settings for GPT-2 124M on a GPU (mps):"),
    ("GPT-2 124M", "cpu", "gpt2_cpu", "Settings for GPT-2 124M on a CPU, a short run: lr=5e-05"),
])
def test_settings_follow_the_model_and_the_device_and_say_which_in_one_line(
        model_name, device, chosen, line, capsys, monkeypatch):
    monkeypatch.delenv(SMOKE_ENV, raising=False)
    settings = choose_settings(model_name, device, **CHOICES)
    assert settings == {k: v for k, v in CHOICES[chosen].items() if k != "why"}
    out = capsys.readouterr().out
    assert out.startswith(line) and out.count("\n") == 1
    assert f"({CHOICES[chosen]['why']})" in out


def test_a_smoke_run_overrides_only_under_its_variable(capsys, monkeypatch):
    monkeypatch.delenv(SMOKE_ENV, raising=False)
    assert choose_settings("GPT-2 124M", "cpu", **CHOICES, smoke={"steps": 2})["steps"] == 40
    monkeypatch.setenv(SMOKE_ENV, "1")
    assert choose_settings("GPT-2 124M", "cpu", **CHOICES, smoke={"steps": 2}) == {
        "lr": 5e-5, "steps": 2}
    assert f"smoke run ({SMOKE_ENV} is set): steps=2" in capsys.readouterr().out


@pytest.mark.parametrize("change, message", [
    ({"gpt2_cpu": {"lr": 5e-5, "why": "short"}}, "every choice needs the same settings"),
    ({"course": {"lr": 1e-3, "steps": 300}}, "add 'why' to course"),
    ({"smoke": {"epochs": 1}}, r"smoke overrides \['epochs'\], which no choice sets"),
])
def test_settings_that_do_not_fit_together_are_refused_by_name(change, message, capsys):
    with pytest.raises(ValueError, match=message):
        choose_settings("the course model", "cpu", **(CHOICES | change))
    assert capsys.readouterr().out == ""  # nothing chosen, nothing announced
