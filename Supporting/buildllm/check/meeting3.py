"""Checks for the Meeting 3 exercises: attention weights, causal mask, heads and multi-head
attention, compared with `buildllm.attention`; each names the usual mistake a wrong answer makes."""

from __future__ import annotations

import math
import traceback
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..attention import MultiHeadAttention, causal_mask
from . import expect_shape, expect_tensor, verify
from ._support import cases, fail_if, first, first_wrong, matching, randn

__all__ = ["mask", "merge", "multi_head", "split", "weights"]


def _at(index) -> str:
    return "[" + ", ".join(str(int(i)) for i in index) + "]"


def _where_from(value: float, x: torch.Tensor) -> str:
    """Name the entry of x that `value` is (x holds distinct numbers), if it is one."""
    hits = (x == value).nonzero()
    return f"x{_at(hits[0])}" if len(hits) == 1 else f"{value:g}, not an entry of x"


def _softmax_weights(q, k, mask=None, divide_by=None, dim=-1) -> torch.Tensor:
    """softmax(q kᵀ / divide_by) over `dim`, hidden scores at -inf; the reference and mistakes."""
    scores = q @ k.transpose(-2, -1) / (math.sqrt(q.shape[-1]) if divide_by is None else divide_by)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=dim)


def _weights(fn: Callable, shape: tuple, n_keys: int | None, seed: int, masked=False) -> None:
    q = randn(seed, *shape)  # with n_keys None, the keys are the queries
    k = q if n_keys is None else randn(seed + 1, *shape[:-2], n_keys, shape[-1])
    m = causal_mask(q.shape[-2], k.shape[-2]) if masked else None
    got, want, d = fn(q, k, m) if masked else fn(q, k), _softmax_weights(q, k, m), q.shape[-1]
    expect_shape(got, want.shape, "the weights", " (..., queries, keys)")
    if nan := first(got.isnan()):
        raise AssertionError(
            f"the weights contain NaN at {_at(nan)}: every key is hidden from query {nan[-2]}, "
            "and a softmax over scores that are all -inf is 0/0. True in the mask means 'may "
            "look': hide the scores where it is False")
    if masked and (leak := first((got != 0) & ~m)):
        raise AssertionError(f"query {leak[-2]} puts weight {got[leak]:.3f} on key {leak[-1]}, "
                             "which the mask hides (False means 'may not look'): set hidden "
                             "scores to -inf before the softmax, and they get weight exactly 0")
    sums = got.sum(dim=-1)
    if off := first(~torch.isclose(sums, torch.ones_like(sums), atol=1e-4)):
        raise AssertionError(f"the weights of query {off[-1]} sum to {sums[off]:.4f}, not 1: take "
                             "the softmax over the keys (dim=-1), and mask the scores before it, "
                             "not the weights after")
    if (where := first_wrong(got, want)) is None:
        return
    mistakes = (  # (what to say, the weights it gives), each built only if needed
        (f"the weights are softmax(q kᵀ / {by:g}): {why}", _softmax_weights(q, k, m, by))
        for by, why in [(1.0, f"did you forget to divide the scores by √d (here √{d})?"),
                        (d, f"divide the scores by √d (here √{d}), not by d")])
    fail_if(hint := matching(got, mistakes), hint)
    raise AssertionError(f"weights{_at(where)} is {got[where]:.4f}, expected {want[where]:.4f}: "
                         "the weights are softmax(q kᵀ / √d) over the keys")


def weights(fn: Callable[..., torch.Tensor]) -> None:
    """Exercise 3.1: fn(queries, keys, mask=None) must be softmax(q kᵀ / √d), masked."""
    verify("Exercise 3.1", cases(_weights, fn, {  # label: (query shape, keys, seed, masked)
        "6 embeddings of size 3 as both queries and keys": ((6, 3), None, 1),
        "3 queries, 5 keys, d = 4": ((3, 4), 5, 2),
        "a batch: queries (2, 4, 8), keys (2, 4, 8)": ((2, 4, 8), 4, 3),
        "heads: queries (2, 3, 5, 16)": ((2, 3, 5, 16), 5, 4),
        "a causal mask on 5 tokens": ((5, 8), None, 5, True),
        "a causal mask broadcast over (2, 3, 4, 8)": ((2, 3, 4, 8), 4, 6, True),
        "2 new queries, 6 keys, the KV-cache mask": ((2, 8), 6, 7, True),
    }))


