"""Chatting with an instruction-tuned GPT (Meeting 7): a conversation as one prompt, a reply
streamed as it is written, and a terminal chat, `python -m buildllm.chat`.

Meeting 6 taught the model one layout, Alpaca's (`buildllm.instruct`). A conversation is a
list of OpenAI-style messages, {"role": "system", "user" or "assistant", "content": text}, and
`instruct.render_turns` writes it in that same layout, so the model sees what it was trained
on. The model was tuned on single turns only, so later turns lean on what it generalises;
earlier turns are kept so that it can refer back to them, and the oldest are dropped when
prompt and reply would no longer fit in the context. The reply is what `instruct.respond`
would answer.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Generator, Iterator, Sequence
from itertools import accumulate

from . import batching, generation
from .instruct import PREAMBLE, end_of_text_id, render_turns, visible_answer
from .model import GPTModel
from .runs import add_run_flag, load_run
from .tokenizers import ENDOFTEXT

__all__ = ["ROLES", "ChatSession", "ContextLengthError", "Reply", "main"]

ROLES = ("system", "user", "assistant")
_EOT = None  # how instruct.render_turns marks <|endoftext|> among its text pieces
_MARK = "\n\n###"  # how every turn's header starts, before its first space


class ContextLengthError(ValueError):
    """The newest message (with the system prompt and room for the reply) exceeds the context."""


class Reply(Iterator[str]):
    """One reply's text, in pieces as the model writes it, and its token counts when done.

    Iterating runs the model. Each piece is new text, whole characters only (byte-level BPE
    can split a character across tokens). Once the iterator is exhausted, `finish_reason` is
    "stop" (the model ended its answer) or "length" (it ran out of tokens).

    A server that runs the model itself, many replies in one batch (`buildllm.serve`), does
    not iterate: it generates what `request` asks and hands each token to `add`, and calls
    `end` if the tokens run out first.
    """

    def __init__(self, tokens: Generator[int, None, None], decode: Callable[[list[int]], str],
                 eos_id: int, request: batching.Request, dropped_messages: int = 0):
        self.request = request  # the prompt's token ids and the sampling settings
        self.prompt_tokens = len(request.ids)
        self.dropped_messages = dropped_messages  # oldest messages left out to fit the context
        self.completion_tokens = 0
        self.finish_reason: str | None = None
        self.text = ""  # the answer so far: the pieces yielded, joined
        self._ids: list[int] = []
        self._decode, self._eos_id = decode, eos_id
        self._pieces = self._run(tokens)

    def __next__(self) -> str:
        return next(self._pieces)

    def close(self) -> None:
        self._pieces.close()

    def add(self, token: int) -> str:
        """Take the model's next token; return the text it adds ("" if none shows yet). When
        it ends the answer, `finish_reason` is "stop" and the text is the rest of the answer."""
        self.completion_tokens += 1
        if token == self._eos_id:
            return self.end("stop")
        self._ids.append(token)
        shown, ended = visible_answer(self._decode(self._ids))
        piece = self._add(shown)
        return piece + self.end("stop") if ended else piece  # ended: a new "###" section

    def end(self, reason: str = "length") -> str:
        """End the answer (by default: out of tokens); return the text still held back."""
        self.finish_reason = reason
        return self._add(visible_answer(self._decode(self._ids), final=True)[0])

    def _run(self, tokens: Generator[int, None, None]) -> Iterator[str]:
        try:
            for token in tokens:
                if piece := self.add(token):
                    yield piece
                if self.finish_reason:
                    return
            if piece := self.end():
                yield piece
        finally:
            tokens.close()  # generation.stream's: frees the cache, restores the mode

    def _add(self, shown: str) -> str:
        """The new text when `shown` is longer than what was shown so far, else ""."""
        if len(shown) <= len(self.text):
            return ""
        assert shown.startswith(self.text), "visible_answer changed text it had shown"
        piece, self.text = shown[len(self.text):], shown
        return piece


class ChatSession:
    """A model and its tokenizer, ready to answer conversations; settings are per session.

    `max_new_tokens` (default 128, or half the context if that is less), `temperature`,
    `top_k`, `top_p` and `seed` are the defaults of every reply; `stream(messages,
    temperature=0.7)` and the like override them for one reply. The default is greedy. The
    model runs in eval mode on its own device. It is not thread-safe: a server runs it from one
    thread (`buildllm.serve`'s engine, which writes many replies at once in one batch).

    >>> chat = ChatSession.from_run("runs/instruct")
    >>> chat.reply([{"role": "user", "content": "Name a colour."}])
    'Blue.'
    """

    def __init__(self, model: GPTModel, tokenizer, *, max_new_tokens: int | None = None,
                 temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
                 seed: int | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.eos_id = end_of_text_id(tokenizer)
        self.context_length = model.cfg.context_length
        if max_new_tokens is None:
            max_new_tokens = min(128, self.context_length // 2)
        self.defaults = {"max_new_tokens": max_new_tokens, "temperature": temperature,
                         "top_k": top_k, "top_p": top_p, "seed": seed}
        self._max_new_tokens(max_new_tokens)
        generation._check_sampling(temperature, top_k, top_p)

    @classmethod
    def from_run(cls, folder: str | os.PathLike | None = None, *, device=None,
                 **settings) -> ChatSession:
        """A session for the model a run folder holds (run.json + model.safetensors, as written
        by `python -m buildllm.pretrain` or the capstone), on `device` (default: the fastest
        that works, `buildllm.utils.get_device`). The default folder is the course's model,
        which is pretrained on Shakespeare only: it runs, but its answers mean nothing."""
        from .pretrained import COURSE_MODEL_DIR
        from .utils import get_device

        model, tokenizer = load_run(COURSE_MODEL_DIR if folder is None else folder)
        return cls(model.to(get_device() if device is None else device), tokenizer, **settings)

    # -- the prompt ------------------------------------------------------------------------

    def format_messages(self, messages: Sequence[dict]) -> str:
        """The conversation as the model reads it (every message, none dropped), as text."""
        pieces = render_turns(*_split(messages))
        return "".join(ENDOFTEXT if p is _EOT else p for p in pieces)

    def prompt_ids(self, messages: Sequence[dict], max_new_tokens: int | None = None) -> list[int]:
        """The tokens of the conversation, its oldest turns dropped until `max_new_tokens` more
        fit in the context. Raises ContextLengthError if even the last message alone does not."""
        return self._fit(messages, max_new_tokens)[0]

    def _fit(self, messages: Sequence[dict], max_new_tokens: int | None) -> tuple[list[int], int]:
        """(prompt tokens, number of messages dropped) for a reply of `max_new_tokens`.

        Whole turns are dropped, oldest first, so that the conversation kept starts with a
        user message. Each turn is encoded once and the lengths are running sums, so a long
        conversation costs time in proportion to its length, not to its length squared."""
        n_new = self._max_new_tokens(max_new_tokens)
        system, turns = _split(messages)
        room = self.context_length - n_new
        # A turn starts with a header, "\n\n### Instruction:" or "\n\n### Response:", and the
        # first turn kept has the system prompt in front of it (render_turns). No tokenizer
        # here (GPT-2's, the course's BPE, the word or character one) puts a non-space
        # character and the space after it in one token, so a turn's tokens are those of its
        # text up to "###", then those of the rest: only the part up to "###" depends on
        # whether the turn comes first.
        lead = self._encode([system + _MARK])
        mark = self._encode([_MARK])
        rest = [self._encode(_after_mark(render_turns("", [turn])[:-1])) for turn in turns]
        end = self._encode(render_turns("", [])[-1:])  # the header the reply follows
        # before[i]: the tokens of turns 0..i-1 when not first, each with its mark
        before = list(accumulate((len(mark) + len(ids) for ids in rest), initial=0))
        starts = [0] + [i for i, m in enumerate(turns) if i > 0 and m["role"] == "user"]
        for start in starts:
            n_prompt = len(lead) - len(mark) + before[-1] - before[start] + len(end)
            if n_prompt <= room:
                ids = lead + rest[start]
                for more in rest[start + 1:]:
                    ids += mark + more
                return ids + end, start
        raise ContextLengthError(
            f"the last message's prompt (with the system prompt and headers) is {n_prompt} "
            f"tokens, and with {n_new} new tokens that exceeds the context length "
            f"{self.context_length}: shorten the message or ask for fewer new tokens")

    def _encode(self, pieces: list[str | None]) -> list[int]:
        # Each piece on its own, as instruct.encode_example does, so the tokens are those of
        # training. User text that spells "<|endoftext|>" stays plain text: only the turn ends
        # are real end-of-text tokens.
        encode = self.tokenizer.encode_ordinary
        return [i for p in pieces for i in ([self.eos_id] if p is _EOT else encode(p))]

    def _max_new_tokens(self, n: int | None) -> int:
        n = self.defaults["max_new_tokens"] if n is None else n
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n < self.context_length:
            raise ValueError(f"max_new_tokens must be an integer from 1 to "
                             f"{self.context_length - 1} (the context length less at least one "
                             f"prompt token), got {n!r}")
        return n

    # -- the reply -------------------------------------------------------------------------

    def stream(self, messages: Sequence[dict], **sampling) -> Reply:
        """The reply to the conversation's last (user) message, as an iterator of text pieces.

        `sampling` overrides the session's max_new_tokens, temperature, top_k, top_p or seed.
        Everything is checked now; the model runs as the pieces are read.

        >>> for piece in chat.stream(messages, temperature=0.7, seed=1):
        ...     print(piece, end="", flush=True)
        """
        if unknown := sorted(set(sampling) - set(self.defaults)):
            raise ValueError(f"unknown settings {unknown}; a reply takes {list(self.defaults)}")
        settings = {**self.defaults, **sampling}
        n_new = settings.pop("max_new_tokens")
        ids, dropped = self._fit(messages, n_new)
        tokens = generation.stream(self.model, ids, n_new, eos_id=self.eos_id, **settings)
        return Reply(tokens, self.tokenizer.decode, self.eos_id,
                     batching.Request(ids, n_new, **settings), dropped)

    def reply(self, messages: Sequence[dict], **sampling) -> str:
        """The whole reply to the conversation's last message, as one string (see `stream`)."""
        return "".join(self.stream(messages, **sampling))


def _after_mark(pieces: list[str | None]) -> list[str | None]:
    """A turn's text pieces without the "\n\n###" its header starts with (see `_fit`)."""
    assert pieces[0].startswith(_MARK), f"a turn must start with {_MARK!r}: {pieces[0]!r}"
    return [pieces[0][len(_MARK):], *pieces[1:]]


def _split(messages: Sequence[dict]) -> tuple[str, list[dict]]:
    """(system prompt, the other messages), after checking the conversation's shape."""
    if isinstance(messages, (str, dict)) or not isinstance(messages, Sequence):
        raise ValueError("messages must be a list of {'role': ..., 'content': ...} dicts, "
                         f"got {type(messages).__name__}")
    if not messages:
        raise ValueError("messages is empty: give at least one user message to answer")
    for n, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise ValueError(f"message {n} must be a dict with a 'role' of {', '.join(ROLES)}, "
                             f"got {m!r}")
        if not isinstance(m.get("content"), str):
            raise ValueError(f"message {n} needs text 'content' (a string), got "
                             f"{type(m.get('content')).__name__}")
    n_system = next((n for n, m in enumerate(messages) if m["role"] != "system"), len(messages))
    if any(m["role"] == "system" for m in messages[n_system:]):
        raise ValueError("system messages must come first, before any user or assistant message")
    if messages[-1]["role"] != "user":
        raise ValueError(f"the last message must be the user's, to be answered; it is "
                         f"{messages[-1]['role']!r}")
    system = "\n\n".join(m["content"] for m in messages[:n_system]) if n_system else PREAMBLE
    return system, list(messages[n_system:])


# -- the terminal chat -------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m buildllm.chat",
        description="Chat with a model in the terminal. Type a message and press Enter; "
                    "/reset forgets the conversation, /quit or Ctrl-D leaves.")
    add_run_flag(p)
    p.add_argument("--max-new-tokens", type=int, metavar="N",
                   help="longest reply, in tokens (default 128, or half the context if less)")
    p.add_argument("--temperature", type=float, default=0.0, metavar="T",
                   help="0 for greedy, the default; around 0.7 for varied replies")
    p.add_argument("--top-k", type=int, metavar="K", help="sample from the K likeliest tokens")
    p.add_argument("--top-p", type=float, metavar="P", help="nucleus sampling (e.g. 0.9)")
    p.add_argument("--seed", type=int, help="seed of every reply's sampling (repeatable runs)")
    p.add_argument("--device", help="cpu, cuda or mps (default: the fastest available)")
    return p


