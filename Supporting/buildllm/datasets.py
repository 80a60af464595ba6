"""Next-token datasets (built in Meeting 1).

A language model learns to predict token t+1 from tokens 0..t. We cut a long list of
token ids into windows of `context_length` inputs; the targets are the same window
shifted one token to the right.

    >>> ds = SlidingWindowDataset(list(range(10)), context_length=4, stride=4)
    >>> ds[0]
    (tensor([0, 1, 2, 3]), tensor([1, 2, 3, 4]))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from .data import gpt2_encoding

__all__ = ["SlidingWindowDataset", "create_dataloader", "random_windows", "windows_at"]


class SlidingWindowDataset(Dataset):
    """Input/target windows taken every `stride` tokens from one long token sequence.

    stride == context_length gives non-overlapping windows; a smaller stride gives more,
    overlapping windows (more training pairs, but they repeat text).
    """

    def __init__(self, token_ids: Sequence[int] | torch.Tensor, context_length: int, stride: int):
        if context_length < 1 or stride < 1:
            raise ValueError(f"context_length ({context_length}) and stride ({stride}) "
                             "must be >= 1")
        self.ids = torch.as_tensor(token_ids, dtype=torch.long)
        if len(self.ids) < context_length + 1:
            raise ValueError(f"{len(self.ids)} tokens cannot fill one window of {context_length} "
                             "inputs plus 1 target; use more text or a shorter context_length")
        self.context_length, self.stride = context_length, stride

    def __len__(self) -> int:
        # Window i starts at i * stride and needs context_length + 1 tokens.
        return (len(self.ids) - self.context_length - 1) // self.stride + 1

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(f"window {i} out of range for {len(self)} windows")
        start = i * self.stride
        chunk = self.ids[start : start + self.context_length + 1]
        return chunk[:-1], chunk[1:]


def create_dataloader(text: str, batch_size: int = 4, context_length: int = 256,
                      stride: int = 128, shuffle: bool = True, drop_last: bool = True,
                      num_workers: int = 0, tokenizer=None) -> DataLoader:
    """Tokenize `text` (GPT-2's BPE unless another tokenizer is given) into a DataLoader.

    Each batch is a pair of (batch_size, context_length) tensors: inputs and targets.
    """
    if tokenizer is None:
        ids = gpt2_encoding().encode(text, allowed_special={"<|endoftext|>"})
    else:
        ids = tokenizer.encode(text)
    dataset = SlidingWindowDataset(ids, context_length, stride)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                      num_workers=num_workers)


def random_windows(token_ids: torch.Tensor, batch_size: int, context_length: int,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of windows starting at random positions: no epochs, every offset is fair game.

    This is how nanoGPT samples training data; Meeting 5 uses it for long pretraining runs.
    """
    if len(token_ids) < context_length + 1:
        raise ValueError(f"need more than {context_length} tokens, got {len(token_ids)}")
    starts = torch.randint(len(token_ids) - context_length, (batch_size,), generator=generator)
    return windows_at(token_ids, starts, context_length)


def windows_at(token_ids: torch.Tensor, starts: Sequence[int] | torch.Tensor,
               context_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of the windows of `context_length` tokens starting at each of `starts`."""
    chunks = token_ids[torch.as_tensor(starts)[:, None] + torch.arange(context_length + 1)]
    return chunks[:, :-1], chunks[:, 1:]  # chunks: (len(starts), context_length + 1)
