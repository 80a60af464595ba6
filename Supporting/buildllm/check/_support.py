"""What the exercise checks share: seeded inputs, comparisons that name a known mistake, and
tensors that refuse the built-in a learner was asked to write out. Private to buildllm.check:
the meetings' modules import from here, never from each other."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from functools import partial

import torch
from torch import nn

from ..model import GPTConfig, GPTModel
from . import expect_shape, expect_tensor


def randn(seed: int, *shape: int, scale: float = 1.0) -> torch.Tensor:
    """A tensor of N(0, scale²) numbers from its own generator: the same for every learner."""
    return scale * torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def fail_if(wrong: object, message: str) -> None:
    """Fail the case with `message` when `wrong` (built either way, so keep it cheap and safe)."""
    if wrong:
        raise AssertionError(message)


def cases(check, fn, table: dict) -> list:
    """verify()'s cases from a table {label: arguments}: each runs check(fn, *arguments). An
    argument that is not a tuple is the only one: {"a single id": [7]} runs check(fn, [7])."""
    return [(label, partial(check, fn, *(args if isinstance(args, tuple) else (args,))))
            for label, args in table.items()]


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with the global RNG seeded, leaving the caller's (GPUs' too) as it was."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


def randomize(module: nn.Module, std: float) -> nn.Module:
    """Every parameter drawn from N(0, std²): biases and norms too, so none hides a mistake."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)
    return module


def expect_close(got, want: torch.Tensor, what: str, mistakes=(), x=None, atol: float = 1e-5,
                 rtol: float = 1e-4) -> None:
    """Compare tensors; on a difference, name the known mistake (hint, tensor) that gives `got`,
    if one does; `x`, the input, is shown next to a wrong entry."""
    got, want = expect_shape(got, want.shape, what).detach().float(), want.float()
    if (i := first_wrong(got, want, atol, rtol)) is None:
        return
    fail_if(hint := matching(got, mistakes, atol, rtol), f"{what} is wrong: {hint}")
    at = f" (input {x[i].item():.6g})" if x is not None and x.shape == got.shape else ""
    entry = f"{what}[{', '.join(map(str, i))}]{at} is"
    fail_if(not torch.isfinite(got[i]), f"{entry} {got[i].item()}: a step overflowed (exp of a "
            "large number is inf) or divided by zero")
    raise AssertionError(f"{entry} {got[i].item():.6g}, expected {want[i].item():.6g}; the "
                         f"largest difference is {(got - want).abs().max().item():.3g}")


def first(where: torch.Tensor) -> tuple[int, ...] | None:
    """The index of the first True entry of `where`, or None."""
    return tuple(where.nonzero()[0].tolist()) if where.any() else None


def first_wrong(got: torch.Tensor, want: torch.Tensor, atol=1e-5, rtol=1e-4):
    """The index of the first entry of `got` not close to `want` (NaN is never close), or None."""
    return first(~torch.isclose(got.detach().float(), want.float(), atol=atol, rtol=rtol))


class Refuses(torch.Tensor):
    """An input tensor that fails the check when a built-in version of the exercise sees it."""

    banned: frozenset = frozenset()
    advice = ""
    message = "your function called {name}: {advice}"

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in cls.banned:
            raise AssertionError(cls.message.format(name=func.__name__, advice=cls.advice))
        return super().__torch_function__(func, types, args, kwargs or {})


def plain(value):
    return value.as_subclass(torch.Tensor) if isinstance(value, torch.Tensor) else value


def matching(got: torch.Tensor, mistakes, atol: float = 1e-5, rtol: float = 1e-4) -> str | None:
    """The hint of the first known mistake whose result equals `got` (infinities included)."""
    return first_hint(mistakes, lambda wrong: wrong.shape == got.shape and torch.allclose(
        got.float(), wrong.float(), rtol=rtol, atol=atol))


