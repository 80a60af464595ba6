"""Serving a model over HTTP (Meeting 7): OpenAI's chat-completions API and a chat page.

    python -m buildllm.serve --run runs/instruct --port 8000
    python -m buildllm.serve --check    # start, answer one question through the API, stop

Clients written for OpenAI's API then work unchanged, streaming included:

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")  # or --api-key's
    client.chat.completions.create(model="instruct", messages=[{"role": "user", ...}])

and http://127.0.0.1:8000/ is a chat page that shows each reply as it is written. The server
is FastAPI, run by uvicorn. Endpoints: POST /v1/chat/completions (a JSON reply, or with
"stream": true Server-Sent Events of chat.completion.chunk objects ending in `data: [DONE]`),
GET /v1/models, GET /health, GET / (the page). Bad requests get a 4xx and OpenAI's error
shape, {"error": {"message", "type", "param", "code"}}, and the server goes on serving.

One thread, `buildllm.batching`'s engine, owns the model and writes up to `max_batch` replies
at once (continuous batching: a reply leaves and a waiting one joins at any step). The event
loop never waits for the model: it goes on accepting connections, refusing bad requests and
passing each piece of text on as soon as the engine has it. When a client hangs up, streamed
or not, its reply stops after the token being computed. At most `max_queue` requests wait;
the next gets a 429 with a Retry-After header. When the server stops, waiting requests get a
503, and replies being written get a few seconds to finish (then a 503, or an error event).

The default address, 127.0.0.1, accepts connections from this machine only. The server also
checks who calls it, since a web page open in a browser on this machine can call it too:

- a POST body must be JSON (415): a page may send a plain-text POST to any address without
  asking, but not a JSON one;
- the Host header must be localhost, an IP address or a name given with --allowed-host
  (421): a page whose name its owner re-points at this machine ("DNS rebinding") sends its
  own name; --allowed-host '*' accepts any, as behind Colab's port proxy;
- with --api-key KEY (or BUILDLLM_API_KEY), the API answers only requests that carry
  `Authorization: Bearer KEY`, as every OpenAI client sends its api_key (401). The chat page
  and /health stay open, and the page asks for the key;
- no other site's scripts may read the replies (CORS), unless --cors-origin names it.

Serving on 0.0.0.0 (every network this machine is on) without a key prints a warning.
Bodies over 1 MiB (413), more than 400 messages (400) and bodies that take over 30 s to
arrive (408) are refused; fitting a conversation into the context runs off the event loop,
so /health and the other clients are answered meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import ipaddress
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Literal

import uvicorn
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException

from .batching import Engine, EngineStopped, QueueFull
from .chat import ChatSession, ContextLengthError, Reply
from .runs import add_run_flag

__all__ = ["MAX_BODY_BYTES", "MAX_MESSAGES", "APIError", "BackgroundServer", "ChatRequest",
           "create_app", "main"]

MAX_BODY_BYTES = 1 << 20  # 1 MiB: far more text than any context here holds
MAX_MESSAGES = 400  # per request: far more turns than any context here holds
CHECK_QUESTION = "Who wrote Hamlet?"  # what `--check` asks


class APIError(Exception):
    """A request the server refuses, with its HTTP status and OpenAI's error fields."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None, kind: str = "invalid_request_error",
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = (
            status, message, param, code, kind)
        self.headers = headers  # e.g. Retry-After

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


# -- the request -------------------------------------------------------------------------

class _TextPart(BaseModel):
    type: Literal["text"]
    text: str


class _Message(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]  # developer: OpenAI's new "system"
    content: str  # or a list of text parts, joined by the validator below
    name: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _join_text_parts(cls, content):
        if isinstance(content, list):
            try:
                return "\n".join(_TextPart.model_validate(part).text for part in content)
            except ValidationError:
                raise ValueError("content parts must be {'type': 'text', 'text': ...}: this "
                                 "model reads text only") from None
        if not isinstance(content, str):
            raise ValueError("content must be a string, or a list of text parts")
        return content

    def as_chat(self) -> dict:
        role = "system" if self.role == "developer" else self.role
        return {"role": role, "content": self.content}


