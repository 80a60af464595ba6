"""Checks for the Meeting 4 exercises: GPT-2's pieces, its size, and generating text with
it. Each compares with buildllm.model, .costs or .generation and names the mistake a wrong
answer matches (the unbiased variance, post-norm, a window not cropped...)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import replace

import torch
import torch.nn.functional as F

from .. import costs
from ..generation import generate
from ..model import CONFIGS, GPTConfig, GPTModel, LayerNorm, TransformerBlock
from . import _support, expect_shape, verify
from ._support import Refuses, cases, expect_close, fail_if, plain, randomize, seeded, tiny_gpt

__all__ = ["block_forward", "cached_generation", "gelu", "greedy_generation", "layer_norm",
           "parameter_count"]


class _NoLayerNorm(Refuses):
    banned = frozenset({F.layer_norm, torch.layer_norm})  # nn.LayerNorm calls F.layer_norm
    advice = "this exercise asks you to write layer norm out, with mean and var"


@torch.no_grad()
def _layer_norm(fn: Callable, x, scale, shift, eps: float, want: torch.Tensor) -> None:
    got = plain(fn(x.clone().as_subclass(_NoLayerNorm), scale, shift, eps))
    fail_if(isinstance(got, torch.Tensor) and torch.isnan(got).any(), "the result holds NaN: a "
            "constant vector has variance 0, and eps, added to the variance under the square "
            "root, is what keeps that from dividing by 0")

    def normed(dim=-1, e=eps, c=0):  # (x - mean) / sqrt(var + e), over `dim`, correction c
        return (x - x.mean(dim, keepdim=True)) / (x.var(dim, keepdim=True, correction=c) + e)**0.5

    centred, std = x - x.mean(-1, keepdim=True), x.var(-1, keepdim=True, unbiased=False).sqrt()
    expect_close(got, want, "the result", [
        ("it matches dividing by n - 1, the unbiased variance that .var() and .std() compute by "
         "default; layer norm divides by n: x.var(dim=-1, keepdim=True, unbiased=False)",
         normed(c=1) * scale + shift),
        ("it matches (x - mean) / (std + eps); eps belongs inside the square root: "
         "(x - mean) / sqrt(var + eps)", centred / (std + eps) * scale + shift),
        ("it matches leaving eps out; add it to the variance, under the square root: "
         "(x - mean) / sqrt(var + eps)", normed(e=0.0) * scale + shift),
        ("it matches eps = 1e-5; use the eps you are given", normed(e=1e-5) * scale + shift),
        ("it matches normalizing over every number in x at once; normalize each token's vector "
         "on its own: mean and var over the last dim (dim=-1, keepdim=True)",
         normed(tuple(range(x.ndim))) * scale + shift),
        ("it matches the normalized x without scale and shift: multiply by scale, then add shift",
         normed()),
        ("it matches scale and shift swapped: the result is x_hat * scale + shift",
         normed() * shift + scale),
        ("it matches normalizing over dim 0, across tokens; normalize each token's vector: mean "
         "and var over the last dim (dim=-1, keepdim=True)", normed(0) * scale + shift),
    ])


def _drawn(seed: int, x, eps=1e-5, spread=1.0, learned=True) -> tuple:
    """A case of _layer_norm: x is a tensor, or the shape of one drawn around 2 with `spread`."""
    with seeded(seed):
        x = x if isinstance(x, torch.Tensor) else spread * (torch.randn(x) + 2.0)
        d = x.shape[-1]
        scale = 1 + 0.5 * torch.randn(d) if learned else torch.ones(d)
        shift = torch.randn(d) if learned else torch.zeros(d)
    return x, scale, shift, eps, F.layer_norm(x, (d,), scale, shift, eps)


def layer_norm(fn: Callable[..., torch.Tensor]) -> None:
    """Exercise 4.1: fn(x, scale, shift, eps) must equal F.layer_norm over the last dim.
    Tokens with a variance far below eps show where eps goes, a constant vector gives NaN."""
    with seeded(6), torch.no_grad():
        ln, x = randomize(LayerNorm(768), 1.0), torch.randn(2, 4, 768)
        gpt2 = (x, ln.scale, ln.shift, ln.eps, ln(x))
    verify("Exercise 4.1", cases(_layer_norm, fn, {
        "x = [1, 2, 3, 4], scale 1, shift 0":
            _drawn(1, torch.tensor([1.0, 2.0, 3.0, 4.0]), learned=False),
        "2 x 3 tokens of 8, learned scale and shift: each on its own": _drawn(2, (2, 3, 8)),
        "tokens with a spread of 0.001 (variance 1e-6 < eps)": _drawn(3, (3, 16), spread=1e-3),
        "a constant vector: the result is the shift, not NaN": _drawn(4, torch.full((8,), 3.0)),
        "eps = 0.1, passed in": _drawn(5, (5, 6), eps=0.1, spread=0.5),
        "GPT-2's width, 768, against buildllm.model.LayerNorm": gpt2,
    }))


class _NoGelu(Refuses):
    banned = frozenset({F.gelu})  # nn.GELU and buildllm's GELU call F.gelu
    advice = "this exercise asks you to write the tanh formula out"


def _gelu(fn: Callable, x: torch.Tensor) -> None:
    def tanh_gelu(c=2 / math.pi, power=3, half=0.5):
        return half * x * (1 + torch.tanh(c**0.5 * (x + 0.044715 * x**power)))

    got, want = plain(fn(x.clone().as_subclass(_NoGelu))), F.gelu(x, approximate="tanh")
    expect_close(got, want, "gelu(x)", [
        ("it matches the exact GELU, x·Φ(x) with erf (F.gelu's default); GPT-2 uses the tanh "
         "approximation 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))", F.gelu(x)),
        ("it matches x·sigmoid(1.702·x), another approximation; write the tanh one",
         x * torch.sigmoid(1.702 * x)),
        ("it matches ReLU; GELU is 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))", torch.relu(x)),
        ("it matches 0.044715·x² where the formula has 0.044715·x³", tanh_gelu(power=2)),
        ("it matches 2/π where the formula has its square root, √(2/π)", tanh_gelu(4 / math.pi**2)),
        ("it is twice the right answer: the formula starts with 0.5·x", tanh_gelu(half=1.0)),
    ], x=x, atol=1e-6, rtol=1e-5)


def gelu(fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Exercise 4.2: fn(x) must equal F.gelu(x, approximate="tanh"), to within 1e-6. The
    exact erf GELU differs by up to 5e-4 near ±2.7; ±1e4 catches a tanh built from exp."""
    verify("Exercise 4.2", cases(_gelu, fn, {
        "x = 0, 1, -1, 2, -2": torch.tensor([0.0, 1.0, -1.0, 2.0, -2.0]),
        "1,001 points from -6 to 6": torch.linspace(-6, 6, 1001),
        "large inputs: ±10, ±50, ±100, ±1e4":
            torch.tensor([10.0, -10.0, 50.0, -50.0, 100.0, -100.0, 1e4, -1e4]),
        "a (2, 3, 4) batch keeps its shape": _support.randn(7, 2, 3, 4, scale=3),
    }))


