"""Checks for the Meeting 4 exercises: GPT-2's pieces, its size, and generating text with it.

Each check compares the learner's function with the reference in buildllm.model and
buildllm.generation on a few cases, and names the mistake a wrong answer matches (the unbiased
variance, post-norm, a window that is not cropped...). Every case draws its model and inputs
inside seeded(): the same cases in every run, and the learner's own RNG left as it was.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import replace
from functools import cache, partial

import torch
import torch.nn.functional as F

from ..generation import generate
from ..model import CONFIGS, GPTConfig, GPTModel, LayerNorm, TransformerBlock, count_parameters
from . import expect_tensor, verify
from ._support import Refuses, expect_close, fail_first, plain, randomize, seeded, tiny_gpt

__all__ = ["block_forward", "cached_generation", "gelu", "greedy_generation", "layer_norm",
           "parameter_count"]


# -- Exercise 4.1 ---------------------------------------------------------------------------
class _NoLayerNorm(Refuses):
    banned = frozenset({F.layer_norm, torch.layer_norm})  # nn.LayerNorm calls F.layer_norm
    advice = "this exercise asks you to write layer norm out, with mean and var"


def _layer_norm_mistakes(x, scale, shift, eps):
    mean, var = x.mean(dim=-1, keepdim=True), x.var(dim=-1, keepdim=True, unbiased=False)
    x_hat = (x - mean) / torch.sqrt(var + eps)
    every = (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + eps)
    mistakes = [
        ("it matches dividing by n - 1, the unbiased variance that .var() and .std() compute by "
         "default; layer norm divides by n: x.var(dim=-1, keepdim=True, unbiased=False)",
         (x - mean) / torch.sqrt(x.var(dim=-1, keepdim=True) + eps) * scale + shift),
        ("it matches (x - mean) / (std + eps); eps belongs inside the square root: "
         "(x - mean) / sqrt(var + eps)", (x - mean) / (var.sqrt() + eps) * scale + shift),
        ("it matches leaving eps out; add it to the variance, under the square root: "
         "(x - mean) / sqrt(var + eps)", (x - mean) / var.sqrt() * scale + shift),
        ("it matches eps = 1e-5; use the eps you are given",
         (x - mean) / torch.sqrt(var + 1e-5) * scale + shift),
        ("it matches normalizing over every number in x at once; normalize each token's vector "
         "on its own: mean and var over the last dim (dim=-1, keepdim=True)",
         every * scale + shift),
        ("it matches the normalized x without scale and shift: multiply by scale, then add shift",
         x_hat),
        ("it matches scale and shift swapped: the result is x_hat * scale + shift",
         x_hat * shift + scale),
    ]
    if x.ndim > 1:
        over_0 = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + eps)
        mistakes.append(("it matches normalizing over dim 0, across tokens; normalize each "
                         "token's vector: mean and var over the last dim (dim=-1, keepdim=True)",
                         over_0 * scale + shift))
    return mistakes


def layer_norm(fn: Callable[..., torch.Tensor]) -> None:
    """Exercise 4.1: fn(x, scale, shift, eps) must equal F.layer_norm over the last dim.

    A vector checked by hand catches the unbiased variance, tokens with a variance far below
    eps where eps goes, a constant vector a NaN. x refuses F.layer_norm.
    """
    @torch.no_grad()
    def compare(x, scale, shift, eps, want):
        got = plain(fn(x.clone().as_subclass(_NoLayerNorm), scale, shift, eps))
        if isinstance(got, torch.Tensor) and torch.isnan(got).any():
            raise AssertionError(
                "the result holds NaN: a constant vector has variance 0, and eps, added to the "
                "variance under the square root, is what keeps that from dividing by 0")
        expect_close(got, want, "the result", _layer_norm_mistakes(x, scale, shift, eps))

    def case(seed, shape=None, eps=1e-5, spread=1.0, learned=True, x=None):
        with seeded(seed):
            x = spread * (torch.randn(shape) + 2.0) if x is None else x
            d = x.shape[-1]
            scale = 1 + 0.5 * torch.randn(d) if learned else torch.ones(d)
            shift = torch.randn(d) if learned else torch.zeros(d)
        compare(x, scale, shift, eps, F.layer_norm(x, (d,), scale, shift, eps))

    def gpt2_width():
        with seeded(6):
            module = randomize(LayerNorm(768), 1.0)
            x = torch.randn(2, 4, 768)
        with torch.no_grad():
            compare(x, module.scale, module.shift, module.eps, module(x))

    verify("Exercise 4.1", [
        ("x = [1, 2, 3, 4], scale 1, shift 0",
         partial(case, 1, learned=False, x=torch.tensor([1.0, 2.0, 3.0, 4.0]))),
        ("2 x 3 tokens of 8, learned scale and shift: each on its own",
         partial(case, 2, (2, 3, 8))),
        ("tokens with a spread of 0.001 (variance 1e-6 < eps)",
         partial(case, 3, (3, 16), spread=1e-3)),
        ("a constant vector: the result is the shift, not NaN",
         partial(case, 4, x=torch.full((8,), 3.0))),
        ("eps = 0.1, passed in", partial(case, 5, (5, 6), eps=0.1, spread=0.5)),
        ("GPT-2's width, 768, against buildllm.model.LayerNorm", gpt2_width),
    ])


# -- Exercise 4.2 ---------------------------------------------------------------------------
class _NoGelu(Refuses):
    banned = frozenset({F.gelu})  # nn.GELU and buildllm's GELU call F.gelu
    advice = "this exercise asks you to write the tanh formula out"


def _gelu_mistakes(x):
    def tanh_gelu(c=None, power=3, half=0.5):
        c = math.sqrt(2 / math.pi) if c is None else c
        return half * x * (1 + torch.tanh(c * (x + 0.044715 * x**power)))

    return [
        ("it matches the exact GELU, x·Φ(x) with erf (F.gelu's default); GPT-2 uses the tanh "
         "approximation 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))", F.gelu(x)),
        ("it matches x·sigmoid(1.702·x), another approximation; write the tanh one",
         x * torch.sigmoid(1.702 * x)),
        ("it matches ReLU; GELU is 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))", torch.relu(x)),
        ("it matches 0.044715·x² where the formula has 0.044715·x³", tanh_gelu(power=2)),
        ("it matches 2/π where the formula has its square root, √(2/π)",
         tanh_gelu(c=2 / math.pi)),
        ("it is twice the right answer: the formula starts with 0.5·x", tanh_gelu(half=1.0)),
    ]


def gelu(fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Exercise 4.2: fn(x) must equal F.gelu(x, approximate="tanh"), to within 1e-6.

    The exact erf GELU differs from the tanh one by up to 5e-4 near ±2.7, so the points from
    -6 to 6 catch it; ±1e4 catches a tanh built from exp (NaN). x refuses F.gelu.
    """
    def case(x: torch.Tensor) -> None:
        got, want = plain(fn(x.clone().as_subclass(_NoGelu))), F.gelu(x, approximate="tanh")
        expect_close(got, want, "gelu(x)", _gelu_mistakes(x), x=x, atol=1e-6, rtol=1e-5)

    with seeded(7):
        batch = 3 * torch.randn(2, 3, 4)
    large = torch.tensor([10.0, -10.0, 50.0, -50.0, 100.0, -100.0, 1e4, -1e4])
    verify("Exercise 4.2", [
        ("x = 0, 1, -1, 2, -2", partial(case, torch.tensor([0.0, 1.0, -1.0, 2.0, -2.0]))),
        ("1,001 points from -6 to 6", partial(case, torch.linspace(-6, 6, 1001))),
        ("large inputs: ±10, ±50, ±100, ±1e4", partial(case, large)),
        ("a (2, 3, 4) batch keeps its shape", partial(case, batch)),
    ])