class _StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    """The fields of a chat-completions request that this server reads.

    Sampling settings left out take the server's defaults (--temperature, 0: greedy, unlike
    OpenAI's 1). Other fields are ignored, except those it cannot honour (more than one
    choice, stop sequences, penalties, tools, log-probabilities...), which are refused by name
    unless they hold their do-nothing value. `top_k` is an extension, as in vLLM and llama.cpp.
    """

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[_Message]
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=1)
    seed: int | None = None
    stream: bool | None = False
    stream_options: _StreamOptions | None = None

    @field_validator("messages", mode="before")
    @classmethod
    def _not_too_many(cls, messages):
        if isinstance(messages, list) and len(messages) > MAX_MESSAGES:
            raise ValueError(f"{len(messages)} messages is more than the {MAX_MESSAGES} this "
                             "server takes: leave out the oldest turns")
        return messages


# Fields this server cannot honour, and the values that ask for nothing.
_UNSUPPORTED = {"n": (1,), "stop": ("", []), "logprobs": (False,), "top_logprobs": (0,),
                "frequency_penalty": (0,), "presence_penalty": (0,), "logit_bias": ({},),
                "tools": ([],), "functions": ([],), "response_format": ({"type": "text"},)}


def _where(loc: tuple) -> str:
    """Pydantic's error location as a field path: ("messages", 0, "role") -> messages[0].role."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path


def _parse(body: bytes) -> ChatRequest:
    try:
        request = ChatRequest.model_validate_json(body)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        if first["type"] == "json_invalid":
            raise APIError(400, f"the request body is not valid JSON ({first['msg']})") from None
        where, message = _where(first["loc"]), first["msg"].removeprefix("Value error, ")
        raise APIError(400, f"{where or 'the request body'}: {message}",
                       param=where or None) from None
    for name, value in (request.model_extra or {}).items():
        if name in _UNSUPPORTED and value is not None and value not in _UNSUPPORTED[name]:
            raise APIError(400, f"{name}={json.dumps(value)} is not supported by this server",
                           param=name, code="unsupported_parameter")
    return request


# -- the engine that owns the model -----------------------------------------------------

_END = object()  # the last event of a job
RETRY_AFTER_S = 2  # what a client refused for a full queue is told to wait
SHUTDOWN_GRACE_S = 3.0  # how long replies being written get to finish when the server stops


def _unavailable(status: int, message: str) -> APIError:
    """A 429 (the queue is full) or a 503 (the server is stopping), saying when to try again."""
    busy = status == 429
    return APIError(status, message, kind="rate_limit_error" if busy else "server_error",
                    code="server_busy" if busy else "server_shutting_down",
                    headers={"Retry-After": str(RETRY_AFTER_S)})


class _Job:
    """One reply being written by the engine (its thread calls `on_token` and `on_end`), read
    as it comes by the event loop (`pieces`)."""

    def __init__(self, reply: Reply, engine: Engine):
        self.reply, self.loop = reply, asyncio.get_running_loop()
        self.events: asyncio.Queue = asyncio.Queue()  # text pieces, an exception, then _END
        self.cancelled = False  # set by the event loop when the client has gone
        try:
            self.ticket = engine.submit(reply.request, self.on_token, self.on_end)
        except QueueFull as err:
            raise _unavailable(429, f"the server is busy ({err}); try again in "
                               f"{RETRY_AFTER_S} s") from None
        except EngineStopped:
            raise _unavailable(503, "the server is shutting down") from None

    def on_token(self, token: int) -> bool:
        """In the engine's thread: pass on the text this token adds; False once it is over."""
        if piece := self.reply.add(token):
            self._send(piece)
        return self.reply.finish_reason is None

    def on_end(self, error: BaseException | None) -> None:
        """In the engine's thread: the reply is over, finished, cancelled or failed."""
        if isinstance(error, EngineStopped):
            error = _unavailable(503, "the server is shutting down: this reply was not finished")
        out_of_tokens = error is None and self.reply.finish_reason is None and not self.cancelled
        if out_of_tokens and (piece := self.reply.end()):
            self._send(piece)
        if error is not None:
            self._send(error)
        self._send(_END)

    def cancel(self) -> None:
        """The client has gone: the engine drops the reply before its next step."""
        self.cancelled = True
        self.ticket.cancel()

    def _send(self, event) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the event loop has closed: the server is stopping
            self.cancel()

    async def pieces(self) -> AsyncIterator[str]:
        """In the event loop: the reply's text pieces as they are written."""
        try:
            while (event := await self.events.get()) is not _END:
                if isinstance(event, BaseException):
                    raise event
                yield event
        finally:
            self.cancel()

    async def text(self, request: Request) -> str:
        """The whole reply; cancelled as soon as the client hangs up, waiting or not."""
        watcher = asyncio.create_task(self._cancel_on_hang_up(request))
        try:
            return "".join([piece async for piece in self.pieces()])
        finally:
            watcher.cancel()

    async def _cancel_on_hang_up(self, request: Request) -> None:
        # Once the body is read, the server's next message is the disconnect.
        while (await request.receive())["type"] != "http.disconnect":
            pass
        self.cancel()


