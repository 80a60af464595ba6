"""Answers to the Meeting 6 exercises, right and wrong, for tests/test_exercise_checks.py.

Each wrong answer is a mistake learners make, named after it.
"""

import math
import re
from functools import cache

import torch
import torch.nn.functional as F
from torch import nn

from buildllm import check

# -- Exercise 6.1: the logits at the last real token ----------------------------------------


def last_by_count(logits, input_ids, pad_id=50256):
    lengths = (input_ids != pad_id).sum(dim=1)  # real tokens per row
    return logits[torch.arange(len(logits)), lengths - 1]


def last_by_gather(logits, input_ids, pad_id=50256):
    positions = torch.arange(input_ids.shape[1]).expand_as(input_ids)
    last = torch.where(input_ids != pad_id, positions, 0).max(dim=1).values
    index = last[:, None, None].expand(-1, 1, logits.shape[-1])
    return logits.gather(1, index).squeeze(1)


def last_by_loop(logits, input_ids, pad_id=50256):
    rows = []
    for row, ids in zip(logits, input_ids.tolist(), strict=True):
        n = len(ids)
        while n > 1 and ids[n - 1] == pad_id:
            n -= 1
        rows.append(row[n - 1])
    return torch.stack(rows)


def last_choosing(logits, input_ids, pad_id=50256, shift=-1, pad=None):
    """last_by_count with switches for the usual mistakes."""
    lengths = (input_ids != (pad_id if pad is None else pad)).sum(dim=1)
    return logits[torch.arange(len(logits)), lengths + shift]


WRONG_LAST_TOKEN = {
    "always the last position": lambda logits, ids, pad_id=50256: logits[:, -1],
    "the first position": lambda logits, ids, pad_id=50256: logits[:, 0],
    "one too early": lambda logits, ids, pad_id=50256: last_choosing(logits, ids, pad_id, -2),
    "one too late (the first padding token)": lambda logits, ids, pad_id=50256: last_choosing(
        logits, ids, pad_id, 0
    ),
    "padding id 50256 hard-coded": lambda logits, ids, pad_id=50256: last_choosing(
        logits, ids, pad=50256
    ),
    "logits[:, last] without a row index": lambda logits, ids, pad_id=50256: logits[
        :, (ids != pad_id).sum(1) - 1
    ],
    "keeps the tokens dimension": lambda logits, ids, pad_id=50256: last_by_gather(
        logits, ids, pad_id
    )[:, None],
    "one too late, clamped to the last column": lambda logits, ids, pad_id=50256: logits[
        torch.arange(len(logits)), (ids != pad_id).sum(1).clamp(max=ids.shape[1] - 1)
    ],
    "a list of rows, not stacked": lambda logits, ids, pad_id=50256: list(
        last_by_count(logits, ids, pad_id)
    ),
    "the mean over the real tokens": lambda logits, ids, pad_id=50256: (
        (logits * (ids != pad_id)[..., None]).sum(1) / (ids != pad_id).sum(1, keepdim=True)
    ),
}


# -- Exercise 6.2: the instruction collate --------------------------------------------------


def collate_book(batch, pad_id=50256, ignore_index=-100, max_length=None):
    """The book's way: append end-of-text, pad, shift, then mask all padding but the first."""
    width = max(len(ids) + 1 for ids in batch)
    inputs, targets = [], []
    for ids in batch:
        padded = ids + [pad_id] * (width - len(ids))
        x, y = torch.tensor(padded[:-1]), torch.tensor(padded[1:])
        pads = torch.nonzero(y == pad_id).squeeze(1)
        if pads.numel() > 1:
            y[pads[1:]] = ignore_index
        if max_length is not None:
            x, y = x[:max_length], y[:max_length]
        inputs.append(x)
        targets.append(y)
    return torch.stack(inputs), torch.stack(targets)


