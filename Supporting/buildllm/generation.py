"""Generating text with GPTModel (Meetings 4 and 5): the loop, a KV cache, and sampling.

Without a cache, every new token runs the model over the whole sequence again, though only
the last position's logits are used. With one, each layer keeps the keys and values of the
tokens it has seen, so a new token is one position's worth of work: the same tokens, faster.

Greedy decoding always takes the most likely token (Meeting 4). Sampling draws it from the
model's distribution instead, reshaped by a temperature and cut to the top k tokens or to
the top p of the probability (Meeting 5).

`stream` yields one sequence's tokens as they are chosen, for a chat that shows its reply
while it is written (Meeting 7). It, `generate` and `inference.generate_batch` (prompts of
many lengths in one batch) are thin layers over one loop, `generate_steps`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import closing

import torch

from .model import GPTModel
from .utils import eval_mode

__all__ = ["KVCache", "generate", "generate_steps", "next_token", "stream", "top_k_filter",
           "top_p_filter"]


class KVCache:
    """Every layer's keys and values so far, in tensors allocated once for `max_tokens`.

    Its size comes from the model's config: layers × key/value heads × head_dim per token.
    A model with grouped-query attention (`buildllm.decoder`) has fewer key/value heads than
    query heads, and that is the memory it saves here.
    """

    def __init__(self, model: GPTModel, batch_size: int, max_tokens: int | None = None):
        cfg = model.cfg
        self.max_tokens = cfg.context_length if max_tokens is None else max_tokens
        p = next(model.parameters())
        shape = (cfg.n_layers, batch_size, cfg.n_kv_heads, self.max_tokens, cfg.head_dim)
        self.keys = torch.zeros(shape, device=p.device, dtype=p.dtype)
        self.values = torch.zeros(shape, device=p.device, dtype=p.dtype)
        self.length = 0  # tokens stored; GPTModel.forward advances it after its last layer

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store this layer's new keys and values; return all of them so far."""
        end = self.length + k.shape[2]
        if end > self.max_tokens:
            raise ValueError(f"the cache holds {self.max_tokens} tokens; {end} do not fit")
        self.keys[layer, :, :, self.length : end] = k
        self.values[layer, :, :, self.length : end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]


def _check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the `k` largest logits of each row; the rest become -inf (probability 0)."""
    _check_sampling(1.0, k, None)
    k = min(k, logits.shape[-1])
    kth_best = logits.topk(k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth_best, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the fewest most-likely tokens whose probabilities add up to at least `p`.

    This is nucleus sampling (Holtzman et al., 2019): where the model is sure, few tokens
    survive; where it hesitates, many do. The most likely token always survives.
    """
    _check_sampling(1.0, None, p)
    if p == 1:  # keep all: in float32 the running sum can reach 1 before the last tokens
        return logits.clone()
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    before = probs.cumsum(dim=-1) - probs  # probability of the better tokens
    sorted_logits = sorted_logits.masked_fill(before >= p, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)