# -- the app -----------------------------------------------------------------------------

def _sse(data: dict | str) -> str:
    """One Server-Sent Event carrying JSON (or the literal [DONE])."""
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


def create_app(chat: ChatSession, model_name: str = "buildllm", *, api_key: str | None = None,
               allowed_hosts: Sequence[str] = (), cors_origins: Sequence[str] = (),
               read_timeout: float = 30.0, max_batch: int = 8, max_queue: int = 64) -> FastAPI:
    """The FastAPI app serving `chat`'s model under `model_name`; run it with uvicorn.

    The settings are the command's, whose reasons the module's docstring gives: `api_key`,
    `allowed_hosts` (names besides localhost and IP addresses; "*": any) and `cors_origins`
    (e.g. "https://example.org") say who may call it; a body not all there `read_timeout`
    seconds after its headers gets a 408; `max_batch` replies are written together (1: one
    at a time) while `max_queue` more wait, and the next request gets a 429.

    >>> uvicorn.run(create_app(ChatSession.from_run("runs/instruct"), "instruct"), port=8000)
    """
    page = (resources.files("buildllm") / "static" / "chat.html").read_text("utf-8")
    card = {"id": model_name, "object": "model", "created": int(time.time()),
            "owned_by": "buildllm"}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.engine = Engine(chat.model, max_batch=max_batch, max_queue=max_queue)
        yield
        app.state.engine.stop()  # at once: a server run by _Server has stopped it already

    app = FastAPI(title="buildllm", summary="An OpenAI-compatible chat server for a buildllm "
                  "model", lifespan=lifespan)
    _answer_errors_as_openai_does(app)
    app.add_middleware(_CallerCheck, api_key=api_key, hosts=allowed_hosts)
    if cors_origins:  # added last, so outermost: it answers browsers' preflight requests
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins),
                           allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def chat_page() -> str:
        return page

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": model_name}

    @app.get("/v1/models")
    async def list_models() -> dict:
        return {"object": "list", "data": [card]}

    @app.get("/v1/models/{name:path}")
    async def get_model(name: str) -> dict:
        _check_model(name, model_name)
        return card

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        req = _parse(await _read_body(request, MAX_BODY_BYTES, read_timeout))
        _check_model(req.model, model_name)
        return await _complete(chat, req, model_name, request)

    return app


def _answer_errors_as_openai_does(app: FastAPI) -> None:
    """Every error, the server's own or the framework's, in OpenAI's shape with its status."""

    @app.exception_handler(APIError)
    async def api_error(request: Request, err: APIError) -> JSONResponse:
        return err.response()

    @app.exception_handler(HTTPException)  # unknown paths, wrong methods
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        return APIError(err.status_code, f"{request.method} {request.url.path}: {err.detail}",
                        headers=err.headers).response()

    @app.exception_handler(Exception)
    async def server_error(request: Request, err: Exception) -> JSONResponse:
        return APIError(500, f"the server failed: {type(err).__name__}: {err}",
                        kind="server_error").response()


