"""Today's decoder pieces (buildllm.modern), each against PyTorch or transformers' Llama and
Qwen3 code: RMSNorm, rotary embeddings in both conventions and with Llama 3's scaling,
SwiGLU, and grouped-query attention with 1, 2 and n key/value heads."""

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, Qwen3Config
from transformers.models.llama.modeling_llama import (
    LlamaAttention,
    LlamaMLP,
    LlamaRotaryEmbedding,
    apply_rotary_pos_emb,
)
from transformers.models.qwen3.modeling_qwen3 import Qwen3Attention

from buildllm.attention import MultiHeadAttention
from buildllm.decoder import Decoder, DecoderConfig
from buildllm.generation import KVCache
from buildllm.modern import (
    GroupedQueryAttention,
    RMSNorm,
    RopeScaling,
    RotaryEmbedding,
    SwiGLU,
    apply_rope,
    rope_frequencies,
    rope_tables,
)

LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
               "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}


def hf_config(cls=LlamaConfig, **changes):
    settings = {"vocab_size": 64, "hidden_size": 64, "intermediate_size": 96,
                "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
                "head_dim": 16, "max_position_embeddings": 131072, **changes}
    return cls(**settings)


# -- RMSNorm -----------------------------------------------------------------------------

def test_rmsnorm_equals_torch_rmsnorm_with_the_same_weight_and_eps():
    torch.manual_seed(0)
    x = torch.randn(3, 7, 48) * 5 + 2
    ours, theirs = RMSNorm(48, eps=1e-5), torch.nn.RMSNorm(48, eps=1e-5)
    with torch.no_grad():
        ours.weight.normal_()
        theirs.weight.copy_(ours.weight)
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-6)


def test_rmsnorm_leaves_the_mean_unlike_layernorm():
    x = torch.tensor([[1.0, 2.0, 3.0, 6.0]])
    out = RMSNorm(4)(x).detach()
    assert out.mean() > 0.5  # LayerNorm would centre it at 0
    torch.testing.assert_close(out.pow(2).mean(), torch.tensor(1.0), rtol=0, atol=1e-5)


# -- rotary embeddings -------------------------------------------------------------------

@pytest.mark.parametrize("rope", [{"rope_type": "default", "rope_theta": 10000.0}, LLAMA3_ROPE])
def test_rope_tables_and_rotation_equal_transformers_on_given_positions(rope):
    """Per-row positions, as a left-padded batch has them, with and without Llama 3's scaling."""
    cfg = hf_config(rope_parameters=rope)
    positions = torch.tensor([[0, 1, 2, 3, 4], [0, 0, 0, 1, 2], [9000, 9001, 9002, 9003, 9004]])
    torch.manual_seed(0)
    q, k = torch.randn(3, 4, 5, 16), torch.randn(3, 2, 5, 16)
    cos_hf, sin_hf = LlamaRotaryEmbedding(cfg)(q, positions)  # (batch, tokens, head_dim)
    scaling = RopeScaling() if rope["rope_type"] == "llama3" else None
    frequencies = rope_frequencies(16, rope["rope_theta"], scaling)
    cos, sin = rope_tables(positions, frequencies)  # (batch, 1, tokens, head_dim / 2)
    torch.testing.assert_close(cos[:, 0], cos_hf[..., :8], rtol=0, atol=1e-6)
    torch.testing.assert_close(sin[:, 0], sin_hf[..., :8], rtol=0, atol=1e-6)
    q_hf, k_hf = apply_rotary_pos_emb(q, k, cos_hf, sin_hf)
    q_ours, k_ours = RotaryEmbedding(16, rope["rope_theta"], scaling)(q, k, positions)
    torch.testing.assert_close(q_ours, q_hf, rtol=0, atol=1e-6)
    torch.testing.assert_close(k_ours, k_hf, rtol=0, atol=1e-6)


