"""The server, through real clients on loopback: the official `openai` package (plain and
streamed completions, errors), httpx for requests no client would send, concurrent clients
whose answers must not mix, the course's own judge client, and the command line."""

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI

from buildllm import judge
from buildllm.chat import ChatSession
from buildllm.pretrained import COURSE_MODEL_DIR
from buildllm.serve import BackgroundServer, create_app

ROOT = Path(__file__).resolve().parents[1]
MODEL = "tiny"

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def server(chat):  # conftest's chat session over a tiny random GPT
    with BackgroundServer(create_app(chat, MODEL)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def stream_reply(client, messages, **settings) -> tuple[list[str], list]:
    """The content pieces of a streamed completion, and all its chunks."""
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, stream=True,
                                                 **settings))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices]
    return [p for p in pieces if p], chunks


# -- the API, through the openai package -------------------------------------------------

def test_the_model_list_names_the_served_model(client):
    assert [m.id for m in client.models.list()] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL


def test_a_completion_is_the_chat_sessions_reply_with_its_token_counts(client, chat):
    messages = ask("Name a colour.")
    done = client.chat.completions.create(model=MODEL, messages=messages, temperature=0)
    (choice,) = done.choices
    assert choice.message.role == "assistant" and choice.message.content == chat.reply(messages)
    assert done.object == "chat.completion" and done.model == MODEL
    reply = chat.stream(messages)
    list(reply)
    assert choice.finish_reason == reply.finish_reason
    assert (done.usage.prompt_tokens, done.usage.completion_tokens, done.usage.total_tokens) == (
        reply.prompt_tokens, reply.completion_tokens, reply.prompt_tokens + reply.completion_tokens)


def test_a_streamed_reply_arrives_in_pieces_that_add_up_to_the_plain_one(client):
    messages = ask("Write a sentence.")
    plain = client.chat.completions.create(model=MODEL, messages=messages, temperature=0)
    pieces, chunks = stream_reply(client, messages, temperature=0,
                                  stream_options={"include_usage": True})
    assert "".join(pieces) == plain.choices[0].message.content
    assert len(pieces) > 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1 and chunks[0].object == "chat.completion.chunk"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] == plain.choices[0].finish_reason and not any(finish[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage


def test_sampling_settings_and_token_limits_are_honoured(client, chat):
    messages = ask("Tell me a story.")
    settings = {"temperature": 1.0, "top_p": 0.9, "seed": 7}
    sampled = client.chat.completions.create(model=MODEL, messages=messages, **settings)
    assert sampled.choices[0].message.content == chat.reply(messages, **settings)
    pieces, _ = stream_reply(client, messages, **settings)
    assert "".join(pieces) == sampled.choices[0].message.content
    for limit in ({"max_tokens": 5}, {"max_completion_tokens": 5}):
        short = client.chat.completions.create(model=MODEL, messages=messages, **limit)
        assert short.usage.completion_tokens == 5 and short.choices[0].finish_reason == "length"
        assert short.choices[0].message.content == chat.reply(messages, max_new_tokens=5)


def test_a_conversation_with_a_system_prompt_is_answered_as_the_session_would(client, chat):
    messages = [{"role": "system", "content": "Answer briefly."}, *ask("Hi!"),
                {"role": "assistant", "content": "Hello."}, *ask("Name a colour.")]
    done = client.chat.completions.create(model=MODEL, messages=messages)
    assert done.choices[0].message.content == chat.reply(messages)
    # OpenAI's newer spellings: a "developer" message, content as a list of text parts.
    newer = [{"role": "developer", "content": "Answer briefly."}, *messages[1:3],
             {"role": "user", "content": [{"type": "text", "text": "Name a colour."}]}]
    again = client.chat.completions.create(model=MODEL, messages=newer)
    assert again.choices[0].message.content == done.choices[0].message.content


def test_errors_reach_the_openai_client_as_its_exceptions(client):
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="gpt-4o", messages=ask("Hi"))
    assert unknown.value.code == "model_not_found" and unknown.value.param == "model"
    with pytest.raises(openai.BadRequestError) as too_long:
        client.chat.completions.create(model=MODEL, messages=ask("word " * 300), stream=True)
    assert too_long.value.code == "context_length_exceeded"
    assert "exceeds the context length 128" in too_long.value.message


# -- bad requests, through httpx ---------------------------------------------------------

GOOD = {"model": MODEL, "messages": ask("Hi")}
BAD_REQUESTS = {  # name: (body, status, param, code)
    "malformed JSON": (b'{"model": "tiny", "messages": [', 400, None, None),
    "not an object": (b'["Hi"]', 400, None, None),
    "no model": ({"messages": ask("Hi")}, 400, "model", None),
    "unknown model": ({**GOOD, "model": "gpt-4o"}, 404, "model", "model_not_found"),
    "empty messages": ({**GOOD, "messages": []}, 400, "messages", None),
    "messages not a list": ({**GOOD, "messages": "Hi"}, 400, "messages", None),
    "unknown role": ({**GOOD, "messages": [{"role": "tool", "content": "Hi"}]}, 400,
                     "messages[0].role", None),
    "content not text": ({**GOOD, "messages": [{"role": "user", "content": 5}]}, 400,
                         "messages[0].content", None),
    "an image part": ({**GOOD, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "x"}}]}]}, 400, "messages[0].content", None),
    "last message not the user's": ({**GOOD, "messages": [*ask("Hi"), {
        "role": "assistant", "content": "Hello"}]}, 400, "messages", None),
    "max_tokens over the context": ({**GOOD, "max_tokens": 128}, 400, "max_tokens",
                                    "invalid_value"),
    "max_tokens zero": ({**GOOD, "max_tokens": 0}, 400, "max_tokens", None),
    "prompt over the context": ({**GOOD, "messages": ask("word " * 300)}, 400, "messages",
                                "context_length_exceeded"),
    "prompt and max_tokens over": ({**GOOD, "max_tokens": 120}, 400, "messages",
                                   "context_length_exceeded"),
    "body over 1 MiB": ({**GOOD, "messages": ask("word " * 300_000)}, 413, None,
                        "request_too_large"),
    "negative temperature": ({**GOOD, "temperature": -1}, 400, "temperature", None),
    "top_p of 0": ({**GOOD, "top_p": 0}, 400, "top_p", None),
    "two choices": ({**GOOD, "n": 2}, 400, "n", "unsupported_parameter"),
    "stop sequences": ({**GOOD, "stop": ["\n"]}, 400, "stop", "unsupported_parameter"),
}