# -- Exercise 4.3 ---------------------------------------------------------------------------
@cache
def _parameters_of(cfg: GPTConfig) -> int:
    """The reference count: build the model on the meta device (shapes, no memory) and count."""
    with seeded(0), torch.device("meta"):
        return count_parameters(GPTModel(cfg))


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
    part = next((what for size, what in parts if size == abs(diff)), None)
    if part:
        return f"{'too many' if diff > 0 else 'missing'}: exactly {part}"
    per_block = f" ({abs(diff) // n:,} per block)" if diff % n == 0 else ""
    return f"{abs(diff):,} {'too many' if diff > 0 else 'too few'}{per_block}"


def parameter_count(fn: Callable[[GPTConfig], int]) -> None:
    """Exercise 4.3: fn(cfg) must equal count_parameters(GPTModel(cfg)), for any GPTConfig.

    The references are counted on the meta device, so the check takes no memory. When the
    count is off by exactly one part of the model, the message names the part.
    """
    def case(cfg: GPTConfig) -> None:
        got, want = fn(cfg), _parameters_of(cfg)
        if not isinstance(got, numbers.Real) or isinstance(got, bool):
            raise AssertionError(f"should return a number, got {type(got).__name__}")
        if got != want:
            raise AssertionError(
                f"the count is {got:,}, expected {want:,}: {_count_hint(int(got - want), cfg)}")

    gpt2 = CONFIGS["124M"]
    odd = GPTConfig(vocab_size=1000, context_length=64, emb_dim=96, n_heads=3, n_layers=3,
                    tie_embeddings=False)
    verify("Exercise 4.3", [
        ("cpu-tiny", partial(case, CONFIGS["cpu-tiny"])),
        ("GPT-2 small, 124M: 124,439,808", partial(case, gpt2)),
        ("GPT-2 small untied: the book's 163M", partial(case, replace(gpt2, tie_embeddings=False))),
        ("cpu-small with qkv_bias=False",
         partial(case, replace(CONFIGS["cpu-small"], qkv_bias=False))),
        ("vocabulary 1,000, context 64, width 96, 3 heads, 3 layers, untied", partial(case, odd)),
        ("GPT-2 XL, 1558M", partial(case, CONFIGS["1558M"])),
    ])


