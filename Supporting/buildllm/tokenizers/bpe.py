"""Byte-level byte pair encoding (BPE), the tokenizer GPT-2 uses (Meeting 2).

A BPE tokenizer is two pieces of plain data:

- `vocab`, id -> bytes. Every single byte has an id, so any text can be encoded.
- `merges`, an ordered list of (bytes, bytes). Encoding a word starts from its bytes and
  applies the merges in the order they were learned, earliest first.

Text is first cut into pre-tokens by GPT-2's regular expression, which keeps letters,
numbers, punctuation and whitespace apart and lets a word keep its leading space. Merges
never cross those cuts. Special tokens such as <|endoftext|> are cut out before that and map
straight to their ids; they are never produced by merges.

    >>> tok = BPETokenizer.train("low lower lowest", vocab_size=258)
    >>> tok.merges
    [(b'o', b'w'), (b'l', b'ow')]
    >>> tok.encode(" slow")
    [32, 115, 257]
    >>> tok.decode([32, 115, 257])
    ' slow'
"""

from __future__ import annotations

import json
import operator
import os
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from itertools import pairwise
from pathlib import Path

import regex

from ..utils import write_atomically
from .protocol import ENDOFTEXT, AllowedSpecial

__all__ = ["GPT2_SPLIT_PATTERN", "BPETokenizer", "PreTokenizer", "from_printable", "merge",
           "pair_counts", "printable"]

# GPT-2's pre-tokenizer: contractions, then letters, numbers and other symbols (each may
# take one leading space), then whitespace. `\s+(?!\S)` leaves the last space of a run for
# the word after it, which is why " world" and not "world" is a token.
GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_SPLIT = regex.compile(GPT2_SPLIT_PATTERN)
_SPACE = regex.compile(r"\s")
_LOOKAHEAD = 2  # characters after a pre-token that can change it: "'" then "ll" makes "'ll"
_BLOCK = 1 << 16  # characters encode_iterable gathers before it encodes
_CACHE_SIZE = 1 << 16  # pre-tokens whose ids are remembered; plenty for natural text
FORMAT = "buildllm-bpe/1"

Pair = tuple[int, int]


def pair_counts(ids: Sequence[int], counts: dict[Pair, int] | None = None, weight: int = 1):
    """Count adjacent pairs in `ids`, adding `weight` per pair into `counts` (a new dict if None).

    >>> pair_counts([1, 2, 3, 1, 2])
    {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    """
    counts = {} if counts is None else counts
    for pair in pairwise(ids):
        counts[pair] = counts.get(pair, 0) + weight
    return counts


def merge(ids: Sequence[int], pair: Pair, new_id: int) -> list[int]:
    """Replace every occurrence of `pair` in `ids`, left to right, by `new_id`.

    >>> merge([1, 2, 3, 1, 2], (1, 2), 4)
    [4, 3, 4]
    >>> merge([5, 5, 5], (5, 5), 6)
    [6, 5]
    """
    out, i, n = [], 0, len(ids)
    first, second = pair
    while i < n:
        if i + 1 < n and ids[i] == first and ids[i + 1] == second:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _byte_alphabet() -> dict[int, str]:
    """GPT-2's printable spelling of bytes: one visible character per byte.

    Bytes that are already printable (and not a space) stand for themselves; the other 68
    (control codes, space, and a few Latin-1 gaps) are moved to code points 256 and up, in
    order. This is why a leading space shows up as "Ġ" in GPT-2's files.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += range(ord("®"), ord("ÿ") + 1)
    moved = (b for b in range(256) if b not in keep)
    return {**{b: chr(b) for b in keep}, **{b: chr(256 + n) for n, b in enumerate(moved)}}


BYTE_TO_CHAR = _byte_alphabet()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


def printable(token: bytes) -> str:
    """Spell a token the way GPT-2's files do. `printable(b" hi\\n") == "ĠhiĊ"`."""
    return "".join(BYTE_TO_CHAR[b] for b in token)


