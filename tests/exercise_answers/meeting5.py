"""Answers to the Meeting 5 exercises, right and wrong, for tests/test_exercise_checks.py.

Each wrong answer is a mistake learners make, named after it.
"""

import math

import torch
import torch.nn.functional as F

from buildllm import check

# -- Exercise 5.1: cross entropy ------------------------------------------------------------


def cross_entropy_with_logsumexp(logits, targets):
    log_probs = logits - logits.logsumexp(dim=-1, keepdim=True)
    return -log_probs.gather(-1, targets.unsqueeze(-1)).mean()


def cross_entropy_flattened(logits, targets):
    """Rows of (tokens, vocab) and an index per row, as the book flattens them."""
    rows = logits.reshape(-1, logits.shape[-1]).log_softmax(dim=-1)
    t = targets.reshape(-1)
    return -rows[torch.arange(len(t)), t].mean()


def cross_entropy_choosing(logits, targets, log_probs=None, reduce=torch.mean, sign=-1.0):
    """cross_entropy_with_logsumexp with switches for the usual mistakes."""
    lp = logits.log_softmax(-1) if log_probs is None else log_probs(logits)
    return sign * reduce(lp.gather(-1, targets.unsqueeze(-1)).squeeze(-1))


@torch.no_grad()
def cross_entropy_without_grad(logits, targets):
    return cross_entropy_with_logsumexp(logits, targets)


def cross_entropy_without_return(logits, targets):
    log_probs = logits - logits.logsumexp(dim=-1, keepdim=True)
    loss = -log_probs.gather(-1, targets.unsqueeze(-1)).mean()  # noqa: F841 -- the mistake


def cross_entropy_detaching_the_logsumexp(logits, targets):
    """The right value, but the normalizer treated as a constant, so the gradient is wrong."""
    log_probs = logits - logits.logsumexp(dim=-1, keepdim=True).detach()
    return -log_probs.gather(-1, targets.unsqueeze(-1)).mean()


WRONG_CROSS_ENTROPY = {
    "log of the softmax": lambda x, t: cross_entropy_choosing(
        x, t, log_probs=lambda x: x.softmax(-1).log()
    ),
    "exp without subtracting the max": lambda x, t: cross_entropy_choosing(
        x, t, log_probs=lambda x: (x.exp() / x.exp().sum(-1, keepdim=True)).log()
    ),
    "sum over tokens": lambda x, t: cross_entropy_choosing(x, t, reduce=torch.sum),
    "no minus sign": lambda x, t: cross_entropy_choosing(x, t, sign=1.0),
    "no softmax: minus the target's logit": lambda x, t: cross_entropy_choosing(
        x, t, log_probs=lambda x: x
    ),
    "log base 2": lambda x, t: cross_entropy_choosing(
        x, t, log_probs=lambda x: x.log_softmax(-1) / math.log(2)
    ),
    "log of the mean probability": lambda x, t: (
        -cross_entropy_choosing(x, t, log_probs=lambda x: x.softmax(-1), sign=1.0).log()
    ),
    "softmax over dim 0": lambda x, t: cross_entropy_choosing(
        x, t, log_probs=lambda x: x.log_softmax(0)
    ),
    "one loss per token": lambda x, t: cross_entropy_choosing(x, t, reduce=lambda v: v),
    "gathers without squeezing or averaging": lambda x, t: (
        -x.log_softmax(-1).gather(-1, t.unsqueeze(-1))
    ),
    "detaches the logsumexp": cross_entropy_detaching_the_logsumexp,
    "no return statement": cross_entropy_without_return,
    "returns a Python float": lambda x, t: cross_entropy_with_logsumexp(x, t).item(),
    "computed without gradients": cross_entropy_without_grad,
    "indexes every row with all the targets": lambda x, t: -x.log_softmax(-1)[..., t].mean(),
    "calls F.cross_entropy": lambda x, t: F.cross_entropy(x.flatten(0, -2), t.flatten()),
    "uses nn.CrossEntropyLoss": lambda x, t: torch.nn.CrossEntropyLoss()(
        x.flatten(0, -2), t.flatten()
    ),
    "calls F.nll_loss": lambda x, t: F.nll_loss(x.flatten(0, -2).log_softmax(-1), t.flatten()),
}


