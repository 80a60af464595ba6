"""Checks for the Meeting 6 exercises: a classifier's last token, instruction batches, ROUGE-L,
a LoRA layer, and DPO's two halves.

Each check runs the learner's code on a table of cases, compares it with the package and
names a known mistake when the answer matches one. Inputs come from fixed seeds and models are
built in a forked RNG, so the learner's notebook draws the same random numbers.
"""

from __future__ import annotations

import copy
import math
import random
from collections import Counter
from collections.abc import Callable
from difflib import SequenceMatcher
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .. import dpo, instruct, lora, metrics
from ..classify import add_classification_head, class_logits, last_token_index
from ..instruct import END_OF_TEXT
from . import _support, expect_tensor, verify
from ._support import deferred, expect_close, fail_first, fail_if, first_hint, plain, randn, seeded

__all__ = ["collate", "dpo_loss", "last_token_logits", "lora_linear", "rouge_l",
           "sequence_logprob"]


def _padded(lengths: list[int], width: int, pad_id: int, seed: int, vocab: int = 50000):
    """Rows of random token ids (never pad_id), `lengths[r]` real tokens, then padding."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.full((len(lengths), width), pad_id, dtype=torch.long)
    for r, n in enumerate(lengths):
        row = torch.randint(1, vocab, (n,), generator=gen)
        ids[r, :n] = torch.where(row == pad_id, row + 1, row)
    return ids


# -- Exercise 6.1 ---------------------------------------------------------------------------
def last_token_logits(fn: Callable[..., torch.Tensor]) -> None:
    """Exercise 6.1: fn(logits, input_ids, pad_id) must return the logits (batch, classes)
    at each row's last token that is not padding, as `buildllm.classify.class_logits` reads
    them."""
    @deferred
    def case(logits: torch.Tensor, ids: torch.Tensor, pad_id: int, want=None) -> None:
        last = last_token_index(ids, pad_id)
        try:
            got = expect_tensor(fn(logits.clone(), ids.clone(), pad_id), "the result")
        except IndexError as err:
            raise AssertionError(
                f"an index past the end of a row ({err}): with n real tokens, the last one is at "
                "index n - 1, and a row without padding has no position n") from None
        batch, width, classes = logits.shape
        rows = torch.arange(batch)
        fail_first(
            (got.shape == (batch, batch, classes), f"the result has shape {tuple(got.shape)}: "
             "logits[:, last] gives every row at every row's index. Pair each row with its own "
             "position: logits[torch.arange(batch), last]"),
            (got.shape == (batch, 1, classes), f"the result has shape {tuple(got.shape)}, expected "
             f"{(batch, classes)}: drop the tokens dimension (squeeze(1)), one row of class logits "
             "per message"))
        # With pad_id 50256 the first mistake is the right answer itself, so it never matches.
        expected = logits[rows, last] if want is None else want
        expect_close(got, expected, "the result", [
            (f"it matches padding id 50256 whatever pad_id says; this case pads with {pad_id}: use "
             "the pad_id passed in", logits[rows, last_token_index(ids, END_OF_TEXT)]),
            ("it matches the last position of every row, logits[:, -1]. That is right only for the "
             "longest message: a shorter one has padding there. Read each row at its own last "
             "real token", logits[:, -1]),
            ("it matches the first position, logits[:, 0]; with causal attention the first token "
             "has seen only itself. Read the last real token, the only one that has seen the "
             "whole message", logits[:, 0]),
            ("it matches the position one before the last real token: with n real tokens the last "
             "one is at index n - 1", logits[rows, (last - 1).clamp(min=0)]),
            ("it matches the position one after the last real token (the first padding token): "
             "with n real tokens the last one is at index n - 1",
             logits[rows, (last + 1).clamp(max=width - 1)]),
        ])

    eot = END_OF_TEXT
    with seeded(61):  # the head too: it is drawn after the GPT's weights
        model = add_classification_head(_support.tiny_gpt(None, 50257, 16, 16, 2, 2, std=0.2))
    ids = _padded([4, 12, 7], 15, eot, seed=62)  # class_logits cuts 3 columns
    with torch.no_grad():
        on_a_model = case(model.eval()(ids), ids, eot, class_logits(model, ids))
    verify("Exercise 6.1", [
        ("two rows of 4 tokens, no padding: the last position",
         case(randn(1, 2, 4, 2), _padded([4, 4], 4, eot, 1), eot)),
        ("three rows with 5, 3 and 1 real tokens, padded to 5 with 50256",
         case(randn(2, 3, 5, 2), _padded([5, 3, 1], 5, eot, 2), eot)),
        ("padding id 0: rows with 2, 6 and 4 real tokens",
         case(randn(3, 3, 6, 2), _padded([2, 6, 4], 6, 0, 3), 0)),
        ("a (4, 9, 3) batch: three classes, rows of 9, 1, 8 and 5 tokens",
         case(randn(4, 4, 9, 3), _padded([9, 1, 8, 5], 9, eot, 4), eot)),
        ("a small GPT with a two-class head, messages of 4, 12 and 7 tokens padded to 15: "
         "buildllm.classify.class_logits", on_a_model),
    ])


# -- Exercise 6.2 ---------------------------------------------------------------------------
def _collate(batch, pad_id, ignore_index, max_length) -> torch.Tensor:
    """`buildllm.instruct.collate`'s inputs and targets, stacked: one tensor to compare."""
    pairs = [(list(ids), 0) for ids in batch]
    return torch.stack(instruct.collate(pairs, pad_id, ignore_index, max_length))


