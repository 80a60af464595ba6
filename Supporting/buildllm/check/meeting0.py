"""Checks for the Meeting 0 exercises (a PyTorch warm-up), against references written here."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from . import expect_equal, expect_tensor, verify
from ._support import cases, fail_if, randn, seeded

__all__ = ["gradient", "mlp", "standardize", "train"]


def _standardizes(fn: Callable, x: torch.Tensor, keeps_x: bool = False) -> None:
    given = x.clone()
    out = expect_tensor(fn(given), "standardize(x)")
    fail_if(keeps_x and not torch.equal(given, x), f"standardize changed its input to\n{given}\n"
            "use x - mean rather than x -= mean, so the caller's tensor stays as it was")
    population = (x - x.mean(dim=0)) / x.std(dim=0, correction=0)
    fail_if(out.shape == x.shape and torch.allclose(out, population, atol=1e-5) and len(x) > 1,
            "you divided by the population std (correction=0); the exercise asks for PyTorch's "
            "default, x.std(dim=0), which divides by n - 1")
    expect_equal(out, (x - x.mean(dim=0)) / x.std(dim=0), "standardize(x)")


def standardize(fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Exercise 0.1: fn(x) gives every column of x mean 0 and (sample) std 1, x left alone."""
    g = torch.Generator().manual_seed(0)
    varied = torch.randn(6, 3, generator=g) * torch.tensor([1.0, 100.0, 0.01])
    verify("Exercise 0.1", cases(_standardizes, fn, {
        "a 3×2 matrix of small numbers": torch.tensor([[1.0, 2.0], [3.0, 6.0], [5.0, 16.0]]),
        "a 6×3 matrix with columns on very different scales": varied + torch.tensor([5, -50, 0.0]),
        "a wide 3×7 matrix: standardize columns, not rows": torch.randn(3, 7, generator=g) * 4 + 2,
        "the input tensor is left unchanged":
            (torch.tensor([[1.0, 10.0], [2.0, 30.0], [6.0, 20.0]]), True),
    }))


def _sum_of_squares(t: torch.Tensor) -> torch.Tensor:
    return (t**2).sum()


def _gradient_is(fn: Callable, f: Callable, x: torch.Tensor, want: torch.Tensor) -> None:
    expect_equal(fn(f, x.clone()), want, "gradient(f, x)")


def _no_side_effects(fn: Callable) -> None:
    x = torch.tensor([1.0, -2.0, 3.0])
    first = expect_tensor(fn(_sum_of_squares, x), "gradient(f, x)").clone()
    second = expect_tensor(fn(_sum_of_squares, x), "gradient(f, x)")
    fail_if(not torch.allclose(first, second), f"the first call gave {first}, a second call on "
            f"the same x gave {second}: gradients accumulate in .grad, so work on a fresh copy "
            "of x each time")
    fail_if(x.requires_grad or x.grad is not None, "gradient() changed the caller's tensor (it "
            "now has requires_grad or .grad set); work on x.detach().clone() instead")


def gradient(fn: Callable[[Callable, torch.Tensor], torch.Tensor]) -> None:
    """Exercise 0.2: fn(f, x) returns the gradient of the scalar f at x, shaped like x. The
    gradients are worked out by hand; two calls on one tensor must agree and leave it without
    requires_grad or .grad."""
    x, angles = torch.tensor([1.0, -2.0, 3.0]), torch.linspace(-3.0, 3.0, 7)
    matrix, logits = torch.tensor([[1.0, 2.0], [-3.0, 0.5]]), torch.tensor([0.5, -1, 2, 0])
    verify("Exercise 0.2", [*cases(_gradient_is, fn, {  # label: (f, x, the gradient of f at x)
        "f(x) = sum of x², gradient 2x": (_sum_of_squares, x, 2 * x),
        "f(x) = sum of sin(x), gradient cos(x)": (lambda t: t.sin().sum(), angles, angles.cos()),
        "f(a, b) = a·b + b³, gradient (b, a + 3b²)":
            (lambda t: t[0] * t[1] + t[1]**3, torch.tensor([2.0, 3.0]), torch.tensor([3.0, 29.0])),
        "f(X) = trace(X @ X) for a 2×2 matrix, gradient 2Xᵀ": (lambda t: (t @ t).trace(), matrix,
                                                                2 * matrix.T),
        "f(x) = logsumexp(x), gradient softmax(x)": (lambda t: t.logsumexp(0), logits,
                                                     logits.softmax(0)),
    }), ("two calls on the same x agree and leave x as it was", lambda: _no_side_effects(fn))])


def _build(fn: Callable, sizes: list[int]) -> nn.Module:
    with seeded(0):
        model = fn(list(sizes))
    fail_if(not isinstance(model, nn.Module),
            f"make_mlp should return an nn.Module, got {type(model).__name__}")
    return model


def _shape_and_count(fn: Callable, sizes: list[int], batch: int) -> None:
    model = _build(fn, sizes)
    count = sum(p.numel() for p in model.parameters())
    fail_if(count == 0, "the model has no parameters: layers kept in a plain Python list are "
            "invisible to PyTorch; use nn.Sequential or nn.ModuleList")
    expect_equal(count, sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=False)),
                 f"the number of parameters for sizes {sizes}")
    fail_if(not all(p.requires_grad for p in model.parameters()),
            "some parameters have requires_grad=False, so they would never train")
    out = expect_tensor(model(randn(1, batch, sizes[0])), "model(x)")
    expect_equal(tuple(out.shape), (batch, sizes[-1]),
                 f"the output shape for an input of {batch}×{sizes[0]}")


