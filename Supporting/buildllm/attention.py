"""Self-attention, from one head written out to the batched causal module GPT-2 uses (Meeting 3).

The variants are kept side by side because each is the previous one plus one idea, and the
tests and the benchmark check that they all compute the same thing:

    attention_by_loop      one query at a time, with Python loops: the definition, slowly
    CausalAttention        one head: trainable projections, scaling, causal mask, dropout
    MultiHeadAttentionWrapper  several CausalAttention heads side by side, outputs concatenated
    MultiHeadAttention     all heads in one batched module, by explicit softmax or PyTorch's
                           fused scaled_dot_product_attention; optionally with a KV cache,
                           and with a padding mask for rows of different lengths (Meeting 7)
    attend                 the attention function itself, step by step or fused, which
                           MultiHeadAttention and `modern.GroupedQueryAttention` call

Shapes: x is (batch, tokens, d_in); queries, keys and values per head are
(batch, heads, tokens, head_dim).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CausalAttention",
    "MultiHeadAttention",
    "MultiHeadAttentionWrapper",
    "attend",
    "attention_by_loop",
    "causal_mask",
    "padding_causal_mask",
]


def causal_mask(n_queries: int, n_keys: int | None = None, device=None) -> torch.Tensor:
    """Boolean (n_queries, n_keys) mask, True where a query may look: at itself and before.

    With more keys than queries (a KV cache holds earlier tokens), the queries are the
    last n_queries positions.

    >>> causal_mask(3).int()
    tensor([[1, 0, 0],
            [1, 1, 0],
            [1, 1, 1]], dtype=torch.int32)
    """
    n_keys = n_queries if n_keys is None else n_keys
    if n_keys < n_queries:
        raise ValueError(f"{n_queries} queries need at least as many keys, got {n_keys}")
    ones = torch.ones(n_queries, n_keys, dtype=torch.bool, device=device)
    return ones.tril(diagonal=n_keys - n_queries)


def padding_causal_mask(key_mask: torch.Tensor, n_queries: int | None = None) -> torch.Tensor:
    """Boolean (batch, 1, n_queries, n_keys) mask for rows padded to one length (Meeting 7).

    `key_mask` (batch, n_keys) is True at real tokens and False at padding. As in
    `causal_mask`, the queries are the last n_queries keys. A real token may look at the real
    tokens at or before it, never at padding. A padding position's output is thrown away, but
    it must still be a number: with nothing to look at, its softmax would be 0/0 = NaN, and a
    NaN value poisons every query in the next layer (weight 0 · NaN is still NaN). So padding
    may look at whatever the causal mask allows.

    >>> padding_causal_mask(torch.tensor([[False, True, True]]))[0, 0].int()
    tensor([[1, 0, 0],
            [0, 1, 0],
            [0, 1, 1]], dtype=torch.int32)
    """
    if key_mask.ndim != 2:
        raise ValueError(f"key_mask must have shape (batch, keys), got {tuple(key_mask.shape)}")
    key_mask = key_mask.bool()
    n_keys = key_mask.shape[1]
    n_queries = n_keys if n_queries is None else n_queries
    causal = causal_mask(n_queries, n_keys, device=key_mask.device)  # (queries, keys)
    query_is_padding = ~key_mask[:, n_keys - n_queries:, None]  # (batch, queries, 1)
    allowed = causal & (key_mask[:, None, :] | query_is_padding)  # (batch, queries, keys)
    return allowed[:, None]  # one mask for every head


def attention_by_loop(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention for q, k, v of shape (..., tokens, head_dim), one query at a time.

    Query t scores every key up to t, softmaxes the scaled scores into weights, and
    returns the weighted sum of those values. Slow on purpose: it is the definition.
    """
    out = torch.empty_like(q)
    for t in range(q.shape[-2]):
        scores = (k[..., : t + 1, :] @ q[..., t, :, None]).squeeze(-1) / math.sqrt(q.shape[-1])
        out[..., t, :] = (scores.softmax(dim=-1)[..., None, :] @ v[..., : t + 1, :]).squeeze(-2)
    return out


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
           dropout: float = 0.0, use_sdpa: bool = True) -> torch.Tensor:
    """softmax(q kᵀ / √head_dim) v, causal, for q (batch, heads, queries, head_dim) and k, v
    (batch, heads, keys, head_dim); the queries are the last keys. Returns q's shape.

    `mask`, if given, replaces the causal mask: a boolean tensor that broadcasts to (batch,
    heads, queries, keys), True where a query may look. `use_sdpa=False` computes it step by
    step; True calls PyTorch's fused `scaled_dot_product_attention`, the same function, faster
    and leaner. `dropout` is applied to the attention weights (pass 0 in eval mode).
    """
    n_q, n_k = q.shape[2], k.shape[2]
    if use_sdpa:
        if mask is None and (n_q == n_k or n_q == 1):  # plain causal, or one new token sees all
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=n_q > 1)
        if mask is None:
            mask = causal_mask(n_q, n_k, device=q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
    if mask is None:
        mask = causal_mask(n_q, n_k, device=q.device)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~mask, float("-inf"))
    return F.dropout(scores.softmax(dim=-1), dropout) @ v