class _CallerCheck:
    """Refuse, in OpenAI's error shape, a request that is not for this server: a Host it does
    not answer to (421), a missing or wrong API key (401), a POST body that is not JSON (415).
    The module's docstring says why each is refused."""

    def __init__(self, app, api_key: str | None, hosts: Sequence[str]):
        self.app, self.any_host = app, "*" in hosts
        # testserver: the name FastAPI's TestClient sends (Meeting 7's exercises use one)
        self.hosts = {"localhost", "testserver", *(_host_name(h) for h in hosts)}
        self.key = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and (refusal := self.refusal(scope)):
            return await refusal.response()(scope, receive, send)
        await self.app(scope, receive, send)

    def refusal(self, scope) -> APIError | None:
        headers = Headers(scope=scope)
        host = _host_name(headers.get("host", ""))
        if not (self.any_host or host in self.hosts or _ip_address(host) is not None):
            return APIError(421, f"this server does not answer to the name {host!r}; start it "
                            f"with --allowed-host {host} (create_app's allowed_hosts) to let "
                            "clients use that name",
                            code="misdirected_request")
        authorization = headers.get("authorization", "").encode("latin-1")
        if (self.key and scope["path"].startswith("/v1/")
                and not hmac.compare_digest(authorization, self.key)):
            return APIError(401, "a missing or wrong API key: send the server's key as "
                            "'Authorization: Bearer <key>' (OpenAI clients: api_key=...)",
                            kind="authentication_error", code="invalid_api_key",
                            headers={"WWW-Authenticate": "Bearer"})
        media_type = headers.get("content-type", "").partition(";")[0].strip().lower()
        if scope["method"] == "POST" and media_type != "application/json":
            return APIError(415, f"the request body must be JSON (Content-Type: "
                            f"application/json), not {media_type or 'unlabelled'}",
                            code="unsupported_media_type")
        return None


def _host_name(host: str) -> str:
    """A Host header's name, without the port: "[::1]:8000" -> "[::1]", "::1" -> "[::1]"."""
    host = host.strip().lower()
    if host.count(":") > 1 and not host.startswith("["):  # a bare IPv6 address
        return f"[{host}]"
    return host.rsplit(":", 1)[0] if ":" in host and not host.endswith("]") else host


def _ip_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address a host spells ("127.0.0.1", "[::1]"), or None for a name. DNS rebinding
    can only send a name, the attacker's, so an address is always a safe Host."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _check_model(name: str, served: str) -> None:
    if name != served:
        raise APIError(404, f"the model {name!r} does not exist; this server serves "
                       f"{served!r}", param="model", code="model_not_found")


async def _complete(chat: ChatSession, req: ChatRequest, model_name: str, request: Request):
    """The reply to a chat-completions request: one JSON body, or a stream of events."""
    reply = await asyncio.to_thread(_start_reply, chat, req)  # encoding 1 MiB takes a while
    job = _Job(reply, request.app.state.engine)
    reply_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    def body(kind: str, **fields) -> dict:  # what every reply and chunk starts with
        return {"id": reply_id, "object": kind, "created": created, "model": model_name,
                **fields}

    def usage() -> dict:  # once the reply is done
        return {"prompt_tokens": reply.prompt_tokens,
                "completion_tokens": reply.completion_tokens,
                "total_tokens": reply.prompt_tokens + reply.completion_tokens}

    if not req.stream:
        text = await job.text(request)
        return body("chat.completion", system_fingerprint=None,
                    choices=[{"index": 0, "message": {"role": "assistant", "content": text},
                              "finish_reason": reply.finish_reason, "logprobs": None}],
                    usage=usage())

    def chunk(delta: dict, finish_reason: str | None = None) -> str:
        return _sse(body("chat.completion.chunk", system_fingerprint=None,
                         choices=[{"index": 0, "delta": delta, "logprobs": None,
                                   "finish_reason": finish_reason}]))

    async def events() -> AsyncIterator[str]:
        try:
            yield chunk({"role": "assistant", "content": ""})
            try:
                async for piece in job.pieces():
                    yield chunk({"content": piece})
                yield chunk({}, reply.finish_reason)
                if req.stream_options and req.stream_options.include_usage:
                    yield _sse(body("chat.completion.chunk", choices=[], usage=usage()))
            except Exception as err:  # noqa: BLE001 -- too late for a status: say it here
                failed = err if isinstance(err, APIError) else APIError(
                    500, f"generation failed: {type(err).__name__}: {err}", kind="server_error")
                yield _sse(failed.body())
            yield _sse("[DONE]")
        finally:
            job.cancel()  # the client may have gone: stop generating for it

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache",
                                      "X-Accel-Buffering": "no"})  # proxies: do not buffer


