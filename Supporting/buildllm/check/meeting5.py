"""Checks for the Meeting 5 exercises: the loss, sampling's filters, and a training step's parts.

Each check compares the learner's function with the reference (F.cross_entropy, buildllm's
top_k_filter, top_p_filter, lr_at and clip_grad_norm, torch.optim.AdamW) and names the mistake
a wrong answer matches. Inputs come from their own seeded generators: the same cases in every
run, and no draw from the learner's RNG.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial
from unittest.mock import patch

import torch
import torch.nn.functional as F

from .. import training
from ..generation import top_k_filter, top_p_filter
from . import _support, expect_tensor, verify
from ._support import Refuses, deferred, expect_close, fail_first, fail_if, matching, randn

__all__ = ["adamw_step", "clip_grad_norm", "cross_entropy", "lr_schedule",
           "softmax_with_temperature", "top_k", "top_p"]

NEG_INF = float("-inf")


def _call(fn, logits: torch.Tensor, *args):
    """fn's result on a copy of the logits, which must come back unchanged."""
    given = logits.clone()
    got = fn(given, *args)
    fail_if(not torch.equal(given, logits),
            "your function changed the logits it was given (an in-place operation such as "
            "div_, masked_fill_ or [...] = ?); work on a copy, or use the operations that return "
            "a new tensor, so the caller's stay as they were")
    return got


def _float(value, before: str, after: str) -> float:
    """float(value), or a failure that shows what came back: "{before}{value!r}; {after}"."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise AssertionError(f"{before}{value!r}; {after}") from None


def _refusing(owners: list[tuple[object, str]], advice: str) -> ExitStack:
    """A context in which calling any of these methods or functions fails the check."""
    stack = ExitStack()
    for owner, name in owners:
        stack.enter_context(patch.object(owner, name, side_effect=AssertionError(advice)))
    return stack


# -- Exercise 5.1 ---------------------------------------------------------------------------
class _NoCrossEntropy(Refuses):
    banned = frozenset({F.cross_entropy, F.nll_loss})  # nn.CrossEntropyLoss calls F.cross_entropy
    advice = ("this exercise asks you to write cross entropy out: log-probabilities, then each "
              "target's entry, then the mean")


def cross_entropy(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Exercise 5.1: fn(logits, targets) must equal F.cross_entropy over every position.
    Logits in the hundreds make the log of a softmax give inf."""
    @deferred
    def case(logits: torch.Tensor, targets: torch.Tensor, grad: bool = False) -> None:
        rows, t = logits.flatten(0, -2), targets.flatten()  # a row of logits per position
        reference = logits.clone().requires_grad_(grad)
        want = F.cross_entropy(reference.flatten(0, -2), t)
        given = torch.Tensor._make_subclass(_NoCrossEntropy, logits.clone(), grad)
        got = fn(given, targets.clone())
        fail_if(isinstance(got, numbers.Number), f"the result is a Python {type(got).__name__}; "
                "return a tensor (no .item()), so that loss.backward() can compute gradients")
        loss = _support.plain(expect_tensor(got, "the loss"))
        value = loss.detach().float()
        fail_first(
            (value.shape == targets.shape, f"the result has shape {tuple(value.shape)}, one loss "
             "per token: return their mean, a single number"),
            (value.numel() != 1, f"the result has shape {tuple(value.shape)}; the loss is a single "
             "number, the mean over every position"))
        value = value.reshape(())
        fail_if(not torch.isfinite(value), f"the loss is {value.item()}: a target's probability "
                "underflowed to 0 and log(0) = -inf. Subtract the logsumexp instead of taking the "
                "log of a softmax: logits - logits.logsumexp(dim=-1, keepdim=True), or log_softmax")
        picked = rows.log_softmax(-1).gather(-1, t[:, None])  # log p(target), one per position
        over = logits.log_softmax(0 if logits.ndim == 2 else 1)  # the dim before the vocabulary's
        _support.expect_number(value, want, "the loss", [
            ("it matches the sum over tokens; the loss is their mean", -picked.sum()),
            ("it matches the loss without its minus sign; the loss is -log p(target), a positive "
             "number that falls as the model improves", -want),
            ("it matches -logit(target) with no softmax: turn the logits into log-probabilities "
             "first, logits - logits.logsumexp(dim=-1, keepdim=True)",
             F.nll_loss(rows, t)),
            ("it matches the log in base 2 (the loss in bits); PyTorch's losses use the natural "
             "log, torch.log", want / math.log(2)),
            ("it matches -log of the average probability; average each token's -log p instead",
             -picked.exp().mean().log()),
            ("it matches a softmax over the wrong dim; each position's distribution is over the "
             "vocabulary, the last dim: dim=-1", -over.gather(-1, targets[..., None]).mean()),
        ], "the mean over every position of -log p(target), with p from a softmax over the "
           "vocabulary")
        if grad:
            _support.expect_same_gradients(
                loss, want, [("the gradient of the loss", given, reference)], "the loss carries "
                "no gradient: keep every step in torch (no .item(), .detach(), numpy or "
                "torch.no_grad()) so loss.backward() works")

    by_hand = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.0, 0.0, 0.0, 0.0], [1.0, 3.0, 2.0, 0.0]])
    large, gen = randn(3, 4, 6, scale=100.0), torch.Generator().manual_seed(5)
    verify("Exercise 5.1", [
        ("3 rows of logits over 4 tokens, targets [0, 2, 1]",
         case(by_hand, torch.tensor([0, 2, 1]))),
        ("a batch: logits (2, 5, 10), targets (2, 5)",
         case(randn(1, 2, 5, 10, scale=2.0), torch.randint(0, 10, (2, 5), generator=gen))),
        ("logits in the hundreds, each target the least likely", case(large, large.argmin(-1))),
        ("GPT-2's vocabulary: logits (2, 8, 50257) near 0, a loss near ln 50257 = 10.8",
         case(randn(2, 2, 8, 50257, scale=0.02), torch.randint(0, 50257, (2, 8), generator=gen))),
        ("the gradient: loss.backward() gives F.cross_entropy's",
         case(randn(4, 3, 7), torch.randint(0, 7, (3,), generator=gen), grad=True)),
    ])


