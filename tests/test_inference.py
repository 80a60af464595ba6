"""Inference (buildllm.inference): int8 weights that stay close to the float model, and
batched generation that gives every prompt exactly what it gets alone.

Hugging Face transformers is the reference for left-padded batches (its GPT-2 takes an
attention mask and position ids); buildllm never imports it.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from stand_ins import tiny_gpt
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from buildllm.attention import MultiHeadAttention, causal_mask, padding_causal_mask
from buildllm.data import fetch, gpt2_encoding
from buildllm.generation import KVCache, generate
from buildllm.gpt2 import from_hf_checkpoint
from buildllm.inference import (
    Int8Embedding,
    Int8Linear,
    dequantize_rows,
    generate_batch,
    left_pad,
    model_bytes,
    quantize_int8,
    quantize_rows,
)
from buildllm.lora import add_lora
from buildllm.model import GPTModel
from buildllm.pretrained import course_model
from buildllm.training import batch_loss

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

# Prompts of many lengths, from 1 token to 20; token ids below stand_ins.TINY's 97.
PROMPTS = [[5], [17, 3, 44, 9, 61], [2, 2], list(range(30, 50)), [90, 1, 7, 7, 13, 56, 8, 70]]


def tiny_model(seed: int = 0, spread: float = 5.0, **changes) -> GPTModel:
    """A random GPTModel; `spread` scales GPT-2's initial weights, so that logits differ enough
    for greedy choices to be clear (at 1, nearly every logit is about 0)."""
    model = tiny_gpt(seed, **changes)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(spread)
    return model


def one_by_one(model, prompts, max_new_tokens, **kwargs) -> list[list[int]]:
    return [generate(model, torch.tensor([p]), max_new_tokens, **kwargs)[0, len(p):].tolist()
            for p in prompts]


# -- int8 weights ------------------------------------------------------------------------

@pytest.mark.parametrize("spread", [1e-3, 1.0, 50.0])
def test_the_int8_round_trip_moves_each_weight_by_at_most_half_a_step(spread):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 48, generator=g) * torch.rand(64, 1, generator=g) * spread
    q, scale = quantize_rows(w)
    assert q.dtype == torch.int8 and scale.shape == (64,)
    assert q.abs().amax(dim=1).eq(127).all()  # each row's largest weight uses the full range
    error = (w - dequantize_rows(q, scale)).abs()
    assert (error <= scale[:, None] / 2 * (1 + 1e-5)).all()


def test_a_row_of_zeros_is_stored_exactly_without_nan():
    w = torch.zeros(3, 8)
    w[1] = torch.linspace(-1, 1, 8)
    q, scale = quantize_rows(w)
    assert torch.isfinite(scale).all()
    assert torch.equal(dequantize_rows(q, scale)[0], torch.zeros(8))


def test_quantize_rows_keeps_the_weight_layout():
    w = torch.randn(16, 8).t().contiguous().t()  # GPTModel's transposed storage
    assert quantize_rows(w)[0].stride() == w.stride()


def test_quantize_rows_refuses_what_is_not_a_float_matrix():
    with pytest.raises(ValueError, match="2-D float weight"):
        quantize_rows(torch.randn(4))
    with pytest.raises(ValueError, match="2-D float weight"):
        quantize_rows(torch.ones(2, 2, dtype=torch.long))


def test_int8_linear_computes_the_linear_layer_of_its_dequantized_weight():
    torch.manual_seed(0)
    linear = nn.Linear(48, 24)
    layer = Int8Linear.from_linear(linear)
    x = torch.randn(3, 5, 48)
    expected = F.linear(x, layer.dequantized(), linear.bias)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)
    # ... which is close to the original layer: a step is 1/254 of each row's range
    assert (layer(x) - linear(x)).norm() / linear(x).norm() < 0.01


def test_int8_embedding_looks_up_the_dequantized_rows():
    table = torch.randn(10, 6)
    q, scale = quantize_rows(table)
    ids = torch.tensor([[3, 0, 9], [9, 9, 1]])
    torch.testing.assert_close(Int8Embedding(q, scale)(ids), dequantize_rows(q, scale)[ids])


def test_quantize_int8_replaces_every_linear_and_keeps_the_tie_in_one_int8_matrix():
    model = quantize_int8(tiny_model())
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    assert isinstance(model.out_head, Int8Linear)
    assert isinstance(model.tok_emb, Int8Embedding)
    assert model.tok_emb.weight is model.out_head.weight
    assert model.tok_emb.scale is model.out_head.scale
    assert model.pos_emb.weight.dtype == torch.float32  # not tied to anything: stays float


def test_an_untied_embedding_stays_float():
    model = quantize_int8(tiny_model(tie_embeddings=False))
    assert isinstance(model.tok_emb, nn.Embedding)
    assert isinstance(model.out_head, Int8Linear)


def test_model_bytes_counts_shared_storage_once_and_int8_as_one_byte():
    model = tiny_model()
    unique = sum(p.numel() for p in model.parameters())  # parameters() skips the tied copy
    assert model_bytes(model) == 4 * unique
    layer = Int8Linear.from_linear(nn.Linear(256, 512, bias=False))
    assert model_bytes(layer) == 512 * 256 + 4 * 512
    assert model_bytes(layer) / model_bytes(nn.Linear(256, 512, bias=False)) < 0.26


def test_the_quantized_model_is_about_a_quarter_of_the_float_model():
    model = tiny_model()
    linear_weights = {id(m.weight): m.weight for m in model.modules() if isinstance(m, nn.Linear)}
    int8_bytes = sum(w.numel() + 4 * w.shape[0] for w in linear_weights.values())
    float_bytes = sum(4 * w.numel() for w in linear_weights.values())
    before, after = model_bytes(model), model_bytes(quantize_int8(model))
    assert after == before - float_bytes + int8_bytes
    assert after < 0.35 * before  # the rest: LayerNorms, biases, position embedding


def test_quantized_logits_stay_close_to_the_float_models():
    model = tiny_model(spread=1.0)
    ids = torch.randint(0, 97, (4, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(ids)
        after = quantize_int8(copy.deepcopy(model))(ids)
    assert (after - before).norm() / before.norm() < 0.02
    assert (after.argmax(-1) == before.argmax(-1)).float().mean() > 0.95


def test_the_quantized_course_model_keeps_its_validation_loss():
    model = course_model()
    ids = gpt2_encoding().encode_ordinary(fetch("tinyshakespeare.txt").read_text("utf-8"))
    tail = torch.tensor(ids[int(0.9 * len(ids)):][:257])[None]  # one window of the held-out split
    with torch.no_grad():
        before = batch_loss(model, tail[:, :-1], tail[:, 1:]).item()
        after = batch_loss(quantize_int8(model), tail[:, :-1], tail[:, 1:]).item()
    assert after == pytest.approx(before, abs=0.02)


def test_a_quantized_model_generates_through_the_kv_cache():
    model = quantize_int8(tiny_model())
    prompt = torch.tensor([[4, 8, 15]])
    assert torch.equal(generate(model, prompt, 10), generate(model, prompt, 10, use_cache=False))


def test_quantizing_a_model_with_lora_layers_is_refused():
    with pytest.raises(ValueError, match="merge_lora"):
        quantize_int8(add_lora(tiny_model(), rank=2))


# -- the attention mask ------------------------------------------------------------------

def test_a_mask_without_padding_is_the_causal_mask():
    assert torch.equal(padding_causal_mask(torch.ones(2, 5, dtype=torch.bool))[1, 0],
                       causal_mask(5))
    assert torch.equal(padding_causal_mask(torch.ones(1, 7, dtype=torch.bool), 3)[0, 0],
                       causal_mask(3, 7))


def test_real_tokens_never_see_padding_and_padding_is_never_left_with_nothing():
    key_mask = torch.tensor([[False, False, True, True], [True, True, True, True]])
    mask = padding_causal_mask(key_mask)[:, 0]
    assert not mask[0, 2:, :2].any()  # real queries, padded keys
    assert mask.any(dim=-1).all()  # every query may look somewhere: no 0/0 in the softmax


@pytest.mark.parametrize("use_sdpa", [True, False])
def test_attention_with_a_full_mask_equals_plain_causal_attention(use_sdpa):
    torch.manual_seed(0)
    att = MultiHeadAttention(16, 16, 8, 0.0, num_heads=2, use_sdpa=use_sdpa).eval()
    x = torch.randn(2, 6, 16)
    mask = padding_causal_mask(torch.ones(2, 6, dtype=torch.bool))
    torch.testing.assert_close(att(x, mask=mask), att(x))


@pytest.mark.parametrize("use_sdpa", [True, False])
def test_left_padded_rows_get_their_unpadded_logits_at_every_real_position(use_sdpa):
    model = tiny_model()
    for block in model.trf_blocks:
        block.att.use_sdpa = use_sdpa
    ids, mask = left_pad(PROMPTS, pad_id=7)
    with torch.no_grad():
        padded = model(ids, attention_mask=mask)
        assert torch.isfinite(padded).all()  # padding positions too
        for row, prompt in enumerate(PROMPTS):
            alone = model(torch.tensor([prompt]))[0]
            torch.testing.assert_close(padded[row, -len(prompt):], alone, rtol=1e-4, atol=1e-4)


def test_a_masked_batch_fed_through_the_cache_in_chunks_gives_the_full_forward_logits():
    model = tiny_model()
    ids, mask = left_pad(PROMPTS)
    with torch.no_grad():
        full = model(ids, attention_mask=mask)
        cache = KVCache(model, len(PROMPTS))
        chunks = [model(ids[:, a:b], cache, attention_mask=mask[:, :b])
                  for a, b in [(0, 7), (7, 8), (8, 20)]]
    real = mask[:, :, None].expand_as(full)
    torch.testing.assert_close(torch.cat(chunks, dim=1)[real], full[real], rtol=1e-4, atol=1e-5)


def test_an_attention_mask_of_the_wrong_shape_is_a_clear_error():
    model = tiny_model()
    ids = torch.zeros(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"attention_mask must have shape .* \(2, 4\)"):
        model(ids, attention_mask=torch.ones(2, 3, dtype=torch.bool))
    cache = KVCache(model, 2)
    model(ids, cache)
    with pytest.raises(ValueError, match=r"cached \+ new tokens\) = \(2, 5\)"):
        model(ids[:, :1], cache, attention_mask=torch.ones(2, 1, dtype=torch.bool))


@pytest.fixture(scope="module")
def hf_pair(tmp_path_factory):
    """A small random transformers GPT-2 and our GPTModel loaded from its checkpoint."""
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=64)
    hf = GPT2LMHeadModel(config).eval()
    folder = tmp_path_factory.mktemp("gpt2")
    hf.save_pretrained(folder)
    return hf, from_hf_checkpoint(folder).eval()


@torch.no_grad()
def test_left_padded_logits_equal_hugging_face_gpt2_with_mask_and_position_ids(hf_pair):
    hf, ours = hf_pair
    prompts = [[464, 3290, 318], [40], list(range(1000, 1012)), [50256, 11, 13, 198]]
    ids, mask = left_pad(prompts, pad_id=50256)
    positions = (mask.long().cumsum(dim=1) - 1).clamp(min=0)
    expected = hf(ids, attention_mask=mask.long(), position_ids=positions).logits
    torch.testing.assert_close(ours(ids, attention_mask=mask)[mask], expected[mask],
                               rtol=0, atol=1e-5)


@torch.no_grad()
def test_batched_greedy_generation_equals_hugging_face_generate_on_a_left_padded_batch(hf_pair):
    hf, ours = hf_pair
    prompts = [[464, 3290, 318], [40], list(range(1000, 1012))]
    ids, mask = left_pad(prompts, pad_id=50256)
    expected = hf.generate(ids, attention_mask=mask.long(), max_new_tokens=15, min_new_tokens=15,
                           do_sample=False, pad_token_id=50256)
    assert generate_batch(ours, prompts, 15, pad_id=50256) == expected[:, ids.shape[1]:].tolist()


# -- batched generation ------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_greedy_generation_equals_one_prompt_at_a_time(seed):
    model = tiny_model(seed)
    assert generate_batch(model, PROMPTS, 12) == one_by_one(model, PROMPTS, 12)


def test_batched_greedy_generation_equals_one_by_one_without_sdpa():
    model = tiny_model()
    for block in model.trf_blocks:
        block.att.use_sdpa = False
    assert generate_batch(model, PROMPTS, 12) == one_by_one(model, PROMPTS, 12)


def test_batched_greedy_generation_on_the_course_model_equals_one_by_one():
    model = course_model()
    enc = gpt2_encoding()
    prompts = [enc.encode(text) for text in
               ["ROMEO:", "To be, or not to be, that is the", "KING HENRY VI:\nWhat, will",
                "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak"]]
    assert generate_batch(model, prompts, 16) == one_by_one(model, prompts, 16)


def test_batched_sampling_with_a_seed_equals_one_by_one_with_that_seed():
    model = tiny_model()
    sampling = {"temperature": 1.5, "top_k": 40, "top_p": 0.95}
    batched = generate_batch(model, PROMPTS, 10, seed=7, **sampling)
    assert batched == one_by_one(model, PROMPTS, 10, seed=7, **sampling)
    seeds = [3, 1, 4, 1, 5]
    per_row = generate_batch(model, PROMPTS, 10, seed=seeds, **sampling)
    assert per_row == [one_by_one(model, [p], 10, seed=s, **sampling)[0]
                       for p, s in zip(PROMPTS, seeds, strict=True)]
    assert per_row != batched


@pytest.mark.parametrize("pad_id", [0, 7, 96])
def test_padding_never_changes_a_rows_result(pad_id):
    model = tiny_model()
    short = PROMPTS[1]
    alone = generate_batch(model, [short], 12)[0]
    with_longer = generate_batch(model, [short, PROMPTS[3], PROMPTS[4]], 12, pad_id=pad_id)
    assert with_longer[0] == alone


def test_a_row_stops_after_the_end_token_and_the_rest_go_on():
    model = tiny_model()
    free = generate_batch(model, PROMPTS, 12)
    eos = free[0][3]  # pretend the 4th token of the first row is the end of text
    stopped = generate_batch(model, PROMPTS, 12, eos_id=eos)
    assert stopped[0] == free[0][: free[0].index(eos) + 1]
    assert stopped == one_by_one(model, PROMPTS, 12, eos_id=eos)


def test_batched_generation_leaves_the_model_in_the_mode_it_found():
    model = tiny_model().train()
    generate_batch(model, PROMPTS, 2)
    assert model.training


@pytest.mark.parametrize("prompts, message", [
    ([], "non-empty list"),
    (torch.tensor([[1, 2]]), "non-empty list"),
    ([[1, 2], []], "prompt 1 is empty"),
    (["hello"], "prompt 0 is str"),
    ([[1, 97]], r"holds 97, not a token id in \[0, 97\)"),
    ([[1, -1]], "holds -1"),
    ([list(range(25))], r"longest prompt \(25 tokens\) \+ 10 new tokens exceed .* 32"),
])
def test_bad_prompts_are_clear_errors(prompts, message):
    with pytest.raises(ValueError, match=message):
        generate_batch(tiny_model(), prompts, 10)


def test_bad_settings_are_clear_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match="pad_id must be a token id"):
        generate_batch(model, PROMPTS, 3, pad_id=97)
    with pytest.raises(ValueError, match="max_new_tokens must be a non-negative integer"):
        generate_batch(model, PROMPTS, -1)
    with pytest.raises(ValueError, match="2 seeds for 5 prompts"):
        generate_batch(model, PROMPTS, 3, temperature=1.0, seed=[1, 2])
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        generate_batch(model, PROMPTS, 3, temperature=-1.0)
