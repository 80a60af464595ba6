"""Our BPE, loaded from GPT-2's files, gives exactly tiktoken's ids."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_bpe import STRESS

from buildllm.data import fetch
from buildllm.tokenizers import ENDOFTEXT, gpt2_tokenizer, load_gpt2_files, show_tokens


@pytest.fixture(scope="module")
def ours():
    return gpt2_tokenizer()


def test_the_plain_data_matches_the_files(ours):
    assert ours.vocab_size == 50_257 and len(ours.merges) == 50_000
    assert ours.special_tokens == {ENDOFTEXT: 50256}
    assert ours.vocab[262] == b" the" and ours.merges[0] == (b" ", b"t")
    assert ours.vocab[0] == b"!"  # GPT-2's ids 0-255 are the bytes, in a shuffled order


@pytest.mark.parametrize("name", ["tinyshakespeare.txt", "the-verdict.txt"])
def test_whole_files_encode_exactly_like_tiktoken(ours, enc, name):
    text = fetch(name).read_text("utf-8")
    ids = ours.encode(text)
    assert ids == enc.encode(text)
    assert ours.decode(ids) == text


@pytest.mark.parametrize("line", STRESS.split("\n"), ids=lambda line: line[:12])
def test_the_stress_set_encodes_exactly_like_tiktoken(ours, enc, line):
    assert ours.encode(line, allowed_special="all") == enc.encode(
        line, allowed_special="all"
    )


@pytest.mark.parametrize(
    "text",
    [
        ENDOFTEXT,
        ENDOFTEXT * 3,
        f"{ENDOFTEXT}start",
        f"end {ENDOFTEXT}",
        f"word{ENDOFTEXT}word",
        f"  {ENDOFTEXT}  \n{ENDOFTEXT}\n",
        f"<|endoftext{ENDOFTEXT}|>",
        "<|endoftext|",
    ],
)
def test_special_tokens_in_odd_places_match_tiktoken(ours, enc, text):
    assert ours.encode(text, allowed_special="all") == enc.encode(
        text, allowed_special="all"
    )
    assert ours.encode_ordinary(text) == enc.encode_ordinary(text)


def test_a_special_token_is_refused_by_default_like_tiktoken(ours, enc):
    with pytest.raises(ValueError):
        enc.encode(f"a{ENDOFTEXT}")
    with pytest.raises(ValueError, match="encode_ordinary"):
        ours.encode(f"a{ENDOFTEXT}")


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_string_encodes_like_tiktoken_and_round_trips(ours, enc, text):
    ids = ours.encode_ordinary(text)
    assert ids == enc.encode_ordinary(text)
    assert ours.decode(ids) == text


def test_the_loader_reads_a_header_and_rejects_broken_files(tmp_path):
    encoder = json.loads(fetch("encoder.json").read_text("utf-8"))
    merges = fetch("vocab.bpe").read_text("utf-8")
    assert merges.startswith("#version")

    broken = tmp_path / "vocab.bpe"
    broken.write_text(merges.replace("Ġ t\n", "Ġt\n", 1), "utf-8")
    with pytest.raises(ValueError, match=r"not make a tokenizer: merge 0: expected 'left right'"):
        load_gpt2_files(fetch("encoder.json"), broken)

    del encoder["Ġthe"]
    (tmp_path / "encoder.json").write_text(json.dumps(encoder), "utf-8")
    with pytest.raises(ValueError, match="ids must be 0, 1, ..., n-1"):
        load_gpt2_files(tmp_path / "encoder.json", fetch("vocab.bpe"))

    (tmp_path / "encoder.json").write_text("{", "utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_gpt2_files(tmp_path / "encoder.json", fetch("vocab.bpe"))


def test_show_tokens_keeps_a_split_character_in_one_span(ours):
    html = show_tokens("hi🙂", ours).data  # 🙂 with no space before it is two byte tokens
    emoji_ids = ours.encode("🙂")
    assert len(emoji_ids) == 2 and ours.encode("hi🙂") == [5303, *emoji_ids]
    assert html.count("<span") == 2 and f'title="{emoji_ids}"' in html and "🙂" in html
    assert "3 characters, 3 tokens" in html