# -- Exercise 5.2 ---------------------------------------------------------------------------
def softmax_with_temperature(fn: Callable[[torch.Tensor, float], torch.Tensor]) -> None:
    """Exercise 5.2: fn(logits, T) must equal softmax(logits / T) over the last dim; T = 0 gives
    probability 1 to the largest logit (greedy decoding). Logits up to 60 at T = 0.1 overflow a
    softmax written with exp and no max subtracted."""
    @deferred
    def case(logits: torch.Tensor, t: float) -> None:
        want = (F.one_hot(logits.argmax(-1), logits.shape[-1]).float() if t == 0
                else (logits / t).softmax(-1))
        probs = logits.softmax(-1)
        mistakes = [] if t == 0 else [
            ("it matches the logits multiplied by the temperature; divide them: logits / T, so "
             "that T below 1 sharpens and T above 1 flattens", (logits * t).softmax(-1)),
            ("it matches the probabilities divided by T after the softmax; then they no longer "
             "sum to 1. Divide the logits, then take the softmax", probs / t),
            ("it matches a softmax of the probabilities; scale the logits, then take one softmax",
             (probs / t).softmax(-1)),
            ("it matches a plain softmax: the temperature is missing", probs),
            ("it matches a softmax over dim 0; each row is one distribution over the vocabulary: "
             "softmax(dim=-1)", (logits / t).softmax(0)),
        ]
        got = expect_tensor(_call(fn, logits, t), "the result")
        fail_if(got.shape == want.shape and not torch.isfinite(got).all(), "the result holds NaN "
                "or inf: " + ("at temperature 0, handle T = 0 on its own, with probability 1 on "
                              "the largest logit (F.one_hot(logits.argmax(-1), vocab))" if t == 0
                              else "exp of a large logit / T overflows. Subtract each row's "
                              "largest logit before exp (softmax does), or use torch.softmax"))
        if got.shape == want.shape and matching(got, mistakes) is None:
            sums = got.float().sum(-1).flatten()
            fail_if(not torch.allclose(sums, torch.ones_like(sums), atol=1e-4), "each row should "
                    "sum to 1, a probability distribution, but one sums to "
                    f"{sums[(sums - 1).abs().argmax()].item():.4g}")
        expect_close(got, want, "the result", mistakes, atol=1e-6)

    verify("Exercise 5.2", [
        ("logits [1, 2, 3] at T = 1: a plain softmax", case(torch.tensor([1.0, 2.0, 3.0]), 1.0)),
        ("two rows at T = 0.5: sharper", case(randn(11, 2, 6, scale=2.0), 0.5)),
        ("two rows at T = 2: flatter", case(randn(12, 2, 6, scale=2.0), 2.0)),
        ("logits up to 60 at T = 0.1", case(randn(13, 3, 8, scale=30.0), 0.1)),
        ("T = 0: greedy, all the probability on the largest logit", case(randn(14, 3, 6), 0.0)),
        ("a (2, 3, 50257) batch at T = 0.8: one distribution per position",
         case(randn(15, 2, 3, 50257, scale=3.0), 0.8)),
    ])


