"""Llama and Qwen3 checkpoints in transformers' layout, loaded into our Decoder (bonus, Meeting 4).

A folder saved by transformers' `save_pretrained` holds config.json and the weights in
model.safetensors (or in shards listed by model.safetensors.index.json). Loading maps the
config onto a `DecoderConfig` and renames the weights, with one change of layout: our
attention makes queries, keys and values with one linear layer, so `q_proj`, `k_proj` and
`v_proj` are stacked into `att.qkv`. Everything is checked before the model is built: the
architecture, every config value the family cannot express, every weight's name and shape.

HF's Llama rotates with the half-split convention (its checkpoints permute Meta's q and k
rows to match), and Qwen3 does too, so the loaded models use `rope_interleaved=False`.

The real weights, where the Hugging Face Hub is reachable (the Llama repository is gated):
    >>> from huggingface_hub import snapshot_download
    >>> model = from_hf_checkpoint(snapshot_download("Qwen/Qwen3-0.6B",
    ...                                              allow_patterns=["*.json", "*.safetensors"]))
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open

from .decoder import Decoder, DecoderConfig
from .modern import RopeScaling

__all__ = ["ARCHITECTURES", "config_from_hf", "from_hf_checkpoint", "hf_key_map",
           "load_hf_state_dict"]

ARCHITECTURES = ("LlamaForCausalLM", "Qwen3ForCausalLM")
_REQUIRED = ("vocab_size", "hidden_size", "num_attention_heads", "num_hidden_layers",
             "intermediate_size", "max_position_embeddings", "rms_norm_eps")


def _rope(hf: Mapping) -> tuple[float, RopeScaling | None]:
    """(theta, scaling) from either layout: transformers 5 writes `rope_parameters`, older
    files (the Hub's Llama 3.2) `rope_theta` and `rope_scaling` at the top level."""
    rope = {"rope_theta": hf.get("rope_theta", 10000.0), **(hf.get("rope_scaling") or {}),
            **(hf.get("rope_parameters") or {})}
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind == "default":
        return rope["rope_theta"], None
    if kind != "llama3":
        raise ValueError(f"config.json asks for rope type {kind!r}; Decoder has 'default' and "
                         f"'llama3' only")
    try:
        scaling = RopeScaling(rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"],
                              rope["original_max_position_embeddings"])
    except KeyError as err:
        raise ValueError(f"config.json's llama3 rope scaling lacks {err}: is the file complete?")\
            from None
    return rope["rope_theta"], scaling


def _check_expressible(hf: Mapping, architecture: str) -> None:
    """Refuse what a Decoder cannot compute the same way."""
    if missing := [key for key in _REQUIRED if hf.get(key) is None]:
        raise ValueError(f"config.json lacks {missing}: is it a complete {architecture} config?")
    if hf.get("hidden_act", "silu") != "silu":
        raise ValueError(f"config.json's hidden_act is {hf['hidden_act']!r}; Decoder's SwiGLU "
                         f"uses 'silu'")
    if hf.get("use_sliding_window") or set(hf.get("layer_types") or []) - {"full_attention"}:
        raise ValueError("config.json turns on sliding-window attention, which Decoder does "
                         "not have: to load it with full attention in every layer, set "
                         "use_sliding_window to false and remove layer_types")
    if hf.get("attention_dropout", 0.0):
        raise ValueError(f"config.json's attention_dropout is {hf['attention_dropout']}; "
                         f"Decoder's dropout differs in training: set it to 0.0 to load")


def config_from_hf(hf: Mapping) -> DecoderConfig:
    """Our config from a transformers Llama or Qwen3 config.json (as a dict)."""
    architecture = (hf.get("architectures") or [None])[0]
    if architecture not in ARCHITECTURES:
        raise ValueError(f"config.json describes {architecture!r}; this loader reads "
                         f"{', '.join(ARCHITECTURES)} (GPT-2: buildllm.gpt2)")
    _check_expressible(hf, architecture)
    theta, scaling = _rope(hf)
    bias = bool(hf.get("attention_bias", False))
    try:
        return DecoderConfig(
            vocab_size=hf["vocab_size"], context_length=hf["max_position_embeddings"],
            emb_dim=hf["hidden_size"], n_heads=hf["num_attention_heads"],
            n_kv_heads=hf.get("num_key_value_heads"), head_dim=hf.get("head_dim"),
            n_layers=hf["num_hidden_layers"], hidden_dim=hf["intermediate_size"],
            drop_rate=0.0, norm="rms", norm_eps=hf["rms_norm_eps"], positions="rope",
            rope_theta=theta, rope_scaling=scaling, mlp="swiglu",
            qk_norm=architecture == "Qwen3ForCausalLM", qkv_bias=bias, proj_bias=bias,
            mlp_bias=bool(hf.get("mlp_bias", False)),
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)))
    except ValueError as err:
        raise ValueError(f"config.json: {err}") from None


