"""The server under load and against hostile callers: a conversation is fitted into the
context in linear time and off the event loop, so /health answers while the largest request
allowed is being read; and only the callers the server was started for are served (JSON
bodies, known Host names, the API key when one is set, no CORS unless asked for, uploads
that stall are cut off)."""


import json
import socket
import statistics
import threading
import time

import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai import OpenAI
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


# -- only the callers the server was started for -----------------------------------------

QUESTION = {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}


def refusal(response: httpx.Response, status: int) -> dict:
    """The error of a refused request, checked to be in OpenAI's shape."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


def test_a_cross_site_text_plain_post_is_refused_and_gets_no_cors_headers(server):
    # What a page on another site can send without a CORS preflight: a "simple" request.
    response = post(server, json.dumps(QUESTION), content_type="text/plain;charset=UTF-8",
                    Origin="https://evil.example")
    error = refusal(response, 415)
    assert error["message"] == ("the request body must be JSON (Content-Type: "
                                "application/json), not text/plain")
    assert not [h for h in response.headers if h.lower().startswith("access-control-")]
    refusal(post(server, json.dumps(QUESTION), content_type=None), 415)  # unlabelled
    fine = post(server, json.dumps(QUESTION), content_type="application/json; charset=utf-8",
                Origin="https://evil.example")
    assert fine.status_code == 200 and "access-control-allow-origin" not in fine.headers


def test_a_host_the_server_was_not_started_for_is_refused(chat):
    with BackgroundServer(create_app(chat, MODEL, allowed_hosts=["mybox.local"])) as server:
        def health(host: str) -> httpx.Response:
            return httpx.get(f"{server.url}/health", headers={"Host": host})

        for host in ("localhost", "localhost:1234", "127.0.0.1:99", "[::1]:8000",
                     "192.168.1.7", "MyBox.local:8000"):
            assert health(host).status_code == 200, host  # a name and an address, any port
        error = refusal(health("evil.example:8000"), 421)
        assert error["message"] == ("this server does not answer to the name 'evil.example'; "
                                    "start it with --allowed-host evil.example (create_app's "
                                    "allowed_hosts) to let clients use that name")
        refusal(httpx.post(f"{server.url}/v1/chat/completions", json=QUESTION,
                           headers={"Host": "rebound.evil.example"}), 421)
    with BackgroundServer(create_app(chat, MODEL, allowed_hosts=["*"])) as anything:
        assert httpx.get(f"{anything.url}/health", headers={"Host": "x.proxy"}).status_code == 200


def test_with_a_key_the_api_answers_only_those_who_send_it(chat):
    with BackgroundServer(create_app(chat, MODEL, api_key="s3cret key")) as server:
        def client(key: str) -> OpenAI:
            return OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=60)

        for key in ("unused", "s3cret", "s3cret key2"):
            with pytest.raises(openai.AuthenticationError, match="missing or wrong API key"):
                client(key).chat.completions.create(**QUESTION)
        missing = httpx.get(f"{server.url}/v1/models")
        assert refusal(missing, 401)["code"] == "invalid_api_key"
        assert missing.headers["www-authenticate"] == "Bearer"
        done = client("s3cret key").chat.completions.create(**QUESTION)
        assert done.choices[0].message.content == chat.reply(QUESTION["messages"],
                                                             max_new_tokens=4)
        for open_path in ("/", "/health"):  # the page asks for the key itself
            assert httpx.get(f"{server.url}{open_path}").status_code == 200


def test_cors_is_opened_only_to_the_origins_given(chat):
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    with BackgroundServer(create_app(chat, MODEL,
                                     cors_origins=["https://friend.example"])) as server:
        url = f"{server.url}/v1/chat/completions"
        friend = httpx.options(url, headers={**preflight, "Origin": "https://friend.example"})
        assert friend.status_code == 200
        assert friend.headers["access-control-allow-origin"] == "https://friend.example"
        evil = httpx.options(url, headers={**preflight, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in evil.headers
        done = httpx.post(url, json=QUESTION, headers={"Origin": "https://friend.example"},
                          timeout=60)
        assert done.status_code == 200
        assert done.headers["access-control-allow-origin"] == "https://friend.example"


def test_an_upload_that_stalls_is_cut_off_and_the_server_goes_on(chat):
    with BackgroundServer(create_app(chat, MODEL, read_timeout=1.0)) as server:
        host, port = server.url.removeprefix("http://").split(":")
        body = json.dumps(QUESTION).encode()
        with socket.create_connection((host, int(port)), timeout=30) as upload:
            upload.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           b"Content-Type: application/json\r\n"
                           b"Content-Length: %d\r\n\r\n" % len(body) + body[:10])
            start, answer = time.perf_counter(), b""
            while b"}}" not in answer and (part := upload.recv(65536)):  # ...and stall
                answer += part
            waited = time.perf_counter() - start
        head, _, payload = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 ")
        assert json.loads(payload)["error"]["message"] == (
            "the request body did not arrive within 1 s: send it all at once")
        assert 0.9 < waited < 10
        assert httpx.post(f"{server.url}/v1/chat/completions", json=QUESTION,
                          timeout=60).status_code == 200


def serve_main_without_serving(monkeypatch) -> dict:
    """serve.main's server replaced by one that records its app and host and serves nothing."""
    from buildllm import serve

    served = {}

    class Recorded:
        def __init__(self, config):
            served.update(app=config.app, host=config.host)

        def run(self):
            pass

    monkeypatch.setattr(serve, "_Server", Recorded)
    return served