def first_hint(mistakes, same: Callable[[object], bool]) -> str | None:
    """The hint of the first (hint, wrong answer) pair for which `same(wrong answer)` holds."""
    return next((hint for hint, wrong in mistakes if same(wrong)), None)


def number(value, what: str) -> float:
    """A learner's number (a one-element tensor counts), or a failure that says what came back."""
    value = plain(value)
    value = value.item() if isinstance(value, torch.Tensor) and value.numel() == 1 else value
    fail_if(isinstance(value, bool) or not isinstance(value, numbers.Real),
            f"{what} should be a number, got {type(value).__name__}")
    return float(value)


def tensors(got, names: tuple[str, ...]) -> list[torch.Tensor]:
    """An answer's tuple of tensors, checked for its length and types, as plain detached tensors."""
    fail_if(not (isinstance(got, (tuple, list)) and len(got) == len(names)),
            f"return a tuple ({', '.join(names)})")
    return [expect_tensor(plain(t), name).detach() for t, name in zip(got, names, strict=True)]


def describe(value) -> str:
    """A short description of what a function returned: tensors by shape, the rest by repr."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)) and any(isinstance(v, torch.Tensor) for v in value):
        return f"a {type(value).__name__} of " + ", ".join(describe(v) for v in value)
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def expect_raises(call: Callable[[], object], kind: type[Exception], why: str) -> None:
    """`call()` must raise `kind`; a stub's NotImplementedError passes through untouched."""
    try:
        result = call()
    except NotImplementedError:
        raise
    except kind:
        return
    except Exception as err:  # noqa: BLE001 -- a learner's crash, reported with its type
        raise AssertionError(f"{why}; your function raised {type(err).__name__}: {err}") from None
    raise AssertionError(f"{why}; your function returned {describe(result)}")


def tiny_gpt(seed: int | None, vocab: int, context: int, emb: int, heads: int, layers: int,
             std: float | None = None, **config) -> GPTModel:
    """A small GPTModel without dropout, from its own seed (None: the caller's seeded block),
    its weights drawn from N(0, std²) when std is given."""
    cfg = GPTConfig(vocab_size=vocab, context_length=context, emb_dim=emb, n_heads=heads,
                    n_layers=layers, **{"drop_rate": 0.0, **config})
    with seeded(seed) if seed is not None else nullcontext():
        model = GPTModel(cfg)
        return model if std is None else randomize(model, std)


def deferred(check: Callable[..., None]) -> Callable[..., Callable[[], None]]:
    """`check(*case)` becomes a test that verify runs later: `@deferred def case(...)`."""
    return lambda *args, **kwargs: partial(check, *args, **kwargs)


def fail_first(*rules: tuple[object, str]) -> None:
    """A table of (mistake seen?, what to tell the learner): fail with the first one seen."""
    for seen, message in rules:
        if seen:
            raise AssertionError(message)


def expect_number(value: torch.Tensor, want: torch.Tensor, what: str, mistakes, rule: str,
                  atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """A 0-dim `value` must be close to `want`; else name the mistake it matches, or the rule."""
    if not torch.isclose(value, want.detach(), atol=atol, rtol=rtol):
        hint = matching(value, mistakes)
        raise AssertionError(f"{what} is wrong: {hint}" if hint else f"{what} is "
                             f"{value.item():.6g}, expected {want.item():.6g}: {rule}")


def expect_same_gradients(got: torch.Tensor, want: torch.Tensor, pairs, no_grad: str,
                          weights: torch.Tensor | float = 1.0, **tolerance) -> None:
    """Backpropagate the learner's result and the reference's, each weighted, then compare the
    gradients of each (what, learner's tensor, reference's tensor); a missing one counts as 0."""
    fail_if(not got.requires_grad, no_grad)
    (got * weights).sum().backward()
    (want * weights).sum().backward()
    for what, a, b in pairs:
        grads = [t.grad if t.grad is not None else torch.zeros_like(t) for t in (a, b)]
        expect_close(*grads, what, **tolerance)
