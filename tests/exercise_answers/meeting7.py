"""Answers to the Meeting 7 exercises, right and wrong, for tests/test_exercise_checks.py.

Each wrong answer is a mistake learners make, named after it. Among the right answers are the
course's own functions (buildllm.inference, buildllm.retrieval, buildllm.capstone), so these
tests also fail if a check and the module it describes drift apart.
"""

import json

import torch
import torch.nn.functional as F

from buildllm import capstone, check, inference, retrieval
from buildllm.model import forward_flops_per_token

# -- Exercise 7.1: int8 weights, one scale per row ------------------------------------------


def quantize_with_clamp(weight):
    scale = weight.abs().amax(dim=1) / 127
    scale = scale.clamp(min=1e-12)  # an all-zero row: any positive scale, and q = 0
    q = torch.round(weight / scale[:, None]).clamp(-127, 127)
    return q.to(torch.int8), scale


def quantize_with_where(weight):
    absmax = weight.abs().amax(dim=1, keepdim=True)
    scale = torch.where(absmax > 0, absmax / 127, torch.ones_like(absmax))
    return torch.round(weight / scale).clamp(-127, 127).to(torch.int8), scale.squeeze(1)


def quantize_by_row(weight):
    qs, scales = [], []
    for row in weight:
        top = row.abs().max().item()
        scale = top / 127 if top > 0 else 1.0
        qs.append(torch.round(row / scale).clamp(-127, 127).to(torch.int8))
        scales.append(scale)
    return torch.stack(qs), torch.tensor(scales)


def quantize_with_buildllm(weight):
    return inference.quantize_rows(weight)


def quantize_choosing(weight, scale_of=None, to_int=None, broadcast=True, zero_scale=1.0):
    """quantize_with_where with switches for the usual mistakes."""
    absmax = weight.abs().amax(dim=1)
    scale = absmax / 127 if scale_of is None else scale_of(weight)
    safe = torch.where(scale != 0, scale, torch.full_like(scale, zero_scale))
    x = weight / (safe[:, None] if broadcast else safe)
    q = (torch.round(x).clamp(-127, 127) if to_int is None else to_int(x)).to(torch.int8)
    return q, torch.where(absmax > 0, scale, torch.full_like(scale, zero_scale))


def quantize_in_place(weight):
    scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127
    weight /= scale[:, None]
    return torch.round(weight).to(torch.int8), scale


def quantize_over_columns(weight):
    """amax over dim 0: one scale per column, each column divided by its own."""
    scale = weight.abs().amax(dim=0).clamp(min=1e-12) / 127
    return torch.round(weight / scale).clamp(-127, 127).to(torch.int8), scale


def quantize_multiplying(weight):
    scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127
    return torch.round(weight * scale[:, None]).to(torch.int8), scale


