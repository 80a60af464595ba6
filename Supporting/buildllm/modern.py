"""The pieces of today's decoder block, after GPT-2 (Meeting 4, bonus).

Llama 3 and Qwen3 keep GPT-2's plan, a pre-norm stack of attention and feed-forward blocks,
and change four pieces. Each is small, and each is here on its own, so that a notebook can
build it, compare it with what it replaces, and check it against transformers:

    RMSNorm                LayerNorm without the mean and the shift: scale by 1/RMS(x) only
    RotaryEmbedding        positions as rotations of query and key pairs (RoPE), instead of
                           a learned vector added to the input, so scores see offsets
    SwiGLU                 a gated feed-forward: down(silu(gate(x)) · up(x))
    GroupedQueryAttention  fewer key/value heads than query heads (GQA; one is MQA), a
                           smaller KV cache; optional QK-norm (RMSNorm on q and k, Qwen3)

Shapes: x is (batch, tokens, emb_dim); queries per head are (batch, heads, tokens,
head_dim), keys and values (batch, kv_heads, tokens, head_dim). `buildllm.decoder`
assembles the pieces into a model from a config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import MultiHeadAttention, attend

__all__ = [
    "GroupedQueryAttention",
    "RMSNorm",
    "RopeScaling",
    "RotaryEmbedding",
    "SwiGLU",
    "apply_rope",
    "rope_frequencies",
    "rope_tables",
]


class RMSNorm(nn.Module):
    """x / RMS(x) · weight, where RMS(x) = √(mean(x²) + eps) over the last dimension.

    LayerNorm subtracts the mean, divides by the standard deviation, then scales and shifts.
    Zhang and Sennrich (2019) found that the re-centring and the shift can go: dividing by
    the root mean square alone trains as well, with one statistic instead of two and half the
    parameters. The arithmetic runs in float32 whatever x's dtype, as in Llama.

    >>> RMSNorm(2)(torch.tensor([3.0, 4.0]))                 # RMS = √12.5
    tensor([0.8485, 1.1314], grad_fn=<MulBackward0>)
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


# -- rotary position embeddings ----------------------------------------------------------

@dataclass(frozen=True)
class RopeScaling:
    """Llama 3's "llama3" rescaling of the rotary frequencies, for contexts longer than the
    `original_context_length` the model was first trained on. The defaults are Llama 3.2's.

    Slow rotations, whose wavelength is longer than original / low_freq_factor tokens, are
    slowed down `factor` times more, so far positions look like the near ones training saw;
    fast rotations, shorter than original / high_freq_factor, are kept, since they only tell
    near tokens apart; those in between are blended linearly in 1 / wavelength.
    """

    factor: float = 32.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_context_length: int = 8192

    def __post_init__(self):
        if not self.factor >= 1 or not 0 < self.low_freq_factor < self.high_freq_factor:
            raise ValueError(f"RopeScaling needs factor >= 1 and 0 < low_freq_factor < "
                             f"high_freq_factor, got {self}")
        if not isinstance(self.original_context_length, int) or self.original_context_length < 1:
            raise ValueError(f"original_context_length must be a positive integer, got "
                             f"{self.original_context_length!r}")


def rope_frequencies(head_dim: int, theta: float = 10000.0,
                     scaling: RopeScaling | None = None) -> torch.Tensor:
    """The rotation speed of each pair of features, in radians per position: (head_dim / 2,).

    Pair i turns by theta^(-2i / head_dim) per position (Su et al. 2021): the first pair a
    full radian, the last almost not at all, like the hands of a clock. Llama 3 uses theta
    500000 and Qwen3 1000000, to keep slow hands for long contexts.

    >>> rope_frequencies(4, theta=100.0)
    tensor([1.0000, 0.1000])
    """
    if head_dim % 2:
        raise ValueError(f"rotary embeddings rotate pairs of features: head_dim must be even, "
                         f"got {head_dim}")
    frequencies = 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim)
    if scaling is None:
        return frequencies
    s = scaling
    wavelength = 2 * math.pi / frequencies  # tokens per full turn
    slow = wavelength > s.original_context_length / s.low_freq_factor
    fast = wavelength < s.original_context_length / s.high_freq_factor
    # 0 at the slow end of the middle band, 1 at its fast end
    blend = (s.original_context_length / wavelength - s.low_freq_factor) / (
        s.high_freq_factor - s.low_freq_factor)
    middle = (1 - blend) * frequencies / s.factor + blend * frequencies
    return torch.where(slow, frequencies / s.factor, torch.where(fast, frequencies, middle))


