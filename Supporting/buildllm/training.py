"""Training GPTModel (Meeting 5): the loss, evaluation, AdamW, the schedule, clipping, checkpoints.

Each piece is small enough to read in one go and is checked against PyTorch's own version in
tests/test_training.py: `AdamW` against `torch.optim.AdamW`, `clip_grad_norm` against
`torch.nn.utils.clip_grad_norm_`, `batch_loss` against a cross entropy computed by hand.
`buildllm.pretrain` puts them together into a command-line training run.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .progress import tqdm
from .utils import eval_mode, write_atomically

__all__ = ["AdamW", "FitState", "batch_loss", "clip_grad_norm", "cycle", "evaluate", "fit",
           "grad_norm", "load_checkpoint", "lr_at", "param_groups", "perplexity", "rng_state",
           "save_checkpoint", "set_rng_state", "token_step", "train_simple", "warmup_cosine",
           "window_loss"]


def batch_loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross entropy of the next-token predictions over every position of the batch."""
    logits = model(inputs)  # (batch, tokens, vocab)
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable, max_batches: int | None = None,
             loss: Callable = batch_loss) -> float:
    """Average `loss` over (at most `max_batches` of) `batches`, without dropout; the model
    goes back to its mode after, so this can run in the middle of training."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with eval_mode(model):
        for inputs, targets in islice(batches, max_batches):
            total += loss(model, inputs.to(device), targets.to(device)).item()
            count += 1
    if count == 0:
        raise ValueError("no batches to evaluate: the data is shorter than one batch")
    return total / count


def window_loss(model: nn.Module, batches: Iterable, all_reduce: Callable | None = None) -> float:
    """The mean loss per window of `batches`, in which a last, smaller batch counts by its
    windows. `all_reduce` (torch.distributed's) first adds up every process's (loss, windows)."""
    device = next(model.parameters()).device
    total = torch.zeros(2, dtype=torch.float64, device=device)
    for inputs, targets in batches:
        n = len(inputs)
        total += torch.tensor([evaluate(model, [(inputs, targets)]) * n, n], device=device)
    if all_reduce is not None:
        all_reduce(total)
    return (total[0] / total[1]).item()


def perplexity(loss: float) -> float:
    """exp(loss): the model is as unsure as a uniform choice among this many tokens."""
    return math.exp(loss)


class AdamW(torch.optim.Optimizer):
    """Adam with decoupled weight decay (Loshchilov and Hutter, 2019), written out.

    Per parameter it keeps running averages of the gradient (m) and of its square (v). A step
    moves each weight by lr · m̂ / (√v̂ + eps), where the hats undo the averages' bias toward
    their zero start. Weight decay shrinks the weight directly, by lr · weight_decay · w,
    instead of being added to the gradient, so Adam's scaling does not weaken it.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2):
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"invalid AdamW settings: lr={lr}, betas={betas}, eps={eps}, "
                             f"weight_decay={weight_decay}")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps,
                                  "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else torch.enable_grad()(closure)()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"].item()
                m, v = state["exp_avg"], state["exp_avg_sq"]
                p.mul_(1 - group["lr"] * group["weight_decay"])  # decoupled weight decay
                m.lerp_(p.grad, 1 - beta1)  # m = β1·m + (1 - β1)·g
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)  # v = β2·v + (1 - β2)·g²
                m_hat = m / (1 - beta1**t)
                v_hat = v / (1 - beta2**t)
                p.addcdiv_(m_hat, v_hat.sqrt_().add_(group["eps"]), value=-group["lr"])
        return loss


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay the matrices (linear weights and embeddings); leave biases and norm scales alone.

    Decay pulls weights toward 0. That regularizes a matrix, but a bias or a LayerNorm
    scale of 0 is no simpler than any other value, so GPT-2-style training exempts them.
    """
    decay, no_decay = [], []
    for p in model.parameters():  # parameters() already skips the second use of a tied weight
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step: int, *, max_lr: float, warmup_steps: int, total_steps: int,
          min_lr: float = 0.0) -> float:
    """Linear warmup from 0 to `max_lr`, then a cosine down to `min_lr` at `total_steps`.

    Warmup keeps the first updates small while Adam's averages are still noisy; the cosine
    lets the last steps settle into a minimum. Past `total_steps` it stays at `min_lr`.
    """
    if not 0 <= warmup_steps <= total_steps or total_steps < 1:
        raise ValueError(f"need 0 <= warmup_steps ({warmup_steps}) <= total_steps ({total_steps})"
                         " and total_steps >= 1")
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * progress))


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                  min_ratio: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler following `lr_at`, as a multiplier of each group's initial learning rate.

    Its state_dict goes into checkpoints like any other (a partial, unlike a lambda, has one).
    """
    schedule = partial(lr_at, max_lr=1.0, warmup_steps=warmup_steps, total_steps=total_steps,
                       min_lr=min_ratio)
    schedule(0)  # validate now, not at step 0
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


