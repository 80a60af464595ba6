"""Answers to the Meeting 4 exercises, right and wrong, for tests/test_exercise_checks.py.

Each wrong answer is a mistake learners make, named after it.
"""

import math

import torch
import torch.nn.functional as F

from buildllm import check
from buildllm.generation import KVCache

# -- Exercise 4.1: layer norm ---------------------------------------------------------------


def layer_norm_with_var(x, scale, shift, eps=1e-5):
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + eps) * scale + shift


def layer_norm_centered_first(x, scale, shift, eps=1e-5):
    centered = x - x.mean(-1, keepdim=True)
    return scale * centered * torch.rsqrt(centered.pow(2).mean(-1, keepdim=True) + eps) + shift


def layer_norm_choosing(x, scale, shift, eps, dim=-1, var=None, denominator=None):
    """layer_norm_with_var with switches for the usual mistakes."""
    mean = x.mean(dim=dim, keepdim=True)
    v = x.var(dim=dim, keepdim=True, unbiased=False) if var is None else var(x)
    d = torch.sqrt(v + eps) if denominator is None else denominator(v, eps)
    return (x - mean) / d * scale + shift


WRONG_LAYER_NORM = {
    "unbiased variance": lambda x, s, b, eps: layer_norm_choosing(
        x, s, b, eps, var=lambda x: x.var(dim=-1, keepdim=True)
    ),
    "unbiased std": lambda x, s, b, eps: (
        (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + eps) * s + b
    ),
    "eps outside the square root": lambda x, s, b, eps: layer_norm_choosing(
        x, s, b, eps, denominator=lambda v, eps: v.sqrt() + eps
    ),
    "no eps": lambda x, s, b, eps: layer_norm_choosing(
        x, s, b, eps, denominator=lambda v, eps: v.sqrt()
    ),
    "eps fixed at 1e-5": lambda x, s, b, eps: layer_norm_with_var(x, s, b),
    "normalizes over dim 0": lambda x, s, b, eps: layer_norm_choosing(x, s, b, eps, dim=0),
    "normalizes over every element": lambda x, s, b, eps: (
        (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + eps) * s + b
    ),
    "mean without keepdim": lambda x, s, b, eps: (
        (x - x.mean(-1)) / torch.sqrt(x.var(-1, unbiased=False) + eps) * s + b
    ),
    "scale and shift swapped": lambda x, s, b, eps: layer_norm_with_var(x, b, s, eps),
    "no scale and shift": lambda x, s, b, eps: layer_norm_with_var(x, 1.0, 0.0, eps),
    "calls F.layer_norm": lambda x, s, b, eps: F.layer_norm(x, s.shape, s, b, eps),
    "uses nn.LayerNorm": lambda x, s, b, eps: torch.nn.LayerNorm(x.shape[-1], eps)(x),
}


# -- Exercise 4.2: GELU ---------------------------------------------------------------------


def gelu_with_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def gelu_with_sigmoid(x):
    """0.5·(1 + tanh(z)) is sigmoid(2z): the same function, written another way."""
    return x * torch.sigmoid(2 * math.sqrt(2 / math.pi) * (x + 0.044715 * x.pow(3)))


def gelu_tanh_from_exp(x):
    """tanh(z) = (e^2z - 1) / (e^2z + 1): right on paper, NaN once e^2z overflows."""
    e = torch.exp(2 * math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))
    return 0.5 * x * (1 + (e - 1) / (e + 1))


WRONG_GELU = {
    "exact GELU with erf": lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2))),
    "calls F.gelu": lambda x: F.gelu(x, approximate="tanh"),
    "uses nn.GELU": lambda x: torch.nn.GELU(approximate="tanh")(x),
    "sigmoid approximation": lambda x: x * torch.sigmoid(1.702 * x),
    "ReLU": torch.relu,
    "x squared, not cubed": lambda x: (
        0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**2)))
    ),
    "2/pi without the square root": lambda x: (
        0.5 * x * (1 + torch.tanh(2 / math.pi * (x + 0.044715 * x**3)))
    ),
    "missing the 0.5": lambda x: 2 * gelu_with_tanh(x),
    "0.0447 rounded": lambda x: (
        0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.0447 * x**3)))
    ),
    "tanh from exp overflows": gelu_tanh_from_exp,
}


