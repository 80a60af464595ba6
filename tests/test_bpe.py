"""Byte-level BPE: the helpers, training, encoding, decoding, saving, and bad input."""

import doctest
import hashlib
import json
import random
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buildllm.data import fetch
from buildllm.tokenizers import (
    ENDOFTEXT,
    BPETokenizer,
    bpe,
    bpe_train,
    count_words,
    gpt2_tokenizer,
    merge,
    pair_counts,
    train_bpe,
    train_bpe_naive,
)

STRESS = (
    "Hello, world! Don't they'll we've I'm HOW'S   spaces\t\ttabs\n\n\nnewlines \n  x "
    "emoji 🙂👩‍👩‍👧 flags 🇳🇱 CJK 你好世界 日本語 한국어 Arabic مرحبا بالعالم "
    "accents café naïve e\u0301 Å\u030a Zalgo z̴̛a̶l̷g̸o numbers 3.14159 1,000,000 2024-11-22 "
    "code: def f(x):\n    return x**2  # comment\n\tif a != b: {'k': [1, 2]}\n"
    "<|endoftext|> glued<|endoftext|>on <|endoftext|><|endoftext|> ¯\\_(ツ)_/¯ \u00a0nbsp"
)


@pytest.fixture(scope="module")
def verdict() -> str:
    return fetch("the-verdict.txt").read_text("utf-8")


@pytest.fixture(scope="module")
def trained(verdict) -> BPETokenizer:
    return BPETokenizer.train(verdict + ENDOFTEXT + STRESS, 1000, [ENDOFTEXT])


def test_the_docstring_examples_hold():
    for module in (bpe, bpe_train):
        assert doctest.testmod(module).failed == 0


def test_pair_counts_and_merge():
    assert pair_counts([5, 5, 5]) == {(5, 5): 2}
    assert pair_counts([1, 2], {(1, 2): 3}, weight=4) == {(1, 2): 7}
    assert merge([5, 5, 5, 5], (5, 5), 6) == [6, 6]
    assert merge([1, 2, 1], (2, 1), 9) == [1, 9]
    assert merge([], (1, 2), 3) == []


# -- training ---------------------------------------------------------------------------------


def test_training_on_a_tiny_text_gives_the_merges_worked_out_by_hand():
    # Words "ab", " ab", " ab", " abc": (a, b) occurs 4 times, then " "+"ab" 3 times, then "ab"+"c".
    with pytest.warns(UserWarning, match="no pairs left to merge after 3 of 4"):
        vocab, merges = train_bpe("ab ab ab abc", 260)
    assert merges == [(b"a", b"b"), (b" ", b"ab"), (b" ab", b"c")]
    assert vocab[256] == b"ab" and vocab[258] == b" abc" and len(vocab) == 259


def test_ties_go_to_the_greatest_pair_of_byte_strings():
    # Words "xy" and " yx": three pairs, once each. (y, x) > (x, y) > (" ", y) as tuples.
    _, merges = train_bpe("xy yx", 259)
    assert merges == [(b"y", b"x"), (b"x", b"y"), (b" ", b"yx")]


@pytest.mark.parametrize("vocab_size", [300, 700])
def test_the_fast_trainer_learns_exactly_what_the_naive_one_does(verdict, vocab_size):
    text = verdict[:20_000] + ENDOFTEXT + STRESS
    fast = train_bpe(text, vocab_size, [ENDOFTEXT])
    assert fast == train_bpe_naive(text, vocab_size, [ENDOFTEXT])
    assert len(fast[1]) == vocab_size - 257