def _mask(fn: Callable, *sizes: int) -> None:
    got, n_queries, n_keys = expect_tensor(fn(*sizes), "the mask"), sizes[0], sizes[-1]
    fail_if(got.dtype != torch.bool, "the mask should be booleans (dtype torch.bool), True where "
            "a query may look; " + ("yours holds 0 and -inf, a mask to add to the scores. Build "
            "the boolean one: masked_fill and F.scaled_dot_product_attention take it as it is"
            if got.is_floating_point() and got.isinf().any()
            else f"yours is {got.dtype}: build it from torch.ones(..., dtype=torch.bool)"))
    expect_shape(got, (n_queries, n_keys), "the mask", " (queries, keys)")
    if torch.equal(got, want := causal_mask(n_queries, n_keys)):
        return
    fail_if(torch.equal(got, ~want),
            "True and False are swapped: True means 'may look', as in buildllm.attention."
            "causal_mask and F.scaled_dot_product_attention; yours marks what to hide, as "
            "triu(diagonal=1) does")
    fail_if(n_queries == n_keys and torch.equal(got, want.T),
            "the mask is transposed: row i is query i, and it may look at keys 0 to i, so the "
            "True entries are on and below the diagonal (tril)")
    (i, j), shift = first(got != want), n_keys - n_queries
    why = (f"your mask lets query {i} see key {j}, which comes after it." if got[i, j] else
           f"your mask stops query {i} from seeing itself: a token may look at itself."
           if j == i + shift else
           f"your mask stops query {i} from seeing key {j}, which comes before it.")
    fail_if(not shift, why)
    raise AssertionError(
        f"{why} Query {i} is position {i + shift}: with more keys than queries, the queries are "
        "the last positions (a KV cache holds the earlier ones' keys)")


def mask(fn: Callable[..., torch.Tensor]) -> None:
    """Exercise 3.2: fn(n_queries, n_keys=None) must equal buildllm.attention.causal_mask."""
    verify("Exercise 3.2", cases(_mask, fn, {
        "4 tokens": 4, "1 token": 1, "64 tokens": 64, "5 queries, n_keys = 5": (5, 5),
        "1 new query, 5 keys: it sees them all": (1, 5), "3 new queries, 7 keys": (3, 7),
        "2 new queries, 2 + 62 keys": (2, 64),
    }))