async def _read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The request body, refused with 413 once it passes `limit` bytes (before reading it all
    when the client says its length), and with 408 if it is not all there in `timeout` s."""
    too_big = APIError(413, f"the request body is over {limit:,} bytes", code="request_too_large")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_big

    async def read() -> bytes:
        body = bytearray()
        async for part in request.stream():
            body += part
            if len(body) > limit:
                raise too_big
        return bytes(body)

    try:
        return await asyncio.wait_for(read(), timeout)
    except TimeoutError:
        raise APIError(408, f"the request body did not arrive within {timeout:g} s: send it "
                       "all at once", code="request_timeout") from None


def _start_reply(chat: ChatSession, req: ChatRequest) -> Reply:
    """Check the request against the model and prepare its reply (the model has not run yet)."""
    name = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
    n_new = getattr(req, name) or chat.defaults["max_new_tokens"]  # both are >= 1 when given
    if n_new >= chat.context_length:
        raise APIError(400, f"{name}={n_new} leaves no room for a prompt: this model's context "
                       f"is {chat.context_length} tokens, prompt and reply together",
                       param=name, code="invalid_value")
    sampling = req.model_dump(include={"temperature", "top_p", "top_k", "seed"}, exclude_none=True)
    try:
        return chat.stream([m.as_chat() for m in req.messages], max_new_tokens=n_new, **sampling)
    except ContextLengthError as err:
        raise APIError(400, str(err), param="messages", code="context_length_exceeded") from None
    except ValueError as err:
        raise APIError(400, str(err), param="messages") from None


class _Server(uvicorn.Server):
    """uvicorn's server, which on stopping first ends what waits with a 503 and gives the
    replies being written `grace` seconds to finish (then a 503 or an error event), so that
    uvicorn never has to cancel a request (its plain-text 500)."""

    grace = SHUTDOWN_GRACE_S

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if engine := getattr(self.config.app.state, "engine", None):
            await asyncio.to_thread(engine.stop, self.grace)
        await super().shutdown(sockets)


class BackgroundServer:
    """A uvicorn server for `app` in a daemon thread of this process, for notebooks and tests.

    Port 0 (the default) takes a free port. The server stops with `stop()`, at the end of a
    `with` block, or with the process (the thread never keeps Python running).

    >>> with BackgroundServer(create_app(chat, "tiny")) as server:
    ...     OpenAI(base_url=f"{server.url}/v1", api_key="unused").models.list()
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0,
                 timeout: float = 60.0):
        # IPPROTO_TCP, not the default 0: asyncio then turns Nagle's algorithm off for each
        # connection, which would otherwise hold a reply's last write back for 40 ms.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind((host, port))
        self.url = f"http://{host}:{sock.getsockname()[1]}"
        self._server = _Server(uvicorn.Config(app, log_level="warning",
                                              timeout_graceful_shutdown=5))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="buildllm-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                sock.close()
                raise RuntimeError(f"the server at {self.url} did not start")
            time.sleep(0.02)

    def stop(self, grace: float = SHUTDOWN_GRACE_S) -> None:
        """Stop as `_Server` does, giving the replies being written `grace` seconds."""
        self._server.grace = grace
        self._server.should_exit = True
        self._thread.join(timeout=15)

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# -- the command line --------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m buildllm.serve",
        description="Serve a model through OpenAI's chat-completions API, with a chat page.")
    add_run_flag(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; "
                        "0.0.0.0: every network this machine is on)")
    p.add_argument("--port", type=int, default=8000, help="(default 8000)")
    p.add_argument("--api-key", metavar="KEY", default=os.environ.get("BUILDLLM_API_KEY"),
                   help="answer the API only with 'Authorization: Bearer KEY' (default: the "
                        "BUILDLLM_API_KEY environment variable, which, unlike a flag, other "
                        "users cannot see in the process list; with neither, no key)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a name clients may reach the server by, besides localhost and IP "
                        "addresses (repeatable; '*': any, e.g. behind Colab's port proxy)")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="a web page origin, e.g. https://example.org, whose scripts may call "
                        "the API (repeatable; default none)")
    p.add_argument("--model-name", metavar="NAME",
                   help="the name clients ask for (default: the folder's name)")
    p.add_argument("--max-new-tokens", type=int, metavar="N",
                   help="reply length when a request gives no max_tokens (default 128, or half "
                        "the context if less)")
    p.add_argument("--temperature", type=float, default=0.0, metavar="T",
                   help="when a request gives none (default 0: greedy)")
    p.add_argument("--max-batch", type=int, default=8, metavar="N",
                   help="replies written together (default 8; 1: one at a time)")
    p.add_argument("--device", help="cpu, cuda or mps (default: the fastest available)")
    p.add_argument("--log-level", default="info", help="uvicorn's (default info)")
    p.add_argument("--check", nargs="?", const=CHECK_QUESTION, metavar="QUESTION",
                   help="start the server on a free port, ask it QUESTION (default: "
                        f"{CHECK_QUESTION!r}; sampled, seeded) through the API, print the "
                        "reply, and stop")
    return p