WRONG_QUANTIZE = {
    "one scale for the whole matrix": lambda w: quantize_choosing(
        w, scale_of=lambda w: (w.abs().max() / 127).expand(len(w)).clone()
    ),
    "a single scale tensor": lambda w: (
        torch.round(w / (w.abs().max() / 127)).to(torch.int8),
        w.abs().max() / 127,
    ),
    "max instead of max|w|": lambda w: quantize_choosing(
        w, scale_of=lambda w: w.amax(dim=1).clamp(min=1e-12) / 127
    ),
    "divides by 128": lambda w: quantize_choosing(w, scale_of=lambda w: w.abs().amax(dim=1) / 128),
    "divides by 255": lambda w: quantize_choosing(w, scale_of=lambda w: w.abs().amax(dim=1) / 255),
    "truncates instead of rounding": lambda w: quantize_choosing(w, to_int=torch.trunc),
    "floors instead of rounding": lambda w: quantize_choosing(w, to_int=torch.floor),
    "scale without [:, None]": lambda w: (
        quantize_choosing(w, broadcast=False) if w.shape[0] == w.shape[1] else quantize_choosing(w)
    ),
    "scale 0 for a zero row": lambda w: quantize_choosing(w, zero_scale=0.0),
    "scale per column": lambda w: (
        quantize_choosing(w, scale_of=lambda w: w.abs().amax(dim=0) / 127)
        if w.shape[0] == w.shape[1]
        else quantize_choosing(w, scale_of=lambda w: w.abs().amax(dim=0)[: len(w)] / 127)
    ),
    "q left in float": lambda w: (quantize_with_clamp(w)[0].float(), quantize_with_clamp(w)[1]),
    "scale of shape (rows, 1)": lambda w: (
        quantize_with_clamp(w)[0],
        quantize_with_clamp(w)[1][:, None],
    ),
    "divides the weight in place": quantize_in_place,
    "returns q alone": lambda w: quantize_with_clamp(w)[0],
    "quantizes w.T, as if nn.Linear stored (in, out)": lambda w: quantize_with_clamp(w.T),
    "one scale for the whole matrix, as a (1,) tensor": lambda w: (
        torch.round(w / (w.abs().max() / 127)).to(torch.int8),
        (w.abs().max() / 127).reshape(1),
    ),
    "amax over dim 0": quantize_over_columns,
    "scale stored as int8 too": lambda w: (
        quantize_with_clamp(w)[0],
        quantize_with_clamp(w)[1].to(torch.int8),
    ),
    "scale upside down: 127 / max|row|": lambda w: quantize_choosing(
        w, scale_of=lambda w: 127 / w.abs().amax(dim=1)
    ),
    "multiplies by the scale instead of dividing": quantize_multiplying,
}


# -- Exercise 7.2: left padding --------------------------------------------------------------


def left_pad_with_loops(prompts, pad_id=0):
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    width = max(len(p) for p in prompts)
    ids, mask, positions = [], [], []
    for p in prompts:
        pad = width - len(p)
        ids.append([pad_id] * pad + list(p))
        mask.append([False] * pad + [True] * len(p))
        positions.append([0] * pad + list(range(len(p))))
    return torch.tensor(ids), torch.tensor(mask), torch.tensor(positions)


def left_pad_with_cumsum(prompts, pad_id=0):
    if min(len(p) for p in prompts) == 0:
        raise ValueError("an empty prompt")
    width = max(len(p) for p in prompts)
    lengths = torch.tensor([len(p) for p in prompts])
    mask = torch.arange(width) >= (width - lengths)[:, None]
    ids = torch.full(mask.shape, pad_id)
    ids[mask] = torch.tensor([t for p in prompts for t in p], dtype=torch.long)
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return ids, mask, positions


def left_pad_with_buildllm(prompts, pad_id=0):
    if any(len(p) == 0 for p in prompts):
        raise ValueError("an empty prompt")
    ids, mask = inference.left_pad(prompts, pad_id)
    return ids, mask, (mask.long().cumsum(dim=1) - 1).clamp(min=0)  # as GPTModel numbers them


def left_pad_choosing(prompts, pad_id=0, right=False, mask_of=None, positions_of=None):
    """left_pad_with_loops with switches for the usual mistakes."""
    if right:
        width = max(len(p) for p in prompts)
        ids = torch.tensor([list(p) + [pad_id] * (width - len(p)) for p in prompts])
        mask = torch.tensor([[True] * len(p) + [False] * (width - len(p)) for p in prompts])
        return ids, mask, (mask.cumsum(1) - 1).clamp(min=0)
    ids, mask, positions = left_pad_with_loops(prompts, pad_id)
    if mask_of is not None:
        mask = mask_of(ids, mask, pad_id)
    if positions_of is not None:
        positions = positions_of(mask)
    return ids, mask, positions


