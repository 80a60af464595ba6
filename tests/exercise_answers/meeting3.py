"""Answers to the Meeting 3 exercises, right and wrong, for tests/test_exercise_checks.py.

Each wrong answer is a mistake learners make, named after it.
"""

import math
import warnings

import torch
import torch.nn.functional as F

from buildllm import check

# -- Exercise 3.1: attention weights --------------------------------------------------------


def weights_with_masked_fill(queries, keys, mask=None):
    scores = queries @ keys.transpose(-2, -1) / math.sqrt(queries.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1)


def weights_by_hand(queries, keys, mask=None):
    """einsum for the scores, exp and normalise written out, the row's maximum subtracted."""
    scores = torch.einsum("...qd,...kd->...qk", queries, keys) * queries.shape[-1] ** -0.5
    if mask is not None:
        scores = torch.where(mask, scores, -torch.inf)
    e = (scores - scores.amax(dim=-1, keepdim=True)).exp()
    return e / e.sum(dim=-1, keepdim=True)


def weights_renormalised(queries, keys, mask=None):
    """Softmax first, then zero the hidden weights and make each row sum to 1 again."""
    w = (queries @ keys.mT / queries.shape[-1] ** 0.5).softmax(dim=-1)
    if mask is not None:
        w = w * mask
        w = w / w.sum(dim=-1, keepdim=True)
    return w


def weights_with_large_negative(queries, keys, mask=None):
    """-1e9 instead of -inf, as some tutorials write it: exp underflows to exactly 0."""
    scores = queries @ keys.transpose(-2, -1) / math.sqrt(queries.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, -1e9)
    return scores.softmax(dim=-1)


def weights_with(queries, keys, mask=None, divide_by=None, dim=-1, hide=None, keys_t=None):
    """weights_with_masked_fill with switches for the usual mistakes."""
    k_t = keys.transpose(-2, -1) if keys_t is None else keys_t(keys)
    d = queries.shape[-1]
    scores = queries @ k_t / (math.sqrt(d) if divide_by is None else divide_by(d))
    if mask is not None and hide is None:
        scores = scores.masked_fill(~mask, float("-inf"))
    w = scores.softmax(dim=dim)
    return w if mask is None or hide is None else hide(scores, w, mask)


def all_dims_reversed(keys):
    """keys.T, which on more than two dimensions reverses them all (and warns that it will fail)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return keys.T


WRONG_WEIGHTS = {
    "not scaled": lambda q, k, m=None: weights_with(q, k, m, divide_by=lambda d: 1.0),
    "scaled by d, not √d": lambda q, k, m=None: weights_with(q, k, m, divide_by=lambda d: d),
    "softmax over the queries": lambda q, k, m=None: weights_with(q, k, m, dim=-2),
    "keys.T on batches": lambda q, k, m=None: weights_with(q, k, m, keys_t=all_dims_reversed),
    "mask ignored": lambda q, k, m=None: weights_with(q, k, None),
    "mask applied after the softmax": lambda q, k, m=None: weights_with(
        q, k, m, hide=lambda s, w, m: w * m
    ),
    "mask's True taken as hidden": lambda q, k, m=None: weights_with(
        q, k, m, hide=lambda s, w, m: s.masked_fill(m, float("-inf")).softmax(dim=-1)
    ),
    "hidden scores set to 0, not -inf": lambda q, k, m=None: weights_with(
        q, k, m, hide=lambda s, w, m: (s * m).softmax(dim=-1)
    ),
    "scores multiplied by √d": lambda q, k, m=None: weights_with(
        q, k, m, divide_by=lambda d: d**-0.5
    ),
    "keys and queries swapped: k qᵀ": lambda q, k, m=None: weights_with(k, q, m),
}


# -- Exercise 3.2: the causal mask ----------------------------------------------------------


def mask_with_tril(n_queries, n_keys=None):
    n_keys = n_queries if n_keys is None else n_keys
    return torch.ones(n_queries, n_keys, dtype=torch.bool).tril(diagonal=n_keys - n_queries)


def mask_by_positions(n_queries, n_keys=None):
    """Query i sits at position n_keys - n_queries + i and sees every key up to there."""
    n_keys = n_keys or n_queries
    query_position = torch.arange(n_keys - n_queries, n_keys)
    return torch.arange(n_keys)[None, :] <= query_position[:, None]


def mask_by_hiding_the_future(n_queries, n_keys=None):
    n_keys = n_keys or n_queries
    return ~torch.ones(n_queries, n_keys, dtype=torch.bool).triu(diagonal=n_keys - n_queries + 1)


def ones(n_queries, n_keys=None):
    return torch.ones(n_queries, n_keys or n_queries, dtype=torch.bool)


WRONG_MASK = {
    "queries taken as the first positions": lambda nq, nk=None: ones(nq, nk).tril(),
    "diagonal hidden": lambda nq, nk=None: ones(nq, nk).tril(diagonal=(nk or nq) - nq - 1),
    "transposed": lambda nq, nk=None: ones(nq, nk).triu(),
    "True marks what to hide": lambda nq, nk=None: ones(nq, nk).triu(diagonal=(nk or nq) - nq + 1),
    "n_keys ignored": lambda nq, nk=None: ones(nq).tril(),
    "an additive mask of 0 and -inf": lambda nq, nk=None: torch.zeros(nq, nk or nq).masked_fill(
        ~mask_with_tril(nq, nk), float("-inf")
    ),
    "integers, not booleans": lambda nq, nk=None: mask_with_tril(nq, nk).long(),
    "tril(diagonal=1): one key too many": lambda nq, nk=None: ones(nq, nk).tril(
        diagonal=(nk or nq) - nq + 1
    ),
    "a NumPy array": lambda nq, nk=None: mask_with_tril(nq, nk).numpy(),
}


# -- Exercise 3.3: split into heads ---------------------------------------------------------


def split_with_view(x, num_heads):
    b, n, d = x.shape
    return x.view(b, n, num_heads, d // num_heads).transpose(1, 2)


def split_with_unflatten(x, num_heads):
    return x.unflatten(-1, (num_heads, -1)).permute(0, 2, 1, 3)


def split_by_stacking(x, num_heads):
    """Cut the columns into num_heads blocks and stack the blocks on a new heads axis."""
    return torch.stack(x.chunk(num_heads, dim=-1), dim=1)


WRONG_SPLIT = {
    "reshaped without a transpose": lambda x, h: x.reshape(x.shape[0], h, x.shape[1], -1),
    "heads interleaved": lambda x, h: x.reshape(*x.shape[:2], -1, h).permute(0, 3, 1, 2),
    "no transpose": lambda x, h: x.reshape(*x.shape[:2], h, -1),
    "head_dim and tokens swapped": lambda x, h: split_with_view(x, h).transpose(2, 3),
}


# -- Exercise 3.4: merge the heads ----------------------------------------------------------


def merge_with_reshape(x):
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def merge_with_contiguous_view(x):
    b, h, n, d = x.shape
    return x.transpose(1, 2).contiguous().view(b, n, h * d)


def merge_by_concatenating(x):
    """Each head's (batch, tokens, head_dim) side by side, as MultiHeadAttentionWrapper does."""
    return torch.cat(x.unbind(dim=1), dim=-1)