def test_serving_beyond_this_machine_without_a_key_warns_in_one_line(monkeypatch, capsys):
    from fastapi.testclient import TestClient

    from buildllm.pretrained import COURSE_MODEL_DIR
    from buildllm.serve import main

    served = serve_main_without_serving(monkeypatch)
    monkeypatch.delenv("BUILDLLM_API_KEY", raising=False)
    command = ["--run", str(COURSE_MODEL_DIR), "--device", "cpu", "--host", "0.0.0.0"]
    main(command)
    warning = capsys.readouterr().err
    assert warning == ("warning: serving on 0.0.0.0 with no API key: anyone who can reach this "
                       "machine can use the model (set --api-key or BUILDLLM_API_KEY)\n")
    assert served["host"] == "0.0.0.0"
    monkeypatch.setenv("BUILDLLM_API_KEY", "from-the-environment")
    main(command)
    assert capsys.readouterr().err == ""  # a key: no warning
    with TestClient(served["app"]) as client:
        assert client.get("/v1/models").status_code == 401
        models = client.get("/v1/models", headers={"Authorization": "Bearer from-the-environment"})
        assert models.status_code == 200
    main(["--run", str(COURSE_MODEL_DIR), "--device", "cpu", "--api-key", ""])
    assert capsys.readouterr().err == ""  # 127.0.0.1: no warning, even without a key


def test_max_batch_reaches_the_engine_and_below_one_is_refused_in_one_line(monkeypatch):
    from fastapi.testclient import TestClient

    from buildllm.pretrained import COURSE_MODEL_DIR
    from buildllm.serve import main

    served = serve_main_without_serving(monkeypatch)
    command = ["--run", str(COURSE_MODEL_DIR), "--device", "cpu"]
    with pytest.raises(SystemExit, match=r"^error: --max-batch must be at least 1 \(1: one "
                                         r"reply at a time\), got 0$"):
        main([*command, "--max-batch", "0"])
    assert served == {}  # refused before a server was made
    main([*command, "--max-batch", "3"])
    with TestClient(served["app"]) as client:
        assert client.app.state.engine.max_batch == 3


def test_the_check_sends_the_key_of_a_server_that_has_one(chat):
    from buildllm.serve import check

    app = create_app(chat, MODEL, api_key="s3cret")
    assert check(app, MODEL, "Hi", max_tokens=4, api_key="s3cret").startswith("asked 'Hi'")
    with pytest.raises(RuntimeError, match="answered 200 for the chat page and 401 for a chat "
                                           "completion: .*missing or wrong API key"):
        check(app, MODEL, "Hi", max_tokens=4)
