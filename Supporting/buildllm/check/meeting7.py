"""Checks for the Meeting 7 exercises: int8 weights, left padding, a chat history that fits
the context, a streamed reply, cosine search, and what training costs. Each compares with the
package on fixed inputs (seeds, forked RNGs) and names the mistake a wrong answer matches."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from fastapi.testclient import TestClient

from .. import costs, inference
from ..chat import ChatSession
from ..data import gpt2_encoding
from ..model import CONFIGS, GPTConfig, forward_flops_per_token
from ..serve import create_app
from . import _support, verify
from ._support import cases, expect_raises, fail_first, fail_if, first, first_hint, randn, tensors

__all__ = ["cosine_top_k", "fit_history", "left_pad", "quantize_rows", "read_stream",
           "training_cost"]

_parameters = costs.parameter_count  # from the config alone: no weight is allocated
_PER_ROW = ("give each row its own, w.abs().amax(dim=1) / 127, or one large row makes every "
            "small row round to zero")


def _scale_mistakes(w: torch.Tensor):
    absmax = w.abs().amax(dim=1)
    return [
        (f"it matches one scale for the whole matrix, max|w| / 127: {_PER_ROW}",
         (w.abs().max() / 127).expand(w.shape[0])),
        ("it matches max(row) / 127, the largest value rather than the largest magnitude: a row "
         "whose extreme is negative, like [-2, 0.5, 1], would get scale 1/127 and -2 would not "
         "fit. Use the absolute values: w.abs().amax(dim=1) / 127", w.amax(dim=1) / 127),
        ("it matches max|row| / 128: then the largest weight becomes 128, which int8 (from -128 "
         "to 127) cannot hold. Divide by 127, so that the grid is symmetric, -127 to 127",
         absmax / 128),
        ("it matches max|row| / 255 (the range of uint8): int8 holds -127 to 127 on each side "
         "of 0, so divide by 127", absmax / 255),
        ("it matches 127 / max|row|, the scale upside down: scale = max|row| / 127", 127 / absmax),
        ("it matches one scale per column, w.abs().amax(dim=0): the scales belong to the rows, "
         "the output features, so reduce over dim=1", w.abs().amax(dim=0) / 127),
    ]


def _quantize_mistakes(w: torch.Tensor, scale: torch.Tensor):
    steps = w / scale[:, None]
    return [
        ("it matches w / scale converted to int8 without rounding: .to(torch.int8) cuts toward "
         "zero, so 88.9 becomes 88 and the error can reach a whole step. Round first, "
         "torch.round(w / scale[:, None])", steps.trunc()),
        ("it matches floor(w / scale): round to the nearest step instead", steps.floor()),
    ] + ([] if w.shape[0] != w.shape[1] else [(
        "it matches w / scale without [:, None]: on a square matrix that divides column j by "
        "row j's scale (broadcasting lines the scales up with the last dimension). Divide by "
        "scale[:, None], one scale down each row", torch.round(w / scale).clamp(-127, 127))])


def _quantizes(fn, weight: torch.Tensor) -> None:
    """One case of 7.1: the shapes and types, then each row's scale (a row of zeros needs a
    positive one, and q = 0), then each q, which rounding puts within half a step of w / scale."""
    given = weight.clone()
    got = fn(given)
    fail_if(not torch.equal(given, weight), "your function changed the weight it was given (an "
            "in-place operation such as div_ or w /= ...): quantizing must leave the float model "
            "as it was")
    q, scale = tensors(got, ("q", "scale"))
    rows, shape = weight.shape[0], tuple(scale.shape)
    per_column = " (one per column: reduce over dim=1, the row)" * (shape == (weight.shape[1],))
    fail_first(
        (q.shape != weight.shape, f"q has shape {tuple(q.shape)}, expected {tuple(weight.shape)}: "
         "one int8 number per weight"),
        (q.dtype != torch.int8, f"q is {q.dtype}; store it as torch.int8, one byte per weight "
         "(round first, then .to(torch.int8))"),
        (scale.numel() == 1 and rows > 1, f"scale is a single number for the whole matrix: "
         f"{_PER_ROW}"),
        (shape == (rows, 1), f"scale has shape {shape}; return it as a ({rows},) tensor, one "
         "number per row (scale[:, None] gives the column when you divide)"),
        (shape != (rows,), f"scale has shape {shape}, expected ({rows},){per_column}"),
        (not scale.is_floating_point(), f"scale is {scale.dtype}; it is a float, max|row| / 127"))
    absmax = weight.abs().amax(dim=1)
    live, want = absmax != 0, absmax / 127
    if not live.all():
        r = int((~live).nonzero()[0])
        fail_if(not (torch.isfinite(scale[r]) and scale[r] > 0), f"row {r} is all zeros and its "
                f"scale is {scale[r].item()}: with scale 0, w / scale is 0 / 0 = NaN. Give such a "
                "row any positive scale (1, say, or clamp the scale to a tiny minimum), and its q "
                "is 0")
        fail_if(q[r].any(), f"row {r} is all zeros, but q[{r}] is {q[r].tolist()}: it should be 0")
    if (r := first(live & ~torch.isclose(scale.float(), want, rtol=1e-5, atol=0))) is not None:
        fail_if(hint := first_hint(_scale_mistakes(weight), lambda wrong: wrong.shape == scale.shape
                                   and torch.allclose(scale[live].float(), wrong[live].float(),
                                                      rtol=1e-5)), f"scale is wrong: {hint}")
        raise AssertionError(f"scale[{r[0]}] is {scale[r].item():.6g}, expected max|row {r[0]}| / "
                             f"127 = {absmax[r].item():.6g} / 127 = {want[r].item():.6g}")
    scale = torch.where(live, want, 1.0)
    steps = weight / scale[:, None]
    if (at := first((q - steps).abs() > 0.5 + 1e-4)) is not None:  # at 63.5, 63 and 64 will do
        fail_if(hint := first_hint(_quantize_mistakes(weight, scale), lambda wrong: torch.equal(
            q, wrong.to(torch.int8))), f"q is wrong: {hint}")
        want = int(inference.quantize_rows(weight)[0][at])
        raise AssertionError(f"q[{at[0]}, {at[1]}] is {q[at].item()}, expected {want}: the weight "
                             f"{weight[at].item():.6g} is {steps[at].item():.4f} steps of "
                             f"{scale[at[0]].item():.6g}, and rounds to {want}")


def quantize_rows(fn: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Exercise 7.1: fn(weight) must return (q, scale) as `buildllm.inference.quantize_rows`
    does, leaving the weight as it was (a square case: there a wrong broadcast still runs)."""
    with _support.seeded(71):
        linear_weight = torch.nn.Linear(48, 32).weight.detach().clone()
    t = torch.tensor
    verify("Exercise 7.1", cases(_quantizes, fn, {
        "one row by hand, [0.2, -1.0, 0.7, 0.0]: scale 1/127, q [25, -127, 89, 0]":
            t([[0.2, -1.0, 0.7, 0.0]]),
        "three rows of sizes 0.001, 1 and 1000": randn(72, 3, 5) * t([[1e-3], [1.0], [1e3]]),
        "rows whose largest magnitude is negative: [-2.0, 0.5, 1.0, -0.25] and "
        "[0.1, -0.3, 0.2, -0.05]": t([[-2.0, 0.5, 1.0, -0.25], [0.1, -0.3, 0.2, -0.05]]),
        "an all-zero row between two others: a positive scale and q = 0, no NaN":
            t([[0.5, -0.25, 1.5], [0.0, 0.0, 0.0], [-3.0, 2.0, 1.0]]),
        "a square (6, 6) matrix whose rows differ in size":
            randn(73, 6, 6) * t([[0.1], [1.0], [3.0], [0.01], [10.0], [0.5]]),
        "the weight of an nn.Linear(48, 32): 32 rows, 32 scales": linear_weight,
    }))


