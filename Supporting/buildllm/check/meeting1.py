"""Checks for the Meeting 1 exercises: vocabulary, sliding windows, one-hot embedding and
sinusoids, each compared with the reference in `buildllm` on a table of cases."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..data import fetch
from ..datasets import SlidingWindowDataset
from ..embeddings import sinusoidal_positions
from ..tokenizers import SimpleTokenizer
from . import expect_equal, expect_shape, expect_tensor, verify
from ._support import Refuses, cases, fail_if, first_wrong, plain, randn

__all__ = ["one_hot_embedding", "sinusoidal", "sliding_windows", "vocabulary"]


def _vocab(build_vocab: Callable, text: str) -> None:
    actual, expected = build_vocab(text), SimpleTokenizer.from_text(text).str_to_int
    fail_if(not isinstance(actual, dict),
            f"should return a dict (piece -> id), got {type(actual).__name__}")
    missing = [p for p in expected if p not in actual]
    fail_if(missing, f"{len(missing)} piece(s) missing from the vocabulary: {missing[:5]}")
    extra = [p for p in actual if p not in expected]
    fail_if(extra, f"{len(extra)} piece(s) that should not be there, e.g. {extra[:5]} "
            "(whitespace is dropped, and each special token appears once)")
    gaps = sorted(set(range(len(actual))) - set(actual.values()))
    fail_if(gaps, f"ids should run from 0 to {len(actual) - 1} with no gaps; unused: {gaps[:5]} "
            "(did a special token that occurs in the text get an id twice?)")
    for piece, i in expected.items():
        fail_if(actual[piece] != i, f"{piece!r} has id {actual[piece]!r}, expected {i}: ids "
                "follow the sorted pieces, then <|endoftext|> and <|unk|> get the last two ids")


def vocabulary(build_vocab: Callable[[str], dict[str, int]]) -> None:
    """Exercise 1.1: build_vocab(text) must equal SimpleTokenizer.from_text(text).str_to_int."""
    verify("Exercise 1.1", cases(_vocab, build_vocab, {
        "a short text with punctuation": "Hello, world. Hello!",
        "double dash and quotes": '"Yes--no," she said; (maybe) it\'s fine?',
        "a text that contains <|endoftext|>": "One story. <|endoftext|> Another story.",
        "an empty text": "",
        "the whole of The Verdict": fetch("the-verdict.txt").read_text(encoding="utf-8"),
    }))


def _windows(fn: Callable, n: int, context_length: int, stride: int, as_tensor=False) -> None:
    ids = [(7 * i + 3) % 50 for i in range(n)]  # ids are not their positions
    result = fn(torch.tensor(ids) if as_tensor else ids, context_length, stride)
    fail_if(not (isinstance(result, tuple | list) and len(result) == 2),
            "should return a pair (inputs, targets)")
    ds = SlidingWindowDataset(ids, context_length, stride)
    for k, what in enumerate(["inputs", "targets"]):
        want = torch.stack([ds[i][k] for i in range(len(ds))])
        got = expect_shape(result[k], want.shape, what, f" ({len(ds)} windows of "
                           f"{context_length} for {n} ids and stride {stride})")
        for row, (mine, theirs) in enumerate(zip(got.long(), want, strict=True)):
            fail_if(not torch.equal(mine, theirs),
                    f"{what}[{row}] is {got[row].tolist()}, expected {theirs.tolist()}")


def sliding_windows(fn: Callable[..., tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Exercise 1.2: fn(ids, context_length, stride) -> (inputs, targets), as SlidingWindowDataset.
    An off-by-one in the loop bound drops the window that ends exactly on the last id."""
    verify("Exercise 1.2", cases(_windows, fn, {  # label: (ids, context, stride, as a tensor)
        "20 ids, context 4, stride 4 (no overlap)": (20, 4, 4),
        "9 ids, context 4, stride 4: the last target is the last id": (9, 4, 4),
        "12 ids, context 5, stride 1 (maximum overlap)": (12, 5, 1),
        "6 ids, context 5: exactly one window": (6, 5, 3),
        "30 ids, context 4, stride 7 (gaps), ids as a tensor": (30, 4, 7, True),
    }))


class _NoLookup(Refuses):
    """A weight table that refuses to be indexed, so only the one-hot route passes."""

    banned = frozenset({torch.Tensor.__getitem__, torch.Tensor.index_select, torch.gather,
                        torch.Tensor.gather, torch.Tensor.take, torch.index_select, torch.take,
                        torch.embedding, F.embedding})
    message = ("your function looked rows up directly ({name}); this exercise asks for "
               "one_hot(ids) @ weight instead")


def _embeds(fn: Callable, vocab_size: int, dim: int, ids: list, seed: int) -> None:
    weight, index = randn(seed, vocab_size, dim), torch.tensor(ids)
    got = plain(fn(index, weight.clone().as_subclass(_NoLookup)))
    expect_equal(got, F.embedding(index, weight), f"embedding of ids {ids}")


def one_hot_embedding(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Exercise 1.3: fn(ids, weight) must equal F.embedding(ids, weight), via one-hot vectors.
    The weight refuses indexing, so a plain lookup does not pass. The largest table has 1,000
    rows, not GPT-2's 50,257: torch.eye(50_257), a fine answer, would need 10 GB."""
    verify("Exercise 1.3", cases(_embeds, fn, {  # label: (vocab_size, dim, ids, seed)
        "6 x 3 table, ids [2, 0, 5]": (6, 3, [2, 0, 5], 1),
        "the same id three times": (6, 3, [1, 1, 1], 2),
        "10 x 4 table, ids [0, 3] (rows 4 to 9 unused)": (10, 4, [0, 3], 3),
        "a batch of ids, shape (2, 3)": (7, 4, [[6, 0, 2], [3, 3, 1]], 4),
        "a 1,000-row table, ids at both ends": (1_000, 8, [[999, 0], [464, 13]], 5),
    }))


def _encoding(fn: Callable, *args: float) -> None:
    got, want = expect_tensor(fn(*args), "the encoding"), sinusoidal_positions(*args)
    fail_if(got.shape != want.shape, f"shape is {tuple(got.shape)}, expected {tuple(want.shape)}")
    if (where := first_wrong(got, want)) is not None:
        p, d = where
        raise AssertionError(
            f"entry [position {p}, dim {d}] is {got[p, d].item():.5f}, expected "
            f"{want[p, d].item():.5f}: dim {d} holds the {'cos' if d % 2 else 'sin'} of "
            f"{p} / base^({d - d % 2}/{want.shape[1]})")


def sinusoidal(fn: Callable[..., torch.Tensor]) -> None:
    """Exercise 1.4: fn(num_positions, dim, base) must equal sinusoidal_positions(...)."""
    verify("Exercise 1.4", cases(_encoding, fn, {
        "4 positions, dim 6": (4, 6), "1 position, dim 2": (1, 2), "50 positions, dim 16": (50, 16),
        "128 positions, dim 64": (128, 64), "10 positions, dim 8, base 100": (10, 8, 100.0),
    }))