def collate_by_position(batch, pad_id=50256, ignore_index=-100, max_length=None):
    """Fill a tensor of padding and one of ignore_index, then copy each sequence in."""
    width = max(len(ids) for ids in batch)
    inputs = torch.full((len(batch), width), pad_id)
    targets = torch.full((len(batch), width), ignore_index)
    for row, ids in enumerate(batch):
        n = len(ids)
        inputs[row, :n] = torch.tensor(ids)
        targets[row, : n - 1] = torch.tensor(ids[1:], dtype=torch.long)
        targets[row, n - 1] = pad_id
    if max_length is not None:
        inputs, targets = inputs[:, :max_length], targets[:, :max_length]
    return inputs, targets


def collate_choosing(
    batch,
    pad_id=50256,
    ignore_index=-100,
    max_length=None,
    keep_first=True,
    mask=True,
    shifted=True,
    extra=1,
    cut_first=False,
    width=None,
):
    """collate_book with switches for the usual mistakes."""
    if cut_first and max_length is not None:
        batch = [ids[:max_length] for ids in batch]
    width = width or max(len(ids) + extra for ids in batch)
    inputs, targets = [], []
    for ids in batch:
        padded = ids + [pad_id] * (width - len(ids))
        x = torch.tensor(padded[:-1])
        y = torch.tensor(padded[1:] if shifted else padded[:-1])
        pads = torch.nonzero(y == pad_id).squeeze(1)
        if mask:
            y[pads[1:] if keep_first else pads] = ignore_index
        if max_length is not None:
            x, y = x[:max_length], y[:max_length]
        inputs.append(x)
        targets.append(y)
    return torch.stack(inputs), torch.stack(targets)


def collate_appending(batch, pad_id=50256, ignore_index=-100, max_length=None):
    """Right, except that it appends the end-of-text to the caller's lists."""
    for ids in batch:
        ids.append(pad_id)
    width = max(len(ids) for ids in batch)
    rows = [ids + [pad_id] * (width - len(ids)) for ids in batch]
    inputs, targets = torch.tensor(rows)[:, :-1], torch.tensor(rows)[:, 1:].clone()
    for row, ids in enumerate(batch):
        targets[row, len(ids) - 1 :] = ignore_index
    if max_length is not None:
        inputs, targets = inputs[:, :max_length], targets[:, :max_length]
    return inputs, targets


def collate_inputs_with_ignore_index(batch, pad_id=50256, ignore_index=-100, max_length=None):
    inputs, targets = collate_book(batch, pad_id, ignore_index, max_length)
    for row, ids in enumerate(batch):
        inputs[row, len(ids) :] = ignore_index
    return inputs, targets


def collate_float(batch, pad_id=50256, ignore_index=-100, max_length=None):
    inputs, targets = collate_by_position(batch, pad_id, ignore_index, max_length)
    return inputs.float(), targets.float()


def collate_inputs_not_cut(batch, pad_id=50256, ignore_index=-100, max_length=None):
    """The targets are right, but the inputs are the padded rows with their last column."""
    width = max(len(ids) + 1 for ids in batch)
    padded = torch.tensor([ids + [pad_id] * (width - len(ids)) for ids in batch])
    return padded, collate_book(batch, pad_id, ignore_index, max_length)[1]


def collate_masking_from(batch, pad_id=50256, ignore_index=-100, max_length=None, first=0):
    """Pad, cut to max_length + 1, shift, then mask the targets from position len(ids) + first:
    first=0 is right when max_length cuts after the shift."""
    width = max(len(ids) + 1 for ids in batch)
    rows = torch.tensor([ids + [pad_id] * (width - len(ids)) for ids in batch])
    rows = rows[:, : None if max_length is None else max_length + 1]
    inputs, targets = rows[:, :-1], rows[:, 1:].clone()
    for row, ids in enumerate(batch):
        targets[row, len(ids) + first :] = ignore_index
    return inputs, targets


