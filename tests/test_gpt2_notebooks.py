"""Every notebook that can load GPT-2 runs end to end on it, with the settings made for it.

Online, these notebooks get GPT-2 124M; offline (CI, here) only the course model. So each is
executed once more on a stand-in in GPT-2's exact file layout (tests/gpt2_stand_in.py) with
$BUILDLLM_SMOKE set, which cuts steps and evaluation sizes: the run checks that every cell
works with GPT-2's shapes and settings, not what it learns.
"""


import pytest
import torch
from gpt2_stand_in import (
    ROOT,
    WITH_A_GPT2_SECTION,
    WITH_SETTINGS,
    execute_on_stand_in,
    gpt2_124m_state,
    loss_outputs,
    output_texts,
)
from safetensors.torch import load_file

from buildllm.gpt2 import load_hf_state_dict
from buildllm.model import CONFIGS, GPTModel


@pytest.fixture(scope="module")
def stand_in_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("gpt2-cache")


def test_the_stand_in_has_the_layout_of_openai_community_gpt2(stand_in_cache):
    """The names, shapes and dtype of the real file: 124,439,808 weights in float32 plus
    12 causal masks, 548,105,232 bytes (the real file is 548,105,171: its header differs)."""
    from gpt2_stand_in import write_stand_in

    write_stand_in(stand_in_cache)
    path = stand_in_cache / "gpt2-124M.safetensors"
    state = load_file(path)
    assert {t.dtype for t in state.values()} == {torch.float32}
    masks = [k for k in state if k.endswith(".attn.bias")]
    assert len(masks) == 12 and state["h.0.attn.bias"].shape == (1, 1, 1024, 1024)
    assert sum(t.numel() for k, t in state.items() if k not in masks) == 124_439_808
    assert abs(path.stat().st_size - 548_105_171) < 1_000
    model = load_hf_state_dict(GPTModel(CONFIGS["124M"]), state)  # every key fits, by name
    assert torch.equal(model.tok_emb.weight, state["wte.weight"])


def test_the_stand_in_is_the_same_every_time():
    assert torch.equal(gpt2_124m_state()["h.3.mlp.c_fc.weight"],
                       gpt2_124m_state()["h.3.mlp.c_fc.weight"])


@pytest.mark.parametrize("name", WITH_SETTINGS)
def test_notebook_runs_on_gpt2_with_the_settings_made_for_it(name, stand_in_cache):
    nb, _ = execute_on_stand_in(ROOT / name, stand_in_cache, smoke=True)
    outputs = output_texts(nb)
    text = "\n".join(outputs)
    assert "the course's own small model instead" not in text  # it did get GPT-2
    assert "Settings for GPT-2 124M on a CPU, a short run" in text
    losses, not_finite = loss_outputs(nb)
    assert losses and not_finite == []


@pytest.mark.parametrize("name", WITH_A_GPT2_SECTION)
def test_the_gpt2_section_runs_when_the_weights_load(name, stand_in_cache):
    """Both sections call the model `gpt2`; one more cell counts its weights."""
    nb, _ = execute_on_stand_in(ROOT / name, stand_in_cache, smoke=True,
                                then="print(sum(p.numel() for p in gpt2.parameters()))")
    assert "GPT-2's weights are not available" not in "\n".join(output_texts(nb))
    assert nb.cells[-1].outputs[0].text == "124439808\n"
