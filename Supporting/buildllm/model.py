"""The GPT-2 architecture (Meeting 4): blocks, the model, its configurations and its costs.

    ids -> token + position embeddings -> dropout
        -> n_layers × [x + attention(LayerNorm(x)), then x + feed_forward(LayerNorm(x))]
        -> LayerNorm -> linear layer to one logit per vocabulary entry

Names follow the book (tok_emb, trf_blocks, norm1, att, ff, final_norm, out_head), with
GPT-2's choices: biases in the query/key/value layer, LayerNorm epsilon 1e-5, the tanh
approximation of GELU, and an output layer that shares its weight with the token embedding.
`buildllm.gpt2` loads OpenAI's weights into it. Meeting 7 adds an optional attention mask,
so that prompts of different lengths can share a batch (`buildllm.inference`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from .attention import MultiHeadAttention, padding_causal_mask

__all__ = [
    "CONFIGS",
    "GELU",
    "FeedForward",
    "GPTConfig",
    "GPTModel",
    "LayerNorm",
    "TransformerBlock",
    "count_parameters",
    "forward_flops_per_token",
    "positions_and_mask",
    "with_dropout",
]


@dataclass(frozen=True)
class GPTConfig:
    """The numbers that define a GPT-2-style model. The defaults are GPT-2 small (124M)."""

    vocab_size: int = 50257
    context_length: int = 1024
    emb_dim: int = 768
    n_heads: int = 12
    n_layers: int = 12
    drop_rate: float = 0.1
    qkv_bias: bool = True
    tie_embeddings: bool = True  # GPT-2's output layer reuses the token embedding matrix

    def __post_init__(self):
        for name in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.emb_dim % self.n_heads:
            raise ValueError(
                f"emb_dim={self.emb_dim} is not divisible by n_heads={self.n_heads}: each head "
                f"gets emb_dim / n_heads dimensions"
            )
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {self.drop_rate}")

    @property
    def head_dim(self) -> int:
        return self.emb_dim // self.n_heads

    @property
    def n_kv_heads(self) -> int:
        """Heads of keys and values, what a KVCache stores: in GPT-2, one per query head."""
        return self.n_heads


CONFIGS = {
    # OpenAI's four GPT-2 sizes (Radford et al. 2019, table 2; parameter counts with tying).
    "124M": GPTConfig(),
    "355M": GPTConfig(emb_dim=1024, n_layers=24, n_heads=16),
    "774M": GPTConfig(emb_dim=1280, n_layers=36, n_heads=20),
    "1558M": GPTConfig(emb_dim=1600, n_layers=48, n_heads=25),
    # Small enough to train for real on a laptop CPU in minutes (Meetings 5 to 7).
    "cpu-tiny": GPTConfig(context_length=128, emb_dim=128, n_heads=4, n_layers=4),
    "cpu-small": GPTConfig(context_length=256, emb_dim=256, n_heads=4, n_layers=6),
}


class LayerNorm(nn.Module):
    """Normalize each token's vector to mean 0 and variance 1, then scale and shift.

    Meeting 4's notebook writes this out with mean and var; here F.layer_norm does the same
    arithmetic in one fused call. Parameter names follow the book: `scale` and `shift`.
    """

    def __init__(self, emb_dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.scale.shape, self.scale, self.shift, self.eps)


class GELU(nn.Module):
    """GELU with GPT-2's tanh approximation: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate="tanh")


class FeedForward(nn.Module):
    """Per token: widen 4×, GELU, narrow back. Two thirds of a block's parameters live here."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(cfg.emb_dim, 4 * cfg.emb_dim), GELU(), nn.Linear(4 * cfg.emb_dim, cfg.emb_dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attention(norm(x)), then x + feed_forward(norm(x))."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.norm1 = LayerNorm(cfg.emb_dim)
        self.att = MultiHeadAttention(cfg.emb_dim, cfg.emb_dim, cfg.context_length,
                                      cfg.drop_rate, cfg.n_heads, cfg.qkv_bias)
        self.norm2 = LayerNorm(cfg.emb_dim)
        self.ff = FeedForward(cfg)
        self.drop_shortcut = nn.Dropout(cfg.drop_rate)

    def forward(self, x: torch.Tensor, cache=None, layer: int = 0,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop_shortcut(self.att(self.norm1(x), cache, layer, mask))
        return x + self.drop_shortcut(self.ff(self.norm2(x)))


class GPTModel(nn.Module):
    """GPT-2: token ids (batch, tokens) in, next-token logits (batch, tokens, vocab) out."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.emb_dim)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        self.trf_blocks = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
        self.final_norm = LayerNorm(cfg.emb_dim)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith(("att.out_proj.weight", "ff.layers.2.weight")):
                # GPT-2 scales the layers that write into the residual stream by 1/√(2·layers),
                # so the stream's variance does not grow with depth at initialization.
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layers))
        for module in self.trf_blocks.modules():
            if isinstance(module, nn.Linear):
                module.weight = _stored_transposed(module.weight)
        if cfg.tie_embeddings:
            self.out_head.weight = self.tok_emb.weight

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, ids: torch.Tensor, cache=None, attention_mask: torch.Tensor | None = None,
                *, keep: torch.Tensor | None = None, hidden: bool = False) -> torch.Tensor:
        """Logits for every position. With a KVCache, `ids` continue the tokens it holds.

        The output layer is most of a small GPT's work, so, as in nanoGPT, two options skip
        some or all of it: `keep`, a boolean (batch, tokens) tensor, gives only the kept
        positions' logits, `model(ids)[keep]`, shape (kept, vocab); `hidden=True` gives the
        final LayerNorm's outputs (batch, tokens, emb_dim), what the output layer would read.

        `attention_mask` lets rows of different lengths share a batch (Meeting 7). It has shape
        (batch, cached + new tokens), True (or 1) at real tokens and False (0) at padding, and
        covers the cached tokens too. No token then attends to padding, and positions count
        real tokens only: a row's first real token is at position 0, however much padding
        comes before it. Rows padded on the left get exactly their unpadded logits (up to
        float rounding); the logits at padding positions mean nothing.
        """
        start = 0 if cache is None else cache.length
        positions, mask = positions_and_mask(ids, start, self.cfg.context_length, attention_mask)
        x = self.drop_emb(self.tok_emb(ids) + self.pos_emb(positions))
        for layer, block in enumerate(self.trf_blocks):
            x = block(x, cache, layer, mask)
        if cache is not None:
            cache.length += ids.shape[1]
        x = self.final_norm(x)
        if hidden:
            return x
        return self.out_head(x if keep is None else x[keep])


