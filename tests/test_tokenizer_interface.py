"""Every tokenizer of the course speaks one interface, `buildllm.tokenizers.Tokenizer`.

One table of tokenizers, as minbpe's tests do: each row is checked for the same behaviour,
so pretraining, chat and instruction tuning can take any of them.
"""

import doctest
from collections.abc import Callable
from functools import cache
from typing import NamedTuple

import pytest

from buildllm.data import fetch, gpt2_encoding
from buildllm.pretrain_data import encode_documents
from buildllm.tokenizers import (
    ENDOFTEXT,
    UNK,
    BPETokenizer,
    CharTokenizer,
    SimpleTokenizer,
    Tokenizer,
    char,
    gpt2_tokenizer,
    protocol,
    simple,
)


@cache
def verdict() -> str:
    return fetch("the-verdict.txt").read_text("utf-8")


# Words joined by single spaces, no space before punctuation: what the word tokenizer decodes to.
SENTENCES = ("It was not till three years later that, in the course of a few weeks' idling on "
             "the Riviera, it suddenly occurred to me to wonder why Gisburn had given up his "
             "painting. What struck me now was that, for the first time, he resented the tone.")


class Case(NamedTuple):
    make: Callable[[], Tokenizer]
    text: str | None  # decodes back to itself; None: the whole of the-verdict.txt
    n_vocab: int
    eot_token: int | None
    plain_endoftext: str  # what encode_ordinary("<|endoftext|>") decodes to


CASES = {
    # 1,130 distinct words and punctuation marks, then <|endoftext|> and <|unk|> (Meeting 1)
    "word": Case(lambda: SimpleTokenizer.from_text(verdict()), SENTENCES, 1132, 1130, UNK),
    "char": Case(lambda: CharTokenizer(verdict() + ENDOFTEXT), None, 65, None, ENDOFTEXT),
    "trained BPE": Case(lambda: BPETokenizer.train(verdict(), 400, [ENDOFTEXT]), None,
                        400, 399, ENDOFTEXT),
    "GPT-2 BPE": Case(cache(gpt2_tokenizer), None, 50257, 50256, ENDOFTEXT),
    "tiktoken GPT-2": Case(gpt2_encoding, None, 50257, 50256, ENDOFTEXT),
}


@pytest.fixture(scope="module", params=CASES)
def case(request) -> tuple[Tokenizer, Case]:
    row = CASES[request.param]
    return row.make(), row


def test_it_satisfies_the_protocol(case):
    tok, _ = case
    assert isinstance(tok, Tokenizer)


def test_n_vocab_and_eot_token_are_its_own(case):
    tok, row = case
    assert (tok.n_vocab, tok.eot_token) == (row.n_vocab, row.eot_token)


def test_decode_inverts_encode_on_real_text(case):
    tok, row = case
    text = row.text or verdict()
    ids = tok.encode(text)
    assert all(0 <= i < tok.n_vocab for i in ids)
    assert tok.decode(ids) == text


def test_encode_ordinary_reads_endoftext_as_plain_text(case):
    tok, row = case
    ids = tok.encode_ordinary(ENDOFTEXT)
    assert tok.eot_token not in ids
    assert tok.decode(ids) == row.plain_endoftext
    if tok.eot_token is not None:
        assert tok.encode(ENDOFTEXT, allowed_special={ENDOFTEXT}) == [tok.eot_token]


def test_documents_are_joined_by_endoftext_where_the_tokenizer_has_it(case):
    tok, _ = case
    first, second = tok.encode_ordinary("It was"), tok.encode_ordinary("the tone.")
    between = [] if tok.eot_token is None else [tok.eot_token]
    assert encode_documents(tok, ["It was", "the tone."]) == first + between + second


def test_our_gpt2_bpe_gives_tiktokens_ids():
    ours, theirs = CASES["GPT-2 BPE"].make(), gpt2_encoding()
    text = verdict()[:5_000] + ENDOFTEXT + verdict()[5_000:8_000]
    assert ours.encode_ordinary(text) == theirs.encode_ordinary(text)
    assert ours.encode(text, allowed_special={ENDOFTEXT}) == \
        theirs.encode(text, allowed_special={ENDOFTEXT})


@pytest.mark.parametrize("module", [char, protocol, simple])
def test_the_docstring_examples_hold(module):
    assert doctest.testmod(module).failed == 0
