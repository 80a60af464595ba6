"""A stand-in for GPT-2 124M's real weights, and notebooks executed on it.

Online, `gpt2_or_course_model` returns GPT-2 124M and every notebook that calls it runs
GPT-2. Offline (here, CI) it never can, so that path would go untested. The stand-in is a
file in exactly the layout of openai-community/gpt2's `model.safetensors` (the same key
names, shapes and dtype, the causal-mask buffers included) with random weights: it costs
what the real model costs per step, and exercises every cell that GPT-2 would.

It is written at test time, never committed, into a cache folder where `gpt2_weights()`
finds files placed by hand. Its sha256 is not GPT-2's, so the kernel that runs a notebook
gets one extra cell, inserted after the setup cell, that pins the stand-in's hash instead.
That cell exists only here: no variable or argument a learner could set gets past the pin.
tests/test_gpt2_notebooks.py runs the notebooks this way with $BUILDLLM_SMOKE set, and
`Supporting/tools/run_notebooks.py --gpt2` times their full runs for the READMEs.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import nbformat
import torch
from nbclient import NotebookClient
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
# The notebooks that run on GPT-2 124M (gpt2_or_course_model) outside a Scale up cell, and
# so choose their settings from the model they got.
WITH_SETTINGS = [
    "Meeting-5/03_decoding_strategies.ipynb",
    "Meeting-5/05_gpt2_weights.ipynb",
    "Meeting-6/01_spam_classification.ipynb",
    "Meeting-6/02_instruction_tuning.ipynb",
    "Meeting-6/03_lora.ipynb",
    "Meeting-6/04_preference_tuning.ipynb",
]
# Those with one section that runs GPT-2 when its weights load (a forward pass, a few
# sentences), and skips it otherwise: fixed sizes, nothing to choose.
WITH_A_GPT2_SECTION = [
    "Meeting-3/03_looking_inside_attention.ipynb",
    "Meeting-4/03_generation_kv_cache.ipynb",
]
GPT2_NOTEBOOKS = WITH_SETTINGS + WITH_A_GPT2_SECTION


def gpt2_124m_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the names, shapes and dtype of openai-community/gpt2's file.

    Initialised as GPT-2 was (normal, std 0.02; LayerNorms at 1 and 0), so its losses are
    those of an untrained model, not of an exploding one.
    """
    g = torch.Generator().manual_seed(seed)

    def normal(*shape: int) -> torch.Tensor:
        return torch.empty(shape).normal_(0.0, 0.02, generator=g)

    d, vocab, context = 768, 50257, 1024
    state = {"wte.weight": normal(vocab, d), "wpe.weight": normal(context, d),
             "ln_f.weight": torch.ones(d), "ln_f.bias": torch.zeros(d)}
    for i in range(12):
        state |= {
            f"h.{i}.ln_1.weight": torch.ones(d), f"h.{i}.ln_1.bias": torch.zeros(d),
            f"h.{i}.attn.bias": torch.ones(context, context).tril().view(1, 1, context, context),
            f"h.{i}.attn.c_attn.weight": normal(d, 3 * d),
            f"h.{i}.attn.c_attn.bias": torch.zeros(3 * d),
            f"h.{i}.attn.c_proj.weight": normal(d, d), f"h.{i}.attn.c_proj.bias": torch.zeros(d),
            f"h.{i}.ln_2.weight": torch.ones(d), f"h.{i}.ln_2.bias": torch.zeros(d),
            f"h.{i}.mlp.c_fc.weight": normal(d, 4 * d), f"h.{i}.mlp.c_fc.bias": torch.zeros(4 * d),
            f"h.{i}.mlp.c_proj.weight": normal(4 * d, d), f"h.{i}.mlp.c_proj.bias": torch.zeros(d),
        }  # fmt: skip
    return state


def write_stand_in(cache: Path) -> str:
    """Write the stand-in where gpt2_weights("124M") looks for a file placed by hand.

    Returns its sha256, which the notebook's kernel must then accept.
    """
    from buildllm.data import GPT2_CHECKPOINTS, sha256_of

    cache.mkdir(parents=True, exist_ok=True)
    path = cache / GPT2_CHECKPOINTS["124M"].filename
    if not path.is_file():
        save_file(gpt2_124m_state(), path, metadata={"format": "pt"})
    return sha256_of(path)


def pin_cell(sha256: str) -> nbformat.NotebookNode:
    """The cell that makes this one kernel accept the stand-in in place of GPT-2's file."""
    return nbformat.v4.new_code_cell(
        "import dataclasses\n"
        "import buildllm.data\n"
        "buildllm.data.GPT2_CHECKPOINTS['124M'] = dataclasses.replace(\n"
        f"    buildllm.data.GPT2_CHECKPOINTS['124M'], sha256={sha256!r})"
    )


def execute_on_stand_in(
    notebook: Path, cache: Path, *, smoke: bool, then: str | None = None, timeout: int = 900
) -> tuple[nbformat.NotebookNode, float]:
    """Run a notebook top to bottom with GPT-2's stand-in; the file on disk is not changed.

    The kernel reads $BUILDLLM_CACHE (the stand-in's folder) and, with `smoke`,
    $BUILDLLM_SMOKE, from this process's environment. `then`, if given, is one more cell run
    at the end (a probe of the kernel's state). Returns the executed notebook and the
    seconds it took.
    """
    nb = nbformat.read(notebook, as_version=4)
    nb.cells.insert(2, pin_cell(write_stand_in(cache)))  # after the title and the setup cell
    env = {"BUILDLLM_CACHE": str(cache), "BUILDLLM_SMOKE": "1" if smoke else "0"}
    return execute(nb, notebook.parent, env, then=then, timeout=timeout)


def execute(
    nb: nbformat.NotebookNode, folder: Path, env: dict[str, str], *,
    then: str | None = None, timeout: int = 900,
) -> tuple[nbformat.NotebookNode, float]:
    """Run `nb` in place in a kernel started in `folder`, with `env` added to the environment;
    `then`, if given, is one more cell run at the end. Returns nb and the seconds it took."""
    if then is not None:
        nb.cells.append(nbformat.v4.new_code_cell(then))
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        start = time.perf_counter()
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(folder)}}).execute()
        return nb, time.perf_counter() - start
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def loss_outputs(nb: nbformat.NotebookNode) -> tuple[list[str], list[str]]:
    """The outputs that print a loss (on a line, or in a table with a loss column), and
    those of them that hold a nan or an inf."""
    losses = [out for out in output_texts(nb) if "loss" in out.lower()]
    return losses, [out for out in losses if re.search(r"\b(nan|inf)\b", out, re.I)]


def output_texts(nb: nbformat.NotebookNode) -> list[str]:
    """Each output the notebook printed or displayed as text, in order."""
    return [out.get("text", "") or out.get("data", {}).get("text/plain", "")
            for cell in nb.cells for out in cell.get("outputs", [])]