# -- Exercise 4.4 ---------------------------------------------------------------------------
def _block_mistakes(block: TransformerBlock, x: torch.Tensor):
    """What a block computes when written the usual wrong ways (in eval mode, no dropout)."""
    n1, att, n2, ff = block.norm1, block.att, block.norm2, block.ff
    h, post, a = x + att(n1(x)), n1(x + att(x)), n1(x)
    normed_shortcut = a + att(a)
    return [
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
    ]


def block_forward(fn: Callable[[TransformerBlock, torch.Tensor], torch.Tensor]) -> None:
    """Exercise 4.4: fn(block, x) must equal block(x), a pre-norm TransformerBlock.

    Every parameter, biases and norms included, is random, so no mistake hides behind a zero.
    In training mode both draw dropout masks from the same seed. x must come back unchanged.
    """
    @torch.no_grad()
    def case(cfg: GPTConfig, shape, seed: int, std: float, training: bool = False) -> None:
        with seeded(seed):
            block = randomize(TransformerBlock(cfg), std).train(training)
            x = torch.randn(*shape, cfg.emb_dim)
        given = x.clone()
        with seeded(seed + 1):
            want = block(x)
        with seeded(seed + 1):
            got = fn(block, given)
        fail_first(*[
            (not torch.equal(given, x), "your function changed the x it was given (an in-place "
             "x += ...?); write x = x + ... so the caller's tensor stays as it was"),
            (training and isinstance(got, torch.Tensor) and got.shape == want.shape
             and not torch.allclose(got, want, atol=1e-5, rtol=1e-4),
             "in training mode the result differs from the block's with the same seed: pass "
             "each sub-block's output through block.drop_shortcut before adding the shortcut, "
             "calling the modules in order (norm1, att, drop_shortcut, then norm2, ff, "
             "drop_shortcut)"),
        ])
        mistakes = () if training else _block_mistakes(block, x)
        expect_close(got, want, "the block's output", mistakes)

    small = GPTConfig(vocab_size=64, context_length=16, emb_dim=32, n_heads=4, n_layers=1)
    verify("Exercise 4.4", [
        ("eval mode, 2 sequences of 5 tokens, width 32", partial(case, small, (2, 5), 10, 0.3)),
        ("eval mode, a single token", partial(case, small, (1, 1), 20, 0.3)),
        ("eval mode, GPT-2's width: 768, 12 heads",
         partial(case, CONFIGS["124M"], (1, 4), 30, 0.05)),
        ("training mode, dropout 0.1, the same seed", partial(case, small, (2, 6), 40, 0.3, True)),
    ])


