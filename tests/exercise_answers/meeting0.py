"""Answers to the Meeting 0 exercises, right and wrong, for tests/test_exercise_checks.py.

Each wrong answer is a mistake learners make, named after it.
"""

import copy

import torch
from torch import nn
from torch.nn import functional as F

from buildllm import check

# -- Exercise 0.1: standardize the columns of a matrix --------------------------------------


def standardize_columns(x):
    return (x - x.mean(dim=0)) / x.std(dim=0)


def standardize_columns_keepdim(x):
    return (x - x.mean(dim=0, keepdim=True)) / x.std(dim=0, keepdim=True)


def standardize_in_place(x):
    x -= x.mean(dim=0)
    x /= x.std(dim=0)
    return x


WRONG_STANDARDIZE = {
    "one mean and std for the whole matrix": lambda x: (x - x.mean()) / x.std(),
    "standardizes rows": lambda x: (x - x.mean(dim=1, keepdim=True)) / x.std(dim=1, keepdim=True),
    "population std": lambda x: (x - x.mean(dim=0)) / x.std(dim=0, unbiased=False),
    "changes the input in place": standardize_in_place,
    "returns None": lambda x: None,
}


# -- Exercise 0.2: a gradient with autograd -------------------------------------------------


def gradient_with_autograd_grad(f, x):
    x = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(x), x)
    return grad


def gradient_with_backward(f, x):
    x = x.detach().clone().requires_grad_(True)
    f(x).backward()
    return x.grad


def gradient_on_the_callers_x(f, x):
    x.requires_grad_(True)
    f(x).backward()
    return x.grad


def gradient_by_finite_differences(f, x, h=1e-3):
    grad = torch.zeros_like(x)
    for i in range(x.numel()):
        step = torch.zeros(x.numel())
        step[i] = h
        step = step.view_as(x)
        grad.view(-1)[i] = (f(x + step) - f(x - step)) / (2 * h)
    return grad


def gradient_marking_the_callers_x(f, x):
    x.requires_grad_(True)  # autograd.grad leaves .grad alone, but x now requires grad
    (grad,) = torch.autograd.grad(f(x), x)
    return grad


WRONG_GRADIENT = {
    "accumulates into the caller's x.grad": gradient_on_the_callers_x,
    "finite differences": gradient_by_finite_differences,
    "returns f(x), not its gradient": lambda f, x: f(x),
    "requires_grad set on the caller's x": gradient_marking_the_callers_x,
}


# -- Exercise 0.3: an MLP with given layer sizes --------------------------------------------


def linear_layers(sizes, bias=True):
    return [nn.Linear(a, b, bias=bias) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]


def with_relus_between(layers):
    modules = [layers[0]]
    for layer in layers[1:]:
        modules += [nn.ReLU(), layer]
    return modules


def mlp_sequential(sizes):
    return nn.Sequential(*with_relus_between(linear_layers(sizes)))


class MLPWithModuleList(nn.Module):
    def __init__(self, sizes):
        super().__init__()
        self.layers = nn.ModuleList(linear_layers(sizes))

    def forward(self, x):
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return self.layers[-1](x)


class MLPWithPythonList(MLPWithModuleList):
    def __init__(self, sizes):
        nn.Module.__init__(self)
        self.layers = linear_layers(sizes)  # a plain list: PyTorch never sees these parameters


class MLPSqueezingTheOutput(MLPWithModuleList):
    def forward(self, x):
        return super().forward(x).squeeze(-1)  # (batch, 1) becomes (batch,)


class MLPWithoutReturn(MLPWithModuleList):
    def forward(self, x):
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        x = self.layers[-1](x)  # no return: model(x) is None


def mlp_frozen_to_initialize(sizes):
    model = mlp_sequential(sizes)
    for p in model.parameters():
        p.requires_grad = False  # to initialize in place; never turned back on
        p.mul_(0.5)
    return model