# -- Exercise 5.2: softmax with a temperature -----------------------------------------------


def softmax_t_with_softmax(logits, temperature):
    if temperature == 0:
        return F.one_hot(logits.argmax(dim=-1), logits.shape[-1]).float()
    return torch.softmax(logits / temperature, dim=-1)


def softmax_t_by_hand(logits, temperature):
    """exp after subtracting each row's max; temperature 0 as a one-hot built with scatter."""
    if temperature == 0:
        best = logits.argmax(dim=-1, keepdim=True)
        return torch.zeros_like(logits).scatter(-1, best, 1.0)
    z = logits / temperature
    e = (z - z.max(dim=-1, keepdim=True).values).exp()
    return e / e.sum(dim=-1, keepdim=True)


def softmax_t_choosing(logits, t, scaled=lambda x, t: x / t, dim=-1):
    """softmax_t_with_softmax with switches for the usual mistakes."""
    if t == 0:
        return softmax_t_with_softmax(logits, 0)
    return scaled(logits, t).softmax(dim)


def softmax_t_in_place(logits, t):
    if t == 0:
        return softmax_t_with_softmax(logits, 0)
    return logits.div_(t).softmax(-1)


WRONG_SOFTMAX_T = {
    "multiplies by the temperature": lambda x, t: softmax_t_choosing(x, t, lambda x, t: x * t),
    "divides the probabilities after the softmax": lambda x, t: (
        softmax_t_with_softmax(x, 0) if t == 0 else x.softmax(-1) / t
    ),
    "softmax twice": lambda x, t: softmax_t_choosing(x, t, lambda x, t: x.softmax(-1) / t),
    "ignores the temperature": lambda x, t: softmax_t_choosing(x, t, lambda x, t: x),
    "softmax over dim 0": lambda x, t: softmax_t_choosing(x, t, dim=0),
    "exp without subtracting the max": lambda x, t: (
        softmax_t_with_softmax(x, 0) if t == 0 else (x / t).exp() / (x / t).exp().sum(-1, True)
    ),
    "divides by a temperature of 0": lambda x, t: (x / t).softmax(-1),
    "treats temperature 0 as 1": lambda x, t: x.softmax(-1) if t == 0 else (x / t).softmax(-1),
    "divides the logits in place": softmax_t_in_place,
    "returns a list": lambda x, t: softmax_t_with_softmax(x, t).tolist(),
    "exp without dividing by the sum": lambda x, t: (
        softmax_t_with_softmax(x, 0) if t == 0 else (x / t).exp()
    ),
}


# -- Exercise 5.3: top-k --------------------------------------------------------------------


