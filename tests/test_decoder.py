"""The decoder family (buildllm.decoder): configs that say what they mean, GPT-2's config
equal to GPTModel, and a Llama-style Decoder run unchanged by the course's generation,
batching, serving, LoRA and classification code."""

import copy
import threading
from dataclasses import replace

import httpx
import pytest
import torch
from stand_ins import tiny_gpt

from buildllm import generation
from buildllm.batching import Engine, Request
from buildllm.chat import ChatSession
from buildllm.classify import add_classification_head, class_logits, set_trainable
from buildllm.decoder import CONFIGS, Decoder, DecoderConfig, swiglu_hidden_dim
from buildllm.generation import KVCache, generate
from buildllm.inference import generate_batch, model_bytes, quantize_int8
from buildllm.lora import add_lora, merge_lora
from buildllm.model import CONFIGS as GPT_CONFIGS
from buildllm.model import count_parameters
from buildllm.modern import RopeScaling
from buildllm.serve import BackgroundServer, create_app
from buildllm.training import batch_loss

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

# Llama 3's pieces at stand_ins.TINY's size: 97 tokens, context 32, 4 query and 2 kv heads.
TINY = replace(CONFIGS["llama3-cpu-tiny"], vocab_size=97, context_length=32, emb_dim=32,
               n_heads=4, n_kv_heads=2, head_dim=8, n_layers=2, hidden_dim=64)
PROMPTS = [[5], [17, 3, 44, 9, 61], [2, 2], list(range(30, 50)), [90, 1, 7, 7, 13, 56, 8, 70]]