def _pads(fn, prompts: list[list[int]], pad_id: int = 0) -> None:
    given = [list(p) for p in prompts]
    got = fn(given, pad_id=pad_id)
    fail_if(given != prompts, "your function changed the prompts it was given (insert or +=): "
            "build new rows, and leave the caller's token lists as they were")
    ids, mask, positions = tensors(got, ("ids", "mask", "positions"))
    want_ids, want_mask = inference.left_pad(prompts, pad_id)
    right_ids, right_mask = (x.flip(1) for x in inference.left_pad([p[::-1] for p in prompts],
                                                                  pad_id))
    named = {"ids": ids, "mask": mask, "positions": positions}
    fail_first(
        *((t.shape != want_ids.shape, f"{name} has shape {tuple(t.shape)}, expected "
           f"{tuple(want_ids.shape)}: one row per prompt, as wide as the longest")
          for name, t in named.items()),
        *((named[name].dtype != torch.long, f"{name} is {named[name].dtype}; make it torch.long "
           "(token ids and positions index embedding tables)") for name in ("ids", "positions")),
        (mask.dtype != torch.bool, f"mask is {mask.dtype}; make it torch.bool, True at real "
         "tokens"),
        (torch.equal(ids, right_ids) and not torch.equal(ids, want_ids), f"ids are padded on the "
         f"right, {ids.tolist()}: pad on the left, so that every row's last token, and every "
         "token generated after it, lands in the same column"),
        (not torch.equal(ids, want_ids), f"ids are {ids.tolist()}, expected {want_ids.tolist()}"))
    if not torch.equal(mask, want_mask):
        fail_first(
            (torch.equal(mask, want_ids != pad_id), f"mask is {mask.tolist()}, expected "
             f"{want_mask.tolist()}: it matches ids != pad_id, which calls a real token that "
             f"happens to be {pad_id} padding. Mark the real tokens from each prompt's length "
             "instead"),
            (torch.equal(mask, right_mask), "mask marks the first columns, as for padding on the "
             "right: the real tokens are the last len(prompt) columns of each row"),
            (torch.equal(mask, ~want_mask), "mask is True at the padding and False at the real "
             "tokens: turn it round (True where attention may look)"),
            (True, f"mask is {mask.tolist()}, expected {want_mask.tolist()}"))
    if (at := first(positions < 0)) is not None:
        raise AssertionError(
            f"positions[{at[0]}, {at[1]}] is {positions[at].item()} at padding: an embedding "
            "table has no row -1, so the model would fail (or, in some libraries, read the last "
            "row). Clamp the padding's positions to 0, as GPTModel does")
    want = (want_mask.cumsum(1) - 1).clamp(min=0)  # as GPTModel numbers a padded batch
    if (row := first(((positions != want) & want_mask).any(1))) is not None:
        width = want_mask.shape[1]
        fail_if(torch.equal(positions, torch.arange(width).expand_as(positions)),
                f"positions are 0 to {width - 1} in every row, counting the padding: a row's "
                "first real token must be at position 0, as it was in training, however much "
                "padding comes before it")
        raise AssertionError(f"positions[{row[0]}] is {positions[row].tolist()}, expected "
                             f"{want[row].tolist()} (the padding's positions may be anything "
                             "from 0 up)")


