"""Our Decoder, loaded from transformers' Llama and Qwen3 files, equals transformers' models.

No pretrained Llama or Qwen weights can be downloaded here, so the loader is checked on
randomly initialised models written by transformers itself (`save_pretrained`, safetensors):
the real key names and file layout, small sizes, plus one layer of Llama 3.2 1B's real
shapes. Logits must agree within 1e-5 and greedy tokens exactly, with and without our KV
cache, and for a left-padded batch. Bad folders are refused in one line, untouched.
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

from buildllm.decoder import CONFIGS, Decoder
from buildllm.generation import generate
from buildllm.hf_decoder import config_from_hf, from_hf_checkpoint, load_hf_state_dict
from buildllm.inference import generate_batch
from buildllm.model import count_parameters

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
               "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}
NO_SPECIAL_TOKENS = {"bos_token_id": None, "eos_token_id": None, "pad_token_id": None}
SMALL = {"vocab_size": 300, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, **NO_SPECIAL_TOKENS}
MODELS = {
    "llama": (LlamaForCausalLM, LlamaConfig(**SMALL, max_position_embeddings=256)),
    # Qwen3: head_dim 32 is not hidden / heads = 16; QK-norm; biases in the attention.
    "qwen3": (Qwen3ForCausalLM, Qwen3Config(**SMALL, head_dim=32, attention_bias=True,
                                            tie_word_embeddings=True)),
    # Llama 3.2 1B's block: hidden 2048, 32 heads, 8 kv heads of 64, intermediate 8192,
    # llama3 rope scaling, tied embeddings; one layer and a small vocabulary.
    "llama3.2-1B-block": (LlamaForCausalLM, LlamaConfig(
        vocab_size=512, hidden_size=2048, intermediate_size=8192, num_hidden_layers=1,
        num_attention_heads=32, num_key_value_heads=8, head_dim=64, rms_norm_eps=1e-5,
        max_position_embeddings=131072, rope_parameters=LLAMA3_ROPE, tie_word_embeddings=True,
        **NO_SPECIAL_TOKENS)),
}
PROMPTS = [[5, 17, 3, 44, 9, 61], [2, 2], [90, 1, 7, 7, 13, 56, 8, 70, 11, 4], [33]]


def save(name: str, folder: Path, **save_options) -> torch.nn.Module:
    """A random transformers model, written as save_pretrained writes it."""
    cls, config = MODELS[name]
    torch.manual_seed(0)
    hf = cls(config).eval()
    hf.save_pretrained(folder, safe_serialization=True, **save_options)
    return hf


@pytest.fixture(scope="module", params=list(MODELS))
def pair(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    hf = save(request.param, folder)
    return hf, from_hf_checkpoint(folder)


@torch.no_grad()
def test_logits_equal_transformers(pair):
    hf, ours = pair
    gen = torch.Generator().manual_seed(1)
    for shape in [(2, 40), (1, 1)]:
        ids = torch.randint(0, hf.config.vocab_size, shape, generator=gen)
        torch.testing.assert_close(ours(ids), hf(ids).logits, rtol=0, atol=1e-5)


@torch.no_grad()
def test_greedy_30_tokens_equal_transformers_generate_with_and_without_the_cache(pair):
    hf, ours = pair
    prompt = torch.tensor([PROMPTS[0]])
    expected = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=30,
                           do_sample=False)
    assert expected.shape == (1, 36)
    assert torch.equal(generate(ours, prompt, 30), expected)
    assert torch.equal(generate(ours, prompt, 30, use_cache=False), expected)


@torch.no_grad()
def test_a_left_padded_batch_gets_transformers_tokens(pair):
    hf, ours = pair
    width = max(map(len, PROMPTS))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in PROMPTS])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in PROMPTS])
    expected = hf.generate(ids, attention_mask=mask, max_new_tokens=30, do_sample=False,
                           pad_token_id=0)
    assert generate_batch(ours, PROMPTS, 30, pad_id=0) == expected[:, width:].tolist()


# -- configs -----------------------------------------------------------------------------

def real_configs():
    """transformers' configs of Llama 3.2 1B and Qwen3 0.6B, as their config.json files say."""
    llama = LlamaConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192,
                        num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                        head_dim=64, max_position_embeddings=131072, rms_norm_eps=1e-5,
                        rope_parameters=LLAMA3_ROPE, tie_word_embeddings=True)
    qwen = Qwen3Config(vocab_size=151936, hidden_size=1024, intermediate_size=3072,
                       num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                       head_dim=128, max_position_embeddings=40960, rms_norm_eps=1e-6,
                       rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                       tie_word_embeddings=True)
    return {"llama3.2-1B": (LlamaForCausalLM, llama), "qwen3-0.6B": (Qwen3ForCausalLM, qwen)}


@pytest.mark.parametrize("name", ["llama3.2-1B", "qwen3-0.6B"])
def test_the_real_configs_map_to_ours_with_the_same_parameter_count(name):
    cls, config = real_configs()[name]
    hf_json = json.loads(config.to_json_string())
    hf_json["architectures"] = [cls.__name__]
    assert config_from_hf(hf_json) == CONFIGS[name]
    with torch.device("meta"):
        hf, ours = cls(config), Decoder(CONFIGS[name])
    assert count_parameters(ours) == sum(p.numel() for p in hf.parameters())


