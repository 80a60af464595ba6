"""Asking a larger model to grade answers (Meeting 6), through any OpenAI-compatible server.

Word-overlap scores (`buildllm.metrics`) cannot tell that "The meal was cooked by the chef"
and "The chef's meal was cooked" say the same thing. A capable model can. Chapter 7 of the
book asks Llama 3 8B, served locally by Ollama, for a score from 0 to 100; this client talks
to any server that offers the OpenAI chat-completions API, which Ollama, the llama.cpp
server and vLLM all do:

    url = "http://localhost:11434"                   # Ollama's default address
    if available(url):
        score = judge(url, "llama3", entry, "The meal was cooked by the chef.")  # 0..100

It uses only the standard library (urllib), so it adds no dependency. The request is
{"model", "messages", "temperature": 0}: temperature 0 asks for the judge's most likely
answer, so the same question gets the same score.
"""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Sequence
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

__all__ = ["JudgeError", "available", "chat", "judge", "judge_many", "judge_prompt",
           "parse_score"]


class JudgeError(RuntimeError):
    """The judge's server could not be reached, refused the request, or answered nonsense."""


def _endpoint(url: str, path: str) -> str:
    """http://host:port (optionally ending in /v1) + path -> http://host:port/v1/path."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"the judge's URL must start with http:// or https://, got {url!r}")
    return f"{url.rstrip('/').removesuffix('/v1')}/v1/{path}"


def available(url: str, timeout: float = 2.0) -> bool:
    """True if an OpenAI-compatible server answers at `url` (it lists its models).

    Cheap to call: one GET of /v1/models that gives up after `timeout` seconds, so a
    notebook can check first and skip its judge cells where no server runs.
    """
    try:
        with urlopen(Request(_endpoint(url, "models")), timeout=timeout) as reply:
            return 200 <= reply.status < 300
    except (OSError, http.client.HTTPException):  # refused, timed out, not HTTP, HTTP error
        return False


def chat(url: str, model: str, messages: list[dict], *, timeout: float = 60.0,
         api_key: str | None = None) -> str:
    """Send one chat-completions request and return the text of the first choice.

    `messages` are {"role": ..., "content": ...} dicts. `api_key`, if the server wants one,
    goes in an "Authorization: Bearer" header. Raises JudgeError, naming the endpoint, when
    the server cannot be reached, answers with an HTTP error, or answers in another format.
    """
    endpoint = _endpoint(url, "chat/completions")
    body = json.dumps({"model": model, "messages": messages, "temperature": 0}).encode()
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    try:
        with urlopen(Request(endpoint, data=body, headers=headers, method="POST"),
                     timeout=timeout) as reply:
            raw = reply.read()
    except HTTPError as err:  # before URLError: it is one
        detail = err.read()[:300].decode("utf-8", "replace")
        raise JudgeError(f"{endpoint} answered HTTP {err.code} ({err.reason}): {detail}") from err
    except URLError as err:
        raise JudgeError(f"could not reach {endpoint}: {err.reason}") from err
    except (OSError, http.client.HTTPException) as err:  # timeouts, dropped connections
        raise JudgeError(f"no usable reply from {endpoint}: {type(err).__name__}: {err}") from err
    try:
        content = json.loads(raw)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as err:
        raise JudgeError(f"{endpoint} did not answer in the chat-completions format "
                         f"(choices[0].message.content): {raw[:300]!r}") from err
    if not isinstance(content, str):
        raise JudgeError(f"{endpoint} sent a message content that is not text: {content!r}")
    return content


def judge_prompt(entry: dict, response: str) -> str:
    """The grading request: the task, the reference answer, the answer to grade, the scale."""
    task = entry["instruction"]
    if entry.get("input"):
        task += f"\n{entry['input']}"
    return (
        "Grade an answer to a task against a reference answer.\n\n"
        f"Task:\n{task}\n\n"
        f"Reference answer:\n{entry['output']}\n\n"
        f"Answer to grade:\n{response}\n\n"
        "Give a score from 0 to 100: 100 if the answer is as correct and complete as the "
        "reference, 0 if it is wrong, empty or off the subject. Reply with the number alone."
    )


def parse_score(text: str) -> int:
    """The first integer in the judge's reply, which must lie between 0 and 100.

    >>> parse_score("Score: 85")
    85
    """
    if (match := re.search(r"-?\d+", text)) is None:
        raise ValueError(f"the judge's reply has no number in it: {text!r}")
    score = int(match.group())
    if not 0 <= score <= 100:
        raise ValueError(f"the judge's score {score} is outside 0..100 (reply: {text!r})")
    return score


def judge(url: str, model: str, entry: dict, response: str, *, timeout: float = 60.0,
          api_key: str | None = None) -> int:
    """Ask `model` at `url` to score `response` to instruction `entry`, from 0 to 100."""
    messages = [{"role": "user", "content": judge_prompt(entry, response)}]
    return parse_score(chat(url, model, messages, timeout=timeout, api_key=api_key))


def judge_many(url: str, model: str, entries: Sequence[dict], responses: Sequence[str],
               **kwargs) -> list[int]:
    """`judge` for each (entry, response) pair, with a progress bar; returns the scores."""
    from .progress import tqdm

    if len(entries) != len(responses):
        raise ValueError(f"{len(entries)} entries but {len(responses)} responses")
    return [judge(url, model, e, r, **kwargs) for e, r in
            tqdm(zip(entries, responses, strict=True), total=len(entries), desc="judging")]
