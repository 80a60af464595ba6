"""GPTModel: its building blocks, its configurations and its counts."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from buildllm.model import (
    CONFIGS,
    GELU,
    GPTConfig,
    GPTModel,
    LayerNorm,
    count_parameters,
    forward_flops_per_token,
)


def test_layer_norm_matches_pytorch():
    torch.manual_seed(0)
    ours, reference = LayerNorm(8), nn.LayerNorm(8)
    with torch.no_grad():
        ours.scale.normal_(), ours.shift.normal_()
        reference.weight.copy_(ours.scale), reference.bias.copy_(ours.shift)
    x = torch.randn(2, 5, 8) * 3 + 1
    torch.testing.assert_close(ours(x), reference(x))


def test_gelu_is_the_tanh_approximation():
    x = torch.linspace(-6, 6, 101)
    torch.testing.assert_close(GELU()(x), F.gelu(x, approximate="tanh"))
    assert (GELU()(x) - F.gelu(x)).abs().max() > 1e-4  # not the exact erf form


def test_gpt2_small_has_124439808_parameters_with_tying_and_163m_without():
    with torch.device("meta"):
        assert count_parameters(GPTModel(CONFIGS["124M"])) == 124_439_808
        untied = GPTConfig(tie_embeddings=False)
        assert count_parameters(GPTModel(untied)) == 124_439_808 + 50257 * 768


@pytest.mark.parametrize("size", ["124M", "355M", "774M", "1558M"])
def test_every_gpt2_size_counts_as_many_parameters_as_hugging_face(size):
    cfg = CONFIGS[size]
    hf_config = GPT2Config(n_embd=cfg.emb_dim, n_layer=cfg.n_layers, n_head=cfg.n_heads)
    with torch.device("meta"):
        hf = GPT2LMHeadModel(hf_config)
        assert count_parameters(GPTModel(cfg)) == sum(p.numel() for p in hf.parameters())


def test_forward_flops_are_two_per_weight_of_every_matrix_product():
    cfg = CONFIGS["cpu-tiny"]
    model = GPTModel(cfg)
    matmul_weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    assert forward_flops_per_token(cfg, context=0) == 2 * matmul_weights
    per_context_token = 2 * 2 * cfg.emb_dim * cfg.n_layers  # q·k scores and weights·v
    extra = forward_flops_per_token(cfg, 10) - forward_flops_per_token(cfg, 0)
    assert extra == 10 * per_context_token


def test_logits_have_one_row_per_position_and_one_column_per_token():
    model = GPTModel(CONFIGS["cpu-tiny"])
    assert model(torch.randint(0, 50257, (2, 7))).shape == (2, 7, 50257)


def test_keep_computes_only_the_kept_positions_and_equals_the_full_logits():
    torch.manual_seed(0)
    model = GPTModel(CONFIGS["cpu-tiny"]).eval()
    inputs = torch.randint(0, 50257, (3, 9))
    keep = torch.rand(3, 9) < 0.4
    seen = []
    model.out_head.register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape))
    with torch.no_grad():
        ours, full = model(inputs, keep=keep), model(inputs)[keep]
    torch.testing.assert_close(ours, full)
    assert seen == [(int(keep.sum()), 128), (3, 9, 128)]


@torch.no_grad()
def test_hidden_is_what_a_hook_on_the_final_norm_sees_and_skips_the_output_layer():
    model = GPTModel(CONFIGS["cpu-tiny"]).eval()
    seen = []
    model.final_norm.register_forward_hook(lambda _m, _args, out: seen.append(out))
    model.out_head.register_forward_hook(lambda *_: pytest.fail("the output layer ran"))
    states = model(torch.randint(0, 50257, (2, 11)), hidden=True)
    assert states.shape == (2, 11, 128) and torch.equal(states, seen[0])


def test_the_output_layer_is_the_token_embedding_when_tied():
    model = GPTModel(CONFIGS["cpu-tiny"])
    assert model.out_head.weight is model.tok_emb.weight
    untied = GPTModel(GPTConfig(context_length=16, emb_dim=32, n_heads=2, n_layers=1,
                                tie_embeddings=False))
    assert untied.out_head.weight is not untied.tok_emb.weight


def test_input_longer_than_the_context_is_refused_by_name():
    model = GPTModel(CONFIGS["cpu-tiny"])
    with pytest.raises(ValueError, match=r"129 tokens exceed the context length 128.*\[:, -128:\]"):
        model(torch.zeros(1, 129, dtype=torch.long))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"emb_dim": 100, "n_heads": 12}, "emb_dim=100 is not divisible by n_heads=12"),
        ({"n_layers": 0}, "n_layers must be a positive integer"),
        ({"vocab_size": 2.5}, "vocab_size must be a positive integer"),
        ({"drop_rate": 1.0}, r"drop_rate must be in \[0, 1\)"),
    ],
)
def test_a_bad_config_is_a_clear_error(changes, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(**changes)


def test_residual_projections_start_smaller_as_gpt2_does():
    torch.manual_seed(0)
    model = GPTModel(CONFIGS["cpu-small"])
    block = model.trf_blocks[0]
    expected = 0.02 / (2 * model.cfg.n_layers) ** 0.5
    assert abs(block.att.out_proj.weight.std().item() - expected) < 0.1 * expected
    assert abs(block.att.qkv.weight.std().item() - 0.02) < 0.002


def test_block_weights_are_stored_as_gpt2_stores_them_and_stay_so():
    model = GPTModel(CONFIGS["cpu-tiny"])
    linears = [m for m in model.trf_blocks.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 4 * model.cfg.n_layers

    def stored_in_out():
        return all(m.weight.t().is_contiguous() for m in linears)

    assert stored_in_out()
    assert model.tok_emb.weight.is_contiguous()  # lookups read rows
    model.load_state_dict({k: v.contiguous() for k, v in GPTModel(model.cfg).state_dict().items()})
    ids = torch.randint(0, model.cfg.vocab_size, (2, 16))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    F.cross_entropy(model(ids).flatten(0, 1), ids.flatten()).backward()
    optimizer.step()
    assert stored_in_out()


def test_with_dropout_rebuilds_the_model_with_the_same_weights():
    from buildllm.model import with_dropout

    torch.manual_seed(0)
    model = GPTModel(CONFIGS["cpu-tiny"]).train()
    assert with_dropout(model, model.cfg.drop_rate) is model
    copy = with_dropout(model, 0.3)
    assert copy.cfg.drop_rate == 0.3 and not copy.training
    assert {m.p for m in copy.modules() if isinstance(m, torch.nn.Dropout)} == {0.3}
    ids = torch.randint(0, copy.cfg.vocab_size, (2, 8))
    assert torch.equal(copy(ids), model.eval()(ids))  # in eval mode dropout does nothing