def main(argv: list[str] | None = None) -> None:
    """`python -m buildllm.chat`: read messages from stdin, print each reply as it is written."""
    args = _parser().parse_args(argv)
    try:
        chat = ChatSession.from_run(
            args.run, device=args.device, max_new_tokens=args.max_new_tokens,
            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    print(f"Chatting with {args.run or 'the course model'} "
          f"(context {chat.context_length} tokens). /reset starts over; /quit or Ctrl-D leaves.")
    history: list[dict] = []
    while True:
        try:
            text = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return
        if text == "/quit":
            return
        if text == "/reset":
            history.clear()
            print("(conversation cleared)")
            continue
        if not text:
            continue
        history.append({"role": "user", "content": text})
        try:
            reply = chat.stream(history)
        except ContextLengthError as err:
            history.pop()
            print(f"error: {err}")
            continue
        if reply.dropped_messages:
            print(f"(the oldest {reply.dropped_messages} messages no longer fit and are left out)")
        print("bot> ", end="", flush=True)
        try:
            for piece in reply:
                print(piece, end="", flush=True)
        except KeyboardInterrupt:  # Ctrl-C stops this reply, not the chat
            reply.close()
            print(" [stopped]", end="")
        print(flush=True)
        history.append({"role": "assistant", "content": reply.text})


if __name__ == "__main__":
    sys.exit(main())