def tiny_decoder(seed: int = 0, spread: float = 5.0, **changes) -> Decoder:
    """A random Decoder; `spread` scales its initial weights so greedy choices are clear."""
    torch.manual_seed(seed)
    model = Decoder(replace(TINY, **changes)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(spread)
    return model


# -- configs -----------------------------------------------------------------------------

def test_the_default_config_is_gpt2_small_and_fills_in_heads_and_sizes():
    cfg = DecoderConfig()
    assert cfg == DecoderConfig.from_gpt(GPT_CONFIGS["124M"]) == CONFIGS["gpt2-124M"]
    assert (cfg.n_kv_heads, cfg.head_dim, cfg.hidden_dim) == (12, 64, 3072)
    assert (cfg.norm, cfg.positions, cfg.mlp) == ("layer", "learned", "gelu")


@pytest.mark.parametrize("changes, message", [
    ({"n_heads": 5}, "emb_dim=768 is not divisible by n_heads=5: give head_dim"),
    ({"n_kv_heads": 5}, "n_heads=12 must be a multiple of n_kv_heads=5"),
    ({"norm": "batch"}, r"norm must be one of \('layer', 'rms'\), got 'batch'"),
    ({"positions": "alibi"}, "positions must be one of"),
    ({"mlp": "relu"}, "mlp must be one of"),
    ({"positions": "rope", "head_dim": 9}, "head_dim must be even, got 9"),
    ({"drop_rate": 1.0}, r"drop_rate must be in \[0, 1\)"),
    ({"n_layers": 0}, "n_layers must be a positive integer, got 0"),
    ({"norm_eps": 0.0}, "norm_eps and rope_theta must be positive"),
])
def test_a_bad_config_is_a_one_line_error(changes, message):
    with pytest.raises(ValueError, match=message) as err:
        DecoderConfig(**changes)
    assert "\n" not in str(err.value)


def test_cpu_configs_have_about_gpt2s_parameters_and_the_real_ones_their_published_counts():
    def count(name):
        with torch.device("meta"):  # shapes only, no memory
            return count_parameters(Decoder(CONFIGS[name]))

    for size in ("tiny", "small"):
        gpt = count(f"gpt2-cpu-{size}")
        for family in ("llama3", "qwen3"):
            assert abs(count(f"{family}-cpu-{size}") - gpt) / gpt < 0.03
    assert count("llama3.2-1B") == 1_235_814_400  # meta-llama/Llama-3.2-1B, tied embeddings
    assert count("qwen3-0.6B") == 596_049_920  # Qwen/Qwen3-0.6B, tied embeddings
    assert swiglu_hidden_dim(128) == 344 and CONFIGS["llama3.2-1B"].rope_scaling == RopeScaling()


def test_grouped_query_attention_makes_llama_3_2s_cache_4_times_smaller():
    def cache_bytes(cfg):
        with torch.device("meta"):
            cache = KVCache(Decoder(cfg), batch_size=1, max_tokens=8192)
        return cache.keys.nbytes + cache.values.nbytes

    gqa = CONFIGS["llama3.2-1B"]
    assert cache_bytes(gqa) == 2 * 16 * 8 * 8192 * 64 * 4  # k and v, layers, heads, tokens, dim
    assert cache_bytes(replace(gqa, n_kv_heads=32)) == 4 * cache_bytes(gqa)


# -- GPT-2's config is GPTModel ----------------------------------------------------------

@torch.no_grad()
def test_gpt2_config_with_gptmodels_weights_gives_gptmodels_logits_cached_and_padded():
    gpt = tiny_gpt()
    ours = Decoder(DecoderConfig.from_gpt(gpt.cfg)).eval()
    ours.load_state_dict(gpt.state_dict())
    ids = torch.randint(0, 97, (3, 20), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(3, 20, dtype=torch.bool)
    mask[1, :7] = False
    torch.testing.assert_close(ours(ids), gpt(ids), rtol=0, atol=1e-6)
    torch.testing.assert_close(ours(ids, attention_mask=mask), gpt(ids, attention_mask=mask),
                               rtol=0, atol=1e-6)
    torch.testing.assert_close(ours(ids, hidden=True), gpt(ids, hidden=True), rtol=0, atol=1e-6)
    assert torch.equal(generate(ours, ids[:, :10], 12), generate(gpt, ids[:, :10], 12))


@torch.no_grad()
def test_an_interleaved_rope_model_is_a_half_split_one_with_q_and_k_rows_reordered():
    """What converting Meta's Llama checkpoints to transformers' layout does: within each
    head, the query and key rows of features 0, 2, 4, ... come first, then 1, 3, 5, ..."""
    meta = tiny_decoder(rope_interleaved=True)
    hf = Decoder(TINY).eval()
    order = torch.cat([torch.arange(0, 8, 2), torch.arange(1, 8, 2)])  # head_dim 8
    rows = torch.cat([head * 8 + order for head in range(4 + 2)])  # 4 query, 2 key heads
    rows = torch.cat([rows, torch.arange(48, 64)])  # the 2 value heads stay as they are
    state = meta.state_dict()
    for i in range(TINY.n_layers):
        state[f"trf_blocks.{i}.att.qkv.weight"] = state[f"trf_blocks.{i}.att.qkv.weight"][rows]
    hf.load_state_dict(state)
    ids = torch.tensor([PROMPTS[3]])
    torch.testing.assert_close(hf(ids), meta(ids), rtol=0, atol=1e-4)
    hf.load_state_dict(meta.state_dict())  # the rows as they were: another model
    assert not torch.allclose(hf(ids), meta(ids), rtol=0, atol=1e-2)


@pytest.mark.parametrize("model", [tiny_gpt(), tiny_decoder()], ids=["GPTModel", "Decoder"])
def test_decoder_refuses_what_gptmodel_refuses_with_the_same_words(model):
    with pytest.raises(ValueError, match=r"33 tokens exceed the context length 32.*\[:, -32:\]"):
        model(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(ValueError, match=r"attention_mask must have shape .* = \(1, 4\)"):
        model(torch.zeros(1, 4, dtype=torch.long), attention_mask=torch.ones(1, 3))


# -- the course's code runs a Decoder unchanged ------------------------------------------

@torch.no_grad()
def test_padded_rows_get_their_unpadded_logits_with_rope():
    model = tiny_decoder()
    alone = model(torch.tensor([PROMPTS[1]]))
    ids = torch.tensor([[0, 0, 0, *PROMPTS[1]]])
    mask = torch.tensor([[False] * 3 + [True] * 5])
    torch.testing.assert_close(model(ids, attention_mask=mask)[:, 3:], alone, rtol=0, atol=1e-5)
    torch.testing.assert_close(model(ids, attention_mask=mask, keep=mask), alone[0],
                               rtol=0, atol=1e-5)


def test_generate_with_and_without_the_cache_and_stream_agree():
    model = tiny_decoder()
    prompt = torch.tensor([PROMPTS[4]])
    cached = generate(model, prompt, 20)
    assert torch.equal(generate(model, prompt, 20, use_cache=False), cached)
    assert list(generation.stream(model, PROMPTS[4], 20)) == cached[0, 8:].tolist()
    sampled = [generate(model, prompt, 10, temperature=1.0, top_k=20, seed=7) for _ in range(2)]
    assert torch.equal(*sampled)
    cache = KVCache(model, 1)
    assert cache.keys.shape == (2, 1, 2, 32, 8)  # layers, batch, kv heads, tokens, head_dim


def test_generate_batch_gives_each_left_padded_prompt_its_tokens_alone():
    model = tiny_decoder()
    alone = [generate(model, torch.tensor([p]), 8)[0, len(p):].tolist() for p in PROMPTS]
    assert generate_batch(model, PROMPTS, 8, pad_id=3) == alone


def test_the_batching_engine_writes_each_reply_as_it_would_be_alone():
    model = tiny_decoder()
    requests = [Request(p, 6) for p in PROMPTS]
    replies = {i: [] for i in range(len(requests))}
    ended = threading.Semaphore(0)
    engine = Engine(model, max_batch=3)
    try:
        for i, request in enumerate(requests):
            engine.submit(request, lambda t, i=i: replies[i].append(t) or True,
                          lambda error: ended.release())
        for _ in requests:
            assert ended.acquire(timeout=60)
    finally:
        engine.stop()
    assert [replies[i] for i in range(len(requests))] == \
        [list(generation.stream(model, p, 6)) for p in PROMPTS]


def test_the_server_answers_with_a_decoder_as_its_chat_session_does(enc):
    model = tiny_decoder(vocab_size=50257, context_length=128)
    chat = ChatSession(model, enc, max_new_tokens=8)
    messages = [{"role": "user", "content": "Name a colour."}]
    with BackgroundServer(create_app(chat, "llama")) as server:
        answer = httpx.post(f"{server.url}/v1/chat/completions", timeout=60,
                            json={"model": "llama", "messages": messages, "temperature": 0})
    assert answer.status_code == 200
    reply = chat.reply(messages)
    assert answer.json()["choices"][0]["message"]["content"] == reply and len(reply) > 10


@pytest.mark.parametrize("family", ["gpt2", "llama3", "qwen3"])
def test_every_parameter_learns_and_a_few_steps_lower_the_loss(family):
    cfg = replace(CONFIGS[f"{family}-cpu-tiny"], vocab_size=97, context_length=32)
    torch.manual_seed(0)
    model = Decoder(cfg).train()
    ids = torch.randint(0, 97, (4, 17))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(5):
        loss = batch_loss(model, ids[:, :-1], ids[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        if not losses:
            assert all(p.grad is not None and p.grad.abs().sum() > 0
                       for p in model.parameters())
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5


@torch.no_grad()
def test_lora_and_a_classification_head_fit_a_decoder():
    model = tiny_decoder()
    ids = torch.tensor([PROMPTS[3]])
    before = model(ids)
    add_lora(model, rank=4, targets=("att.qkv", "att.out_proj", "ff.gate", "ff.up", "ff.down"))
    torch.testing.assert_close(model(ids), before)  # B starts at zero
    assert count_parameters(model) == 2 * (4 * (32 + 64) + 4 * (32 + 32) + 3 * 4 * (32 + 64))
    merge_lora(model)
    add_classification_head(model, 2)
    assert set_trainable(model, "last_block") > 0
    assert class_logits(model, ids, pad_id=96).shape == (1, 2)


@torch.no_grad()
def test_int8_weights_fit_a_decoder_and_keep_its_tied_embedding_shared():
    model = tiny_decoder(spread=1.0)
    small = quantize_int8(copy.deepcopy(model))
    ids = torch.tensor([PROMPTS[3]])
    torch.testing.assert_close(small(ids), model(ids), rtol=0, atol=0.01)
    assert small.tok_emb.weight is small.out_head.weight  # one int8 copy serves both
    assert model_bytes(small) < model_bytes(model) / 3