def test_older_config_files_with_rope_theta_and_rope_scaling_read_the_same():
    """The Hub's Llama 3.2 files predate transformers 5's `rope_parameters`."""
    cls, config = real_configs()["llama3.2-1B"]
    new = {**json.loads(config.to_json_string()), "architectures": [cls.__name__]}
    old = {k: v for k, v in new.items() if k != "rope_parameters"}
    rope = dict(new["rope_parameters"])
    old["rope_theta"] = rope.pop("rope_theta")
    old["rope_scaling"] = rope
    assert config_from_hf(old) == config_from_hf(new) == CONFIGS["llama3.2-1B"]


@torch.no_grad()
def test_a_sharded_checkpoint_loads_the_same_weights(tmp_path):
    hf = save("llama", tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert not (tmp_path / "model.safetensors").exists()
    ids = torch.tensor([PROMPTS[2]])
    torch.testing.assert_close(from_hf_checkpoint(tmp_path)(ids), hf(ids).logits,
                               rtol=0, atol=1e-5)


@torch.no_grad()
def test_bfloat16_files_as_on_the_hub_load_into_float32(tmp_path):
    save("qwen3", tmp_path).to(torch.bfloat16).save_pretrained(tmp_path, safe_serialization=True)
    assert load_file(tmp_path / "model.safetensors")["model.norm.weight"].dtype == torch.bfloat16
    ours = from_hf_checkpoint(tmp_path)
    theirs = Qwen3ForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert ours.tok_emb.weight.dtype == torch.float32
    ids = torch.tensor([PROMPTS[2]])
    torch.testing.assert_close(ours(ids), theirs(ids).logits, rtol=0, atol=1e-5)


# -- bad input ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("good")
    save("qwen3", folder)
    return folder


def copy_of(good: Path, folder: Path, config_changes=None, weights=None) -> Path:
    """`good`'s files in `folder`, with config.json values changed or weights replaced."""
    config = json.loads((good / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **(config_changes or {})}))
    tensors = load_file(good / "model.safetensors")
    save_file(tensors if weights is None else weights(tensors), folder / "model.safetensors")
    return folder


def files(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def drop(name):
    return lambda t: {k: v for k, v in t.items() if k != name}


def add(name):
    return lambda t: {**t, name: torch.zeros(3)}


def differing_head(t):
    return {**t, "lm_head.weight": t["model.embed_tokens.weight"] + 1}


BAD = {
    "unknown architecture": ({"architectures": ["MistralForCausalLM"]}, None,
                             "config.json describes 'MistralForCausalLM'; this loader reads "
                             "LlamaForCausalLM, Qwen3ForCausalLM"),
    "another activation": ({"hidden_act": "gelu"}, None, "hidden_act is 'gelu'"),
    "sliding windows": ({"use_sliding_window": True}, None, "set use_sliding_window to false"),
    "sliding layers": ({"layer_types": ["sliding_attention", "full_attention"]}, None,
                       "sliding-window attention, which Decoder does not have"),
    "another rope": ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e6}}, None,
                     "rope type 'yarn'; Decoder has 'default' and 'llama3' only"),
    "bad head counts": ({"num_key_value_heads": 3}, None,
                        "config.json: n_heads=4 must be a multiple of n_kv_heads=3"),
    "a missing config value": ({"hidden_size": None}, None,
                               r"config.json lacks \['hidden_size'\]: is it a complete "
                               r"Qwen3ForCausalLM config\?"),
    "a missing weight": (None, drop("model.layers.1.self_attn.q_norm.weight"),
                         r"missing \['model.layers.1.self_attn.q_norm.weight'\]"),
    "an extra weight": (None, add("model.layers.2.mlp.up_proj.weight"),
                        r"unexpected \['model.layers.2.mlp.up_proj.weight'\]"),
    "a wrong shape": ({"intermediate_size": 100}, None,
                      r"model.layers.0.mlp.gate_proj.weight in model.safetensors has shape "
                      r"\(96, 64\), but config.json needs \(100, 64\)"),
    "untied head": (None, differing_head, "lm_head.weight differs from model.embed_tokens"),
}


@torch.no_grad()
def test_a_tied_checkpoint_that_also_stores_lm_head_loads(good, tmp_path):
    copy_of(good, tmp_path, weights=lambda t: {**t, "lm_head.weight":
                                               t["model.embed_tokens.weight"].clone()})
    model = from_hf_checkpoint(tmp_path)
    assert model.out_head.weight is model.tok_emb.weight
    torch.testing.assert_close(model.tok_emb.weight,
                               load_file(good / "model.safetensors")["model.embed_tokens.weight"])


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_checkpoint_is_refused_in_one_line_and_left_as_it_was(case, good, tmp_path):
    changes, weights, message = BAD[case]
    folder = copy_of(good, tmp_path, changes, weights)
    before = files(folder)
    with pytest.raises(ValueError, match=message) as err:
        from_hf_checkpoint(folder)
    assert "\n" not in str(err.value)
    assert files(folder) == before


def test_a_folder_without_the_files_says_which_is_missing(good, tmp_path):
    with pytest.raises(ValueError, match="no config.json in .*: give the folder"):
        from_hf_checkpoint(tmp_path)
    (tmp_path / "config.json").write_bytes((good / "config.json").read_bytes())
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    before = files(tmp_path)
    with pytest.raises(ValueError, match="no model.safetensors or model.safetensors.index.json "
                                         "in .*safe_serialization=True"):
        from_hf_checkpoint(tmp_path)
    assert files(tmp_path) == before


def test_load_hf_state_dict_checks_names_too(good):
    model = from_hf_checkpoint(good)
    state = drop("model.norm.weight")(load_file(good / "model.safetensors"))
    with pytest.raises(ValueError, match=r"the state dict does not fit .* missing "
                                         r"\['model.norm.weight'\]"):
        load_hf_state_dict(model, state)
