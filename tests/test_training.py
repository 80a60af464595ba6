"""Training pieces: each one against PyTorch's own version, or against the rule it states."""

import copy
import math
import pickle
import random
from itertools import islice

import pytest
import torch

from buildllm.data import fetch
from buildllm.datasets import create_dataloader
from buildllm.model import GPTConfig, GPTModel
from buildllm.training import (
    AdamW,
    FitState,
    batch_loss,
    clip_grad_norm,
    cycle,
    evaluate,
    fit,
    load_checkpoint,
    lr_at,
    param_groups,
    perplexity,
    rng_state,
    save_checkpoint,
    set_rng_state,
    train_simple,
    warmup_cosine,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

VOCAB = 61
CFG = GPTConfig(vocab_size=VOCAB, context_length=16, emb_dim=32, n_heads=4, n_layers=2,
                drop_rate=0.0)


def tiny_model(seed: int = 0, dtype=torch.float32, **changes) -> GPTModel:
    torch.manual_seed(seed)
    cfg = GPTConfig(**{**CFG.__dict__, **changes})
    return GPTModel(cfg).to(dtype)


def random_batches(n: int, seed: int = 1, batch: int = 4) -> list[tuple[torch.Tensor, ...]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(0, VOCAB, (batch, 16), generator=g),
             torch.randint(0, VOCAB, (batch, 16), generator=g)) for _ in range(n)]


def train(model, optimizer, batches, scheduler=None, clip=None) -> None:
    for x, y in batches:
        optimizer.zero_grad(set_to_none=True)
        batch_loss(model, x, y).backward()
        if clip is not None:
            clip_grad_norm(model.parameters(), clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()


def max_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max((p - q).abs().max().item()
               for p, q in zip(a.parameters(), b.parameters(), strict=True))


# --- AdamW -------------------------------------------------------------------------------------

ADAM = {"lr": 3e-3, "betas": (0.9, 0.95), "eps": 1e-8}


@pytest.mark.parametrize("foreach", [False, True, None])
def test_adamw_gives_torchs_parameters_after_50_steps_with_decay_groups(foreach):
    # float64, so that what is compared is the arithmetic: in float32 the last-bit rounding
    # differences of any two implementations grow through the training feedback loop.
    ours = tiny_model(dtype=torch.float64)
    theirs = copy.deepcopy(ours)
    batches = random_batches(50)
    train(ours, AdamW(param_groups(ours, 0.1), **ADAM), batches)
    train(theirs, torch.optim.AdamW(param_groups(theirs, 0.1), **ADAM, foreach=foreach), batches)
    assert max_difference(ours, theirs) <= 1e-6
    assert max_difference(ours, tiny_model(dtype=torch.float64)) > 1e-2  # it did train


def test_adamw_in_float32_matches_torch_when_both_see_the_same_gradients():
    ours, theirs = tiny_model(), tiny_model()
    opt_ours = AdamW(param_groups(ours, 0.1), **ADAM)
    opt_theirs = torch.optim.AdamW(param_groups(theirs, 0.1), **ADAM, foreach=False)
    for x, y in random_batches(50):
        opt_ours.zero_grad()
        batch_loss(ours, x, y).backward()
        for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
            q.grad = p.grad.clone()
        opt_ours.step()
        opt_theirs.step()
    assert max_difference(ours, theirs) <= 1e-6


def test_adamw_follows_a_changing_learning_rate_like_torch():
    ours = tiny_model(dtype=torch.float64)
    theirs = copy.deepcopy(ours)
    opt_ours = AdamW(param_groups(ours, 0.1), **ADAM)
    opt_theirs = torch.optim.AdamW(param_groups(theirs, 0.1), **ADAM)
    batches = random_batches(50)
    train(ours, opt_ours, batches, warmup_cosine(opt_ours, 10, 50))
    train(theirs, opt_theirs, batches, warmup_cosine(opt_theirs, 10, 50))
    assert max_difference(ours, theirs) <= 1e-6


def test_adamw_skips_parameters_without_a_gradient():
    model = tiny_model()
    frozen = model.final_norm.scale.detach().clone()
    model.final_norm.scale.requires_grad_(False)
    train(model, AdamW(model.parameters(), weight_decay=0.1), random_batches(3))
    assert torch.equal(model.final_norm.scale, frozen)


def test_adamw_state_dict_round_trip_continues_exactly():
    batches = random_batches(20)
    straight = tiny_model()
    opt = AdamW(param_groups(straight, 0.1), **ADAM)
    train(straight, opt, batches)

    first = tiny_model()
    opt = AdamW(param_groups(first, 0.1), **ADAM)
    train(first, opt, batches[:10])
    saved = copy.deepcopy((first.state_dict(), opt.state_dict()))
    resumed = tiny_model(seed=99)  # different weights, overwritten by the load
    resumed.load_state_dict(saved[0])
    opt = AdamW(param_groups(resumed, 0.1), lr=1.0)  # settings come back from the state dict too
    opt.load_state_dict(saved[1])
    assert opt.param_groups[0]["lr"] == ADAM["lr"]
    train(resumed, opt, batches[10:])
    assert max_difference(resumed, straight) == 0


@pytest.mark.parametrize("bad", [{"lr": -1e-3}, {"eps": -1.0}, {"weight_decay": -0.1},
                                 {"betas": (1.0, 0.999)}, {"betas": (0.9, -0.1)}])
def test_adamw_refuses_impossible_settings(bad):
    with pytest.raises(ValueError, match="invalid AdamW settings"):
        AdamW(tiny_model().parameters(), **bad)


# --- gradient clipping -------------------------------------------------------------------------

def grads_of_a_batch(model, scale: float) -> None:
    model.zero_grad(set_to_none=True)
    x, y = random_batches(1)[0]
    (scale * batch_loss(model, x, y)).backward()


@pytest.mark.parametrize("scale, max_norm", [(1.0, 0.01), (1.0, 1e3), (100.0, 1.0)])
def test_clip_grad_norm_matches_torch_above_and_below_the_limit(scale, max_norm):
    ours, theirs = tiny_model(), tiny_model()
    grads_of_a_batch(ours, scale)
    grads_of_a_batch(theirs, scale)
    before = [p.grad.clone() for p in ours.parameters()]
    norm = clip_grad_norm(ours.parameters(), max_norm)
    expected = torch.nn.utils.clip_grad_norm_(theirs.parameters(), max_norm)
    torch.testing.assert_close(norm, expected)
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad)
    after = [p.grad for p in ours.parameters()]
    changed = any(not torch.equal(b, a) for b, a in zip(before, after, strict=True))
    assert changed == (norm.item() > max_norm)


