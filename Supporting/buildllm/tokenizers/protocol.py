"""What every tokenizer in the course can do, written down once.

The word tokenizer (Meeting 1), the character tokenizer and our BPE (Meeting 2) speak the
same small interface as tiktoken's encodings, so the rest of the course (pretraining, chat,
instruction tuning) takes any of them without asking which it got.

The names are tiktoken's own (`n_vocab`, `eot_token`, `encode_ordinary`) rather than new
ones: GPT-2's tiktoken encoding, which `buildllm.data.gpt2_encoding()` returns and most
notebooks use, then fits as it is, with no wrapper around it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Literal, Protocol, runtime_checkable

__all__ = ["ENDOFTEXT", "AllowedSpecial", "Tokenizer"]

ENDOFTEXT = "<|endoftext|>"  # separates independent documents, as in GPT-2
AllowedSpecial = Collection[str] | Literal["all"]  # the special tokens `encode` may produce


@runtime_checkable
class Tokenizer(Protocol):
    """Text to ids and back.

    - `encode` reads the special tokens named in `allowed_special` as their own ids.
    - `encode_ordinary` reads every special token as plain text, so no text can fake one.
    - `n_vocab` is the number of ids: the size of a model's embedding table.
    - `eot_token` is the id of <|endoftext|>, or None for a tokenizer without one.

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