def _count_hint(diff: int, cfg: GPTConfig) -> str:
    """Which part of the model a count that is `diff` too high (or low) got wrong, if one fits."""
    d, n, v = cfg.emb_dim, cfg.n_layers, cfg.vocab_size
    if diff == v * d and cfg.tie_embeddings:
        return ("exactly the output head: with tie_embeddings=True it reuses the token "
                "embedding's weight, so it adds no parameters of its own")
    if diff == -v * d and not cfg.tie_embeddings:
        return ("exactly the output head, vocab_size × emb_dim: with tie_embeddings=False it has "
                "a weight of its own")
    if diff == 3 * d * n and not cfg.qkv_bias:
        return "exactly the query/key/value biases, but this config has qkv_bias=False"
    parts = [
        (cfg.context_length * d, "the position embedding, context_length × emb_dim"),
        (2 * d, "the final LayerNorm, a scale and a shift of emb_dim each"),
        (4 * d * n, "the LayerNorms inside the blocks: two per block, 2 × emb_dim each"),
        (3 * d * n, "the query/key/value biases, 3 × emb_dim per block (with qkv_bias)"),
        (d * n, "the attention output layer's bias, emb_dim per block"),
        (5 * d * n, "the feed-forward biases, 4 × emb_dim + emb_dim per block"),
        ((9 if cfg.qkv_bias else 6) * d * n, "the biases of the linear layers in the blocks"),
        ((2 * n + 1) * d, "one vector of each LayerNorm: each has a scale and a shift"),
        ((6 * d + 3) * d * n, "a quarter of the feed-forward layer: its hidden layer is "
                              "4 × emb_dim wide"),
        (v, "a bias of vocab_size in the output head, which has no bias"),
    ]
    if part := next((what for size, what in parts if size == abs(diff)), None):
        return f"{'too many' if diff > 0 else 'missing'}: exactly {part}"
    per_block = f" ({abs(diff) // n:,} per block)" if diff % n == 0 else ""
    return f"{abs(diff):,} {'too many' if diff > 0 else 'too few'}{per_block}"


