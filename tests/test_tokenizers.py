"""The Meeting 1 word tokenizer, on the-verdict.txt."""

import pytest

from buildllm.data import fetch
from buildllm.tokenizers import ENDOFTEXT, UNK, SimpleTokenizer, split_words


@pytest.fixture(scope="module")
def verdict() -> str:
    return fetch("the-verdict.txt").read_text(encoding="utf-8")


def test_split_words_keeps_punctuation_and_double_dashes_as_tokens():
    assert split_words('He said--"Hi!"') == ["He", "said", "--", '"', "Hi", "!", '"']


def test_vocabulary_is_sorted_pieces_then_the_special_tokens(verdict):
    tok = SimpleTokenizer.from_text(verdict)
    pieces = sorted(set(split_words(verdict)))
    assert list(tok.str_to_int) == [*pieces, ENDOFTEXT, UNK]
    assert list(tok.str_to_int.values()) == list(range(len(tok)))


def test_round_trip_reproduces_the_verdict_up_to_whitespace(verdict):
    tok = SimpleTokenizer.from_text(verdict)
    decoded = tok.decode(tok.encode(verdict))
    assert split_words(decoded) == split_words(verdict)
    assert UNK not in decoded


def test_unknown_words_become_unk_and_are_decoded_as_unk(verdict):
    tok = SimpleTokenizer.from_text(verdict)
    ids = tok.encode("Hello, Gisburn!")
    assert ids[0] == tok.str_to_int[UNK]
    assert tok.decode(ids) == f"{UNK}, Gisburn!"


def test_vocabulary_without_unk_raises_a_clear_error_on_unknown_words():
    tok = SimpleTokenizer.from_text("a b c", specials=())
    with pytest.raises(KeyError, match="'d' is not in the vocabulary"):
        tok.encode("a d")


def test_decode_rejects_ids_outside_the_vocabulary():
    tok = SimpleTokenizer.from_text("a b c")
    with pytest.raises(KeyError, match=r"\[99\]"):
        tok.decode([0, 99])


def test_duplicate_ids_are_rejected():
    with pytest.raises(ValueError, match="unique"):
        SimpleTokenizer({"a": 0, "b": 0})
