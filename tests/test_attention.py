"""Every attention variant computes the same function; the batched one handles a KV cache."""

import doctest

import pytest
import torch

from buildllm import attention
from buildllm.attention import (
    CausalAttention,
    MultiHeadAttention,
    MultiHeadAttentionWrapper,
    attention_by_loop,
    causal_mask,
)


def test_the_docstring_examples_hold():
    assert doctest.testmod(attention).failed == 0


def test_a_rectangular_mask_lets_the_last_queries_see_the_cached_keys():
    mask = causal_mask(2, 5)
    assert mask.tolist() == [[True, True, True, True, False], [True, True, True, True, True]]


def batched_copy_of(wrapper: MultiHeadAttentionWrapper) -> MultiHeadAttention:
    """A MultiHeadAttention computing what `wrapper` does: heads' weights stacked, no mixing."""
    heads = wrapper.heads
    d_in, d_head = heads[0].W_query.in_features, heads[0].W_query.out_features
    mha = MultiHeadAttention(d_in, d_head * len(heads), 64, 0.0, len(heads), qkv_bias=True)
    with torch.no_grad():
        for i, name in enumerate(["W_query", "W_key", "W_value"]):
            rows = slice(i * d_head * len(heads), (i + 1) * d_head * len(heads))
            mha.qkv.weight[rows] = torch.cat([getattr(h, name).weight for h in heads])
            mha.qkv.bias[rows] = torch.cat([getattr(h, name).bias for h in heads])
        mha.out_proj.weight.copy_(torch.eye(d_head * len(heads)))
        mha.out_proj.bias.zero_()
    return mha


@pytest.mark.parametrize("use_sdpa", [False, True])
def test_stacked_heads_and_batched_heads_agree(use_sdpa):
    torch.manual_seed(0)
    wrapper = MultiHeadAttentionWrapper(16, 8, 64, 0.0, num_heads=3, qkv_bias=True).eval()
    mha = batched_copy_of(wrapper).eval()
    mha.use_sdpa = use_sdpa
    x = torch.randn(2, 11, 16)
    torch.testing.assert_close(mha(x), wrapper(x))


def test_one_head_equals_the_loop_definition():
    torch.manual_seed(0)
    head = CausalAttention(16, 8, 64, qkv_bias=True).eval()
    x = torch.randn(2, 9, 16)
    q, k, v = head.W_query(x), head.W_key(x), head.W_value(x)
    torch.testing.assert_close(head(x), attention_by_loop(q, k, v))


def test_explicit_softmax_and_fused_sdpa_agree_forward_and_backward():
    torch.manual_seed(0)
    explicit = MultiHeadAttention(32, 32, 64, 0.0, num_heads=4, use_sdpa=False)
    fused = MultiHeadAttention(32, 32, 64, 0.0, num_heads=4, use_sdpa=True)
    fused.load_state_dict(explicit.state_dict())
    x = torch.randn(3, 20, 32, requires_grad=True)
    torch.testing.assert_close(explicit(x), fused(x))
    (g_explicit,) = torch.autograd.grad(explicit(x).square().sum(), x)
    (g_fused,) = torch.autograd.grad(fused(x).square().sum(), x)
    torch.testing.assert_close(g_explicit, g_fused)


def test_no_query_is_influenced_by_a_later_token():
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 16, 64, 0.0, num_heads=2).eval()
    x = torch.randn(1, 10, 16)
    changed = x.clone()
    changed[0, 6:] = torch.randn(4, 16)  # change only the last four tokens
    torch.testing.assert_close(mha(x)[0, :6], mha(changed)[0, :6])
    assert not torch.allclose(mha(x)[0, 6:], mha(changed)[0, 6:])


def test_dropout_only_acts_in_training_mode():
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 16, 64, 0.5, num_heads=2)
    x = torch.randn(1, 10, 16)
    assert not torch.allclose(mha(x), mha(x))
    mha.eval()
    torch.testing.assert_close(mha(x), mha(x))


def test_heads_must_divide_the_width():
    with pytest.raises(ValueError, match="d_out=10 is not divisible by num_heads=3"):
        MultiHeadAttention(10, 10, 64, 0.0, num_heads=3)


def test_more_tokens_than_the_context_is_a_clear_error():
    for module in (CausalAttention(8, 8, 16), MultiHeadAttention(8, 8, 16, 0.0, num_heads=2)):
        with pytest.raises(ValueError, match="17 tokens exceed the context length 16"):
            module(torch.randn(1, 17, 8))
    with pytest.raises(ValueError, match="3 queries need at least as many keys, got 2"):
        causal_mask(3, 2)