def check(app: FastAPI, name: str, question: str = CHECK_QUESTION, host: str = "127.0.0.1",
          max_tokens: int = 24, api_key: str | None = None) -> str:
    """Start `app` on a free port, ask `question` through the chat-completions API as any
    client would, and stop the server; returns a report of what came back. Raises
    `RuntimeError` when the server does not answer as the API says it should.

    The question is sampled (temperature 0.8, seed 1): greedy decoding can leave a model
    that is only pretrained writing nothing but blank lines, which would hide whether the
    server works."""
    import httpx

    start = time.perf_counter()
    with BackgroundServer(app, host=host) as server:
        page = httpx.get(f"{server.url}/", timeout=30)
        reply = httpx.post(f"{server.url}/v1/chat/completions", timeout=300, json={
            "model": name, "max_tokens": max_tokens, "temperature": 0.8, "seed": 1,
            "messages": [{"role": "user", "content": question}]},
            headers={"Authorization": f"Bearer {api_key}"} if api_key else None)
    if page.status_code != 200 or reply.status_code != 200:
        raise RuntimeError(f"the server answered {page.status_code} for the chat page and "
                           f"{reply.status_code} for a chat completion: {reply.text[:300]}")
    body = reply.json()
    text, usage = body["choices"][0]["message"]["content"], body["usage"]
    return (f"asked {question!r}; {name!r} answered {text!r} "
            f"({usage['completion_tokens']} tokens, finish_reason "
            f"{body['choices'][0]['finish_reason']!r}); the chat page loads. Started, answered "
            f"and stopped in {time.perf_counter() - start:.1f} s.")


def main(argv: list[str] | None = None) -> None:
    """`python -m buildllm.serve`: load the model and serve it until Ctrl-C (with `--check`:
    answer one question and stop)."""
    from .pretrained import COURSE_MODEL_DIR

    args = _parser().parse_args(argv)
    folder = Path(args.run or COURSE_MODEL_DIR)
    try:
        chat = ChatSession.from_run(folder, device=args.device,
                                    max_new_tokens=args.max_new_tokens,
                                    temperature=args.temperature)
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    if args.max_batch < 1:
        raise SystemExit(f"error: --max-batch must be at least 1 (1: one reply at a time), got "
                         f"{args.max_batch}")
    name = args.model_name or folder.resolve().name
    app = create_app(chat, name, api_key=args.api_key, allowed_hosts=[args.host,
                     *args.allowed_host], cors_origins=args.cors_origin,
                     max_batch=args.max_batch)
    if not (args.api_key or _is_loopback(args.host)):
        print(f"warning: serving on {args.host} with no API key: anyone who can reach this "
              "machine can use the model (set --api-key or BUILDLLM_API_KEY)", file=sys.stderr,
              flush=True)
    if args.check is not None:
        try:
            print(check(app, name, args.check, host=args.host, api_key=args.api_key), flush=True)
        except RuntimeError as err:
            raise SystemExit(f"error: {err}") from None
        return
    print(f"Serving {name!r}: the chat page at http://{args.host}:{args.port}/ and the OpenAI "
          f"API at http://{args.host}:{args.port}/v1", flush=True)
    server = _Server(uvicorn.Config(app, host=args.host, port=args.port,
                                    log_level=args.log_level, timeout_graceful_shutdown=5))
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn raises Ctrl-C again once stopped
        server.run()


def _is_loopback(host: str) -> bool:
    """Whether `host` (an address or name to listen on) is this machine only."""
    address = _ip_address(host)
    return host == "localhost" if address is None else address.is_loopback


if __name__ == "__main__":
    main()
