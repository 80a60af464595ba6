"""A decoder family built from a config: GPT-2, Llama 3 and Qwen3 as choices (bonus, Meeting 4).

    ids -> token embeddings (+ learned positions, GPT-2 only) -> dropout
        -> n_layers × [x + attention(norm(x)), then x + feed_forward(norm(x))]
        -> norm -> linear layer to one logit per vocabulary entry

The plan is GPT-2's (`buildllm.model`); `DecoderConfig` chooses each piece (`buildllm.modern`):
LayerNorm or RMSNorm, learned or rotary positions, GELU or SwiGLU feed-forward, how many
key/value heads, QK-norm, biases, tied or untied embeddings. The GPT-2 configs with
GPTModel's weights give GPTModel's logits; `buildllm.hf_decoder` loads transformers' Llama
and Qwen3 files into it. A `Decoder` keeps GPTModel's names (`cfg`, `tok_emb`,
`trf_blocks`, `final_norm`, `out_head`) and its `forward`, so generation, batching, serving,
LoRA and classification run it unchanged.

    >>> model = Decoder(CONFIGS["llama3-cpu-tiny"])
    >>> generate(model, ids, 20)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .model import CONFIGS as GPT_CONFIGS
from .model import GELU, GPTConfig, GPTModel, LayerNorm, _stored_transposed, positions_and_mask
from .modern import GroupedQueryAttention, RMSNorm, RopeScaling, RotaryEmbedding, SwiGLU

__all__ = ["CONFIGS", "Decoder", "DecoderBlock", "DecoderConfig", "GELUFeedForward",
           "swiglu_hidden_dim"]

_CHOICES = {"norm": ("layer", "rms"), "positions": ("learned", "rope"), "mlp": ("gelu", "swiglu")}


@dataclass(frozen=True)
class DecoderConfig:
    """The numbers and choices that define a decoder. The defaults are GPT-2 small (124M).

    `n_kv_heads`, `head_dim` and `hidden_dim` default (None) to n_heads, emb_dim / n_heads
    and 4·emb_dim, and are filled in when the config is made; `dataclasses.replace` keeps
    the filled-in values, so pass them as None again when changing emb_dim or n_heads.
    """

    vocab_size: int = 50257
    context_length: int = 1024
    emb_dim: int = 768
    n_heads: int = 12
    n_layers: int = 12
    drop_rate: float = 0.1
    n_kv_heads: int | None = None  # key/value heads: n_heads is MHA, 1 is MQA, between is GQA
    head_dim: int | None = None  # features per head
    hidden_dim: int | None = None  # the feed-forward's hidden size
    norm: str = "layer"  # "layer" (LayerNorm, GPT-2) or "rms" (RMSNorm)
    norm_eps: float = 1e-5
    positions: str = "learned"  # "learned" (GPT-2) or "rope"
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None  # Llama 3's long-context frequency scaling
    rope_interleaved: bool = False  # pairs (2i, 2i+1) instead of (i, i + head_dim/2)
    mlp: str = "gelu"  # "gelu" (GPT-2) or "swiglu"
    qk_norm: bool = False  # RMSNorm on each query and key head (Qwen3)
    qkv_bias: bool = True  # biases in the query, key and value projections
    proj_bias: bool = True  # a bias in the attention's output projection
    mlp_bias: bool = True  # biases in the feed-forward
    tie_embeddings: bool = True  # the output layer reuses the token embedding matrix

    def __post_init__(self):
        for name in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"):
            _check_positive(name, getattr(self, name))
        defaults = {"n_kv_heads": self.n_heads, "hidden_dim": 4 * self.emb_dim}
        if self.emb_dim % self.n_heads == 0:
            defaults["head_dim"] = self.emb_dim // self.n_heads
        for name, value in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        self._check()

    def _check(self) -> None:
        if self.head_dim is None:
            raise ValueError(f"emb_dim={self.emb_dim} is not divisible by n_heads={self.n_heads}: "
                             f"give head_dim, the features per head, explicitly")
        for name in ("n_kv_heads", "head_dim", "hidden_dim"):
            _check_positive(name, getattr(self, name))
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} must be a multiple of n_kv_heads="
                             f"{self.n_kv_heads}: each key/value head serves a group of query "
                             f"heads")
        if self.positions == "rope" and self.head_dim % 2:
            raise ValueError(f"rotary positions rotate pairs of features: head_dim must be even, "
                             f"got {self.head_dim}")
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {self.drop_rate}")
        if not (self.norm_eps > 0 and self.rope_theta > 0):
            raise ValueError(f"norm_eps and rope_theta must be positive, got {self.norm_eps} "
                             f"and {self.rope_theta}")

    @classmethod
    def from_gpt(cls, cfg: GPTConfig) -> DecoderConfig:
        """GPT-2's architecture as a DecoderConfig: a Decoder built from it loads GPTModel's
        weights (`decoder.load_state_dict(gpt.state_dict())`) and computes the same logits."""
        return cls(vocab_size=cfg.vocab_size, context_length=cfg.context_length,
                   emb_dim=cfg.emb_dim, n_heads=cfg.n_heads, n_layers=cfg.n_layers,
                   drop_rate=cfg.drop_rate, qkv_bias=cfg.qkv_bias,
                   tie_embeddings=cfg.tie_embeddings)


def _check_positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def swiglu_hidden_dim(emb_dim: int, multiple_of: int = 8) -> int:
    """The SwiGLU hidden size with GPT-2's feed-forward parameters: 2/3 · 4 · emb_dim (three
    matrices instead of two), rounded up to a multiple of `multiple_of`, as Llama does.

    >>> swiglu_hidden_dim(768)
    2048
    """
    return multiple_of * math.ceil(8 * emb_dim / 3 / multiple_of)


def _llama3(**changes) -> DecoderConfig:
    """A Llama-3-style config: RoPE (theta 500000), RMSNorm, SwiGLU, GQA, no biases."""
    return DecoderConfig(**{"drop_rate": 0.0, "norm": "rms", "positions": "rope",
                            "rope_theta": 500000.0, "mlp": "swiglu", "qkv_bias": False,
                            "proj_bias": False, "mlp_bias": False, **changes})


def _qwen3(**changes) -> DecoderConfig:
    """A Qwen3-style config: Llama 3's, with QK-norm and RoPE theta 1000000."""
    return _llama3(**{"rope_theta": 1000000.0, "qk_norm": True, "norm_eps": 1e-6, **changes})


