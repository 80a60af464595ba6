"""Scoring generated answers against reference answers automatically (Meeting 6).

An instruction-tuned model writes free text, so "accuracy" does not apply. Two cheap scores
compare words instead:

- `rouge_l`: ROUGE-L (Lin, 2004), the F-measure of the longest common subsequence of words.
  It rewards the reference's words appearing in the same order, with gaps allowed.
- `token_f1`: the bag-of-words F1 of the SQuAD benchmark (Rajpurkar et al., 2016): word
  overlap regardless of order, with "a", "an" and "the" left out.

Both are 0 for no overlap and 1 for the same words. Neither knows that "big" means "large",
which is why notebooks also ask a larger model to judge (`buildllm.judge`).

    >>> round(rouge_l("The cat sat on the mat.", "the cat is on the mat"), 3)
    0.833
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence

__all__ = ["lcs_length", "mean_score", "rouge_l", "token_f1", "words"]

_WORD = re.compile(r"[^\W_]+")  # runs of letters and digits, in any script
_ARTICLES = {"a", "an", "the"}


def words(text: str) -> list[str]:
    """Lowercase word tokens: runs of letters and digits; punctuation and spaces split them.

    >>> words("Don't panic, it's 3.5!")
    ['don', 't', 'panic', 'it', 's', '3', '5']

    For English text this is the tokenizer of Google's `rouge_score` package without
    stemming; unlike it, accented and non-Latin letters are kept ("café" stays "café").
    """
    if not isinstance(text, str):
        raise TypeError(f"expected a str, got {type(text).__name__}: {text!r}")
    return _WORD.findall(text.lower())


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence of `a` and `b` (in order, gaps allowed).

    >>> lcs_length("abcde", "ace")
    3

    Dynamic programming over one row at a time: O(len(a) · len(b)) time, O(len(b)) memory.
    """
    row = [0] * (len(b) + 1)  # row[j]: LCS of the prefix of a seen so far and b[:j]
    for x in a:
        diagonal = 0  # the previous row's row[j - 1]
        for j, y in enumerate(b, start=1):
            diagonal, row[j] = row[j], diagonal + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def _f1(overlap: int, n_candidate: int, n_reference: int) -> float:
    """Harmonic mean of precision (overlap / candidate) and recall (overlap / reference)."""
    if n_candidate == 0 or n_reference == 0:
        return float(n_candidate == n_reference)  # two empty answers agree; one empty does not
    if overlap == 0:
        return 0.0
    precision, recall = overlap / n_candidate, overlap / n_reference
    return 2 * precision * recall / (precision + recall)


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 between a generated answer and the reference answer, from 0 to 1.

    >>> rouge_l("a b c d", "a c e")  # LCS "a c": precision 2/4, recall 2/3
    0.5714285714285715

    Two empty answers score 1 and one empty answer scores 0 (`rouge_score` gives 0 to both).
    """
    cand, ref = words(candidate), words(reference)
    return _f1(lcs_length(cand, ref), len(cand), len(ref))


def token_f1(candidate: str, reference: str) -> float:
    """SQuAD's token F1: the overlap of the two bags of words, ignoring order and articles.

    >>> token_f1("The answer is Paris", "Paris")  # overlap 1: precision 1/3, recall 1/1
    0.5
    """
    cand = Counter(w for w in words(candidate) if w not in _ARTICLES)
    ref = Counter(w for w in words(reference) if w not in _ARTICLES)
    overlap = sum((cand & ref).values())  # each word counts as often as it is in both
    return _f1(overlap, sum(cand.values()), sum(ref.values()))


def mean_score(metric: Callable[[str, str], float], candidates: Sequence[str],
               references: Sequence[str]) -> float:
    """The average of `metric(candidate, reference)` over paired lists.

    >>> mean_score(rouge_l, ["yes", "no"], ["yes", "yes"])
    0.5
    """
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} references: "
                         "they must pair up one to one")
    if not candidates:
        raise ValueError("no candidates to score: the lists are empty")
    return sum(metric(c, r) for c, r in zip(candidates, references, strict=True)) / len(candidates)