# -- Exercise 4.3: parameter count ----------------------------------------------------------


def count_by_parts(cfg):
    d = cfg.emb_dim
    embeddings = cfg.vocab_size * d + cfg.context_length * d
    attention = d * 3 * d + (3 * d if cfg.qkv_bias else 0) + d * d + d
    feed_forward = d * 4 * d + 4 * d + 4 * d * d + d
    norms = 2 * 2 * d
    head = 0 if cfg.tie_embeddings else cfg.vocab_size * d
    return embeddings + cfg.n_layers * (attention + feed_forward + norms) + 2 * d + head


def count_by_shapes(cfg):
    """Every parameter tensor's shape, listed as in the model, multiplied out and summed."""
    d, v = cfg.emb_dim, cfg.vocab_size
    norms = [(d,), (d,), (d,), (d,)]
    attention = [(3 * d, d), (d, d), (d,)] + ([(3 * d,)] if cfg.qkv_bias else [])
    feed_forward = [(4 * d, d), (4 * d,), (d, 4 * d), (d,)]
    block = norms + attention + feed_forward
    shapes = [(v, d), (cfg.context_length, d), *block * cfg.n_layers, (d,), (d,)]
    if not cfg.tie_embeddings:
        shapes.append((v, d))
    return sum(math.prod(s) for s in shapes)


WRONG_COUNT = {
    "counts the tied output head again": lambda c: (
        count_by_parts(c) + (c.vocab_size * c.emb_dim if c.tie_embeddings else 0)
    ),
    "leaves out the untied output head": lambda c: (
        count_by_parts(c) - (0 if c.tie_embeddings else c.vocab_size * c.emb_dim)
    ),
    "no position embedding": lambda c: count_by_parts(c) - c.context_length * c.emb_dim,
    "no final LayerNorm": lambda c: count_by_parts(c) - 2 * c.emb_dim,
    "LayerNorm with a scale only": lambda c: count_by_parts(c) - c.emb_dim * (2 * c.n_layers + 1),
    "always counts the qkv biases": lambda c: (
        count_by_parts(c) + (0 if c.qkv_bias else 3 * c.emb_dim * c.n_layers)
    ),
    "an output head with a bias": lambda c: count_by_parts(c) + c.vocab_size,
    "feed-forward without the 4x": lambda c: (
        count_by_parts(c) - c.n_layers * (6 * c.emb_dim**2 + 3 * c.emb_dim)
    ),
    "weights only, no biases": lambda c: (
        count_by_parts(c) - c.n_layers * c.emb_dim * (9 if c.qkv_bias else 6)
    ),
    "context length for the vocabulary": lambda c: (
        count_by_parts(c) + (c.context_length - c.vocab_size) * c.emb_dim
    ),
    "returns a dict of counts": lambda c: {
        "total": count_by_parts(c),
        "trainable": count_by_parts(c),
    },
    "no LayerNorms in the blocks": lambda c: count_by_parts(c) - 4 * c.emb_dim * c.n_layers,
    "no qkv biases, though qkv_bias=True": lambda c: (
        count_by_parts(c) - (3 * c.emb_dim * c.n_layers if c.qkv_bias else 0)
    ),
    "no bias on the attention output": lambda c: count_by_parts(c) - c.emb_dim * c.n_layers,
    "no feed-forward biases": lambda c: count_by_parts(c) - 5 * c.emb_dim * c.n_layers,
}


# -- Exercise 4.4: the transformer block ----------------------------------------------------