def _count(fn: Callable, cfg: GPTConfig) -> None:
    got, want = fn(cfg), costs.parameter_count(cfg)
    fail_if(not isinstance(got, numbers.Real) or isinstance(got, bool),
            f"should return a number, got {type(got).__name__}")
    fail_if(got != want, f"the count is {got:,}, expected {want:,}: "
            f"{_count_hint(int(got - want), cfg)}")


def parameter_count(fn: Callable[[GPTConfig], int]) -> None:
    """Exercise 4.3: fn(cfg) must equal count_parameters(GPTModel(cfg)), for any GPTConfig."""
    gpt2, odd = CONFIGS["124M"], GPTConfig(vocab_size=1000, context_length=64, emb_dim=96,
                                           n_heads=3, n_layers=3, tie_embeddings=False)
    verify("Exercise 4.3", cases(_count, fn, {
        "cpu-tiny": CONFIGS["cpu-tiny"],
        "GPT-2 small, 124M: 124,439,808": gpt2,
        "GPT-2 small untied: the book's 163M": replace(gpt2, tie_embeddings=False),
        "cpu-small with qkv_bias=False": replace(CONFIGS["cpu-small"], qkv_bias=False),
        "vocabulary 1,000, context 64, width 96, 3 heads, 3 layers, untied": odd,
        "GPT-2 XL, 1558M": CONFIGS["1558M"],
    }))


@torch.no_grad()
def _block(fn: Callable, cfg: GPTConfig, shape, seed: int, std: float, training=False) -> None:
    with seeded(seed):
        block = randomize(TransformerBlock(cfg), std).train(training)
        x = torch.randn(*shape, cfg.emb_dim)
    given = x.clone()
    with seeded(seed + 1):
        want = block(x)
    with seeded(seed + 1):
        got = fn(block, given)
    fail_if(not torch.equal(given, x), "your function changed the x it was given (an in-place "
            "x += ...?); write x = x + ... so the caller's tensor stays as it was")
    fail_if(training and isinstance(got, torch.Tensor) and got.shape == want.shape
            and not torch.allclose(got, want, atol=1e-5, rtol=1e-4), "in training mode the "
            "result differs from the block's with the same seed: pass each sub-block's output "
            "through block.drop_shortcut before adding the shortcut, calling the modules in order "
            "(norm1, att, drop_shortcut, then norm2, ff, drop_shortcut)")
    block.eval()  # what the usual wrong blocks give, without drawing from the caller's RNG:
    n1, att, n2, ff = block.norm1, block.att, block.norm2, block.ff
    h, post, a = x + att(n1(x)), n1(x + att(x)), n1(x)
    normed_shortcut = a + att(a)
    expect_close(got, want, "the block's output", () if training else [
        ("it matches post-norm, norm after the addition as in the original transformer; GPT-2 "
         "normalizes each sub-block's input: x = x + att(norm1(x))", n2(post + ff(post))),
        ("it matches a block without shortcuts: add each sub-block's input back, "
         "x = x + att(norm1(x)), then x = x + ff(norm2(x))", ff(n2(att(n1(x))))),
        ("it matches a shortcut that carries the normalized x; it carries x itself: "
         "x + att(norm1(x))", n2(normed_shortcut) + ff(n2(normed_shortcut))),
        ("it matches the attention half only; the block goes on with x = x + ff(norm2(x))", h),
        ("it matches norm1 used twice; the feed-forward half has its own norm2", h + ff(n1(h))),
        ("it matches one shortcut around both halves; each half has its own: "
         "x = x + att(norm1(x)), then x = x + ff(norm2(x))", x + ff(n2(att(n1(x))))),
    ])


