"""Continuous batching (buildllm.batching): the engine writes many replies at once, each the
reply it gets alone, while requests join and leave, are cancelled or fail."""

import threading
import time

import pytest

from buildllm import generation
from buildllm.batching import Engine, EngineStopped, QueueFull, Request
from buildllm.pretrained import COURSE_MODEL_DIR
from buildllm.runs import load_run

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

TEXTS = ["ROMEO:", "To be, or not to be, that is the question:", "KING HENRY", "O",
         "First Citizen:\nBefore we proceed any further, hear me speak.", "My lord,",
         "Now is the winter of our discontent\nMade glorious summer by this sun of York;",
         "JULIET:\nWhat's in a name?", "Good morrow", "Exeunt"]


@pytest.fixture(scope="module")
def course():
    model, tokenizer = load_run(COURSE_MODEL_DIR)
    return model.eval(), tokenizer


class Caller:
    """One request's side of the engine: the tokens it is told, how it ended, and the batch
    size at each token."""

    def __init__(self, engine: Engine, stop_after: int | None = None,
                 fail_after: int | None = None, cancel_after: int | None = None):
        self.engine, self.stop_after, self.fail_after = engine, stop_after, fail_after
        self.cancel_after, self.ticket = cancel_after, None
        self.tokens, self.sizes, self.error = [], [], None
        self.done = threading.Event()

    def on_token(self, token: int) -> bool:
        self.tokens.append(token)
        self.sizes.append(len(self.engine.batch))
        if self.fail_after is not None and len(self.tokens) == self.fail_after:
            raise RuntimeError("the caller failed")
        if len(self.tokens) == self.cancel_after:  # as a client that hangs up would
            self.ticket.cancel()
        return self.stop_after is None or len(self.tokens) < self.stop_after

    def on_end(self, error) -> None:
        self.error = error
        self.done.set()

    def submit(self, request: Request):
        self.ticket = self.engine.submit(request, self.on_token, self.on_end)
        return self.ticket


def alone(model, request: Request) -> list[int]:
    """What one-at-a-time generation writes for `request` (generation.stream)."""
    return list(generation.stream(model, list(request.ids), request.max_new_tokens,
                                  temperature=request.temperature, top_k=request.top_k,
                                  top_p=request.top_p, seed=request.seed))


def staggered(engine: Engine, requests: list[Request], pause: float = 0.01) -> list[Caller]:
    """Submit the requests a little apart, so that they join a batch already running."""
    callers = [Caller(engine) for _ in requests]
    for i, (caller, request) in enumerate(zip(callers, requests, strict=True)):
        caller.submit(request)
        time.sleep(pause * (i % 3))
    for caller in callers:
        assert caller.done.wait(60)
    return callers


def test_greedy_replies_in_a_changing_batch_are_those_written_alone(course):
    model, tok = course
    lengths = [5, 30, 17, 40, 23, 8, 50, 12, 3, 35, 1, 44, 25, 2, 60, 16]
    requests = [Request(tok.encode(TEXTS[i % len(TEXTS)]), n) for i, n in enumerate(lengths)]
    engine = Engine(model, max_batch=6)
    callers = staggered(engine, requests)
    engine.stop()
    assert [c.tokens for c in callers] == [alone(model, r) for r in requests]
    assert all(c.error is None for c in callers)
    sizes = [s for c in callers for s in c.sizes]
    assert max(sizes) == 6, "the batch should fill up"
    assert len(set(sizes)) > 3, "requests should join and leave while others are written"


def test_a_seeded_sampled_reply_ignores_its_batch_mates(course):
    model, tok = course
    requests = [Request(tok.encode(text), 16, temperature=1.0, top_k=50, seed=i)
                for i, text in enumerate(TEXTS[:6])]
    engine = Engine(model, max_batch=4)
    callers = staggered(engine, requests)
    engine.stop()
    written = [c.tokens for c in callers]
    assert written == [alone(model, r) for r in requests]
    assert len({tuple(w) for w in written}) == len(requests)


