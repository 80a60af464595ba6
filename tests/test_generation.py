"""Greedy generation: the KV cache changes the speed, never the tokens."""

import pytest
import torch

from buildllm.generation import KVCache, generate

# `model`: conftest's tiny random GPT (97 tokens, context 32)


@torch.no_grad()
def test_feeding_tokens_through_the_cache_in_chunks_gives_the_full_forward_logits(model):
    ids = torch.randint(0, 97, (2, 20), generator=torch.Generator().manual_seed(0))
    full = model(ids)
    cache = KVCache(model, batch_size=2)
    chunks = [model(ids[:, a:b], cache) for a, b in [(0, 5), (5, 6), (6, 13), (13, 20)]]
    torch.testing.assert_close(torch.cat(chunks, dim=1), full)
    assert cache.length == 20


@pytest.mark.parametrize("prompt_length", [1, 3, 10])
def test_cached_and_uncached_generation_give_the_same_tokens(model, prompt_length):
    prompt = torch.randint(0, 97, (3, prompt_length), generator=torch.Generator().manual_seed(1))
    cached = generate(model, prompt, 32 - prompt_length)
    assert cached.shape == (3, 32)
    assert torch.equal(cached[:, :prompt_length], prompt)
    assert torch.equal(cached, generate(model, prompt, 32 - prompt_length, use_cache=False))


def test_without_the_cache_the_window_slides_past_the_context(model):
    out = generate(model, torch.zeros(1, 30, dtype=torch.long), 10, use_cache=False)
    assert out.shape == (1, 40)


def test_with_the_cache_the_context_limit_is_a_clear_error(model):
    with pytest.raises(ValueError, match="30 prompt \\+ 10 new tokens exceed .* use_cache=False"):
        generate(model, torch.zeros(1, 30, dtype=torch.long), 10)
    cache = KVCache(model, batch_size=1, max_tokens=4)
    with pytest.raises(ValueError, match="the cache holds 4 tokens; 5 do not fit"):
        model(torch.zeros(1, 5, dtype=torch.long), cache)


def test_a_prompt_without_a_batch_dimension_is_refused(model):
    with pytest.raises(ValueError, match=r"shape \(batch, tokens\)"):
        generate(model, torch.zeros(5, dtype=torch.long), 3)


def test_generation_stops_once_every_sequence_has_ended(model):
    prompt = torch.zeros(2, 2, dtype=torch.long)  # two equal rows end together
    free = generate(model, prompt, 20)
    eos = int(free[0, 4])  # pretend the third new token is the end of text
    first_eos = free[0, 2:].tolist().index(eos)
    assert generate(model, prompt, 20, eos_id=eos).shape == (2, 2 + first_eos + 1)


def test_generation_leaves_the_model_in_the_mode_it_found(model):
    model.train()
    generate(model, torch.zeros(1, 2, dtype=torch.long), 2)
    assert model.training
    model.eval()