def collate_cutting_before_the_shift(batch, pad_id=50256, ignore_index=-100, max_length=None):
    """Cuts the padded rows to max_length, then shifts: one column short when it cuts."""
    inputs, targets = collate_masking_from(batch, pad_id, ignore_index)
    if max_length is not None:
        inputs, targets = inputs[:, : max_length - 1], targets[:, : max_length - 1]
    return inputs, targets


def collate_padding_on_the_left(batch, pad_id=50256, ignore_index=-100, max_length=None):
    """Pads in front, as for generation, and masks the targets in front of the tokens."""
    width = max(len(ids) + 1 for ids in batch)
    inputs, targets = [], []
    for ids in batch:
        front = width - len(ids) - 1
        padded = torch.tensor([pad_id] * front + ids + [pad_id])
        x, y = padded[:-1], padded[1:].clone()
        y[: max(front - 1, 0)] = ignore_index
        inputs.append(x[:max_length])
        targets.append(y[:max_length])
    return torch.stack(inputs), torch.stack(targets)


WRONG_COLLATE = {
    "every padding target kept": lambda b, **kw: collate_choosing(b, **kw, mask=False),
    "every padding target masked, the first too": lambda b, **kw: collate_choosing(
        b, **kw, keep_first=False
    ),
    "targets not shifted": lambda b, **kw: collate_choosing(b, **kw, shifted=False),
    "pads to max_length, a global length": lambda b, **kw: collate_choosing(
        b, **kw, width=max(kw["max_length"] or 0, *map(len, b)) + 1
    ),
    "no end-of-text appended": lambda b, **kw: collate_choosing(b, **kw, extra=0),
    "cuts to max_length before appending end-of-text": lambda b, **kw: collate_choosing(
        b, **kw, cut_first=True
    ),
    "pads with 50256 and -100 whatever the arguments": lambda b, **kw: collate_book(
        b, max_length=kw["max_length"]
    ),
    "appends to the caller's lists": collate_appending,
    "pads the inputs with ignore_index": collate_inputs_with_ignore_index,
    "float tensors": collate_float,
    "one stacked tensor": lambda b, **kw: torch.stack(collate_book(b, **kw)),
    "lists, not tensors": lambda b, **kw: tuple(t.tolist() for t in collate_book(b, **kw)),
    "inputs keep the last column": collate_inputs_not_cut,
    "cuts to max_length before the shift": collate_cutting_before_the_shift,
    "ignore_index -100 hard-coded": lambda b, **kw: collate_book(
        b, pad_id=kw["pad_id"], max_length=kw["max_length"]
    ),
    "pads on the left": collate_padding_on_the_left,
    "masks the padding from one position too late": lambda b, **kw: collate_masking_from(
        b, **kw, first=1
    ),
}


# -- Exercise 6.3: ROUGE-L ------------------------------------------------------------------


def lcs_table(a, b):
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a, 1):
        for j, y in enumerate(b, 1):
            table[i][j] = (
                table[i - 1][j - 1] + 1 if x == y else max(table[i - 1][j], table[i][j - 1])
            )
    return table[-1][-1]