def test_the_cache_holds_no_more_than_the_longest_sequence(course):
    model, tok = course
    engine = Engine(model, max_batch=2)
    batch = engine.batch
    long_prompt, short_prompt = tok.encode(TEXTS[6]), tok.encode("O")
    seen = []

    def watch(token: int) -> bool:  # in the engine's thread: the batch as it is now
        seen.append((len(batch), batch.cache.length, batch.mask.sum(dim=1).tolist()))
        return True

    done = threading.Event()
    engine.submit(Request(long_prompt, 3), watch, lambda error: None)
    engine.submit(Request(short_prompt, 12), watch, lambda error: done.set())
    assert done.wait(60)
    engine.stop()
    for rows, width, real in seen:
        assert len(real) == rows and width == max(real), "a column of padding only is kept"
    assert any(rows == 2 for rows, _, _ in seen) and seen[-1][0] == 1


def test_the_batch_never_exceeds_max_batch_and_a_cancelled_request_frees_its_place(course):
    model, tok = course
    engine = Engine(model, max_batch=1)
    first, second = Caller(engine, cancel_after=3), Caller(engine)
    first.submit(Request(tok.encode("ROMEO:"), 200))
    second.submit(Request(tok.encode("JULIET:"), 5))
    assert first.done.wait(30) and second.done.wait(60)
    engine.stop()
    assert first.error is None and len(first.tokens) == 3, "no step after the cancel"
    assert second.tokens == alone(model, Request(tok.encode("JULIET:"), 5))
    assert max(first.sizes + second.sizes) == 1, "one at a time: the second waited"


def test_a_failing_request_ends_alone_and_the_others_are_written(course):
    model, tok = course
    engine = Engine(model, max_batch=4)
    good = [Request(tok.encode(text), 20) for text in TEXTS[:3]]
    callers = [Caller(engine) for _ in good]
    failing, stopping, bad_prompt = (Caller(engine, fail_after=4), Caller(engine, stop_after=2),
                                     Caller(engine))
    failing.submit(good[0])
    bad_prompt.submit(Request([model.cfg.vocab_size + 5], 10))  # no such token: prefill fails
    stopping.submit(good[1])
    for caller, request in zip(callers, good, strict=True):
        caller.submit(request)
    for caller in (*callers, failing, stopping, bad_prompt):
        assert caller.done.wait(60)
    engine.stop()
    assert [c.tokens for c in callers] == [alone(model, r) for r in good]
    assert isinstance(failing.error, RuntimeError) and len(failing.tokens) == 4
    assert stopping.error is None and stopping.tokens == alone(model, good[1])[:2]
    assert isinstance(bad_prompt.error, IndexError) and not bad_prompt.tokens


def test_a_full_queue_refuses_and_stopping_ends_waiting_and_unfinished_requests(course):
    model, tok = course
    engine = Engine(model, max_batch=1, max_queue=1)
    held, release = threading.Event(), threading.Event()
    writing = Caller(engine)
    writing.on_token = lambda token: held.set() or release.wait(30)  # holds the engine
    writing.submit(Request(tok.encode("ROMEO:"), 200))
    assert held.wait(30)
    waiting = Caller(engine)
    waiting.submit(Request(tok.encode("JULIET:"), 5))
    with pytest.raises(QueueFull, match="all 1 places in the queue are taken"):
        Caller(engine).submit(Request(tok.encode("KING:"), 5))
    stopper = threading.Thread(target=engine.stop, kwargs={"grace": 0.2})
    stopper.start()
    assert waiting.done.wait(10), "a waiting request is ended at once"
    assert isinstance(waiting.error, EngineStopped) and not writing.done.is_set()
    release.set()
    stopper.join(30)
    assert not stopper.is_alive()
    assert writing.done.is_set() and waiting.done.is_set()
    assert isinstance(writing.error, EngineStopped) and isinstance(waiting.error, EngineStopped)
    with pytest.raises(EngineStopped):
        Caller(engine).submit(Request(tok.encode("KING:"), 5))


def test_bad_settings_are_refused_with_a_clear_message(course):
    model, _ = course
    with pytest.raises(ValueError, match="at least one prompt token and one new token"):
        Request([], 5)
    with pytest.raises(ValueError, match="must be at least 1, got 0 and 64"):
        Engine(model, max_batch=0)
