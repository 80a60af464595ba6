"""Checks for the Meeting 1 exercises: vocabulary, sliding windows, one-hot embedding, sinusoids.

Each check runs the learner's function on a few cases and compares it with the reference in
`buildllm` (SimpleTokenizer, SlidingWindowDataset, F.embedding, sinusoidal_positions):

    >>> from buildllm import check
    >>> check.meeting1.vocabulary(build_vocab)
    ✓ Exercise 1.1: all 5 cases pass.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..data import fetch
from ..datasets import SlidingWindowDataset
from ..embeddings import sinusoidal_positions
from ..tokenizers import SimpleTokenizer
from . import expect_equal, expect_tensor, verify

# The checks draw their random numbers from their own generators, never the global one, so
# running a check does not change what the rest of a learner's notebook draws.

__all__ = ["one_hot_embedding", "sinusoidal", "sliding_windows", "vocabulary"]


# -- Exercise 1.1 ---------------------------------------------------------------------------


def _expect_same_vocab(actual, expected: dict[str, int]) -> None:
    """Compare two vocabularies and name the first difference, not the whole dict."""
    if not isinstance(actual, dict):
        raise AssertionError(f"should return a dict (piece -> id), got {type(actual).__name__}")
    missing = [p for p in expected if p not in actual]
    if missing:
        raise AssertionError(f"{len(missing)} piece(s) missing from the vocabulary: {missing[:5]}")
    extra = [p for p in actual if p not in expected]
    if extra:
        raise AssertionError(
            f"{len(extra)} piece(s) that should not be there, e.g. {extra[:5]} "
            "(whitespace is dropped, and each special token appears once)"
        )
    gaps = sorted(set(range(len(actual))) - set(actual.values()))
    if gaps:
        raise AssertionError(
            f"ids should run from 0 to {len(actual) - 1} with no gaps; unused: {gaps[:5]} "
            "(did a special token that occurs in the text get an id twice?)"
        )
    for piece, i in expected.items():
        if actual[piece] != i:
            raise AssertionError(
                f"{piece!r} has id {actual[piece]!r}, expected {i}: ids follow the sorted "
                "pieces, then <|endoftext|> and <|unk|> get the last two ids"
            )


def vocabulary(build_vocab: Callable[[str], dict[str, int]]) -> None:
    """Exercise 1.1: build_vocab(text) must equal SimpleTokenizer.from_text(text).str_to_int.

    Cases: a short text with punctuation, the double dash and quotes, a text that already
    contains <|endoftext|> (which must not get two ids), an empty text (only the two
    special tokens), and the whole of The Verdict.
    """

    def case(text: str) -> Callable[[], None]:
        expected = SimpleTokenizer.from_text(text).str_to_int
        return lambda: _expect_same_vocab(build_vocab(text), expected)

    def verdict() -> None:
        case(fetch("the-verdict.txt").read_text(encoding="utf-8"))()

    verify(
        "Exercise 1.1",
        [
            ("a short text with punctuation", case("Hello, world. Hello!")),
            ("double dash and quotes", case('"Yes--no," she said; (maybe) it\'s fine?')),
            ("a text that contains <|endoftext|>", case("One story. <|endoftext|> Another story.")),
            ("an empty text", case("")),
            ("the whole of The Verdict", verdict),
        ],
    )


# -- Exercise 1.2 ---------------------------------------------------------------------------


def _expect_same_windows(result, ids: list[int], context_length: int, stride: int) -> None:
    """Compare with SlidingWindowDataset, naming the first window that differs."""
    ds = SlidingWindowDataset(ids, context_length, stride)
    expected_x = torch.stack([ds[i][0] for i in range(len(ds))])
    expected_y = torch.stack([ds[i][1] for i in range(len(ds))])
    if not (isinstance(result, tuple | list) and len(result) == 2):
        raise AssertionError("should return a pair (inputs, targets)")
    for got, want, what in [(result[0], expected_x, "inputs"), (result[1], expected_y, "targets")]:
        expect_tensor(got, what)
        if got.shape != want.shape:
            raise AssertionError(
                f"{what} has shape {tuple(got.shape)}, expected {tuple(want.shape)} "
                f"({len(ds)} windows of {context_length} for {len(ids)} ids and stride {stride})"
            )
        for row in range(len(want)):
            if not torch.equal(got[row].long(), want[row]):
                raise AssertionError(
                    f"{what}[{row}] is {got[row].tolist()}, expected {want[row].tolist()}"
                )


def sliding_windows(fn: Callable[..., tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Exercise 1.2: fn(ids, context_length, stride) -> (inputs, targets), two 2-D tensors.

    Compared window by window with SlidingWindowDataset. The cases include a length where the
    last window ends exactly on the last id (an off-by-one in the loop bound drops it), a
    list just one longer than the context (one window), a stride larger than the context,
    and ids passed as a tensor. Ids are not their positions, so returning positions fails.
    """

    def ids(n: int) -> list[int]:
        return [(7 * i + 3) % 50 for i in range(n)]

    def case(n: int, context_length: int, stride: int, as_tensor: bool = False):
        def test() -> None:
            data = ids(n)
            result = fn(torch.tensor(data) if as_tensor else data, context_length, stride)
            _expect_same_windows(result, data, context_length, stride)

        return test

    verify(
        "Exercise 1.2",
        [
            ("20 ids, context 4, stride 4 (no overlap)", case(20, 4, 4)),
            ("9 ids, context 4, stride 4: the last target is the last id", case(9, 4, 4)),
            ("12 ids, context 5, stride 1 (maximum overlap)", case(12, 5, 1)),
            ("6 ids, context 5: exactly one window", case(6, 5, 3)),
            ("30 ids, context 4, stride 7 (gaps), ids as a tensor", case(30, 4, 7, as_tensor=True)),
        ],
    )