# -- Exercises 4.5 and 4.6 ------------------------------------------------------------------
def _prompt(seed: int, batch: int, length: int) -> torch.Tensor:
    return torch.randint(0, 64, (batch, length), generator=torch.Generator().manual_seed(seed))


def _expect_same_tokens(got, want: torch.Tensor, n_prompt: int, hint: Callable[[int], str]) -> None:
    """Compare generated ids, naming the first new token that differs; hint(k) says why."""
    got = expect_tensor(got, "the result")
    if got.shape != want.shape:
        raise AssertionError(
            f"the result has shape {tuple(got.shape)}, expected {tuple(want.shape)}: the "
            f"prompt's {n_prompt} tokens followed by the new ones, for each sequence")
    if got.tolist() == want.tolist():
        return
    if got[:, :n_prompt].tolist() != want[:, :n_prompt].tolist():
        raise AssertionError("the result should start with the prompt, unchanged")
    b, k = (int(i) for i in (got != want).nonzero()[0])
    raise AssertionError(
        f"sequence {b}, new token {k - n_prompt + 1}: {got[b, k].item()}, expected "
        f"{want[b, k].item()} (you have {got[b, n_prompt:].tolist()}, expected "
        f"{want[b, n_prompt:].tolist()}); {hint(k - n_prompt + 1)}")


def greedy_generation(fn: Callable[[GPTModel, torch.Tensor, int], torch.Tensor]) -> None:
    """Exercise 4.5: fn(model, ids, max_new_tokens) must equal generate(..., use_cache=False).

    The model has a context of 8 tokens, so longer sequences must be cropped; a model in
    training mode must be generated from in eval mode and left in training mode.
    """
    def case(seed: int, batch: int, n_prompt: int, n_new: int, training: bool = False) -> None:
        model = tiny_gpt(seed, 64, 8, 32, 4, 2, std=0.3, tie_embeddings=False,
                         drop_rate=0.1 if training else 0.0).eval()
        ids = _prompt(seed, batch, n_prompt)
        want = generate(model, ids, n_new, use_cache=False)
        model.train(training)
        try:
            with seeded(seed):
                got = fn(model, ids.clone(), n_new)
        except ValueError as err:
            if "exceed the context length" not in str(err):
                raise
            raise AssertionError(
                f"the model refused {str(err).split(' exceed')[0]}: it has only "
                f"{model.cfg.context_length} positions, so give it the last context_length "
                "tokens, ids[:, -context_length:]") from None
        # New token k is predicted from n_prompt + k - 1 tokens: from k = crop on, too many.
        crop = max(1, model.cfg.context_length - n_prompt + 2)

        def hint(k: int) -> str:
            if training:
                return "switch dropout off while generating, with model.eval()"
            if k >= crop:
                return (f"from new token {crop} on, the sequence is longer than the context: "
                        "give the model its last context_length tokens, ids[:, -context_length:]")
            return ("the next token is the argmax of the logits at the last position, "
                    "logits[:, -1, :]")

        _expect_same_tokens(got, want, n_prompt, hint)
        if model.training != training:
            raise AssertionError(
                f"the model was in {'training' if training else 'eval'} mode and your function "
                "left it in the other; remember model.training before switching to eval, and "
                "call model.train(was_training) at the end")

    verify("Exercise 4.5", [
        ("a prompt of 3 tokens, 4 new: within the context of 8", partial(case, 1, 1, 3, 4)),
        ("a batch of 2 prompts", partial(case, 2, 2, 3, 5)),
        ("3 + 12 tokens: past the context, so crop", partial(case, 3, 1, 3, 12)),
        ("a prompt of 11 tokens, longer than the context", partial(case, 4, 2, 11, 4)),
        ("no new tokens: the prompt comes back", partial(case, 5, 1, 4, 0)),
        ("a model in training mode, with dropout", partial(case, 6, 2, 3, 10, training=True)),
    ])