def next_token(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Choose one token id per row of `logits` (batch, vocab); returns shape (batch, 1).

    Temperature 0 is greedy: the argmax, and top_k and top_p change nothing. Otherwise the
    logits are divided by the temperature (below 1 sharpens, above 1 flattens), filtered by
    top_k, then top_p, and a token is drawn from their softmax with `generator`.
    """
    _check_sampling(temperature, top_k, top_p)
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)


def _chooser(temperature: float, top_k: int | None, top_p: float | None,
             seed: int | Sequence[int | None] | None, device) -> Callable:
    """`next_token` with these settings, drawing from one generator seeded with `seed`, or
    with a list of seeds from one generator per row (so a row's draws ignore its batch)."""
    _check_sampling(temperature, top_k, top_p)  # fail before any work
    if seed is None or isinstance(seed, int) or temperature == 0:
        g = None if not isinstance(seed, int) else torch.Generator(device).manual_seed(seed)
        return lambda logits: next_token(logits, temperature, top_k, top_p, g)
    rows = [None if s is None else torch.Generator(device).manual_seed(s) for s in seed]
    return lambda logits: torch.cat([next_token(row, temperature, top_k, top_p, g)
                                     for row, g in zip(logits.split(1), rows, strict=True)])


@torch.inference_mode()  # torch enters it again each time the generator resumes
def generate_steps(
    model: GPTModel,
    ids: torch.Tensor,
    max_new_tokens: int,
    choose: Callable[[torch.Tensor], torch.Tensor],
    *,
    eos_id: int | None = None,
    attention_mask: torch.Tensor | None = None,
    use_cache: bool = True,
) -> Iterator[torch.Tensor]:
    """The one decoding loop, under `generate`, `stream` and `inference.generate_batch`: yield
    each step's new tokens (batch, 1), chosen by `choose(last position's logits)`.

    With the cache, the prompt goes through the model once, then each new token alone;
    without it, the whole sequence again, its last context_length tokens. An `attention_mask`
    (batch, tokens) hides padding; new tokens are real. Stops once every row has produced
    `eos_id`. The model is in eval mode until the loop ends or is closed.
    """
    context = model.cfg.context_length
    with eval_mode(model):
        cache = KVCache(model, ids.shape[0], ids.shape[1] + max_new_tokens) if use_cache else None
        done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        new, mask = ids, attention_mask
        for _ in range(max_new_tokens):
            window = None if mask is None else mask[:, -context:]  # all of it, with the cache
            new = choose(model(new if use_cache else ids[:, -context:], cache,
                               attention_mask=window)[:, -1])
            yield new
            ids = torch.cat([ids, new], dim=1)
            if mask is not None:
                mask = torch.cat([mask, torch.ones_like(new, dtype=torch.bool)], dim=1)
            if eos_id is not None:
                done |= new.squeeze(1) == eos_id
                if done.all():
                    return


@torch.inference_mode()
def generate(
    model: GPTModel,
    ids: torch.Tensor,
    max_new_tokens: int,
    *,
    use_cache: bool = True,
    eos_id: int | None = None,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | Sequence[int | None] | None = None,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Append `max_new_tokens` tokens to `ids` (batch, tokens), each chosen by `next_token`.

    The defaults are greedy (temperature 0). With a temperature above 0 the tokens are
    sampled; the same `seed` gives the same tokens (without one, torch's global generator is
    used; a list gives each row its own). With `use_cache`, prompt and new tokens must fit in
    the context length. Without it, the model sees only the last context_length tokens, so
    generation can run on past it. An `attention_mask` lets left-padded rows share the batch.
    Stops early once every sequence has produced `eos_id`. The model is put in eval mode
    while it runs (no dropout) and returned to its previous mode afterwards.
    """
    context = model.cfg.context_length
    if ids.ndim != 2:
        raise ValueError(f"ids must have shape (batch, tokens), got {tuple(ids.shape)}")
    if use_cache and ids.shape[1] + max_new_tokens > context:
        raise ValueError(
            f"{ids.shape[1]} prompt + {max_new_tokens} new tokens exceed the context length "
            f"{context}; shorten them, or pass use_cache=False to slide the window"
        )
    choose = _chooser(temperature, top_k, top_p, seed, ids.device)
    steps = generate_steps(model, ids, max_new_tokens, choose, eos_id=eos_id,
                           attention_mask=attention_mask, use_cache=use_cache)
    return torch.cat([ids, *steps], dim=1)


def stream(
    model: GPTModel,
    ids: Sequence[int],
    max_new_tokens: int,
    *,
    eos_id: int | None = None,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
) -> Iterator[int]:
    """Yield the new tokens of one sequence one at a time, as `generate` chooses them.

    The same tokens as `generate(model, torch.tensor([ids]), max_new_tokens, ...)` with the
    cache, `eos_id` included when it comes (and then it stops), so a chat can show each token
    as soon as it exists instead of waiting for the whole reply. The settings are checked
    when `stream` is called; the model runs only while the iterator is read, in eval mode,
    and gets its previous mode back when the iterator ends or is closed.

    >>> tokens = list(stream(model, ids, 20))
    >>> tokens == generate(model, torch.tensor([ids]), 20)[0, len(ids):].tolist()
    True
    """
    context = model.cfg.context_length
    if len(ids) == 0:
        raise ValueError("stream needs at least one prompt token to continue from")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if len(ids) + max_new_tokens > context:
        raise ValueError(f"{len(ids)} prompt + {max_new_tokens} new tokens exceed the context "
                         f"length {context}; shorten the prompt or ask for fewer tokens")
    device = next(model.parameters()).device
    choose = _chooser(temperature, top_k, top_p, seed, device)
    return _ints(generate_steps(model, torch.tensor([list(ids)], device=device), max_new_tokens,
                                choose, eos_id=eos_id))


def _ints(steps: Iterator[torch.Tensor]) -> Iterator[int]:
    with closing(steps):  # closing this closes the loop: it frees the cache, restores the mode
        for step in steps:
            yield int(step)
