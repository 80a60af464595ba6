"""The server under load and against hostile callers: a conversation is fitted into the
context in linear time and off the event loop, so /health answers while the largest request
allowed is being read; and only the callers the server was started for are served (JSON
bodies, known Host names, the API key when one is set, no CORS unless asked for, uploads
that stall are cut off)."""


import json
import statistics
import threading
import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stand_ins import Scripted

from buildllm import chat as chat_module
from buildllm.chat import ChatSession, ContextLengthError
from buildllm.instruct import render_turns
from buildllm.serve import MAX_BODY_BYTES, MAX_MESSAGES, BackgroundServer, create_app
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


# -- the largest request allowed, and /health meanwhile ------------------------------------

@pytest.fixture(scope="module")
def server(chat):  # conftest's chat session over a tiny random GPT (context 128)
    with BackgroundServer(create_app(chat, MODEL)) as running:
        yield running


def post(server, body: bytes | str, content_type: str | None = "application/json",
         **headers) -> httpx.Response:
    if content_type:
        headers["Content-Type"] = content_type
    return httpx.post(f"{server.url}/v1/chat/completions", content=body, headers=headers,
                      timeout=120)


def largest_request(n_messages: int = MAX_MESSAGES) -> bytes:
    """`n_messages` messages in just under MAX_BODY_BYTES: short words, the most tokens per
    byte, in every message but the last, a short question, so that fitting the conversation
    must read everything and then drop all but the question."""
    request = {"model": MODEL, "max_tokens": 64, "messages": [
        {"role": "user" if n % 2 == 0 else "assistant", "content": ""}
        for n in range(n_messages - 1)] + [{"role": "user", "content": "Hi"}]}
    size = (MAX_BODY_BYTES - len(json.dumps(request))) // (n_messages - 1)
    for message in request["messages"][:-1]:
        message["content"] = ("ab " * size)[:size]
    body = json.dumps(request).encode()
    assert 0.99 * MAX_BODY_BYTES < len(body) <= MAX_BODY_BYTES
    return body


def test_health_answers_at_once_while_the_largest_request_allowed_is_handled(server):
    body, answer = largest_request(), {}
    sender = threading.Thread(target=lambda: answer.update(response=post(server, body)))
    seconds = []
    with httpx.Client(base_url=server.url, timeout=30) as pinger:
        pinger.get("/health")  # the connection is open before the timing starts
        sender.start()
        while sender.is_alive():
            start = time.perf_counter()
            assert pinger.get("/health").status_code == 200
            seconds.append(time.perf_counter() - start)
            time.sleep(0.01)
    sender.join()
    response = answer["response"]
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["prompt_tokens"] < 64  # every turn but the question dropped
    # The issue asks for 100 ms. Fitting runs in a thread of its own and the model in
    # another, so a ping only waits for its turn at Python's lock (5 ms slices); on a shared
    # 2-core machine other processes can still stall one ping now and then, hence the
    # median under 0.1 s and every ping under 0.5 s. Fitting on the event loop, as before,
    # held every ping for seconds.
    assert len(seconds) >= 3, seconds
    assert statistics.median(seconds) < 0.1 and max(seconds) < 0.5, seconds


def test_more_messages_than_allowed_are_refused_in_openais_shape(server):
    response = post(server, largest_request(MAX_MESSAGES + 1))
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": f"messages: {MAX_MESSAGES + 1} messages is more than the {MAX_MESSAGES} this "
                   "server takes: leave out the oldest turns",
        "type": "invalid_request_error", "param": "messages", "code": None}
