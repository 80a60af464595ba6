"""Sampling: temperature, top-k and top-p keep what Hugging Face's warpers keep, and draw fairly."""

import pytest
import torch
from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from buildllm.generation import generate, next_token, top_k_filter, top_p_filter

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py
# `model`: conftest's tiny random GPT (97 tokens, context 32)


def random_logits(rows: int, vocab: int, seed: int) -> torch.Tensor:
    """Rows from flat to very peaked, as a model's logits are from one position to the next."""
    g = torch.Generator().manual_seed(seed)
    spread = torch.logspace(-1, 1, rows).unsqueeze(1)  # standard deviations 0.1 to 10
    return torch.randn(rows, vocab, generator=g, dtype=torch.float64) * spread


def kept(logits: torch.Tensor) -> torch.Tensor:
    return logits > float("-inf")


NO_IDS = torch.zeros(1, 0, dtype=torch.long)  # the warpers take the ids so far; these ignore them


@pytest.mark.parametrize("vocab", [2, 10, 97, 50257])
@pytest.mark.parametrize("k", [1, 2, 5, 40])
def test_top_k_keeps_what_hugging_face_keeps(vocab, k):
    logits = random_logits(200 if vocab < 1000 else 10, vocab, seed=vocab + k)
    expected = TopKLogitsWarper(k)(NO_IDS, logits)
    assert torch.equal(kept(top_k_filter(logits, k)), kept(expected))
    assert kept(top_k_filter(logits, k)).sum(-1).tolist() == [min(k, vocab)] * len(logits)


def test_top_k_keeps_every_token_tied_with_the_kth():
    logits = torch.tensor([[3.0, 1.0, 2.0, 2.0, 0.0]])
    assert kept(top_k_filter(logits, 2)).tolist() == [[True, False, True, True, False]]
    assert torch.equal(kept(top_k_filter(logits, 2)),
                       kept(TopKLogitsWarper(2)(NO_IDS, logits)))


@pytest.mark.parametrize("vocab", [2, 10, 97, 50257])
@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.9, 0.95])
def test_top_p_keeps_what_hugging_face_keeps(vocab, p):
    logits = random_logits(200 if vocab < 1000 else 10, vocab, seed=vocab + int(100 * p))
    expected = TopPLogitsWarper(p)(NO_IDS, logits)
    assert torch.equal(kept(top_p_filter(logits, p)), kept(expected))


def test_top_p_keeps_the_fewest_tokens_that_reach_p():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    assert kept(top_p_filter(logits, 0.5)).tolist() == [[True, False, False, False]]
    assert kept(top_p_filter(logits, 0.51)).tolist() == [[True, True, False, False]]
    assert kept(top_p_filter(logits, 0.9)).tolist() == [[True, True, True, False]]


def test_filters_keep_the_surviving_logits_unchanged():
    logits = random_logits(20, 50, seed=3)
    for filtered in (top_k_filter(logits, 7), top_p_filter(logits, 0.8)):
        assert torch.equal(filtered[kept(filtered)], logits[kept(filtered)])


@pytest.mark.parametrize("vocab", [10, 97, 50257])
def test_top_p_of_one_keeps_everything(vocab):
    # In float32 the running sum of a peaked row reaches 1.0 before its last tokens,
    # so "the better tokens already hold p" must not be what decides p = 1.
    logits = random_logits(50, vocab, seed=vocab).float()
    assert kept(top_p_filter(logits, 1.0)).all()


@pytest.mark.parametrize("vocab", [10, 97, 50257])
def test_a_top_k_of_the_vocabulary_or_more_keeps_everything(vocab):
    logits = random_logits(50, vocab, seed=vocab).float()
    assert kept(top_k_filter(logits, vocab)).all()
    assert kept(top_k_filter(logits, vocab + 1000)).all()


@pytest.mark.parametrize("temperature, k, p", [(0.7, 5, 0.9), (1.5, 20, 0.5), (1.0, 3, 1.0)])
def test_next_token_draws_only_from_what_hugging_face_keeps(temperature, k, p):
    logits = random_logits(50, 97, seed=1).float()
    processed = logits
    for warper in (TemperatureLogitsWarper(temperature), TopKLogitsWarper(k),
                   TopPLogitsWarper(p)):  # the order of Hugging Face's generate
        processed = warper(NO_IDS, processed)
    allowed = kept(processed)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        drawn = next_token(logits, temperature, k, p, generator=g)
        assert allowed.gather(1, drawn).all()