def hf_key_map(cfg: DecoderConfig) -> dict[str, tuple[str, ...]]:
    """Our parameter name -> the transformers names whose tensors it is (stacked on dim 0)."""
    names = {"tok_emb.weight": ("model.embed_tokens.weight",),
             "final_norm.weight": ("model.norm.weight",)}
    if not cfg.tie_embeddings:
        names["out_head.weight"] = ("lm_head.weight",)
    parts = {"norm1.weight": ["input_layernorm.weight"],
             "norm2.weight": ["post_attention_layernorm.weight"]}
    kinds = ["weight"] + ["bias"] * cfg.qkv_bias
    parts |= {f"att.qkv.{k}": [f"self_attn.{p}_proj.{k}" for p in "qkv"] for k in kinds}
    parts |= {f"att.out_proj.{k}": [f"self_attn.o_proj.{k}"]
              for k in ["weight"] + ["bias"] * cfg.proj_bias}
    if cfg.qk_norm:
        parts |= {f"att.{p}_norm.weight": [f"self_attn.{p}_norm.weight"] for p in "qk"}
    for ours in ("gate", "up", "down"):
        for k in ["weight"] + ["bias"] * cfg.mlp_bias:
            parts[f"ff.{ours}.{k}"] = [f"mlp.{ours}_proj.{k}"]
    for i in range(cfg.n_layers):
        names |= {f"trf_blocks.{i}.{ours}": tuple(f"model.layers.{i}.{hf}" for hf in theirs)
                  for ours, theirs in parts.items()}
    return names


def _expected_shapes(cfg: DecoderConfig) -> dict[str, tuple[int, ...]]:
    """Each transformers tensor's shape for `cfg`, read off a Decoder on the meta device
    (shapes without memory), the stacked q, k, v split by their sizes."""
    with torch.device("meta"):
        own = Decoder(cfg).state_dict()
    sizes = (cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim,
             cfg.n_kv_heads * cfg.head_dim)
    shapes = {}
    for ours, theirs in hf_key_map(cfg).items():
        pieces = own[ours].split(sizes) if len(theirs) == 3 else [own[ours]]
        shapes |= {hf: tuple(piece.shape) for hf, piece in zip(theirs, pieces, strict=True)}
    return shapes


def _check_shapes(cfg: DecoderConfig, given: Mapping[str, tuple[int, ...]],
                  source: str) -> None:
    """Every tensor the config needs is in `given` (name -> shape) with its shape, and no
    other, except lm_head.weight beside tied embeddings (the load checks it equals them)."""
    expected = _expected_shapes(cfg)
    missing = sorted(expected.keys() - given.keys())
    extra = sorted(given.keys() - expected.keys() - {"lm_head.weight"})
    if missing or extra:
        raise ValueError(f"{source} does not fit config.json ({cfg.n_layers} layers): missing "
                         f"{missing[:3]}{' ...' if len(missing) > 3 else ''}, unexpected "
                         f"{extra[:3]}{' ...' if len(extra) > 3 else ''}; are both files "
                         f"from the same checkpoint?")
    for name, shape in expected.items():
        if tuple(given[name]) != shape:
            raise ValueError(f"{name} in {source} has shape {tuple(given[name])}, but "
                             f"config.json needs {shape}; are both files from the same "
                             f"checkpoint?")


def load_hf_state_dict(model: Decoder, state_dict: Mapping[str, torch.Tensor]) -> Decoder:
    """Copy transformers' Llama/Qwen3 tensors into `model`, checking every name and shape."""
    cfg = model.cfg
    _check_shapes(cfg, {k: tuple(v.shape) for k, v in state_dict.items()}, "the state dict")
    if "lm_head.weight" in state_dict and cfg.tie_embeddings and not torch.equal(
            state_dict["lm_head.weight"], state_dict["model.embed_tokens.weight"]):
        raise ValueError("lm_head.weight differs from model.embed_tokens.weight, but "
                         "config.json ties them (tie_word_embeddings)")
    ours = {name: torch.cat([state_dict[hf] for hf in theirs])
            for name, theirs in hf_key_map(cfg).items()}
    if cfg.tie_embeddings:
        ours["out_head.weight"] = ours["tok_emb.weight"]
    model.load_state_dict(ours)
    return model


def _weight_files(folder: Path) -> list[Path]:
    """model.safetensors, or the shards its index lists; a clear error if neither is there."""
    index = folder / "model.safetensors.index.json"
    if (folder / "model.safetensors").is_file():
        return [folder / "model.safetensors"]
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text("utf-8")).get("weight_map", {}).values()))
        if not shards:
            raise ValueError(f"{index} has no weight_map: download it again")
        if absent := [s for s in shards if not (folder / s).is_file()]:
            raise ValueError(f"{index} lists {absent[0]}, which is not in {folder}: download "
                             f"every shard")
        return [folder / s for s in shards]
    raise ValueError(f"no model.safetensors or model.safetensors.index.json in {folder}: save "
                     f"it with save_pretrained(folder, safe_serialization=True)")


def from_hf_checkpoint(folder: str | os.PathLike) -> Decoder:
    """A Decoder, in eval mode, from a transformers Llama or Qwen3 folder: config.json and
    model.safetensors (or its shards). Nothing is built until the files are checked."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ValueError(f"no config.json in {folder}: give the folder save_pretrained wrote "
                         f"(or snapshot_download returned)")
    cfg = config_from_hf(json.loads((folder / "config.json").read_text("utf-8")))
    files = _weight_files(folder)
    shapes = {}
    for file in files:
        with safe_open(file, "pt") as f:
            shapes |= {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    _check_shapes(cfg, shapes, files[0].name)
    tensors = {}
    for file in files:
        with safe_open(file, "pt") as f:
            tensors |= {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    return load_hf_state_dict(Decoder(cfg), tensors).eval()