# -- Exercises 5.3 and 5.4 ------------------------------------------------------------------
def _expect_filtered(got, want: torch.Tensor, mistakes, what_to_keep: Callable[[int], str]):
    """Compare filtered logits: the shape, known mistakes, which tokens survive, their values."""
    got = expect_tensor(got, "the result").detach()
    fail_if(got.shape != want.shape, f"the result has shape {tuple(got.shape)}, expected "
            f"{tuple(want.shape)}: the logits' own shape, with -inf for every token filtered out")
    if torch.allclose(got.float(), want):  # equal infinities count as close
        return
    hint, keep, kept = matching(got, mistakes), torch.isfinite(want), torch.isfinite(got)
    fail_first((hint is not None, f"the result is wrong: {hint}"),
               (torch.isnan(got).any(), "the result holds NaN"),
               (torch.equal(keep, kept), "the right tokens survive, but their logits changed: "
                "return them as they were; only the filtered ones become -inf"),
               (kept.all(), "no logit is -inf: the tokens filtered out must become "
                "float('-inf'), which softmax turns into a probability of exactly 0"))
    rows_want, rows_got = keep.reshape(-1, keep.shape[-1]), kept.reshape(-1, kept.shape[-1])
    r = int((rows_want != rows_got).any(-1).nonzero()[0])
    ids_got, ids_want = rows_got[r].nonzero().flatten(), rows_want[r].nonzero().flatten()
    row = f"row {r} " if keep.ndim > 1 else ""
    shown = (f" (tokens {ids_got.tolist()}, expected {ids_want.tolist()})"
             if max(len(ids_got), len(ids_want)) <= 12 else "")
    raise AssertionError(
        f"{row}keeps {len(ids_got)} tokens, expected {len(ids_want)}{shown}: {what_to_keep(r)}")


def top_k(fn: Callable[[torch.Tensor, int], torch.Tensor]) -> None:
    """Exercise 5.3: fn(logits, k) must equal buildllm.generation.top_k_filter(logits, k);
    k may be larger than the vocabulary (nothing filtered, no error)."""
    @deferred
    def case(logits: torch.Tensor, k: int) -> None:
        vocab = logits.shape[-1]
        try:
            got = _call(fn, logits, k)
        except RuntimeError as err:
            fail_if(k > vocab and "out of range" in str(err), f"k = {k} is more than the {vocab} "
                    "tokens there are, and torch.topk refuses that: use min(k, logits.shape[-1]), "
                    "and keep them all")
            raise
        k = min(k, vocab)
        sorted_logits = logits.sort(dim=-1, descending=True).values
        kth = sorted_logits[..., k - 1 : k]
        # Where k - 1, k + 1 or the whole batch change nothing, a "mistake" gives the right
        # answer, and a right answer never gets as far as this list.
        _expect_filtered(got, top_k_filter(logits, k), [
            ("it matches the other logits set to 0; a logit of 0 can still be a likely token. Set "
             "them to float('-inf'), which softmax turns into a probability of 0",
             logits.masked_fill(logits < kth, 0.0)),
            ("it matches the k largest logits removed and the rest kept: keep the k largest",
             logits.masked_fill(logits >= kth, NEG_INF)),
            ("it matches the kept logits in sorted order, at the front; keep each logit at its "
             "own position, which is its token id",
             sorted_logits.masked_fill(torch.arange(vocab) >= k, NEG_INF)),
            ("it matches probabilities; return logits, with -inf for the tokens filtered out "
             "(sampling takes the softmax afterwards)", top_k_filter(logits, k).softmax(-1)),
            ("it keeps k - 1 tokens: the k-th largest logit itself stays (filter what is below "
             "it, < not <=)", top_k_filter(logits, max(k - 1, 1))),
            ("it keeps k + 1 tokens: counting from 0, the k-th largest value is at index k - 1, "
             "topk(k).values[..., -1]", top_k_filter(logits, k + 1)),
            ("it matches the top k of the whole batch at once; each row (each sequence's next "
             "token) keeps its own k largest: topk along dim=-1",
             logits.masked_fill(logits < logits.flatten().topk(k).values[-1], NEG_INF)),
        ], lambda r: f"the {k} largest logits of each row stay")

    verify("Exercise 5.3", [
        ("one row [1, 3, 0.5, 2, -1], k = 2: tokens 1 and 3 stay",
         case(torch.tensor([1.0, 3.0, 0.5, 2.0, -1.0]), 2)),
        ("three rows of 10, k = 3: each row its own top 3", case(randn(21, 3, 10), 3)),
        ("k = 1: only the largest logit stays", case(randn(22, 2, 8), 1)),
        ("k = 10 of 10 tokens: nothing is filtered", case(randn(23, 2, 10), 10)),
        ("k = 100 of 10 tokens: keep them all, no error", case(randn(24, 2, 10), 100)),
        ("GPT-2's vocabulary, (2, 50257), k = 50", case(randn(25, 2, 50257, scale=3.0), 50)),
    ])