def block_forward_two_lines(block, x):
    x = x + block.drop_shortcut(block.att(block.norm1(x)))
    return x + block.drop_shortcut(block.ff(block.norm2(x)))


def block_forward_with_shortcut(block, x):
    shortcut = x
    x = block.norm1(x)
    x = block.att(x)
    x = block.drop_shortcut(x)
    x = x + shortcut
    shortcut = x
    x = block.norm2(x)
    x = block.ff(x)
    x = block.drop_shortcut(x)
    return x + shortcut


def block_post_norm(block, x):
    x = block.norm1(x + block.drop_shortcut(block.att(x)))
    return block.norm2(x + block.drop_shortcut(block.ff(x)))


def block_normalized_shortcut(block, x):
    x = block.norm1(x)
    x = x + block.att(x)
    x = block.norm2(x)
    return x + block.ff(x)


def block_in_place(block, x):
    x += block.drop_shortcut(block.att(block.norm1(x)))
    x += block.drop_shortcut(block.ff(block.norm2(x)))
    return x


WRONG_BLOCK = {
    "post-norm": block_post_norm,
    "no shortcuts": lambda b, x: b.ff(b.norm2(b.att(b.norm1(x)))),
    "the shortcut carries the normalized x": block_normalized_shortcut,
    "attention half only": lambda b, x: x + b.att(b.norm1(x)),
    "norm1 twice": lambda b, x: (h := x + b.att(b.norm1(x))) + b.ff(b.norm1(h)),
    "one shortcut around both halves": lambda b, x: x + b.ff(b.norm2(b.att(b.norm1(x)))),
    "no dropout on the shortcut": lambda b, x: (h := x + b.att(b.norm1(x))) + b.ff(b.norm2(h)),
    "dropout on the sum": lambda b, x: b.drop_shortcut(
        (h := b.drop_shortcut(x + b.att(b.norm1(x)))) + b.ff(b.norm2(h))
    ),
    "adds in place": block_in_place,
}


# -- Exercise 4.5: greedy generation --------------------------------------------------------


@torch.no_grad()
def greedy_with_for(model, ids, max_new_tokens):
    was_training = model.training
    model.eval()
    context = model.cfg.context_length
    for _ in range(max_new_tokens):
        logits = model(ids[:, -context:])
        next_id = logits[:, -1, :].argmax(dim=-1, keepdim=True)
        ids = torch.cat([ids, next_id], dim=1)
    model.train(was_training)
    return ids


def greedy_with_list(model, ids, max_new_tokens):
    """Keeps the tokens in a Python list and tensorizes a window at every step."""
    mode = model.training
    model.train(False)
    rows = ids.tolist()
    with torch.inference_mode():
        while len(rows[0]) < ids.shape[1] + max_new_tokens:
            window = torch.tensor([row[-model.cfg.context_length :] for row in rows])
            _, best = torch.max(model(window)[:, -1], dim=-1)
            rows = [row + [b] for row, b in zip(rows, best.tolist(), strict=True)]
    model.train(mode)
    return torch.tensor(rows)


@torch.no_grad()
def greedy_choosing(model, ids, max_new_tokens, crop=None, position=-1, evaluate=True):
    """greedy_with_for with switches for the usual mistakes; it leaves the model in eval mode."""
    if evaluate:
        model.eval()
    context = model.cfg.context_length
    for _ in range(max_new_tokens):
        logits = model(ids[:, -context:] if crop is None else crop(ids, context))
        ids = torch.cat([ids, logits[:, position].argmax(-1, keepdim=True)], dim=1)
    return ids


def greedy_without_restoring(model, ids, max_new_tokens):
    return greedy_choosing(model, ids, max_new_tokens)


@torch.no_grad()
def greedy_sampling(model, ids, max_new_tokens):
    was_training = model.training
    model.eval()
    for _ in range(max_new_tokens):
        probs = model(ids[:, -model.cfg.context_length :])[:, -1].softmax(-1)
        ids = torch.cat([ids, torch.multinomial(probs, 1)], dim=1)
    model.train(was_training)
    return ids