def rouge_with_table(candidate, reference):
    from buildllm.metrics import words

    c, r = words(candidate), words(reference)
    if not c or not r:
        return float(c == r)
    lcs = lcs_table(c, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(c), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def rouge_recursive(candidate, reference):
    """LCS by recursion with a cache, F-measure as 2·LCS / (len(c) + len(r))."""
    from buildllm.metrics import words

    c, r = tuple(words(candidate)), tuple(words(reference))

    @cache
    def lcs(i, j):
        if i == len(c) or j == len(r):
            return 0
        if c[i] == r[j]:
            return 1 + lcs(i + 1, j + 1)
        return max(lcs(i + 1, j), lcs(i, j + 1))

    if not c and not r:
        return 1.0
    return 2 * lcs(0, 0) / (len(c) + len(r))


def rouge_choosing(candidate, reference, split=None, overlap=lcs_table, combine=None):
    """rouge_with_table with switches for the usual mistakes."""
    from buildllm.metrics import words

    split = split or words
    c, r = split(candidate), split(reference)
    if not c or not r:
        return float(len(c) == len(r))
    n = overlap(c, r)
    if n == 0:
        return 0.0
    p, rec = n / len(c), n / len(r)
    return combine(p, rec) if combine else 2 * p * rec / (p + rec)


def longest_common_run(a, b):
    best = 0
    for i in range(len(a)):
        for j in range(len(b)):
            k = 0
            while i + k < len(a) and j + k < len(b) and a[i + k] == b[j + k]:
                k += 1
            best = max(best, k)
    return best


def bag_overlap(a, b):
    from collections import Counter

    return sum((Counter(a) & Counter(b)).values())


def rouge_without_empty_case(candidate, reference):
    from buildllm.metrics import words

    c, r = words(candidate), words(reference)
    lcs = lcs_table(c, r)
    precision, recall = lcs / len(c), lcs / len(r)
    return 2 * precision * recall / (precision + recall) if lcs else 0.0


def rouge_zero_when_empty(candidate, reference):
    from buildllm.metrics import words

    if not words(candidate) or not words(reference):
        return 0.0
    return rouge_with_table(candidate, reference)


def rouge_lcs_only(candidate, reference):
    from buildllm.metrics import words

    return lcs_table(words(candidate), words(reference))


WRONG_ROUGE = {
    "recall only": lambda c, r: rouge_choosing(c, r, combine=lambda p, rec: rec),
    "precision only": lambda c, r: rouge_choosing(c, r, combine=lambda p, rec: p),
    "the plain average of precision and recall": lambda c, r: rouge_choosing(
        c, r, combine=lambda p, rec: (p + rec) / 2
    ),
    "longest common substring": lambda c, r: rouge_choosing(c, r, overlap=longest_common_run),
    "word overlap without order": lambda c, r: rouge_choosing(c, r, overlap=bag_overlap),
    "split on spaces": lambda c, r: rouge_choosing(c, r, split=lambda t: t.lower().split()),
    "characters instead of words": lambda c, r: rouge_choosing(c, r, split=list),
    "not lowercased": lambda c, r: rouge_choosing(c, r, split=lambda t: re.findall(r"\w+", t)),
    "no case for empty answers": rouge_without_empty_case,
    "two empty answers score 0 (as rouge_score does)": rouge_zero_when_empty,
    "returns the LCS length": rouge_lcs_only,
    "returns (precision, recall, f1)": lambda c, r: (
        rouge_choosing(c, r, combine=lambda p, rec: p),
        rouge_choosing(c, r, combine=lambda p, rec: rec),
        rouge_with_table(c, r),
    ),
    "F-measure without its 2": lambda c, r: rouge_choosing(
        c, r, combine=lambda p, rec: p * rec / (p + rec)
    ),
}


# -- Exercise 6.4: a LoRA layer -------------------------------------------------------------


class LoRALikePeft(nn.Module):
    def __init__(self, base, rank, alpha):
        super().__init__()
        self.base = base
        base.requires_grad_(False)
        self.A = nn.Parameter(torch.empty(rank, base.in_features))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.B = nn.Parameter(torch.zeros(base.out_features, rank))
        self.scale = alpha / rank

    def forward(self, x):
        return self.base(x) + self.scale * (x @ self.A.T @ self.B.T)


class LoRAMergedInForward(nn.Module):
    """Builds W + scale·B·A each call and runs one F.linear; A drawn from a normal."""

    def __init__(self, base, rank, alpha):
        super().__init__()
        for p in base.parameters():
            p.requires_grad = False
        self.linear = base
        self.A = nn.Parameter(torch.randn(rank, base.in_features) / rank)
        self.B = nn.Parameter(torch.zeros(base.out_features, rank))
        self.alpha, self.rank = alpha, rank

    def forward(self, x):
        weight = self.linear.weight + (self.alpha / self.rank) * self.B @ self.A
        return F.linear(x, weight, self.linear.bias)


class LoRAChoosing(nn.Module):
    """LoRALikePeft with switches for the usual mistakes."""

    def __init__(
        self,
        base,
        rank,
        alpha,
        scale=None,
        freeze=True,
        a_zero=False,
        b_zero=True,
        book_layout=False,
        whole=False,
        detach=False,
    ):
        super().__init__()
        self.base = base.requires_grad_(not freeze)
        shape_a, shape_b = (rank, base.in_features), (base.out_features, rank)
        if book_layout:
            shape_a, shape_b = shape_a[::-1], shape_b[::-1]
        self.A = nn.Parameter(torch.zeros(shape_a) if a_zero else torch.randn(shape_a) * 0.1)
        self.B = nn.Parameter(torch.zeros(shape_b) if b_zero else torch.randn(shape_b) * 0.1)
        self.scale = alpha / rank if scale is None else scale(alpha, rank)
        self.book_layout, self.whole, self.detach = book_layout, whole, detach

    def forward(self, x):
        a, b = (self.A.detach(), self.B.detach()) if self.detach else (self.A, self.B)
        update = x @ a @ b if self.book_layout else x @ a.T @ b.T
        if self.whole:
            return (self.base(x) + update) * self.scale
        return self.base(x) + self.scale * update


class LoRAWithPlainTensors(nn.Module):
    def __init__(self, base, rank, alpha):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.A = torch.randn(rank, base.in_features, requires_grad=True)
        self.B = torch.zeros(base.out_features, rank, requires_grad=True)
        self.scale = alpha / rank

    def forward(self, x):
        return self.base(x) + self.scale * (x @ self.A.T @ self.B.T)


class LoRAWithBiasAssumed(LoRALikePeft):
    def forward(self, x):
        base = x @ self.base.weight.T + self.base.bias
        return base + self.scale * (x @ self.A.T @ self.B.T)


class LoRANotAModule:
    """Everything LoRALikePeft does, in a plain class without nn.Module."""

    def __init__(self, base, rank, alpha):
        self.base = base.requires_grad_(False)
        self.A = nn.Parameter(torch.randn(rank, base.in_features) * 0.1)
        self.B = nn.Parameter(torch.zeros(base.out_features, rank))
        self.scale = alpha / rank

    def __call__(self, x):
        return self.base(x) + self.scale * (x @ self.A.T @ self.B.T)


class LoRAWithShapes(LoRALikePeft):
    """A of shape a_shape(rank, in_features, out_features) and B of shape b_shape(...)."""

    def __init__(self, base, rank, alpha, a_shape, b_shape):
        super().__init__(base, rank, alpha)
        sizes = rank, base.in_features, base.out_features
        self.A = nn.Parameter(torch.randn(a_shape(*sizes)) * 0.1)
        self.B = nn.Parameter(torch.zeros(b_shape(*sizes)))


class LoRAFrozenWhole(LoRALikePeft):
    def __init__(self, base, rank, alpha):
        super().__init__(base, rank, alpha)
        self.requires_grad_(False)  # meant for the base, freezes A and B too


class LoRAWithOutOfPlaceAdd(LoRALikePeft):
    def forward(self, x):
        out = self.base(x)
        out.add(self.scale * (x @ self.A.T @ self.B.T))  # add returns a new tensor, dropped here
        return out


class LoRAWithoutBias(LoRALikePeft):
    def forward(self, x):
        return x @ self.base.weight.T + self.scale * (x @ self.A.T @ self.B.T)


class LoRAWithAData(LoRALikePeft):
    def forward(self, x):
        return self.base(x) + self.scale * (x @ self.A.data.T @ self.B.T)


def lora_with(**mistake):
    def build(base, rank, alpha):
        return LoRAChoosing(base, rank, alpha, **mistake)

    return build


WRONG_LORA = {
    "scale alpha (the book's)": lora_with(scale=lambda alpha, rank: alpha),
    "no scale": lora_with(scale=lambda alpha, rank: 1.0),
    "scale rank / alpha": lora_with(scale=lambda alpha, rank: rank / alpha),
    "scale alpha // rank": lora_with(scale=lambda alpha, rank: alpha // rank),
    "the scale on the whole output": lora_with(whole=True),
    "A and B in the book's layout": lora_with(book_layout=True),
    "A zero and B random (swapped)": lora_with(a_zero=True, b_zero=False),
    "A and B both zero": lora_with(a_zero=True),
    "base left trainable": lora_with(freeze=False),
    "A and B detached in forward": lora_with(detach=True),
    "plain tensors instead of nn.Parameter": LoRAWithPlainTensors,
    "assumes the base has a bias": LoRAWithBiasAssumed,
    "a plain class, not an nn.Module": LoRANotAModule,
    "A and B shapes swapped": lambda base, rank, alpha: LoRAWithShapes(
        base, rank, alpha, lambda r, i, o: (o, r), lambda r, i, o: (r, i)
    ),
    "A in the book's layout, B like nn.Linear": lambda base, rank, alpha: LoRAWithShapes(
        base, rank, alpha, lambda r, i, o: (i, r), lambda r, i, o: (o, r)
    ),
    "freezes the whole layer, A and B too": LoRAFrozenWhole,
    "out.add(update), whose result is dropped": LoRAWithOutOfPlaceAdd,
    "base(x) by hand, without its bias": LoRAWithoutBias,
    "scale alpha / sqrt(rank) (rsLoRA's)": lora_with(scale=lambda alpha, rank: alpha / rank**0.5),
    "A.data in forward": LoRAWithAData,
}


# -- Exercise 6.5: the log-probability of an answer -----------------------------------------


def logprob_with_gather(model, input_ids, labels_mask):
    logits = model(input_ids)[:, :-1]  # position t predicts token t + 1
    log_probs = logits.log_softmax(dim=-1)
    picked = log_probs.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return (picked * labels_mask[:, 1:]).sum(dim=1)


def logprob_with_cross_entropy(model, input_ids, labels_mask):
    logits = model(input_ids[:, :-1])
    nll = F.cross_entropy(logits.transpose(1, 2), input_ids[:, 1:], reduction="none")
    return -(nll * labels_mask[:, 1:].float()).sum(-1)


def logprob_by_row(model, input_ids, labels_mask):
    """The book's way: labels and mask shifted, masked_fill, one row at a time."""
    out = []
    for ids, mask in zip(input_ids, labels_mask, strict=True):
        log_probs = torch.log_softmax(model(ids[None])[0, :-1], dim=-1)
        picked = log_probs[torch.arange(len(ids) - 1), ids[1:]]
        out.append(picked.masked_fill(~mask[1:], 0.0).sum())
    return torch.stack(out)


def logprob_choosing(model, ids, mask, reduce="sum", use_mask=True, shift=True, mask_shift=1):
    """logprob_with_gather with switches for the usual mistakes."""
    if shift:
        log_probs = model(ids)[:, :-1].log_softmax(-1)
        picked = log_probs.gather(-1, ids[:, 1:, None]).squeeze(-1)
        m = mask[:, 1:] if mask_shift == 1 else mask[:, :-1]
    else:
        picked = model(ids).log_softmax(-1).gather(-1, ids[..., None]).squeeze(-1)
        m = mask
    m = m.float() if use_mask else torch.ones_like(picked)
    total = (picked * m).sum(1)
    return total / m.sum(1) if reduce == "mean" else total


def logprob_product(model, ids, mask):
    probs = model(ids)[:, :-1].softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return torch.where(mask[:, 1:], probs, 1.0).prod(dim=1).log()


@torch.no_grad()
def logprob_without_grad(model, ids, mask):
    return logprob_with_gather(model, ids, mask)


def logprob_detaching_the_logsumexp(model, ids, mask):
    """log_softmax by hand with its normalizer detached: the right value, a wrong gradient."""
    logits = model(ids)[:, :-1]
    log_probs = logits - logits.logsumexp(-1, keepdim=True).detach()
    return (log_probs.gather(-1, ids[:, 1:, None]).squeeze(-1) * mask[:, 1:]).sum(1)


def logprob_with_softmax(model, ids, mask, over=-1):
    """Probabilities where log-probabilities belong, or log_softmax over another dim."""
    logits = model(ids)[:, :-1]
    scores = logits.softmax(-1) if over == "softmax" else logits.log_softmax(over)
    return (scores.gather(-1, ids[:, 1:, None]).squeeze(-1) * mask[:, 1:]).sum(1)


WRONG_LOGPROB = {
    "mean instead of sum": lambda m, i, k: logprob_choosing(m, i, k, reduce="mean"),
    "mask ignored": lambda m, i, k: logprob_choosing(m, i, k, use_mask=False),
    "logits not shifted": lambda m, i, k: logprob_choosing(m, i, k, shift=False),
    "mask shifted the wrong way": lambda m, i, k: logprob_choosing(m, i, k, mask_shift=-1),
    "product of probabilities": logprob_product,
    "minus the log-probability": lambda m, i, k: -logprob_with_gather(m, i, k),
    "one number for the batch": lambda m, i, k: logprob_with_gather(m, i, k).sum(),
    "under torch.no_grad()": logprob_without_grad,
    "softmax instead of log_softmax": lambda m, i, k: logprob_with_softmax(m, i, k, "softmax"),
    "log_softmax over the positions": lambda m, i, k: logprob_with_softmax(m, i, k, over=1),
    "detaches the logsumexp": logprob_detaching_the_logsumexp,
    "a list of per-row sums": lambda m, i, k: list(logprob_with_gather(m, i, k)),
}


# -- Exercise 6.6: the DPO loss -------------------------------------------------------------


def dpo_with_logsigmoid(pi_chosen, pi_rejected, ref_chosen, ref_rejected, beta=0.1):
    chosen = beta * (pi_chosen - ref_chosen)
    rejected = beta * (pi_rejected - ref_rejected)
    loss = -F.logsigmoid(chosen - rejected).mean()
    return loss, chosen.detach(), rejected.detach()


def dpo_with_softplus(pi_chosen, pi_rejected, ref_chosen, ref_rejected, beta=0.1):
    """-log σ(x) = log(1 + e^-x) = softplus(-x); the rewards are left attached."""
    margin = beta * ((pi_chosen - pi_rejected) - (ref_chosen - ref_rejected))
    return (
        F.softplus(-margin).mean(),
        beta * (pi_chosen - ref_chosen),
        beta * (pi_rejected - ref_rejected),
    )


def dpo_from_detached_rewards(pi_chosen, pi_rejected, ref_chosen, ref_rejected, beta=0.1):
    """The rewards are detached for logging, then the loss is built from them."""
    chosen = (beta * (pi_chosen - ref_chosen)).detach()
    rejected = (beta * (pi_rejected - ref_rejected)).detach()
    return -F.logsigmoid(chosen - rejected).mean(), chosen, rejected


def dpo_detaching_the_rejected(pi_chosen, pi_rejected, ref_chosen, ref_rejected, beta=0.1):
    """Only the rejected reward is detached before the loss: pi_rejected gets no gradient."""
    chosen = beta * (pi_chosen - ref_chosen)
    rejected = (beta * (pi_rejected - ref_rejected)).detach()
    return -F.logsigmoid(chosen - rejected).mean(), chosen.detach(), rejected


def dpo_choosing(pi_c, pi_r, ref_c, ref_r, beta=0.1, loss_of=None, reward_scale=None, use_ref=True):
    """dpo_with_logsigmoid with switches for the usual mistakes."""
    if not use_ref:
        ref_c, ref_r = torch.zeros_like(ref_c), torch.zeros_like(ref_r)
    margin = (pi_c - ref_c) - (pi_r - ref_r)
    loss = loss_of(margin, beta) if loss_of else -F.logsigmoid(beta * margin).mean()
    scale = beta if reward_scale is None else reward_scale
    return loss, scale * (pi_c - ref_c), scale * (pi_r - ref_r)


WRONG_DPO = {
    "sign flipped": lambda *a: dpo_choosing(*a, loss_of=lambda m, b: -F.logsigmoid(-b * m).mean()),
    "beta missing": lambda *a: dpo_choosing(*a, loss_of=lambda m, b: -F.logsigmoid(m).mean()),
    "beta outside the log-sigmoid": lambda *a: dpo_choosing(
        *a, loss_of=lambda m, b: -b * F.logsigmoid(m).mean()
    ),
    "reference ignored": lambda *a: dpo_choosing(*a, use_ref=False),
    "log(sigmoid(x)) overflows": lambda *a: dpo_choosing(
        *a, loss_of=lambda m, b: -torch.log(torch.sigmoid(b * m)).mean()
    ),
    "sum over the pairs": lambda *a: dpo_choosing(
        *a, loss_of=lambda m, b: -F.logsigmoid(b * m).sum()
    ),
    "no minus sign": lambda *a: dpo_choosing(*a, loss_of=lambda m, b: F.logsigmoid(b * m).mean()),
    "rewards without beta": lambda *a: dpo_choosing(*a, reward_scale=1.0),
    "returns the loss alone": lambda *a: dpo_with_logsigmoid(*a)[0],
    "the loss as a Python float": lambda *a: (
        dpo_with_logsigmoid(*a)[0].item(),
        *dpo_with_logsigmoid(*a)[1:],
    ),
    "the loss from the detached rewards": dpo_from_detached_rewards,
    "the rejected reward detached before the loss": dpo_detaching_the_rejected,
    "no mean over the pairs": lambda *a: dpo_choosing(
        *a, loss_of=lambda m, b: -F.logsigmoid(b * m)
    ),
    "returns the loss and the margin": lambda pc, pr, rc, rr, b=0.1: (
        dpo_with_logsigmoid(pc, pr, rc, rr, b)[0],
        b * ((pc - rc) - (pr - rr)),
    ),
    "σ without the log": lambda *a: dpo_choosing(
        *a, loss_of=lambda m, b: -torch.sigmoid(b * m).mean()
    ),
    "the policy's log-probabilities as rewards": lambda pc, pr, rc, rr, b=0.1: (
        dpo_with_logsigmoid(pc, pr, rc, rr, b)[0],
        pc,
        pr,
    ),
    "rewards without the reference": lambda pc, pr, rc, rr, b=0.1: (
        dpo_with_logsigmoid(pc, pr, rc, rr, b)[0],
        b * pc,
        b * pr,
    ),
    "rewards averaged over the pairs": lambda *a: tuple(t.mean() for t in dpo_with_logsigmoid(*a)),
}


# (exercise, its check, right answers, wrong answers by the mistake they make)
EXERCISES = [
    (
        "6.1",
        check.meeting6.last_token_logits,
        [last_by_count, last_by_gather, last_by_loop],
        WRONG_LAST_TOKEN,
    ),
    ("6.2", check.meeting6.collate, [collate_book, collate_by_position], WRONG_COLLATE),
    ("6.3", check.meeting6.rouge_l, [rouge_with_table, rouge_recursive], WRONG_ROUGE),
    ("6.4", check.meeting6.lora_linear, [LoRALikePeft, LoRAMergedInForward], WRONG_LORA),
    (
        "6.5",
        check.meeting6.sequence_logprob,
        [logprob_with_gather, logprob_with_cross_entropy, logprob_by_row],
        WRONG_LOGPROB,
    ),
    ("6.6", check.meeting6.dpo_loss, [dpo_with_logsigmoid, dpo_with_softplus], WRONG_DPO),
]