def top_p(fn: Callable[[torch.Tensor, float], torch.Tensor]) -> None:
    """Exercise 5.4: fn(logits, p) must equal buildllm.generation.top_p_filter(logits, p).

    In every case the probability before each token is at least 1e-3 away from p, so sums
    taken in another order or precision agree.
    """
    @deferred
    def case(logits: torch.Tensor, p: float) -> None:
        want, rows = top_p_filter(logits, p), logits.reshape(-1, logits.shape[-1])
        got = _call(fn, logits, p)
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        total = probs.cumsum(-1)
        n = ((total - probs) < p).sum(-1, keepdim=True)  # tokens whose better ones sum below p
        by_id = logits.softmax(-1)
        up_logits, up_order = logits.sort(dim=-1)
        up_probs = up_logits.softmax(-1)
        nucleus = ("the nucleus is the fewest most likely tokens whose probabilities add up to at "
                   "least p")

        def back(drop, fill=NEG_INF, values=sorted_logits, ids=order) -> torch.Tensor:
            """Sorted `values` with `drop` filled, put back at their token ids `ids`."""
            return torch.full_like(values, NEG_INF).scatter(-1, ids, values.masked_fill(drop, fill))

        def what_to_keep(r: int) -> str:
            n = int(torch.isfinite(want.reshape(rows.shape)[r]).sum())
            held = rows[r].softmax(-1).sort(descending=True).values[:n].sum().item()
            return f"{nucleus} = {p}: here the top {n}, which hold {held:.3f}"

        _expect_filtered(got, want, [
            (f"it matches dropping the token whose probability takes the sum past p; keep it: "
             f"{nucleus}", back(total > p)),
            (f"it matches dropping the token that takes the sum to p or past it; keep it: "
             f"{nucleus}", back(total >= p)),
            ("it keeps one token too many: stop at the first token that takes the sum to p or "
             "past it", back(torch.arange(logits.shape[-1]) > n)),
            ("it matches a running sum in token-id order; sort the probabilities from most to "
             "least likely first", logits.masked_fill(by_id.cumsum(-1) - by_id >= p, NEG_INF)),
            ("it matches a sort from the least likely up; sort with descending=True",
             back(up_probs.cumsum(-1) - up_probs >= p, values=up_logits, ids=up_order)),
            ("it matches the result left in sorted order; put each logit back at its token id, "
             "scattering with the indices that sort returned",
             sorted_logits.masked_fill(total - probs >= p, NEG_INF)),
            ("it matches the other logits set to 0; set them to float('-inf'), which softmax "
             "turns into a probability of 0", back(total - probs >= p, 0.0)),
            ("it matches probabilities; return logits, with -inf for the tokens filtered out",
             top_p_filter(logits, p).softmax(-1)),
            ("it matches one nucleus for the whole batch; each row gets its own: softmax, sort "
             "and cumsum along dim=-1", top_p_filter(logits.flatten(), p).reshape(logits.shape)),
        ], what_to_keep)

    by_hand = torch.tensor([0.15, 0.5, 0.05, 0.3]).log()
    sharp_to_flat = randn(31, 3, 12) * torch.tensor([[4.0], [1.5], [0.3]])
    verify("Exercise 5.4", [
        ("probabilities [0.15, 0.5, 0.05, 0.3], p = 0.7: tokens 1 and 3 (0.8)",
         case(by_hand, 0.7)),
        ("the same, p = 0.9: tokens 1, 3 and 0 (0.95)", case(by_hand, 0.9)),
        ("a sure model: [0.01, 0.97, 0.02], p = 0.9: its top token alone",
         case(torch.tensor([0.01, 0.97, 0.02]).log(), 0.9)),
        ("three rows, sharp to flat, p = 0.8: each row its own nucleus", case(sharp_to_flat, 0.8)),
        ("p = 1: every token stays", case(randn(32, 2, 8), 1.0)),
        ("GPT-2's vocabulary, (2, 50257), p = 0.95: nuclei of 18 and 11 tokens",
         case(randn(39, 2, 50257, scale=8.0), 0.95)),
    ])


# -- Exercise 5.5 ---------------------------------------------------------------------------
def _cosine(s, m, w, t, lo, span=None):
    """lr_at's cosine at step s, with no end at total_steps, and progress over `span` if given."""
    return lo + 0.5 * (m - lo) * (1 + math.cos(math.pi * (s - w) / (span or t - w)))


