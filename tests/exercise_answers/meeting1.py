"""Answers to the Meeting 1 exercises, right and wrong, for tests/test_exercise_checks.py.

Each wrong answer is a mistake learners make, named after it.
"""

import re

import torch
import torch.nn.functional as F

from buildllm import check
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
    "returns the pieces, not a dict": lambda text: list(build_vocab(text)),
}


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
    "a list of (input, target) pairs": lambda ids, c, s: list(
        zip(*sliding_windows(ids, c, s), strict=True)
    ),
}


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
    "weight.T @ one_hot.T, not transposed back": lambda ids, weight: (
        weight.T @ F.one_hot(ids, num_classes=weight.shape[0]).float().T
    ),
}


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
    "a NumPy array": lambda n, d, base=10_000.0: sinusoidal(n, d, base).numpy(),
}


# (exercise, its check, right answers, wrong answers by the mistake they make)
EXERCISES = [
    ("1.1", check.meeting1.vocabulary, [build_vocab], WRONG_VOCABULARY),
    (
        "1.2",
        check.meeting1.sliding_windows,
        [sliding_windows, sliding_windows_with_unfold],
        WRONG_SLIDING_WINDOWS,
    ),
    (
        "1.3",
        check.meeting1.one_hot_embedding,
        [one_hot_embedding, one_hot_from_identity],
        WRONG_ONE_HOT_EMBEDDING,
    ),
    ("1.4", check.meeting1.sinusoidal, [sinusoidal, sinusoidal_by_slices], WRONG_SINUSOIDAL),
]