def test_llama3_scaling_slows_only_the_slow_rotations():
    plain, scaled = rope_frequencies(64, 500000.0), rope_frequencies(64, 500000.0, RopeScaling())
    assert torch.equal(scaled[:4], plain[:4])  # fast hands kept
    torch.testing.assert_close(scaled[-4:], plain[-4:] / 32)  # slow hands 32 times slower
    assert ((scaled <= plain) & (scaled >= plain / 32)).all()


def test_interleaved_and_half_split_rope_agree_up_to_a_permutation_of_features():
    """Pair (2i, 2i+1) in one convention is pair (i, i + d/2) in the other: reorder q's and
    k's features (what converting Meta's checkpoints to HF's does) and the results agree,
    and so do the attention scores, which never depend on the order of features."""
    d = 8
    order = torch.cat([torch.arange(0, d, 2), torch.arange(1, d, 2)])  # 0,2,4,6,1,3,5,7
    torch.manual_seed(0)
    q, k = torch.randn(2, 3, 6, d), torch.randn(2, 3, 6, d)
    cos, sin = rope_tables(torch.arange(6), rope_frequencies(d))
    q_inter, k_inter = (apply_rope(t, cos, sin, interleaved=True) for t in (q, k))
    q_half, k_half = (apply_rope(t[..., order], cos, sin) for t in (q, k))
    torch.testing.assert_close(q_half, q_inter[..., order])
    torch.testing.assert_close(q_half @ k_half.mT, q_inter @ k_inter.mT)
    assert not torch.allclose(apply_rope(q, cos, sin), q_inter)  # the conventions differ


@pytest.mark.parametrize("interleaved", [False, True])
def test_rope_scores_depend_only_on_the_offset_between_query_and_key(interleaved):
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)
    rope = RotaryEmbedding(16, interleaved=interleaved)

    def score(m, n):
        q_m, _ = rope(q, k, torch.tensor([m]))
        _, k_n = rope(q, k, torch.tensor([n]))
        return (q_m * k_n).sum()

    torch.testing.assert_close(score(7, 3), score(104, 100), rtol=0, atol=1e-5)
    assert not torch.isclose(score(7, 3), score(7, 5))


def test_a_model_cast_to_bfloat16_keeps_its_rotation_frequencies_in_float32():
    rope = RotaryEmbedding(64, theta=500000.0).to(torch.bfloat16)
    q = torch.randn(1, 1, 1, 64, dtype=torch.bfloat16)
    rope(q, q, torch.tensor([5000]))
    assert torch.equal(rope.frequencies, rope_frequencies(64, 500000.0))


def test_odd_head_dim_is_refused_for_rope():
    with pytest.raises(ValueError, match="head_dim must be even, got 7"):
        rope_frequencies(7)


# -- SwiGLU ------------------------------------------------------------------------------

def test_swiglu_equals_llama_mlp_with_the_same_weights():
    torch.manual_seed(0)
    theirs = LlamaMLP(hf_config()).eval()
    ours = SwiGLU(64, 96)
    ours.load_state_dict({"gate.weight": theirs.gate_proj.weight,
                          "up.weight": theirs.up_proj.weight,
                          "down.weight": theirs.down_proj.weight})
    x = torch.randn(2, 9, 64)
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-6)


# -- grouped-query attention -------------------------------------------------------------

def split(att: GroupedQueryAttention, x: torch.Tensor):
    b, n, _ = x.shape
    q, k, v = att.qkv(x).split(att.sizes, dim=-1)
    return (t.view(b, n, -1, att.head_dim).transpose(1, 2) for t in (q, k, v))