def test_clip_grad_norm_ignores_parameters_without_gradients():
    ours, theirs = tiny_model(), tiny_model()
    for model in (ours, theirs):
        grads_of_a_batch(model, 1.0)
        model.final_norm.scale.grad = None
        model.trf_blocks[0].ff.layers[0].bias.grad = None
    norm = clip_grad_norm(ours.parameters(), 0.05)
    torch.testing.assert_close(norm, torch.nn.utils.clip_grad_norm_(theirs.parameters(), 0.05))
    assert ours.final_norm.scale.grad is None
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert (p.grad is None) == (q.grad is None)
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad)


def test_clip_grad_norm_of_no_gradients_is_zero():
    assert clip_grad_norm(tiny_model().parameters(), 1.0).item() == 0.0


# --- learning-rate schedule --------------------------------------------------------------------

SCHEDULE = {"max_lr": 1e-3, "warmup_steps": 10, "total_steps": 100, "min_lr": 1e-4}


def test_warmup_starts_near_zero_and_reaches_the_peak():
    lrs = [lr_at(s, **SCHEDULE) for s in range(10)]
    assert 0 < lrs[0] <= 1e-3 / 10
    assert lrs == sorted(lrs) and len(set(lrs)) == 10  # strictly rising
    assert lrs[-1] == pytest.approx(1e-3)
    assert lr_at(10, **SCHEDULE) == pytest.approx(1e-3)