_COSINE = "min_lr + 0.5 · (max_lr - min_lr) · (1 + cos(π · progress))"  # as the hints write it
# Each mistake replaces lr_at in one phase: "warmup" (step < warmup_steps), "decay" (up to
# total_steps) or "after"; lr_at gives every other step.
_SCHEDULE_MISTAKES = [
    ("it matches a warmup of max_lr · step / warmup_steps, which gives a rate of 0 at step 0: "
     "count steps from 0 and use (step + 1) / warmup_steps, so the first step already learns "
     "and step warmup_steps - 1 reaches max_lr", "warmup", lambda s, m, w, t, lo: m * s / w),
    ("it matches no warmup at all: max_lr from step 0", "warmup", lambda s, m, w, t, lo: m),
    ("it matches a cosine whose progress is step / total_steps; the decay starts after warmup: "
     "progress = (step - warmup_steps) / (total_steps - warmup_steps)", "decay",
     lambda s, m, w, t, lo: _cosine(s, m, 0, t, lo)),
    ("it matches progress = (step - warmup_steps) / total_steps, which never reaches 1; divide "
     "by the length of the decay, total_steps - warmup_steps", "decay",
     lambda s, m, w, t, lo: _cosine(s, m, w, t, lo, span=t)),
    ("it matches a cosine down to 0 instead of min_lr", "decay",
     lambda s, m, w, t, lo: _cosine(s, m, w, t, 0.0)),
    ("it matches min_lr added to a cosine from max_lr down to 0; the cosine should go from "
     f"max_lr to min_lr: {_COSINE}", "decay", lambda s, m, w, t, lo: lo + _cosine(s, m, w, t, 0.0)),
    ("it matches a straight line from max_lr to min_lr; the decay follows half a cosine: "
     f"{_COSINE}", "decay", lambda s, m, w, t, lo: m - (m - lo) * (s - w) / (t - w)),
    ("it matches cos(π · progress) without 0.5 · (1 + ...), which goes below min_lr; use "
     f"{_COSINE}", "decay",
     lambda s, m, w, t, lo: lo + (m - lo) * math.cos(math.pi * (s - w) / (t - w))),
    ("it matches a cosine that rises again after total_steps; from total_steps on the rate "
     "stays at min_lr", "after", _cosine),
]
_WHY_AT = {
    "warmup": "during warmup (steps 0 to warmup_steps - 1) the rate rises in a straight line, "
              "max_lr · (step + 1) / warmup_steps",
    "decay": f"from warmup_steps to total_steps the rate follows half a cosine, {_COSINE}, with "
             "progress = (step - warmup_steps) / (total_steps - warmup_steps)",
    "after": "from total_steps on the rate stays at min_lr",
}


def lr_schedule(fn: Callable[..., float]) -> None:
    """Exercise 5.5: fn(step, max_lr=, warmup_steps=, total_steps=, min_lr=) must equal
    buildllm.training.lr_at at every step from 0 to a few past total_steps."""
    @deferred
    def case(m: float, w: int, t: int, lo: float, every: int = 1) -> None:
        settings = dict(max_lr=m, warmup_steps=w, total_steps=t, min_lr=lo)
        close = partial(math.isclose, rel_tol=1e-6, abs_tol=1e-12)
        steps = range(0, t + 4 * every, every)
        phase = {s: "warmup" if s < w else "decay" if s < t else "after" for s in steps}
        want = [training.lr_at(s, **settings) for s in steps]
        got = [_float(fn(s, **settings), f"at step {s} the result is ", "return a number")
               for s in steps]
        bad = [i for i, s in enumerate(steps) if not close(got[i], want[i])]
        if not bad:
            return
        for hint, part, wrong in _SCHEDULE_MISTAKES:
            theirs = [wrong(s, m, w, t, lo) if phase[s] == part else r
                      for s, r in zip(steps, want, strict=True)]
            fail_if(all(map(close, got, theirs)), f"the schedule is wrong: {hint}")
        s, i = steps[bad[0]], bad[0]
        raise AssertionError(f"at step {s} the rate is {got[i]:.6g}, expected {want[i]:.6g}: "
                             f"{_WHY_AT[phase[s]]}")

    verify("Exercise 5.5", [
        ("max_lr 1, 10 warmup steps of 100, down to 0", case(1.0, 10, 100, 0.0)),
        ("GPT-3's shape: 6e-4 down to 6e-5, 20 warmup steps of 200", case(6e-4, 20, 200, 6e-5)),
        ("no warmup: warmup_steps = 0", case(3e-3, 0, 50, 3e-4)),
        ("warmup_steps = 1: step 0 is already at max_lr", case(1e-3, 1, 30, 0.0)),
        ("a long run: 2,000 warmup steps of 60,000, every 250th step",
         case(6e-4, 2000, 60000, 6e-5, every=250)),
    ])


