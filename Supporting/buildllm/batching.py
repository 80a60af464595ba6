"""Continuous batching (Meeting 7): many replies written at once by one model, as vLLM and TGI
serve many users, in a few dozen lines.

Decoding one token reads every weight of the model for a few multiply-adds each, so the next
token of 8 sequences costs little more than that of one (`inference.generate_batch`). A
server cannot wait for 8 requests to arrive together, though, nor keep a short reply waiting
for a long one. Continuous batching lets the batch change at every step:

    while anything is waiting or being written:
        newcomers join: each prompt goes through the model alone (its "prefill"), and its
                        keys and values are merged into the batch's KV cache
        one step:       one forward pass gives the next token of every sequence in the batch
        leavers leave:  a sequence that is finished, or whose client has gone, is removed

`Batch` is that data structure; `Engine` is the thread that owns the model and runs the loop.

The design chosen here is the simplest that stays exact. The batch shares one KV cache whose
rows are aligned on the right, as `inference.left_pad` aligns prompts: every sequence's next
token lands in the same column, and a padding mask (True at real tokens) hides the columns
where a shorter sequence has nothing. A newcomer is prefilled alone, exactly as
`generation.stream` would, then its keys and values are copied into a new, wider or taller,
cache. When sequences leave, their rows are dropped, and so are the columns that have become
padding in every row, so the cache never holds more than the longest sequence. Real servers
avoid these copies with a paged cache (vLLM's PagedAttention: fixed-size blocks of keys and
values, a table per sequence), and prefill newcomers in the same step as the others decode;
both are faster and harder to read.

Because the mask hides padding and positions count real tokens only (`GPTModel.forward`),
each sequence gets the tokens it would get alone: greedy replies are those of
`ChatSession.reply`, up to float rounding deciding a near tie, which a batch of another size
can tip. A sampled request draws from a torch.Generator of its own, seeded with its `seed`,
so its reply does not depend on its batch-mates either.

    >>> engine = Engine(model, max_batch=8)
    >>> engine.submit(Request(ids, 20), on_token=print_and_go_on, on_end=done)
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .generation import KVCache, _chooser
from .model import GPTModel
from .utils import eval_mode

__all__ = ["Batch", "Engine", "EngineStopped", "QueueFull", "Request", "Ticket"]


@dataclass(frozen=True)
class Request:
    """What to generate: a prompt's token ids, how many new tokens at most, and the sampling
    settings of `generation.next_token` (temperature 0: greedy)."""

    ids: tuple[int, ...]
    max_new_tokens: int
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "ids", tuple(int(i) for i in self.ids))
        if not self.ids or self.max_new_tokens < 1:
            raise ValueError(f"a request needs at least one prompt token and one new token, got "
                             f"{len(self.ids)} and {self.max_new_tokens}")


class QueueFull(RuntimeError):
    """The engine already has `max_queue` requests waiting: ask again later."""


class EngineStopped(RuntimeError):
    """The engine has stopped (the server is shutting down) before the reply was finished."""


@dataclass(eq=False)
class Ticket:
    """A submitted request, as the engine tracks it. `cancel()` (from any thread) removes it
    from the batch before the next step; `on_end` is then called as for a finished one."""

    request: Request
    on_token: Callable[[int], bool]  # each new token; return False when the reply is over
    on_end: Callable[[BaseException | None], None]  # once: None, or what went wrong
    cancelled: bool = False
    generated: int = 0
    choose: Callable = field(init=False, repr=False)

    def cancel(self) -> None:
        self.cancelled = True

    def take(self, token: int) -> bool:
        """Hand `token` to the caller; whether the sequence goes on."""
        self.generated += 1
        wants_more = self.on_token(token)
        return bool(wants_more) and self.generated < self.request.max_new_tokens


class Batch:
    """The sequences being decoded together, and the KV cache they share, aligned right.

    `cache` holds `cache.length` columns; `mask` (rows, columns) is True where a row has a real
    token; `last` (rows, 1) is each row's newest token, not yet in the cache.
    """

    def __init__(self, model: GPTModel):
        self.model = model
        self.tickets: list[Ticket] = []
        self.cache: KVCache | None = None
        self.mask = self.last = None

    def __len__(self) -> int:
        return len(self.tickets)

    @torch.inference_mode()
    def join(self, ticket: Ticket) -> int:
        """Prefill `ticket`'s prompt alone, merge its keys and values into the batch, and
        return its first new token."""
        request, model = ticket.request, self.model
        device = next(model.parameters()).device
        ticket.choose = _chooser(request.temperature, request.top_k, request.top_p,
                                 request.seed, device)
        alone = KVCache(model, 1, len(request.ids))
        with eval_mode(model):
            token = ticket.choose(model(torch.tensor([request.ids], device=device), alone)[:, -1])
        old = 0 if self.cache is None else self.cache.length
        width = max(old, alone.length)
        tickets = [*self.tickets, ticket]
        cache = self._empty(tickets, width)
        mask = torch.zeros(len(tickets), width, dtype=torch.bool, device=device)
        mask[-1, width - alone.length:] = True
        if self.cache is not None:
            self._place(cache, slice(0, -1), width - old, self.cache.keys[:, :, :, :old],
                        self.cache.values[:, :, :, :old])
            mask[:-1, width - old:] = self.mask
        self._place(cache, slice(-1, None), width - alone.length, alone.keys, alone.values)
        last = token if self.last is None else torch.cat([self.last, token])
        self.tickets, self.cache, self.mask, self.last = tickets, cache, mask, last
        return int(token)

    def _empty(self, tickets: list[Ticket], width: int) -> KVCache:
        """A cache for `tickets` holding `width` columns, with room for every one to finish."""
        room = max(t.request.max_new_tokens - t.generated for t in tickets)
        cache = KVCache(self.model, len(tickets), min(width + room, self.model.cfg.context_length))
        cache.length = width
        return cache

    @staticmethod
    def _place(target: KVCache, rows: slice, at: int, keys: torch.Tensor,
               values: torch.Tensor) -> None:
        """Write keys and values (layers, rows, heads, columns, head_dim) into `target`'s
        `rows`, from column `at` on."""
        target.keys[:, rows, :, at:at + keys.shape[3]] = keys
        target.values[:, rows, :, at:at + keys.shape[3]] = values

    @torch.inference_mode()
    def step(self) -> list[int]:
        """One forward pass: the next token of every row, in order."""
        with eval_mode(self.model):
            mask = torch.cat([self.mask, torch.ones_like(self.last, dtype=torch.bool)], dim=1)
            logits = self.model(self.last, self.cache, attention_mask=mask)[:, -1]
        self.mask = mask
        self.last = torch.cat([t.choose(row) for t, row in
                               zip(self.tickets, logits.split(1), strict=True)])
        return self.last.squeeze(1).tolist()

    def keep(self, rows: list[int]) -> None:
        """Keep only these rows, and drop the columns that are then padding in every row."""
        if not rows:
            self.tickets, self.cache, self.mask, self.last = [], None, None, None
            return
        index = torch.tensor(rows, device=self.mask.device)
        mask = self.mask[index]
        first = int(mask.any(dim=0).int().argmax())  # the first column any row still uses
        kept = [self.tickets[r] for r in rows]
        cache = self._empty(kept, self.cache.length - first)
        end = self.cache.length
        self._place(cache, slice(None), 0, self.cache.keys[:, index, :, first:end],
                    self.cache.values[:, index, :, first:end])
        self.tickets, self.cache, self.mask, self.last = kept, cache, mask[:, first:], \
            self.last[index]


class Engine:
    """The thread that owns the model: it admits waiting requests into the batch (at most
    `max_batch` at a time), steps the batch, and tells each request's caller its tokens.

    `submit` is called from any thread and returns at once; at most `max_queue` requests
    wait, and one more raises QueueFull. A request's callbacks run in the engine's thread:
    `on_token(token)` for each new token (False ends the reply), then `on_end(error)` once,
    with None when the reply ended or was cancelled, else the exception. An exception in one
    request's callbacks or prefill ends that request only; one in a batched step ends the
    requests of that batch, and the engine goes on with the next.
    """

    def __init__(self, model: GPTModel, *, max_batch: int = 8, max_queue: int = 64):
        if max_batch < 1 or max_queue < 1:
            raise ValueError(f"max_batch and max_queue must be at least 1, got {max_batch} and "
                             f"{max_queue}")
        self.batch, self.max_batch, self.max_queue = Batch(model), max_batch, max_queue
        self.waiting: deque[Ticket] = deque()
        self._wake = threading.Condition()
        self._stop_at: float | None = None  # when stopping: the end of the grace period
        self._thread = threading.Thread(target=self._loop, name="buildllm-batching",
                                        daemon=True)  # never keeps a stopping process alive
        self._thread.start()

    def submit(self, request: Request, on_token: Callable[[int], bool],
               on_end: Callable[[BaseException | None], None]) -> Ticket:
        """Queue `request`; raises QueueFull or EngineStopped instead when it cannot wait."""
        ticket = Ticket(request, on_token, on_end)
        with self._wake:
            if self._stop_at is not None:
                raise EngineStopped("the server is shutting down")
            if len(self.waiting) >= self.max_queue:
                raise QueueFull(f"all {self.max_queue} places in the queue are taken")
            self.waiting.append(ticket)
            self._wake.notify()
        return ticket

    def stop(self, grace: float = 0.0) -> None:
        """Refuse new requests and end the waiting ones with EngineStopped at once; give the
        replies being written `grace` seconds to finish, then end them the same way."""
        with self._wake:
            if self._stop_at is None:
                self._stop_at = time.monotonic() + grace
            waiting, self.waiting = list(self.waiting), deque()
            self._wake.notify()
        for ticket in waiting:
            _end(ticket, EngineStopped("the server is shutting down"))
        self._thread.join()

    def _loop(self) -> None:
        while self._admit():
            self._step()
        for ticket in self.batch.tickets:  # unfinished when the grace period ended
            _end(ticket, EngineStopped("the server is shutting down"))
        self.batch.keep([])

    def _admit(self) -> bool:
        """Move waiting requests into the batch while there is room; wait while there is
        nothing to do. False once the engine is stopping and its grace period is over."""
        with self._wake:
            while not self.waiting and not self.batch and self._stop_at is None:
                self._wake.wait()
            if self._stop_at is not None:  # stop() has ended the waiting requests
                return bool(self.batch) and time.monotonic() < self._stop_at
            room = self.max_batch - len(self.batch)
            newcomers = [self.waiting.popleft() for _ in range(min(room, len(self.waiting)))]
        for ticket in newcomers:
            if not ticket.cancelled:
                self._join(ticket)
            else:
                _end(ticket, None)
        return True

    def _join(self, ticket: Ticket) -> None:
        try:
            going_on = ticket.take(self.batch.join(ticket))
        except Exception as err:  # noqa: BLE001 -- this request fails, the others go on
            self._leave({ticket: err})
            return
        if not going_on:
            self._leave({ticket: None})

    def _step(self) -> None:
        """Drop the cancelled rows, decode one token for every other row, drop the finished."""
        self._leave({t: None for t in self.batch.tickets if t.cancelled})
        if not self.batch:
            return
        try:
            tokens = self.batch.step()
        except Exception as err:  # noqa: BLE001 -- this batch fails, the engine goes on
            self._leave(dict.fromkeys(self.batch.tickets, err))
            return
        leaving = {}
        for ticket, token in zip(self.batch.tickets, tokens, strict=True):
            try:
                if not ticket.take(token):
                    leaving[ticket] = None
            except Exception as err:  # noqa: BLE001 -- the caller's failure ends its own only
                leaving[ticket] = err
        self._leave(leaving)

    def _leave(self, leaving: dict[Ticket, BaseException | None]) -> None:
        if not leaving:
            return
        self.batch.keep([r for r, t in enumerate(self.batch.tickets) if t not in leaving])
        for ticket, error in leaving.items():
            _end(ticket, error)


def _end(ticket: Ticket, error: BaseException | None) -> None:
    """Tell the caller its request is over; its callback failing changes nothing here."""
    with contextlib.suppress(Exception):  # nobody is left to tell
        ticket.on_end(error)
