"""The server under load and against hostile callers: a conversation is fitted into the
context in linear time and off the event loop, so /health answers while the largest request
allowed is being read; and only the callers the server was started for are served (JSON
bodies, known Host names, the API key when one is set, no CORS unless asked for, uploads
that stall are cut off)."""


import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stand_ins import Scripted

from buildllm import chat as chat_module
from buildllm.chat import ChatSession, ContextLengthError
from buildllm.instruct import render_turns
from buildllm.tokenizers import ENDOFTEXT, BPETokenizer, SimpleTokenizer

MODEL = "tiny"

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


# -- fitting a conversation into the context ---------------------------------------------

def quadratic_fit(chat: ChatSession, messages: list[dict], n_new: int) -> tuple[list[int], int]:
    """How ChatSession._fit worked before: encode the whole conversation again for each
    candidate first turn. The linear one must give the same tokens and the same error."""
    system, turns = chat_module._split(messages)
    starts = [0] + [i for i, m in enumerate(turns) if i > 0 and m["role"] == "user"]
    for start in starts:
        ids = chat._encode(render_turns(system, turns[start:]))
        if len(ids) + n_new <= chat.context_length:
            return ids, start
    raise ContextLengthError(
        f"the last message's prompt (with the system prompt and headers) is {len(ids)} "
        f"tokens, and with {n_new} new tokens that exceeds the context length "
        f"{chat.context_length}: shorten the message or ask for fewer new tokens")


@pytest.fixture(scope="module")
def tokenizers(enc):
    """Every kind of tokenizer a chat model can have: GPT-2's, a course BPE, the word one."""
    corpus = "The cat sat on the mat.\n\n### Instruction:\nWhy? ### Response:\n Because! " * 20
    bpe = BPETokenizer.train(corpus, 290, [ENDOFTEXT])
    words = SimpleTokenizer.from_text(corpus)
    return [enc, bpe, words]


# Texts that stress the joins: runs of spaces and newlines, "#", letters, digits, accents,
# a no-break space, apostrophes (GPT-2 splits "'s") and the end-of-text marker spelled out.
texts = st.lists(st.sampled_from(["cat", " ", "  ", "\n", "\n\n", "#", "###", " ###", "é", "7",
                                  "\u00a0", "'s", "!", ".", "\t", "<|endoftext|>", "Why"]),
                 max_size=12).map("".join)
turns = st.lists(st.tuples(st.sampled_from(["user", "assistant"]), texts), max_size=10)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 2), system=st.lists(texts, max_size=2), history=turns,
       last=texts, n_new=st.integers(1, 63))
def test_the_linear_fit_gives_the_tokens_and_errors_of_the_quadratic_one(
        tokenizers, which, system, history, last, n_new):
    chat = ChatSession(Scripted([0], context_length=64), tokenizers[which])
    messages = ([{"role": "system", "content": s} for s in system]
                + [{"role": r, "content": t} for r, t in history]
                + [{"role": "user", "content": last}])
    try:
        expected = quadratic_fit(chat, messages, n_new)
    except ContextLengthError as err:
        with pytest.raises(ContextLengthError) as found:
            chat._fit(messages, n_new)
        assert str(found.value) == str(err)
    else:
        assert chat._fit(messages, n_new) == expected
