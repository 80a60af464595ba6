"""The server under load, through real clients on loopback: clients that hang up stop costing
anything, a full queue answers 429, concurrent replies are written in one batch and are those
written one at a time, and stopping answers what is unfinished in OpenAI's error shape."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from torch import nn

from buildllm.chat import ChatSession
from buildllm.pretrained import COURSE_MODEL_DIR
from buildllm.serve import RETRY_AFTER_S, BackgroundServer, create_app

MODEL = "course"
pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


class Gated(nn.Module):
    """The course model behind a gate: a forward pass waits while `gate` is closed (`held`
    says one does), and the batch size of every pass is recorded."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.cfg = model, model.cfg
        self.gate, self.held, self.sizes = threading.Event(), threading.Event(), []
        self.gate.set()

    def close(self) -> None:
        self.held.clear()
        self.gate.clear()

    def forward(self, ids, *args, **kwargs):
        if not self.gate.is_set():
            self.held.set()
        assert self.gate.wait(60), "the test never opened the gate"
        self.sizes.append(ids.shape[0])
        return self.model(ids, *args, **kwargs)


@pytest.fixture(scope="module")
def chat():
    course = ChatSession.from_run(COURSE_MODEL_DIR, device="cpu")
    return ChatSession(Gated(course.model), course.tokenizer, max_new_tokens=24)


def ask(text: str, **settings) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], **settings}


def post(server, body: dict, timeout: float = 60) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=timeout)


def is_openai_error(response: httpx.Response, status: int, code: str) -> bool:
    error = response.json()["error"]
    return (response.status_code == status and set(error) == {"message", "type", "param", "code"}
            and error["code"] == code and response.headers["retry-after"] == str(RETRY_AFTER_S))


def test_clients_that_hang_up_stop_their_replies_and_the_next_is_served_at_once(
        chat, started_replies):
    replies = started_replies
    long = 200

    def hang_up(i: int) -> None:
        body = ask(f"Tell me everything about the number {i}.", max_tokens=long)
        if i % 2:  # streamed: hang up after the first event
            with httpx.stream("POST", f"{server.url}/v1/chat/completions", timeout=60,
                              json={**body, "stream": True}) as events:
                next(events.iter_lines())
            return
        with pytest.raises(httpx.ReadTimeout):  # not streamed: give up waiting, as clients do
            post(server, body, timeout=httpx.Timeout(60, read=0.2))

    with BackgroundServer(create_app(chat, MODEL, max_batch=2)) as server:
        with ThreadPoolExecutor(10) as pool:
            list(pool.map(hang_up, range(10)))
        start = time.perf_counter()
        done = post(server, ask("Name a colour.")).json()
        took = time.perf_counter() - start
    assert done["choices"][0]["message"]["content"] == ChatSession.reply(
        chat, [{"role": "user", "content": "Name a colour."}])
    # 10 replies of 200 tokens, two at a time, would take far longer than this.
    assert took < 5, f"the next request took {took:.1f} s"
    abandoned = replies[:10]
    assert all(r.finish_reason is None and r.completion_tokens < long for r in abandoned)


def test_a_full_queue_answers_429_with_retry_after(chat):
    with BackgroundServer(create_app(chat, MODEL, max_batch=1, max_queue=1)) as server:
        engine = server._server.config.app.state.engine
        chat.model.close()  # the first request holds the engine at its prefill
        try:
            with ThreadPoolExecutor(2) as pool:
                first = pool.submit(post, server, ask("Hi"))
                assert chat.model.held.wait(30)
                second = pool.submit(post, server, ask("Hello"))
                while not engine.waiting:
                    time.sleep(0.01)
                refused = post(server, ask("Anyone there?"))
                chat.model.gate.set()
                answered = [first.result(), second.result()]
        finally:
            chat.model.gate.set()
    assert is_openai_error(refused, 429, "server_busy"), refused.text
    assert "busy" in refused.json()["error"]["message"]
    assert [a.status_code for a in answered] == [200, 200]


def test_concurrent_replies_are_batched_and_equal_to_one_at_a_time_replies(chat):
    bodies = [ask(f"Question {i}: what is {'very ' * (i % 5)}good?", max_tokens=8 + 3 * i)
              for i in range(12)]
    alone = [ChatSession.reply(chat, b["messages"], max_new_tokens=b["max_tokens"])
             for b in bodies]
    chat.model.sizes.clear()
    with BackgroundServer(create_app(chat, MODEL, max_batch=8)) as server, \
            ThreadPoolExecutor(12) as pool:
        together = list(pool.map(lambda b: post(server, b).json(), bodies))
    assert [t["choices"][0]["message"]["content"] for t in together] == alone
    assert max(chat.model.sizes) > 1, "the requests should have shared a batch"
    assert max(chat.model.sizes) <= 8


def test_stopping_answers_waiting_and_unfinished_requests_in_openais_error_shape(chat):
    server = BackgroundServer(create_app(chat, MODEL, max_batch=1))
    engine = server._server.config.app.state.engine
    chat.model.close()
    lines = []

    def read_stream():
        body = ask("Tell me a long story.", max_tokens=200, stream=True)
        with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body,
                          timeout=60) as events:
            lines.extend(line for line in events.iter_lines() if line)

    try:
        with ThreadPoolExecutor(2) as pool:
            streamed = pool.submit(read_stream)
            assert chat.model.held.wait(30)
            waiting = pool.submit(post, server, ask("Hello"))
            while not engine.waiting:
                time.sleep(0.01)
            stopper = threading.Thread(target=server.stop, kwargs={"grace": 0.2})
            stopper.start()
            refused = waiting.result(timeout=30)  # at once, though the engine is held
            chat.model.gate.set()
            streamed.result(timeout=30)
            stopper.join(30)
    finally:
        chat.model.gate.set()
        server.stop()
    assert is_openai_error(refused, 503, "server_shutting_down"), refused.text
    events = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert lines[-1] == "data: [DONE]" and events[0]["choices"][0]["delta"]["role"] == "assistant"
    error = events[-1]["error"]
    assert error["code"] == "server_shutting_down" and error["type"] == "server_error"
    assert not stopper.is_alive()