def left_pad(fn: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> None:
    """Exercise 7.2: fn(prompts, pad_id=0) must return (ids, mask, positions) as
    `buildllm.inference.left_pad` pads and `GPTModel` numbers them, leaving the lists as given."""
    gen = torch.Generator().manual_seed(74)
    lengths = torch.randint(1, 21, (8,), generator=gen).tolist()
    many = [torch.randint(1, 50000, (n,), generator=gen).tolist() for n in lengths]
    verify("Exercise 7.2", [*cases(_pads, fn, {
        "[[5, 6, 7], [8]] with pad_id 0: ids [[5, 6, 7], [0, 0, 8]], positions "
        "[[0, 1, 2], [?, ?, 0]]": [[5, 6, 7], [8]],
        "two prompts of 4 tokens: no padding": [[1, 2, 3, 4], [9, 8, 7, 6]],
        "one prompt": [[464, 3290, 318]],
        "pad_id 50256, prompts of 1, 6, 3 and 6 tokens":
            ([[40], [1, 2, 3, 4, 5, 6], [7, 8, 9], [10, 11, 12, 13, 14, 15]], 50256),
        "pad_id 0 and a prompt that holds token 0 itself, [0, 11, 0]": [[0, 11, 0], [12]],
        f"eight prompts of {', '.join(map(str, lengths))} tokens": (many, 50256),
    }), ("an empty prompt: ValueError", lambda: expect_raises(
        lambda: fn([[5, 6], []], pad_id=0), ValueError, "an empty prompt should raise ValueError "
        "(with a message saying which prompt): the model needs at least one token to predict "
        "the next from"))])


def _reference_fit(messages: list[dict], count: Callable[[list[dict]], int], budget: int):
    """ChatSession's rule, for the by-hand counts it cannot judge (the GPT-2 case checks that
    the two agree): system messages stay; keep the longest run of the newest turns, from a user
    message (or the start), that fits. None if even the last message does not."""
    n_system = next((i for i, m in enumerate(messages) if m["role"] != "system"), len(messages))
    system, turns = messages[:n_system], messages[n_system:]
    starts = [0] + [i for i, m in enumerate(turns) if i > 0 and m["role"] == "user"]
    return next((system + turns[s:] for s in starts if count(system + turns[s:]) <= budget), None)


def _roles(messages: list[dict]) -> str:
    """[system 'sys', user 'q1', ...]: each message's role and first word."""
    firsts = [(m.get("role", "?"), str(m.get("content", "")).split()[:1]) for m in messages]
    return "[" + ", ".join(f"{r} {w[0]!r}" if w else str(r) for r, w in firsts) + "]"


def _chat(spec: str) -> list[dict]:
    """'s sys 10, u q1 6': a system message of 10 words, then a user's of 6, each opening with
    its tag, which the messages about what was kept show."""
    roles = {"s": "system", "u": "user", "a": "assistant"}
    return [{"role": roles[r], "content": " ".join([tag] + ["word"] * (int(n) - 1))}
            for r, tag, n in (m.split() for m in spec.split(","))]


def _words_count(messages: list[dict]) -> int:
    """The by-hand count: 4 header tokens and one per word for each message, 3 to end."""
    return sum(4 + len(m["content"].split()) for m in messages) + 3


def _fits(fn, messages: list[dict], budget: int, count=_words_count) -> None:
    def run() -> list[dict]:
        given = [dict(m) for m in messages]
        got = fn(given, lambda kept: count(list(kept)), budget)
        fail_if(given != messages, "your function changed the list it was given (pop, del or "
                "remove): that list is the conversation the user sees. Build a new list of the "
                "messages to keep")
        return got

    system = [m for m in messages if m["role"] == "system"]
    if (want := _reference_fit(messages, count, budget)) is None:
        return expect_raises(run, ValueError, "even the system messages and the last user "
                             f"message make {count(system + messages[-1:])} tokens, over the "
                             f"budget of {budget}: raise ValueError with a message that says so "
                             "(a cut-off prompt would fail later, less clearly)")
    got = run()
    fail_if(not isinstance(got, list) or not all(isinstance(m, dict) for m in got),
            f"the result is {type(got).__name__}; return a list of the message dicts to send")
    if got == want:
        return
    rest, kept = got[len(system):], f"you kept {_roles(got)}"
    fail_if(system and got[: len(system)] != system, f"{kept}: the system messages must stay, "
            "first (they say who the assistant is); drop old turns instead")
    fail_if(not got or got[-1] != messages[-1], f"{kept}, without the last user message: it is "
            "the one to answer, so it always stays")
    fail_if(rest and rest[0]["role"] == "assistant" and rest != messages[len(system):],
            f"{kept}: after the system messages it starts with an assistant's reply to a question "
            "that is gone. Drop whole turns: the kept conversation starts at a user message")
    fail_if(count(got) > budget, f"{kept}, which makes {count(got)} tokens, over the budget of "
            f"{budget}: keep dropping the oldest turn while the count is > budget")
    fail_if(got == system + messages[len(messages) - len(rest):], f"you dropped "
            f"{len(messages) - len(got)} messages, but only {len(messages) - len(want)} had to "
            f"go: {_roles(want)} makes {count(want)} tokens, within the budget of {budget} "
            "(<= budget fits)")
    raise AssertionError(f"{kept}, expected {_roles(want)}: drop the oldest messages first, keep "
                         "the newest")


def _chat_session_case() -> tuple[list[dict], int, Callable[[list[dict]], int]]:
    """Exercise 7.3's last case, (messages, budget, count): a real conversation counted in
    GPT-2's tokens, whose kept messages must give the prompt that ChatSession.prompt_ids sends."""
    with torch.device("meta"):  # shapes only: prompts are counted, nothing runs
        short, counter = (ChatSession(_support.tiny_gpt(None, 50257, n, 8, 1, 1), gpt2_encoding())
                          for n in (128, 4096))
    roles = ["system"] + ["user", "assistant"] * 3 + ["user"]
    messages = [{"role": role, "content": text} for role, text in zip(roles, [
        "You answer in one short sentence.", "Who wrote Hamlet?",
        "William Shakespeare wrote it, around 1600.", "And who wrote The Odyssey?",
        "Homer, or the poets we call by that name.", "Which of the two is older?",
        "The Odyssey, by more than two thousand years.", "Name one more play by the first author."
    ], strict=True)]

    def count(kept: list[dict]) -> int:  # the whole conversation, none of it dropped
        return len(counter.prompt_ids(kept, 1))

    want = _reference_fit(messages, count, budget := short.context_length - 48)  # 48 to reply
    if want is None or counter.prompt_ids(want, 1) != short.prompt_ids(messages, 48):
        raise RuntimeError("this check no longer agrees with ChatSession.prompt_ids: a bug in the "
                           "course, please report it")
    return messages, budget, count


def fit_history(fn: Callable[..., list[dict]]) -> None:
    """Exercise 7.3: fn(messages, count_tokens, budget) must return the messages to send as
    `buildllm.chat.ChatSession` chooses them (ValueError if even the last one does not fit)."""
    four = _chat("s sys 10, u q1 6, a a1 12, u q2 4")
    five = "u q1 6, a a1 10, u q2 5, a a2 8, u q3 4"
    verify("Exercise 7.3", [*cases(_fits, fn, {
        "everything fits: system, user, assistant, user make 51 tokens, budget 100": (four, 100),
        "exactly the budget: the same four messages, budget 51, all stay": (four, 51),
        "user, assistant, user, assistant, user (56 tokens), budget 40: the first turn goes, "
        "32 tokens stay": (_chat(five), 40),
        "the same, budget 30: an assistant message cannot start the history, so only the last "
        "question stays (11 tokens), though [assistant, user] would make 23": (_chat(five), 30),
        "a system message and seven more (83 tokens), budget 60: the system message stays, the "
        "first turn goes (59 tokens)": (_chat(f"s sys 10, {five}, a a3 3, u q4 2"), 60),
        "two system messages, then a question asked twice in a row (59 tokens), budget 46: only "
        "the first asking goes": (_chat("s sys1 3, s sys2 4, u q1 9, u q1-again 7, a a1 6, u q2 3"),
                                  46),
        "a conversation that opens with the assistant's greeting (44 tokens), budget 35: the "
        "greeting goes, 35 tokens stay": (_chat("a hello 5, u q1 6, a a1 9, u q2 5"), 35),
        "even the last question with the system message (24 tokens) is over a budget of 20: "
        "ValueError": (_chat("s sys 6, u q1 3, a a1 3, u q2 7"), 20),
    }), ("GPT-2's tokens in ChatSession's layout (115 for the whole conversation), context 128 "
         "with 48 for the reply: the prompt ChatSession.prompt_ids sends",
         lambda: _fits(fn, *_chat_session_case()))])


def _stream(pieces: list[str | None], finish: str | None = "stop", *, usage: bool = False,
            done: bool = True, data: str = "data: ") -> list[str]:
    """The lines of a streamed reply as OpenAI's API and buildllm.serve send them: one `data:`
    line per chat.completion.chunk, a blank line after each event, [DONE] at the end."""
    head = {"id": "chatcmpl-7", "object": "chat.completion.chunk", "created": 1700000000,
            "model": "tiny"}
    deltas = [({"role": "assistant", "content": ""}, None)]  # (delta, finish_reason)
    deltas += [({"content": p}, None) for p in pieces]
    deltas += [({}, finish)] if finish is not None else []
    events = [{**head, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                    "finish_reason": reason}]} for delta, reason in deltas]
    events += [{**head, "choices": [], "usage": {
        "prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}}] if usage else []
    lines = [data + json.dumps(e) for e in events] + ([data + "[DONE]"] if done else [])
    return [line for event in lines for line in (event, "")]


def _reference_read(lines) -> tuple[list[str], str | None]:
    """(each choice's piece of text, finish_reason), read as the `openai` client reads: a blank
    line ends an event, ":" starts a comment, and only `data:` lines carry chunks."""
    pieces, reason = [], None
    for data in (line[5:].removeprefix(" ") for line in lines if line.startswith("data:")):
        if data == "[DONE]":
            break
        for choice in json.loads(data).get("choices", []):
            pieces.append(choice.get("delta", {}).get("content") or "")
            reason = choice.get("finish_reason") or reason
    return pieces, reason


_ONE_PASS = ("a live stream can be read only once: go through the lines in one loop (no len(), "
             "no indexing, no second pass)")
_CRASH_HINTS = [  # (hint, the exception it explains)
    ("json.loads failed on a line that is not JSON: skip blank lines and comments (lines "
     "starting with ':'), take what follows 'data:' (the space after the colon is optional), "
     "and stop at [DONE]", json.JSONDecodeError),
    ("a chunk lacks a key you read with [...]: the last chunk's delta is {}, without "
     "'content'; use .get('content')", KeyError),
    ('a list was empty: the usage chunk has "choices": [], so loop over the choices instead of '
     "reading choices[0]", IndexError),
    ("a value was None: a delta's content can be null; count it as ''", TypeError),
]


def _text_mistakes(every: list[str]):
    pieces = [p for p in every if p]
    spaced = ("it matches the pieces joined with spaces: join them with ''; each piece brings its "
              "own spaces")
    return [
        (spaced, " ".join(every)),
        ("it matches each piece stripped of its spaces and line breaks: the pieces carry the "
         "spaces between words, so join them exactly as they come",
         "".join(p.strip() for p in pieces)),
        (spaced, " ".join(pieces)),
        ("it matches the text without its last piece", "".join(pieces[:-1])),
        ("it matches the text without its first piece", "".join(pieces[1:])),
    ]


def _served_stream() -> list[str]:
    """The lines buildllm.serve streams for one request, after checking that they say what the
    same request answered without streaming says."""
    model = _support.tiny_gpt(75, 50257, 64, 16, 2, 1).eval()
    request = {"model": "tiny", "messages": [{"role": "user", "content": "Hello there"}],
               "temperature": 1.0, "seed": 7, "max_tokens": 12}
    streamed = {**request, "stream": True, "stream_options": {"include_usage": True}}
    with TestClient(create_app(ChatSession(model, gpt2_encoding()), "tiny")) as client:
        whole = client.post("/v1/chat/completions", json=request).json()["choices"][0]
        with client.stream("POST", "/v1/chat/completions", json=streamed) as response:
            lines = list(response.iter_lines())
    pieces, reason = _reference_read(lines)
    if ("".join(pieces), reason) != (whole["message"]["content"], whole["finish_reason"]):
        raise RuntimeError("the course's server streamed another reply than it answered")
    return lines


def _reads(fn, lines: list[str], once: bool = False) -> None:
    every, want_reason = _reference_read(lines)
    try:
        got = fn(iter(lines) if once else list(lines))
    except (NotImplementedError, AssertionError):
        raise
    except Exception as err:  # a crash, explained where a known mistake explains it
        hints = [(f"The lines came as an iterator: {_ONE_PASS}", TypeError)] * once + _CRASH_HINTS
        fail_if(hint := first_hint(hints, partial(isinstance, err)),
                f"{type(err).__name__}: {err}. {hint}")
        raise
    fail_if(once and isinstance(got, (tuple, list)) and got and got[0] == "",
            f"the text is empty when the lines come as an iterator: {_ONE_PASS}")
    fail_if(not (isinstance(got, (tuple, list)) and len(got) == 2),
            "return a tuple (text, finish_reason)")
    text, reason = got
    fail_if(not isinstance(text, str),
            f"the text is a {type(text).__name__}; join the pieces into one string")
    if text != (want_text := "".join(every)):
        fail_if(hint := first_hint(_text_mistakes(every), text.__eq__),
                f"the text is {text!r:.120}: {hint}")
        raise AssertionError(f"the text is {text!r:.200}, expected {want_text!r:.200}")
    fail_if(reason != want_reason, f"finish_reason is {reason!r}, expected {want_reason!r}" + (
        ": the stream ended before any chunk gave a finish_reason" if want_reason is None else
        ": it comes in the last chunk that has choices (its delta is {}), and the chunks before "
        "it say null"))


def _error_event(fn) -> None:
    lines = _stream([" The", " answer"], finish=None, done=False) + [
        'data: {"error": {"message": "generation failed: out of memory", "type": '
        '"server_error", "param": null, "code": null}}', "", "data: [DONE]", ""]
    try:
        got = fn(lines)
    except NotImplementedError:
        raise
    except RuntimeError as err:
        fail_if("out of memory" not in str(err), f"the RuntimeError says {str(err)!r}; pass on "
                "the server's message, 'generation failed: out of memory', so the user learns "
                "what went wrong")
        return
    except Exception as err:  # noqa: BLE001 -- a learner's crash, reported with its type
        raise AssertionError(f"an error event should raise RuntimeError with its message; your "
                             f"function raised {type(err).__name__}: {err}") from None
    raise AssertionError(f'the stream carried an error event, {{"error": {{"message": ...}}}}, '
                         f"and your function returned {got!r:.120}: raise RuntimeError(message) "
                         "instead, or a failed reply would pass for a short one")


def read_stream(fn: Callable[..., tuple[str, str | None]]) -> None:
    """Exercise 7.4: fn(lines) must read a streamed chat completion's lines (httpx's
    `iter_lines()`) into (text, finish_reason) as the `openai` client does."""
    events = _stream(["Still", " here"])
    verify("Exercise 7.4", [*cases(_reads, fn, {
        "'Hel', 'lo', ', world', finish_reason 'stop'": _stream(["Hel", "lo", ", world"]),
        "pieces with spaces and line breaks: ' The', ' answer', ':\\n\\n', ' 42. '":
            _stream([" The", " answer", ":\n\n", " 42. "]),
        "a reply cut by max_tokens: finish_reason 'length'": _stream(["Once", " upon", " a"],
                                                                     "length"),
        'a usage chunk after the last choice (stream_options include_usage): "choices": []':
            _stream(["Yes", "."], usage=True),
        "comment lines ': keep-alive' before and between events":
            [": keep-alive", "", *events[:2], ": keep-alive", "", *events[2:]],
        "'data:' without the space after the colon": _stream(["No", " space"], data="data:"),
        "a delta whose content is null": _stream(["Some", None, "thing"]),
        "non-ASCII text: 'Caf', 'é ', '🙂', ' 東京'": _stream(["Caf", "é ", "🙂", " 東京"]),
        "a stream that ends without [DONE] or a finish_reason: the text so far, finish_reason "
        "None": _stream(["Cut", " short"], finish=None, done=False),
        "the lines as an iterator that can be read once, as from a live response":
            (_stream(["One", " pass"], usage=True), True),
    }), ("an error event: RuntimeError with the server's message", lambda: _error_event(fn)),
        ("a real stream from buildllm.serve (a small random model, sampled, with usage): the "
         "same reply as without streaming", lambda: _reads(fn, _served_stream()))])


class _NoCosine(_support.Refuses):
    banned = frozenset({F.cosine_similarity, torch.cosine_similarity})
    advice = ("this exercise asks for all the cosines as one matrix product of unit vectors "
              "(F.normalize, then @); cosine_similarity is what the check compares with")


def _score_mistakes(queries: torch.Tensor, keys: torch.Tensor, sims: torch.Tensor, k: int):
    qn, kn = F.normalize(queries, dim=1), F.normalize(keys, dim=1)
    return [(hint, scores.topk(k, dim=1, largest=largest).values) for hint, scores, largest in [
        ("they come in increasing order; the best match comes first (topk's default, "
         "largest=True, or sort descending)", sims, False),
        ("they match unit queries times raw keys: normalise the keys too, or a long key wins for "
         "its length alone", qn @ keys.T, True),
        ("they match the plain dot products q·x: scale the keys and the queries to length 1 "
         "first, or a long vector wins for its length alone", queries @ keys.T, True),
        ("they match raw queries times unit keys: normalise the queries too, so that the scores "
         "are cosines, from -1 to 1", queries @ kn.T, True),
        ("they match vectors normalised along dim=0, each coordinate across the vectors: "
         "normalise each vector, along dim=1",
         F.normalize(queries, dim=0) @ F.normalize(keys, dim=0).T, True),
    ]]


def _tops(fn, queries: torch.Tensor, keys: torch.Tensor, k: int) -> None:
    q_given, k_given = queries.clone(), keys.clone()
    got = fn(q_given.as_subclass(_NoCosine), k_given.as_subclass(_NoCosine), k)
    fail_if(not (torch.equal(q_given, queries) and torch.equal(k_given, keys)),
            "your function changed the vectors it was given (an in-place operation such as div_ "
            "or /=): those are the index's stored vectors; normalise copies")
    scores, ids = tensors(got, ("scores", "ids"))
    nq, shapes = queries.shape[0], (tuple(scores.shape), tuple(ids.shape))
    flipped = ": take topk along dim=1, over the keys of each query" * ((k, nq) in shapes)
    fail_first(
        (ids.is_floating_point() and not scores.is_floating_point(), "scores are integers "
         "and ids floats: return (scores, ids) in that order, as topk's (values, indices)"),
        (shapes != ((nq, k), (nq, k)), f"scores have shape {shapes[0]} and ids {shapes[1]}, "
         f"expected ({nq}, {k}) each{flipped}"),
        (ids.is_floating_point(), f"ids are {ids.dtype}; they are positions of keys, "
         "integers (topk's indices)"),
        (not torch.isfinite(scores).all(), "scores hold NaN: a zero vector has length 0, and "
         "dividing by it gives 0 / 0. Its cosine should be 0: F.normalize does that, or "
         "divide by norm.clamp(min=1e-12)"))
    # All the cosines by brute force, each pair on its own; 0 for a zero vector.
    sims = F.cosine_similarity(queries[:, None, :], keys[None, :, :], dim=-1)
    _support.expect_close(scores, sims.topk(k, dim=1).values, "scores",
                          _score_mistakes(queries, keys, sims, k))
    fail_if(ids.min() < 0 or ids.max() >= len(keys), f"ids hold {ids.min().item()} to "
            f"{ids.max().item()}, not key positions from 0 to {len(keys) - 1}")
    for r, row in enumerate(ids.tolist()):
        picked = sims[r, row]
        fail_if(len(set(row)) != k, f"row {r} of ids, {row}, names a key twice")
        fail_if(not torch.allclose(picked, scores[r], atol=1e-5), f"ids[{r}] is {row}, whose "
                f"cosines are {[round(x, 4) for x in picked.tolist()]}, not the scores "
                f"{[round(x, 4) for x in scores[r].tolist()]}: each id must be the key its score "
                "belongs to")


def _rejects(call: Callable[[float], object], values: tuple, why: str) -> None:
    """call(v) must raise ValueError for each of `values`; `why`, given v, says why."""
    for v in values:
        expect_raises(partial(call, v), ValueError, why.format(v))


def cosine_top_k(fn: Callable[..., tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Exercise 7.5: fn(queries, keys, k) must return (scores, ids) as
    `buildllm.retrieval.cosine_top_k` does; PyTorch's cosine_similarity, which fn may not call,
    is the reference."""
    t = torch.tensor
    tied = t([[1.0, 2.0, 0.0], [0.0, 0.0, 1.0], [2.0, 4.0, 0.0], [1.0, 2.0, 0.0], [3.0, 0.0, 1.0]])
    verify("Exercise 7.5", [*cases(_tops, fn, {
        "query [1, 0], keys [1, 0], [0, 3], [3, 3], k 2: cosines 1, 0 and 0.7071, so ids "
        "[0, 2] (the dot products 1, 0 and 3 would rank key 2 first)":
            (t([[1.0, 0.0]]), t([[1.0, 0.0], [0.0, 3.0], [3.0, 3.0]]), 2),
        "queries of lengths 10 and 0.1: scores are cosines, at most 1":
            (t([[10.0, 0.0, 0.0], [0.0, 0.1, 0.05]]), randn(78, 6, 3), 3),
        "k equal to the number of keys: all of them, in order":
            (randn(79, 3, 4), randn(80, 5, 4), 5),
        "a zero query and a zero key: cosine 0, not NaN": (t([[0.0, 0.0, 0.0], [1.0, -1.0, 0.5]]),
                                                           t([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0],
                                                              [-1.0, 1.0, 0.0]]), 3),
        "keys 0, 2 and 3 point the same way: tied, in any order": (t([[1.0, 2.0, 0.0]]), tied, 4),
        "5 queries, 300 keys of 32 dimensions, k 4": (randn(81, 5, 32), randn(82, 300, 32), 4),
    }), ("k of 5 with 4 keys, and k of 0: ValueError", partial(
        _rejects, lambda k: fn(randn(77, 2, 3), randn(76, 4, 3), k), (5, 0), "k = {} with 4 keys "
        "should raise ValueError saying that k must be between 1 and the number of keys"))])


def _flops_mistakes(cfg: GPTConfig, tokens: float):
    forward, output = forward_flops_per_token(cfg), 2 * cfg.emb_dim * cfg.vocab_size
    attention = forward - forward_flops_per_token(cfg, context=0)
    return [
        ("it matches the forward pass alone: training runs the forward and a backward pass that "
         "costs about twice as much, 3 × the forward FLOPs", forward * tokens),
        ("it matches 6 × the forward FLOPs: the 6 of '6 × parameters' already counts forward "
         "(2) and backward (4) together; with forward FLOPs, multiply by 3", 6 * forward * tokens),
        ("it matches 6 × parameters × tokens, the rule of thumb: count the matrix products "
         "themselves, which adds attention over the context and leaves out the position "
         "embedding (a lookup, no arithmetic)", 6 * _parameters(cfg) * tokens),
        ("it matches the count without attention's two products (QKᵀ and the weighted sum of V, "
         "2 · 2 · context · d per layer)", 3 * (forward - attention) * tokens),
        ("it matches 2 · context · d per layer for attention: both QKᵀ and the weighted sum of V "
         "cost context · d multiply-adds, 2 · 2 · context · d FLOPs together",
         3 * (forward - attention // 2) * tokens),
        ("it matches the count without the output layer (2 · d · vocab per token, the largest "
         "single product in a small GPT)", 3 * (forward - output) * tokens),
        ("it matches multiply-adds, not FLOPs: each multiply-add is 2 FLOPs",
         3 * forward / 2 * tokens),
    ]


def _hours_mistakes(hours: float, mfu: float, n_gpus: int):
    return [
        ("it is in seconds: divide by 3,600 for hours", hours * 3600),
        ("it matches dividing by the peak alone: a run reaches only mfu of it, so divide by "
         "peak × mfu", hours * mfu),
        ("it matches multiplying by mfu: the GPU delivers peak × mfu FLOP/s, so divide by both",
         hours * mfu * mfu),
        ("it matches the GPU-hours of all GPUs together: the GPUs work at the same time, so the "
         "wall-clock hours divide by n_gpus", hours * n_gpus),
        ("it matches peak_tflops taken as FLOP/s: one TFLOP/s is 10¹² FLOP/s", hours * 1e12),
    ]


def _costs(fn, cfg: GPTConfig, tokens: float, peak: float, mfu: float, price: float,
           n_gpus: int = 1) -> None:
    want = costs.training_cost(cfg, tokens, costs.GPU("", peak, "", price, ""), mfu, n_gpus)
    got = fn(cfg, tokens, peak, mfu, price, n_gpus=n_gpus)
    fail_if(not (isinstance(got, (tuple, list)) and len(got) == 3),
            "return a tuple (flops, hours, usd)")
    flops, hours, usd = want["flops"], want["hours"], want["usd"]
    checks = {  # each number: the rule it follows, and the wrong numbers that name a mistake
        "flops": (f" = 3 × {forward_flops_per_token(cfg):,} forward FLOPs per token × "
                  f"{tokens:,.0f} tokens", _flops_mistakes(cfg, tokens)),
        "hours": (f" = {flops:.4g} FLOPs / ({peak:g} × 10¹² × {mfu:g} × {n_gpus} FLOP/s) / 3,600",
                  _hours_mistakes(hours, mfu, n_gpus)),
        "usd": ("", [("it matches paying for one GPU; every GPU is rented for those hours, so the "
                      "price is hours × n_gpus × usd_per_hour", usd / n_gpus)]),
    }
    values = [_support.number(value, what) for value, what in zip(got, checks, strict=True)]
    for (what, (rule, mistakes)), value in zip(checks.items(), values, strict=True):
        close = partial(math.isclose, value, rel_tol=1e-6)
        if not close(want[what]):
            hint = first_hint(mistakes, close)
            raise AssertionError(f"{what} is {value:.4g}, expected {want[what]:.4g}"
                                 + (f": {hint}" if hint else rule))


def training_cost(fn: Callable[..., tuple[float, float, float]]) -> None:
    """Exercise 7.6: fn(cfg, tokens, peak_tflops, mfu, usd_per_hour, n_gpus=1) must return
    (flops, hours, usd) as `buildllm.costs.training_cost` computes them."""
    toy = GPTConfig(vocab_size=100, context_length=32, emb_dim=64, n_heads=4, n_layers=2)
    small, medium = CONFIGS["124M"], CONFIGS["355M"]
    verify("Exercise 7.6", [*cases(_costs, fn, {
        "a toy GPT (vocab 100, context 32, 64 dims, 2 layers): 225,792 forward FLOPs per token; "
        "10⁹ tokens at 1 TFLOP/s, mfu 0.5, $2 an hour: 0.376 h, $0.75": (toy, 1e9, 1.0, 0.5, 2.0),
        "GPT-2 124M, 20 tokens per parameter, one A100 (312 TFLOP/s), mfu 0.4, $1.20: "
        "SCALING.md's 4.7 h, $5.68": (small, 20 * _parameters(small), 312, 0.4, 1.20),
        "GPT-2 355M, 10B tokens, one H100 (989 TFLOP/s), mfu 0.4, $2.50: SCALING.md's 17 h, $43":
            (medium, 10e9, 989, 0.4, 2.50),
        "GPT-2 124M, 2.5B tokens on a T4 in float32 (8.1 TFLOP/s), $0.35":
            (small, 2.5e9, 8.1, 0.4, 0.35),
        "nanoGPT's GPT-2 124M run, 295B tokens on 8 A100s at mfu 0.4: 2.9 days of wall clock, "
        "paid for 8 GPUs": (small, 600_000 * 491_520, 312, 0.4, 1.20, 8),
        "cpu-small (context 256) on 50M tokens, an L4 (121 TFLOP/s), mfu 0.3":
            (CONFIGS["cpu-small"], 50e6, 121, 0.3, 0.80),
    }), ("mfu of 40 (a percentage) and of 0: ValueError", partial(
        _rejects, lambda mfu: fn(small, 1e9, 312, mfu, 1.2, n_gpus=1), (40, 0), "mfu = {} should "
        "raise ValueError: mfu is a share of the peak, above 0 and at most 1 (40% is 0.4)"))])