# -- Exercise 5.6 ---------------------------------------------------------------------------
def _gradients(seed: int, shapes, scale: float, without_grad=()) -> list[torch.Tensor]:
    """Parameters with random gradients (none for the indices in `without_grad`)."""
    gen = torch.Generator().manual_seed(seed)
    params = []
    for i, shape in enumerate(shapes):
        params.append(torch.randn(shape, generator=gen).requires_grad_())
        if i not in without_grad:
            params[-1].grad = scale * torch.randn(shape, generator=gen)
    return params


def _model_gradients(seed: int) -> list[torch.Tensor]:
    """A small GPT's parameters after one backward pass on random tokens."""
    with _support.seeded(seed):
        model, ids = _support.tiny_gpt(None, 50, 8, 16, 2, 2), torch.randint(0, 50, (2, 9))
    training.batch_loss(model, ids[:, :-1], ids[:, 1:]).backward()
    return list(model.parameters())


def _expect_clipped(got_norm, params, reference, before, want: float, max_norm: float,
                    generator: bool) -> None:
    """Check the norm returned, then the gradients after clipping; name the mistake they match."""
    got_norm = _float(got_norm, "it returned ", "return the global norm of the gradients before "
                      "clipping, a number or a 0-dim tensor")
    close = partial(math.isclose, got_norm, rel_tol=1e-5)
    summed = sum(g.norm().item() for g in before)  # not the global norm: a known mistake
    hint = _support.first_hint([
        ("that is the norm after clipping; return the norm from before", min(want, max_norm)),
        ("that is the squared norm, without the square root", want**2),
        ("that is the sum of the gradients' own norms", summed),
    ], close)
    fail_if(not close(want), f"it returned a norm of {got_norm:.6g}, expected {want:.6g}: "
            f"{hint + '; ' if hint else ''}the global norm is the square root of the sum of the "
            "squares of every number in every gradient")
    for i, (p, q) in enumerate(zip(params, reference, strict=True)):
        fail_if((p.grad is None) != (q.grad is None),
                f"parameter {i} had no gradient (.grad is None) and now has one; skip the "
                "parameters whose .grad is None" if q.grad is None
                else f"parameter {i}'s gradient is gone: scale the gradients, keep them")
    got = [p.grad.detach() for p in params if p.grad is not None]

    def same(grads: list[torch.Tensor]) -> bool:
        return all(map(partial(torch.allclose, rtol=1e-5, atol=1e-8), got, grads))

    if same([q.grad for q in reference if q.grad is not None]):
        return
    scale = min(1.0, max_norm / (want + 1e-6))
    fail_if(scale < 1 and all(torch.equal(a, b) for a, b in zip(got, before, strict=True)),
            "the gradients were not scaled: scale each p.grad in place, with p.grad.mul_(scale) "
            "or p.grad *= scale (g = g * scale only makes a new tensor)"
            + (". And parameters may be a generator, like model.parameters(), which runs out "
               "after one pass: make a list of it first" if generator else ""))
    for hint, wrong in [
        ("each gradient was clipped to max_norm on its own; clip them together, by the norm of "
         "all gradients as one long vector, so the update keeps its direction",
         [g * min(1.0, max_norm / (g.norm().item() + 1e-6)) for g in before]),
        ("they were scaled to a norm of max_norm although their norm was already below it; "
         "scale only when the norm is above max_norm, by max_norm / norm",
         [g * max_norm / (want + 1e-6) for g in before]),
        ("they were divided by their norm, giving a norm of 1; multiply by max_norm / norm",
         [g / want for g in before]),
        ("each number was clamped to ±max_norm (clipping by value); scale every gradient by one "
         "factor, max_norm / norm", [g.clamp(-max_norm, max_norm) for g in before]),
        ("they were scaled using the sum of the gradients' own norms; the global norm is the "
         "square root of the sum of every gradient's squares",
         [g * min(1.0, max_norm / (summed + 1e-6)) for g in before]),
    ]:
        fail_if(same(wrong), f"the gradients are wrong: {hint}")
    raise AssertionError(
        f"the gradients are wrong: with a norm of {want:.4g} and max_norm {max_norm}, "
        f"every gradient should be multiplied by {scale:.4g}")