def _split_reference(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    with torch.random.fork_rng(devices=[]):  # building a module draws random weights
        return MultiHeadAttention(x.shape[-1], x.shape[-1], 1, 0.0, num_heads).split_heads(x)


def _split(fn: Callable, x: torch.Tensor, num_heads: int, clone: bool = True) -> None:
    got, want = fn(x.clone() if clone else x, num_heads), _split_reference(x, num_heads)
    hd = x.shape[-1] // num_heads
    expect_shape(got, want.shape, "the result", " (batch, heads, tokens, head_dim)")
    if (where := first_wrong(got, want)) is None:
        return
    fail_if(matching(got, [(True, x.reshape(want.shape))]),
            "right shape, wrong values: reshaping straight to (batch, heads, tokens, head_dim) "
            "cuts the memory in the wrong places. View as (batch, tokens, heads, head_dim) "
            "first, then swap tokens and heads with transpose(1, 2)")
    bi, h, t, j = where
    raise AssertionError(f"out{_at(where)} is {_where_from(got[where].item(), x)}, expected "
                         f"x{_at((bi, t, h * hd + j))}: head {h} holds columns {h * hd} to "
                         f"{(h + 1) * hd - 1} of every token")


def split(fn: Callable[[torch.Tensor, int], torch.Tensor]) -> None:
    """Exercise 3.3: fn(x, num_heads) must equal MultiHeadAttention.split_heads. Numbered
    entries let a message say which entry of x landed where."""
    verify("Exercise 3.3", cases(_split, fn, {  # label: (x, num_heads, clone x first)
        "numbered, (1, 3, 4), 2 heads": (torch.arange(12.0).view(1, 3, 4), 2),
        "numbered, (2, 3, 6), 3 heads": (torch.arange(36.0).view(2, 3, 6), 3),
        "random, (2, 5, 8), 4 heads": (randn(1, 2, 5, 8), 4),
        "a single token, (1, 1, 8), 2 heads": (randn(2, 1, 1, 8), 2),
        "one head, (2, 3, 4)": (torch.arange(24.0).view(2, 3, 4), 1),
        "the queries cut from a fused projection (not contiguous)":
            (randn(3, 2, 4, 36)[..., :12], 3, False),  # a clone would be contiguous
    }))


def _merge(fn: Callable, x: torch.Tensor) -> None:
    got, want, (b, h, n, hd) = fn(x.clone()), MultiHeadAttention.merge_heads(x), x.shape
    expect_shape(got, (b, n, h * hd), "the result", " (batch, tokens, heads * head_dim)")
    if (where := first_wrong(got, want)) is None:
        return
    fail_if(matching(got, [(True, x.reshape(b, n, h * hd))]),
            "right shape, wrong values: reshaping (batch, heads, tokens, head_dim) straight to "
            "(batch, tokens, heads * head_dim) mixes tokens. Bring tokens next to batch first "
            "with transpose(1, 2), then reshape")
    bi, t, c = where
    raise AssertionError(f"out{_at(where)} is {_where_from(got[where].item(), x)}, expected "
                         f"x{_at((bi, c // hd, t, c % hd))}: each token's columns are head 0's "
                         f"{hd} values, then head 1's, and so on")


def _round_trip(fn: Callable) -> None:
    x = randn(3, 2, 5, 12)
    got = fn(_split_reference(x, 3))  # a transposed view
    expect_shape(got, x.shape, "merge_heads(split_heads(x))", " (like x)")
    fail_if(first_wrong(got, x) is not None, "merge_heads(split_heads(x)) is not x")


def merge(fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Exercise 3.4: fn(x) must equal MultiHeadAttention.merge_heads, and undo split_heads."""
    verify("Exercise 3.4", [*cases(_merge, fn, {
        "numbered, (1, 2, 3, 2): 2 heads of 3 tokens": torch.arange(12.0).view(1, 2, 3, 2),
        "numbered, (2, 3, 2, 2)": torch.arange(24.0).view(2, 3, 2, 2),
        "random, (2, 4, 5, 8)": randn(1, 2, 4, 5, 8),
        "a single token, (1, 4, 1, 2)": randn(2, 1, 4, 1, 2),
        "one head, (2, 1, 3, 4)": torch.arange(24.0).view(2, 1, 3, 4),
    }), ("merge_heads(split_heads(x)) is x, for x of shape (2, 5, 12)", lambda: _round_trip(fn))])


class _NoFusedAttention(TorchFunctionMode):
    """Refuses PyTorch's own attention, which is what the learner's code is compared with."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (F.scaled_dot_product_attention, F.multi_head_attention_forward):
            raise AssertionError(
                f"your function calls {func.__name__}, the fused attention this check compares "
                "with: compute the scores, the mask and the softmax yourself")
        return func(*args, **(kwargs or {}))


def _mha(x, p: dict, h: int, *, divide_by=lambda hd, d: math.sqrt(hd), see=causal_mask, dim=-1,
         split=True, merge=True, by_head=False, out_proj=True, qkv_bias=True, out_bias=True):
    """Causal multi-head attention written out, with switches for the usual mistakes."""
    b, n, _ = x.shape
    qkv = F.linear(x, p["qkv_weight"], p["qkv_bias"] if qkv_bias else None)
    d = qkv.shape[-1] // 3
    if by_head:  # read as q, k, v of head 0, then of head 1, ...
        qkv = qkv.view(b, n, h, 3, d // h).transpose(2, 3).reshape(b, n, 3 * d)
    if split:
        q, k, v = (t.view(b, n, h, d // h).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
    else:
        q, k, v = (t.reshape(b, h, n, d // h) for t in qkv.chunk(3, dim=-1))
    out = _softmax_weights(q, k, see(n), divide_by(d // h, d), dim) @ v
    out = out.transpose(1, 2).reshape(b, n, d) if merge else out.reshape(b, n, d)
    return F.linear(out, p["out_weight"], p["out_bias"] if out_bias else None) if out_proj else out


# (switches of _mha that make the mistake, what to say); {hd} is head_dim, {d} is d_out.
_MHA_MISTAKES = [
    ({"divide_by": lambda hd, d: 1.0}, "did you forget to divide the scores by √head_dim?"),
    ({"divide_by": lambda hd, d: math.sqrt(d)},
     "divide the scores by √head_dim (here √{hd}), not by √d_out (√{d})"),
    ({"divide_by": lambda hd, d: hd},
     "divide the scores by √head_dim (here √{hd}), not by head_dim"),
    ({"see": lambda n: torch.ones(n, n, dtype=torch.bool)},
     "every token sees the future: set the scores of later keys to -inf before the softmax"),
    ({"see": lambda n: causal_mask(n).T},
     "the mask is transposed: each token sees itself and the tokens before it, not after it"),
    ({"dim": -2}, "take the softmax over the keys (dim=-1), not over the queries"),
    ({"split": False}, "the heads are cut without a transpose: view the queries (and keys and "
     "values) as (batch, tokens, heads, head_dim), then transpose(1, 2)"),
    ({"merge": False}, "the heads are joined without a transpose: transpose(1, 2) back to "
     "(batch, tokens, heads, head_dim) before the reshape"),
    ({"by_head": True}, "q, k and v are cut head by head, but the fused weight's rows are the "
     "queries of all heads, then the keys, then the values: chunk(3, dim=-1), then split each "
     "into heads"),
    ({"out_proj": False}, "did you forget the output projection (out_weight, out_bias)?"),
    ({"qkv_bias": False}, "did you forget to add qkv_bias (when it is not None)?"),
    ({"out_bias": False}, "did you forget to add out_bias?"),
]


def _attention(fn: Callable, b: int, n: int, d_in: int, d: int, h: int, seed: int, qkv_bias=True):
    with torch.random.fork_rng(devices=[]), torch.no_grad():  # building it draws random weights
        attn = MultiHeadAttention(d_in, d, n, 0.0, h, qkv_bias=qkv_bias).eval()
        for k, param in enumerate(attn.parameters()):
            param.copy_(randn(100 * seed + k, *param.shape, scale=d_in**-0.5))
        x = randn(seed, b, n, d_in)
        want = attn(x)
    p = {"qkv_weight": attn.qkv.weight, "qkv_bias": attn.qkv.bias,  # None without qkv_bias
         "out_weight": attn.out_proj.weight, "out_bias": attn.out_proj.bias}
    p = {name: None if w is None else w.detach().clone() for name, w in p.items()}
    try:
        with _NoFusedAttention():
            got = fn(x.clone(), *p.values(), h)
    except (AssertionError, NotImplementedError):
        raise
    except Exception as err:  # name the learner's line, not the mode's
        frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename != __file__]
        at = f"\n  at line {frames[-1].lineno}: {frames[-1].line}" if frames else ""
        raise AssertionError(f"crashed with {type(err).__name__}: {err}{at}") from None
    expect_shape(got, want.shape, "the output", " (batch, tokens, d_out)")
    fail_if(got.isnan().any(), "the output contains NaN: a token whose scores are all -inf gets "
            "0/0 from the softmax. Is the diagonal masked too? Each token may look at itself")
    if (where := first_wrong(got, want, atol=1e-4)) is None:
        return
    fail_if(hint := matching(got, ((f"wrong values: {why.format(hd=d // h, d=d)}",
                                    _mha(x, p, h, **switches)) for switches, why in _MHA_MISTAKES)),
            hint)
    wrong = f"out{_at(where)} is {got[where]:.4f}, expected {want[where]:.4f}. "
    fail_if(first_wrong(got[:, 0], want[:, 0], atol=1e-4) is not None,
            f"{wrong}Token 0 sees only itself, so its output is out_proj of its own values "
            "whatever the scores. Yours is wrong: either token 0 sees later tokens (look at the "
            "mask), or look at the projections (a Linear computes x @ weight.T + bias), how q, k "
            "and v are cut from the fused output, the heads, and the output projection")
    raise AssertionError(f"{wrong}Token 0, which sees only itself, is right, so projections and "
                         "heads are fine: look at the scores, their scaling, the mask and the "
                         "softmax")


def multi_head(fn: Callable[..., torch.Tensor]) -> None:
    """Exercise 3.5: fn(x, qkv_weight, qkv_bias, out_weight, out_bias, num_heads) must equal
    buildllm.attention.MultiHeadAttention (eval mode, no dropout) with those weights."""
    verify("Exercise 3.5", cases(_attention, fn, {  # (batch, tokens, d_in, d_out, heads, seed)
        "1 sequence of 4 tokens, d 6, 2 heads": (1, 4, 6, 6, 2, 1),
        "a batch of 2 sequences of 5 tokens, 3 heads": (2, 5, 12, 12, 3, 2),
        "a single token, batch of 2": (2, 1, 8, 8, 2, 3),
        "no q/k/v bias (qkv_bias is None)": (2, 5, 8, 8, 2, 4, False),
        "d_in 10, d_out 8, 4 heads": (2, 6, 10, 8, 4, 5),
        "one head": (2, 5, 8, 8, 1, 6),
        "12 heads of 4 over 16 tokens": (2, 16, 48, 48, 12, 7),
    }))
