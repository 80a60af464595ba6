"""buildllm.metrics: ROUGE-L and token F1, by hand and against Google's rouge_score package.

Nothing here touches torch, so the one_thread fixture is not needed.
"""

import itertools
import json
import random

import pytest
from rouge_score import rouge_scorer

from buildllm.data import fetch
from buildllm.metrics import lcs_length, mean_score, rouge_l, token_f1, words


def test_words_lowercases_and_splits_on_punctuation():
    assert words("Don't panic, it's 3.5!") == ["don", "t", "panic", "it", "s", "3", "5"]
    assert words("snake_case\tand\nNEWLINES") == ["snake", "case", "and", "newlines"]
    assert words("Café au lait") == ["café", "au", "lait"]
    assert words(" ... ") == []


def test_words_refuses_what_is_not_text():
    with pytest.raises(TypeError, match="expected a str, got list"):
        words(["a", "b"])


@pytest.mark.parametrize(("a", "b", "length"), [
    ("abcde", "ace", 3), ("ace", "abcde", 3), ("abc", "xyz", 0), ("", "abc", 0),
    ("aaaa", "aa", 2), ("ABCBDAB", "BDCABA", 4),  # the textbook example (CLRS 15.4)
])
def test_lcs_length_by_hand(a, b, length):
    assert lcs_length(a, b) == length


def lcs_by_brute_force(a: list, b: list) -> int:
    """The longest subsequence of a that is also one of b, trying all of a's subsequences."""
    def is_subsequence(sub, seq):
        it = iter(seq)
        return all(x in it for x in sub)

    return max(k for k in range(len(a) + 1)
               for sub in itertools.combinations(a, k) if is_subsequence(sub, b))


def test_lcs_length_matches_brute_force_on_random_sequences():
    rng = random.Random(0)
    for _ in range(200):
        a = rng.choices("abc", k=rng.randint(0, 8))
        b = rng.choices("abc", k=rng.randint(0, 8))
        assert lcs_length(a, b) == lcs_by_brute_force(a, b), (a, b)


def test_rouge_l_by_hand():
    # LCS "the cat on the mat": 5 of 6 words each way, so precision = recall = F1 = 5/6
    assert rouge_l("The cat sat on the mat.", "the cat is on the mat") == pytest.approx(5 / 6)
    # LCS "a c": precision 2/4, recall 2/3, F1 = 2·(1/2)(2/3) / (1/2 + 2/3) = 4/7
    assert rouge_l("a b c d", "a c e") == pytest.approx(4 / 7)
    # same words, scrambled: the LCS is 3 of 6 (e.g. "the cat the"), so 1/2
    assert rouge_l("mat the on sat cat the", "the cat sat on the mat") == pytest.approx(0.5)
    assert rouge_l("HELLO, World!", "hello world") == 1.0
    assert rouge_l("nothing shared", "at all") == 0.0


def test_rouge_l_is_symmetric():
    # F1 swaps precision and recall when the arguments swap, and stays the same
    assert rouge_l("a b c d", "a c e") == rouge_l("a c e", "a b c d")


def test_rouge_l_on_empty_answers():
    assert rouge_l("", "") == 1.0
    assert rouge_l("", "an answer") == 0.0
    assert rouge_l("!!!", "an answer") == 0.0  # punctuation alone has no words


def rouge_score_f(candidate: str, reference: str) -> float:
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return scorer.score(reference, candidate)["rougeL"].fmeasure  # score(target, prediction)


def test_rouge_l_matches_rouge_score_on_hand_picked_pairs():
    pairs = [
        ("The cat sat on the mat.", "the cat is on the mat"),
        ("It's 3.5 km, isn't it?", "It is 3.5 kilometres"),
        ("Paris", "The capital of France is Paris."),
        ("yes yes yes", "yes"),
        ("completely different", "nothing in common"),
    ]
    for candidate, reference in pairs:
        assert rouge_l(candidate, reference) == pytest.approx(
            rouge_score_f(candidate, reference), abs=1e-12), (candidate, reference)


def test_rouge_l_matches_rouge_score_on_the_instruction_data():
    # every answer scored against the next entry's answer, and against its own instruction
    data = json.loads(fetch("instruction-data.json").read_text(encoding="utf-8"))
    ascii_only = [e for e in data if e["output"].isascii() and e["instruction"].isascii()][:300]
    for e, other in itertools.pairwise(ascii_only):
        for candidate in (other["output"], e["instruction"]):
            assert rouge_l(candidate, e["output"]) == pytest.approx(
                rouge_score_f(candidate, e["output"]), abs=1e-12), (candidate, e["output"])


def test_token_f1_by_hand():
    # articles dropped: [answer, is, paris] against [paris]: precision 1/3, recall 1, F1 1/2
    assert token_f1("The answer is Paris", "Paris") == pytest.approx(0.5)
    # a bag of words: order does not matter, where ROUGE-L halves
    assert token_f1("mat the on sat cat the", "the cat sat on the mat") == 1.0
    # a repeated word counts only as often as the reference has it: overlap 1
    assert token_f1("yes yes yes", "yes") == pytest.approx(0.5)
    # overlap {b: 1, c: 1} = 2; precision 2/3, recall 2/4, F1 = 4/7
    assert token_f1("b c x", "b c d e") == pytest.approx(4 / 7)
    assert token_f1("nothing shared", "at all") == 0.0


def test_token_f1_ignores_articles_case_and_punctuation():
    assert token_f1("A Dog!", "the dog") == 1.0
    assert token_f1("the", "a") == 1.0  # nothing left of either: they agree
    assert token_f1("the", "dog") == 0.0


def test_mean_score_averages_pairs():
    assert mean_score(rouge_l, ["yes", "no"], ["yes", "yes"]) == 0.5
    assert mean_score(token_f1, ["a b", "c"], ["a b", "d"]) == 0.5


def test_mean_score_refuses_unpaired_or_empty_lists():
    with pytest.raises(ValueError, match="2 candidates but 1 references"):
        mean_score(rouge_l, ["a", "b"], ["a"])
    with pytest.raises(ValueError, match="empty"):
        mean_score(rouge_l, [], [])