def clip_grad_norm(fn: Callable[..., object]) -> None:
    """Exercise 5.6: fn(parameters, max_norm) must scale the gradients in place as
    buildllm.training.clip_grad_norm does, and return the global norm before clipping.

    The last case passes a model's parameters as model.parameters() does, a generator that
    runs out after one pass. clip_grad_norm_ refuses to be called.
    """
    @deferred
    def case(make: Callable[[], list[torch.Tensor]], max_norm: float, generator=False) -> None:
        reference, params = make(), make()
        want_norm = float(training.clip_grad_norm(reference, max_norm))
        weights = [p.detach().clone() for p in params]
        before = [p.grad.clone() for p in params if p.grad is not None]
        with _refusing([(torch.nn.utils, "clip_grad_norm_"), (training, "clip_grad_norm")],
                       "this exercise asks you to write gradient clipping out"):
            got_norm = fn((p for p in params) if generator else params, max_norm)
        fail_if(any(not torch.equal(p.detach(), w) for p, w in zip(params, weights, strict=True)),
                "your function changed the parameters themselves; it should scale their "
                "gradients, p.grad")
        _expect_clipped(got_norm, params, reference, before, want_norm, max_norm, generator)

    def two() -> list[torch.Tensor]:
        a, b = torch.ones(2, requires_grad=True), torch.ones(2, requires_grad=True)
        a.grad, b.grad = torch.tensor([3.0, 4.0]), torch.tensor([0.0, 12.0])
        return [a, b]

    shapes = [(4, 3), (3,), (2, 2, 2), (1,), (5, 1)]
    verify("Exercise 5.6", [
        ("gradients [3, 4] and [0, 12], max_norm 1: the norm is 13, so scale by 1/13",
         case(two, 1.0)),
        ("the same, max_norm 20: the norm, 13, is below it, so nothing changes", case(two, 20.0)),
        ("five tensors of different shapes, max_norm 0.5",
         case(partial(_gradients, 41, shapes, 1.0), 0.5)),
        ("a parameter whose .grad is None is skipped",
         case(partial(_gradients, 42, shapes[:3], 2.0, without_grad={1}), 1.0)),
        ("a small GPT's gradients, passed as model.parameters(), max_norm 0.1",
         case(partial(_model_gradients, 43), 0.1, generator=True)),
    ])


# -- Exercise 5.7 ---------------------------------------------------------------------------
def _adamw(params, grads, lr, betas, eps, weight_decay, mistake=""):
    """The parameters after AdamW's steps written out, or with one of the usual mistakes."""
    (beta1, beta2), params = betas, [p.detach().clone() for p in params]
    if mistake == "defaults":
        (beta1, beta2), eps = (0.9, 0.999), 1e-8
    m, v = [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params]
    for t, step_grads in enumerate(grads, 1):
        for i, (p, g) in enumerate(zip(params, step_grads, strict=True)):
            if g is None:
                continue
            if mistake == "fresh state":
                t, m[i], v[i] = 1, torch.zeros_like(p), torch.zeros_like(p)
            if mistake == "coupled":
                g = g + weight_decay * p
            elif mistake != "decay after":
                p.mul_(1 - (1 if mistake == "decay without lr" else lr) * weight_decay)
            m[i] = (beta1 * g + (1 - beta1) * m[i] if mistake == "betas swapped in m"
                    else beta1 * m[i] + (1 - beta1) * g)
            v[i] = beta2 * v[i] + (1 - beta2) * (g.abs() if mistake == "abs" else g * g)
            m_hat, v_hat = ((m[i], v[i]) if mistake == "no bias correction"
                            else (m[i] / (1 - beta1**t), v[i] / (1 - beta2**t)))
            p.sub_(lr * m_hat / ((v_hat + eps).sqrt() if mistake == "eps inside"
                                 else v_hat.sqrt() + eps))
            if mistake == "decay after":
                p.mul_(1 - lr * weight_decay)
    return params


_ADAMW_MISTAKES = {
    "no bias correction": "it matches Adam without bias correction: divide m by 1 - β1^t and v by "
    "1 - β2^t, where t counts this parameter's steps from 1",
    "coupled": "it matches weight decay added to the gradient (an L2 penalty: Adam, not AdamW). "
    "Decouple it: shrink the weight itself, p ← p · (1 - lr · weight_decay), and leave the "
    "gradient that goes into m and v alone",
    "decay without lr": "it matches a decay of p · (1 - weight_decay); AdamW scales it by the "
    "learning rate: p · (1 - lr · weight_decay)",
    "decay after": "it matches the decay applied after the Adam update; decay the weight as it "
    "was before this step, then add the update (PyTorch's order, and the paper's)",
    "eps inside": "it matches eps inside the square root; it goes outside: m̂ / (√v̂ + eps)",
    "abs": "it matches v as an average of |g|; v averages the squared gradient, g²",
    "betas swapped in m": "it matches m = β1 · g + (1 - β1) · m; the running average keeps β1 of "
    "the old value: m = β1 · m + (1 - β1) · g",
    "defaults": "it matches betas (0.9, 0.999) and eps 1e-8 whatever the arguments say; use "
    "the betas and eps passed in",
    "fresh state": "it matches m, v and t starting afresh at every call; keep them in `state` "
    "between calls, so that each step builds on the last",
}