_CPU_TINY = {"context_length": 128, "emb_dim": 128, "n_heads": 4, "n_layers": 4}
_CPU_SMALL = {"context_length": 256, "emb_dim": 256, "n_heads": 4, "n_layers": 6}

CONFIGS = {
    # GPTModel's configs (model.CONFIGS: GPT-2's four sizes and the CPU ones), as decoders.
    **{f"gpt2-{name}": DecoderConfig.from_gpt(cfg) for name, cfg in GPT_CONFIGS.items()},
    # The same CPU sizes with today's pieces, at about the same number of parameters.
    "llama3-cpu-tiny": _llama3(**_CPU_TINY, n_kv_heads=2, hidden_dim=swiglu_hidden_dim(128)),
    "llama3-cpu-small": _llama3(**_CPU_SMALL, n_kv_heads=2, hidden_dim=swiglu_hidden_dim(256)),
    "qwen3-cpu-tiny": _qwen3(**_CPU_TINY, n_kv_heads=2, hidden_dim=swiglu_hidden_dim(128)),
    "qwen3-cpu-small": _qwen3(**_CPU_SMALL, n_kv_heads=2, hidden_dim=swiglu_hidden_dim(256)),
    # The real shapes (config.json of meta-llama/Llama-3.2-1B and Qwen/Qwen3-0.6B).
    "llama3.2-1B": _llama3(vocab_size=128256, context_length=131072, emb_dim=2048, n_heads=32,
                           n_kv_heads=8, head_dim=64, n_layers=16, hidden_dim=8192,
                           rope_scaling=RopeScaling(), tie_embeddings=True),
    "qwen3-0.6B": _qwen3(vocab_size=151936, context_length=40960, emb_dim=1024, n_heads=16,
                         n_kv_heads=8, head_dim=128, n_layers=28, hidden_dim=3072,
                         tie_embeddings=True),
}