def _check_length(n_tokens: int, context_length: int) -> None:
    if n_tokens > context_length:
        raise ValueError(f"{n_tokens} tokens exceed the context length {context_length}")


class CausalAttention(nn.Module):
    """One attention head: project to queries, keys and values, mask the future, mix values."""

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float = 0.0,
                 qkv_bias: bool = False):
        super().__init__()
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", causal_mask(context_length), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        _check_length(n, self.mask.shape[0])
        q, k, v = self.W_query(x), self.W_key(x), self.W_value(x)
        scores = q @ k.transpose(1, 2) / math.sqrt(k.shape[-1])
        scores = scores.masked_fill(~self.mask[:n, :n], float("-inf"))
        return self.dropout(scores.softmax(dim=-1)) @ v


class MultiHeadAttentionWrapper(nn.Module):
    """`num_heads` independent heads, run one after another; their outputs are concatenated."""

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float,
                 num_heads: int, qkv_bias: bool = False):
        super().__init__()
        self.heads = nn.ModuleList(
            CausalAttention(d_in, d_out, context_length, dropout, qkv_bias)
            for _ in range(num_heads)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([head(x) for head in self.heads], dim=-1)


class MultiHeadAttention(nn.Module):
    """Causal multi-head attention with all heads in one batch, as in GPT-2.

    One linear layer makes queries, keys and values for every head at once (its weight is
    the three projection matrices stacked); a reshape splits them into heads; the heads
    attend in parallel; another reshape joins them; `out_proj` mixes them.

    `use_sdpa=False` computes softmax(q kᵀ / √d) v step by step; True calls PyTorch's fused
    `scaled_dot_product_attention`, which is the same function, faster and leaner.

    `mask`, if given, replaces the causal mask: a boolean tensor that broadcasts to (batch,
    heads, queries, keys), True where a query may look. `padding_causal_mask` builds the one
    that lets prompts of different lengths share a batch.
    """

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float,
                 num_heads: int, qkv_bias: bool = False, use_sdpa: bool = True):
        super().__init__()
        if d_out % num_heads:
            raise ValueError(f"d_out={d_out} is not divisible by num_heads={num_heads}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.num_heads, self.head_dim = num_heads, d_out // num_heads
        self.context_length, self.dropout, self.use_sdpa = context_length, dropout, use_sdpa
        self.qkv = nn.Linear(d_in, 3 * d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, tokens, d_out) -> (batch, heads, tokens, head_dim)."""
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    @staticmethod
    def merge_heads(x: torch.Tensor) -> torch.Tensor:
        """(batch, heads, tokens, head_dim) -> (batch, tokens, d_out)."""
        b, h, n, d = x.shape
        return x.transpose(1, 2).reshape(b, n, h * d)

    def forward(self, x: torch.Tensor, cache=None, layer: int = 0,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attend over `x`, and over the earlier tokens in `cache` (a KVCache) if given."""
        q, k, v = map(self.split_heads, self.qkv(x).chunk(3, dim=-1))
        if cache is not None:
            k, v = cache.update(layer, k, v)  # all keys and values so far, this layer
        _check_length(k.shape[2], self.context_length)
        dropout = self.dropout if self.training else 0.0
        out = attend(q, k, v, mask, dropout, self.use_sdpa)
        return self.out_proj(self.merge_heads(out))
