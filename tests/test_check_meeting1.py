"""The Meeting 1 exercise checks accept right answers and reject the mistakes learners make.

A check that passes a wrong answer teaches the wrong thing, and one that fails a right answer
teaches nothing. So for each exercise in `buildllm.check.meeting1` we run a few correct
solutions, written the ways learners write them, and a list of plausible wrong ones, each
named after the mistake it makes. An unfinished stub must stay "not done yet".

The vocabulary check reads the-verdict.txt through `buildllm.data.fetch`.
"""

import re

import pytest
import torch
import torch.nn.functional as F

from buildllm import check
from buildllm.check import ExerciseFailed
from buildllm.tokenizers import ENDOFTEXT, UNK, split_words

# -- Exercise 1.1: a vocabulary from a text -------------------------------------------------


def numbered(pieces):
    return {piece: i for i, piece in enumerate(pieces)}


def build_vocab(text):
    pieces = sorted(set(split_words(text)) - {ENDOFTEXT, UNK})
    return numbered([*pieces, ENDOFTEXT, UNK])


def split_keeping_whitespace(text):
    return [piece for piece in re.split(r'([,.:;?_!"()\']|--|\s)', text) if piece]


WRONG_VOCABULARY = {
    "no special tokens": lambda text: numbered(sorted(set(split_words(text)))),
    "special tokens first": lambda text: numbered(
        [ENDOFTEXT, UNK, *sorted(set(split_words(text)))]
    ),
    "pieces in order of appearance": lambda text: numbered(
        [*dict.fromkeys(split_words(text)), ENDOFTEXT, UNK]
    ),
    "a special token in the text gets two ids": lambda text: numbered(
        [*sorted(set(split_words(text))), ENDOFTEXT, UNK]
    ),
    "splits on whitespace only": lambda text: numbered(
        [*sorted(set(text.split())), ENDOFTEXT, UNK]
    ),
    "keeps whitespace as pieces": lambda text: numbered(
        [*sorted(set(split_keeping_whitespace(text))), ENDOFTEXT, UNK]
    ),
}


def test_vocabulary_accepts_sorted_pieces_then_the_special_tokens(capsys):
    check.meeting1.vocabulary(build_vocab)
    assert capsys.readouterr().out.startswith("✓ Exercise 1.1: all ")


@pytest.mark.parametrize("wrong", WRONG_VOCABULARY.values(), ids=list(WRONG_VOCABULARY))
def test_vocabulary_rejects(wrong):
    with pytest.raises(ExerciseFailed, match="Exercise 1.1"):
        check.meeting1.vocabulary(wrong)


# -- Exercise 1.2: sliding windows ----------------------------------------------------------


def sliding_windows(ids, context_length, stride, end_shift=0):
    """Inputs and next-token targets; end_shift moves the loop bound to make off-by-ones."""
    ids = torch.as_tensor(ids, dtype=torch.long)
    starts = range(0, len(ids) - context_length + end_shift, stride)
    inputs = torch.stack([ids[s : s + context_length] for s in starts])
    targets = torch.stack([ids[s + 1 : s + context_length + 1] for s in starts])
    return inputs, targets


def sliding_windows_with_unfold(ids, context_length, stride):
    windows = torch.as_tensor(ids).unfold(0, context_length + 1, stride)
    return windows[:, :-1], windows[:, 1:]


def unshifted_windows(ids, context_length, stride):
    inputs, _ = sliding_windows(ids, context_length, stride)
    return inputs, inputs


WRONG_SLIDING_WINDOWS = {
    "stops one window short": lambda ids, c, s: sliding_windows(ids, c, s, end_shift=-1),
    "runs one window too far": lambda ids, c, s: sliding_windows(ids, c, s, end_shift=1),
    "targets not shifted": unshifted_windows,
    "stride ignored": lambda ids, c, s: sliding_windows(ids, c, c),
    "windows of positions, not ids": lambda ids, c, s: sliding_windows(range(len(ids)), c, s),
    "returns lists, not tensors": lambda ids, c, s: tuple(
        windows.tolist() for windows in sliding_windows(ids, c, s)
    ),
}


@pytest.mark.parametrize("answer", [sliding_windows, sliding_windows_with_unfold])
def test_sliding_windows_accepts_every_full_window(answer, capsys):
    check.meeting1.sliding_windows(answer)
    assert capsys.readouterr().out.startswith("✓ Exercise 1.2: all ")


@pytest.mark.parametrize("wrong", WRONG_SLIDING_WINDOWS.values(), ids=list(WRONG_SLIDING_WINDOWS))
def test_sliding_windows_rejects(wrong):
    with pytest.raises(ExerciseFailed, match="Exercise 1.2"):
        check.meeting1.sliding_windows(wrong)