@torch.no_grad()
def greedy_prepending(model, ids, max_new_tokens):
    was_training = model.training
    model.eval()
    for _ in range(max_new_tokens):
        next_id = model(ids[:, -model.cfg.context_length :])[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([next_id, ids], dim=1)  # the new token goes in front
    model.train(was_training)
    return ids


def restoring(fn):
    def answer(model, ids, max_new_tokens):
        was_training = model.training
        out = fn(model, ids, max_new_tokens)
        model.train(was_training)
        return out

    answer.__name__ = fn.__name__
    return answer


WRONG_GREEDY = {
    "no cropping": restoring(lambda m, i, n: greedy_choosing(m, i, n, crop=lambda ids, c: ids)),
    "crops the start, not the end": restoring(
        lambda m, i, n: greedy_choosing(m, i, n, crop=lambda ids, c: ids[:, :c])
    ),
    "crops one token too many": restoring(
        lambda m, i, n: greedy_choosing(m, i, n, crop=lambda ids, c: ids[:, -(c - 1) :])
    ),
    "the first position's logits": restoring(lambda m, i, n: greedy_choosing(m, i, n, position=0)),
    "forgets model.eval()": restoring(lambda m, i, n: greedy_choosing(m, i, n, evaluate=False)),
    "leaves the model in eval mode": greedy_without_restoring,
    "samples instead of taking the argmax": greedy_sampling,
    "returns only the new tokens": lambda m, i, n: greedy_with_for(m, i, n)[:, i.shape[1] :],
    "prepends each new token": greedy_prepending,
}


# -- Exercise 4.6: generation with a KV cache -----------------------------------------------


@torch.no_grad()
def cached_with_kvcache(model, ids, max_new_tokens):
    model.eval()
    cache = KVCache(model, ids.shape[0], ids.shape[1] + max_new_tokens)
    step = ids
    for _ in range(max_new_tokens):
        next_id = model(step, cache)[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, next_id], dim=1)
        step = next_id
    return ids


@torch.no_grad()
def cached_calling_forward(model, ids, max_new_tokens):
    """model.forward(...) where model(...) belongs: the result is right, but hooks never run."""
    model.eval()
    cache = KVCache(model, ids.shape[0], ids.shape[1] + max_new_tokens)
    step = ids
    for _ in range(max_new_tokens):
        next_id = model.forward(step, cache)[:, -1].argmax(-1, keepdim=True)
        ids, step = torch.cat([ids, next_id], dim=1), next_id
    return ids


@torch.no_grad()
def cached_one_step_too_many(model, ids, max_new_tokens):
    """range(max_new_tokens + 1): one token more than asked for, and one call more."""
    model.eval()
    cache = KVCache(model, ids.shape[0], model.cfg.context_length)
    logits = model(ids, cache)
    for _ in range(max_new_tokens + 1):
        next_id = logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, next_id], dim=1)
        logits = model(next_id, cache)
    return ids


class ListCache:
    """A cache of Python lists, one entry per layer, grown with torch.cat."""

    def __init__(self, n_layers, double_count=False, only_new=False):
        self.keys, self.values = [None] * n_layers, [None] * n_layers
        self.length = 0
        self.double_count, self.only_new = double_count, only_new

    def update(self, layer, k, v):
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
        if not self.only_new:
            self.keys[layer], self.values[layer] = k, v
        if self.double_count and layer == len(self.keys) - 1:
            self.length += k.shape[2] if self.length == 0 else 1
        return k, v


