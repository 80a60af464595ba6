"""Generating text with GPTModel (Meetings 4 and 5): the loop, and a KV cache that speeds it up.

Without a cache, every new token runs the model over the whole sequence again, though only
the last position's logits are used. With one, each layer keeps the keys and values of the
tokens it has seen, so a new token is one position's worth of work: the same tokens, faster.
"""

from __future__ import annotations

import torch

from .model import GPTModel

__all__ = ["KVCache", "generate"]


class KVCache:
    """Every layer's keys and values so far, in tensors allocated once for `max_tokens`."""

    def __init__(self, model: GPTModel, batch_size: int, max_tokens: int | None = None):
        cfg = model.cfg
        self.max_tokens = cfg.context_length if max_tokens is None else max_tokens
        p = next(model.parameters())
        shape = (cfg.n_layers, batch_size, cfg.n_heads, self.max_tokens, cfg.head_dim)
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


@torch.inference_mode()
def generate(
    model: GPTModel,
    ids: torch.Tensor,
    max_new_tokens: int,
    *,
    use_cache: bool = True,
    eos_id: int | None = None,
) -> torch.Tensor:
    """Append `max_new_tokens` greedy tokens (the most likely each time) to `ids` (batch, tokens).

    With `use_cache`, prompt and new tokens must fit in the context length. Without it, the
    model sees only the last context_length tokens, so generation can run on past it. Stops
    early once every sequence has produced `eos_id`. The model is put in eval mode while it
    runs (no dropout) and returned to its previous mode afterwards.
    """
    context = model.cfg.context_length
    if ids.ndim != 2:
        raise ValueError(f"ids must have shape (batch, tokens), got {tuple(ids.shape)}")
    if use_cache and ids.shape[1] + max_new_tokens > context:
        raise ValueError(
            f"{ids.shape[1]} prompt + {max_new_tokens} new tokens exceed the context length "
            f"{context}; shorten them, or pass use_cache=False to slide the window"
        )
    was_training = model.training
    model.eval()
    cache = KVCache(model, ids.shape[0], ids.shape[1] + max_new_tokens) if use_cache else None
    done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    step_input = ids
    for _ in range(max_new_tokens):
        logits = model(step_input if use_cache else ids[:, -context:], cache)[:, -1]
        next_id = logits.argmax(dim=-1, keepdim=True)
        ids = torch.cat([ids, next_id], dim=1)
        step_input = next_id
        if eos_id is not None:
            done |= next_id.squeeze(1) == eos_id
            if done.all():
                break
    model.train(was_training)
    return ids