def _nonlinear(fn: Callable) -> None:
    model, a, b = _build(fn, [2, 16, 1]), randn(2, 64, 2), randn(3, 64, 2)
    with torch.no_grad():
        gap = model(a + b) + model(torch.zeros(64, 2)) - model(a) - model(b)
    fail_if(gap.abs().max() < 1e-4, "the model is linear (f(a + b) + f(0) = f(a) + f(b)): put "
            "nn.ReLU() between the layers")


def _raw_last_layer(fn: Callable) -> None:
    with torch.no_grad():
        out = _build(fn, [3, 8, 2])(randn(3, 256, 3, scale=3))
    fail_if((out >= 0).all(), "all 512 outputs are ≥ 0, which suggests a ReLU after the last "
            "layer; the last Linear layer's output should be returned as it is")


def mlp(fn: Callable[[list[int]], nn.Module]) -> None:
    """Exercise 0.3: fn(sizes) builds Linear layers sizes[0] → sizes[1] → … with ReLU between."""
    verify("Exercise 0.3", [*cases(_shape_and_count, fn, {
        "sizes [4, 8, 3]: 67 parameters, output 5×3": ([4, 8, 3], 5),
        "sizes [10, 32, 32, 1]: 1,441 parameters, output 7×1": ([10, 32, 32, 1], 7),
        "sizes [3, 5]: a single Linear layer, 20 parameters": ([3, 5], 2),
    }), ("sizes [2, 16, 1]: a nonlinearity between the layers", lambda: _nonlinear(fn)),
        ("sizes [3, 8, 2]: no activation after the last layer", lambda: _raw_last_layer(fn))])


class _Problem:
    """A seeded regression task, a model for it, and the learner's and the reference's runs."""

    def __init__(self, fn: Callable, hidden: int | None, epochs: int, lr: float, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(256, 3, generator=g)
        noise = 0.05 * torch.randn(256, 1, generator=g)
        self.y = self.x @ torch.tensor([[1.5], [-2.0], [0.5]]) + 0.3 + noise
        self.fn, self.epochs, self.lr, self.seed, self._losses = fn, epochs, lr, seed, None
        with seeded(seed):
            self.model = nn.Linear(3, 1) if hidden is None else nn.Sequential(
                nn.Linear(3, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.start = copy.deepcopy(self.model.state_dict())
        self.expected = self._reference(copy.deepcopy(self.model))

    def loader(self) -> DataLoader:
        """A fresh loader whose shuffles are the same every time (256 = 8 batches of 32)."""
        shuffle = torch.Generator().manual_seed(self.seed)
        return DataLoader(TensorDataset(self.x, self.y), 32, shuffle=True, generator=shuffle)

    def _reference(self, model: nn.Module) -> list[float]:
        optimizer, loader, losses = torch.optim.SGD(model.parameters(), self.lr), self.loader(), []
        for _ in range(self.epochs):
            total = 0.0
            for x, y in loader:
                optimizer.zero_grad()
                loss = nn.functional.mse_loss(model(x), y)
                loss.backward()
                optimizer.step()
                total += loss.item()
            losses.append(total / len(loader))
        return losses

    def losses(self) -> list:
        """The learner's per-epoch losses, checked to be floats (their run happens once)."""
        if self._losses is None:
            self._losses = self.fn(self.model, self.loader(), self.epochs, self.lr)
        losses = self._losses
        fail_if(not isinstance(losses, list),
                f"train should return a list, got {type(losses).__name__}")
        expect_equal(len(losses), self.epochs, "the number of losses returned (one per epoch)")
        for i, value in enumerate(losses):
            fail_if(not isinstance(value, float), f"loss {i} is a {type(value).__name__}, not a "
                    "float: append loss.item(), not the loss tensor (which also keeps its whole "
                    "graph alive)")
            fail_if(not math.isfinite(value), f"loss {i} is {value}: training diverged")
        return losses

    def matches_reference(self) -> None:
        expect_equal(torch.tensor(self.losses()), torch.tensor(self.expected), "the per-epoch "
                     "mean losses (torch.optim.SGD with lr, F.mse_loss, zero_grad every batch)")

    def falls(self) -> None:
        first, last = self.losses()[0], self.losses()[-1]
        fail_if(not last * 20 < first,
                f"the loss went from {first:.4f} to {last:.4f}; it should fall at least 20×")

    def trained_the_model(self) -> None:
        self.losses()
        fail_if(all(torch.equal(p, self.start[k]) for k, p in self.model.state_dict().items()),
                "the model passed in still has its initial weights: train it, not a copy of it")


def train(fn: Callable[[nn.Module, DataLoader, int, float], list[float]]) -> None:
    """Exercise 0.4: fn(model, loader, epochs, lr) trains with SGD on the MSE loss: its
    per-epoch mean losses must match a reference loop's, for a linear model and a small MLP."""
    linear = _Problem(fn, hidden=None, epochs=5, lr=0.1, seed=0)
    small_mlp = _Problem(fn, hidden=16, epochs=3, lr=0.05, seed=1)
    verify("Exercise 0.4", [
        ("linear model, 5 epochs: returns a list of 5 floats", linear.losses),
        ("linear model: the losses match the reference loop", linear.matches_reference),
        ("linear model: the loss falls at least 20×", linear.falls),
        ("the model passed in is the one trained", linear.trained_the_model),
        ("an MLP, 3 epochs at lr 0.05: the losses match the reference",
         small_mlp.matches_reference),
    ])