@torch.no_grad()
def cached_with_list_cache(model, ids, max_new_tokens, **cache_options):
    """Calls the model once more than needed, after the last token; that is allowed."""
    model.eval()
    cache = ListCache(model.cfg.n_layers, **cache_options)
    logits = model(ids, cache)
    for _ in range(max_new_tokens):
        next_id = logits[:, -1:].argmax(-1)
        ids = torch.cat([ids, next_id], dim=1)
        logits = model(next_id, cache=cache)
    return ids


@torch.no_grad()
def cached_choosing(model, ids, max_new_tokens, batch=None, room=None, feed=None, prefill=True):
    """cached_with_kvcache with switches for the usual mistakes."""
    model.eval()
    n_batch = ids.shape[0] if batch is None else batch
    cache = KVCache(model, n_batch, ids.shape[1] + max_new_tokens if room is None else room)
    if not prefill:  # the prompt one token at a time
        for t in range(ids.shape[1] - 1):
            model(ids[:, t : t + 1], cache)
    step = ids if prefill else ids[:, -1:]
    for _ in range(max_new_tokens):
        next_id = model(step, cache)[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, next_id], dim=1)
        step = next_id if feed is None else feed(ids)
    return ids


@torch.no_grad()
def cached_new_cache_every_step(model, ids, max_new_tokens):
    """Recomputes everything: a fresh cache and the whole sequence for every token."""
    model.eval()
    for _ in range(max_new_tokens):
        cache = KVCache(model, ids.shape[0], ids.shape[1])
        next_id = model(ids, cache)[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, next_id], dim=1)
    return ids


def cached_sharing_one_cache(model, ids, max_new_tokens, shared={}):  # noqa: B006
    """Keeps one cache across calls, so the second prompt finds the first one's tokens in it."""
    cache = shared.setdefault("cache", ListCache(model.cfg.n_layers))
    with torch.no_grad():
        step = ids
        for _ in range(max_new_tokens):
            next_id = model(step, cache)[:, -1].argmax(-1, keepdim=True)
            ids, step = torch.cat([ids, next_id], dim=1), next_id
    return ids


WRONG_CACHED = {
    "no cache at all": lambda m, i, n: greedy_with_for(m, i, n),
    "a new cache and the whole sequence every step": cached_new_cache_every_step,
    "prefills one token at a time": lambda m, i, n: cached_choosing(m, i, n, prefill=False),
    "advances cache.length itself": lambda m, i, n: cached_with_list_cache(
        m, i, n, double_count=True
    ),
    "update returns only the new keys and values": lambda m, i, n: cached_with_list_cache(
        m, i, n, only_new=True
    ),
    "a cache for one sequence": lambda m, i, n: cached_choosing(m, i, n, batch=1),
    "no room for the prompt in the cache": lambda m, i, n: cached_choosing(m, i, n, room=n),
    "feeds the whole sequence to the cache": lambda m, i, n: cached_choosing(
        m, i, n, feed=lambda ids: ids
    ),
    "one cache shared by every call": cached_sharing_one_cache,
    "calls model.forward, not model": cached_calling_forward,
    "one step too many": cached_one_step_too_many,
}


# (exercise, its check, right answers, wrong answers by the mistake they make)
EXERCISES = [
    (
        "4.1",
        check.meeting4.layer_norm,
        [layer_norm_with_var, layer_norm_centered_first],
        WRONG_LAYER_NORM,
    ),
    ("4.2", check.meeting4.gelu, [gelu_with_tanh, gelu_with_sigmoid], WRONG_GELU),
    ("4.3", check.meeting4.parameter_count, [count_by_parts, count_by_shapes], WRONG_COUNT),
    (
        "4.4",
        check.meeting4.block_forward,
        [block_forward_two_lines, block_forward_with_shortcut],
        WRONG_BLOCK,
    ),
    ("4.5", check.meeting4.greedy_generation, [greedy_with_for, greedy_with_list], WRONG_GREEDY),
    (
        "4.6",
        check.meeting4.cached_generation,
        [cached_with_kvcache, cached_with_list_cache],
        WRONG_CACHED,
    ),
]