def block_forward(fn: Callable[[TransformerBlock, torch.Tensor], torch.Tensor]) -> None:
    """Exercise 4.4: fn(block, x) must equal block(x), a pre-norm TransformerBlock. Every
    parameter, biases and norms included, is random, so no mistake hides behind a zero."""
    small = GPTConfig(vocab_size=64, context_length=16, emb_dim=32, n_heads=4, n_layers=1)
    verify("Exercise 4.4", cases(_block, fn, {  # label: (config, shape, seed, std, training)
        "eval mode, 2 sequences of 5 tokens, width 32": (small, (2, 5), 10, 0.3),
        "eval mode, a single token": (small, (1, 1), 20, 0.3),
        "eval mode, GPT-2's width: 768, 12 heads": (CONFIGS["124M"], (1, 4), 30, 0.05),
        "training mode, dropout 0.1, the same seed": (small, (2, 6), 40, 0.3, True),
    }))


def _greedy_run(seed: int, batch: int, n_prompt: int, n_new: int, context: int, n_layers=2,
                drop_rate=0.0) -> tuple[GPTModel, torch.Tensor, torch.Tensor]:
    """A tiny GPT, a prompt for it and generate's greedy continuation, all from `seed`."""
    model = tiny_gpt(seed, 64, context, 32, 4, n_layers, std=0.3, tie_embeddings=False,
                     drop_rate=drop_rate).eval()
    ids = torch.randint(0, 64, (batch, n_prompt), generator=torch.Generator().manual_seed(seed))
    return model, ids, generate(model, ids, n_new, use_cache=False)


def _expect_same_tokens(got, want: torch.Tensor, n_prompt: int, hint: Callable[[int], str]) -> None:
    """Compare generated ids, naming the first new token that differs; hint(k) says why."""
    got = expect_shape(got, want.shape, "the result", f": the prompt's {n_prompt} tokens "
                       "followed by the new ones, for each sequence")
    if got.tolist() == want.tolist():
        return
    fail_if(got[:, :n_prompt].tolist() != want[:, :n_prompt].tolist(),
            "the result should start with the prompt, unchanged")
    b, k = _support.first(got != want)
    raise AssertionError(f"sequence {b}, new token {k - n_prompt + 1}: {got[b, k].item()}, "
                         f"expected {want[b, k].item()} (you have {got[b, n_prompt:].tolist()}, "
                         f"expected {want[b, n_prompt:].tolist()}); {hint(k - n_prompt + 1)}")


def _greedy(fn: Callable, seed: int, batch: int, n_prompt: int, n_new: int, training=False) -> None:
    model, ids, want = _greedy_run(seed, batch, n_prompt, n_new, 8, drop_rate=0.1 * training)
    model.train(training)
    try:
        with seeded(seed):
            got = fn(model, ids.clone(), n_new)
    except ValueError as err:
        if "exceed the context length" not in str(err):
            raise
        raise AssertionError(f"the model refused {str(err).split(' exceed')[0]}: it has only "
                             f"{model.cfg.context_length} positions, so give it the last "
                             "context_length tokens, ids[:, -context_length:]") from None
    crop = max(1, model.cfg.context_length - n_prompt + 2)  # new token k sees n_prompt + k - 1
    _expect_same_tokens(got, want, n_prompt, lambda k: (
        "switch dropout off while generating, with model.eval()" if training
        else f"from new token {crop} on, the sequence is longer than the context: give the "
        "model its last context_length tokens, ids[:, -context_length:]" if k >= crop
        else "the next token is the argmax of the logits at the last position, logits[:, -1, :]"))
    fail_if(model.training != training, f"the model was in {'training' if training else 'eval'} "
            "mode and your function left it in the other; remember model.training before "
            "switching to eval, and call model.train(was_training) at the end")