@torch.no_grad()
def grad_norm(parameters: Iterable[torch.Tensor]) -> torch.Tensor:
    """The global L2 norm of all gradients, as if they were one long vector (0 if none)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


@torch.no_grad()
def clip_grad_norm(parameters: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale all gradients together so that their global L2 norm is at most `max_norm`.

    The global norm treats every gradient as one long vector. Scaling them all by one factor
    keeps the direction of the update and only shortens it, which tames the rare huge step.
    Returns the norm before clipping, worth logging: spikes show up there first.
    """
    params = [p for p in parameters if p.grad is not None]
    total = grad_norm(params)
    scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for p in params:
        p.grad.mul_(scale)
    return total


def rng_state() -> dict:
    """Every random number generator a training run draws from, to store in a checkpoint."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Undo `rng_state`: the run continues with the random numbers it would have drawn."""
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, **state) -> Path:
    """Write `state` (model, optimizer and scheduler state dicts, step, ...) atomically.

    A run killed at any moment leaves either the old checkpoint or the new one, never half
    of one (see `buildllm.utils.write_atomically`). torch.save writes into a Python file, so
    that a full disk raises OSError "No space left on device", which torch's own writer
    reports only as "unexpected pos".
    """
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(state, f)

    return write_atomically(path, write)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read a checkpoint written by `save_checkpoint`, with `weights_only=True`.

    weights_only refuses to run code hidden in the file, so a checkpoint from elsewhere can
    at worst hold wrong numbers.
    """
    return torch.load(path, map_location=map_location, weights_only=True)


def cycle(loader: Iterable) -> Iterator:
    """`loader`'s batches without end: it starts again (reshuffled, if it shuffles) each time
    it runs out. An empty loader ends at once instead of spinning."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            return


@dataclass
class FitState:
    """Where a `fit` run is. Every callback gets it; a resumed run passes in the one it saved."""

    step: int = 0
    seen: int = 0  # what step_fn returned, summed: tokens or examples trained on
    lr: float = 0.0  # the learning rate of the step just taken
    seconds: float = 0.0  # spent training; evaluations and checkpoints are left out
    history: dict[str, list] = field(default_factory=dict)
    timed_steps: int = 0  # steps since the last evaluation or checkpoint,
    timed_seconds: float = 0.0  # the seconds they took (when the clock last stopped),
    clock: float = 0.0  # and when the clock started
    bar: object = None  # the progress bar


