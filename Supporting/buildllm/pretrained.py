"""Pretrained models for Meetings 5 to 7: GPT-2's own weights, or the course's model offline.

GPT-2's weights are a 548 MB download (or more, for the larger sizes). Where they cannot be
had (no network, CI), the notebooks fall back to a small model the course pretrained itself
with `python -m buildllm.pretrain` and ships in `buildllm/weights/` (Meeting-5's README gives
the command that reproduces it). It reads GPT-2's tokens, so everything downstream works
with either model; it has just read far less, and only Shakespeare.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file

from .data import DownloadError, gpt2_weights
from .gpt2 import load_hf_state_dict
from .model import CONFIGS, GPTModel
from .runs import load_run

__all__ = ["COURSE_MODEL_DIR", "SMOKE_ENV", "choose_settings", "course_model", "gpt2_model",
           "gpt2_or_course_model", "load_base", "smoke_run"]

COURSE_MODEL_DIR = Path(__file__).parent / "weights" / "course-shakespeare"


def course_model() -> GPTModel:
    """The course's own small GPT, pretrained on tinyshakespeare.txt, in eval mode (float32)."""
    return load_run(COURSE_MODEL_DIR).model


def gpt2_model(size: str = "124M") -> GPTModel:
    """OpenAI's GPT-2 of this size, downloaded (sha256-verified) and loaded, in eval mode."""
    return load_hf_state_dict(GPTModel(CONFIGS[size]), load_file(gpt2_weights(size))).eval()


def gpt2_or_course_model(size: str = "124M") -> tuple[GPTModel, str]:
    """GPT-2's weights where they can be had, otherwise the course's model; and which it is.

    The fallback is announced in one line, so a notebook run offline says plainly that its
    results come from the small model.
    """
    try:
        return gpt2_model(size), f"GPT-2 {size}"
    except DownloadError as err:
        print(f"GPT-2 {size}'s weights are not available ({err.name} could not be downloaded), "
              "so this runs on the course's own small model instead.")
        return course_model(), "the course model"


def load_base(name: str = "gpt2") -> tuple[GPTModel, str]:
    """The model a fine-tuning notebook starts from, and how to call it.

    `name` is the one line a learner changes: "gpt2" (GPT-2 124M, or the course's model where
    GPT-2 cannot be downloaded), "course", or the folder of your own Meeting-5 run of
    `python -m buildllm.pretrain`. Meeting 6 reads its data with GPT-2's tokenizer, so a run
    must have been trained with it (`--tokenizer gpt2`, the default).
    """
    if name == "gpt2":
        return gpt2_or_course_model("124M")
    if name == "course":
        return course_model(), "the course model"
    folder = Path(name).expanduser()
    if not (folder / "run.json").is_file():
        raise ValueError(f'MODEL = {name!r} is not "gpt2", "course" or a run folder (it has '
                         "no run.json): give the --out folder of python -m buildllm.pretrain")
    run = load_run(folder)
    if run.tokenizer_spec["kind"] != "gpt2":
        raise ValueError(f"{folder} was trained with its own tokenizer, but these notebooks "
                         "read GPT-2's tokens: pretrain again with --tokenizer gpt2")
    return run.model, f"your model from {folder}"


SMOKE_ENV = "BUILDLLM_SMOKE"


def smoke_run() -> bool:
    """True when $BUILDLLM_SMOKE is set: the tests then run a notebook with a few steps only.

    A smoke run checks that every cell works with the model a notebook got, not what it
    learns: its numbers mean nothing. No learner needs it.
    """
    return os.environ.get(SMOKE_ENV, "") not in ("", "0")


def choose_settings(model_name: str, device: torch.device | str, *, course: dict,
                    gpt2_gpu: dict, gpt2_cpu: dict, smoke: dict | None = None) -> dict:
    """The settings made for the model a notebook got and the device it runs on.

    GPT-2 (124M parameters) costs 15-30 times the course model (7M) per step, and wants a
    learning rate about 20 times smaller, so one set of numbers cannot serve both. Each
    choice is a dict of settings plus "why": where its numbers come from, or what a short
    run leaves out. `model_name` is the name `gpt2_or_course_model` returned. The choice is
    printed in one line; with $BUILDLLM_SMOKE set, `smoke` then overrides some settings.

    >>> s = choose_settings("the course model", "cpu",
    ...                     course={"lr": 1e-3, "why": "tuned on it"},
    ...                     gpt2_gpu={"lr": 5e-5, "why": "the book's"},
    ...                     gpt2_cpu={"lr": 5e-5, "why": "a short run"})
    Settings for the course model: lr=0.001 (tuned on it)
    >>> s
    {'lr': 0.001}
    """
    choices = {"course": course, "gpt2_gpu": gpt2_gpu, "gpt2_cpu": gpt2_cpu}
    names = {key: sorted(set(choice) - {"why"}) for key, choice in choices.items()}
    if missing := [key for key, choice in choices.items() if not choice.get("why")]:
        raise ValueError(f"say where the settings come from: add 'why' to {', '.join(missing)}")
    if len({tuple(n) for n in names.values()}) > 1:
        raise ValueError(f"every choice needs the same settings, but they have {names}")
    if unknown := sorted(set(smoke or {}) - set(names["course"])):
        raise ValueError(f"smoke overrides {unknown}, which no choice sets")

    device_type = torch.device(device).type
    if not model_name.startswith("GPT-2"):
        key, label = "course", model_name
    elif device_type in ("cuda", "mps"):
        key, label = "gpt2_gpu", f"{model_name} on a GPU ({device_type})"
    else:
        key, label = "gpt2_cpu", f"{model_name} on a CPU, a short run"
    chosen = {name: value for name, value in choices[key].items() if name != "why"}
    line = f"Settings for {label}: {_listed(chosen)} ({choices[key]['why']})"
    if smoke and smoke_run():
        chosen.update(smoke)
        line += f"; smoke run ({SMOKE_ENV} is set): {_listed(smoke)}"
    print(line)
    return chosen


def _listed(settings: dict) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in settings.items())