def greedy_generation(fn: Callable[[GPTModel, torch.Tensor, int], torch.Tensor]) -> None:
    """Exercise 4.5: fn(model, ids, max_new_tokens) must equal generate(..., use_cache=False).
    The model's context is 8 tokens, so longer sequences must be cropped."""
    verify("Exercise 4.5", cases(_greedy, fn, {  # label: (seed, batch, prompt, new, training)
        "a prompt of 3 tokens, 4 new: within the context of 8": (1, 1, 3, 4),
        "a batch of 2 prompts": (2, 2, 3, 5),
        "3 + 12 tokens: past the context, so crop": (3, 1, 3, 12),
        "a prompt of 11 tokens, longer than the context": (4, 2, 11, 4),
        "no new tokens: the prompt comes back": (5, 1, 4, 0),
        "a model in training mode, with dropout": (6, 2, 3, 10, True),
    }))


def _cached(fn: Callable, seed: int, batch: int, n_prompt: int, n_new: int, n_layers=2) -> None:
    model, ids, want = _greedy_run(seed, batch, n_prompt, n_new, 16, n_layers)
    calls: list[int] = []  # the tokens passed to each call of the model

    def record(module, args, kwargs):
        """Check each call as it is made, before it can crash: first the whole prompt into an
        empty cache, then one token per call, each at its own position."""
        given = dict(zip(("ids", "cache"), args, strict=False)) | kwargs
        length = getattr(given.get("cache"), "length", None)
        k, n = len(calls), given["ids"].shape[-1]
        calls.append(n)
        fail_if(length is None, f"call {k + 1} of the model passed no cache: model(ids, cache)")
        fail_if(k == 0 and n != n_prompt, f"the first call passed {n} token{'s' * (n != 1)}: "
                f"pass the whole prompt ({n_prompt} tokens) at once, so one call fills the cache "
                "with every prompt token's keys and values")
        fail_if(k == 0 and length != 0, f"the first call found {length} tokens in the cache: "
                "start with a new, empty one")
        fail_if(k > 0 and n != 1, f"call {k + 1} of the model passed {n} tokens: after the "
                "prompt pass only the newest token, shape (batch, 1); the cache holds the keys "
                "and values of the rest")
        fail_if(k > 0 and length != n_prompt + k - 1, f"call {k + 1} of the model started at "
                f"position {length}, but {n_prompt + k - 1} tokens came before it: the model "
                "advances cache.length itself at the end of each call; neither your loop nor "
                "your cache should")

    model.register_forward_pre_hook(record, with_kwargs=True)
    got = fn(model, ids.clone(), n_new)
    fail_if(n_new and not calls, "your function never called the model: call model(ids, cache)")
    fail_if(len(calls) > n_new + 1, f"your function called the model {len(calls)} times for "
            f"{n_new} new tokens; once for the prompt and once for each new token after the "
            "first is enough")
    _expect_same_tokens(got, want, n_prompt, lambda k: (
        "every layer must see the keys and values of all tokens so far (update returns the "
        "cached ones and the new ones, joined along the tokens dim, 2), and the next token "
        "is the argmax of the last position's logits"))


def cached_generation(fn: Callable[[GPTModel, torch.Tensor, int], torch.Tensor]) -> None:
    """Exercise 4.6: fn(model, ids, max_new_tokens) must give generate(..., use_cache=False)'s
    tokens, calling the model with the whole prompt, then with one token at a time. A hook
    records each call's length and cache.length: a loop that recomputes everything gives the
    same tokens."""
    verify("Exercise 4.6", cases(_cached, fn, {  # label: (seed, batch, prompt, new, layers)
        "a prompt of 4 tokens, 6 new": (11, 1, 4, 6),
        "a prompt of one token": (12, 1, 1, 8),
        "a batch of 3 prompts": (13, 3, 5, 6),
        "3 + 13 tokens: exactly the context of 16": (14, 2, 3, 13),
        "a model of 4 layers": (15, 2, 6, 7, 4),
        "no new tokens: the prompt comes back": (16, 1, 5, 0),
    }))
