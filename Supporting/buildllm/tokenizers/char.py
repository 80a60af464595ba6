"""The character tokenizer of Meeting 5's first pretraining runs, as in nanoGPT's Shakespeare:
the smallest vocabulary there is (65 ids for tinyshakespeare.txt)."""

from __future__ import annotations

from collections.abc import Sequence

from .protocol import AllowedSpecial

__all__ = ["CharTokenizer"]


class CharTokenizer:
    """Ids are positions in `chars`, the sorted distinct characters. It has no special tokens.

    >>> tok = CharTokenizer("abc ")
    >>> tok.chars, tok.encode("cab a")
    (' abc', [3, 1, 2, 0, 1])
    """

    eot_token = None  # documents simply follow each other

    def __init__(self, chars: str):
        self.chars = "".join(sorted(set(chars)))
        self._id = {c: i for i, c in enumerate(self.chars)}

    @property
    def n_vocab(self) -> int:
        return len(self.chars)

    def encode(self, text: str, allowed_special: AllowedSpecial = ()) -> list[int]:
        return self.encode_ordinary(text)  # no special tokens: `allowed_special` changes nothing

    def encode_ordinary(self, text: str) -> list[int]:
        try:
            return [self._id[c] for c in text]
        except KeyError as err:
            raise ValueError(f"the character {err.args[0]!r} is not in this tokenizer's "
                             f"vocabulary of {self.n_vocab} characters") from None

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.chars[i] for i in ids)
