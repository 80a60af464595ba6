"""Our GPTModel, loaded from a Hugging Face GPT-2 checkpoint, equals transformers' GPT-2.

Hugging Face transformers is the reference here only; buildllm never imports it. The real
pretrained weights cannot be downloaded in CI, so we check the loader on randomly
initialised checkpoints written by transformers itself: same file format, same key names.
"""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel

from buildllm.data import fetch, gpt2_encoding
from buildllm.generation import generate
from buildllm.gpt2 import config_from_hf, from_hf_checkpoint, load_hf_state_dict
from buildllm.model import GPTModel

SMALL = {"n_layer": 2, "n_head": 4, "n_embd": 64, "n_positions": 256}
CONFIGS = {"small": SMALL, "124M": {}}


@pytest.fixture(scope="module", params=list(CONFIGS))
def pair(request, tmp_path_factory):
    """A random transformers GPT-2, saved as safetensors, and ours loaded from that folder."""
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(**CONFIGS[request.param])).eval()
    folder = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(folder)  # model.safetensors and config.json, as on the Hub
    assert (folder / "model.safetensors").is_file()
    return hf, from_hf_checkpoint(folder).eval()


def real_ids(n: int) -> torch.Tensor:
    text = fetch("the-verdict.txt").read_text("utf-8")
    return torch.tensor(gpt2_encoding().encode(text)[:n])


@torch.no_grad()
def test_logits_equal_on_real_and_random_ids_of_several_lengths(pair):
    hf, ours = pair
    gen = torch.Generator().manual_seed(1)
    batches = [
        real_ids(200)[None],
        real_ids(256).view(4, 64),
        torch.randint(0, 50257, (3, 17), generator=gen),
        torch.randint(0, 50257, (1, 1), generator=gen),
    ]
    for ids in batches:
        torch.testing.assert_close(ours(ids), hf(ids).logits, rtol=0, atol=1e-5)


@torch.no_grad()
def test_greedy_generation_with_the_cache_equals_hugging_face_generate(pair):
    hf, ours = pair
    prompt = real_ids(12)[None]
    expected = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=50,
                           min_new_tokens=50, do_sample=False, pad_token_id=50256)
    assert torch.equal(generate(ours, prompt, 50, use_cache=True), expected)


@pytest.fixture(scope="module")
def small_state():
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(**SMALL))
    return config_from_hf(json.loads(hf.config.to_json_string())), hf.state_dict()


def test_the_layout_of_openai_files_loads_too(small_state, tmp_path):
    """OpenAI's checkpoint on the Hub has no "transformer." prefix and stores mask buffers."""
    cfg, state = small_state
    bare = {k.removeprefix("transformer."): v.clone() for k, v in state.items()}
    bare.pop("lm_head.weight")
    for i in range(cfg.n_layers):
        bare[f"h.{i}.attn.bias"] = torch.ones(1, 1, 256, 256).tril()
    save_file(bare, tmp_path / "model.safetensors")

    model = load_hf_state_dict(GPTModel(cfg), load_file(tmp_path / "model.safetensors"))
    torch.testing.assert_close(model.tok_emb.weight, state["transformer.wte.weight"])
    torch.testing.assert_close(model.trf_blocks[1].att.qkv.weight,
                               state["transformer.h.1.attn.c_attn.weight"].t())


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s.pop("transformer.h.1.mlp.c_fc.bias"), r"missing \['h.1.mlp.c_fc.bias'\]"),
        (lambda s: s.update({"transformer.h.2.ln_1.weight": torch.ones(64)}),
         r"unexpected \['h.2.ln_1.weight'\]"),
        (lambda s: s.update({"transformer.h.0.attn.c_attn.weight": torch.ones(192, 64)}),
         r"h.0.attn.c_attn.weight has shape \(192, 64\), but trf_blocks.0.att.qkv.weight needs "
         r"\(64, 192\) \(stored transposed, as Conv1D\)"),
        (lambda s: s.update({"transformer.wpe.weight": torch.ones(1024, 64)}),
         r"wpe.weight has shape \(1024, 64\), but pos_emb.weight needs \(256, 64\)"),
        (lambda s: s.update({"lm_head.weight": torch.zeros(50257, 64)}), "differs from wte"),
    ],
    ids=["missing", "unexpected", "transposed", "wrong context", "untied head"],
)
def test_a_state_dict_that_does_not_fit_is_refused_by_name(small_state, change, message):
    cfg, state = small_state
    state = dict(state)
    change(state)
    with pytest.raises(ValueError, match=message):
        load_hf_state_dict(GPTModel(cfg), state)