def test_temperature_zero_is_the_argmax_whatever_top_k_and_top_p_say():
    logits = random_logits(30, 97, seed=2)
    expected = logits.argmax(dim=-1, keepdim=True)
    assert torch.equal(next_token(logits), expected)
    assert torch.equal(next_token(logits, 0.0, top_k=5, top_p=0.1), expected)


def frequencies(logits_row: torch.Tensor, draws: int, seed: int, **sampling) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = next_token(logits_row.expand(draws, -1), generator=g, **sampling)
    return torch.bincount(ids.flatten(), minlength=logits_row.numel()).double() / draws


def assert_frequencies_match(observed: torch.Tensor, expected: torch.Tensor, draws: int):
    """Each frequency within 5 standard errors of its probability: a fair die passes."""
    sigma = (expected * (1 - expected) / draws).sqrt()
    assert ((observed - expected).abs() <= 5 * sigma + 1e-12).all(), (observed, expected)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_sampling_frequencies_follow_the_softmax_at_that_temperature(temperature):
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -0.5, -1.0, -2.0, -3.0])
    observed = frequencies(logits, 40_000, seed=int(10 * temperature), temperature=temperature)
    expected = (logits.double() / temperature).softmax(-1)
    assert_frequencies_match(observed, expected, 40_000)
    if temperature != 1.0:  # and not the plain softmax: the test can tell them apart
        plain = logits.double().softmax(-1)
        assert ((observed - plain).abs() > 5 * (plain * (1 - plain) / 40_000).sqrt()).any()


def test_top_k_and_top_p_sampling_renormalize_over_the_kept_tokens():
    logits = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -1.0])
    for sampling in ({"top_k": 3}, {"top_p": 0.6}):
        keep = kept(top_k_filter(logits, 3) if "top_k" in sampling else top_p_filter(logits, 0.6))
        expected = torch.where(keep, logits, float("-inf")).double().softmax(-1)
        observed = frequencies(logits, 40_000, seed=5, temperature=1.0, **sampling)
        assert_frequencies_match(observed, expected, 40_000)
        assert observed[~keep].sum() == 0


def test_a_seeded_generation_repeats_and_another_seed_differs(model):
    prompt = torch.zeros(2, 3, dtype=torch.long)
    runs = [generate(model, prompt, 20, temperature=1.0, seed=s) for s in (1, 1, 2)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])
    assert not torch.equal(runs[0], generate(model, prompt, 20))  # sampled, not greedy


def test_a_seeded_generation_leaves_the_global_random_state_alone(model):
    before = torch.get_rng_state()
    generate(model, torch.zeros(1, 3, dtype=torch.long), 10, temperature=1.0, seed=0)
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("sampling", [{"temperature": 1.0}, {"temperature": 0.8, "top_k": 10},
                                      {"temperature": 1.2, "top_p": 0.9}])
def test_sampling_with_and_without_the_cache_gives_the_same_tokens(model, sampling):
    prompt = torch.randint(0, 97, (3, 4), generator=torch.Generator().manual_seed(1))
    cached = generate(model, prompt, 28, seed=7, **sampling)
    assert torch.equal(cached, generate(model, prompt, 28, use_cache=False, seed=7, **sampling))


@pytest.mark.parametrize("bad, name", [({"temperature": -0.1}, "temperature"),
                                       ({"temperature": 1.0, "top_k": 0}, "top_k"),
                                       ({"temperature": 1.0, "top_p": 0.0}, "top_p"),
                                       ({"temperature": 1.0, "top_p": 1.5}, "top_p")])
def test_bad_sampling_settings_are_refused_by_name(model, bad, name):
    logits = torch.zeros(1, 97)
    with pytest.raises(ValueError, match=name):
        next_token(logits, **bad)
    with pytest.raises(ValueError, match=name):
        generate(model, torch.zeros(1, 1, dtype=torch.long), 3, **bad)


def test_the_filters_refuse_bad_k_and_p_by_name():
    with pytest.raises(ValueError, match="top_k"):
        top_k_filter(torch.zeros(1, 5), 0)
    for p in (0.0, -0.5, 1.01):
        with pytest.raises(ValueError, match="top_p"):
            top_p_filter(torch.zeros(1, 5), p)