def top_k_with_masked_fill(logits, k):
    kth = logits.topk(min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_k_with_scatter(logits, k):
    values, ids = torch.topk(logits, min(k, logits.size(-1)))
    return torch.full_like(logits, -math.inf).scatter(-1, ids, values)


def top_k_choosing(logits, k, below=torch.lt, fill=float("-inf"), extra=0):
    """top_k_with_masked_fill with switches for the usual mistakes."""
    n = min(k + extra, logits.shape[-1])
    kth = logits.topk(n, dim=-1).values[..., -1:]
    return logits.masked_fill(below(logits, kth), fill)


def top_k_sorted(logits, k):
    values = logits.topk(min(k, logits.shape[-1]), dim=-1).values
    out = torch.full_like(logits, float("-inf"))
    out[..., : values.shape[-1]] = values
    return out


def top_k_in_place(logits, k):
    kth = logits.topk(min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill_(logits < kth, float("-inf"))


def top_k_blending_with_a_mask(logits, k):
    """keep · logits + (1 - keep) · -inf: where keep is 1, 0 · -inf is NaN."""
    kth = logits.topk(min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    keep = (logits >= kth).float()
    return keep * logits + (1 - keep) * float("-inf")


WRONG_TOP_K = {
    "fills with 0": lambda x, k: top_k_choosing(x, k, fill=0.0),
    "fills with -1e9": lambda x, k: top_k_choosing(x, k, fill=-1e9),
    "keeps k - 1 (<= the k-th)": lambda x, k: top_k_choosing(x, k, below=torch.le),
    "keeps k + 1": lambda x, k: top_k_choosing(x, k, extra=1),
    "removes the top k": lambda x, k: top_k_choosing(x, k, below=torch.ge),
    "sorted order": top_k_sorted,
    "returns probabilities": lambda x, k: top_k_with_masked_fill(x, k).softmax(-1),
    "returns only the top k values": lambda x, k: x.topk(min(k, x.shape[-1]), dim=-1).values,
    "top k of the whole batch": lambda x, k: x.masked_fill(
        x < x.flatten().topk(min(k, x.shape[-1])).values[-1], float("-inf")
    ),
    "no min(k, vocab)": lambda x, k: x.masked_fill(
        x < x.topk(k, dim=-1).values[..., -1:], float("-inf")
    ),
    "fills in place": top_k_in_place,
    "blends with a 0/1 mask times -inf": top_k_blending_with_a_mask,
    "kthvalue, the k-th smallest, as the threshold": lambda x, k: x.masked_fill(
        x < x.kthvalue(min(k, x.shape[-1]), dim=-1, keepdim=True).values, float("-inf")
    ),
    "returns log-probabilities of the kept tokens": lambda x, k: top_k_with_masked_fill(
        x, k
    ).log_softmax(-1),
    "returns a list": lambda x, k: top_k_with_masked_fill(x, k).tolist(),
}


# -- Exercise 5.4: top-p --------------------------------------------------------------------


def top_p_descending(logits, p):
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    before = probs.cumsum(dim=-1) - probs  # what the more likely tokens already hold
    kept = sorted_logits.masked_fill(before >= p, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, kept)


def top_p_ascending(logits, p):
    """The way many libraries write it: drop the tail whose total is at most 1 - p."""
    sorted_logits, order = torch.sort(logits, dim=-1)
    tail = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = tail <= 1 - p
    drop_sorted[..., -1] = False  # the most likely token always stays
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, -math.inf)


def top_p_loop(logits, p):
    """Row by row in Python: add probabilities, most likely first, until they reach p."""
    rows = logits.reshape(-1, logits.shape[-1])
    out = torch.full_like(rows, float("-inf"))
    for r, row in enumerate(rows):
        probs = row.softmax(-1)
        total = 0.0
        for i in probs.argsort(descending=True).tolist():
            out[r, i] = row[i]
            total += probs[i].item()
            if total >= p:
                break
    return out.reshape(logits.shape)


def top_p_choosing(logits, p, drop=lambda total, probs, p: total - probs >= p, fill=-math.inf):
    """top_p_descending with switches for the usual mistakes."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    kept = sorted_logits.masked_fill(drop(probs.cumsum(-1), probs, p), fill)
    return torch.full_like(logits, fill).scatter(-1, order, kept)


def top_p_one_too_many(logits, p):
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    before = probs.cumsum(-1) - probs
    keep = before < p
    keep[..., 1:] |= keep[..., :-1].clone()  # and the next one
    kept = sorted_logits.masked_fill(~keep, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, kept)


def top_p_unsorted(logits, p):
    probs = logits.softmax(-1)
    return logits.masked_fill(probs.cumsum(-1) - probs >= p, float("-inf"))


def top_p_not_put_back(logits, p):
    sorted_logits, _ = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    return sorted_logits.masked_fill(probs.cumsum(-1) - probs >= p, float("-inf"))


def top_p_least_likely_first(logits, p):
    sorted_logits, order = logits.sort(dim=-1)
    probs = sorted_logits.softmax(dim=-1)
    kept = sorted_logits.masked_fill(probs.cumsum(-1) - probs >= p, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, kept)


def top_p_in_place(logits, p):
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    drop = (probs.cumsum(-1) - probs >= p).scatter(-1, order, probs.cumsum(-1) - probs >= p)
    return logits.masked_fill_(drop, float("-inf"))


WRONG_TOP_P = {
    "drops the token crossing p": lambda x, p: top_p_choosing(
        x, p, drop=lambda total, probs, p: total > p
    ),
    "drops the token reaching p": lambda x, p: top_p_choosing(
        x, p, drop=lambda total, probs, p: total >= p
    ),
    "keeps one token too many": top_p_one_too_many,
    "running sum in token-id order": top_p_unsorted,
    "sorts from the least likely": top_p_least_likely_first,
    "leaves the result sorted": top_p_not_put_back,
    "fills with 0": lambda x, p: top_p_choosing(x, p, fill=0.0),
    "returns probabilities": lambda x, p: top_p_descending(x, p).softmax(-1),
    "one nucleus for the whole batch": lambda x, p: top_p_descending(x.flatten(), p).reshape(
        x.shape
    ),
    "keeps tokens more likely than 1 - p": lambda x, p: x.masked_fill(
        x.softmax(-1) < 1 - p, float("-inf")
    ),
    "fills in place": top_p_in_place,
    "renormalizes the nucleus": lambda x, p: top_p_descending(x, p).log_softmax(-1),
}


# -- Exercise 5.5: warmup and cosine decay --------------------------------------------------


def lr_with_ifs(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * progress))


def lr_with_clamp(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
    """One expression per phase, the decay's progress clamped to [0, 1]."""
    warm = max_lr * min(1.0, (step + 1) / warmup_steps) if warmup_steps else max_lr
    if step < warmup_steps:
        return warm
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    cosine = (1 + math.cos(math.pi * progress)) / 2
    return min_lr + (max_lr - min_lr) * cosine


def _cos(max_lr, min_lr, progress):
    return min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * progress))


