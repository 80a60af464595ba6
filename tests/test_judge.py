"""buildllm.judge against a local stand-in for an OpenAI-compatible server.

The stub is a real HTTP server on a free port, in a thread. It answers in the chat-completions
format ({"choices": [{"index", "message": {"role", "content"}, "finish_reason"}], ...}) and
records each request, so the tests see exactly what the client sends. Nothing here touches
torch, so the one_thread fixture is not needed.
"""

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from buildllm.judge import (
    JudgeError,
    available,
    chat,
    judge,
    judge_many,
    judge_prompt,
    parse_score,
)

ENTRY = {"instruction": "Rewrite in the passive voice.", "input": "The chef cooked the meal.",
         "output": "The meal was cooked by the chef."}


def completion(content) -> bytes:
    return json.dumps({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "stub",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }).encode()


class Stub(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/v1/models":
            self._send(200, b'{"object": "list", "data": [{"id": "stub", "object": "model"}]}')
        else:
            self._send(404, b'{"error": "not found"}')

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append(
            {"path": self.path, "headers": dict(self.headers), "json": json.loads(body)})
        self._send(*self.server.reply)


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    srv.requests, srv.reply = [], (200, completion("85"))
    thread = threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join()


def url_of(srv) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}"


@pytest.fixture
def dead_url() -> str:
    """A URL where nothing listens: a port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_available_is_true_for_a_server_that_lists_models(server):
    assert available(url_of(server))
    assert available(url_of(server) + "/v1/")  # the /v1 suffix is accepted too


def test_available_is_false_where_nothing_listens(dead_url):
    assert not available(dead_url, timeout=1.0)


def test_available_is_false_for_a_server_without_the_api(server):
    server.RequestHandlerClass = type("NoModels", (Stub,), {"do_GET": lambda self: self._send(
        404, b"{}")})
    assert not available(url_of(server))


def test_chat_posts_model_messages_and_temperature_zero(server):
    messages = [{"role": "user", "content": "hello"}]
    assert chat(url_of(server), "llama3", messages) == "85"
    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["json"] == {"model": "llama3", "messages": messages, "temperature": 0}
    assert request["headers"]["Content-Type"] == "application/json"
    assert "Authorization" not in request["headers"]


def test_chat_sends_an_api_key_as_a_bearer_token(server):
    chat(url_of(server), "m", [{"role": "user", "content": "x"}], api_key="sk-test")
    assert server.requests[0]["headers"]["Authorization"] == "Bearer sk-test"


def test_judge_sends_the_task_reference_and_answer_and_returns_the_score(server):
    server.reply = (200, completion("Score: 72. The answer is close."))
    assert judge(url_of(server), "llama3", ENTRY, "The meal got cooked.") == 72
    prompt = server.requests[0]["json"]["messages"][0]["content"]
    assert prompt == judge_prompt(ENTRY, "The meal got cooked.")
    for part in (ENTRY["instruction"], ENTRY["input"], ENTRY["output"], "The meal got cooked.",
                 "0 to 100"):
        assert part in prompt


def test_judge_prompt_leaves_out_an_empty_input():
    prompt = judge_prompt({"instruction": "Name a colour.", "input": "", "output": "Blue."}, "Red")
    assert "Name a colour.\n\nReference answer:\nBlue." in prompt


def test_judge_many_scores_each_pair_in_order(server):
    scores = []
    for content in ("10", "90"):
        server.reply = (200, completion(content))
        scores += judge_many(url_of(server), "m", [ENTRY], ["x"])
    assert scores == [10, 90]
    with pytest.raises(ValueError, match="2 entries but 1 responses"):
        judge_many(url_of(server), "m", [ENTRY, ENTRY], ["x"])


def test_unreachable_server_raises_judge_error_naming_the_endpoint(dead_url):
    with pytest.raises(JudgeError, match=f"could not reach {dead_url}/v1/chat/completions"):
        chat(dead_url, "m", [{"role": "user", "content": "x"}], timeout=2.0)


def test_reply_that_is_not_json_raises_judge_error(server):
    server.reply = (200, b"<html>hello</html>")
    with pytest.raises(JudgeError, match=r"chat-completions format .*<html>hello"):
        chat(url_of(server), "m", [{"role": "user", "content": "x"}])


def test_json_reply_without_choices_raises_judge_error(server):
    server.reply = (200, b'{"message": {"content": "85"}}')
    with pytest.raises(JudgeError, match="choices"):
        judge(url_of(server), "m", ENTRY, "x")


def test_content_that_is_not_text_raises_judge_error(server):
    server.reply = (200, completion(None))
    with pytest.raises(JudgeError, match="not text"):
        chat(url_of(server), "m", [{"role": "user", "content": "x"}])


def test_http_error_raises_judge_error_with_status_and_body(server):
    server.reply = (404, b'{"error": "model \\"nope\\" not found"}')
    with pytest.raises(JudgeError, match=r"HTTP 404 .*nope"):
        chat(url_of(server), "nope", [{"role": "user", "content": "x"}])


def test_reply_without_a_number_raises_value_error(server):
    server.reply = (200, completion("I cannot grade this."))
    with pytest.raises(ValueError, match="no number"):
        judge(url_of(server), "m", ENTRY, "x")


@pytest.mark.parametrize(("reply", "score"), [("85", 85), (" 0", 0), ("100/100", 100),
                                              ("Score: 7 out of 10", 7), ("62.5", 62)])
def test_parse_score_takes_the_first_integer(reply, score):
    assert parse_score(reply) == score


@pytest.mark.parametrize("reply", ["101", "-5", "score 250"])
def test_parse_score_rejects_numbers_outside_the_scale(reply):
    with pytest.raises(ValueError, match="outside 0..100"):
        parse_score(reply)


@pytest.mark.parametrize("url", ["localhost:11434", "ftp://host", ""])
def test_a_url_without_http_is_refused_with_value_error(url):
    with pytest.raises(ValueError, match="http://"):
        chat(url, "m", [])
