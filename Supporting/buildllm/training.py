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
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .utils import write_atomically

__all__ = [
    "AdamW",
    "batch_loss",
    "clip_grad_norm",
    "evaluate",
    "load_checkpoint",
    "lr_at",
    "param_groups",
    "perplexity",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "train_simple",
    "warmup_cosine",
]


def batch_loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross entropy of the next-token predictions over every position of the batch."""
    logits = model(inputs)  # (batch, tokens, vocab)
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable, max_batches: int | None = None) -> float:
    """Average `batch_loss` over (at most `max_batches` of) `batches`, without dropout.

    The model goes back to the mode it was in, so this can run in the middle of training.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for inputs, targets in batches:
        if max_batches is not None and count >= max_batches:
            break
        total += batch_loss(model, inputs.to(device), targets.to(device)).item()
        count += 1
    model.train(was_training)
    if count == 0:
        raise ValueError("no batches to evaluate: the data is shorter than one batch")
    return total / count


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
    A tied weight is listed once.
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


class _WarmupCosine:
    """`lr_at` as a multiplier of each group's initial learning rate, for LambdaLR."""

    def __init__(self, warmup_steps: int, total_steps: int, min_ratio: float):
        self.warmup_steps, self.total_steps, self.min_ratio = warmup_steps, total_steps, min_ratio

    def __call__(self, step: int) -> float:
        return lr_at(step, max_lr=1.0, warmup_steps=self.warmup_steps,
                     total_steps=self.total_steps, min_lr=self.min_ratio)


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                  min_ratio: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler following `lr_at`; its state_dict goes into checkpoints like any other."""
    _WarmupCosine(warmup_steps, total_steps, min_ratio)(0)  # validate now, not at step 0
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, _WarmupCosine(warmup_steps, total_steps, min_ratio)
    )


@torch.no_grad()
def clip_grad_norm(parameters: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale all gradients together so that their global L2 norm is at most `max_norm`.

    The global norm treats every gradient as one long vector. Scaling them all by one factor
    keeps the direction of the update and only shortens it, which tames the rare huge step.
    Returns the norm before clipping, worth logging: spikes show up there first.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale)
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
    of one (see `buildllm.utils.write_atomically`).
    """
    return write_atomically(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read a checkpoint written by `save_checkpoint`, with `weights_only=True`.

    weights_only refuses to run code hidden in the file, so a checkpoint from elsewhere can
    at worst hold wrong numbers.
    """
    return torch.load(path, map_location=map_location, weights_only=True)


def _cycle(loader: Iterable) -> Iterator:
    while True:
        yield from loader


def train_simple(
    model: nn.Module,
    train_loader: Iterable,
    val_loader: Iterable,
    optimizer: torch.optim.Optimizer,
    steps: int,
    *,
    eval_every: int = 50,
    eval_batches: int | None = None,
    on_eval=None,
) -> dict[str, list]:
    """Meeting 5's training loop: `steps` optimizer steps, evaluated every `eval_every`.

    Batches come from `train_loader`, again from its start when it runs out. Returns the
    history: steps, train and val losses, and tokens seen at each evaluation. `on_eval(step)`,
    if given, runs after each evaluation (to print a sample, say).
    """
    from .progress import tqdm

    device = next(model.parameters()).device
    history = {"step": [], "tokens": [], "train_loss": [], "val_loss": []}
    batches, tokens = _cycle(train_loader), 0
    model.train()
    progress = tqdm(range(1, steps + 1), desc="training")
    for step in progress:
        inputs, targets = next(batches)
        optimizer.zero_grad(set_to_none=True)
        loss = batch_loss(model, inputs.to(device), targets.to(device))
        loss.backward()
        optimizer.step()
        tokens += inputs.numel()
        if step % eval_every == 0 or step == steps:
            history["step"].append(step)
            history["tokens"].append(tokens)
            history["train_loss"].append(evaluate(model, train_loader, eval_batches))
            history["val_loss"].append(evaluate(model, val_loader, eval_batches))
            progress.set_postfix(train=f"{history['train_loss'][-1]:.3f}",
                                 val=f"{history['val_loss'][-1]:.3f}")
            if on_eval is not None:
                on_eval(step)
    return history