def lr_answer(warm=None, decay=None, clamp=True):
    """lr_with_ifs with its warmup or its decay swapped for a wrong one, or no floor at the end.

    warm(step, max_lr, warmup_steps); decay(progress, max_lr, min_lr, step, warmup, total).
    """

    def lr_at(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
        if step < warmup_steps:
            if warm is None:
                return max_lr * (step + 1) / warmup_steps
            return warm(step, max_lr, warmup_steps)
        if clamp and step >= total_steps:
            return min_lr
        progress = (step - warmup_steps) / (total_steps - warmup_steps)
        if decay is None:
            return _cos(max_lr, min_lr, progress)
        return decay(progress, max_lr, min_lr, step, warmup_steps, total_steps)

    return lr_at


def lr_stopping_at_zero(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
    if step >= total_steps:
        return 0.0
    return lr_with_ifs(step, max_lr, warmup_steps, total_steps, min_lr)


def lr_without_a_last_return(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
    """No return after total_steps: Python returns None there."""
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step < total_steps:
        progress = (step - warmup_steps) / (total_steps - warmup_steps)
        return _cos(max_lr, min_lr, progress)


WRONG_LR = {
    "warmup starts at 0": lr_answer(warm=lambda s, m, w: m * s / w),
    "warmup reaches max_lr a step late": lr_answer(warm=lambda s, m, w: m * (s + 1) / (w + 1)),
    "no warmup": lr_answer(warm=lambda s, m, w: m),
    "progress over all steps": lr_answer(decay=lambda x, m, lo, s, w, t: _cos(m, lo, s / t)),
    "progress divided by total_steps": lr_answer(
        decay=lambda x, m, lo, s, w, t: _cos(m, lo, (s - w) / t)
    ),
    "decays to 0": lr_answer(decay=lambda x, m, lo, *_: _cos(m, 0.0, x)),
    "min_lr added on top": lr_answer(decay=lambda x, m, lo, *_: lo + _cos(m, 0.0, x)),
    "linear decay": lr_answer(decay=lambda x, m, lo, *_: m - (m - lo) * x),
    "cos without 0.5 (1 + ...)": lr_answer(
        decay=lambda x, m, lo, *_: lo + (m - lo) * math.cos(math.pi * x)
    ),
    "rises again after total_steps": lr_answer(clamp=False),
    "stops at 0 after total_steps": lr_stopping_at_zero,
    "no return after total_steps": lr_without_a_last_return,
    "cosine without π": lr_answer(
        decay=lambda x, m, lo, *_: lo + 0.5 * (m - lo) * (1 + math.cos(x))
    ),
}


# -- Exercise 5.6: clipping by the global norm ----------------------------------------------


def clip_with_stack(parameters, max_norm):
    grads = [p.grad for p in parameters if p.grad is not None]
    total = torch.stack([g.norm() for g in grads]).norm()
    scale = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(scale)
    return total


def clip_by_hand(parameters, max_norm):
    """Sum of squares in Python, and a scale only when the norm is above max_norm."""
    params = [p for p in parameters if p.grad is not None]
    total = math.sqrt(sum((p.grad**2).sum().item() for p in params))
    if total > max_norm:
        for p in params:
            p.grad *= max_norm / total
    return total


def clip_choosing(parameters, max_norm, norm=None, scale=None, returned=None):
    """clip_with_stack with switches for the usual mistakes."""
    grads = [p.grad for p in parameters if p.grad is not None]
    norms = torch.stack([g.norm() for g in grads])
    total = norms.norm() if norm is None else norm(norms)
    factor = min(1.0, max_norm / (total.item() + 1e-6)) if scale is None else scale(total)
    for g in grads:
        g.mul_(factor)
    return total if returned is None else returned(total, grads)


def clip_each(parameters, max_norm):
    grads = [p.grad for p in parameters if p.grad is not None]
    total = torch.stack([g.norm() for g in grads]).norm()
    for g in grads:
        g.mul_(min(1.0, max_norm / (g.norm().item() + 1e-6)))
    return total


def clip_values(parameters, max_norm):
    grads = [p.grad for p in parameters if p.grad is not None]
    total = torch.stack([g.norm() for g in grads]).norm()
    for g in grads:
        g.clamp_(-max_norm, max_norm)
    return total


def clip_rebinding(parameters, max_norm):
    grads = [p.grad for p in parameters if p.grad is not None]
    total = torch.stack([g.norm() for g in grads]).norm()
    scale = min(1.0, max_norm / (total.item() + 1e-6))
    for g in grads:
        g = g * scale  # the mistake
    return total


def clip_iterating_twice(parameters, max_norm):
    total = torch.stack([p.grad.norm() for p in parameters if p.grad is not None]).norm()
    scale = min(1.0, max_norm / (total.item() + 1e-6))
    for p in parameters:  # a generator is already exhausted here
        if p.grad is not None:
            p.grad.mul_(scale)
    return total


@torch.no_grad()
def clip_the_weights(parameters, max_norm):
    params = [p for p in parameters if p.grad is not None]
    total = torch.stack([p.grad.norm() for p in params]).norm()
    for p in params:
        p.mul_(min(1.0, max_norm / (total.item() + 1e-6)))
    return total


def clip_assuming_every_gradient(parameters, max_norm):
    params = list(parameters)
    total = torch.stack([p.grad.norm() for p in params]).norm()
    for p in params:
        p.grad.mul_(min(1.0, max_norm / (total.item() + 1e-6)))
    return total


def clip_filling_missing_gradients(parameters, max_norm):
    """Gives every parameter without a gradient a zero one, so that no None is in the way."""
    params = list(parameters)
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    return clip_with_stack(params, max_norm)


def clip_then_set_to_none(parameters, max_norm):
    """Clips, then clears the gradients as optimizer.zero_grad(set_to_none=True) does."""
    params = list(parameters)
    total = clip_with_stack(params, max_norm)
    for p in params:
        p.grad = None
    return total


def clip_scaling_by_summed_norms(parameters, max_norm):
    """Returns the global norm, but scales by the sum of the gradients' own norms."""
    grads = [p.grad for p in parameters if p.grad is not None]
    total = torch.stack([g.norm() for g in grads]).norm()
    summed = sum(g.norm().item() for g in grads)
    for g in grads:
        g.mul_(min(1.0, max_norm / (summed + 1e-6)))
    return total


WRONG_CLIP = {
    "clips each gradient on its own": clip_each,
    "always scales to max_norm": lambda ps, m: clip_choosing(
        ps, m, scale=lambda total: m / (total.item() + 1e-6)
    ),
    "divides by the norm": lambda ps, m: clip_choosing(ps, m, scale=lambda total: 1 / total),
    "clamps each value": clip_values,
    "sum of the gradients' norms": lambda ps, m: clip_choosing(ps, m, norm=lambda n: n.sum()),
    "the largest gradient's norm": lambda ps, m: clip_choosing(ps, m, norm=lambda n: n.max()),
    "returns the norm after clipping": lambda ps, m: clip_choosing(
        ps, m, returned=lambda total, grads: torch.stack([g.norm() for g in grads]).norm()
    ),
    "returns the squared norm": lambda ps, m: clip_choosing(
        ps, m, returned=lambda total, grads: total**2
    ),
    "returns nothing": lambda ps, m: clip_choosing(ps, m, returned=lambda total, grads: None),
    "g = g * scale": clip_rebinding,
    "iterates a generator twice": clip_iterating_twice,
    "scales the weights": clip_the_weights,
    "assumes every parameter has a gradient": clip_assuming_every_gradient,
    "calls clip_grad_norm_": lambda ps, m: torch.nn.utils.clip_grad_norm_(ps, m),
    "gives missing gradients zeros": clip_filling_missing_gradients,
    "sets the gradients to None afterwards": clip_then_set_to_none,
    "scales by the sum of the gradients' norms": clip_scaling_by_summed_norms,
    "scale upside down: norm / max_norm": lambda ps, m: clip_choosing(
        ps, m, scale=lambda total: max(1.0, total.item() / m)
    ),
}


# -- Exercise 5.7: one AdamW step -----------------------------------------------------------


@torch.no_grad()
def adamw_written_out(params, state, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
    beta1, beta2 = betas
    for i, p in enumerate(params):
        if p.grad is None:
            continue
        s = state.setdefault(i, {"t": 0, "m": torch.zeros_like(p), "v": torch.zeros_like(p)})
        s["t"] += 1
        g = p.grad
        s["m"] = beta1 * s["m"] + (1 - beta1) * g
        s["v"] = beta2 * s["v"] + (1 - beta2) * g * g
        m_hat = s["m"] / (1 - beta1 ** s["t"])
        v_hat = s["v"] / (1 - beta2 ** s["t"])
        p.mul_(1 - lr * weight_decay)
        p.sub_(lr * m_hat / (v_hat.sqrt() + eps))


@torch.no_grad()
def adamw_like_torch(params, state, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
    """State keyed by the parameter itself, one step counter for all, in-place arithmetic."""
    beta1, beta2 = betas
    state["step"] = state.get("step", 0) + 1
    t = state["step"]
    for p in params:
        if p.grad is None:
            continue
        if p not in state:
            state[p] = (torch.zeros_like(p), torch.zeros_like(p))
        m, v = state[p]
        m.lerp_(p.grad, 1 - beta1)
        v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
        p.mul_(1 - lr * weight_decay)
        denom = (v.sqrt() / math.sqrt(1 - beta2**t)).add_(eps)
        p.addcdiv_(m, denom, value=-lr / (1 - beta1**t))


@torch.no_grad()
def adamw_choosing(
    params, state, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, mistake=None
):
    """adamw_written_out with one of the usual mistakes."""
    beta1, beta2 = betas
    for i, p in enumerate(params):
        if p.grad is None and mistake != "zeros for a missing gradient":
            continue
        g = torch.zeros_like(p) if p.grad is None else p.grad
        s = state.setdefault(i, {"t": 0, "m": torch.zeros_like(p), "v": torch.zeros_like(p)})
        if mistake != "t from 0":
            s["t"] += 1
        t = s["t"]
        if mistake == "L2 in the gradient":
            g = g + weight_decay * p
        if mistake == "betas swapped in m":
            s["m"] = beta1 * g + (1 - beta1) * s["m"]
        else:
            s["m"] = beta1 * s["m"] + (1 - beta1) * g
        s["v"] = beta2 * s["v"] + (1 - beta2) * (g.abs() if mistake == "v from |g|" else g * g)
        if mistake == "no bias correction":
            m_hat, v_hat = s["m"], s["v"]
        else:
            m_hat, v_hat = s["m"] / (1 - beta1**t), s["v"] / (1 - beta2**t)
        if mistake == "t from 0":
            s["t"] += 1
        if mistake == "decay without lr":
            p.mul_(1 - weight_decay)
        elif mistake not in ("L2 in the gradient", "decay after the update"):
            p.mul_(1 - lr * weight_decay)
        if mistake == "eps inside the square root":
            p.sub_(lr * m_hat / (v_hat + eps).sqrt())
        elif mistake == "no square root":
            p.sub_(lr * m_hat / (v_hat + eps))
        else:
            p.sub_(lr * m_hat / (v_hat.sqrt() + eps))
        if mistake == "decay after the update":
            p.mul_(1 - lr * weight_decay)


def adamw_with(mistake):
    return lambda params, state, **kw: adamw_choosing(params, state, mistake=mistake, **kw)


@torch.no_grad()
def adamw_fresh_state(params, state, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
    state.clear()  # m, v and t start again at every call
    adamw_written_out(params, state, lr, betas, eps, weight_decay)


@torch.no_grad()
def adamw_default_betas(params, state, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
    adamw_written_out(params, state, lr, weight_decay=weight_decay)


_GLOBAL_STATE = {}


def adamw_global_state(params, state, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
    """Ignores `state` and keeps everything in a module-level dict, shared by every case."""
    adamw_written_out(params, _GLOBAL_STATE, lr, betas, eps, weight_decay)


def adamw_rebinding(params, state, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
    """Computes the right numbers, then only rebinds the loop variable."""
    beta1, beta2 = betas
    state["t"] = state.get("t", 0) + 1
    for i, p in enumerate(params):
        if p.grad is None:
            continue
        m = beta1 * state.get(("m", i), 0) + (1 - beta1) * p.grad
        v = beta2 * state.get(("v", i), 0) + (1 - beta2) * p.grad**2
        state["m", i], state["v", i] = m, v
        m_hat, v_hat = m / (1 - beta1 ** state["t"]), v / (1 - beta2 ** state["t"])
        p = p.detach() * (1 - lr * weight_decay) - lr * m_hat / (v_hat.sqrt() + eps)


def adamw_without_no_grad(params, state, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
    """adamw_written_out without its @torch.no_grad() line (__wrapped__ is the bare function)."""
    adamw_written_out.__wrapped__(params, state, lr, betas, eps, weight_decay)


def adamw_with_torch(params, state, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
    if "optimizer" not in state:
        state["optimizer"] = torch.optim.AdamW(
            params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay
        )
    state["optimizer"].step()


WRONG_ADAMW = {
    "no bias correction": adamw_with("no bias correction"),
    "bias correction with t from 0": adamw_with("t from 0"),
    "L2 in the gradient (Adam, not AdamW)": adamw_with("L2 in the gradient"),
    "decay without the learning rate": adamw_with("decay without lr"),
    "decay after the update": adamw_with("decay after the update"),
    "eps inside the square root": adamw_with("eps inside the square root"),
    "v from |g|": adamw_with("v from |g|"),
    "a missing gradient taken as zeros": adamw_with("zeros for a missing gradient"),
    "betas swapped in m": adamw_with("betas swapped in m"),
    "fresh state every call": adamw_fresh_state,
    "default betas and eps": adamw_default_betas,
    "state in a global": adamw_global_state,
    "rebinds p": adamw_rebinding,
    "no torch.no_grad()": adamw_without_no_grad,
    "uses torch.optim.AdamW": adamw_with_torch,
    "v without its square root": adamw_with("no square root"),
}


# (exercise, its check, right answers, wrong answers by the mistake they make)
EXERCISES = [
    (
        "5.1",
        check.meeting5.cross_entropy,
        [cross_entropy_with_logsumexp, cross_entropy_flattened],
        WRONG_CROSS_ENTROPY,
    ),
    (
        "5.2",
        check.meeting5.softmax_with_temperature,
        [softmax_t_with_softmax, softmax_t_by_hand],
        WRONG_SOFTMAX_T,
    ),
    ("5.3", check.meeting5.top_k, [top_k_with_masked_fill, top_k_with_scatter], WRONG_TOP_K),
    ("5.4", check.meeting5.top_p, [top_p_descending, top_p_ascending, top_p_loop], WRONG_TOP_P),
    ("5.5", check.meeting5.lr_schedule, [lr_with_ifs, lr_with_clamp], WRONG_LR),
    ("5.6", check.meeting5.clip_grad_norm, [clip_with_stack, clip_by_hand], WRONG_CLIP),
    ("5.7", check.meeting5.adamw_step, [adamw_written_out, adamw_like_torch], WRONG_ADAMW),
]