def merge_with_view_after_transpose(x):
    b, h, n, d = x.shape
    return x.transpose(1, 2).view(b, n, h * d)


WRONG_MERGE = {
    "reshaped without a transpose": lambda x: x.reshape(x.shape[0], x.shape[2], -1),
    "view after transpose (crashes)": merge_with_view_after_transpose,
    "heads interleaved": lambda x: x.permute(0, 2, 3, 1).flatten(2),
    "heads summed, not concatenated": lambda x: x.sum(dim=1).repeat(1, 1, x.shape[1]),
    "transposed, never reshaped": lambda x: x.transpose(1, 2),
}


# -- Exercise 3.5: multi-head attention -----------------------------------------------------


def mha_batched(x, qkv_weight, qkv_bias, out_weight, out_bias, num_heads):
    b, n, _ = x.shape
    q, k, v = F.linear(x, qkv_weight, qkv_bias).chunk(3, dim=-1)
    d = q.shape[-1]
    q, k, v = (t.view(b, n, num_heads, d // num_heads).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-2, -1) / math.sqrt(d // num_heads)
    future = torch.ones(n, n, dtype=torch.bool).triu(diagonal=1)
    out = scores.masked_fill(future, float("-inf")).softmax(dim=-1) @ v
    return F.linear(out.transpose(1, 2).reshape(b, n, d), out_weight, out_bias)


def mha_head_by_head(x, qkv_weight, qkv_bias, out_weight, out_bias, num_heads):
    """One head at a time, each with its own rows of the fused weight, then concatenated."""
    d = qkv_weight.shape[0] // 3
    hd = d // num_heads
    bias = torch.zeros(3 * d) if qkv_bias is None else qkv_bias
    heads = []
    for h in range(num_heads):
        rows = [slice(start + h * hd, start + (h + 1) * hd) for start in (0, d, 2 * d)]
        q, k, v = (x @ qkv_weight[r].T + bias[r] for r in rows)
        scores = q @ k.transpose(1, 2) / hd**0.5
        scores = scores + torch.full_like(scores[0], -torch.inf).triu(diagonal=1)
        heads.append(torch.softmax(scores, dim=-1) @ v)
    return torch.cat(heads, dim=-1) @ out_weight.T + out_bias


def mha_with_einsum(x, qkv_weight, qkv_bias, out_weight, out_bias, num_heads):
    qkv = x @ qkv_weight.T
    if qkv_bias is not None:
        qkv = qkv + qkv_bias
    q, k, v = qkv.unflatten(-1, (3, num_heads, -1)).unbind(dim=2)  # each (b, n, heads, hd)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / q.shape[-1] ** 0.5
    n = x.shape[1]
    see = torch.arange(n)[None, :] <= torch.arange(n)[:, None]
    w = torch.where(see, scores, float("-inf")).softmax(dim=-1)
    return torch.einsum("bhqk,bkhd->bqhd", w, v).flatten(2) @ out_weight.T + out_bias


def mha_with(x, qkv_weight, qkv_bias, out_weight, out_bias, num_heads, **mistake):
    """mha_batched with switches for the usual mistakes."""
    b, n, _ = x.shape
    if mistake.get("no_qkv_bias"):
        qkv_bias = None
    if mistake.get("no_transpose_of_weight"):
        qkv = x @ qkv_weight + (0 if qkv_bias is None else qkv_bias)
    else:
        qkv = F.linear(x, qkv_weight, qkv_bias)
    d = qkv.shape[-1] // 3
    hd = d // num_heads
    if mistake.get("qkv_by_head"):
        q, k, v = qkv.view(b, n, num_heads, 3 * hd).split(hd, dim=-1)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    elif mistake.get("split_without_transpose"):
        q, k, v = (t.reshape(b, num_heads, n, hd) for t in qkv.chunk(3, dim=-1))
    else:
        q, k, v = (t.view(b, n, num_heads, hd).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
    if mistake.get("sdpa"):
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    else:
        scores = q @ k.transpose(-2, -1) / mistake.get("divide_by", math.sqrt(hd))
        see = torch.ones(n, n, dtype=torch.bool).tril(mistake.get("diagonal", 0))
        if mistake.get("mask_transposed"):
            see = see.T
        if not mistake.get("no_mask"):
            scores = scores.masked_fill(~see, float("-inf"))
        w = scores.softmax(dim=mistake.get("dim", -1))
        out = w @ v
    if mistake.get("merge_without_transpose"):
        out = out.reshape(b, n, d)
    else:
        out = out.transpose(1, 2).reshape(b, n, d)
    if mistake.get("no_out_proj"):
        return out
    return F.linear(out, out_weight, None if mistake.get("no_out_bias") else out_bias)


def wrong_mha(**mistake):
    return lambda x, wq, bq, wo, bo, h: mha_with(x, wq, bq, wo, bo, h, **mistake)


WRONG_MHA = {
    "not scaled": wrong_mha(divide_by=1.0),
    "scaled by √d_out": lambda x, wq, bq, wo, bo, h: mha_with(
        x, wq, bq, wo, bo, h, divide_by=math.sqrt(wq.shape[0] // 3)
    ),
    "scaled by head_dim": lambda x, wq, bq, wo, bo, h: mha_with(
        x, wq, bq, wo, bo, h, divide_by=wq.shape[0] // 3 // h
    ),
    "no mask": wrong_mha(no_mask=True),
    "mask transposed": wrong_mha(mask_transposed=True),
    "diagonal masked too": wrong_mha(diagonal=-1),
    "mask one step into the future": wrong_mha(diagonal=1),
    "softmax over the queries": wrong_mha(dim=-2),
    "heads split without a transpose": wrong_mha(split_without_transpose=True),
    "heads merged without a transpose": wrong_mha(merge_without_transpose=True),
    "q, k, v cut head by head": wrong_mha(qkv_by_head=True),
    "output projection forgotten": wrong_mha(no_out_proj=True),
    "q/k/v bias forgotten": wrong_mha(no_qkv_bias=True),
    "output bias forgotten": wrong_mha(no_out_bias=True),
    "x @ weight, not weight.T": wrong_mha(no_transpose_of_weight=True),
    "calls F.scaled_dot_product_attention": wrong_mha(sdpa=True),
    "scores multiplied by √head_dim": lambda x, wq, bq, wo, bo, h: mha_with(
        x, wq, bq, wo, bo, h, divide_by=(h / wo.shape[0]) ** 0.5
    ),
    "returns (output, weights), as nn.MultiheadAttention does": lambda *args: (
        mha_batched(*args),
        None,
    ),
}


# (exercise, its check, right answers, wrong answers by the mistake they make)
EXERCISES = [
    (
        "3.1",
        check.meeting3.weights,
        [
            weights_with_masked_fill,
            weights_by_hand,
            weights_renormalised,
            weights_with_large_negative,
        ],
        WRONG_WEIGHTS,
    ),
    (
        "3.2",
        check.meeting3.mask,
        [mask_with_tril, mask_by_positions, mask_by_hiding_the_future],
        WRONG_MASK,
    ),
    (
        "3.3",
        check.meeting3.split,
        [split_with_view, split_with_unflatten, split_by_stacking],
        WRONG_SPLIT,
    ),
    (
        "3.4",
        check.meeting3.merge,
        [merge_with_reshape, merge_with_contiguous_view, merge_by_concatenating],
        WRONG_MERGE,
    ),
    ("3.5", check.meeting3.multi_head, [mha_batched, mha_head_by_head, mha_with_einsum], WRONG_MHA),
]
