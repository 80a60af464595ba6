"""Sliding-window datasets: every window is a next-token pair, and none is missed."""

import pytest
import torch

from buildllm.data import fetch, gpt2_encoding
from buildllm.datasets import SlidingWindowDataset, create_dataloader, random_windows


def naive_windows(ids, context_length, stride):
    """The plainest possible statement of the rule, to test the dataset against."""
    pairs = []
    for start in range(0, len(ids), stride):
        if start + context_length + 1 <= len(ids):
            pairs.append(
                (ids[start : start + context_length], ids[start + 1 : start + context_length + 1])
            )
    return pairs


@pytest.mark.parametrize(
    "n, context_length, stride", [(10, 4, 4), (10, 4, 1), (11, 4, 3), (5, 4, 9), (100, 7, 5)]
)
def test_windows_match_the_naive_rule(n, context_length, stride):
    ids = list(range(1000, 1000 + n))
    ds = SlidingWindowDataset(ids, context_length, stride)
    expected = naive_windows(ids, context_length, stride)
    assert len(ds) == len(expected)
    for (x, y), (ex, ey) in zip((ds[i] for i in range(len(ds))), expected, strict=True):
        assert x.tolist() == ex and y.tolist() == ey


def test_targets_are_inputs_shifted_by_one_token():
    ds = SlidingWindowDataset(torch.arange(50), context_length=8, stride=3)
    for i in range(len(ds)):
        x, y = ds[i]
        assert torch.equal(x[1:], y[:-1])


def test_too_little_text_and_bad_sizes_raise_clear_errors():
    with pytest.raises(ValueError, match="cannot fill one window"):
        SlidingWindowDataset([1, 2, 3], context_length=3, stride=1)
    with pytest.raises(ValueError, match="must be >= 1"):
        SlidingWindowDataset([1, 2, 3], context_length=2, stride=0)
    with pytest.raises(IndexError):
        SlidingWindowDataset([1, 2, 3, 4], context_length=2, stride=1)[2]


def test_dataloader_on_the_verdict_uses_tiktoken_ids_and_covers_the_text():
    text = fetch("the-verdict.txt").read_text(encoding="utf-8")
    ids = gpt2_encoding().encode(text)
    loader = create_dataloader(
        text, batch_size=8, context_length=64, stride=64, shuffle=False, drop_last=False
    )
    inputs = torch.cat([x for x, _ in loader])
    assert inputs.shape == ((len(ids) - 65) // 64 + 1, 64)
    assert inputs.flatten().tolist() == ids[: inputs.numel()]


def test_random_windows_are_next_token_pairs_from_the_sequence():
    ids = torch.arange(100) * 7
    x, y = random_windows(
        ids, batch_size=16, context_length=10, generator=torch.Generator().manual_seed(0)
    )
    assert x.shape == y.shape == (16, 10)
    assert torch.equal(y[:, :-1], x[:, 1:])
    assert torch.equal(y[:, -1] - x[:, -1], torch.full((16,), 7))  # y continues x in the sequence