def _collate_mistakes(batch, pad_id, ignore_index, max_length):
    """(hint, inputs and targets stacked) for the usual mistakes. With the default arguments
    some equal the right answer, which is never a mistake: the check compares with that first."""
    inputs, targets = _collate(batch, pad_id, ignore_index, max_length)
    every = targets.masked_fill(targets == pad_id, ignore_index)  # no case's tokens are pad_id
    same = inputs.clone()
    for row, ids in enumerate(batch):
        same[row, len(ids) + 1 :] = ignore_index
    return [
        ("it matches padding with 50256 and ignoring with -100 whatever the arguments say; this "
         f"case has pad_id={pad_id} and ignore_index={ignore_index}",
         _collate(batch, END_OF_TEXT, -100, max_length)),
        (f"it matches targets masked with -100; use the ignore_index passed in ({ignore_index})",
         _collate(batch, pad_id, -100, max_length)),
        ("it matches the padding kept as targets: then the model is trained to predict "
         "end-of-text after end-of-text, and short examples drown in padding. Replace every "
         "padding target after the first with ignore_index",
         torch.stack((inputs, targets.masked_fill(targets == ignore_index, pad_id)))),
        ("it matches every end-of-text target masked, the first one too. Keep the first: it is how "
         "the model learns to stop after its answer", torch.stack((inputs, every))),
        ("it matches targets equal to the inputs. The target at each position is the next token: "
         "the padded sequence without its first token (padded[1:]), the inputs without its last "
         "(padded[:-1])", torch.stack((inputs, same))),
        ("it matches cutting each sequence to max_length before appending end-of-text; build "
         "inputs and targets first, then cut both to max_length",
         _collate([ids[:max_length] for ids in batch], pad_id, ignore_index, max_length)),
    ]


def _collate_width_hint(width, want: int, batch, max_length) -> str:
    """Why a result of `width` columns is not `want` wide."""
    why = {want + 1: "one column too many: inputs are the padded sequence without its last "
                     "token, targets without its first"}
    if max_length is None:
        why[want - 1] = ("one column short: append one end-of-text (pad_id) to every sequence, "
                         "pad them all to the longest plus 1, then take [:-1] for the inputs and "
                         "[1:] for the targets")
    elif max_length > want:
        why[max_length] = ("pad to the longest sequence in the batch (plus its end-of-text), not "
                           "to max_length: max_length only cuts what is longer")
    longest = max(len(ids) for ids in batch)
    return why.get(width, f"one row per sequence, {longest} columns for the longest ({len(batch)} "
                   f"sequences, the longest has {longest} tokens)"
                   + (f", cut to max_length={max_length}" if max_length else ""))