# -- Exercise 1.3: an embedding as one-hot vectors times a matrix ---------------------------


def one_hot_embedding(ids, weight):
    return F.one_hot(ids, num_classes=weight.shape[0]).to(weight.dtype) @ weight


def one_hot_from_identity(ids, weight):
    return torch.eye(weight.shape[0])[ids] @ weight


WRONG_ONE_HOT_EMBEDDING = {
    "one_hot without num_classes": lambda ids, weight: F.one_hot(ids).float() @ weight,
    "looks rows up with weight[ids]": lambda ids, weight: weight[ids],
    "calls F.embedding": lambda ids, weight: F.embedding(ids, weight),
    "integer one-hot times a float table": lambda ids, weight: (
        F.one_hot(ids, num_classes=weight.shape[0]) @ weight
    ),
    "one-hot over the embedding dim, times weight.T": lambda ids, weight: (
        F.one_hot(ids, num_classes=weight.shape[1]).float() @ weight.T
    ),
}


@pytest.mark.parametrize("answer", [one_hot_embedding, one_hot_from_identity])
def test_one_hot_embedding_accepts_one_hot_times_weight(answer, capsys):
    check.meeting1.one_hot_embedding(answer)
    assert capsys.readouterr().out.startswith("✓ Exercise 1.3: all ")


@pytest.mark.parametrize(
    "wrong", WRONG_ONE_HOT_EMBEDDING.values(), ids=list(WRONG_ONE_HOT_EMBEDDING)
)
def test_one_hot_embedding_rejects(wrong):
    with pytest.raises(ExerciseFailed, match="Exercise 1.3"):
        check.meeting1.one_hot_embedding(wrong)


# -- Exercise 1.4: sinusoidal position encodings --------------------------------------------


def sinusoidal(num_positions, dim, base=10_000.0, swap=False, halves=False, exponent=2):
    """The encoding, with switches for the usual mistakes (the defaults are right)."""
    positions = torch.arange(num_positions, dtype=torch.float32)[:, None]
    i = torch.arange(dim // 2, dtype=torch.float32)
    angles = positions / base ** (exponent * i / dim)  # (num_positions, dim // 2)
    first, second = (angles.cos(), angles.sin()) if swap else (angles.sin(), angles.cos())
    if halves:
        return torch.cat([first, second], dim=1)
    return torch.stack([first, second], dim=-1).reshape(num_positions, dim)


def sinusoidal_by_slices(num_positions, dim, base=10_000.0):
    positions = torch.arange(num_positions)[:, None]
    angles = positions / base ** (torch.arange(0, dim, 2) / dim)
    encoding = torch.zeros(num_positions, dim)
    encoding[:, 0::2] = angles.sin()
    encoding[:, 1::2] = angles.cos()
    return encoding


WRONG_SINUSOIDAL = {
    "sin and cos swapped": lambda n, d, base=10_000.0: sinusoidal(n, d, base, swap=True),
    "sines and cosines in two halves": lambda n, d, base=10_000.0: sinusoidal(
        n, d, base, halves=True
    ),
    "exponent i/d, not 2i/d": lambda n, d, base=10_000.0: sinusoidal(n, d, base, exponent=1),
    "base ignored": lambda n, d, base=10_000.0: sinusoidal(n, d),
    "transposed": lambda n, d, base=10_000.0: sinusoidal(n, d, base).T,
}


@pytest.mark.parametrize("answer", [sinusoidal, sinusoidal_by_slices])
def test_sinusoidal_accepts_interleaved_sines_and_cosines(answer, capsys):
    check.meeting1.sinusoidal(answer)
    assert capsys.readouterr().out.startswith("✓ Exercise 1.4: all ")


@pytest.mark.parametrize("wrong", WRONG_SINUSOIDAL.values(), ids=list(WRONG_SINUSOIDAL))
def test_sinusoidal_rejects(wrong):
    with pytest.raises(ExerciseFailed, match="Exercise 1.4"):
        check.meeting1.sinusoidal(wrong)


# -- Every exercise -------------------------------------------------------------------------


def unfinished_stub(*args, **kwargs):
    raise NotImplementedError("Your code here")


@pytest.mark.parametrize(
    "exercise, run_check",
    [
        ("1.1", check.meeting1.vocabulary),
        ("1.2", check.meeting1.sliding_windows),
        ("1.3", check.meeting1.one_hot_embedding),
        ("1.4", check.meeting1.sinusoidal),
    ],
    ids=["vocabulary", "sliding_windows", "one_hot_embedding", "sinusoidal"],
)
def test_an_unfinished_stub_is_not_done_yet(exercise, run_check):
    with pytest.raises(NotImplementedError, match=f"Exercise {exercise} is not done yet"):
        run_check(unfinished_stub)
