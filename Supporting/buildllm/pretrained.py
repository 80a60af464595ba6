"""Pretrained models for Meetings 5 to 7: GPT-2's own weights, or the course's model offline.

GPT-2's weights are a 548 MB download (or more, for the larger sizes). Where they cannot be
had (no network, CI), the notebooks fall back to a small model the course pretrained itself
with `python -m buildllm.pretrain` and ships in `buildllm/weights/` (Meeting-5's README gives
the command that reproduces it). It reads GPT-2's tokens, so everything downstream works
with either model; it has just read far less, and only Shakespeare.
"""

from __future__ import annotations

from pathlib import Path

from .model import GPTModel

__all__ = ["COURSE_MODEL_DIR", "course_model", "gpt2_model", "gpt2_or_course_model"]

COURSE_MODEL_DIR = Path(__file__).parent / "weights" / "course-shakespeare"


def course_model() -> GPTModel:
    """The course's own small GPT, pretrained on tinyshakespeare.txt, in eval mode (float32)."""
    from .pretrain import load_run

    model, _tokenizer = load_run(COURSE_MODEL_DIR)
    return model


def gpt2_model(size: str = "124M") -> GPTModel:
    """OpenAI's GPT-2 of this size, downloaded (sha256-verified) and loaded, in eval mode."""
    from safetensors.torch import load_file

    from .data import gpt2_weights
    from .gpt2 import load_hf_state_dict
    from .model import CONFIGS

    weights = gpt2_weights(size)
    return load_hf_state_dict(GPTModel(CONFIGS[size]), load_file(weights)).eval()


def gpt2_or_course_model(size: str = "124M") -> tuple[GPTModel, str]:
    """GPT-2's weights where they can be had, otherwise the course's model; and which it is.

    The fallback is announced in one line, so a notebook run offline says plainly that its
    results come from the small model.
    """
    from .data import DownloadError

    try:
        return gpt2_model(size), f"GPT-2 {size}"
    except DownloadError as err:
        print(f"GPT-2 {size}'s weights are not available ({err.name} could not be downloaded), "
              "so this runs on the course's own small model instead.")
        return course_model(), "the course model"