@pytest.mark.parametrize("n_kv_heads", [1, 2, 8])
def test_gqa_equals_sdpa_on_key_and_value_heads_repeated_for_their_groups(n_kv_heads):
    torch.manual_seed(0)
    att = GroupedQueryAttention(64, 8, n_kv_heads).eval()
    x = torch.randn(2, 11, 64)
    q, k, v = split(att, x)
    assert k.shape == (2, n_kv_heads, 11, 8)
    group = 8 // n_kv_heads  # query head h reads kv head h // group
    k_all, v_all = k[:, torch.arange(8) // group], v[:, torch.arange(8) // group]
    expected = F.scaled_dot_product_attention(q, k_all, v_all, is_causal=True)
    expected = att.out_proj(expected.transpose(1, 2).reshape(2, 11, 64))
    torch.testing.assert_close(att(x), expected, rtol=0, atol=1e-6)


def test_gqa_with_as_many_kv_heads_as_query_heads_is_multi_head_attention():
    torch.manual_seed(0)
    mha = MultiHeadAttention(64, 64, 32, 0.0, 4, qkv_bias=True).eval()
    gqa = GroupedQueryAttention(64, 4, 4, qkv_bias=True, proj_bias=True).eval()
    gqa.load_state_dict(mha.state_dict())
    x = torch.randn(3, 10, 64)
    torch.testing.assert_close(gqa(x), mha(x), rtol=0, atol=1e-6)


def attention_pair(cls, config, **ours):
    """transformers' attention layer and ours, with the same weights."""
    torch.manual_seed(0)
    theirs = cls(config, layer_idx=0).eval()
    mine = GroupedQueryAttention(64, 4, 2, 16, **ours).eval()
    a = theirs.self_attn if hasattr(theirs, "self_attn") else theirs
    state = {"qkv.weight": torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]),
             "out_proj.weight": a.o_proj.weight}
    if hasattr(a, "q_norm"):
        state |= {"q_norm.weight": a.q_norm.weight.detach() + torch.rand(16),
                  "k_norm.weight": a.k_norm.weight.detach() + torch.rand(16)}
        with torch.no_grad():
            a.q_norm.weight.copy_(state["q_norm.weight"])
            a.k_norm.weight.copy_(state["k_norm.weight"])
    mine.load_state_dict(state)
    return theirs, mine


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_attention_equals_transformers_llama_and_qwen3_attention(arch):
    """Qwen3's adds QK-norm before RoPE; both have 4 query heads and 2 key/value heads."""
    config = hf_config(Qwen3Config if arch == "qwen3" else LlamaConfig,
                       rope_parameters=LLAMA3_ROPE if arch == "llama" else None)
    config._attn_implementation = "sdpa"
    cls = Qwen3Attention if arch == "qwen3" else LlamaAttention
    rope = RotaryEmbedding(16, config.rope_parameters["rope_theta"],
                           RopeScaling() if arch == "llama" else None)
    theirs, ours = attention_pair(cls, config, rope=rope, qk_norm=arch == "qwen3",
                                  norm_eps=config.rms_norm_eps)
    x = torch.randn(2, 9, 64)
    positions = torch.arange(9)[None].expand(2, 9)
    cos_sin = LlamaRotaryEmbedding(config)(x, positions)
    with torch.no_grad():
        expected, _ = theirs(x, position_embeddings=cos_sin, attention_mask=None)
    torch.testing.assert_close(ours(x, positions=positions), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("n_kv_heads", [1, 2, 4])
def test_the_cache_stores_only_the_kv_heads_and_gives_the_uncached_outputs(n_kv_heads):
    cfg = DecoderConfig(vocab_size=50, context_length=16, emb_dim=32, n_heads=4, n_layers=2,
                        n_kv_heads=n_kv_heads, positions="rope", norm="rms", mlp="swiglu",
                        drop_rate=0.0)
    torch.manual_seed(0)
    model = Decoder(cfg).eval()
    cache = KVCache(model, batch_size=2)
    assert cache.keys.shape == (2, 2, n_kv_heads, 16, 8)
    ids = torch.randint(0, 50, (2, 10))
    with torch.no_grad():
        full = model(ids)
        steps = [model(ids[:, :6], cache)] + [model(ids[:, t:t + 1], cache) for t in range(6, 10)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=1e-5)


def test_bad_head_counts_are_refused():
    with pytest.raises(ValueError, match="n_heads=8 must be a multiple of n_kv_heads=3"):
        GroupedQueryAttention(64, 8, 3)