def rope_tables(positions: torch.Tensor,
                frequencies: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of every position's angle for every pair: position × frequency.

    `positions` is (tokens,), shared by every row, or (batch, tokens), one row each (padded
    rows count real tokens only). The tables are (tokens, head_dim / 2) or (batch, 1, tokens,
    head_dim / 2): either broadcasts over (batch, heads, tokens, head_dim / 2).
    """
    angles = positions.float()[..., None] * frequencies.float()  # (…, tokens, head_dim / 2)
    if positions.ndim == 2:
        angles = angles[:, None]  # room for the heads
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
               interleaved: bool = False) -> torch.Tensor:
    """Rotate each pair of x's features (…, tokens, head_dim) by its angle, given by `cos` and
    `sin` (`rope_tables`): (a, b) -> (a·cos − b·sin, a·sin + b·cos).

    Which features form a pair is a convention. Half-split (HF Llama, Qwen3, GPT-NeoX) pairs
    feature i with i + head_dim/2; interleaved (Meta's original Llama, RoFormer) pairs 2i
    with 2i+1. Both compute the same attention scores once q's and k's features are put in
    the matching order, which is what converting Meta's checkpoints to HF's does.
    """
    if interleaved:
        a, b = x[..., 0::2], x[..., 1::2]
    else:
        a, b = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    turned = (a * cos - b * sin, a * sin + b * cos)
    if interleaved:
        return torch.stack(turned, dim=-1).flatten(-2)  # back to pairs (2i, 2i+1)
    return torch.cat(turned, dim=-1)


class RotaryEmbedding(nn.Module):
    """Rotary position embeddings (RoPE) for queries and keys of one head size.

    Instead of adding a position vector to the input, rotate each query and key by an angle
    proportional to its position. A query at m and a key at n then score q·R(n−m)·k: only
    their offset matters, whatever the absolute positions, and no weights are learned.

    >>> rope = RotaryEmbedding(64, theta=500000.0, scaling=RopeScaling())
    >>> q, k = rope(q, k, positions)                      # same shapes, rotated
    """

    def __init__(self, head_dim: int, theta: float = 10000.0,
                 scaling: RopeScaling | None = None, interleaved: bool = False):
        super().__init__()
        self.interleaved, self.settings = interleaved, (head_dim, theta, scaling)
        # A constant computed from the settings, not a weight: not saved with the weights.
        self.register_buffer("frequencies", rope_frequencies(*self.settings), persistent=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor,
                positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q (batch, heads, tokens, head_dim) and k (batch, kv_heads, tokens, head_dim), each
        rotated by its token's position; `positions` as in `rope_tables`."""
        if self.frequencies.dtype != torch.float32:  # the model was cast, e.g. to bfloat16:
            # rounded frequencies would put far positions at the wrong angles
            self.frequencies = rope_frequencies(*self.settings).to(self.frequencies.device)
        cos, sin = rope_tables(positions, self.frequencies)
        return apply_rope(q, cos, sin, self.interleaved), apply_rope(k, cos, sin, self.interleaved)


# -- the gated feed-forward --------------------------------------------------------------

class SwiGLU(nn.Module):
    """down(silu(gate(x)) · up(x)): a feed-forward whose hidden units are switched by a gate.

    GPT-2's MLP is down(gelu(up(x))). SwiGLU (Shazeer 2020) adds a second input projection
    whose SiLU-activated output multiplies the first, feature by feature. It has three
    matrices instead of two, so at equal parameters the hidden size is 2/3 of 4·emb_dim.

    >>> SwiGLU(emb_dim=64, hidden_dim=172)(torch.randn(2, 5, 64)).shape
    torch.Size([2, 5, 64])
    """

    def __init__(self, emb_dim: int, hidden_dim: int, bias: bool = False):
        super().__init__()
        self.gate = nn.Linear(emb_dim, hidden_dim, bias=bias)
        self.up = nn.Linear(emb_dim, hidden_dim, bias=bias)
        self.down = nn.Linear(hidden_dim, emb_dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


# -- attention ---------------------------------------------------------------------------

class GroupedQueryAttention(nn.Module):
    """Causal attention with `n_heads` query heads sharing `n_kv_heads` key/value heads.

    Each group of n_heads / n_kv_heads query heads reads the same keys and values:
    n_kv_heads = n_heads is ordinary multi-head attention (GPT-2), 1 is multi-query attention,
    in between is grouped-query attention (Llama 3: 32 and 8). The KV cache then stores only
    n_kv_heads heads, n_heads / n_kv_heads times less memory per token; the heads are repeated
    for their groups after the cache is read.

    `head_dim` need not be emb_dim / n_heads (Qwen3-0.6B: 16 heads of 128 in a 1024-wide
    model). `qk_norm` puts an RMSNorm over head_dim on each query and key, before RoPE, as
    Qwen3 does, which keeps attention scores from growing large. `rope` rotates q and k by
    their positions; without it the model must add positions to its input (GPT-2).

    The call is `attention.MultiHeadAttention`'s, `(x, cache, layer, mask)`, plus the tokens'
    `positions` (default: the next ones after those in the cache), which only RoPE reads.
    One linear layer, `qkv`, makes queries, keys and values: its weight is the three matrices
    stacked, n_heads·head_dim rows for the queries, then n_kv_heads·head_dim for the keys and
    for the values.
    """

    def __init__(self, emb_dim: int, n_heads: int, n_kv_heads: int | None = None,
                 head_dim: int | None = None, *, dropout: float = 0.0, qkv_bias: bool = False,
                 proj_bias: bool = False, qk_norm: bool = False, norm_eps: float = 1e-6,
                 rope: RotaryEmbedding | None = None):
        super().__init__()
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        head_dim = emb_dim // n_heads if head_dim is None else head_dim
        if n_kv_heads < 1 or n_heads % n_kv_heads:
            raise ValueError(f"n_heads={n_heads} must be a multiple of n_kv_heads={n_kv_heads}: "
                             f"each key/value head serves a group of query heads")
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.dropout = dropout
        self.sizes = (n_heads * head_dim, n_kv_heads * head_dim, n_kv_heads * head_dim)
        self.qkv = nn.Linear(emb_dim, sum(self.sizes), bias=qkv_bias)
        self.out_proj = nn.Linear(n_heads * head_dim, emb_dim, bias=proj_bias)
        self.q_norm = RMSNorm(head_dim, norm_eps) if qk_norm else None
        self.k_norm = RMSNorm(head_dim, norm_eps) if qk_norm else None
        self.rope = rope

    def forward(self, x: torch.Tensor, cache=None, layer: int = 0,
                mask: torch.Tensor | None = None,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        """Attend over `x`, and over the earlier tokens in `cache` (a KVCache) if given."""
        b, n, _ = x.shape
        q, k, v = self.qkv(x).split(self.sizes, dim=-1)
        q = q.view(b, n, self.n_heads, self.head_dim).transpose(1, 2)  # (b, heads, n, hd)
        k = k.view(b, n, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (b, kv_heads, n, hd)
        v = v.view(b, n, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None:
            if positions is None:
                start = 0 if cache is None else cache.length
                positions = torch.arange(start, start + n, device=x.device)
            q, k = self.rope(q, k, positions)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # the cache holds n_kv_heads heads, rotated
        group = self.n_heads // self.n_kv_heads
        if group > 1:  # kv head j serves query heads j·group ... (j+1)·group − 1
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        out = attend(q, k, v, mask, self.dropout if self.training else 0.0)
        return self.out_proj(MultiHeadAttention.merge_heads(out))

    def extra_repr(self) -> str:
        return f"n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads}, head_dim={self.head_dim}"