def collate(fn: Callable[..., tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Exercise 6.2: fn(batch, pad_id, ignore_index, max_length) must equal
    `buildllm.instruct.collate` on the same token lists (no prompt masking)."""
    @deferred
    def case(batch: list[list[int]], pad_id=END_OF_TEXT, ignore_index=-100, max_length=None
             ) -> None:
        given = [list(ids) for ids in batch]
        got = fn(given, pad_id=pad_id, ignore_index=ignore_index, max_length=max_length)
        fail_first(
            (given != batch, "your function changed the lists it was given (ids.append(...) or "
             "ids += [...]): those are the dataset's own lists, so every epoch would add another "
             "end-of-text. Build new lists: ids + [pad_id]"),
            (not (isinstance(got, (tuple, list)) and len(got) == 2),
             f"the result should be a pair (inputs, targets), got {type(got).__name__}"))
        inputs, targets = _support.tensors(got, ("the inputs", "the targets"))
        want = _collate(batch, pad_id, ignore_index, max_length)
        for name, t in (("inputs", inputs), ("targets", targets)):
            width = t.shape[-1] if t.ndim == 2 else None
            fail_first(
                (t.dtype != torch.long, f"the {name} have dtype {t.dtype}; token ids and targets "
                 "are integers, torch.long (the embedding and cross_entropy need it)"),
                (t.shape != want[0].shape, f"the {name} have shape {tuple(t.shape)}, expected "
                 f"{tuple(want[0].shape)}: "
                 + _collate_width_hint(width, want[0].shape[1], batch, max_length)))
        fail_if((inputs == ignore_index).any(), f"the inputs hold ignore_index ({ignore_index}), "
                "which is no token id (the embedding fails on it): pad the inputs with pad_id; "
                "only targets are masked")
        if not torch.equal(pair := torch.stack((inputs, targets)), want):
            mistakes = _collate_mistakes(batch, pad_id, ignore_index, max_length)
            fail_if(hint := _support.matching(pair, mistakes), f"the result is wrong: {hint}")
        for name, got_t, want_t, rule in (
                ("inputs", inputs, want[0], "the tokens, then pad_id to the batch's width"),
                ("targets", targets, want[1], "the next token at each position, then one "
                 "end-of-text, then ignore_index")):
            if (r := _support.first((got_t != want_t).any(1))) is not None:
                raise AssertionError(f"row {r[0]} of the {name} is {got_t[r].tolist()}, expected "
                                     f"{want_t[r].tolist()}: {rule}")

    gen = random.Random(6)

    def tokens(n: int) -> list[int]:
        return [gen.randrange(1, 50000) for _ in range(n)]

    verify("Exercise 6.2", [
        ("[[1, 2, 3], [4]], the worked example", case([[1, 2, 3], [4]])),
        ("three sequences of 5, 2 and 7 tokens", case([tokens(5), tokens(2), tokens(7)])),
        ("two sequences of 4 tokens: no padding beyond each end-of-text",
         case([tokens(4), tokens(4)])),
        ("pad_id 0 and ignore_index -1",
         case([tokens(3), tokens(1), tokens(5)], pad_id=0, ignore_index=-1)),
        ("max_length 4, sequences of 6, 3 and 2 tokens: cut to 4 columns",
         case([tokens(6), tokens(3), tokens(2)], max_length=4)),
        ("max_length 20, sequences of 3 and 5 tokens: nothing to cut",
         case([tokens(3), tokens(5)], max_length=20)),
        ("one sequence of one token", case([[7]])),
    ])


# -- Exercise 6.3 ---------------------------------------------------------------------------
def _rouge_mistakes(candidate: str, reference: str):
    c, r = metrics.words(candidate), metrics.words(reference)
    if not c and not r:
        return [("neither text has a word, so they agree: return 1.0 (the rouge_score package "
                 "gives 0 here; buildllm.metrics.rouge_l, and this exercise, give 1)", 0.0)]

    def f1(a, b, overlap=None):  # the F-measure of the LCS of a and b
        return metrics._f1(metrics.lcs_length(a, b) if overlap is None else overlap, len(a), len(b))

    lcs = metrics.lcs_length(c, r)
    # With one text empty the score is 0, and so is each ratio here: the right answer, no mistake.
    precision, recall = lcs / max(len(c), 1), lcs / max(len(r), 1)
    return [
        ("it matches recall only, LCS / reference words; ROUGE-L's F-measure also counts "
         "precision, LCS / candidate words, so padding an answer with extra words costs "
         "something", recall),
        ("it matches precision only, LCS / candidate words; the F-measure combines it with "
         "recall, LCS / reference words: 2·P·R / (P + R)", precision),
        ("it matches the plain average (P + R) / 2; the F-measure is the harmonic mean, "
         "2·P·R / (P + R)", (precision + recall) / 2),
        ("it matches the longest common *substring*, an unbroken run of words. ROUGE-L uses the "
         "longest common *subsequence*: the words in the same order, gaps allowed",
         f1(c, r, SequenceMatcher(None, c, r, autojunk=False).find_longest_match().size)),
        ("it matches word overlap without order (token F1); ROUGE-L counts only words that "
         "appear in the same order in both, via the longest common subsequence",
         f1(c, r, sum((Counter(c) & Counter(r)).values()))),
        ("it matches words compared with their case ('The' is not 'the'); words() lowercases "
         "them", f1(metrics._WORD.findall(candidate), metrics._WORD.findall(reference))),
        ("it matches words split on spaces, which keeps punctuation attached ('mat.' is not "
         "'mat'); split with buildllm.metrics.words",
         f1(candidate.lower().split(), reference.lower().split())),
        ("it matches the longest common subsequence of characters; ROUGE-L compares words: "
         "split both texts with words() first", f1(candidate, reference)),
        ("it matches the LCS length itself; return the F-measure, a number from 0 to 1", lcs),
    ]


def rouge_l(fn: Callable[[str, str], float]) -> None:
    """Exercise 6.3: fn(candidate, reference) must equal `buildllm.metrics.rouge_l`, the
    F-measure of the longest common subsequence of the two texts' words."""
    @deferred
    def case(candidate: str, reference: str) -> None:
        want = metrics.rouge_l(candidate, reference)
        try:
            got = _support.number(fn(candidate, reference), "the score")
        except ZeroDivisionError:
            raise AssertionError(
                "division by zero: a text without words has no precision or recall. Return 0.0 "
                "when only one text has no words, 1.0 when neither has any") from None
        close = partial(math.isclose, got, rel_tol=1e-9, abs_tol=1e-9)
        if close(want):
            return
        hint = first_hint(_rouge_mistakes(candidate, reference), close)
        fail_if(hint, f"the score is {got:.4g}, expected {want:.4g}: {hint}")
        c, r = metrics.words(candidate), metrics.words(reference)
        raise AssertionError(
            f"the score is {got:.6g}, expected {want:.6g}: the words are {c} and {r}, "
            f"their longest common subsequence has {metrics.lcs_length(c, r)} words")

    gen = random.Random(63)
    vocab = ["the", "a", "cat", "dog", "sat", "ran", "on", "under", "mat", "rug", "and", "then"]
    long_c, long_r = (" ".join(gen.choice(vocab) for _ in range(40)) for _ in range(2))
    verify("Exercise 6.3", [
        ("'the cat sat on the mat' and 'the cat is on the mat': 5 of 6 words, 0.833",
         case("the cat sat on the mat", "the cat is on the mat")),
        ("'a b c d' and 'a c e': precision 2/4, recall 2/3", case("a b c d", "a c e")),
        ("words in another order: 'mat the on cat the' and 'the cat on the mat'",
         case("mat the on cat the", "the cat on the mat")),
        ("gaps: 'the quick brown fox jumped over the lazy dog' and 'the fox jumped the dog'",
         case("the quick brown fox jumped over the lazy dog", "the fox jumped the dog")),
        ("punctuation: 'the answer: paris.' and 'the answer paris'",
         case("the answer: paris.", "the answer paris")),
        ("capitals: 'The Answer Is Paris' and 'the answer is paris'",
         case("The Answer Is Paris", "the answer is paris")),
        ("an empty answer scores 0", case("", "a reference answer")),
        ("two empty answers score 1", case("...", "")),
        ("two texts of 40 words from a vocabulary of 12", case(long_c, long_r)),
    ])


# -- Exercise 6.4 ---------------------------------------------------------------------------
def _new_lora(cls, base: nn.Linear, rank: int, alpha: float, seed: int) -> nn.Module:
    """The learner's layer, built in a seeded RNG, once A and B are parameters of the right
    shapes and only they train."""
    with seeded(seed):
        layer = cls(base, rank, alpha)
    fail_if(not isinstance(layer, nn.Module), f"LoRALinear(...) gave a {type(layer).__name__}; "
            "make it a subclass of nn.Module (and call super().__init__() first)")
    for name in ("A", "B"):
        fail_if(not isinstance(getattr(layer, name, None), nn.Parameter), "the layer has no "
                f"parameter self.{name}: store the two matrices as nn.Parameter attributes A and "
                "B, so the optimizer finds them")
    d_in, d_out = base.in_features, base.out_features
    got, want = (tuple(layer.A.shape), tuple(layer.B.shape)), ((rank, d_in), (d_out, rank))
    why = {  # for a square layer the book's layout is A and B swapped: the book's wins
        ((d_out, rank), (rank, d_in)): "A and B are swapped: A reads the input (rank, "
        "in_features), B writes the output",
        ((d_in, rank), (rank, d_out)): "that is the book's layout, x @ A @ B. Here they are "
        "stored like nn.Linear weights (and peft's lora_A and lora_B): A (rank, in_features), "
        "B (out_features, rank), and the update is x @ A.T @ B.T",
    }.get(got, "A is (rank, in_features) and B is (out_features, rank)")
    fail_if(got != want, f"for nn.Linear({d_in}, {d_out}) and rank {rank}, A has shape {got[0]} "
            f"and B {got[1]}, expected {want[0]} and {want[1]}: {why}")
    trainable = {name for name, p in layer.named_parameters() if p.requires_grad}
    fail_first(
        (trainable - {"A", "B"}, f"{sorted(trainable - {'A', 'B'})} would train too: freeze the "
         "base layer (base.requires_grad_(False)), so that only A and B learn"),
        ({"A", "B"} - trainable, "A and B must have requires_grad=True: they are what LoRA trains"))
    return layer


_SCALED_UPDATE = "the scale belongs to the update alone: base(x) + (alpha / rank) · x @ A.T @ B.T"
_IN_FORWARD = " in forward (no .detach(), .data or torch.no_grad())"


def _lora_mistakes(base_out, x, a, b, rank: int, alpha: float):
    """What the usual mistakes give; one that equals the right answer is never reached."""
    delta = x @ a.T @ b.T
    return [
        ("it matches a scale of alpha, as in the book's appendix E; here the update is scaled by "
         "alpha / rank, as in the LoRA paper and peft, so that trying another rank needs no new "
         "learning rate", base_out + alpha * delta),
        ("it matches alpha // rank, integer division; use alpha / rank",
         base_out + alpha // rank * delta),
        ("it matches no scale at all; multiply the update by alpha / rank", base_out + delta),
        ("it matches a scale of rank / alpha; it is alpha / rank", base_out + rank / alpha * delta),
        ("it matches (base(x) + update) · alpha / rank; " + _SCALED_UPDATE,
         (base_out + delta) * (alpha / rank)),
        ("it matches base(x) alone: add the low-rank update", base_out),
    ]


def _linear(d_in: int, d_out: int, seed: int, bias: bool = True) -> nn.Linear:
    with seeded(seed):
        return nn.Linear(d_in, d_out, bias=bias)


def lora_linear(cls: Callable[..., nn.Module]) -> None:
    """Exercise 6.4: cls(base, rank, alpha) must build a layer that computes what
    `buildllm.lora.LoRALinear` computes, base(x) + (alpha / rank) · x @ A.T @ B.T."""
    def build(base: nn.Linear, rank: int, alpha: float, seed: int):
        """The learner's layer and the reference, both with A and B set to the same values."""
        layer = _new_lora(cls, base, rank, alpha, seed)
        ref = lora.LoRALinear(copy.deepcopy(base), rank, alpha)
        with torch.no_grad():
            for k, (mine, theirs) in enumerate(((layer.A, ref.A), (layer.B, ref.B)), 1):
                theirs.copy_(mine.copy_(randn(seed + k, *mine.shape, scale=0.5)))
        return layer, ref

    def starts_as_base() -> None:
        """B starts at zero and A random, so the fresh layer is the base and both can learn."""
        base = _linear(6, 4, 64)
        layer = _new_lora(cls, base, 2, 4, 65)
        a_zero, b_zero = (not p.any() for p in (layer.A, layer.B))
        fail_first(
            (a_zero and b_zero, "A and B both start at zero: then neither ever gets a gradient "
             "(each one's gradient is multiplied by the other). B starts at zero, A random (peft "
             "uses nn.init.kaiming_uniform_(A, a=math.sqrt(5)))"),
            (not b_zero, "B should start at zero, so that B·A = 0 and the wrapped layer starts "
             "exactly as the pretrained one; A starts random"),
            (a_zero, "A should start random (and B at zero): with A zero, B's gradient is zero "
             "too"))
        x = randn(66, 3, 6)
        with torch.no_grad():
            scaled = ("it matches base(x) · alpha / rank; " + _SCALED_UPDATE, base(x) * 2)
            expect_close(layer(x), base(x), "the output of the fresh layer", [scaled])

    @deferred
    def output(given: nn.Linear, rank: int, alpha: float, shape, seed: int) -> None:
        layer, ref = build(given, rank, alpha, seed + 1)
        x = randn(seed + 4, *shape)
        with torch.no_grad():
            try:
                got = layer(x)
            except TypeError as err:
                if given.bias is not None or "NoneType" not in str(err):
                    raise
                raise AssertionError(
                    f"this base layer has no bias (base.bias is None), and forward failed with "
                    f"{err}: call self.base(x), which handles both kinds") from None
            expect_close(got, ref(x), "the output",
                         _lora_mistakes(ref.base(x), x, ref.A, ref.B, rank, alpha))

    def gradients() -> None:
        """Only A and B can get one: build() has checked that nothing else trains."""
        layer, ref = build(_linear(10, 7, 68), 3, 6, 69)
        x, weights = randn(72, 4, 10), randn(73, 4, 7)
        out = layer(x)
        fail_if(not out.requires_grad, "the output carries no gradient: compute the update from "
                "self.A and self.B themselves" + _IN_FORWARD)
        (out * weights).sum().backward()
        (ref(x) * weights).sum().backward()
        for name in ("A", "B"):
            grad = getattr(layer, name).grad
            fail_if(grad is None, f"{name} got no gradient: compute the update from self.{name} "
                    "itself" + _IN_FORWARD)
            expect_close(grad, getattr(ref, name).grad, f"the gradient of {name}")

    qkv = _support.tiny_gpt(67, 64, 8, 16, 2, 1).trf_blocks[0].att.qkv  # stored transposed
    verify("Exercise 6.4", [
        ("nn.Linear(6, 4), rank 2, alpha 4: A (2, 6), B (4, 2), only they train, and the fresh "
         "layer gives the base's output", starts_as_base),
        ("the same once A and B are trained: x of shape (3, 6)",
         output(_linear(6, 4, 74), 2, 4, (3, 6), 74)),
        ("nn.Linear(12, 10), rank 8, alpha 16, x of shape (2, 5, 12)",
         output(_linear(12, 10, 75), 8, 16, (2, 5, 12), 75)),
        ("alpha 3, rank 2: a scale of 1.5", output(_linear(8, 5, 76), 2, 3, (4, 8), 76)),
        ("nn.Linear(8, 8, bias=False)", output(_linear(8, 8, 77, bias=False), 4, 8, (3, 8), 77)),
        ("a GPT block's qkv layer, whose weight is stored transposed",
         output(qkv, 4, 8, (2, 5, 16), 78)),
        ("the gradients reach A and B, and only them", gradients),
    ])


# -- Exercise 6.5 ---------------------------------------------------------------------------
def _scored(prompts: list[int], answers: list[int], seed: int):
    """A small GPT over 97 token ids, and rows of prompt + answer + padding (0) with the mask of
    the answer tokens."""
    lengths = [p + a for p, a in zip(prompts, answers, strict=True)]
    ids = _padded(lengths, max(lengths), 0, seed, vocab=97)
    mask = torch.zeros_like(ids, dtype=torch.bool)
    for r, (p, a) in enumerate(zip(prompts, answers, strict=True)):
        mask[r, p : p + a] = True
    model = _support.tiny_gpt(seed, 97, 80, 32, 4, 2, std=0.3, tie_embeddings=False)
    return model.eval(), ids, mask


def sequence_logprob(fn: Callable[..., torch.Tensor]) -> None:
    """Exercise 6.5: fn(model, input_ids, labels_mask) must equal
    `buildllm.dpo.sequence_logprob`: per row, the sum of log p(token | tokens before it) over
    the tokens labels_mask marks."""
    @deferred
    def case(prompts: list[int], answers: list[int], seed: int, grad: bool = False) -> None:
        model, ids, mask = _scored(prompts, answers, seed)
        reference = copy.deepcopy(model)  # out of the learner's reach, for the gradient case
        with torch.no_grad():
            want = dpo.sequence_logprob(model, ids, mask)
            logp = model(ids).float().log_softmax(-1)
        got = expect_tensor(plain(fn(model, ids.clone(), mask.clone())), "the result")
        fail_first(
            (got.shape != want.shape and got.numel() == 1, "the result has shape "
             f"{tuple(got.shape)}, one number for the whole batch; return one per row, shape "
             f"{tuple(want.shape)} (sum over dim=1 only)"),
            (got.shape == want.shape and not torch.isfinite(got.detach()).all(), "the result holds "
             "-inf or NaN: a product of many probabilities underflows to 0 and log(0) = -inf. Add "
             "log-probabilities (log_softmax) instead of multiplying probabilities"))
        shifted = logp[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)  # log p(token t | before t)
        m = mask[:, 1:].float()
        total = (shifted * m).sum(1)
        expect_close(got, want, "the result", [
            ("it matches the mean over the answer tokens; DPO compares log p of the whole answer, "
             "their sum (reduction='mean' is the book's variant, not this one)", total / m.sum(1)),
            ("it matches the sum over every position, prompt and padding included: multiply by "
             "the mask (shifted like the targets, labels_mask[:, 1:]) before summing",
             shifted.sum(1)),
            ("it matches each position's logits scored against the token *at* that position; the "
             "logits at position t predict token t + 1: pair logits[:, :-1] with input_ids[:, 1:]",
             (logp.gather(-1, ids[..., None]).squeeze(-1) * mask.float()).sum(1)),
            ("it matches the mask shifted the wrong way, labels_mask[:, :-1]; token t + 1 is "
             "scored, so the mask that goes with logits[:, :-1] is labels_mask[:, 1:]",
             (shifted * mask[:, :-1].float()).sum(1)),
            ("it matches -log p, a loss; return log p itself, a negative number", -total),
            ("it matches a sum of probabilities; sum the log-probabilities (log_softmax)",
             (shifted.exp() * m).sum(1)),
        ], atol=1e-4, rtol=1e-5)
        if not grad:
            return
        _support.expect_same_gradients(
            got, dpo.sequence_logprob(reference, ids, mask),
            [(f"the gradient of {name}", p, q) for (name, p), q in
             zip(model.named_parameters(), reference.parameters(), strict=True)],
            "the result carries no gradient; DPO trains the policy through these numbers: no "
            "torch.no_grad(), .detach() or .item() inside",
            weights=torch.tensor([1.0, -0.5]), atol=1e-4, rtol=1e-4)

    verify("Exercise 6.5", [
        ("one row: 3 prompt tokens, then 2 answer tokens", case([3], [2], 82)),
        ("three rows padded with 0: prompts of 2, 4 and 3 tokens, answers of 5, 1 and 7 "
         "(reaching the last column)", case([2, 4, 3], [5, 1, 7], 83)),
        ("a 60-token answer after a 4-token prompt", case([4], [60], 84)),
        ("the gradient reaches the model, as the reference's does",
         case([4, 2], [5, 8], 80, grad=True)),
    ])


# -- Exercise 6.6 ---------------------------------------------------------------------------
def dpo_loss(fn: Callable[..., tuple]) -> None:
    """Exercise 6.6: fn(pi_chosen, pi_rejected, ref_chosen, ref_rejected, beta) must return
    (loss, chosen_reward, rejected_reward) as `buildllm.dpo.dpo_loss` does."""
    @deferred
    def case(pi_c, pi_r, ref_c, ref_r, beta: float, grad: bool = False, by_hand=None) -> None:
        given = [t.clone().requires_grad_(grad) for t in (pi_c, pi_r)]
        want, want_c, want_r = dpo.dpo_loss(pi_c, pi_r, ref_c, ref_r, beta)
        if by_hand is not None:  # this case compares with the arithmetic in its label
            want = torch.tensor(by_hand)
        got = fn(*given, ref_c.clone(), ref_r.clone(), beta)
        fail_first((isinstance(got, torch.Tensor), "the result is one tensor; return three "
                    "things: (loss, chosen_reward, rejected_reward)"),
                   (not (isinstance(got, (tuple, list)) and len(got) == 3),
                    "return a tuple (loss, chosen_reward, rejected_reward)"))
        loss, chosen, rejected = (plain(t) for t in got)
        loss = expect_tensor(loss, "the loss")
        fail_if(loss.numel() != 1, f"the loss has shape {tuple(loss.shape)}; it is one number, the "
                "mean over the pairs")
        fail_if(not torch.isfinite(loss.detach()).all(), f"the loss is {loss.item()}: σ(x) of a "
                "margin far below 0 rounds to 0, and log(0) = -inf. Use F.logsigmoid(x), which "
                "computes log σ(x) without forming σ(x) (for x far below 0 it is about x)")
        margin = (pi_c - ref_c) - (pi_r - ref_r)
        _support.expect_number(loss.detach().reshape(()), want, "the loss", [
            ("it matches the sign flipped: -log σ(rejected - chosen). The loss should fall as the "
             "chosen answer gains on the rejected one: -log σ(β · (chosen logratio - rejected "
             "logratio))", -F.logsigmoid(-beta * margin).mean()),
            ("it matches β left out: multiply the margin by beta inside the sigmoid",
             -F.logsigmoid(margin).mean()),
            ("it matches β outside the log-sigmoid; it scales the margin inside: -log σ(β · "
             "margin)", -beta * F.logsigmoid(margin).mean()),
            ("it matches the reference model left out, -log σ(β · (pi_chosen - pi_rejected)). DPO "
             "compares how much each answer gained since the reference: subtract ref_chosen and "
             "ref_rejected", -F.logsigmoid(beta * (pi_c - pi_r)).mean()),
            ("it matches the sum over the pairs; the loss is their mean",
             -F.logsigmoid(beta * margin).sum()),
            ("it matches log σ without the minus sign; the loss is -log σ(...), a positive number",
             F.logsigmoid(beta * margin).mean()),
        ], "-log σ(β · ((pi_chosen - ref_chosen) - (pi_rejected - ref_rejected))), averaged over "
           "the pairs", atol=1e-6, rtol=1e-5)
        for what, reward, right, pi, ref in (("chosen_reward", chosen, want_c, pi_c, ref_c),
                                             ("rejected_reward", rejected, want_r, pi_r, ref_r)):
            expect_close(reward, right, what, [
                ("it matches the logratio without β: the reward is β · (pi - ref)", pi - ref),
                ("it matches the policy's log-probability alone: the reward is β · (pi - ref)",
                 pi)])
        if not grad:
            return
        ref_given = [t.clone().requires_grad_() for t in (pi_c, pi_r)]
        _support.expect_same_gradients(
            loss, dpo.dpo_loss(*ref_given, ref_c, ref_r, beta)[0],
            [(f"the gradient of the loss for {name}", g, r) for name, g, r in
             zip(("pi_chosen", "pi_rejected"), given, ref_given, strict=True)],
            "the loss carries no gradient: keep every step in torch (no .item() or "
            "torch.no_grad()) so that loss.backward() reaches the policy")

    same = randn(90, 3, scale=10.0) - 40
    batch = [randn(91 + i, 4, scale=5.0) - 30 for i in range(4)]
    eight = [randn(95 + i, 8, scale=3.0) - 20 for i in range(4)]
    t = torch.tensor
    verify("Exercise 6.6", [
        ("policy = reference: loss ln 2 = 0.6931, rewards 0",
         case(same, same - 3, same, same - 3, 0.1)),
        ("one pair by hand, beta 0.5: pi -10 and -12, ref -11 and -11, so the margin is "
         "0.5 · (1 - (-1)) = 1 and the loss log(1 + e^-1) = 0.3133",
         case(t([-10.0]), t([-12.0]), t([-11.0]), t([-11.0]), 0.5,
              by_hand=math.log(1 + math.exp(-1)))),
        ("a batch of 4 pairs, beta 0.1: the mean over them", case(*batch, 0.1)),
        ("margins of +150 and -150 with beta 1: log σ(-150) is -150, not -inf",
         case(t([-10.0, -200.0]), t([-160.0, -50.0]), t([-10.0, -50.0]), t([-10.0, -50.0]), 1.0)),
        ("8 pairs, beta 2", case(*eight, 2.0)),
        ("the gradient for the policy's log-probabilities", case(*batch, 0.1, grad=True)),
    ])
