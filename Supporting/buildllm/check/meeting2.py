"""Checks for the Meeting 2 exercises: byte-level BPE, from pair counts to parity with
tiktoken, compared with `buildllm.tokenizers` (and tiktoken for GPT-2's vocabulary)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from functools import cache

from ..data import fetch, gpt2_encoding
from ..tokenizers import BPETokenizer, bpe, count_words, gpt2_tokenizer, train_bpe, train_bpe_naive
from . import expect_equal, verify
from ._support import cases, fail_if

__all__ = ["decode", "encode", "fast_train", "merge", "pair_counts", "train"]

Vocab = dict[int, bytes]
Merges = list[tuple[bytes, bytes]]

# A text with everything GPT-2's pre-tokenizer treats specially: contractions (including
# upper-case ones, which it does not treat as contractions), digits, accents, CJK, emoji with
# a skin-tone modifier, tabs, runs of spaces, a Windows line end and trailing whitespace.
_STRESS = (
    "Hello, world! It's 2024: naïve café, Œuvre, 日本語のテキスト, emoji 👋🏽🎉.\n\n"
    "\tIndented    spaces   \r\n she'll we've they're I'm you'd DON'T O'Sullivan 3.14159 $100\n  "
)


@cache
def _verdict() -> str:
    return fetch("the-verdict.txt").read_text(encoding="utf-8")


_gpt2 = cache(gpt2_tokenizer)  # GPT-2's tokenizer, loaded on first use and kept


@cache
def _small() -> BPETokenizer:
    """A tokenizer with 50 merges learned from the start of The Verdict."""
    return BPETokenizer(*train_bpe(_verdict()[:5_000], 306))


def _reversed_ids() -> BPETokenizer:
    """`_small()` with its ids numbered backwards: id i is no longer byte i, nor merge i - 256."""
    small, last = _small(), _small().vocab_size - 1
    return BPETokenizer({last - i: t for i, t in small.vocab.items()}, small.merges)


def _earliest_first() -> BPETokenizer:
    """Merges (b, a) then (a, b): in 'abab' the later one occurs more often, the earlier wins."""
    vocab = {i: bytes([i]) for i in range(256)} | {256: b"ba", 257: b"ab"}
    return BPETokenizer(vocab, [(b"b", b"a"), (b"a", b"b")])


def _first_difference(got: list, want: list) -> int:
    """Where two lists first differ (the shorter one's length if it starts the other)."""
    n = min(len(got), len(want))
    return next((k for k in range(n) if got[k] != want[k]), n)


def _counts(fn: Callable, ids: list[int]) -> None:
    """Compare pair counts, naming the first pair (in order of appearance) that is off."""
    got, want = fn(list(ids)), bpe.pair_counts(ids)
    fail_if(not isinstance(got, dict),
            f"should return a dict (pair -> count), got {type(got).__name__}")
    for pair, n in want.items():
        fail_if(got.get(pair, 0) != n, f"the count of {pair} is {got.get(pair, 0)}, expected {n}")
    for pair, n in got.items():
        fail_if(n and pair not in want, f"{pair!r} has count {n}, but it is not a pair of "
                "neighbours; the pairs are (ids[i], ids[i + 1]) for every i")


def pair_counts(fn: Callable[[list[int]], dict[tuple[int, int], int]]) -> None:
    """Exercise 2.1: fn(ids) must count adjacent pairs like buildllm.tokenizers.pair_counts."""
    verify("Exercise 2.1", cases(_counts, fn, {
        "an empty list": [], "a single id": [7], "[1, 2, 3, 1, 2]": [1, 2, 3, 1, 2],
        "[5, 5, 5] holds (5, 5) twice, overlapping": [5, 5, 5],
        "the bytes of 'the cat sat on the mat'": list(b"the cat sat on the mat"),
        "the bytes of The Verdict": list(_verdict().encode()),
    }))


def _merge(fn: Callable, ids: list[int], pair: tuple[int, int], new_id: int) -> None:
    given, what = list(ids), f"merge_pair(ids, {pair})"
    got, want = fn(given, pair, new_id), bpe.merge(ids, pair, new_id)
    fail_if(given != ids, "your function changed the list it was given; build and return a new one")
    if got == want:
        return
    fail_if(not isinstance(got, list), f"{what} should be a list, got {type(got).__name__}")
    fail_if(len(want) <= 12, f"{what} is {got}, expected {want}")
    k = _first_difference(got, want)  # a long list: name the first difference, not every id
    raise AssertionError(f"{what} has {len(got)} ids, expected {len(want)}; the first difference "
                         f"is at position {k}: {got[k : k + 5]} where {want[k : k + 5]} was "
                         "expected")


def merge(fn: Callable[[list[int], tuple[int, int], int], list[int]]) -> None:
    """Exercise 2.2: fn(ids, pair, new_id) must equal buildllm.tokenizers.merge, input untouched."""
    verify("Exercise 2.2", cases(_merge, fn, {  # label: (ids, pair, new_id)
        "[1, 2, 3, 1, 2], pair (1, 2) -> 4": ([1, 2, 3, 1, 2], (1, 2), 4),
        "[5, 5, 5], pair (5, 5): left to right, no overlap": ([5, 5, 5], (5, 5), 6),
        "[5, 5, 5, 5], pair (5, 5)": ([5, 5, 5, 5], (5, 5), 6),
        "the pair at the very end": ([3, 4, 1, 2], (1, 2), 9),
        "[2, 1, 3, 1, 2]: (2, 1) is not (1, 2)": ([2, 1, 3, 1, 2], (1, 2), 9),
        "no occurrence": ([4, 4], (1, 2), 9),
        "ids of several digits": ([11, 2, 1, 21, 1, 2], (1, 2), 99),
        "(32, 116), b' t', in The Verdict's bytes": (list(_verdict().encode()), (32, 116), 256),
    }))


def _why_not(got: tuple, want: tuple, text: str, k: int) -> str:
    """Why merge k is not `want` but `got`, from the pair counts after train_bpe's first k."""
    tok, by_ids = BPETokenizer(*train_bpe(text, 256 + k)), {}
    for word, freq in count_words(text).items():  # pairs are counted within pre-tokens
        bpe.pair_counts(tok.encode_ordinary(word), by_ids, freq)
    counts = Counter({(tok.vocab[a], tok.vocab[b]): n for (a, b), n in by_ids.items()})
    if counts[got] == counts[want]:
        return (f"both pairs have count {counts[want]} then, and of equally frequent pairs the "
                "one with the greatest (left bytes, right bytes) wins")
    if counts[got] == 0:
        return (f"{got} does not occur at that point. Pairs are counted inside each pre-token "
                "(GPT2_SPLIT_PATTERN), starting from UTF-8 bytes, and a merge removes the pairs "
                "it breaks up")
    return f"{got} has count {counts[got]} at that point, {want} has {counts[want]}"


def _trains(fn: Callable, text: str, vocab_size: int, timings: list | None = None) -> None:
    start = time.perf_counter()
    result = fn(text, vocab_size)
    if timings is not None:
        timings.append(time.perf_counter() - start)
    want_vocab, want_merges = train_bpe(text, vocab_size)
    fail_if(not (isinstance(result, tuple | list) and len(result) == 2
                 and isinstance(result[0], dict)),
            "should return a pair (vocab, merges): a dict and a list")
    vocab, merges = result
    fail_if(not isinstance(merges, list | tuple),
            f"merges should be a list, got {type(merges).__name__}")
    for k, m in enumerate(merges):
        fail_if(not (isinstance(m, tuple | list) and tuple(map(type, m)) == (bytes, bytes)),
                f"merge {k} is {m!r}; each merge is a pair of bytes, like (b' ', b't'): vocab[a] "
                "and vocab[b] turn a pair of ids into one")
    merges = [tuple(m) for m in merges]
    if (k := _first_difference(merges, want_merges)) < min(len(merges), len(want_merges)):
        why = _why_not(merges[k], want_merges[k], text, k)
        raise AssertionError(f"merge {k} is {merges[k]}, expected {want_merges[k]}: {why}")
    fail_if(len(merges) != len(want_merges), f"you learned {len(merges)} merges, expected "
            f"{len(want_merges)}: vocab_size counts the 256 single bytes too")
    for i, token in want_vocab.items():
        fail_if(vocab.get(i) != token, f"vocab[{i}] is {vocab.get(i)!r}, expected {token!r}")
    fail_if(len(vocab) != len(want_vocab),
            f"vocab has {len(vocab)} entries, expected {len(want_vocab)}")


_TRAINING = {  # label: (text, vocab_size)
    "'low lower lowest', 2 merges": ("low lower lowest", 258),
    "'aaabdaaabac', 3 merges": ("aaabdaaabac", 259),
    "'az abc': every pair occurs once, so ties decide": ("az abc", 260),
    "'naïve café, 日本語 日本': bytes, not characters": ("naïve café, 日本語 日本", 264),
    "vocab_size 256: no merges at all": ("hello world", 256),
}


def train(fn: Callable[[str, int], tuple[Vocab, Merges]]) -> None:
    """Exercise 2.3: fn(text, vocab_size) must return the (vocab, merges) of train_bpe."""
    verify("Exercise 2.3", cases(_trains, fn, _TRAINING | {
        "The Verdict's first 5,000 characters, 50 merges": (_verdict()[:5_000], 306)}))


def fast_train(fn: Callable[[str, int], tuple[Vocab, Merges]], speedup: float = 3.0) -> None:
    """Exercise 2.6: like Exercise 2.3, and at least `speedup` times faster than the plain way.
    The limit is a ratio to train_bpe_naive's time here and now, so it does not depend on the
    machine; a time just over it may be a pause in the background, and is measured again."""
    timings: list[float] = []

    def fast_enough() -> None:
        start = time.perf_counter()
        train_bpe_naive(_verdict(), 756)
        naive = time.perf_counter() - start
        while naive < min(timings) * speedup < 2 * naive and len(timings) < 3:
            start = time.perf_counter()
            fn(_verdict(), 756)
            timings.append(time.perf_counter() - start)
        fail_if(min(timings) * speedup > naive, f"your trainer took {min(timings):.2f} s, "
                f"train_bpe_naive {naive:.2f} s; a fast one takes at most {naive / speedup:.2f} "
                "s. Recount pairs only in the words that contain the merged pair, and do not "
                "recount the rest")

    table = dict(list(_TRAINING.items())[:3])
    table["The Verdict, 500 merges"] = (_verdict(), 756, timings)
    verify("Exercise 2.6", [*cases(_trains, fn, table),
                            (f"at least {speedup:g}x faster than train_bpe_naive", fast_enough)])


def _decodes(fn: Callable, tokenizer: Callable[[], BPETokenizer], text: str, drop_last=0) -> None:
    tok = tokenizer()
    ids = tok.encode(text)[: -drop_last or None]
    want = tok.decode(ids)
    try:
        got = fn(list(ids), dict(tok.vocab))
    except UnicodeDecodeError as err:
        raise AssertionError(f"decoding {ids} raised UnicodeDecodeError ({err.reason}): decode "
                             "with errors='replace', so bytes that are not valid UTF-8 become "
                             "'\\ufffd'") from None
    fail_if(isinstance(got, str) and got != want and "\ufffd" in got and "\ufffd" not in want,
            f"decoding {ids} gave {got!r}, expected {want!r}: join all the bytes first and "
            "decode once, since one character's bytes can span tokens")
    expect_equal(got, want, f"decoding {ids}")


def decode(fn: Callable[[list[int], Vocab], str]) -> None:
    """Exercise 2.4: fn(ids, vocab) must equal BPETokenizer.decode, broken UTF-8 included."""
    verify("Exercise 2.4", cases(_decodes, fn, {  # label: (tokenizer, text, ids cut off)
        "no ids": (_small, ""),
        "a sentence, in a small trained vocabulary": (_small, "I had always thought"),
        "GPT-2: ids 0-255 are not the byte values": (_gpt2, "Hello, world"),
        "GPT-2: accents, CJK and emoji": (_gpt2, "naïve café, 日本語 👋🏽"),
        "GPT-2: an emoji cut short": (_gpt2, "hi 👋", 1),
    }))


def _encodes(fn: Callable, tokenizer: Callable[[], BPETokenizer], text: str, tiktoken=False):
    tok = tokenizer()
    got = fn(text, dict(tok.vocab), list(tok.merges))
    want = gpt2_encoding().encode_ordinary(text) if tiktoken else tok.encode_ordinary(text)
    if got == want:
        return
    fail_if(not isinstance(got, list), f"should return a list of ids, got {type(got).__name__}")
    vocab, k = tok.vocab, _first_difference(got, want)
    yours, theirs = got[k : k + 4], want[k : k + 4]
    spelled = b"".join(vocab.get(i, b"\x00?") for i in got) == b"".join(vocab[i] for i in want)
    why = ("your ids spell the text but cut it differently: split it with GPT2_SPLIT_PATTERN, "
           "then within each piece apply the merge learned earliest first" if spelled else
           "your ids, looked up in vocab, do not spell the text: find each id by looking its "
           "bytes up in vocab; never compute it from a byte's value or a merge's position")
    raise AssertionError(
        f"the ids differ from position {k}: you have {yours} {[vocab.get(i) for i in yours]}, "
        f"{'tiktoken' if tiktoken else 'the reference'} has {theirs} "
        f"{[vocab[i] for i in theirs]}; {why}")


def encode(fn: Callable[[str, Vocab, Merges], list[int]]) -> None:
    """Exercise 2.5: fn(text, vocab, merges) must give BPETokenizer's ids, then tiktoken's.
    Ids numbered backwards tell ids looked up in vocab from ids computed from bytes or ranks."""
    verify("Exercise 2.5", cases(_encodes, fn, {  # label: (tokenizer, text, against tiktoken)
        "a sentence, in a small trained vocabulary": (_small, "I had always thought"),
        "'abab' with merges (b, a) then (a, b)": (_earliest_first, "abab"),
        "the small vocabulary, ids numbered backwards": (_reversed_ids, "I had always thought"),
        "GPT-2 and tiktoken: 'Hello, world'": (_gpt2, "Hello, world", True),
        "GPT-2 and tiktoken: a stress text": (_gpt2, _STRESS, True),
        "GPT-2 and tiktoken: 3,000 characters of The Verdict": (_gpt2, _verdict()[:3_000], True),
    }))