WRONG_MLP = {
    "ReLU after the last layer": lambda sizes: nn.Sequential(
        *with_relus_between(linear_layers(sizes)), nn.ReLU()
    ),
    "no ReLU between the layers": lambda sizes: nn.Sequential(*linear_layers(sizes)),
    "layers in a plain Python list": MLPWithPythonList,
    "Linear layers without bias": lambda sizes: nn.Sequential(
        *with_relus_between(linear_layers(sizes, bias=False))
    ),
    "returns the list of layers": lambda sizes: with_relus_between(linear_layers(sizes)),
    "requires_grad turned off to initialize": mlp_frozen_to_initialize,
    "squeezes the output": MLPSqueezingTheOutput,
    "forward without return": MLPWithoutReturn,
}


# -- Exercise 0.4: a training loop ----------------------------------------------------------


def train_sgd(model, loader, epochs, lr, optimizer=torch.optim.SGD, zero_grad=True, reduce="mean"):
    """The training loop, with the knobs learners most often get wrong."""
    opt = optimizer(model.parameters(), lr=lr)
    losses = []
    for _ in range(epochs):
        total = 0.0
        for x, y in loader:
            loss = F.mse_loss(model(x), y, reduction=reduce)
            if zero_grad:
                opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(x)
        losses.append(total / len(loader.dataset))
    return losses


def train_averaging_batch_losses(model, loader, epochs, lr):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for _ in range(epochs):
        batch_losses = []
        for x, y in loader:
            opt.zero_grad()
            loss = F.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            batch_losses.append(loss.item())
        losses.append(sum(batch_losses) / len(batch_losses))
    return losses


def train_without_return(model, loader, epochs, lr):
    losses = train_sgd(model, loader, epochs, lr)  # noqa: F841 -- the mistake: no return


def train_recording_batches(model, loader, epochs, lr, record):
    """The loop, with the losses recorded per batch instead of per epoch: every batch's
    ("every"), or each epoch's last batch's, as a number ("last") or as the tensor ("tensor")."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for _ in range(epochs):
        for x, y in loader:
            opt.zero_grad()
            loss = F.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            if record == "every":
                losses.append(loss.item())
        if record != "every":
            losses.append(loss.item() if record == "last" else loss)
    return losses


WRONG_TRAIN = {
    "never zeroes the gradients": lambda m, data, e, lr: train_sgd(m, data, e, lr, zero_grad=False),
    "returns the last batch's loss tensor": lambda m, data, e, lr: train_recording_batches(
        m, data, e, lr, record="tensor"
    ),
    "returns the last batch's loss": lambda m, data, e, lr: train_recording_batches(
        m, data, e, lr, record="last"
    ),
    "trains a copy of the model": lambda m, data, e, lr: train_sgd(copy.deepcopy(m), data, e, lr),
    "Adam instead of SGD": lambda m, data, e, lr: train_sgd(
        m, data, e, lr, optimizer=torch.optim.Adam
    ),
    "returns nothing": train_without_return,
    "one loss per batch": lambda m, data, e, lr: train_recording_batches(
        m, data, e, lr, record="every"
    ),
    "MSE summed over the batch, not averaged": lambda m, data, e, lr: train_sgd(
        m, data, e, lr, reduce="sum"
    ),
}


# (exercise, its check, right answers, wrong answers by the mistake they make)
EXERCISES = [
    (
        "0.1",
        check.meeting0.standardize,
        [standardize_columns, standardize_columns_keepdim],
        WRONG_STANDARDIZE,
    ),
    (
        "0.2",
        check.meeting0.gradient,
        [gradient_with_autograd_grad, gradient_with_backward],
        WRONG_GRADIENT,
    ),
    ("0.3", check.meeting0.mlp, [mlp_sequential, MLPWithModuleList], WRONG_MLP),
    ("0.4", check.meeting0.train, [train_sgd, train_averaging_batch_losses], WRONG_TRAIN),
]