def _recorded_calls(model: GPTModel) -> list[tuple[int, int | None]]:
    """From now on, record (tokens passed, cache.length or None) for every call of the model."""
    calls: list[tuple[int, int | None]] = []

    def hook(module, args, kwargs):
        ids = args[0] if args else kwargs["ids"]
        cache = args[1] if len(args) > 1 else kwargs.get("cache")
        calls.append((ids.shape[-1], None if cache is None else cache.length))

    model.register_forward_pre_hook(hook, with_kwargs=True)
    return calls


def _expect_cached_calls(calls: list[tuple[int, int | None]], n_prompt: int, n_new: int) -> None:
    """One call with the whole prompt, then one token per call, each at its own position."""
    if n_new and not calls:
        raise AssertionError("your function never called the model: call model(ids, cache)")
    for k, (n, length) in enumerate(calls):
        fail_first(*[
            (length is None, f"call {k + 1} of the model passed no cache: model(ids, cache)"),
            (k == 0 and n != n_prompt, f"the first call passed {n} token{'s' * (n != 1)}: pass "
             f"the whole prompt ({n_prompt} tokens) at once, so one call fills the cache with "
             "every prompt token's keys and values"),
            (k == 0 and length != 0, f"the first call found {length} tokens in the cache: start "
             "with a new, empty one"),
            (k > 0 and n != 1, f"call {k + 1} of the model passed {n} tokens: after the prompt "
             "pass only the newest token, shape (batch, 1); the cache holds the keys and values "
             "of the rest"),
            (k > 0 and length != n_prompt + k - 1, f"call {k + 1} of the model started at "
             f"position {length}, but {n_prompt + k - 1} tokens came before it: the model "
             "advances cache.length itself at the end of each call; neither your loop nor your "
             "cache should"),
        ])
    if len(calls) > n_new + 1:
        raise AssertionError(
            f"your function called the model {len(calls)} times for {n_new} new tokens; once "
            "for the prompt and once for each new token after the first is enough")


def cached_generation(fn: Callable[[GPTModel, torch.Tensor, int], torch.Tensor]) -> None:
    """Exercise 4.6: fn(model, ids, max_new_tokens) must give generate(..., use_cache=False)'s
    tokens, calling the model once with the whole prompt and then once per token, with 1 token.

    A hook records each call's input length and cache.length: that tells a real cached loop
    from one that recomputes everything (same tokens, all the work).
    """
    def case(seed: int, batch: int, n_prompt: int, n_new: int, n_layers: int = 2) -> None:
        model = tiny_gpt(seed, 64, 16, 32, 4, n_layers, std=0.3, tie_embeddings=False).eval()
        ids = _prompt(seed, batch, n_prompt)
        want = generate(model, ids, n_new, use_cache=False)
        calls = _recorded_calls(model)
        try:
            got = fn(model, ids.clone(), n_new)
        except Exception as err:
            if calls and not isinstance(err, NotImplementedError):
                _expect_cached_calls(calls, n_prompt, n_new)  # may say why it crashed
            raise
        _expect_cached_calls(calls, n_prompt, n_new)
        _expect_same_tokens(got, want, n_prompt, lambda k: (
            "every layer must see the keys and values of all tokens so far (update returns the "
            "cached ones and the new ones, joined along the tokens dim, 2), and the next token "
            "is the argmax of the last position's logits"))

    verify("Exercise 4.6", [
        ("a prompt of 4 tokens, 6 new", partial(case, 11, 1, 4, 6)),
        ("a prompt of one token", partial(case, 12, 1, 1, 8)),
        ("a batch of 3 prompts", partial(case, 13, 3, 5, 6)),
        ("3 + 13 tokens: exactly the context of 16", partial(case, 14, 2, 3, 13)),
        ("a model of 4 layers", partial(case, 15, 2, 6, 7, n_layers=4)),
        ("no new tokens: the prompt comes back", partial(case, 16, 1, 5, 0)),
    ])