def from_printable(text: str) -> bytes:
    """Undo `printable`; raise ValueError on a character outside GPT-2's byte alphabet."""
    try:
        return bytes(CHAR_TO_BYTE[c] for c in text)
    except KeyError as err:
        raise ValueError(f"{text!r}: {err.args[0]!r} is not in GPT-2's byte alphabet") from None


class PreTokenizer:
    """Cuts text into special tokens and GPT-2 pre-tokens, in one string or a stream."""

    def __init__(self, special_tokens: Collection[str] = ()):
        self.special_tokens = frozenset(special_tokens)
        # Longest first, so that of two specials starting at the same place the longer wins.
        alternatives = sorted(self.special_tokens, key=len, reverse=True)
        self._special = regex.compile("|".join(map(regex.escape, alternatives)))
        self._longest = max(map(len, alternatives), default=0)

    def segments(self, text: str, allowed: Collection[str] | None) -> Iterator[tuple[str, bool]]:
        """Cut `text` at special tokens: yield (ordinary text, False) and (special, True).

        `allowed=None` treats special tokens as plain text (like tiktoken's
        encode_ordinary). Otherwise a special token outside `allowed` raises ValueError,
        so a document can never smuggle in <|endoftext|> by accident.
        """
        pos = 0
        if allowed is not None and self.special_tokens:
            for found in self._special.finditer(text):
                token = found.group()
                if token not in allowed:
                    raise ValueError(f"the text contains the special token {token!r}, which is "
                                     f"not allowed here. Pass allowed_special={{{token!r}}} (or "
                                     "'all') to encode it as one special token, or use "
                                     "encode_ordinary() to encode it as plain text.")
                if found.start() > pos:
                    yield text[pos : found.start()], False
                yield token, True
                pos = found.end()
        if pos < len(text):
            yield text[pos:], False

    def safe_chunks(self, chunks: Iterable[str], allowed: Collection[str] | None) -> Iterator[str]:
        """Regroup text arriving in chunks into blocks that end on a pre-token boundary.

        Encoding the blocks one by one gives exactly the ids of encoding their concatenation,
        while only a block (about 64k characters) is held at a time; a single pre-token
        longer than that (say, 100 MB without a space) is held whole.
        """
        keep = max(_LOOKAHEAD, self._longest - 1)
        held: list[str] = []
        size = 0
        for chunk in chunks:
            if not isinstance(chunk, str):
                raise TypeError(f"expected text, got {type(chunk).__name__}; open files in text "
                                "mode with encoding='utf-8'")
            held.append(chunk)
            size += len(chunk)
            if size >= _BLOCK:
                text = "".join(held)
                if cut := self._last_boundary(text, len(text) - keep, allowed):
                    yield text[:cut]
                held, size = [text[cut:]], len(text) - cut
        if size:
            yield "".join(held)

    def _last_boundary(self, text: str, limit: int, allowed: Collection[str] | None) -> int:
        """The last place at or before `limit` where `text` can be cut without changing ids.

        That is the start of a piece (a pre-token or special token) that is final: two
        more characters follow it (one shows where a run of letters or spaces ends; "'"
        needs two, as "'ll" is one piece), and no special token could still be arriving
        across it: hence `limit`. Within ordinary text, the cut must not follow a space
        either: at the end of a text " \n" is one piece, but before "x" it is two.
        """
        end = len(text)
        for segment, special in reversed(list(self.segments(text, allowed))):
            pieces = [segment] if special else _SPLIT.findall(segment)
            start = end - len(segment)
            for piece in reversed(pieces):
                end -= len(piece)
                if end <= limit and (end == start or not _SPACE.match(text, end - 1)):
                    return end
        return 0


