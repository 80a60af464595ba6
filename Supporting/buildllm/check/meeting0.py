"""Checks for the Meeting 0 exercises: a PyTorch warm-up.

Each check takes the learner's function, runs it on a few cases against a reference
written here, and stops at the first case that goes wrong:

    >>> check.meeting0.standardize(standardize)
    ✓ Exercise 0.1: all 4 cases pass.

The checks seed their own random numbers inside `torch.random.fork_rng()`, so running
one never changes what the rest of a learner's notebook draws.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from . import expect_equal, expect_tensor, verify

__all__ = ["gradient", "mlp", "standardize", "train"]


def _seeded(seed: int, make: Callable[[], object]):
    """Call make() with PyTorch's global generator seeded, then put the learner's state back."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return make()


# ---------------------------------------------------------------------------------------
# Exercise 0.1: standardize the columns of a matrix
# ---------------------------------------------------------------------------------------


def _standardize(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean(dim=0)) / x.std(dim=0)


def _expect_standardized(fn: Callable, x: torch.Tensor) -> None:
    out = expect_tensor(fn(x.clone()), "standardize(x)")
    if out.shape == x.shape:
        population = (x - x.mean(dim=0)) / x.std(dim=0, correction=0)
        if torch.allclose(out, population, atol=1e-5) and x.shape[0] > 1:
            raise AssertionError(
                "you divided by the population std (correction=0); the exercise asks for "
                "PyTorch's default, x.std(dim=0), which divides by n - 1"
            )
    expect_equal(out, _standardize(x), "standardize(x)")


def _leaves_input_alone(fn: Callable) -> None:
    x = torch.tensor([[1.0, 10.0], [2.0, 30.0], [6.0, 20.0]])
    before = x.clone()
    fn(x)
    if not torch.equal(x, before):
        raise AssertionError(
            f"standardize changed its input to\n{x}\n"
            "use x - mean rather than x -= mean, so the caller's tensor stays as it was"
        )


