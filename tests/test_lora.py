"""LoRA (buildllm.lora) against Hugging Face peft, and its promises on GPTModel.

peft is the reference here only: buildllm never imports it.
"""

import copy
import math

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from buildllm.lora import DEFAULT_TARGETS, LoRALinear, add_lora, merge_lora, trainable_parameters
from buildllm.model import GPTConfig, GPTModel

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

TINY = GPTConfig(vocab_size=100, context_length=16, emb_dim=32, n_heads=4, n_layers=2,
                 drop_rate=0.0)


class OneLinear(nn.Module):
    def __init__(self, d_in: int = 12, d_out: int = 7):
        super().__init__()
        self.proj = nn.Linear(d_in, d_out)

    def forward(self, x):
        return self.proj(x)


def peft_lora(module: nn.Module, rank: int, alpha: float, targets: list[str]) -> nn.Module:
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0,
                        init_lora_weights=True)
    return get_peft_model(copy.deepcopy(module), config)


def randomize_b(model: nn.Module, std: float = 0.02, seed: int = 1) -> None:
    """Give every B non-zero values, so that the LoRA path contributes to the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if name.endswith(("lora_B.default.weight", ".B")):
                p.copy_(torch.randn(p.shape, generator=g) * std)


def gpt(seed: int = 0) -> GPTModel:
    torch.manual_seed(seed)
    return GPTModel(TINY).eval()


def ids(seed: int = 2) -> torch.Tensor:
    return torch.randint(0, TINY.vocab_size, (3, 11), generator=torch.Generator().manual_seed(seed))


def test_a_lora_linear_matches_peft_in_output_and_in_gradients_of_a_and_b():
    torch.manual_seed(0)
    module = OneLinear()
    theirs = peft_lora(module, rank=4, alpha=8, targets=["proj"])
    peft_layer = theirs.base_model.model.proj
    randomize_b(theirs, std=0.5)
    ours = LoRALinear(copy.deepcopy(module.proj), rank=4, alpha=8)
    with torch.no_grad():
        ours.A.copy_(peft_layer.lora_A["default"].weight)
        ours.B.copy_(peft_layer.lora_B["default"].weight)
    assert peft_layer.lora_B["default"].weight.abs().min() > 0

    x = torch.randn(5, 3, 12)
    y_ours, y_theirs = ours(x), theirs(x)
    assert not torch.allclose(y_ours, module(x), atol=1e-3)  # the update really contributes
    torch.testing.assert_close(y_ours, y_theirs, rtol=0, atol=1e-6)

    weights = torch.randn(5, 3, 7)
    (y_ours * weights).sum().backward()
    (y_theirs * weights).sum().backward()
    torch.testing.assert_close(ours.A.grad, peft_layer.lora_A["default"].weight.grad,
                               rtol=0, atol=1e-6)
    torch.testing.assert_close(ours.B.grad, peft_layer.lora_B["default"].weight.grad,
                               rtol=0, atol=1e-6)
    assert ours.base.weight.grad is None and ours.base.bias.grad is None


def test_a_starts_like_peft_kaiming_uniform_and_b_starts_at_zero():
    base = nn.Linear(48, 20)
    torch.manual_seed(5)
    layer = LoRALinear(base, rank=6, alpha=12)
    torch.manual_seed(5)
    expected = torch.empty(6, 48)
    nn.init.kaiming_uniform_(expected, a=math.sqrt(5))
    assert torch.equal(layer.A, expected)
    assert layer.A.abs().max() <= 1 / math.sqrt(48)  # the bound kaiming_uniform(a=√5) gives
    assert torch.equal(layer.B, torch.zeros(20, 6))
    peft_a = peft_lora(OneLinear(48, 20), 6, 12, ["proj"]).base_model.model.proj.lora_A
    assert peft_a["default"].weight.abs().max() <= 1 / math.sqrt(48)
    assert layer.scale == 2.0


def test_lora_on_a_whole_gpt_matches_peft_with_the_same_targets():
    model = gpt()
    theirs = peft_lora(model, rank=4, alpha=8, targets=list(DEFAULT_TARGETS))
    randomize_b(theirs)
    ours = add_lora(copy.deepcopy(model), rank=4, alpha=8)
    with torch.no_grad():
        for name, m in ours.named_modules():
            if isinstance(m, LoRALinear):
                ref = theirs.base_model.model.get_submodule(name)
                m.A.copy_(ref.lora_A["default"].weight)
                m.B.copy_(ref.lora_B["default"].weight)
    assert trainable_parameters(ours) == sum(
        p.numel() for p in theirs.parameters() if p.requires_grad)
    assert not torch.allclose(ours(ids()), model(ids()), atol=1e-3)
    torch.testing.assert_close(ours(ids()), theirs(ids()), rtol=0, atol=1e-6)


def test_after_add_lora_only_a_and_b_train_and_their_count_is_rank_times_in_plus_out():
    model = add_lora(gpt(), rank=4, alpha=8)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(name.endswith((".A", ".B")) for name in trainable)
    per_block = 4 * (32 + 96) + 4 * (32 + 32) + 4 * (32 + 128) + 4 * (128 + 32)  # qkv, out, ff
    assert trainable_parameters(model) == TINY.n_layers * per_block == 4_096
    wrapped = [name for name, m in model.named_modules() if isinstance(m, LoRALinear)]
    assert wrapped == [f"trf_blocks.{i}.{t}" for i in range(2) for t in DEFAULT_TARGETS]


def test_a_fresh_lora_model_gives_exactly_the_base_models_logits():
    model = gpt()
    before = model(ids())
    assert torch.equal(add_lora(model, rank=8, alpha=16)(ids()), before)


def test_training_steps_change_a_and_b_but_never_the_frozen_weights():
    model = add_lora(gpt(), rank=2, alpha=4, targets=("att.qkv",)).train()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    for _ in range(3):
        optimizer.zero_grad()
        model(ids()).logsumexp(-1).mean().backward()
        optimizer.step()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert not torch.equal(p, start[name]), name
        else:
            assert torch.equal(p, frozen[name]), name


def test_merging_keeps_the_outputs_and_leaves_no_lora_parameters():
    model = add_lora(gpt(), rank=4, alpha=8)
    randomize_b(model)
    before = model(ids())
    merged = merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in merged.modules())
    assert not any(name.endswith((".A", ".B")) for name, _ in merged.named_parameters())
    assert sum(p.numel() for p in merged.parameters()) == sum(p.numel() for p in gpt().parameters())
    after = merged(ids())
    assert not torch.allclose(after, gpt()(ids()), atol=1e-3)  # the update survived the merge
    torch.testing.assert_close(after, before, rtol=0, atol=1e-5)


def test_merged_weights_equal_w_plus_scale_b_a_and_keep_gpts_transposed_layout():
    model = add_lora(gpt(), rank=4, alpha=8, targets=("ff.layers.0",))
    randomize_b(model)
    layer = model.trf_blocks[1].ff.layers[0]
    expected = layer.base.weight + 2.0 * layer.B @ layer.A
    stride = layer.base.weight.stride()
    merged = merge_lora(model).trf_blocks[1].ff.layers[0]
    assert type(merged) is nn.Linear
    torch.testing.assert_close(merged.weight, expected, rtol=0, atol=1e-7)
    assert merged.weight.stride() == stride == (1, 128)  # stored (in, out), as GPTModel keeps it


def test_targets_match_whole_name_parts_only():
    model = add_lora(gpt(), targets=("qkv",))
    assert isinstance(model.trf_blocks[0].att.qkv, LoRALinear)
    with pytest.raises(ValueError, match="'kv' matches no module"):
        add_lora(gpt(), targets=("kv",))


def test_bad_settings_raise_clear_errors():
    with pytest.raises(ValueError, match="rank must be a positive integer, got 0"):
        LoRALinear(nn.Linear(4, 4), rank=0, alpha=1)
    with pytest.raises(ValueError, match="rank must be a positive integer, got 0"):
        add_lora(gpt(), rank=0)
    with pytest.raises(ValueError, match="dropout must be in"):
        LoRALinear(nn.Linear(4, 4), rank=2, alpha=1, dropout=1.0)
    with pytest.raises(ValueError, match="'att.query' matches no module"):
        add_lora(gpt(), targets=("att.query",))
    with pytest.raises(ValueError, match="a MultiHeadAttention"):
        add_lora(gpt(), targets=("att",))
    with pytest.raises(TypeError, match="not a single string"):
        add_lora(gpt(), targets="att.qkv")


def test_a_failed_add_lora_leaves_the_model_untouched():
    model = gpt()
    with pytest.raises(ValueError):
        add_lora(model, targets=("att.qkv", "nothing"))
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())


def test_adding_lora_twice_is_refused_until_merged():
    model = add_lora(gpt())
    with pytest.raises(ValueError, match="already has LoRA layers"):
        add_lora(model)
    assert isinstance(add_lora(merge_lora(model)).trf_blocks[0].att.qkv, LoRALinear)


def test_dropout_acts_on_the_lora_path_only():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(16, 8), rank=4, alpha=4, dropout=0.5).train()
    x = torch.randn(64, 16)
    assert torch.equal(layer(x), layer.base(x))  # B = 0: dropout has nothing to act on
    with torch.no_grad():
        layer.B.normal_()
    torch.manual_seed(1)
    noisy = layer(x)
    torch.manual_seed(1)
    mask = nn.functional.dropout(torch.ones_like(x), 0.5)
    torch.testing.assert_close(noisy, layer.base(x) + (x * mask) @ layer.A.T @ layer.B.T)
    layer.eval()
    torch.testing.assert_close(layer(x), layer.base(x) + x @ layer.A.T @ layer.B.T)