class BPETokenizer:
    """A byte-level BPE tokenizer: plain data (vocab, merges, special tokens) plus the rules.

    `vocab` maps ids 0..n-1 to distinct byte strings and must include all 256 single bytes;
    every merge's two halves and their concatenation must be in it; each special token's
    UTF-8 bytes must be in it too (that entry is its id).
    """

    def __init__(self, vocab: Mapping[int, bytes], merges: Sequence[tuple[bytes, bytes]],
                 special_tokens: Iterable[str] = ()):
        if sorted(vocab) != list(range(len(vocab))):
            raise ValueError("vocab ids must be 0, 1, ..., n-1 with no gaps")
        self.vocab = dict(sorted(vocab.items()))
        self._id_of: dict[bytes, int] = {}
        for i, token in self.vocab.items():
            if not isinstance(token, bytes):
                raise TypeError(f"vocab[{i}] is {type(token).__name__}, expected bytes")
            if token in self._id_of:
                raise ValueError(f"ids {self._id_of[token]} and {i} both stand for {token!r}")
            self._id_of[token] = i
        if missing := [b for b in range(256) if bytes([b]) not in self._id_of]:
            raise ValueError(f"vocab lacks {len(missing)} single bytes (e.g. {missing[0]}); "
                             "a byte-level tokenizer needs all 256")
        self._byte_ids = [self._id_of[bytes([b])] for b in range(256)]

        self.merges = [(bytes(a), bytes(b)) for a, b in merges]
        self._rank: dict[Pair, int] = {}
        self._merged: dict[Pair, int] = {}
        for rank, (a, b) in enumerate(self.merges):
            for part in (a, b, a + b):
                if part not in self._id_of:
                    raise ValueError(f"merge {rank} ({a!r}, {b!r}): {part!r} is not in vocab")
            pair = (self._id_of[a], self._id_of[b])
            if pair in self._rank:
                raise ValueError(f"merge {rank} ({a!r}, {b!r}) repeats merge {self._rank[pair]}")
            self._rank[pair] = rank
            self._merged[pair] = self._id_of[a + b]

        self.special_tokens: dict[str, int] = {}
        for token in special_tokens:
            if token.encode() not in self._id_of:
                raise ValueError(f"special token {token!r} is not in vocab")
            self.special_tokens[token] = self._id_of[token.encode()]
        self._pre = PreTokenizer(self.special_tokens)
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    n_vocab = vocab_size  # tiktoken's name, which `Tokenizer` uses

    @property
    def eot_token(self) -> int | None:
        return self.special_tokens.get(ENDOFTEXT)

    def __repr__(self) -> str:
        return (f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
                f"special_tokens={list(self.special_tokens)})")

    @classmethod
    def train(cls, corpus: str | Path | Iterable[str], vocab_size: int,
              special_tokens: Sequence[str] = (), *, progress: bool = False) -> BPETokenizer:
        """Learn merges from `corpus` (a text, a Path to a UTF-8 file, or texts). Ids 0-255 are
        the bytes, then one per merge, then the special tokens: `vocab_size` in all, unless the
        corpus runs out of pairs first (then it stops early, with a warning)."""
        from .bpe_train import train_bpe

        vocab, merges = train_bpe(corpus, vocab_size, special_tokens, progress=progress)
        for token in special_tokens:
            vocab[len(vocab)] = token.encode()
        return cls(vocab, merges, special_tokens)

    def encode(self, text: str, allowed_special: AllowedSpecial = ()) -> list[int]:
        """Text to ids. Special tokens in `text` must be allowed (or it raises ValueError)."""
        ids: list[int] = []
        for segment, special in self._pre.segments(text, self._allowed(allowed_special)):
            ids += [self.special_tokens[segment]] if special else self.encode_ordinary(segment)
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Text to ids, reading special tokens as ordinary text."""
        ids: list[int] = []
        cache = self._cache
        for piece in _SPLIT.findall(text):
            piece_ids = cache.get(piece)
            ids += piece_ids if piece_ids is not None else self._encode_piece(piece)
        return ids

    def encode_iterable(self, chunks: Iterable[str],
                        allowed_special: AllowedSpecial = ()) -> Iterator[int]:
        """Ids for text arriving in chunks (e.g. an open file's lines), in bounded memory;
        exactly the ids of `encode("".join(chunks))`."""
        allowed = self._allowed(allowed_special)
        for block in self._pre.safe_chunks(chunks, allowed):
            yield from self.encode(block, allowed)

    def _allowed(self, allowed_special: AllowedSpecial) -> frozenset[str]:
        if allowed_special == "all":
            return frozenset(self.special_tokens)
        if unknown := set(allowed_special) - set(self.special_tokens):
            raise ValueError(f"allowed_special has tokens this tokenizer lacks: {sorted(unknown)}")
        return frozenset(allowed_special)

    def _encode_piece(self, piece: str) -> list[int]:
        """One uncached pre-token to ids: apply the earliest-learned merge present until none is."""
        ids = [self._byte_ids[b] for b in piece.encode("utf-8")]
        rank_of, never = self._rank.get, len(self._rank)
        while len(ids) > 1:
            ranks = [rank_of(pair, never) for pair in pairwise(ids)]
            best = min(ranks)
            if best == never:
                break
            i = ranks.index(best)
            pair = (ids[i], ids[i + 1])
            ids = merge(ids, pair, self._merged[pair])
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[piece] = ids
        return ids

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Ids to the raw bytes they stand for. Raises ValueError on an unknown id."""
        try:
            return b"".join([self.vocab[operator.index(i)] for i in ids])
        except KeyError as err:
            raise ValueError(f"unknown token id {err.args[0]}: this tokenizer has ids 0 to "
                             f"{self.vocab_size - 1}") from None

    def decode_single_token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token (the same method tiktoken's encodings have)."""
        return self.decode_bytes([token_id])

    def decode(self, ids: Iterable[int]) -> str:
        """Ids to text. Bytes that are not valid UTF-8 (say, half a character) become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def to_printable(self) -> dict:
        """The tokenizer as JSON-ready data, spelled like GPT-2's files (see `printable`)."""
        return {
            "format": FORMAT,
            "special_tokens": list(self.special_tokens),
            "vocab": {printable(token): i for i, token in self.vocab.items()},
            "merges": [f"{printable(a)} {printable(b)}" for a, b in self.merges],
        }

    @classmethod
    def from_printable(
        cls, vocab: Mapping[str, int], merges: Iterable[str], special_tokens: Iterable[str] = ()
    ) -> BPETokenizer:
        """Build from GPT-2-style data: token spelling -> id, and "left right" merge lines."""
        pairs = []
        for n, line in enumerate(merges):
            parts = line.split(" ")
            if len(parts) != 2 or not all(parts):
                raise ValueError(f"merge {n}: expected 'left right', got {line!r}")
            pairs.append((from_printable(parts[0]), from_printable(parts[1])))
        return cls({i: from_printable(token) for token, i in vocab.items()}, pairs, special_tokens)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the tokenizer as readable JSON, atomically (a crash leaves no half file)."""
        text = json.dumps(self.to_printable(), ensure_ascii=False, indent=1)
        return write_atomically(path, lambda tmp: tmp.write_text(text, "utf-8"))

    @classmethod
    def load(cls, path: str | os.PathLike) -> BPETokenizer:
        """Read a file written by `save`. Any other file raises a one-line ValueError."""
        try:
            data = json.loads(Path(path).read_text("utf-8"))
            _check_saved(data)
            return cls.from_printable(data["vocab"], data["merges"], data["special_tokens"])
        except RecursionError:  # json's answer to [[[[...]]]] nested thousands deep
            raise ValueError(f"{path} is not a valid tokenizer file: nested too deeply") from None
        except (ValueError, TypeError) as err:
            raise ValueError(f"{path} is not a valid tokenizer file: {err}") from None


def _check_saved(data: object) -> None:
    """Raise ValueError unless `data` has the shape `to_printable` gives: checked here, so a
    string of special tokens is not read as one token per character."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"format is {found!r}, expected {FORMAT!r}")
    vocab, merges, special = data.get("vocab"), data.get("merges"), data.get("special_tokens")
    if not (isinstance(vocab, dict) and all(type(i) is int for i in vocab.values())):
        raise ValueError('"vocab" must map each token to its id, an integer')
    if not (isinstance(merges, list) and all(isinstance(m, str) for m in merges)):
        raise ValueError('"merges" must be a list of "left right" strings')
    if not (isinstance(special, list) and all(isinstance(t, str) for t in special)):
        raise ValueError('"special_tokens" must be a list of strings, such as ["<|endoftext|>"]')