def test_training_is_the_same_whatever_python_hashes_strings_with(tmp_path):
    """Sets and dicts of strings iterate in a per-process order; the merges must not care."""
    script = (
        "import hashlib, sys; from buildllm.tokenizers import train_bpe; "
        f"_, m = train_bpe({STRESS * 3!r}, 400); "
        "print(hashlib.sha256(repr(m).encode()).hexdigest())"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={"PYTHONHASHSEED": seed, "PATH": ""},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    _, merges = train_bpe(STRESS * 3, 400)
    assert digests == {hashlib.sha256(repr(merges).encode()).hexdigest() + "\n"}


def test_a_text_a_file_and_an_iterable_of_texts_train_alike(verdict, tmp_path):
    path = tmp_path / "verdict.txt"
    path.write_text(verdict, "utf-8")
    from_text = train_bpe(verdict, 400)
    assert train_bpe(path, 400) == from_text
    assert train_bpe(iter(verdict.splitlines(keepends=True)), 400) == from_text


def test_special_tokens_are_never_merged_and_get_the_last_ids(verdict):
    tok = BPETokenizer.train(verdict[:5000].replace(".", ENDOFTEXT), 300, [ENDOFTEXT])
    assert all(b"<|" not in a + b and b"|>" not in a + b for a, b in tok.merges)
    assert tok.special_tokens == {ENDOFTEXT: 299}
    assert all(tok.vocab[i] == bytes([i]) for i in range(256))
    assert tok.encode("hi<|endoftext|>", allowed_special="all")[-1] == 299


def test_count_words_cuts_out_special_tokens():
    words = count_words("a cat<|endoftext|>a cat", [ENDOFTEXT])
    assert words == {"a": 2, " cat": 2}


# -- bad input to the trainer -----------------------------------------------------------------


@pytest.mark.parametrize("corpus", ["", ENDOFTEXT * 3, []])
def test_an_empty_corpus_is_an_error(corpus):
    with pytest.raises(ValueError, match="corpus is empty"):
        train_bpe(corpus, 300, [ENDOFTEXT])


def test_a_vocabulary_too_small_for_bytes_and_specials_is_an_error():
    with pytest.raises(ValueError, match="vocab_size=256 is too small.*need 257"):
        train_bpe("some text", 256, [ENDOFTEXT])
    with pytest.raises(ValueError, match="distinct"):
        train_bpe("some text", 300, [ENDOFTEXT, ENDOFTEXT])


def test_a_vocabulary_the_corpus_cannot_fill_stops_early_and_says_so():
    with pytest.warns(UserWarning, match="no pairs left to merge after 2 of 43") as warned:
        tok = BPETokenizer.train("abc", 300, [ENDOFTEXT])
    assert warned[0].filename == __file__  # points at the caller's line, not at buildllm
    assert tok.vocab_size == 259 and tok.merges == [(b"b", b"c"), (b"a", b"bc")]


def test_a_file_that_is_not_utf8_is_a_clear_error(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("plain ascii, then caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt is not UTF-8 text: .* at byte 21\."):
        train_bpe(path, 300)
    path.write_bytes(b"ends in half a character: " + "🙂".encode()[:2])
    with pytest.raises(ValueError, match=r"latin1.txt is not UTF-8 text: .* at byte 26\."):
        train_bpe(path, 300)


# -- encoding and decoding --------------------------------------------------------------------


def test_a_special_token_must_be_allowed(trained):
    with pytest.raises(ValueError, match=r"allowed_special=\{'<\|endoftext\|>'\}"):
        trained.encode("one<|endoftext|>two")
    ordinary = trained.encode_ordinary("<|endoftext|>")
    assert len(ordinary) > 1 and trained.decode(ordinary) == ENDOFTEXT
    assert trained.encode("<|endoftext|>", allowed_special={ENDOFTEXT}) == [999]
    with pytest.raises(ValueError, match="lacks"):
        trained.encode("x", allowed_special={"<|im_start|>"})


def test_overlapping_special_tokens_resolve_longest_first():
    specials = ["<|end", ENDOFTEXT]
    tok = BPETokenizer.train("plain text", 260, specials)
    end, endoftext = tok.special_tokens["<|end"], tok.special_tokens[ENDOFTEXT]
    assert tok.encode("a<|endoftext|>b<|end", allowed_special="all")[1::2] == [endoftext, end]
    with pytest.raises(ValueError, match="endoftext"):
        tok.encode("<|endoftext|>", allowed_special={"<|end"})


def test_decoding_half_a_character_gives_the_replacement_character(trained):
    ids = trained.encode("🙂")
    assert len(ids) > 1  # a rare emoji is several byte tokens
    assert trained.decode(ids[:1]) == "\ufffd"
    assert trained.decode(ids) == "🙂"
    assert trained.decode_bytes(ids) == "🙂".encode()


@pytest.mark.parametrize("bad", [1000, -1, 10**9])
def test_decoding_an_unknown_id_is_a_clear_error(trained, bad):
    with pytest.raises(ValueError, match=f"unknown token id {bad}: .* ids 0 to 999"):
        trained.decode([1, bad])


def test_decoding_rejects_ids_that_are_not_integers(trained):
    with pytest.raises(TypeError):
        trained.decode([1.0])


def stream(tok, chunks, allowed="all"):
    """encode_iterable, looking for a cut after every chunk instead of every 64k characters."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bpe, "_BLOCK", 1)
        return list(tok.encode_iterable(chunks, allowed))


def test_streaming_gives_the_same_ids_as_encoding_all_at_once(verdict, trained):
    text = (verdict[:30_000] + ENDOFTEXT + STRESS) * 5
    rng = random.Random(0)
    cuts = sorted(rng.sample(range(len(text)), 3_000))
    chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    expected = trained.encode(text, allowed_special="all")
    assert list(trained.encode_iterable(chunks, allowed_special="all")) == expected
    assert stream(trained, chunks) == expected
    assert stream(trained, text.splitlines(keepends=True)) == expected
    assert stream(trained, iter(text[:5000])) == trained.encode(text[:5000], "all")


@pytest.fixture(scope="module")
def gpt2_plain() -> BPETokenizer:
    """GPT-2's merges (which know "'ll" and runs of spaces) without a special token, so a
    stream can be cut within two characters of its end."""
    gpt2 = gpt2_tokenizer()
    return BPETokenizer(gpt2.vocab, gpt2.merges)


@pytest.mark.parametrize("which", ["trained", "gpt2_plain"])
def test_streaming_matches_encode_wherever_one_cut_falls(request, which):
    tok = request.getfixturevalue(which)
    text = "we'll   \n\n see it's<|endoftext|>done 🙂 12 'Ve " + STRESS
    expected = tok.encode(text, allowed_special="all")
    for i in range(len(text) + 1):
        assert stream(tok, [text[:i], text[i:]]) == expected, i


@settings(max_examples=300, deadline=None)
@given(st.text(), st.data())
def test_streaming_any_string_cut_anywhere_matches_encode(gpt2_plain, text, data):
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=5)))
    chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    assert stream(gpt2_plain, chunks) == gpt2_plain.encode(text)


def test_streaming_refuses_bytes(trained):
    with pytest.raises(TypeError, match="text mode"):
        list(trained.encode_iterable([b"bytes"]))


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_decode_undoes_encode_for_any_string(trained, text):
    assert trained.decode(trained.encode_ordinary(text)) == text


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([*" \n\t'abc1é🙂", "'ll", ENDOFTEXT])).map("".join), st.data())
def test_streaming_matches_encode_however_the_text_is_cut(trained, text, data):
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=8)))
    chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    assert stream(trained, chunks) == trained.encode(text, allowed_special="all")


# -- plain data, saving and loading -----------------------------------------------------------


def test_a_saved_tokenizer_reloads_to_identical_encodings(trained, tmp_path, verdict):
    path = trained.save(tmp_path / "tok.json")
    loaded = BPETokenizer.load(path)
    assert (loaded.vocab, loaded.merges, loaded.special_tokens) == (
        trained.vocab,
        trained.merges,
        trained.special_tokens,
    )
    text = verdict + STRESS
    assert loaded.encode(text, allowed_special="all") == trained.encode(text, allowed_special="all")
    saved = json.loads(path.read_text("utf-8"))  # readable: GPT-2's spelling of bytes
    assert saved["merges"][0] == "Ġ t" and saved["vocab"]["Ġt"] == 256
    assert not list(tmp_path.glob("*.tmp"))


def test_a_tokenizer_is_built_from_plain_data_alone(trained):
    rebuilt = BPETokenizer(dict(trained.vocab), list(trained.merges), [ENDOFTEXT])
    assert rebuilt.encode(STRESS, "all") == trained.encode(STRESS, "all")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["merges"].append("Ġt"), "expected 'left right'"),
        (lambda d: d["merges"].append("Ġt h e"), "expected 'left right'"),
        (lambda d: d["merges"].append("Ġt zzzz"), "'zzzz' is not in vocab"),
        (lambda d: d["merges"].append("Ġt \x00"), "not in GPT-2's byte alphabet"),
        (lambda d: d["merges"].append(d["merges"][0]), "repeats merge 0"),
        (lambda d: d["vocab"].pop("a"), "ids must be 0, 1, ..., n-1"),
        (lambda d: d.update(format="something else"), "format is 'something else'"),
        (lambda d: d.pop("merges"), "merges"),
        (lambda d: d["special_tokens"].append("<|unknown|>"), "not in vocab"),
    ],
    ids=["one token", "three tokens", "unknown token", "bad character", "repeat", "gap",
         "format", "no merges", "special"],
)
def test_a_malformed_file_is_a_clear_error(trained, tmp_path, change, message):
    data = trained.to_printable()
    change(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data), "utf-8")
    with pytest.raises(ValueError, match=message):
        BPETokenizer.load(path)


def test_a_file_that_is_not_json_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json", "utf-8")
    with pytest.raises(ValueError, match="bad.json is not a valid tokenizer file"):
        BPETokenizer.load(path)


def test_the_vocabulary_must_cover_every_byte_once():
    vocab = {i: bytes([i]) for i in range(256)}
    with pytest.raises(ValueError, match="lacks 1 single bytes"):
        BPETokenizer({i: vocab[i] for i in range(255)}, [])
    with pytest.raises(ValueError, match="both stand for"):
        BPETokenizer({**vocab, 256: b"a"}, [])