def standardize(fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Exercise 0.1: fn(x) gives every column of x mean 0 and (sample) std 1.

    Checks a small integer matrix, a random matrix whose columns differ in scale and
    offset by four orders of magnitude, a wide matrix (so rows and columns cannot be
    swapped), and that the input tensor is not changed in place.
    """
    g = torch.Generator().manual_seed(0)
    scales = torch.randn(6, 3, generator=g) * torch.tensor([1.0, 100.0, 0.01])
    varied = scales + torch.tensor([5.0, -50.0, 0.0])
    wide = torch.randn(3, 7, generator=g) * 4 + 2
    verify(
        "Exercise 0.1",
        [
            ("a 3×2 matrix of small numbers", lambda: _expect_standardized(
                fn, torch.tensor([[1.0, 2.0], [3.0, 6.0], [5.0, 16.0]]))),
            ("a 6×3 matrix with columns on very different scales",
             lambda: _expect_standardized(fn, varied)),
            ("a wide 3×7 matrix: standardize columns, not rows",
             lambda: _expect_standardized(fn, wide)),
            ("the input tensor is left unchanged", lambda: _leaves_input_alone(fn)),
        ],
    )


# ---------------------------------------------------------------------------------------
# Exercise 0.2: a gradient with autograd
# ---------------------------------------------------------------------------------------


def _expect_gradient(fn: Callable, f: Callable, x: torch.Tensor, expected: torch.Tensor) -> None:
    out = expect_tensor(fn(f, x.clone()), "gradient(f, x)")
    expect_equal(out, expected, "gradient(f, x)")


def _no_side_effects(fn: Callable) -> None:
    x = torch.tensor([1.0, -2.0, 3.0])

    def f(t):
        return (t**2).sum()

    first = expect_tensor(fn(f, x), "gradient(f, x)").clone()
    second = expect_tensor(fn(f, x), "gradient(f, x)")
    if not torch.allclose(first, second):
        raise AssertionError(
            f"the first call gave {first}, a second call on the same x gave {second}: "
            "gradients accumulate in .grad, so work on a fresh copy of x each time"
        )
    if x.requires_grad or x.grad is not None:
        raise AssertionError(
            "gradient() changed the caller's tensor (it now has requires_grad or .grad set); "
            "work on x.detach().clone() instead"
        )


def gradient(fn: Callable[[Callable, torch.Tensor], torch.Tensor]) -> None:
    """Exercise 0.2: fn(f, x) returns the gradient of the scalar f at x, shaped like x.

    Compares with gradients worked out by hand for a sum of squares, a sine, a product
    of two entries, the trace of X @ X (a matrix input) and log-sum-exp (whose gradient
    is the softmax). The last case calls fn twice on the same tensor: the answers must
    agree, and the caller's tensor must not be left with requires_grad or a .grad.
    """
    x3 = torch.tensor([1.0, -2.0, 3.0])
    angles = torch.linspace(-3.0, 3.0, 7)
    pair = torch.tensor([2.0, 3.0])
    matrix = torch.tensor([[1.0, 2.0], [-3.0, 0.5]])
    logits = torch.tensor([0.5, -1.0, 2.0, 0.0])
    verify(
        "Exercise 0.2",
        [
            ("f(x) = sum of x², gradient 2x",
             lambda: _expect_gradient(fn, lambda t: (t**2).sum(), x3, 2 * x3)),
            ("f(x) = sum of sin(x), gradient cos(x)",
             lambda: _expect_gradient(fn, lambda t: t.sin().sum(), angles, angles.cos())),
            ("f(a, b) = a·b + b³, gradient (b, a + 3b²)",
             lambda: _expect_gradient(fn, lambda t: t[0] * t[1] + t[1] ** 3, pair,
                                      torch.tensor([3.0, 2.0 + 27.0]))),
            ("f(X) = trace(X @ X) for a 2×2 matrix, gradient 2Xᵀ",
             lambda: _expect_gradient(fn, lambda t: (t @ t).trace(), matrix, 2 * matrix.T)),
            ("f(x) = logsumexp(x), gradient softmax(x)",
             lambda: _expect_gradient(fn, lambda t: t.logsumexp(0), logits, logits.softmax(0))),
            ("two calls on the same x agree and leave x as it was",
             lambda: _no_side_effects(fn)),
        ],
    )


# ---------------------------------------------------------------------------------------
# Exercise 0.3: an MLP with given layer sizes
# ---------------------------------------------------------------------------------------


def _n_params(sizes: list[int]) -> int:
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=False))


def _build(fn: Callable, sizes: list[int]) -> nn.Module:
    model = _seeded(0, lambda: fn(list(sizes)))
    if not isinstance(model, nn.Module):
        raise AssertionError(f"make_mlp should return an nn.Module, got {type(model).__name__}")
    return model


def _expect_shape_and_count(fn: Callable, sizes: list[int], batch: int) -> None:
    model = _build(fn, sizes)
    params = list(model.parameters())
    count = sum(p.numel() for p in params)
    if count == 0:
        raise AssertionError(
            "the model has no parameters: layers kept in a plain Python list are invisible "
            "to PyTorch; use nn.Sequential or nn.ModuleList"
        )
    expect_equal(count, _n_params(sizes), f"the number of parameters for sizes {sizes}")
    if not all(p.requires_grad for p in params):
        raise AssertionError("some parameters have requires_grad=False, so they would never train")
    x = torch.randn(batch, sizes[0], generator=torch.Generator().manual_seed(1))
    out = expect_tensor(model(x), "model(x)")
    what = f"the output shape for an input of {batch}×{sizes[0]}"
    expect_equal(tuple(out.shape), (batch, sizes[-1]), what)


def _expect_nonlinear(fn: Callable) -> None:
    model = _build(fn, [2, 16, 1])
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(64, 2, generator=g), torch.randn(64, 2, generator=g)
    with torch.no_grad():
        gap = model(a + b) + model(torch.zeros(64, 2)) - model(a) - model(b)
    if gap.abs().max() < 1e-4:
        raise AssertionError(
            "the model is linear (f(a + b) + f(0) = f(a) + f(b)): put nn.ReLU() between the layers"
        )


def _expect_raw_last_layer(fn: Callable) -> None:
    model = _build(fn, [3, 8, 2])
    x = torch.randn(256, 3, generator=torch.Generator().manual_seed(3)) * 3
    with torch.no_grad():
        out = model(x)
    if (out >= 0).all():
        raise AssertionError(
            "all 512 outputs are ≥ 0, which suggests a ReLU after the last layer; "
            "the last Linear layer's output should be returned as it is"
        )


def mlp(fn: Callable[[list[int]], nn.Module]) -> None:
    """Exercise 0.3: fn(sizes) builds Linear layers sizes[0] → sizes[1] → … with ReLU between.

    Checks that the result is an nn.Module, that its trainable parameter count and output
    shape are right for three sets of sizes (including a single layer), that it is not
    linear (an activation sits between layers), and that no activation follows the last
    layer (its outputs can be negative).
    """
    verify(
        "Exercise 0.3",
        [
            ("sizes [4, 8, 3]: 67 parameters, output 5×3",
             lambda: _expect_shape_and_count(fn, [4, 8, 3], 5)),
            ("sizes [10, 32, 32, 1]: 1,441 parameters, output 7×1",
             lambda: _expect_shape_and_count(fn, [10, 32, 32, 1], 7)),
            ("sizes [3, 5]: a single Linear layer, 20 parameters",
             lambda: _expect_shape_and_count(fn, [3, 5], 2)),
            ("sizes [2, 16, 1]: a nonlinearity between the layers", lambda: _expect_nonlinear(fn)),
            ("sizes [3, 8, 2]: no activation after the last layer",
             lambda: _expect_raw_last_layer(fn)),
        ],
    )


# ---------------------------------------------------------------------------------------
# Exercise 0.4: a training loop
# ---------------------------------------------------------------------------------------


def _reference_train(model: nn.Module, loader: DataLoader, epochs: int, lr: float) -> list[float]:
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for _ in range(epochs):
        total, batches = 0.0, 0
        for x, y in loader:
            optimizer.zero_grad()
            loss = F.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
            total, batches = total + loss.item(), batches + 1
        losses.append(total / batches)
    return losses


class _Problem:
    """A seeded regression task, a model for it, and the learner's and reference runs."""

    def __init__(self, fn: Callable, hidden: int | None, epochs: int, lr: float, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(256, 3, generator=g)
        noise = 0.05 * torch.randn(256, 1, generator=g)
        self.y = self.x @ torch.tensor([[1.5], [-2.0], [0.5]]) + 0.3 + noise
        self.epochs, self.lr, self.seed = epochs, lr, seed

        def make() -> nn.Module:
            if hidden is None:
                return nn.Linear(3, 1)
            return nn.Sequential(nn.Linear(3, hidden), nn.ReLU(), nn.Linear(hidden, 1))

        self.model = _seeded(seed, make)
        self.start = copy.deepcopy(self.model.state_dict())
        self.expected = _reference_train(copy.deepcopy(self.model), self.loader(), epochs, lr)
        self.fn, self._losses = fn, None

    def loader(self) -> DataLoader:
        """A fresh loader whose shuffles are the same every time (256 = 8 batches of 32)."""
        shuffle = torch.Generator().manual_seed(self.seed)
        data = TensorDataset(self.x, self.y)
        return DataLoader(data, batch_size=32, shuffle=True, generator=shuffle)

    def losses(self) -> list:
        """The learner's returned losses (their training runs once, on first use)."""
        if self._losses is None:
            self._losses = self.fn(self.model, self.loader(), self.epochs, self.lr)
        return self._losses


def _expect_float_list(problem: _Problem) -> None:
    losses = problem.losses()
    if not isinstance(losses, list):
        raise AssertionError(f"train should return a list, got {type(losses).__name__}")
    expect_equal(len(losses), problem.epochs, "the number of losses returned (one per epoch)")
    for i, value in enumerate(losses):
        if not isinstance(value, float):
            raise AssertionError(
                f"loss {i} is a {type(value).__name__}, not a float: append loss.item(), "
                "not the loss tensor (which also keeps its whole graph alive)"
            )
        if not math.isfinite(value):
            raise AssertionError(f"loss {i} is {value}: training diverged")


def _expect_reference(problem: _Problem) -> None:
    _expect_float_list(problem)
    expect_equal(
        torch.tensor(problem.losses()),
        torch.tensor(problem.expected),
        "the per-epoch mean losses (torch.optim.SGD with lr, F.mse_loss, zero_grad every batch)",
    )


def _expect_drop(problem: _Problem, factor: float) -> None:
    _expect_float_list(problem)
    first, last = problem.losses()[0], problem.losses()[-1]
    if not last * factor < first:
        raise AssertionError(
            f"the loss went from {first:.4f} to {last:.4f}; it should fall at least {factor:g}×"
        )


def _expect_model_trained(problem: _Problem) -> None:
    problem.losses()
    moved = any(
        not torch.equal(p, problem.start[name]) for name, p in problem.model.state_dict().items()
    )
    if not moved:
        raise AssertionError(
            "the model passed in still has its initial weights: train it, not a copy of it"
        )


def train(fn: Callable[[nn.Module, DataLoader, int, float], list[float]]) -> None:
    """Exercise 0.4: fn(model, loader, epochs, lr) trains with SGD on the MSE loss.

    On a seeded linear-regression task (256 points, batches of 32) it checks that fn
    returns one float per epoch, that these per-epoch mean losses match a reference loop
    (SGD, zero_grad before each backward), that the loss falls at least 20× in 5 epochs,
    and that the model passed in is the one that was trained. A small MLP with another
    learning rate and number of epochs must match the reference too.
    """
    linear = _Problem(fn, hidden=None, epochs=5, lr=0.1, seed=0)
    small_mlp = _Problem(fn, hidden=16, epochs=3, lr=0.05, seed=1)
    verify(
        "Exercise 0.4",
        [
            ("linear model, 5 epochs: returns a list of 5 floats",
             lambda: _expect_float_list(linear)),
            ("linear model: the losses match the reference loop",
             lambda: _expect_reference(linear)),
            ("linear model: the loss falls at least 20×", lambda: _expect_drop(linear, 20)),
            ("the model passed in is the one trained", lambda: _expect_model_trained(linear)),
            ("an MLP, 3 epochs at lr 0.05: the losses match the reference",
             lambda: _expect_reference(small_mlp)),
        ],
    )
