"""Learning BPE merges from a corpus, twice: the plain way and the fast way (Meeting 2).

Both trainers first count pre-tokens ("words"): BPE never merges across them, so a text of a
million words is only some tens of thousands of distinct words, each with a frequency.

`train_bpe_naive` then recounts every pair in every word before each merge. It is the
algorithm in five lines, and the reference the fast trainer is tested against.

`train_bpe` counts pairs once. A merge can only change the pairs inside words that contain
the merged pair, so it keeps, for every pair, the words it occurs in, and after a merge
adjusts the counts of just those words. A heap finds the most frequent pair; entries whose
count has since changed are skipped when they surface ("lazy deletion").

Both break ties the same way: of equally frequent pairs, the one whose (left bytes, right
bytes) is greatest wins. So the same corpus gives the same merges on every machine.
"""

from __future__ import annotations

import codecs
import heapq
import os
import sys
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from itertools import pairwise
from pathlib import Path

from ..progress import tqdm
from .bpe import _SPLIT, PreTokenizer, merge, pair_counts

__all__ = ["count_words", "read_utf8", "train_bpe", "train_bpe_naive"]

Vocab = dict[int, bytes]
Merges = list[tuple[bytes, bytes]]
Corpus = str | os.PathLike | Iterable[str]  # a text, a UTF-8 file, or texts


def read_utf8(path: str | os.PathLike, block_size: int = 1 << 20) -> Iterator[str]:
    """Yield a UTF-8 file's text in blocks; a byte that is not UTF-8 raises a clear ValueError."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0  # bytes read so far, to say where a bad byte is
    with open(path, "rb") as f:
        while True:
            block = f.read(block_size)
            pending = len(decoder.getstate()[0])  # bytes of a character begun in the last block
            try:
                text = decoder.decode(block, final=not block)
            except UnicodeDecodeError as err:
                raise ValueError(
                    f"{path} is not UTF-8 text: {err.reason} at byte "
                    f"{offset - pending + err.start}. Convert it first, e.g. with "
                    "open(path, encoding='latin-1').read()."
                ) from None
            yield text
            if not block:
                return
            offset += len(block)


def count_words(corpus: Corpus, special_tokens: Sequence[str] = ()) -> Counter[str]:
    """Pre-token frequencies of `corpus`, with special tokens cut out (never merged).

    A `str` is the text itself; a Path is a file to read; anything else is an iterable of texts.
    """
    if isinstance(corpus, str):
        chunks: Iterable[str] = [corpus]
    elif isinstance(corpus, os.PathLike):
        chunks = read_utf8(corpus)
    else:
        chunks = corpus
    pre, counts = PreTokenizer(special_tokens), Counter()
    for block in pre.safe_chunks(chunks, allowed=special_tokens):
        for segment, special in pre.segments(block, special_tokens):
            if not special:
                counts.update(_SPLIT.findall(segment))
    return counts


def _prepare(corpus: Corpus, vocab_size: int, special_tokens: Sequence[str]):
    """Check the arguments; return the words (as byte lists), their counts, the merge budget."""
    if len(set(special_tokens)) != len(special_tokens) or "" in special_tokens:
        raise ValueError(f"special tokens must be distinct and non-empty: {list(special_tokens)}")
    n_merges = vocab_size - 256 - len(special_tokens)
    if n_merges < 0:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: the 256 bytes and {len(special_tokens)} "
            f"special tokens alone need {256 + len(special_tokens)}"
        )
    words = count_words(corpus, special_tokens)
    if not words:
        raise ValueError("the corpus is empty (apart from any special tokens): nothing to learn")
    return [list(word.encode()) for word in words], list(words.values()), n_merges


def _stop_early(done: int, wanted: int) -> None:
    """Warn that the corpus ran out of pairs, pointing at the learner's line, not at ours."""
    package = str(Path(__file__).parents[1])
    frame, level = sys._getframe(1), 2  # stacklevel 1 is this function, 2 its caller
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    warnings.warn(f"the corpus has no pairs left to merge after {done} of {wanted} merges, so "
                  f"the vocabulary is {wanted - done} tokens smaller than asked; give it more text",
                  stacklevel=level)


def train_bpe_naive(corpus: Corpus, vocab_size: int,
                    special_tokens: Sequence[str] = ()) -> tuple[Vocab, Merges]:
    """Learn merges by recounting every pair of every word before each merge. Slow; clear."""
    words, freqs, n_merges = _prepare(corpus, vocab_size, special_tokens)
    vocab = {i: bytes([i]) for i in range(256)}
    merges = []
    for new_id in range(256, 256 + n_merges):
        counts: dict[tuple[int, int], int] = {}
        for word, freq in zip(words, freqs, strict=True):
            pair_counts(word, counts, freq)
        if not counts:
            _stop_early(len(merges), n_merges)
            break
        a, b = max(counts, key=lambda p: (counts[p], vocab[p[0]], vocab[p[1]]))
        words = [merge(word, (a, b), new_id) for word in words]
        vocab[new_id] = vocab[a] + vocab[b]
        merges.append((vocab[a], vocab[b]))
    return vocab, merges


class _Greatest:
    """Heap key that puts the greatest (left bytes, right bytes) first: the tie-break."""

    __slots__ = ("key",)

    def __init__(self, key: tuple[bytes, bytes]):
        self.key = key

    def __lt__(self, other: _Greatest) -> bool:
        return self.key > other.key


def train_bpe(corpus: Corpus, vocab_size: int, special_tokens: Sequence[str] = (), *,
              progress: bool = False) -> tuple[Vocab, Merges]:
    """Learn the same merges as `train_bpe_naive`, updating pair counts incrementally."""
    words, freqs, n_merges = _prepare(corpus, vocab_size, special_tokens)
    vocab = {i: bytes([i]) for i in range(256)}
    counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)  # pair -> words that had it
    for w, (word, freq) in enumerate(zip(words, freqs, strict=True)):
        for pair in pairwise(word):
            counts[pair] += freq
            where[pair].add(w)
    heap = [(-c, _Greatest((vocab[a], vocab[b])), (a, b)) for (a, b), c in counts.items()]
    heapq.heapify(heap)

    merges = []
    for new_id in tqdm(range(256, 256 + n_merges), desc="merges", disable=not progress):
        while heap and counts.get(heap[0][2]) != -heap[0][0]:
            heapq.heappop(heap)  # stale: that pair's count has changed since it was pushed
        if not heap:
            _stop_early(len(merges), n_merges)
            break
        pair = heapq.heappop(heap)[2]
        a, b = pair
        vocab[new_id] = vocab[a] + vocab[b]
        merges.append((vocab[a], vocab[b]))

        delta: dict[tuple[int, int], int] = defaultdict(int)
        for w in where.pop(pair):
            word, freq = words[w], freqs[w]
            merged = merge(word, pair, new_id)
            if len(merged) == len(word):
                continue  # this word lost the pair in an earlier merge
            for p in pairwise(word):
                delta[p] -= freq
            for p in pairwise(merged):
                delta[p] += freq
                where[p].add(w)
            words[w] = merged
        for p, d in delta.items():
            if d == 0:
                continue
            counts[p] += d
            if counts[p] > 0:
                heapq.heappush(heap, (-counts[p], _Greatest((vocab[p[0]], vocab[p[1]])), p))
            else:
                del counts[p]
    return vocab, merges
