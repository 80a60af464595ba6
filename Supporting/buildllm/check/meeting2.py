"""Checks for the Meeting 2 exercises: byte-level BPE, from pair counts to parity with tiktoken.

Each check runs the learner's function on a few cases and compares it with the reference in
`buildllm.tokenizers` (pair_counts, merge, train_bpe, BPETokenizer), or with tiktoken itself
where the case uses GPT-2's vocabulary:

    >>> from buildllm import check
    >>> check.meeting2.pair_counts(get_pair_counts)
    ✓ Exercise 2.1: all 6 cases pass.

No check draws random numbers, so none changes what the rest of a notebook draws.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from functools import cache
from itertools import pairwise

from ..data import fetch, gpt2_encoding
from ..tokenizers import BPETokenizer, bpe, count_words, gpt2_tokenizer, train_bpe, train_bpe_naive
from . import expect_equal, verify

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


@cache
def _gpt2() -> BPETokenizer:
    return gpt2_tokenizer()


@cache
def _small() -> BPETokenizer:
    """A tokenizer with 50 merges learned from the start of The Verdict."""
    return BPETokenizer(*train_bpe(_verdict()[:5_000], 306))


@cache
def _reversed_ids() -> BPETokenizer:
    """`_small()` with its ids numbered backwards: id i is no longer byte i, nor merge i - 256."""
    small = _small()
    last = small.vocab_size - 1
    return BPETokenizer({last - i: t for i, t in small.vocab.items()}, small.merges)


def _first_difference(got: list, want: list) -> int:
    """Where two lists first differ (the shorter one's length if it starts the other)."""
    n = min(len(got), len(want))
    return next((k for k in range(n) if got[k] != want[k]), n)


def _expect_same_list(got, want: list[int], what: str) -> None:
    """Compare two lists of ids; for long ones name the first difference, not every id."""
    if got == want:
        return
    if not isinstance(got, list):
        raise AssertionError(f"{what} should be a list, got {type(got).__name__}")
    if len(want) <= 12:
        raise AssertionError(f"{what} is {got}, expected {want}")
    k = _first_difference(got, want)
    raise AssertionError(
        f"{what} has {len(got)} ids, expected {len(want)}; the first difference is at "
        f"position {k}: {got[k : k + 5]} where {want[k : k + 5]} was expected"
    )


# -- Exercise 2.1 ---------------------------------------------------------------------------


def _expect_same_counts(got, want: dict[tuple[int, int], int]) -> None:
    """Compare pair counts, naming the first pair (in order of appearance) that is off."""
    if not isinstance(got, dict):
        raise AssertionError(f"should return a dict (pair -> count), got {type(got).__name__}")
    for pair, n in want.items():
        if got.get(pair, 0) != n:
            raise AssertionError(f"the count of {pair} is {got.get(pair, 0)}, expected {n}")
    extra = [pair for pair, n in got.items() if n and pair not in want]
    if extra:
        raise AssertionError(
            f"{extra[0]!r} has count {got[extra[0]]}, but it is not a pair of neighbours; "
            "the pairs are (ids[i], ids[i + 1]) for every i"
        )


def pair_counts(fn: Callable[[list[int]], dict[tuple[int, int], int]]) -> None:
    """Exercise 2.1: fn(ids) must count adjacent pairs like buildllm.tokenizers.pair_counts.

    Cases: no ids and one id (no pairs at all), a short list, a run of three equal ids (two
    overlapping pairs), and the UTF-8 bytes of a sentence and of The Verdict.
    """

    def case(ids: list[int]) -> Callable[[], None]:
        return lambda: _expect_same_counts(fn(list(ids)), bpe.pair_counts(ids))

    def verdict() -> None:
        case(list(_verdict().encode()))()

    verify(
        "Exercise 2.1",
        [
            ("an empty list", case([])),
            ("a single id", case([7])),
            ("[1, 2, 3, 1, 2]", case([1, 2, 3, 1, 2])),
            ("[5, 5, 5] holds (5, 5) twice, overlapping", case([5, 5, 5])),
            ("the bytes of 'the cat sat on the mat'", case(list(b"the cat sat on the mat"))),
            ("the bytes of The Verdict", verdict),
        ],
    )


# -- Exercise 2.2 ---------------------------------------------------------------------------


def merge(fn: Callable[[list[int], tuple[int, int], int], list[int]]) -> None:
    """Exercise 2.2: fn(ids, pair, new_id) must equal buildllm.tokenizers.merge, input untouched.

    Cases: the docstring example, runs of equal ids (left to right, no overlaps), a pair at
    the very end, the reversed pair (which must stay), no occurrence at all, ids of several
    digits (which defeats replacing in a string), and a merge across The Verdict's bytes.
    """

    def case(ids: list[int], pair: tuple[int, int], new_id: int) -> Callable[[], None]:
        def test() -> None:
            given = list(ids)
            got = fn(given, pair, new_id)
            if given != ids:
                raise AssertionError(
                    "your function changed the list it was given; build and return a new one"
                )
            _expect_same_list(got, bpe.merge(ids, pair, new_id), f"merge_pair(ids, {pair})")

        return test

    def verdict() -> None:
        case(list(_verdict().encode()), (32, 116), 256)()

    verify(
        "Exercise 2.2",
        [
            ("[1, 2, 3, 1, 2], pair (1, 2) -> 4", case([1, 2, 3, 1, 2], (1, 2), 4)),
            ("[5, 5, 5], pair (5, 5): left to right, no overlap", case([5, 5, 5], (5, 5), 6)),
            ("[5, 5, 5, 5], pair (5, 5)", case([5, 5, 5, 5], (5, 5), 6)),
            ("the pair at the very end", case([3, 4, 1, 2], (1, 2), 9)),
            ("[2, 1, 3, 1, 2]: (2, 1) is not (1, 2)", case([2, 1, 3, 1, 2], (1, 2), 9)),
            ("no occurrence", case([4, 4], (1, 2), 9)),
            ("ids of several digits", case([11, 2, 1, 21, 1, 2], (1, 2), 99)),
            ("(32, 116), b' t', in The Verdict's bytes", verdict),
        ],
    )


# -- Exercises 2.3 and 2.6 ------------------------------------------------------------------


def _counts_before(text: str, merges: Merges) -> Counter[tuple[bytes, bytes]]:
    """Pair counts in `text` (by bytes) once `merges` have been applied inside each pre-token."""
    counts: Counter[tuple[bytes, bytes]] = Counter()
    for word, freq in count_words(text).items():
        tokens = [bytes([b]) for b in word.encode()]
        for a, b in merges:
            i = 0
            while i < len(tokens) - 1:
                if tokens[i] == a and tokens[i + 1] == b:
                    tokens[i : i + 2] = [a + b]
                i += 1
        for pair in pairwise(tokens):
            counts[pair] += freq
    return counts


def _why_not(got: tuple, want: tuple, counts: Counter[tuple[bytes, bytes]]) -> str:
    """Why merge `got` is not `want`, given the pair counts at that point."""
    if counts[got] == counts[want]:
        return (
            f"both pairs have count {counts[want]} then, and of equally frequent pairs the "
            "one with the greatest (left bytes, right bytes) wins"
        )
    if counts[got] == 0:
        return (
            f"{got} does not occur at that point. Pairs are counted inside each pre-token "
            "(GPT2_SPLIT_PATTERN), starting from UTF-8 bytes, and a merge removes the pairs "
            "it breaks up"
        )
    return f"{got} has count {counts[got]} at that point, {want} has {counts[want]}"


def _expect_same_training(result, text: str, vocab_size: int) -> None:
    """Compare (vocab, merges) with train_bpe; explain the first merge that differs."""
    want_vocab, want_merges = train_bpe(text, vocab_size)
    if not (isinstance(result, tuple | list) and len(result) == 2 and isinstance(result[0], dict)):
        raise AssertionError("should return a pair (vocab, merges): a dict and a list")
    vocab, merges = result
    if not isinstance(merges, list | tuple):
        raise AssertionError(f"merges should be a list, got {type(merges).__name__}")
    for k, m in enumerate(merges):
        if not (isinstance(m, tuple | list) and len(m) == 2 and all(type(p) is bytes for p in m)):
            raise AssertionError(
                f"merge {k} is {m!r}; each merge is a pair of bytes, like (b' ', b't'): "
                "vocab[a] and vocab[b] turn a pair of ids into one"
            )
    merges = [tuple(m) for m in merges]
    k = _first_difference(merges, want_merges)
    if k < min(len(merges), len(want_merges)):
        got, want = merges[k], want_merges[k]
        why = _why_not(got, want, _counts_before(text, want_merges[:k]))
        raise AssertionError(f"merge {k} is {got}, expected {want}: {why}")
    if len(merges) != len(want_merges):
        raise AssertionError(
            f"you learned {len(merges)} merges, expected {len(want_merges)}: vocab_size counts "
            "the 256 single bytes too"
        )
    for i, token in want_vocab.items():
        if vocab.get(i) != token:
            raise AssertionError(f"vocab[{i}] is {vocab.get(i)!r}, expected {token!r}")
    if len(vocab) != len(want_vocab):
        raise AssertionError(f"vocab has {len(vocab)} entries, expected {len(want_vocab)}")


_TRAINING_CASES = [
    ("'low lower lowest', 2 merges", "low lower lowest", 258),
    ("'aaabdaaabac', 3 merges", "aaabdaaabac", 259),
    ("'az abc': every pair occurs once, so ties decide", "az abc", 260),
    ("'naïve café, 日本語 日本': bytes, not characters", "naïve café, 日本語 日本", 264),
    ("vocab_size 256: no merges at all", "hello world", 256),
]


def _training_case(fn: Callable, text: str, vocab_size: int) -> Callable[[], None]:
    return lambda: _expect_same_training(fn(text, vocab_size), text, vocab_size)


def train(fn: Callable[[str, int], tuple[Vocab, Merges]]) -> None:
    """Exercise 2.3: fn(text, vocab_size) must return the (vocab, merges) of train_bpe.

    Cases: two tiny texts to check by hand, a text where every pair ties, non-ASCII text (BPE
    starts from bytes), no merges at all, and 50 merges on the start of The Verdict. At the
    first wrong merge it says why: a tie broken the wrong way, a pair that crosses pre-tokens,
    or a pair that is not the most frequent.
    """

    def verdict() -> None:
        _training_case(fn, _verdict()[:5_000], 306)()

    cases = [(label, _training_case(fn, text, n)) for label, text, n in _TRAINING_CASES]
    verify("Exercise 2.3", [*cases, ("The Verdict's first 5,000 characters, 50 merges", verdict)])


def fast_train(fn: Callable[[str, int], tuple[Vocab, Merges]], speedup: float = 3.0) -> None:
    """Exercise 2.6: like Exercise 2.3, and at least `speedup` times faster than the plain way.

    Cases: the tiny texts of Exercise 2.3, then 500 merges on The Verdict, which must equal
    train_bpe's and take at most 1/speedup of the time train_bpe_naive takes here and now.
    A ratio of two timings on the same machine does not depend on how fast the machine is.
    A time just over the limit is measured up to twice more before the check gives up.
    """
    timings: list[float] = []

    def verdict() -> None:
        start = time.perf_counter()
        result = fn(_verdict(), 756)
        timings.append(time.perf_counter() - start)
        _expect_same_training(result, _verdict(), 756)

    def fast_enough() -> None:
        start = time.perf_counter()
        train_bpe_naive(_verdict(), 756)
        naive = time.perf_counter() - start
        # A time just over the limit may be a pause in the background: measure it again.
        while naive < min(timings) * speedup < 2 * naive and len(timings) < 3:
            start = time.perf_counter()
            fn(_verdict(), 756)
            timings.append(time.perf_counter() - start)
        if min(timings) * speedup > naive:
            raise AssertionError(
                f"your trainer took {min(timings):.2f} s, train_bpe_naive {naive:.2f} s; a fast "
                f"one takes at most {naive / speedup:.2f} s. Recount pairs only in the words "
                "that contain the merged pair, and do not recount the rest"
            )

    cases = [(label, _training_case(fn, text, n)) for label, text, n in _TRAINING_CASES[:3]]
    verify(
        "Exercise 2.6",
        [
            *cases,
            ("The Verdict, 500 merges", verdict),
            (f"at least {speedup:g}x faster than train_bpe_naive", fast_enough),
        ],
    )


# -- Exercise 2.4 ---------------------------------------------------------------------------


def decode(fn: Callable[[list[int], Vocab], str]) -> None:
    """Exercise 2.4: fn(ids, vocab) must equal BPETokenizer.decode, broken UTF-8 included.

    Cases: no ids, a sentence in a small trained vocabulary, GPT-2 ids whose first 256 are not
    the byte values, characters whose bytes are spread over several tokens, and an emoji cut
    short (its bytes are not valid UTF-8, and must become U+FFFD, not an error).
    """

    def case(tokenizer: Callable[[], BPETokenizer], text: str, drop_last: int = 0):
        def test() -> None:
            tok = tokenizer()
            ids = tok.encode(text)
            ids = ids[: len(ids) - drop_last]
            want = tok.decode(ids)
            try:
                got = fn(list(ids), dict(tok.vocab))
            except UnicodeDecodeError as err:
                raise AssertionError(
                    f"decoding {ids} raised UnicodeDecodeError ({err.reason}): decode with "
                    "errors='replace', so bytes that are not valid UTF-8 become '\\ufffd'"
                ) from None
            if isinstance(got, str) and got != want and "\ufffd" in got and "\ufffd" not in want:
                raise AssertionError(
                    f"decoding {ids} gave {got!r}, expected {want!r}: join all the bytes "
                    "first and decode once, since one character's bytes can span tokens"
                )
            expect_equal(got, want, f"decoding {ids}")

        return test

    verify(
        "Exercise 2.4",
        [
            ("no ids", case(_small, "")),
            ("a sentence, in a small trained vocabulary", case(_small, "I had always thought")),
            ("GPT-2: ids 0-255 are not the byte values", case(_gpt2, "Hello, world")),
            ("GPT-2: accents, CJK and emoji", case(_gpt2, "naïve café, 日本語 👋🏽")),
            ("GPT-2: an emoji cut short", case(_gpt2, "hi 👋", drop_last=1)),
        ],
    )


# -- Exercise 2.5 ---------------------------------------------------------------------------


def _expect_same_ids(got, want: list[int], vocab: Vocab, who: str) -> None:
    """Compare ids; at the first difference show both sides as tokens and say what it means."""
    if got == want:
        return
    if not isinstance(got, list):
        raise AssertionError(f"should return a list of ids, got {type(got).__name__}")
    k = _first_difference(got, want)
    yours, theirs = got[k : k + 4], want[k : k + 4]
    spelled = b"".join(vocab.get(i, b"\x00?") for i in got)
    if spelled != b"".join(vocab[i] for i in want):
        why = (
            "your ids, looked up in vocab, do not spell the text: find each id by looking "
            "its bytes up in vocab; never compute it from a byte's value or a merge's position"
        )
    else:
        why = (
            "your ids spell the text but cut it differently: split it with GPT2_SPLIT_PATTERN, "
            "then within each piece apply the merge learned earliest first"
        )
    raise AssertionError(
        f"the ids differ from position {k}: you have {yours} "
        f"{[vocab.get(i) for i in yours]}, {who} has {theirs} {[vocab[i] for i in theirs]}; "
        f"{why}"
    )


def encode(fn: Callable[[str, Vocab, Merges], list[int]]) -> None:
    """Exercise 2.5: fn(text, vocab, merges) must give BPETokenizer's ids, then tiktoken's.

    Cases: a sentence in a small trained vocabulary; two merges where the earlier-learned one
    must win although the later occurs more often; the small vocabulary with its ids numbered
    backwards (so ids are found in vocab, not computed); then GPT-2's vocabulary against
    tiktoken on "Hello, world", on a stress text, and on the first 3,000 characters of The
    Verdict.
    """

    def case(tokenizer: Callable[[], BPETokenizer], text: str):
        def test() -> None:
            tok = tokenizer()
            got = fn(text, dict(tok.vocab), list(tok.merges))
            _expect_same_ids(got, tok.encode_ordinary(text), tok.vocab, "the reference")

        return test

    def versus_tiktoken(text: Callable[[], str] | str):
        def test() -> None:
            tok, sample = _gpt2(), text if isinstance(text, str) else text()
            got = fn(sample, dict(tok.vocab), list(tok.merges))
            _expect_same_ids(got, gpt2_encoding().encode_ordinary(sample), tok.vocab, "tiktoken")

        return test

    def verdict() -> str:
        return _verdict()[:3_000]

    def earliest_first() -> BPETokenizer:
        vocab = {i: bytes([i]) for i in range(256)} | {256: b"ba", 257: b"ab"}
        return BPETokenizer(vocab, [(b"b", b"a"), (b"a", b"b")])

    verify(
        "Exercise 2.5",
        [
            ("a sentence, in a small trained vocabulary", case(_small, "I had always thought")),
            ("'abab' with merges (b, a) then (a, b)", case(earliest_first, "abab")),
            (
                "the small vocabulary, ids numbered backwards",
                case(_reversed_ids, "I had always thought"),
            ),
            ("GPT-2 and tiktoken: 'Hello, world'", versus_tiktoken("Hello, world")),
            ("GPT-2 and tiktoken: a stress text", versus_tiktoken(_STRESS)),
            ("GPT-2 and tiktoken: 3,000 characters of The Verdict", versus_tiktoken(verdict)),
        ],
    )