def test_cosine_falls_steadily_to_the_minimum_and_stays_there():
    lrs = [lr_at(s, **SCHEDULE) for s in range(10, 130)]
    assert lrs == sorted(lrs, reverse=True)
    assert lr_at(55, **SCHEDULE) == pytest.approx((1e-3 + 1e-4) / 2)  # halfway down the cosine
    assert lr_at(99, **SCHEDULE) == pytest.approx(1e-4, rel=1e-2)
    assert lr_at(100, **SCHEDULE) == lr_at(500, **SCHEDULE) == 1e-4


def test_without_warmup_the_first_step_is_at_the_peak():
    assert lr_at(0, max_lr=1e-3, warmup_steps=0, total_steps=10) == 1e-3


@pytest.mark.parametrize("warmup, total", [(11, 10), (-1, 10), (0, 0)])
def test_schedule_refuses_impossible_step_counts(warmup, total):
    with pytest.raises(ValueError, match="warmup_steps"):
        lr_at(0, max_lr=1.0, warmup_steps=warmup, total_steps=total)
    with pytest.raises(ValueError, match="warmup_steps"):
        warmup_cosine(AdamW(tiny_model().parameters()), warmup, total)


def scheduled_lrs(optimizer, scheduler, steps: int) -> list[list[float]]:
    lrs = []
    for _ in range(steps):
        lrs.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return lrs


def test_the_scheduler_sets_every_group_to_lr_at():
    optimizer = AdamW(param_groups(tiny_model(), 0.1), lr=1e-3)
    lrs = scheduled_lrs(optimizer, warmup_cosine(optimizer, 10, 100, min_ratio=0.1), 120)
    for step, group_lrs in enumerate(lrs):
        assert group_lrs == [pytest.approx(lr_at(step, **SCHEDULE))] * 2


def test_the_scheduler_resumes_from_its_state_dict(tmp_path):
    optimizer = AdamW(tiny_model().parameters(), lr=1e-3)
    straight = scheduled_lrs(optimizer, warmup_cosine(optimizer, 10, 60), 60)

    optimizer = AdamW(tiny_model().parameters(), lr=1e-3)
    scheduler = warmup_cosine(optimizer, 10, 60)
    first = scheduled_lrs(optimizer, scheduler, 25)
    save_checkpoint(tmp_path / "ck.pt", optimizer=optimizer.state_dict(),
                    scheduler=scheduler.state_dict())
    state = load_checkpoint(tmp_path / "ck.pt")
    optimizer = AdamW(tiny_model().parameters(), lr=1e-3)
    scheduler = warmup_cosine(optimizer, 10, 60)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    assert first + scheduled_lrs(optimizer, scheduler, 35) == straight


# --- weight-decay groups -----------------------------------------------------------------------

@pytest.mark.parametrize("tie", [True, False])
def test_param_groups_hold_every_trainable_parameter_exactly_once(tie):
    model = tiny_model(tie_embeddings=tie)
    model.pos_emb.weight.requires_grad_(False)
    groups = param_groups(model, 0.1)
    grouped = [id(p) for group in groups for p in group["params"]]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert len(grouped) == len(set(grouped)) == len(trainable)
    assert set(grouped) == trainable
    assert (id(model.out_head.weight) in grouped) and (id(model.tok_emb.weight) in grouped)