def left_pad_without_empty_check(prompts, pad_id=0):
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id)
    mask = torch.zeros(len(prompts), width, dtype=torch.bool)
    for row, p in enumerate(prompts):
        ids[row, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[row, width - len(p) :] = True
    return ids, mask, (mask.cumsum(1) - 1).clamp(min=0)


def left_pad_asserting(prompts, pad_id=0):
    assert all(prompts), "every prompt needs a token"
    return left_pad_with_loops(prompts, pad_id)


def left_pad_in_place(prompts, pad_id=0):
    width = max(len(p) for p in prompts)
    for p in prompts:
        p[:0] = [pad_id] * (width - len(p))
    ids = torch.tensor(prompts)
    return ids, ids != pad_id, ((ids != pad_id).cumsum(1) - 1).clamp(min=0)


WRONG_LEFT_PAD = {
    "pads on the right": lambda p, pad_id=0: left_pad_choosing(p, pad_id, right=True),
    "mask from ids != pad_id": lambda p, pad_id=0: left_pad_choosing(
        p, pad_id, mask_of=lambda ids, mask, pad: ids != pad
    ),
    "mask turned round": lambda p, pad_id=0: left_pad_choosing(
        p, pad_id, mask_of=lambda ids, mask, pad: ~mask
    ),
    "mask as integers": lambda p, pad_id=0: left_pad_choosing(
        p, pad_id, mask_of=lambda ids, mask, pad: mask.long()
    ),
    "positions count the padding": lambda p, pad_id=0: left_pad_choosing(
        p, pad_id, positions_of=lambda mask: torch.arange(mask.shape[1]).expand(mask.shape)
    ),
    "positions -1 at the padding": lambda p, pad_id=0: left_pad_choosing(
        p, pad_id, positions_of=lambda mask: mask.long().cumsum(1) - 1
    ),
    "positions from 1": lambda p, pad_id=0: left_pad_choosing(
        p, pad_id, positions_of=lambda mask: mask.long().cumsum(1)
    ),
    "no error for an empty prompt": left_pad_without_empty_check,
    "pads the caller's lists": left_pad_in_place,
    "returns (ids, mask) without positions": lambda p, pad_id=0: left_pad_with_loops(p, pad_id)[:2],
    "one positions row for the whole batch": lambda p, pad_id=0: (
        *left_pad_with_loops(p, pad_id)[:2],
        torch.arange(max(map(len, p))),
    ),
    "positions from a float cumsum": lambda p, pad_id=0: left_pad_choosing(
        p, pad_id, positions_of=lambda mask: (mask.float().cumsum(1) - 1).clamp(min=0)
    ),
    "pad_id 0 hard-coded": lambda p, pad_id=0: left_pad_with_loops(p),
    "mask for padding on the right": lambda p, pad_id=0: left_pad_choosing(
        p,
        pad_id,
        mask_of=lambda ids, mask, pad: torch.arange(mask.shape[1]) < mask.sum(1, keepdim=True),
    ),
    "a mask of ones": lambda p, pad_id=0: left_pad_choosing(
        p, pad_id, mask_of=lambda ids, mask, pad: torch.ones_like(mask)
    ),
    "assert instead of ValueError": left_pad_asserting,
}


# -- Exercise 7.3: a chat history that fits --------------------------------------------------


def fit_by_starts(messages, count_tokens, budget):
    n_system = 0
    while n_system < len(messages) and messages[n_system]["role"] == "system":
        n_system += 1
    system, turns = messages[:n_system], messages[n_system:]
    for start in range(len(turns)):
        if start > 0 and turns[start]["role"] != "user":
            continue  # a kept conversation starts with a user message
        if count_tokens(system + turns[start:]) <= budget:
            return system + turns[start:]
    raise ValueError("even the last message does not fit in the budget")


def fit_by_popping(messages, count_tokens, budget):
    system = [m for m in messages if m["role"] == "system"]
    turns = [m for m in messages if m["role"] != "system"]
    while count_tokens(system + turns) > budget:
        if len(turns) == 1:
            raise ValueError("the last user message alone is over the budget")
        turns.pop(0)
        while turns[0]["role"] != "user":  # an answer without its question goes too
            turns.pop(0)
    return system + turns


def fit_choosing(
    messages, count, budget, whole_turns=True, keep_system=True, strict=False, newest=True
):
    """fit_by_starts with switches for the usual mistakes."""
    n_system = sum(m["role"] == "system" for m in messages)
    system, turns = messages[:n_system], messages[n_system:]
    if not keep_system:
        system, turns = [], messages
    ends = range(len(turns)) if newest else range(len(turns), 0, -1)
    for i in ends:
        kept = turns[i:] if newest else turns[:i]
        if whole_turns and newest and i > 0 and turns[i]["role"] != "user":
            continue
        total = count(system + kept)
        if total < budget if strict else total <= budget:
            return system + kept
    raise ValueError("nothing fits")


def fit_in_place(messages, count, budget):
    while count(messages) > budget and len(messages) > 1:
        drop = next(i for i, m in enumerate(messages) if m["role"] != "system")
        del messages[drop]
    return messages


def fit_yielding(messages, count, budget):
    """fit_by_starts's messages, one at a time, with yield."""
    yield from fit_by_starts(messages, count, budget)


def fit_dropping_once(messages, count, budget):
    """Drops the oldest turn with an if where a while belongs."""
    system = [m for m in messages if m["role"] == "system"]
    turns = [m for m in messages if m["role"] != "system"]
    if count(system + turns) > budget:
        turns = turns[1:]
        while turns[0]["role"] != "user":
            turns = turns[1:]
    return system + turns


def fit_dropping_the_longest(messages, count, budget):
    """Drops the longest message, other than the system's and the last, until it fits."""
    kept = list(messages)
    while count(kept) > budget:
        droppable = [m for m in kept[:-1] if m["role"] != "system"]
        if not droppable:
            raise ValueError("nothing fits")
        kept.remove(max(droppable, key=lambda m: len(m["content"])))
    return kept


def fit_returning_last(messages, count, budget):
    try:
        return fit_by_starts(messages, count, budget)
    except ValueError:
        return messages[-1:]


WRONG_FIT = {
    "drops single messages, not turns": lambda m, c, b: fit_choosing(m, c, b, whole_turns=False),
    "drops the system message too": lambda m, c, b: fit_choosing(m, c, b, keep_system=False),
    "< budget instead of <=": lambda m, c, b: fit_choosing(m, c, b, strict=True),
    "drops the newest messages": lambda m, c, b: fit_choosing(m, c, b, newest=False),
    "changes the caller's list": fit_in_place,
    "sends the last message when nothing fits": fit_returning_last,
    "yields the messages": fit_yielding,
    "drops one turn, with if instead of while": fit_dropping_once,
    "drops the longest messages first": fit_dropping_the_longest,
}


# -- Exercise 7.4: reading a streamed reply ---------------------------------------------------


def read_with_prefix(lines):
    text, reason = "", None
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line.removeprefix("data:").strip()
        if data == "[DONE]":
            break
        event = json.loads(data)
        if "error" in event:
            raise RuntimeError(event["error"]["message"])
        for choice in event["choices"]:
            text += choice["delta"].get("content") or ""
            reason = choice["finish_reason"] or reason
    return text, reason


def read_with_fields(lines):
    """The SSE spec's way: split each line into field and value, act on 'data' only."""
    pieces, reason = [], None
    for line in lines:
        field, _, value = line.partition(":")
        if field != "data":
            continue  # blank lines, comments (empty field), other fields
        value = value[1:] if value.startswith(" ") else value
        if value == "[DONE]":
            return "".join(pieces), reason
        chunk = json.loads(value)
        if chunk.get("error"):
            raise RuntimeError(chunk["error"].get("message", "the server failed"))
        for choice in chunk.get("choices") or []:
            pieces.append((choice.get("delta") or {}).get("content") or "")
            if choice.get("finish_reason"):
                reason = choice["finish_reason"]
    return "".join(pieces), reason


def read_choosing(lines, piece_of=None, join="", skip_comments=True, prefix=None, error=True,
                  first_choice=False, keep_none=False):  # fmt: skip
    """read_with_prefix with switches for the usual mistakes."""
    pieces, reason = [], None
    for line in lines:
        if not line or (skip_comments and line.startswith(":")):
            continue
        data = line[len(prefix) :] if prefix else line.removeprefix("data:").strip()
        if data == "[DONE]":
            break
        event = json.loads(data)
        if "error" in event:
            if error:
                raise RuntimeError(event["error"]["message"])
            continue
        choices = [event["choices"][0]] if first_choice else event["choices"]
        for choice in choices:
            content = choice["delta"].get("content")
            if content is not None or keep_none:
                pieces.append(content if piece_of is None else piece_of(content))
            reason = choice["finish_reason"] or reason
    return join.join(pieces), reason


def read_pieces(lines, error_check=True, content_of=lambda delta: delta.get("content")):
    """(the non-empty pieces of text, finish_reason): read_with_prefix without the join."""
    pieces, reason = [], None
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line.removeprefix("data:").strip()
        if data == "[DONE]":
            break
        event = json.loads(data)
        if error_check and "error" in event:
            raise RuntimeError("the server sent an error")
        for choice in event["choices"]:
            if content := content_of(choice["delta"]):
                pieces.append(content)
            reason = choice["finish_reason"] or reason
    return pieces, reason


def read_joined(lines, sep="", keep=slice(None), **options):
    """read_pieces's pieces[keep] joined with `sep`, and the finish_reason."""
    pieces, reason = read_pieces(lines, **options)
    return sep.join(pieces[keep]), reason


def read_assuming_stop(lines):
    text, reason = read_with_prefix(lines)
    return text, reason or "stop"


def read_with_len(lines):
    if len(lines) == 0:
        return "", None
    return read_with_prefix(lines)


def read_twice(lines):
    _, reason = read_with_prefix(lines)
    text, _ = read_with_prefix(lines)
    return text, reason


WRONG_READ = {
    "strips each piece": lambda lines: read_choosing(lines, piece_of=str.strip),
    "joins the pieces with spaces": lambda lines: read_choosing(lines, join=" "),
    "parses comment lines": lambda lines: read_choosing(lines, skip_comments=False),
    "cuts 6 characters for 'data: '": lambda lines: read_choosing(lines, prefix="data: "),
    "ignores error events": lambda lines: read_choosing(lines, error=False),
    "reads choices[0] of every chunk": lambda lines: read_choosing(lines, first_choice=True),
    "joins a null content": lambda lines: read_choosing(lines, keep_none=True),
    "needs len() of the lines": read_with_len,
    "reads the lines twice": read_twice,
    "returns the pieces as a list": lambda lines: (
        [read_with_prefix(lines)[0]],
        read_with_prefix(lines)[1],
    ),
    "reads delta['content']": lambda lines: read_pieces(lines, content_of=lambda d: d["content"]),
    "returns the text alone": lambda lines: read_with_prefix(lines)[0],
    "joins the non-empty pieces with spaces": lambda lines: read_joined(lines, sep=" "),
    "drops pieces[0], taking it for the role chunk": lambda lines: read_joined(
        lines, keep=slice(1, None)
    ),
    "drops pieces[-1], taking it for the finish chunk": lambda lines: read_joined(
        lines, keep=slice(None, -1)
    ),
    "always 'stop'": lambda lines: (read_with_prefix(lines)[0], "stop"),
    "'stop' when no finish_reason came": read_assuming_stop,
    "its own words for an error event": read_joined,
    "no check for error events": lambda lines: read_joined(lines, error_check=False),
}


# -- Exercise 7.5: cosine top-k ----------------------------------------------------------------


def top_k_with_normalize(queries, keys, k):
    if not 1 <= k <= len(keys):
        raise ValueError(f"k must be between 1 and {len(keys)}")
    similarity = F.normalize(queries, dim=1) @ F.normalize(keys, dim=1).T
    return similarity.topk(k, dim=1)


def top_k_with_norms(queries, keys, k):
    if k < 1 or k > keys.shape[0]:
        raise ValueError("k must be between 1 and the number of keys")
    q = queries / queries.norm(dim=1, keepdim=True).clamp(min=1e-12)
    x = keys / keys.norm(dim=1, keepdim=True).clamp(min=1e-12)
    order = torch.argsort(q @ x.T, dim=1, descending=True)[:, :k]
    return (q @ x.T).gather(1, order), order


def top_k_with_buildllm(queries, keys, k):
    return retrieval.cosine_top_k(queries, keys, k)


def top_k_choosing(queries, keys, k, norm_q=True, norm_k=True, dim=1, largest=True, check_k=True):
    """top_k_with_normalize with switches for the usual mistakes."""
    if check_k and not 1 <= k <= len(keys):
        raise ValueError("bad k")
    q = F.normalize(queries, dim=dim) if norm_q else queries
    x = F.normalize(keys, dim=dim) if norm_k else keys
    return (q @ x.T).topk(k, dim=1, largest=largest)


def top_k_dividing_by_norms(queries, keys, k):
    if not 1 <= k <= len(keys):
        raise ValueError("bad k")
    dots = queries @ keys.T
    return (dots / (queries.norm(dim=1)[:, None] * keys.norm(dim=1)[None, :])).topk(k, dim=1)


def top_k_normalizing_in_place(queries, keys, k):
    if not 1 <= k <= len(keys):
        raise ValueError("bad k")
    queries /= queries.norm(dim=1, keepdim=True).clamp(min=1e-12)
    keys /= keys.norm(dim=1, keepdim=True).clamp(min=1e-12)
    return (queries @ keys.T).topk(k, dim=1)


def top_k_by_list_index(queries, keys, k):
    """The scores from topk, each one's key found with list.index: a tie names one key twice."""
    scores = top_k_with_normalize(queries, keys, k).values
    sims = F.normalize(queries, dim=1) @ F.normalize(keys, dim=1).T
    ids = [
        [row.index(s) for s in top] for row, top in zip(sims.tolist(), scores.tolist(), strict=True)
    ]
    return scores, torch.tensor(ids)


def top_k_with_cosine_similarity(queries, keys, k):
    if not 1 <= k <= len(keys):
        raise ValueError("bad k")
    return F.cosine_similarity(queries[:, None], keys[None], dim=-1).topk(k, dim=1)


WRONG_TOP_K = {
    "dot product without normalising": lambda q, x, k: top_k_choosing(
        q, x, k, norm_q=False, norm_k=False
    ),
    "keys not normalised": lambda q, x, k: top_k_choosing(q, x, k, norm_k=False),
    "queries not normalised": lambda q, x, k: top_k_choosing(q, x, k, norm_q=False),
    "normalised along dim 0": lambda q, x, k: top_k_choosing(q, x, k, dim=0),
    "smallest first": lambda q, x, k: top_k_choosing(q, x, k, largest=False),
    "NaN for a zero vector": top_k_dividing_by_norms,
    "no ValueError for a bad k": lambda q, x, k: top_k_choosing(
        q, x, min(max(k, 1), len(x)), check_k=False
    ),
    "normalises in place": top_k_normalizing_in_place,
    "(ids, scores) swapped": lambda q, x, k: tuple(reversed(top_k_with_normalize(q, x, k))),
    "topk along dim 0": lambda q, x, k: (
        (F.normalize(q, dim=1) @ F.normalize(x, dim=1).T).topk(min(k, len(q)), dim=0)
        if 1 <= k <= len(x)
        else top_k_with_normalize(q, x, k)
    ),
    "calls cosine_similarity": top_k_with_cosine_similarity,
    "keys @ queries.T, topk over dim 0": lambda q, x, k: (
        (F.normalize(x, dim=1) @ F.normalize(q, dim=1).T).topk(k, dim=0)
        if 1 <= k <= len(x)
        else top_k_with_normalize(q, x, k)
    ),
    "ids stacked with the scores, which makes them floats": lambda q, x, k: tuple(
        torch.stack(tuple(top_k_with_normalize(q, x, k)))
    ),
    "1 - cosine, a distance, largest first": lambda q, x, k: (
        (1 - F.normalize(q, dim=1) @ F.normalize(x, dim=1).T).topk(k, dim=1)
        if 1 <= k <= len(x)
        else top_k_with_normalize(q, x, k)
    ),
    "returns the ids alone": lambda q, x, k: top_k_with_normalize(q, x, k).indices,
    "ids counted from 1": lambda q, x, k: (
        top_k_with_normalize(q, x, k).values,
        top_k_with_normalize(q, x, k).indices + 1,
    ),
    "ids found with list.index": top_k_by_list_index,
    "ids from argsort without descending=True": lambda q, x, k: (
        top_k_with_normalize(q, x, k).values,
        (F.normalize(q, dim=1) @ F.normalize(x, dim=1).T).argsort(dim=1)[:, :k],
    ),
}


# -- Exercise 7.6: the cost of training --------------------------------------------------------


def cost_by_formula(cfg, tokens, peak_tflops, mfu, usd_per_hour, n_gpus=1):
    if not 0 < mfu <= 1:
        raise ValueError(f"mfu is a share of the peak, from 0 to 1; got {mfu}")
    d, layers = cfg.emb_dim, cfg.n_layers
    per_layer = 2 * 12 * d * d + 2 * 2 * cfg.context_length * d
    forward = layers * per_layer + 2 * d * cfg.vocab_size
    flops = 3 * forward * tokens
    hours = flops / (peak_tflops * 1e12 * mfu * n_gpus) / 3600
    return flops, hours, hours * n_gpus * usd_per_hour


def cost_with_buildllm(cfg, tokens, peak_tflops, mfu, usd_per_hour, n_gpus=1):
    gpu = capstone.GPU("any", peak_tflops, "bf16", usd_per_hour, "")
    cost = capstone.training_cost(cfg, tokens, gpu, mfu=mfu, n_gpus=n_gpus)
    return cost["flops"], cost["hours"], cost["usd"]


def cost_choosing(
    cfg, tokens, peak, mfu, price, n_gpus=1, flops_of=None, hours_of=None, usd_of=None, check=True
):
    """cost_by_formula with switches for the usual mistakes."""
    if check and not 0 < mfu <= 1:
        raise ValueError("bad mfu")
    flops = 3 * forward_flops_per_token(cfg) * tokens if flops_of is None else flops_of(cfg, tokens)
    seconds = flops / (peak * 1e12 * mfu * n_gpus)
    hours = seconds / 3600 if hours_of is None else hours_of(flops, peak, mfu, n_gpus)
    usd = hours * n_gpus * price if usd_of is None else usd_of(hours, price, n_gpus)
    return flops, hours, usd


def forward_by_formula(cfg, attention=4, halved=False):
    """cost_by_formula's forward FLOPs per token, with `attention` · context · d per layer for
    attention, or halved: multiply-adds counted instead of FLOPs."""
    d = cfg.emb_dim
    per_layer = 24 * d * d + attention * cfg.context_length * d
    flops = cfg.n_layers * per_layer + 2 * d * cfg.vocab_size
    return flops // 2 if halved else flops


def six_n(cfg, tokens):
    from buildllm.check.meeting7 import _parameters

    return 6 * _parameters(cfg) * tokens


WRONG_COST = {
    "forward FLOPs only": lambda *a, **kw: cost_choosing(
        *a, **kw, flops_of=lambda c, t: forward_flops_per_token(c) * t
    ),
    "6 × forward FLOPs": lambda *a, **kw: cost_choosing(
        *a, **kw, flops_of=lambda c, t: 6 * forward_flops_per_token(c) * t
    ),
    "6 × parameters": lambda *a, **kw: cost_choosing(*a, **kw, flops_of=six_n),
    "no attention": lambda *a, **kw: cost_choosing(
        *a,
        **kw,
        flops_of=lambda c, t: (
            3 * (c.n_layers * 24 * c.emb_dim**2 + 2 * c.emb_dim * c.vocab_size) * t
        ),
    ),
    "no output layer": lambda *a, **kw: cost_choosing(
        *a,
        **kw,
        flops_of=lambda c, t: (
            3 * c.n_layers * (24 * c.emb_dim**2 + 4 * c.context_length * c.emb_dim) * t
        ),
    ),
    "hours in seconds": lambda *a, **kw: cost_choosing(
        *a, **kw, hours_of=lambda f, p, m, n: f / (p * 1e12 * m * n)
    ),
    "mfu multiplied": lambda *a, **kw: cost_choosing(
        *a, **kw, hours_of=lambda f, p, m, n: f / (p * 1e12 * n) * m / 3600
    ),
    "n_gpus ignored": lambda *a, **kw: cost_choosing(
        *a, **kw, hours_of=lambda f, p, m, n: f / (p * 1e12 * m) / 3600
    ),
    "pays for one GPU": lambda *a, **kw: cost_choosing(*a, **kw, usd_of=lambda h, p, n: h * p),
    "no ValueError for mfu 40": lambda *a, **kw: cost_choosing(*a, **kw, check=False),
    "returns a dict": lambda *a, **kw: dict(
        zip(("flops", "hours", "usd"), cost_by_formula(*a, **kw), strict=True)
    ),
    "attention's two products counted as one": lambda *a, **kw: cost_choosing(
        *a, **kw, flops_of=lambda c, t: 3 * forward_by_formula(c, attention=2) * t
    ),
    "multiply-adds, not FLOPs": lambda *a, **kw: cost_choosing(
        *a, **kw, flops_of=lambda c, t: 3 * forward_by_formula(c, halved=True) * t
    ),
    "backward as costly as forward: 2 ×": lambda *a, **kw: cost_choosing(
        *a, **kw, flops_of=lambda c, t: 2 * forward_flops_per_token(c) * t
    ),
    "mfu ignored": lambda *a, **kw: cost_choosing(
        *a, **kw, hours_of=lambda f, p, m, n: f / (p * 1e12 * n) / 3600
    ),
    "peak_tflops taken as FLOP/s": lambda *a, **kw: cost_choosing(
        *a, **kw, hours_of=lambda f, p, m, n: f / (p * m * n) / 3600
    ),
    "minutes, not hours": lambda *a, **kw: cost_choosing(
        *a, **kw, hours_of=lambda f, p, m, n: f / (p * 1e12 * m * n) / 60
    ),
    "formats the numbers as text": lambda *a, **kw: tuple(
        f"{x:.3g}" for x in cost_by_formula(*a, **kw)
    ),
    "dollars rounded to cents": lambda *a, **kw: cost_choosing(
        *a, **kw, usd_of=lambda h, p, n: round(h * n * p, 2)
    ),
}


# (exercise, its check, right answers, wrong answers by the mistake they make)
EXERCISES = [
    (
        "7.1",
        check.meeting7.quantize_rows,
        [quantize_with_clamp, quantize_with_where, quantize_by_row, quantize_with_buildllm],
        WRONG_QUANTIZE,
    ),
    (
        "7.2",
        check.meeting7.left_pad,
        [left_pad_with_loops, left_pad_with_cumsum, left_pad_with_buildllm],
        WRONG_LEFT_PAD,
    ),
    ("7.3", check.meeting7.fit_history, [fit_by_starts, fit_by_popping], WRONG_FIT),
    ("7.4", check.meeting7.read_stream, [read_with_prefix, read_with_fields], WRONG_READ),
    (
        "7.5",
        check.meeting7.cosine_top_k,
        [top_k_with_normalize, top_k_with_norms, top_k_with_buildllm],
        WRONG_TOP_K,
    ),
    ("7.6", check.meeting7.training_cost, [cost_by_formula, cost_with_buildllm], WRONG_COST),
]
