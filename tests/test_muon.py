"""Muon: step for step against torch.optim.Muon, the orthogonalization against its promise, the
split of a model's parameters, and MuonAdamW as a drop-in optimizer that resumes exactly."""

import itertools

import pytest
import torch
from test_training import random_batches, tiny_model, train
from torch import nn

from buildllm.classify import BagOfWords, add_classification_head
from buildllm.lora import add_lora
from buildllm.muon import (
    KELLER_COEFFICIENTS,
    Muon,
    MuonAdamW,
    orthogonalize,
    split_parameters,
)
from buildllm.training import (
    AdamW,
    batch_loss,
    evaluate,
    fit,
    load_checkpoint,
    save_checkpoint,
    token_step,
    warmup_cosine,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

# What 5 steps of Keller Jordan's quintic do to a singular value x ≥ 0.002·‖G‖_F in exact
# arithmetic: it ends in [0.682, 1.203]. Rounding (bfloat16 keeps 3 digits) may add 0.01.
SMALLEST = 0.002
BAND = (0.67, 1.22)


def with_singular_values(s: torch.Tensor, rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    """A (rows, cols) matrix whose nonzero singular values are `s`."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(rows, len(s), generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(cols, len(s), generator=g, dtype=torch.float64))
    return u @ torch.diag(s.double()) @ v.T


# --- parity with torch.optim.Muon ---

@pytest.mark.parametrize(("shape", "weight_decay", "nesterov", "adjust"), list(itertools.product(
    [(24, 72), (72, 24)], [0.0, 0.1], [True, False], ["original", "match_rms_adamw"])))
def test_muon_gives_torchs_weights_and_momentum_after_5_steps(shape, weight_decay, nesterov,
                                                              adjust):
    torch.manual_seed(0)
    start = torch.randn(shape)
    ours, theirs = nn.Parameter(start.clone()), nn.Parameter(start.clone())
    settings = {"lr": 0.02, "weight_decay": weight_decay, "momentum": 0.9, "nesterov": nesterov}
    mine = Muon([ours], adjust_lr=adjust, **settings)  # bfloat16, as torch's always is
    reference = torch.optim.Muon([theirs], adjust_lr_fn=adjust, **settings)
    for _ in range(5):
        grad = torch.randn(shape)
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        mine.step()
        reference.step()
    assert (ours - start).abs().max() > 0.01  # the weights did move
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    torch.testing.assert_close(mine.state[ours]["momentum_buffer"],
                               reference.state[theirs]["momentum_buffer"], rtol=0, atol=1e-6)


def test_muon_follows_torch_through_matrices_of_repeated_shapes_and_a_changing_lr():
    torch.manual_seed(1)
    shapes = [(16, 48), (48, 16), (32, 32), (16, 48), (48, 16)]  # stacked by shape
    ours = [nn.Parameter(torch.randn(s)) for s in shapes]
    theirs = [nn.Parameter(p.detach().clone()) for p in ours]
    mine, reference = Muon(ours, adjust_lr="original"), torch.optim.Muon(theirs)
    for step in range(6):
        for a, b in zip(ours, theirs, strict=True):
            a.grad = torch.randn(a.shape)
            b.grad = a.grad.clone()
        for opt in (mine, reference):
            opt.param_groups[0]["lr"] = 0.01 * (step + 1)
        mine.step()
        reference.step()
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_muon_skips_a_matrix_without_a_gradient():
    a, b = nn.Parameter(torch.randn(8, 4)), nn.Parameter(torch.randn(4, 8))
    before = b.detach().clone()
    optimizer = Muon([a, b], lr=0.1)
    a.grad = torch.randn(8, 4)
    optimizer.step()
    assert torch.equal(b, before) and b not in optimizer.state


# --- what the orthogonalization does ---

def quintic_5_times(x: torch.Tensor) -> torch.Tensor:
    a, b, c = KELLER_COEFFICIENTS
    for _ in range(5):
        x = a * x + b * x**3 + c * x**5
    return x


def test_five_quintic_steps_send_every_value_from_0_002_to_1_into_the_band():
    x = torch.linspace(SMALLEST, 1, 200_001, dtype=torch.float64)
    y = quintic_5_times(x)
    assert 0.68 < y.min() < 0.69 and 1.20 < y.max() < 1.21
    assert quintic_5_times(torch.tensor(0.001, dtype=torch.float64)) < 0.5  # too small to rise


@pytest.mark.parametrize("shape", [(12, 40), (40, 12), (20, 20)])
def test_orthogonalize_applies_the_quintic_to_each_singular_value_and_keeps_the_vectors(shape):
    G = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    u, s, vt = torch.linalg.svd(G, full_matrices=False)
    expected = u @ torch.diag(quintic_5_times(s / G.norm())) @ vt
    torch.testing.assert_close(orthogonalize(G), expected, rtol=0, atol=1e-10)


def band_inputs() -> dict[str, tuple[torch.Tensor, int]]:
    """Inputs, with how many of their singular values are at least SMALLEST·‖G‖_F."""
    g = torch.Generator().manual_seed(0)
    spread = torch.logspace(0, -2, 48)  # a condition number of 100
    return {"wide random": (torch.randn(64, 256, generator=g), 64),
            "tall random": (torch.randn(256, 64, generator=g), 64),
            "rank 4": (torch.randn(64, 4, generator=g) @ torch.randn(4, 128, generator=g), 4),
            "tiny, spread": (1e-4 * with_singular_values(spread, 48, 96).float(), 48),
            "huge, spread": (1e6 * with_singular_values(spread, 96, 48).float(), 48)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", list(band_inputs()))
def test_orthogonalized_singular_values_lie_in_the_band(name, dtype):
    G, promised = band_inputs()[name]
    assert torch.linalg.svdvals(G)[promised - 1] >= SMALLEST * G.norm()
    out = orthogonalize(G, dtype=dtype)
    assert out.dtype == G.dtype and out.shape == G.shape
    s = torch.linalg.svdvals(out)
    assert BAND[0] <= s[:promised].min() and s[:promised].max() <= BAND[1], s[:promised]
    if dtype == torch.float32 and promised < len(s):
        assert s[promised:].max() < 1e-3  # the rank stays 4


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_orthogonalize_treats_each_matrix_of_a_stack_as_if_alone(dtype):
    stack = torch.randn(2, 3, 40, 12, generator=torch.Generator().manual_seed(0))
    stack[1, 2] *= 1e3  # each matrix is scaled by its own norm, not the stack's
    together = orthogonalize(stack, dtype=dtype)
    assert together.shape == stack.shape
    for i, j in itertools.product(range(2), range(3)):
        torch.testing.assert_close(together[i, j], orthogonalize(stack[i, j], dtype=dtype),
                                   rtol=0, atol=1e-6)


def test_orthogonalize_keeps_a_zero_matrix_zero_and_refuses_a_vector():
    assert torch.equal(orthogonalize(torch.zeros(4, 6)), torch.zeros(4, 6))
    one_line_error(lambda: orthogonalize(torch.zeros(6)),
                   r"takes a matrix or a stack of them, got a tensor of shape \(6,\)")


# --- the split ---

class ValueEmbeddings(nn.Module):
    """Embedding tables kept in an nn.ModuleList, as modded-nanogpt keeps its value embeddings."""

    def __init__(self):
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(10, 8) for _ in range(2))
        self.layers = nn.ModuleList(nn.Linear(8, 8) for _ in range(2))


def split_models() -> dict[str, nn.Module]:
    lora = add_lora(tiny_model(), rank=2, targets=("att.qkv", "ff.layers.0"))
    return {"GPTModel, tied": tiny_model(),
            "GPTModel, untied, qkv bias": tiny_model(tie_embeddings=False, qkv_bias=True),
            "classifier": add_classification_head(tiny_model(), num_classes=3),
            "LoRA": lora,
            "bag of words": BagOfWords(["spam", "ham", "free", "win"]),
            "embeddings in a ModuleList": ValueEmbeddings()}


@pytest.mark.parametrize("name", list(split_models()))
def test_split_puts_every_trainable_parameter_in_exactly_one_group(name):
    model = split_models()[name]
    hidden, rest = split_parameters(model)
    listed = [id(p) for _, p in hidden + rest]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert len(listed) == len(set(listed)) and set(listed) == trainable
    assert all(p.ndim == 2 for _, p in hidden)


def test_split_gives_muon_the_block_matrices_and_adamw_the_rest_of_a_gpt():
    model = tiny_model(tie_embeddings=False)
    hidden, rest = (dict(part) for part in split_parameters(model))
    per_block = ["att.qkv.weight", "att.out_proj.weight", "ff.layers.0.weight",
                 "ff.layers.2.weight"]
    assert sorted(hidden) == sorted(f"trf_blocks.{i}.{n}" for i in range(2) for n in per_block)
    assert {"tok_emb.weight", "pos_emb.weight", "out_head.weight", "final_norm.scale",
            "trf_blocks.0.att.out_proj.bias"} <= set(rest)


def test_split_counts_a_tied_embedding_once_as_an_embedding():
    model = tiny_model()
    hidden, rest = split_parameters(model)
    names = [n for n, p in rest if p is model.out_head.weight]
    assert names == ["tok_emb.weight"] and all(p is not model.tok_emb.weight for _, p in hidden)


def test_split_gives_embeddings_to_adamw_even_inside_a_module_list():
    hidden, rest = (dict(part) for part in split_parameters(ValueEmbeddings()))
    assert sorted(hidden) == ["layers.0.weight", "layers.1.weight"]
    assert {"tables.0.weight", "tables.1.weight"} <= set(rest)


def test_split_of_a_lora_model_gives_muon_only_the_adapters():
    model = add_lora(tiny_model(), rank=2, targets=("att.qkv",))
    hidden, rest = split_parameters(model)
    assert sorted(n.rsplit(".", 1)[1] for n, _ in hidden) == ["A", "A", "B", "B"] and not rest


# --- MuonAdamW ---

def test_muon_adamw_shares_its_groups_with_the_two_optimizers_and_decays_only_matrices():
    model = tiny_model(tie_embeddings=False)
    optimizer = MuonAdamW(model, lr=0.003, weight_decay=0.2)
    assert isinstance(optimizer.adamw, AdamW)
    assert optimizer.param_groups == optimizer.muon.param_groups + optimizer.adamw.param_groups
    assert all(a is b for a, b in zip(
        optimizer.param_groups, optimizer.muon.param_groups + optimizer.adamw.param_groups,
        strict=True))
    decay = {g["weight_decay"]: {p.ndim for p in g["params"]} for g in optimizer.adamw.param_groups}
    assert decay == {0.2: {2}, 0.0: {1}}
    assert optimizer.muon.param_groups[0]["weight_decay"] == 0.2
    assert {g["lr"] for g in optimizer.param_groups} == {0.003}


def test_muon_adamw_gives_muon_its_own_learning_rate_and_settings_when_asked():
    optimizer = MuonAdamW(tiny_model(), lr=0.003, muon_lr=0.02, adjust_lr="original",
                          nesterov=False)
    assert [(g["lr"], g["adjust_lr"], g["nesterov"]) for g in optimizer.muon.param_groups] == \
        [(0.02, "original", False)]
    assert {g["lr"] for g in optimizer.adamw.param_groups} == {0.003}


def test_muon_adamw_lowers_the_loss_in_fit_and_moves_every_parameter():
    model = tiny_model()
    batches = random_batches(2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = MuonAdamW(model, lr=0.01)
    scheduler = warmup_cosine(optimizer, warmup_steps=3, total_steps=30)
    start = evaluate(model, batches)
    history = fit(model, lambda batch: token_step(model, batch_loss, batch),
                  itertools.cycle(batches), steps=30, optimizer=optimizer, scheduler=scheduler,
                  clip=1.0, eval_every=30, evaluate_fn=lambda s: {"loss": evaluate(model, batches)},
                  disable=True)
    assert history["loss"][-1] < start - 1.0, (start, history["loss"])
    assert all(not torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_muon_adamw_works_under_a_gradient_scaler_and_skips_a_step_that_overflowed():
    batches = random_batches(3)
    plain, scaled = tiny_model(), tiny_model()
    train(plain, MuonAdamW(plain, lr=0.01, ns_dtype=None), batches)
    optimizer = MuonAdamW(scaled, lr=0.01, ns_dtype=None)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    for x, y in batches:
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(batch_loss(scaled, x, y)).backward()
        scaler.step(optimizer)  # unscales every group's gradients, then steps both
        scaler.update()
    for a, b in zip(plain.parameters(), scaled.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    before = [p.detach().clone() for p in scaled.parameters()]
    scaled.tok_emb.weight.grad[0, 0] = float("inf")
    scaler.step(optimizer)
    assert all(torch.equal(a, b) for a, b in zip(before, scaled.parameters(), strict=True))


def test_muon_adamw_state_dict_round_trip_resumes_identically(tmp_path):
    batches = random_batches(6)

    def run(seed: int):
        model = tiny_model(seed)
        optimizer = MuonAdamW(model, lr=0.01)
        return model, optimizer, warmup_cosine(optimizer, warmup_steps=2, total_steps=6)

    model, optimizer, scheduler = run(0)
    train(model, optimizer, batches[:3], scheduler)
    save_checkpoint(tmp_path / "ckpt.pt", model=model.state_dict(),
                    optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict())
    train(model, optimizer, batches[3:], scheduler)

    ckpt = load_checkpoint(tmp_path / "ckpt.pt")
    resumed, optimizer2, scheduler2 = run(1)  # other weights: the checkpoint must restore them
    resumed.load_state_dict(ckpt["model"])
    optimizer2.load_state_dict(ckpt["optimizer"])
    scheduler2.load_state_dict(ckpt["scheduler"])
    train(resumed, optimizer2, batches[3:], scheduler2)
    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    assert [g["lr"] for g in optimizer2.muon.param_groups + optimizer2.adamw.param_groups] == \
        [g["lr"] for g in optimizer2.param_groups]


# --- bad input: one line that says what is wrong ---

def one_line_error(call, match: str) -> str:
    with pytest.raises(ValueError, match=match) as caught:
        call()
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_muon_refuses_a_vector_and_names_it():
    model = tiny_model()
    one_line_error(lambda: Muon(model.named_parameters()),
                   r"matrices only, but trf_blocks\.0\.norm1\.scale has shape \(32,\): "
                   r"give it to AdamW")
    one_line_error(lambda: Muon([torch.zeros(3, 3, requires_grad=True), torch.zeros(3)]),
                   r"parameter 1 of group 0 has shape \(3,\)")


def test_muon_refuses_a_vector_added_later_and_stays_as_it_was():
    optimizer = Muon([nn.Parameter(torch.zeros(3, 3))])
    one_line_error(lambda: optimizer.add_param_group({"params": [nn.Parameter(torch.zeros(3))]}),
                   r"parameter 0 of group 1 has shape \(3,\)")
    assert len(optimizer.param_groups) == 1


@pytest.mark.parametrize(("settings", "match"), [
    ({"lr": -0.1}, r"lr must be 0 or more, got -0\.1"),
    ({"lr": float("nan")}, r"lr must be 0 or more, got nan"),
    ({"momentum": 1.0}, r"momentum must be in \[0, 1\), got 1\.0"),
    ({"momentum": -0.5}, r"momentum must be in \[0, 1\), got -0\.5"),
    ({"weight_decay": -1}, r"weight_decay must be 0 or more"),
    ({"adjust_lr": "spectral"}, r"adjust_lr must be one of \['match_rms_adamw', 'original'\]"),
    ({"ns_steps": 0}, r"ns_steps must be 1 or more"),
])
def test_muon_refuses_impossible_settings(settings, match):
    one_line_error(lambda: Muon([nn.Parameter(torch.zeros(3, 3))], **settings), "Muon: " + match)


def test_muon_adamw_refuses_impossible_settings_before_building_anything():
    model = tiny_model()
    one_line_error(lambda: MuonAdamW(model, lr=-1), r"Muon: lr must be 0 or more")
    one_line_error(lambda: MuonAdamW(model, momentum=1.5), r"momentum must be in \[0, 1\)")


def test_muon_adamw_refuses_a_model_without_hidden_matrices():
    one_line_error(lambda: MuonAdamW(BagOfWords(["a", "b"])),
                   r"BagOfWords has no hidden matrices .* train it with AdamW alone")


def test_muon_adamw_refuses_another_optimizers_state_and_keeps_its_own(tmp_path):
    model = tiny_model()
    optimizer = MuonAdamW(model, lr=0.01)
    train(model, optimizer, random_batches(1))
    before = optimizer.state_dict()
    adamw_state = AdamW(model.parameters()).state_dict()
    one_line_error(lambda: optimizer.load_state_dict(adamw_state),
                   r"not a MuonAdamW's .* resume with the optimizer it was saved from")
    after = optimizer.state_dict()
    for part in ("muon", "adamw"):
        assert after[part]["param_groups"] == before[part]["param_groups"]
        for key, state in before[part]["state"].items():
            assert all(torch.equal(v, after[part]["state"][key][k]) for k, v in state.items())