class GELUFeedForward(nn.Module):
    """GPT-2's feed-forward (`model.FeedForward`), its hidden size and biases chosen."""

    def __init__(self, emb_dim: int, hidden_dim: int, bias: bool = True):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(emb_dim, hidden_dim, bias=bias), GELU(),
                                    nn.Linear(hidden_dim, emb_dim, bias=bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _norm(cfg: DecoderConfig, dim: int) -> nn.Module:
    return LayerNorm(dim, cfg.norm_eps) if cfg.norm == "layer" else RMSNorm(dim, cfg.norm_eps)


class DecoderBlock(nn.Module):
    """Pre-norm block: x + attention(norm(x)), then x + feed_forward(norm(x))."""

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        rope = None
        if cfg.positions == "rope":
            rope = RotaryEmbedding(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling,
                                   cfg.rope_interleaved)
        self.norm1 = _norm(cfg, cfg.emb_dim)
        self.att = GroupedQueryAttention(
            cfg.emb_dim, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, dropout=cfg.drop_rate,
            qkv_bias=cfg.qkv_bias, proj_bias=cfg.proj_bias, qk_norm=cfg.qk_norm,
            norm_eps=cfg.norm_eps, rope=rope)
        self.norm2 = _norm(cfg, cfg.emb_dim)
        if cfg.mlp == "swiglu":
            self.ff = SwiGLU(cfg.emb_dim, cfg.hidden_dim, cfg.mlp_bias)
        else:
            self.ff = GELUFeedForward(cfg.emb_dim, cfg.hidden_dim, cfg.mlp_bias)
        self.drop_shortcut = nn.Dropout(cfg.drop_rate)

    def forward(self, x: torch.Tensor, cache=None, layer: int = 0,
                mask: torch.Tensor | None = None,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop_shortcut(self.att(self.norm1(x), cache, layer, mask, positions))
        return x + self.drop_shortcut(self.ff(self.norm2(x)))


# The layers that write into the residual stream: initialized smaller, as in GPTModel.
_RESIDUAL_OUTPUTS = ("att.out_proj.weight", "ff.layers.2.weight", "ff.down.weight")


class Decoder(nn.Module):
    """A decoder-only transformer: token ids (batch, tokens) in, logits (batch, tokens, vocab)
    out. With a GPT-2 config it is GPTModel; with `CONFIGS["llama3.2-1B"]`, Llama 3.2's shape.
    """

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.pos_emb = None
        if cfg.positions == "learned":
            self.pos_emb = nn.Embedding(cfg.context_length, cfg.emb_dim)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        self.trf_blocks = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.n_layers))
        self.final_norm = _norm(cfg, cfg.emb_dim)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        self.apply(GPTModel._init_weights)  # normal(0, 0.02), zero biases; norms start at 1
        for name, p in self.named_parameters():
            if name.endswith(_RESIDUAL_OUTPUTS):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layers))
        for module in self.trf_blocks.modules():
            if isinstance(module, nn.Linear):  # the layout GPTModel uses, for the same speed
                module.weight = _stored_transposed(module.weight)
        if cfg.tie_embeddings:
            self.out_head.weight = self.tok_emb.weight

    def forward(self, ids: torch.Tensor, cache=None, attention_mask: torch.Tensor | None = None,
                *, keep: torch.Tensor | None = None, hidden: bool = False) -> torch.Tensor:
        """Logits for every position; the arguments and rules are `GPTModel.forward`'s.

        With a KVCache, `ids` continue the tokens it holds. `attention_mask` (batch, cached +
        new tokens), True at real tokens, lets padded rows share a batch; positions count
        real tokens only, for learned positions and RoPE alike. `keep` gives only the kept
        positions' logits (kept, vocab); `hidden=True` the final norm's outputs instead.
        """
        start = 0 if cache is None else cache.length
        positions, mask = positions_and_mask(ids, start, self.cfg.context_length, attention_mask)
        x = self.tok_emb(ids)
        if self.pos_emb is not None:
            x = x + self.pos_emb(positions)
        x = self.drop_emb(x)
        for layer, block in enumerate(self.trf_blocks):
            x = block(x, cache, layer, mask, positions)
        if cache is not None:
            cache.length += ids.shape[1]
        x = self.final_norm(x)
        if hidden:
            return x
        return self.out_head(x if keep is None else x[keep])