def test_matrices_decay_and_biases_and_norms_do_not():
    model = tiny_model()
    decay, no_decay = param_groups(model, 0.1)
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)
    names = {id(p): name for name, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    exempt = {names[id(p)] for p in no_decay["params"]}
    assert {"tok_emb.weight", "pos_emb.weight", "trf_blocks.0.att.qkv.weight",
            "trf_blocks.1.ff.layers.2.weight"} <= decayed
    assert {"final_norm.scale", "final_norm.shift", "trf_blocks.0.norm1.scale",
            "trf_blocks.0.att.qkv.bias", "trf_blocks.1.ff.layers.0.bias"} <= exempt
    assert all(name.endswith("weight") for name in decayed)
    assert not any(name.endswith("weight") for name in exempt)


# --- loss, evaluation, perplexity --------------------------------------------------------------

def test_batch_loss_is_the_mean_negative_log_probability_of_each_target():
    model = tiny_model()
    x, y = random_batches(1)[0]
    log_probs = model(x).log_softmax(dim=-1)  # (batch, tokens, vocab)
    by_hand = -log_probs.gather(-1, y.unsqueeze(-1)).mean()
    torch.testing.assert_close(batch_loss(model, x, y), by_hand)


def test_an_untrained_model_starts_near_ln_vocab():
    x, y = random_batches(1, batch=32)[0]
    assert batch_loss(tiny_model(), x, y).item() == pytest.approx(math.log(VOCAB), rel=0.05)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_evaluate_turns_dropout_off_and_restores_the_mode(mode):
    model = tiny_model(drop_rate=0.5)
    batches = random_batches(3)
    model.train(mode == "train")
    loss = evaluate(model, batches)
    assert model.training == (mode == "train")
    model.eval()
    with torch.no_grad():
        expected = sum(batch_loss(model, x, y).item() for x, y in batches) / 3
    assert loss == pytest.approx(expected)


def test_evaluate_reads_at_most_max_batches():
    model = tiny_model()
    batches = random_batches(5)
    read = []

    def counted():
        for batch in batches:
            read.append(batch)
            yield batch

    assert evaluate(model, counted(), max_batches=2) == pytest.approx(evaluate(model, batches[:2]))
    assert len(read) <= 3  # the third one is only looked at, to stop


def test_evaluate_on_no_batches_is_a_clear_error():
    with pytest.raises(ValueError, match="no batches"):
        evaluate(tiny_model(), [])


def test_perplexity_is_the_exponential_of_the_loss():
    assert perplexity(0.0) == 1.0
    assert perplexity(math.log(50257)) == pytest.approx(50257)


# --- checkpoints and random state --------------------------------------------------------------

def test_checkpoint_round_trip_resumes_training_exactly(tmp_path):
    """Model, optimizer, scheduler and random state come back: the run goes on as if unbroken."""
    batches = random_batches(30)

    def fresh(seed=0):
        model = tiny_model(seed, drop_rate=0.2)  # dropout draws random numbers
        optimizer = AdamW(param_groups(model, 0.1), **ADAM)
        return model, optimizer, warmup_cosine(optimizer, 5, 30)

    torch.manual_seed(7)
    straight, opt, sched = fresh()
    train(straight, opt, batches, sched, clip=1.0)

    torch.manual_seed(7)
    model, opt, sched = fresh()
    train(model, opt, batches[:12], sched, clip=1.0)
    save_checkpoint(tmp_path / "run" / "ck.pt", model=model.state_dict(),
                    optimizer=opt.state_dict(), scheduler=sched.state_dict(), step=12,
                    rng=rng_state())
    torch.manual_seed(1234)  # the crash: whatever happens in between
    state = load_checkpoint(tmp_path / "run" / "ck.pt")
    model, opt, sched = fresh(seed=3)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    train(model, opt, batches[state["step"]:], sched, clip=1.0)
    assert max_difference(model, straight) == 0


@pytest.mark.parametrize("crash", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_a_save_that_fails_half_way_leaves_the_old_checkpoint_and_no_temp_file(
        tmp_path, monkeypatch, crash):
    path = save_checkpoint(tmp_path / "ck.pt", step=1, weights=torch.ones(3))
    old = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")  # torch.save is given the temporary file
        raise crash

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(type(crash)):
        save_checkpoint(path, step=2, weights=torch.zeros(3))
    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]
    assert load_checkpoint(path)["step"] == 1


RAN = []


class _Sneaky:
    """A pickle that runs code when loaded: what weights_only is there to refuse."""

    def __reduce__(self):
        return RAN.append, ("code from the file ran",)


def test_loading_refuses_a_checkpoint_that_would_run_code(tmp_path):
    torch.save({"model": {}, "surprise": _Sneaky()}, tmp_path / "evil.pt")
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(tmp_path / "evil.pt")
    assert RAN == []


def test_restoring_the_rng_state_repeats_the_random_numbers(tmp_path):
    save_checkpoint(tmp_path / "rng.pt", rng=rng_state())
    first = (random.random(), torch.rand(3), torch.randn(2, 2))
    set_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    again = (random.random(), torch.rand(3), torch.randn(2, 2))
    assert first[0] == again[0]
    assert torch.equal(first[1], again[1]) and torch.equal(first[2], again[2])


# --- the simple training loop ------------------------------------------------------------------

@pytest.fixture(scope="module")
def verdict_loaders():
    text = fetch("the-verdict.txt").read_text("utf-8")
    split = int(0.9 * len(text))
    torch.manual_seed(0)
    train_loader = create_dataloader(text[:split], batch_size=4, context_length=32, stride=32)
    val_loader = create_dataloader(text[split:], batch_size=4, context_length=32, stride=32,
                                   shuffle=False)
    return train_loader, val_loader


def test_train_simple_lowers_the_loss_on_the_verdict(verdict_loaders):
    train_loader, val_loader = verdict_loaders
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(context_length=32, emb_dim=32, n_heads=2, n_layers=1,
                               drop_rate=0.0))
    before = evaluate(model, train_loader, 4)
    evaluated = []
    history = train_simple(model, train_loader, val_loader, AdamW(model.parameters(), lr=1e-2),
                           steps=45, eval_every=20, eval_batches=4, on_eval=evaluated.append)
    assert history["step"] == evaluated == [20, 40, 45]
    assert history["tokens"] == [step * 4 * 32 for step in (20, 40, 45)]
    assert len(history["train_loss"]) == len(history["val_loss"]) == 3
    assert history["train_loss"][-1] < before - 2  # from about ln(50257) ≈ 10.8
    assert history["val_loss"][-1] < history["val_loss"][0] < before
    assert model.training