# -- Exercise 1.3 ---------------------------------------------------------------------------


_LOOKUPS = {
    torch.Tensor.__getitem__,
    torch.Tensor.index_select,
    torch.Tensor.gather,
    torch.Tensor.take,
    torch.index_select,
    torch.gather,
    torch.take,
    torch.embedding,
    F.embedding,
}


class _NoLookup(torch.Tensor):
    """A weight table that refuses to be indexed, so only the one-hot route passes."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in _LOOKUPS:
            raise AssertionError(
                f"your function looked rows up directly ({getattr(func, '__name__', func)}); "
                "this exercise asks for one_hot(ids) @ weight instead"
            )
        return super().__torch_function__(func, types, args, kwargs or {})


def one_hot_embedding(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Exercise 1.3: fn(ids, weight) must equal F.embedding(ids, weight), via one-hot vectors.

    Cases: 1-D ids, a repeated id, ids that never use the table's last rows (one_hot needs
    num_classes), a (batch, time) tensor of ids, and a 1,000-row table. (Not GPT-2's
    50,257 rows: torch.eye(50_257), a fine answer, would need 10 GB.) The weight
    refuses indexing, so a plain lookup (weight[ids], F.embedding) does not pass.
    """

    def case(vocab_size: int, dim: int, ids: list, seed: int):
        def test() -> None:
            weight = torch.randn(vocab_size, dim, generator=torch.Generator().manual_seed(seed))
            index = torch.tensor(ids)
            got = fn(index, weight.clone().as_subclass(_NoLookup))
            if isinstance(got, torch.Tensor):
                got = got.as_subclass(torch.Tensor)
            expect_equal(got, F.embedding(index, weight), f"embedding of ids {ids}")

        return test

    verify(
        "Exercise 1.3",
        [
            ("6 x 3 table, ids [2, 0, 5]", case(6, 3, [2, 0, 5], seed=1)),
            ("the same id three times", case(6, 3, [1, 1, 1], seed=2)),
            ("10 x 4 table, ids [0, 3] (rows 4 to 9 unused)", case(10, 4, [0, 3], seed=3)),
            ("a batch of ids, shape (2, 3)", case(7, 4, [[6, 0, 2], [3, 3, 1]], seed=4)),
            ("a 1,000-row table, ids at both ends", case(1_000, 8, [[999, 0], [464, 13]], seed=5)),
        ],
    )


# -- Exercise 1.4 ---------------------------------------------------------------------------


def _expect_same_encoding(got, want: torch.Tensor) -> None:
    """Compare position encodings and name the first wrong entry, not the whole table."""
    expect_tensor(got, "the encoding")
    if got.shape != want.shape:
        raise AssertionError(f"shape is {tuple(got.shape)}, expected {tuple(want.shape)}")
    close = torch.isclose(got.float(), want, atol=1e-5, rtol=1e-4)
    if not close.all():
        p, d = (int(v) for v in (~close).nonzero()[0])
        kind = "sin" if d % 2 == 0 else "cos"
        raise AssertionError(
            f"entry [position {p}, dim {d}] is {got[p, d].item():.5f}, "
            f"expected {want[p, d].item():.5f}: dim {d} holds the {kind} of "
            f"{p} / base^({d - d % 2}/{want.shape[1]})"
        )


def sinusoidal(fn: Callable[..., torch.Tensor]) -> None:
    """Exercise 1.4: fn(num_positions, dim, base) must equal sinusoidal_positions(...).

    Cases: a small table (sin/cos swapped fails at position 0), a single position, 50 x 16
    (sines and cosines must interleave, not sit in two halves), 128 x 64, and a different
    base (which must be used, not the default).
    """

    def case(num_positions: int, dim: int, base: float | None = None):
        def test() -> None:
            if base is None:
                got, want = fn(num_positions, dim), sinusoidal_positions(num_positions, dim)
            else:
                got = fn(num_positions, dim, base)
                want = sinusoidal_positions(num_positions, dim, base)
            _expect_same_encoding(got, want)

        return test

    verify(
        "Exercise 1.4",
        [
            ("4 positions, dim 6", case(4, 6)),
            ("1 position, dim 2", case(1, 2)),
            ("50 positions, dim 16", case(50, 16)),
            ("128 positions, dim 64", case(128, 64)),
            ("10 positions, dim 8, base 100", case(10, 8, base=100.0)),
        ],
    )