def positions_and_mask(ids: torch.Tensor, start: int, context_length: int,
                       attention_mask: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Each new token's position, and the attention mask, for `ids` after `start` cached tokens.

    Without `attention_mask`: positions start, start+1, ... (tokens,), and no mask (plain
    causal attention). With it: positions count the real tokens before each one in its row
    (batch, tokens), and the mask is `padding_causal_mask`'s (batch, 1, tokens, start +
    tokens). Every model of the course calls it, so all of them check lengths, mask padding
    and number positions the same way.
    """
    n, limit = ids.shape[1], context_length
    if start + n > limit:
        cached = f" ({start} cached)" if start else ""
        raise ValueError(f"{start + n} tokens{cached} exceed the context length {limit}: "
                         f"crop the input, e.g. ids[:, -{limit}:]")
    mask = None
    if attention_mask is None:
        positions = torch.arange(start, start + n, device=ids.device)
    else:
        if attention_mask.shape != (ids.shape[0], start + n):
            raise ValueError(
                f"attention_mask must have shape (batch, cached + new tokens) = "
                f"({ids.shape[0]}, {start + n}), got {tuple(attention_mask.shape)}")
        real = attention_mask.bool()
        # Each token's position is the number of real tokens before it in its row.
        positions = (real.cumsum(dim=1) - 1).clamp(min=0)[:, start:]  # (batch, n)
        mask = padding_causal_mask(real, n)  # (batch, 1, n, start + n)
    return positions, mask


def _stored_transposed(weight: nn.Parameter) -> nn.Parameter:
    """The same (out, in) matrix, laid out in memory as (in, out), the way GPT-2's files store it.

    Generating a token multiplies one vector by every weight matrix, and with PyTorch's CPU
    BLAS that runs about 20% faster from this layout (Meeting-4's notebook 03 measures it).
    The shape, the values and `x @ weight.T` are unchanged; only the strides differ: (1, out)
    instead of (in, 1). Optimizers, `load_state_dict` and `.to()` keep them. The embedding
    matrix stays as it is: its lookups and training are faster row by row.
    """
    return nn.Parameter(weight.detach().t().contiguous().t())


def with_dropout(model: GPTModel, rate: float) -> GPTModel:
    """`model` itself if its dropout rate is `rate`, else its weights in a model built with `rate`.

    GPT-2 was pretrained with dropout 0.1, and the book fine-tunes it with none (Meeting 6).
    The rate is part of the config each layer was built from, so changing it means building
    the model again. The copy is in eval mode, on the device the weights are on.

    >>> with_dropout(GPTModel(CONFIGS["cpu-tiny"]), 0.0).cfg.drop_rate
    0.0
    """
    if rate == model.cfg.drop_rate:
        return model
    fresh = GPTModel(replace(model.cfg, drop_rate=rate))
    fresh.load_state_dict(model.state_dict())
    return fresh.to(next(model.parameters()).device).eval()


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters; a weight shared by two layers (tied embeddings) counts once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def forward_flops_per_token(cfg: GPTConfig, context: int | None = None) -> int:
    """Multiply-add FLOPs (2 per multiply-accumulate) of one forward pass, per token.

    Counts the matrix multiplications, which are nearly all of the work: per layer the
    query/key/value, output and feed-forward layers (2·12·d² together for GPT-2), attention
    scores and the weighted sum over `context` earlier tokens (2·2·context·d), and the output
    layer (2·d·vocab). Embedding lookups, norms and softmax are left out. Training costs about
    3× this (the backward pass is twice the forward), hence the "6·N per token" rule.

    A `decoder.DecoderConfig` counts its own shapes: grouped-query attention's smaller key and
    value projections (n_kv_heads · head_dim each), SwiGLU's three matrices of hidden_dim; an
    untied output layer costs what a tied one does. A GPTConfig has neither field, so GPT-2's
    shapes (4·d hidden, two matrices) are the defaults.
    """
    n_ctx = cfg.context_length if context is None else context
    d, q, kv = cfg.emb_dim, cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    hidden = getattr(cfg, "hidden_dim", 4 * d)
    mlp_matrices = 3 if getattr(cfg, "mlp", "gelu") == "swiglu" else 2
    weights = d * (q + 2 * kv) + q * d + mlp_matrices * d * hidden
    per_layer = 2 * weights + 2 * 2 * n_ctx * q
    return cfg.n_layers * per_layer + 2 * d * cfg.vocab_size