@pytest.mark.parametrize("name", BAD_REQUESTS)
def test_a_bad_request_gets_a_4xx_in_openais_error_shape(server, name):
    body, status, param, code = BAD_REQUESTS[name]
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    for stream in (False, True):  # refused before any event is sent, streamed or not
        if stream and isinstance(body, dict):
            content = json.dumps({**body, "stream": True}).encode()
        got = httpx.post(f"{server.url}/v1/chat/completions", content=content, timeout=60,
                         headers={"Content-Type": "application/json"})
        assert got.status_code == status, got.text
        error = got.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
        assert (error["type"], error["param"], error["code"]) == (
            "invalid_request_error", param, code)


def test_unknown_paths_and_methods_get_the_error_shape_too(server):
    for got, status in ((httpx.get(f"{server.url}/v1/nothing"), 404),
                        (httpx.get(f"{server.url}/v1/chat/completions"), 405),
                        (httpx.get(f"{server.url}/v1/models/gpt-4o"), 404)):
        assert got.status_code == status and set(got.json()["error"]) == {
            "message", "type", "param", "code"}


def test_the_server_keeps_serving_after_bad_requests(server, chat):
    for body in (b"{", b"[]", json.dumps({**GOOD, "model": "x"}).encode(), b"x" * 2_000_000):
        assert httpx.post(f"{server.url}/v1/chat/completions", content=body).status_code < 500
    done = httpx.post(f"{server.url}/v1/chat/completions", json=GOOD, timeout=60).json()
    assert done["choices"][0]["message"]["content"] == chat.reply(GOOD["messages"])


def test_a_client_that_hangs_up_stops_its_reply_and_the_next_is_served(server, chat,
                                                                        started_replies):
    replies = started_replies
    request = {**GOOD, "stream": True, "max_tokens": 90}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=request) as events:
        lines = events.iter_lines()
        assert '"role": "assistant"' in next(lines)
        assert next(lines) == "" and '"content"' in next(lines)  # then hang up mid-reply
    done = httpx.post(f"{server.url}/v1/chat/completions", json=GOOD, timeout=60).json()
    assert done["choices"][0]["message"]["content"] == ChatSession.reply(chat, GOOD["messages"])
    abandoned = replies[0]
    assert abandoned.completion_tokens < 90 and abandoned.finish_reason is None


def test_the_chat_page_is_served_and_needs_nothing_from_the_network(server):
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/v1/chat/completions" in page.text and "getReader" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN, no fonts


# -- many clients at once ----------------------------------------------------------------

def test_concurrent_clients_each_get_their_own_answer(client):
    """16 clients send 2 requests each at once, half streamed: every answer arrives and is
    the answer its prompt gets alone. Sampled with a seed per request, so answers differ."""
    jobs = [(f"Question {i}: tell me about the number {i * 7}.", i, i % 2 == 0)
            for i in range(32)]

    def answer(job) -> str:
        text, seed, streamed = job
        settings = {"messages": ask(text), "temperature": 1.0, "seed": seed, "max_tokens": 8}
        if streamed:
            return "".join(stream_reply(client, **settings)[0])
        return client.chat.completions.create(model=MODEL, **settings).choices[0].message.content

    alone = [answer(job) for job in jobs]
    assert len(set(alone)) > 24, "the prompts should get different answers"
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(answer, jobs))
    assert together == alone


# -- other clients, and the command line ---------------------------------------------------

def test_the_course_judge_client_talks_to_it(server, chat):
    assert judge.available(server.url)
    assert judge.chat(server.url, MODEL, ask("Name a colour.")) == chat.reply(ask("Name a colour."))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_server_command_serves_a_run_folder(tmp_path):
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BUILDLLM_DEVICE": "cpu",
           "BUILDLLM_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "buildllm.serve", "--run", str(COURSE_MODEL_DIR),
               "--port", str(port), "--model-name", "shakespeare", "--log-level", "warning"]
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stdout.read()
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not start in 2 minutes"
                time.sleep(0.2)
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        settings = {"temperature": 1.0, "seed": 3, "max_tokens": 10}
        done = client.chat.completions.create(model="shakespeare", messages=ask("Hi"), **settings)
        expected = ChatSession.from_run(COURSE_MODEL_DIR, device="cpu").reply(
            ask("Hi"), temperature=1.0, seed=3, max_new_tokens=10)
        assert done.choices[0].message.content == expected
    finally:
        process.send_signal(signal.SIGINT)  # as Ctrl-C: uvicorn shuts down cleanly
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert f"http://127.0.0.1:{port}/" in output
