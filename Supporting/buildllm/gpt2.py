"""OpenAI's GPT-2 weights, in Hugging Face's layout, loaded into our GPTModel (Meetings 4 and 5).

Hugging Face stores GPT-2 as OpenAI did: names like `h.3.attn.c_attn.weight` (with or
without a `transformer.` prefix), and linear layers as "Conv1D", whose weight is the
transpose of a torch Linear's (y = x @ W + b). `c_attn` is the query, key and value weights
side by side, which is exactly our fused `att.qkv` layer. So loading is renaming and
transposing, plus careful checks: a wrong shape or a missing key fails loudly, by name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file

from .model import GPTConfig, GPTModel

__all__ = ["config_from_hf", "from_hf_checkpoint", "hf_key_map", "load_hf_state_dict"]

# Old checkpoints also store each layer's causal mask (`attn.bias`, `attn.masked_bias`).
# They are constants, not weights: our attention builds its mask itself.
_MASK_BUFFERS = (".attn.bias", ".attn.masked_bias")


def config_from_hf(hf_config: Mapping) -> GPTConfig:
    """Our config from a Hugging Face GPT-2 config.json (as a dict)."""
    return GPTConfig(
        vocab_size=hf_config["vocab_size"],
        context_length=hf_config["n_positions"],
        emb_dim=hf_config["n_embd"],
        n_heads=hf_config["n_head"],
        n_layers=hf_config["n_layer"],
        drop_rate=hf_config.get("resid_pdrop", 0.1),
        qkv_bias=True,
        tie_embeddings=hf_config.get("tie_word_embeddings", True),
    )


def hf_key_map(cfg: GPTConfig) -> dict[str, tuple[str, bool]]:
    """Our parameter name -> (Hugging Face name, whether the weight is stored transposed)."""
    names = {
        "tok_emb.weight": ("wte.weight", False),
        "pos_emb.weight": ("wpe.weight", False),
        "final_norm.scale": ("ln_f.weight", False),
        "final_norm.shift": ("ln_f.bias", False),
        "out_head.weight": ("lm_head.weight" if not cfg.tie_embeddings else "wte.weight", False),
    }
    ours_to_hf = {
        "norm1": "ln_1", "norm2": "ln_2",
        "att.qkv": "attn.c_attn", "att.out_proj": "attn.c_proj",
        "ff.layers.0": "mlp.c_fc", "ff.layers.2": "mlp.c_proj",
    }  # fmt: skip
    for i in range(cfg.n_layers):
        for ours, hf in ours_to_hf.items():
            linear = not ours.startswith("norm")  # a LayerNorm's weights are not transposed
            weight, bias = ("weight", "bias") if linear else ("scale", "shift")
            names[f"trf_blocks.{i}.{ours}.{weight}"] = (f"h.{i}.{hf}.weight", linear)
            names[f"trf_blocks.{i}.{ours}.{bias}"] = (f"h.{i}.{hf}.bias", False)
    return names


def load_hf_state_dict(model: GPTModel, state_dict: Mapping[str, torch.Tensor]) -> GPTModel:
    """Copy GPT-2 weights in Hugging Face's layout into `model`, checking every name and shape."""
    given = {k.removeprefix("transformer."): v for k, v in state_dict.items()}
    key_map = hf_key_map(model.cfg)
    expected = {hf for hf, _ in key_map.values()}
    ignorable = {"lm_head.weight"} if model.cfg.tie_embeddings else set()
    missing = sorted(expected - given.keys())
    extra = given.keys() - expected - ignorable
    unexpected = sorted(k for k in extra if not k.endswith(_MASK_BUFFERS))
    if missing or unexpected:
        raise ValueError(f"the state dict does not fit this GPTModel ({model.cfg.n_layers} "
                         f"layers): missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
                         f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    if "lm_head.weight" in given and model.cfg.tie_embeddings and not torch.equal(
        given["lm_head.weight"], given["wte.weight"]
    ):
        raise ValueError("lm_head.weight differs from wte.weight, but the config ties them")

    ours = {}
    own = model.state_dict()
    for name, (hf, transposed) in key_map.items():
        tensor = given[hf].t() if transposed else given[hf]
        if tensor.shape != own[name].shape:
            stored = tuple(given[hf].shape)
            needs = tuple(own[name].shape[::-1] if transposed else own[name].shape)
            note = " (stored transposed, as Conv1D)" if transposed else ""
            raise ValueError(f"{hf} has shape {stored}, but {name} needs {needs}{note}")
        ours[name] = tensor
    model.load_state_dict(ours)
    return model


def from_hf_checkpoint(folder: str | os.PathLike) -> GPTModel:
    """A GPTModel from a Hugging Face GPT-2 folder: config.json and model.safetensors."""
    folder = Path(folder)
    cfg = config_from_hf(json.loads((folder / "config.json").read_text("utf-8")))
    return load_hf_state_dict(GPTModel(cfg), load_file(folder / "model.safetensors"))