def _expect_adamw(params, reference, start, grads, settings: dict, frozen) -> None:
    """Compare with torch.optim.AdamW after len(grads) steps; name the mistake if one fits."""
    t, got = len(grads), [p.detach() for p in params]
    close = partial(torch.allclose, atol=1e-6, rtol=1e-6)
    i = next((i for i, q in enumerate(reference) if not close(got[i], q.detach())), None)
    if i is None:
        return
    fail_first(
        (i in frozen, f"parameter {i}, whose .grad is None, changed at step {t}; skip "
         "parameters without a gradient (PyTorch's optimizers do)"),
        (not torch.isfinite(got[i]).all(), f"after step {t}, parameter {i} holds NaN or inf: in "
         "the bias correction 1 - β^t, t counts steps from 1, so it is never 0"))
    for mistake, hint in _ADAMW_MISTAKES.items():
        theirs = _adamw(start, grads, **settings, mistake=mistake)
        fail_if(all(map(close, got, theirs)), f"after step {t}: {hint}")
    expect_close(got[i], reference[i].detach(), f"after step {t}, parameter {i}", atol=1e-6,
                 rtol=1e-6)


def adamw_step(fn: Callable[..., object]) -> None:
    """Exercise 5.7: fn(params, state, lr=, betas=, eps=, weight_decay=) must update params in
    place as torch.optim.AdamW's step does, keeping m, v and the step count in `state`.

    Each case compares the parameters with AdamW's after every step, to within 1e-6; a large
    lr and decay show where the decay goes, gradients and eps near 1e-4 where eps goes.
    """
    optimizers = (torch.optim.Adam, torch.optim.AdamW, training.AdamW)  # each refuses to step

    @deferred
    def case(shapes, steps: int, lr: float, weight_decay: float, betas=(0.9, 0.999),
             eps: float = 1e-8, scale: float = 1.0, frozen=(), seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        start = [torch.randn(s, generator=gen) for s in shapes]
        grads = [[None if i in frozen else scale * torch.randn(s, generator=gen)
                  for i, s in enumerate(shapes)] for _ in range(steps)]
        settings = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        reference = [p.clone().requires_grad_() for p in start]
        optimizer = torch.optim.AdamW(reference, **settings)
        params, state = [p.clone().requires_grad_() for p in start], {}
        for t, step_grads in enumerate(grads, 1):
            for p, q, g in zip(params, reference, step_grads, strict=True):
                p.grad, q.grad = (None, None) if g is None else (g.clone(), g.clone())
            optimizer.step()
            before = [p.detach().clone() for p in params]
            try:
                with _refusing([(cls, "step") for cls in optimizers],
                               "this exercise asks you to write AdamW's step out"):
                    fn(params, state, **settings)
            except RuntimeError as err:
                fail_if("leaf Variable" in str(err), "an in-place change to a parameter that "
                        "requires grad: make the updates under torch.no_grad() (the "
                        "@torch.no_grad() line above the function)")
                raise
            fail_first(
                (all(map(torch.equal, params, before)), "the parameters did not change: update "
                 "them in place (p.add_, p.mul_, p.copy_ or p -= ...); p = p - ... only gives "
                 "the name p a new tensor"),
                (not state, "after the first call `state` is still empty: keep m, v and the step "
                 "count in it (not in global variables), so that each optimizer has its own"))
            _expect_adamw(params, reference, start, grads[:t], settings, frozen)

    verify("Exercise 5.7", [
        ("one tensor of 4 numbers, one step, no weight decay", case([(4,)], 1, 1e-2, 0.0)),
        ("three tensors, 5 steps, lr 0.01, weight decay 0.1",
         case([(3, 4), (4,), (2, 2, 3)], 5, 1e-2, 0.1, seed=1)),
        ("lr 0.1 and weight decay 0.5, 5 steps: where the decay goes shows",
         case([(5,), (2, 3)], 5, 0.1, 0.5, seed=2)),
        ("betas (0.8, 0.99), eps 1e-6, 10 steps: use the ones passed in",
         case([(6,)], 10, 1e-2, 0.01, betas=(0.8, 0.99), eps=1e-6, seed=3)),
        ("gradients around 1e-4 and eps 1e-4, 5 steps: where eps goes shows",
         case([(8,)], 5, 1e-2, 0.1, eps=1e-4, scale=1e-4, seed=4)),
        ("a frozen parameter: its .grad stays None and it stays as it was",
         case([(3,), (3,), (2,)], 4, 1e-2, 0.1, frozen={1}, seed=5)),
    ])
