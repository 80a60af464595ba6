"""What every tokenizer of the course can do, written down once (Meetings 1, 2 and 5).

The word, character and BPE tokenizers speak tiktoken's own names (`n_vocab`, `eot_token`,
`encode_ordinary`), so GPT-2's tiktoken encoding, which `buildllm.data.gpt2_encoding()`
returns and most notebooks use, fits as it is, with no wrapper; pretraining, chat and
instruction tuning then take any of them without asking which one they got.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Literal, Protocol, runtime_checkable

__all__ = ["ENDOFTEXT", "AllowedSpecial", "Tokenizer"]

ENDOFTEXT = "<|endoftext|>"  # separates independent documents, as in GPT-2
AllowedSpecial = Collection[str] | Literal["all"]  # the special tokens `encode` may produce


@runtime_checkable
class Tokenizer(Protocol):
    """Text to ids and back. `encode` reads the special tokens in `allowed_special` as their
    ids; `encode_ordinary` reads them as plain text, so no document can fake a boundary.
    `n_vocab` sizes a model's embedding table; `eot_token` is <|endoftext|>'s id, or None.

    >>> from buildllm.data import gpt2_encoding
    >>> isinstance(gpt2_encoding(), Tokenizer)
    True
    """

    @property
    def n_vocab(self) -> int: ...
    @property
    def eot_token(self) -> int | None: ...
    def encode(self, text: str, *, allowed_special: AllowedSpecial = ...) -> list[int]: ...
    def encode_ordinary(self, text: str) -> list[int]: ...
    def decode(self, ids: Sequence[int]) -> str: ...