def fit(model: nn.Module, step_fn: Callable[[object], int | None], batches: Iterable, *,
        steps: int, optimizer: torch.optim.Optimizer, evaluate_fn: Callable[[FitState], dict],
        eval_every: int, scheduler=None, clip: float = 0.0, scaler=None, dropout: bool = True,
        evaluate_first: bool = False, checkpoint: Callable[[FitState], None] | None = None,
        checkpoint_every: int | None = None, on_step: Callable[[FitState], None] | None = None,
        on_eval: Callable[[FitState], None] | None = None, postfix: dict[str, str] | None = None,
        state: FitState | None = None,
        check_step: Callable[[FitState, torch.Tensor], bool] | None = None,
        **bar) -> dict[str, list]:
    """The training loop of every meeting: `steps` optimizer steps, evaluated every
    `eval_every` and after the last; returns the history of the evaluations.

    Each step zeroes the gradients, calls `step_fn(next batch)` for the loss and its backward
    (it may return the batch's tokens or examples: `state.seen` adds them up), clips the
    gradient norm to `clip` (0: off), then steps the optimizer (through a float16 `scaler`) and
    the `scheduler`. `check_step(state, norm)`, if given, sees each step before the optimizer
    does, with the gradients' global norm (before clipping); returning False skips the optimizer
    step (not the scheduler's: a skipped step still counts). `evaluate_fn(state)` gives the
    numbers the history records after `step` (also at step 0 with `evaluate_first`); `postfix`
    formats them for the progress bar, which `bar` configures (desc=...). `checkpoint` runs
    every `checkpoint_every` steps and after the last, `on_step` and `on_eval` after each step
    and evaluation. `dropout=False` trains in eval mode. The clock waits for a GPU before it
    stops, so `state.seconds` is the training work alone. The optimizer is the caller's: this
    module's `AdamW` in Meeting 5; Meeting 6's loops keep `torch.optim.AdamW`, which rounds
    differently, so that the losses their notebooks print stay the same.

    >>> history = fit(model, step_fn, cycle(loader), steps=100, optimizer=AdamW(...),
    ...               evaluate_fn=lambda s: {"val_loss": evaluate(model, val_loader)},
    ...               eval_every=20)
    """
    state = state or FitState()
    device = next(model.parameters()).device
    scaler = scaler or torch.amp.GradScaler(enabled=False)  # disabled: a plain optimizer step
    state.bar = tqdm(total=steps, initial=state.step, **bar)
    model.train(dropout)
    if evaluate_first and state.step == 0:
        _record(state, evaluate_fn, postfix, on_eval)
    state.clock, state.timed_steps = time.perf_counter(), 0
    # zip asks the range first: after the last step it draws no batch it would not use
    for step, batch in zip(range(state.step + 1, steps + 1), batches, strict=False):
        state.step = step
        optimizer.zero_grad(set_to_none=True)
        state.seen += step_fn(batch) or 0
        if clip > 0 or check_step is not None:
            scaler.unscale_(optimizer)  # clip and check the true gradients
            norm = (clip_grad_norm(model.parameters(), clip) if clip > 0
                    else grad_norm(model.parameters()))
        if check_step is None or check_step(state, norm):
            scaler.step(optimizer)  # float16: skipped when a gradient overflowed
        scaler.update()
        state.lr = optimizer.param_groups[0]["lr"]
        if scheduler is not None:
            scheduler.step()
        state.timed_steps += 1
        state.bar.update()
        if on_step is not None:
            on_step(state)
        evaluate_now = step % eval_every == 0 or step == steps
        save_now = checkpoint is not None and (step % (checkpoint_every or eval_every) == 0
                                               or step == steps)
        if evaluate_now or save_now:
            if device.type == "cuda":  # wait for the GPU, so that the clock counts its work
                torch.cuda.synchronize(device)
            elif device.type == "mps":
                torch.mps.synchronize()
            state.timed_seconds = time.perf_counter() - state.clock
            state.seconds += state.timed_seconds
            if evaluate_now:
                _record(state, evaluate_fn, postfix, on_eval)
            if save_now:
                checkpoint(state)
            state.clock, state.timed_steps = time.perf_counter(), 0
    state.bar.close()
    return state.history


def token_step(model: nn.Module, loss: Callable, batch: tuple) -> int:
    """A `fit` step_fn for (inputs, targets) batches: backward of `loss(model, inputs, targets)`
    (`batch_loss`, say); returns the tokens of the inputs."""
    inputs, targets = batch
    device = next(model.parameters()).device
    loss(model, inputs.to(device), targets.to(device)).backward()
    return inputs.numel()


def _record(state: FitState, evaluate_fn, postfix: dict | None, on_eval) -> None:
    record = {"step": state.step, **evaluate_fn(state)}
    for key, value in record.items():
        state.history.setdefault(key, []).append(value)
    if postfix:
        state.bar.set_postfix({key: text.format(**record) for key, text in postfix.items()})
    if on_eval is not None:
        on_eval(state)


LOSSES = {"train": "{train_loss:.3f}", "val": "{val_loss:.3f}"}  # a progress bar's postfix


def train_simple(model: nn.Module, train_loader: Iterable, val_loader: Iterable,
                 optimizer: torch.optim.Optimizer, steps: int, *, eval_every: int = 50,
                 eval_batches: int | None = None,
                 on_eval: Callable[[int], None] | None = None) -> dict[str, list]:
    """Meeting 5's training loop: `steps` optimizer steps, evaluated every `eval_every`.

    Batches come from `train_loader`, again from its start when it runs out. Returns the
    history: steps, train and val losses, and tokens seen at each evaluation. `on_eval(step)`,
    if given, runs after each evaluation (to print a sample, say).
    """
    def evaluate_fn(state: FitState) -> dict:
        return {"tokens": state.seen, "train_loss": evaluate(model, train_loader, eval_batches),
                "val_loss": evaluate(model, val_loader, eval_batches)}

    return fit(model, partial(token_step, model, batch_loss), cycle(train_loader), steps=steps,
               optimizer=optimizer, evaluate_fn=evaluate_fn, eval_every=eval_every,
               postfix=LOSSES, desc="training", on_eval=on_eval and (lambda s: on_eval(s.step)))

