"""Instant feedback for exercise cells (used by every meeting).

Each exercise ends in a cell like `check.meeting1.vocabulary(build_vocab)`: it prints one line
of praise, or stops at the first failing case and says what went wrong. An unfinished exercise
(its stub raises NotImplementedError) stays NotImplementedError: "not done yet", not a failure.
"""

from __future__ import annotations

import importlib
import traceback
from collections.abc import Callable, Iterable

import torch

__all__ = ["ExerciseFailed", "expect_equal", "expect_shape", "expect_tensor", "meeting0",
           "meeting1", "meeting2", "meeting3", "meeting4", "meeting5", "meeting6", "meeting7",
           "verify"]


def __getattr__(name: str):
    """Load a meeting's checks on first use (check.meeting7 needs FastAPI, Meeting 0 does not)."""
    if name.startswith("meeting") and name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ExerciseFailed(AssertionError):
    """The learner's code ran but gave a wrong answer (or crashed) on some case."""


def verify(title: str, cases: Iterable[tuple[str, Callable[[], None]]]) -> None:
    """Run `cases` (label, test) in order; each test raises AssertionError to fail.

    >>> verify("Exercise 0.0", [("two plus two", lambda: None)])
    ✓ Exercise 0.0: all 1 cases pass.
    """
    n = 0
    for n, (label, test) in enumerate(cases, 1):
        try:
            test()
        except NotImplementedError as err:
            raise NotImplementedError(
                f"{title} is not done yet: replace `raise NotImplementedError` with your code "
                "(here, or in an earlier exercise's function that this one calls).") from err
        except AssertionError as err:
            raise ExerciseFailed(f"✗ {title}, case {n} ({label}): {err}") from None
        except Exception as err:
            where = traceback.extract_tb(err.__traceback__)[-1]
            raise ExerciseFailed(
                f"✗ {title}, case {n} ({label}) crashed with {type(err).__name__}: {err}\n"
                f"  at line {where.lineno}: {where.line}") from err
    print(f"✓ {title}: all {n} cases pass.")


def expect_tensor(value, what: str = "result"):
    """Return value if it is a tensor; otherwise fail now, before an AttributeError would."""
    if not isinstance(value, torch.Tensor):
        raise AssertionError(f"{what} should be a tensor, got {type(value).__name__}")
    return value


def expect_shape(value, shape, what: str = "result", meaning: str = ""):
    """Return value if it is a tensor of `shape`; `meaning` ends the message (what the dims are)."""
    if tuple(expect_tensor(value, what).shape) != tuple(shape):
        raise AssertionError(
            f"{what} has shape {tuple(value.shape)}, expected {tuple(shape)}{meaning}")
    return value


def expect_equal(actual, expected, what: str = "result") -> None:
    """Fail with a message that shows both values (tensors are compared with allclose)."""
    if isinstance(expected, torch.Tensor):
        expect_shape(actual, expected.shape, what)
        if not torch.allclose(actual.float(), expected.float(), atol=1e-5, rtol=1e-4):
            raise AssertionError(f"{what} is\n{actual}\nexpected\n{expected}")
    elif actual != expected:
        raise AssertionError(f"{what} is {actual!r}, expected {expected!r}")
