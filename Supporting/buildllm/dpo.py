"""Preference tuning with DPO (Meeting 6): prefer the chosen answer over the rejected one.

A preference pair is one prompt with two answers, one marked *chosen* and one *rejected*.
Direct Preference Optimization (Rafailov et al. 2023) trains the model (the *policy*) on such
pairs with no reward model and no sampling: it compares how much more likely each answer has
become under the policy than under a frozen copy of the model we started from (the
*reference*), and pushes that gain up for the chosen answer and down for the rejected one.

    logratio   = log p_policy(answer | prompt) - log p_reference(answer | prompt)
    reward     = beta · logratio                              (one number per answer)
    loss       = -log σ(reward_chosen - reward_rejected)       (mean over the pairs)

At the start the policy is the reference, every reward is 0 and the loss is ln 2 ≈ 0.693.
beta sets how far the policy may drift from the reference: the smaller it is, the further the
policy must move to earn the same margin.

    >>> train, val, test = load_preferences()
    >>> loader = DataLoader(PreferenceDataset(train, enc), batch_size=8,
    ...                     collate_fn=collate_preferences, shuffle=True)
    >>> reference = frozen_copy(policy)
    >>> history = train_dpo(policy, reference, loader, val_loader, epochs=1, lr=5e-6)

tests/test_dpo.py checks the loss against a hand computation and `sequence_logprob` against
a slow loop over positions.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable, Sequence
from itertools import islice

import torch
import torch.nn.functional as F
from torch import nn

from .data import fetch
from .inference import pad_ids
from .instruct import InstructionDataset, end_of_text_id, logits_at, prompt_ids, split_entries
from .training import FitState, cycle, fit
from .utils import eval_mode

__all__ = ["PreferenceDataset", "collate_preferences", "dpo_loss", "evaluate_dpo", "frozen_copy",
           "load_preferences", "sequence_logprob", "train_dpo"]


def load_preferences(seed: int | None = 123) -> tuple[list[dict], list[dict], list[dict]]:
    """The book's 1,100 preference pairs, split into (train, validation, test) lists.

    Each entry has `instruction`, `input`, `output` (the answer instruction fine-tuning
    trains on), `chosen` and `rejected`. The pairs are the entries of instruction-data.json,
    in the same order, so they are shuffled and split exactly as
    `buildllm.instruct.load_instructions(seed)` splits those (85% / 5% / 10%): a prompt that
    instruction fine-tuning held out stays held out here. Then the 6 pairs whose two answers
    are the same text are dropped; their loss is ln 2 whatever the model does, so they teach
    nothing. That leaves 930, 55 and 109 pairs with the default seed.
    """
    data = json.loads(fetch("instruction-data-with-preference.json").read_text(encoding="utf-8"))
    parts = split_entries(data, seed)
    return tuple([e for e in part if e["chosen"] != e["rejected"]] for part in parts)


def _encode_pair(entry: dict, enc) -> dict[str, list[int]]:
    """Token ids of the prompt (with the response header) and of each answer (with <|endoftext|>).

    The prompt is `buildllm.instruct.prompt_ids`: `format_prompt(entry)` and the header
    "### Response:", the tokens instruction fine-tuning and `respond` put before an answer.
    The header belongs to the prompt: it is the same in both sequences, so it says nothing
    about which answer is preferred. Each answer is encoded on its own and appended, as in
    instruction fine-tuning.
    """
    for key in ("instruction", "input", "chosen", "rejected"):
        if key not in entry:
            raise ValueError(f"a preference entry needs the key {key!r}; this one has "
                             f"{sorted(entry)}")
    eot = end_of_text_id(enc)  # 50256 for GPT-2; a Meeting-2 BPE has its own
    return {"prompt": prompt_ids(entry, enc), "chosen": enc.encode(entry["chosen"]) + [eot],
            "rejected": enc.encode(entry["rejected"]) + [eot]}


class PreferenceDataset(InstructionDataset):
    """Preference entries, tokenized once: each item holds `prompt`, `chosen`, `rejected` ids.

    The answers end in <|endoftext|> (50256), so preferring an answer includes preferring
    where it stops.

    >>> PreferenceDataset(train, enc)[0]["chosen"][-1]
    50256
    """

    encode = staticmethod(_encode_pair)


def collate_preferences(batch: Sequence[dict[str, list[int]]], pad_id: int = 50256,
                        max_length: int | None = None) -> dict[str, torch.Tensor]:
    """Pad a list of pairs into `chosen`, `rejected` (batch, T) ids and their answer masks.

    Each sequence is prompt + answer. `chosen_mask[b, t]` is True where token t of row b is
    an answer token, the tokens whose log-probabilities DPO compares; prompt and padding
    are False. Chosen and rejected rows are padded to one length T, so the policy can score
    both in a single forward pass. With `max_length` (e.g. the model's context length), a
    sequence keeps its first `max_length` tokens, so a long answer loses its end.

    >>> out = collate_preferences([{"prompt": [1, 2], "chosen": [3], "rejected": [4, 5]}])
    >>> out["chosen"].tolist(), out["chosen_mask"].tolist()
    ([[1, 2, 3, 50256]], [[False, False, True, False]])
    """
    if len(batch) == 0:
        raise ValueError("collate_preferences got an empty batch")
    if max_length is not None and max_length < 2:
        raise ValueError(f"max_length must be at least 2, got {max_length}")
    rows = {"chosen": [], "rejected": []}
    for i, item in enumerate(batch):
        for kind in rows:
            ids = (item["prompt"] + item[kind])[:max_length]
            if len(ids) <= len(item["prompt"]):
                raise ValueError(f"pair {i}: its prompt has {len(item['prompt'])} tokens, so "
                                 f"max_length={max_length} leaves no {kind} answer tokens")
            rows[kind].append(ids)
    width = max(len(ids) for seqs in rows.values() for ids in seqs)
    prompt_lens = torch.tensor([[len(item["prompt"])] for item in batch])  # (batch, 1)
    out = {}
    for kind, seqs in rows.items():
        ids, real = pad_ids(seqs, pad_id, width=width)
        out[kind], out[f"{kind}_mask"] = ids, real & (torch.arange(width) >= prompt_lens)
    return out


def sequence_logprob(model: nn.Module, input_ids: torch.Tensor, labels_mask: torch.Tensor,
                     reduction: str = "sum") -> torch.Tensor:
    """log p(answer | prompt) for each row: the answer tokens' log-probabilities, summed.

    `labels_mask` (batch, T) marks the tokens of `input_ids` to score. Token t is predicted
    by the logits at position t - 1, so column 0 can never be scored. Every token is
    predicted from all the tokens before it, prompt included; the mask only decides which
    predictions are added up.

    reduction="sum" (the default) is log p of the whole answer, the quantity the DPO paper's
    loss is written in. reduction="mean" divides by the number of answer tokens, as the
    book's DPO notebook does; it keeps long answers from dominating the rewards, but it is
    no longer the log-probability of anything. Returns a tensor of shape (batch,).
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be one of ('sum', 'mean'), got {reduction!r}")
    if input_ids.ndim != 2 or input_ids.shape != labels_mask.shape:
        raise ValueError(f"input_ids {tuple(input_ids.shape)} and labels_mask "
                         f"{tuple(labels_mask.shape)} must both be (batch, tokens)")
    mask = labels_mask.bool()
    if mask[:, 0].any():
        raise ValueError("labels_mask marks token 0, which nothing predicts: the first scored "
                         "token must come after at least one prompt token")
    counts = mask.sum(dim=1)
    if empty := (counts == 0).nonzero().flatten().tolist():
        raise ValueError(f"rows {empty} of labels_mask mark no tokens to score")
    context = getattr(getattr(model, "cfg", None), "context_length", None)
    if context is not None and input_ids.shape[1] - 1 > context:
        raise ValueError(f"{input_ids.shape[1]} tokens do not fit the context length {context}: "
                         f"collate with max_length={context}")
    scored = mask[:, 1:]  # (batch, T - 1): is the token predicted at this position scored?
    # Position t - 1 predicts token t. logits_at runs a GPTModel's output layer only where a
    # token is scored: in a small model it is most of the work (88% of the course model's
    # multiply-adds per token, 31% of GPT-2 124M's), and DPO needs no prompt or padding logits.
    logits = logits_at(model, input_ids[:, :-1], scored).float()  # (n_scored, vocab)
    # cross_entropy is -log_softmax(logits)[target], computed in one fused step
    token_logp = -F.cross_entropy(logits, input_ids[:, 1:][scored], reduction="none")
    rows = scored.nonzero()[:, 0]  # which sequence each scored token belongs to
    total = token_logp.new_zeros(input_ids.shape[0]).index_add(0, rows, token_logp)
    return total if reduction == "sum" else total / counts


def dpo_loss(pi_chosen: torch.Tensor, pi_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1,
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The DPO loss from the four log-probabilities of each pair, and the two rewards.

    Returns `(loss, chosen_reward, rejected_reward)` as the module's docstring writes them, the
    rewards per pair, shape (batch,), and detached (they are for logging). `logsigmoid`
    computes log σ(x) without overflow for large |x|.

    >>> loss, rc, rr = dpo_loss(*[torch.tensor([-5.0])] * 4)   # policy == reference
    >>> round(loss.item(), 4), rc.item(), rr.item()
    (0.6931, 0.0, 0.0)
    """
    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta}")
    shapes = {tuple(t.shape) for t in (pi_chosen, pi_rejected, ref_chosen, ref_rejected)}
    if len(shapes) != 1:
        raise ValueError(f"the four log-probability tensors differ in shape: {sorted(shapes)}")
    chosen_logratio = pi_chosen - ref_chosen
    rejected_logratio = pi_rejected - ref_rejected
    loss = -F.logsigmoid(beta * (chosen_logratio - rejected_logratio)).mean()
    return loss, (beta * chosen_logratio).detach(), (beta * rejected_logratio).detach()


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy of `model` in eval mode with every parameter frozen: a DPO reference.

    A copy, not the same object: the policy's updates must not move the reference.
    """
    return copy.deepcopy(model).eval().requires_grad_(False)


def _batch_dpo(policy, reference, batch, beta, reduction):
    """The DPO loss and rewards of a batch; each model scores its chosen and rejected rows
    in one forward pass."""
    device = next(policy.parameters()).device
    n = batch["chosen"].shape[0]
    ids = torch.cat([batch["chosen"], batch["rejected"]]).to(device)
    mask = torch.cat([batch["chosen_mask"], batch["rejected_mask"]]).to(device)
    pi = sequence_logprob(policy, ids, mask, reduction)
    with torch.no_grad():
        ref = sequence_logprob(reference, ids, mask, reduction)
    return dpo_loss(pi[:n], pi[n:], ref[:n], ref[n:], beta)


@torch.no_grad()
def evaluate_dpo(policy: nn.Module, reference: nn.Module, batches: Iterable[dict], *,
                 beta: float = 0.1, max_batches: int | None = None,
                 reduction: str = "sum") -> dict[str, float]:
    """Mean loss, chosen and rejected rewards, margin and accuracy over (some of) `batches`,
    without dropout. The margin is chosen reward - rejected reward; the accuracy is the
    fraction of pairs whose margin is positive.
    """
    losses, chosen, rejected = [], [], []
    with eval_mode(policy):
        for batch in islice(batches, max_batches):
            loss, rc, rr = _batch_dpo(policy, reference, batch, beta, reduction)
            losses.append(loss.item())
            chosen.append(rc)
            rejected.append(rr)
    if not losses:
        raise ValueError("no batches to evaluate")
    rc, rr = torch.cat(chosen), torch.cat(rejected)
    return {"loss": sum(losses) / len(losses), "chosen_reward": rc.mean().item(),
            "rejected_reward": rr.mean().item(), "margin": (rc - rr).mean().item(),
            "accuracy": (rc > rr).float().mean().item()}


def train_dpo(policy: nn.Module, reference: nn.Module, train_loader: Iterable[dict],
              val_loader: Iterable[dict], *, epochs: int | None = None, steps: int | None = None,
              lr: float = 5e-6, beta: float = 0.1, weight_decay: float = 0.01,
              eval_every: int = 5, eval_batches: int | None = 5, reduction: str = "sum",
              disable_dropout: bool = True,
              on_eval: Callable[[int], None] | None = None) -> dict[str, list]:
    """Train `policy` with the DPO loss against the frozen `reference`; returns the history.

    Give either `epochs` (passes over `train_loader`) or `steps` (batches). Evaluates before
    the first step and then every `eval_every` steps and at the end, on `eval_batches` batches
    of each loader. The history has `step` and, for `train_` and `val_`, the `loss`,
    `chosen_reward`, `rejected_reward`, `margin` and `accuracy` at each evaluation.

    The defaults (AdamW, lr 5e-6, weight decay 0.01, beta 0.1) are those of the book's DPO
    notebook. With `disable_dropout` the policy trains without dropout, as the reference
    scores without it: otherwise the two differ at step 0 by dropout noise alone, and the
    rewards measure that noise as well as learning.
    """
    if policy is reference:
        raise ValueError("the reference must be a separate frozen copy of the policy "
                         "(frozen_copy(policy)); training the policy would move it too")
    if (epochs is None) == (steps is None):
        raise ValueError(f"give exactly one of epochs and steps, got epochs={epochs}, "
                         f"steps={steps}")
    count = epochs if epochs is not None else steps
    if count < 1 or eval_every < 1:
        raise ValueError(f"epochs/steps ({count}) and eval_every ({eval_every}) must be >= 1")
    total = steps if steps is not None else epochs * len(train_loader)
    reference.eval()
    trainable = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay)

    def step_fn(batch: dict) -> None:
        _batch_dpo(policy, reference, batch, beta, reduction)[0].backward()

    def evaluate_fn(state: FitState) -> dict:
        record = {}
        for split, loader in (("train", train_loader), ("val", val_loader)):
            res = evaluate_dpo(policy, reference, loader, beta=beta, max_batches=eval_batches,
                               reduction=reduction)  # loss, rewards, margin, accuracy
            record.update({f"{split}_{name}": value for name, value in res.items()})
        return record

    was_training = policy.training
    history = fit(policy, step_fn, cycle(train_loader), steps=total, optimizer=optimizer,
                  evaluate_fn=evaluate_fn, eval_every=eval_every, evaluate_first=True,
                  dropout=not disable_dropout, desc="DPO",
                  postfix={"loss": "{val_loss:.3f}", "margin": "{val_margin:.2f}"},
                  on_eval=on_eval and (lambda state: on_eval(state.step)))
    policy.train(was_training)
    if history["step"][-1] == 0:
        raise ValueError("train_loader yielded no batches")
    return history
