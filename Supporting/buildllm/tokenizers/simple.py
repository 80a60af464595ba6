"""The simple word tokenizer of Meeting 1.

Meeting 1 builds the simplest useful one: split text into words and punctuation with a
regular expression, then give each distinct piece an id. Its weakness (any word it has not
seen becomes <|unk|>) is what motivates the byte-level BPE of Meeting 2.

    >>> tok = SimpleTokenizer.from_text("Hello, world. Hello!")
    >>> tok.decode(tok.encode("Hello, world!"))
    'Hello, world!'
"""

from __future__ import annotations

import re

from .protocol import ENDOFTEXT, AllowedSpecial

__all__ = ["UNK", "SimpleTokenizer", "split_words"]

UNK = "<|unk|>"  # stands for any word outside the vocabulary

# Keep the delimiters (the capturing group) so punctuation becomes tokens of its own.
_SPLIT = re.compile(r'([,.:;?_!"()\']|--|\s)')
_SPACE_BEFORE_PUNCT = re.compile(r'\s+([,.:;?_!"()\'])')


def split_words(text: str) -> list[str]:
    """Split text into words and punctuation marks, dropping whitespace.

    >>> split_words("Hello, world--again.")
    ['Hello', ',', 'world', '--', 'again', '.']
    """
    return [piece for piece in _SPLIT.split(text) if piece.strip()]


class SimpleTokenizer:
    """Maps words and punctuation to ids with a fixed vocabulary."""

    def __init__(self, vocab: dict[str, int]):
        if len(set(vocab.values())) != len(vocab):
            raise ValueError("vocab maps two tokens to the same id; ids must be unique")
        self.str_to_int = dict(vocab)
        self.int_to_str = {i: s for s, i in vocab.items()}

    @classmethod
    def from_text(cls, text: str, specials: tuple[str, ...] = (ENDOFTEXT, UNK)) -> SimpleTokenizer:
        """Build the vocabulary from a text: its distinct pieces, sorted, then the specials."""
        pieces = sorted(set(split_words(text)) - set(specials))
        return cls({piece: i for i, piece in enumerate([*pieces, *specials])})

    def __len__(self) -> int:
        return len(self.str_to_int)

    n_vocab = property(__len__)  # tiktoken's name, which `Tokenizer` uses

    @property
    def eot_token(self) -> int | None:
        return self.str_to_int.get(ENDOFTEXT)

    def encode(self, text: str, allowed_special: AllowedSpecial = "all") -> list[int]:
        """Text to ids. Unknown words become <|unk|>, or raise if the vocabulary has none.

        Special tokens are words here, so all are allowed by default (tiktoken allows none);
        one left out of `allowed_special` is read as an unknown word."""
        unk = self.str_to_int.get(UNK)
        plain = set() if allowed_special == "all" else {ENDOFTEXT, UNK} - set(allowed_special)
        ids = []
        for piece in split_words(text):
            if piece in self.str_to_int and piece not in plain:
                ids.append(self.str_to_int[piece])
            elif unk is not None:
                ids.append(unk)
            else:
                raise KeyError(f"{piece!r} is not in the vocabulary, which has no {UNK} token")
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Text to ids, reading <|endoftext|> and <|unk|> in it as unknown words."""
        return self.encode(text, allowed_special=())

    def decode(self, ids: list[int]) -> str:
        """Ids to text: join with spaces, then remove the space before punctuation."""
        if unknown := [i for i in ids if i not in self.int_to_str]:
            raise KeyError(f"ids {unknown[:5]} are not in the vocabulary (size {len(self)})")
        return _SPACE_BEFORE_PUNCT.sub(r"\1", " ".join(self.int_to_str[i] for i in ids))