def test_train_simple_starts_the_loader_again_when_it_runs_out():
    model = tiny_model()
    batches = random_batches(3)
    history = train_simple(model, batches, batches, AdamW(model.parameters()), steps=7,
                           eval_every=100)
    assert history["step"] == [7] and history["tokens"] == [7 * 4 * 16]



# --- fit: the loop every meeting shares --------------------------------------------------------

def test_cycle_goes_round_the_loader_and_ends_at_once_on_an_empty_one():
    assert list(islice(cycle([1, 2]), 5)) == [1, 2, 1, 2, 1]
    assert list(cycle([])) == []


def counting_fit(steps=7, **kwargs):
    """fit a 2-weight model with SGD (lr 1); step_fn sets the gradient to (3, 4), returns 10."""
    model = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    drawn, modes, saved = [], [], []

    def step_fn(batch):
        drawn.append(batch)
        modes.append(model.training)
        model.weight.grad = torch.tensor([[3.0, 4.0]])
        return 10

    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5**step)
    history = fit(model, step_fn, iter(range(100)), steps=steps, optimizer=optimizer,
                  scheduler=scheduler, evaluate_fn=lambda s: {"seen": s.seen, "lr": s.lr},
                  eval_every=3, checkpoint=lambda s: saved.append(s.step), disable=True, **kwargs)
    return model, history, drawn, modes, saved


def test_fit_evaluates_every_eval_every_steps_and_after_the_last():
    _, history, drawn, modes, saved = counting_fit(evaluate_first=True, checkpoint_every=2)
    assert history == {"step": [0, 3, 6, 7], "seen": [0, 30, 60, 70],
                       "lr": [0.0, 0.25, 0.5**5, 0.5**6]}  # the lr of the step just taken
    assert drawn == list(range(7))  # one batch a step, none drawn after the last
    assert saved == [2, 4, 6, 7] and all(modes)
    assert counting_fit(steps=2, dropout=False)[3] == [False, False]  # eval mode: no dropout


def test_fit_clips_the_global_gradient_norm_before_the_step():
    torch.testing.assert_close(counting_fit(1, clip=1.0)[0].weight, torch.tensor([[-0.6, -0.8]]))
    torch.testing.assert_close(counting_fit(1)[0].weight, torch.tensor([[-3.0, -4.0]]))


def test_fit_resumes_from_a_saved_state():
    state = FitState(step=5, seen=50, history={"step": [3], "seen": [30], "lr": [0.25]})
    _, history, drawn, _, _ = counting_fit(state=state, evaluate_first=True)
    assert drawn == [0, 1]  # steps 6 and 7; no evaluation at the start of a resumed run
    assert history["step"] == [3, 6, 7] and history["seen"] == [30, 60, 70]
    assert state.seconds > 0
