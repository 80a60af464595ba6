"""Instruction fine-tuning (Meeting 6): prompts, batches with masked targets, training, answers.

A pretrained GPT continues text. Shown many examples written in one fixed layout, an
instruction, maybe an input, then a response, it learns to write the response part itself.
The layout is Stanford Alpaca's (Taori et al., 2023), as in chapter 7 of the book:

    Below is an instruction that describes a task. Write a response that appropriately
    completes the request.

    ### Instruction:
    Rewrite the sentence in the passive voice.

    ### Input:
    The chef cooked the meal.

    ### Response:
    The meal was cooked by the chef.<|endoftext|>

Training is still next-token prediction. `collate` builds the targets so that padding costs
nothing, the end-of-text token teaches the model to stop, and optionally the prompt's own
tokens are not predicted either, so the loss measures only the answers.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .data import fetch, gpt2_encoding
from .generation import generate
from .inference import generate_batch, pad_ids
from .metrics import mean_score, rouge_l, token_f1
from .model import GPTModel
from .tokenizers import Tokenizer
from .training import LOSSES, FitState, cycle, evaluate, fit, param_groups, token_step

__all__ = [
    "END_OF_TEXT", "INPUT_HEADER", "INSTRUCTION_HEADER", "PREAMBLE", "RESPONSE_HEADER",
    "InstructionDataset", "answer_loss", "collate", "encode_example", "end_of_text_id",
    "evaluate_responses", "finetune", "format_prompt", "format_response", "load_instructions",
    "logits_at", "prompt_ids", "render_turns", "respond", "respond_all", "split_entries",
    "visible_answer",
]

END_OF_TEXT = 50256  # GPT-2's <|endoftext|>, which also serves as its padding token
PREAMBLE = ("Below is an instruction that describes a task. "
            "Write a response that appropriately completes the request.")
INSTRUCTION_HEADER = "\n\n### Instruction:\n"
INPUT_HEADER = "\n\n### Input:\n"
RESPONSE_HEADER = "\n\n### Response:\n"


def end_of_text_id(enc: Tokenizer) -> int:
    """`enc.eot_token` (50256 for GPT-2), checked: answers end with it, so a tokenizer
    without it (a Meeting-2 BPETokenizer trained without it) cannot be instruction-tuned."""
    if enc.eot_token is None:
        raise ValueError(f"{type(enc).__name__} has no <|endoftext|> token; train a BPETokenizer "
                         "with special_tokens=['<|endoftext|>'] to instruction-tune with it")
    return enc.eot_token


def _field(entry: dict, key: str) -> str:
    if not isinstance(entry, dict) or key not in entry:
        raise ValueError(f"an instruction entry needs an {key!r} field, got {entry!r}")
    return entry[key]


def format_prompt(entry: dict) -> str:
    """The Alpaca-style prompt: preamble, instruction, and the input section if there is one.

    >>> print(format_prompt({"instruction": "Name a colour.", "input": ""}))
    Below is an instruction that describes a task. Write a response that appropriately completes the request.
    <BLANKLINE>
    ### Instruction:
    Name a colour.
    """  # noqa: E501
    text = PREAMBLE + INSTRUCTION_HEADER + _field(entry, "instruction")
    if entry.get("input"):  # about 40% of the entries have no input; then it is left out
        text += INPUT_HEADER + entry["input"]
    return text


def format_response(entry: dict) -> str:
    """The response section that follows the prompt: a header, then the answer.

    >>> format_response({"output": "Blue."})
    '\\n\\n### Response:\\nBlue.'
    """
    return RESPONSE_HEADER + _field(entry, "output")


def prompt_ids(entry: dict, enc) -> list[int]:
    """The tokens a model is given to answer `entry`: the prompt and the response header.

    Prompt and header are encoded separately, so these are exactly the first tokens of
    `encode_example` and a model sees at answer time what it saw in training.
    """
    return enc.encode(format_prompt(entry)) + enc.encode(RESPONSE_HEADER)


def render_turns(system: str, turns: Sequence[dict]) -> list[str | None]:
    """A conversation (`buildllm.chat`) in this layout, as text pieces each encoded on its own
    (one user message gives the pieces `prompt_ids` encodes), with None where an
    <|endoftext|> token ends each answer.

    >>> render_turns("Be brief.", [{"role": "user", "content": "Hi"}])
    ['Be brief.\\n\\n### Instruction:\\nHi', '\\n\\n### Response:\\n']
    """
    pieces: list[str | None] = []
    head = system  # the system prompt leads the first piece, as the preamble leads format_prompt
    for m in turns:
        if m["role"] == "user":
            pieces.append(head + INSTRUCTION_HEADER + m["content"])
        else:
            pieces += [head + RESPONSE_HEADER, m["content"], None]
        head = ""
    return pieces + [RESPONSE_HEADER]


def visible_answer(text: str, final: bool = False) -> tuple[str, bool]:
    """The part of a reply being written that is sure to stay, and whether the reply has ended.

    The finished answer is the text before the first "###" (a new section: the model is done
    answering), stripped of surrounding whitespace; models that have not learned to stop
    write one. While tokens still arrive, hold back what may yet change: a character still
    split across tokens (U+FFFD for now), one or two "#" that may become "###", and trailing
    whitespace that a final strip would remove.

    >>> visible_answer("  Paris.\\n\\n##")
    ('Paris.', False)
    >>> visible_answer(" Paris.\\n\\n### Instruction:")
    ('Paris.', True)
    """
    answer, marker, _ = text.partition("###")
    if marker or final:
        return answer.strip(), bool(marker)
    return answer.rstrip("\ufffd").rstrip("#").strip(), False


def encode_example(entry: dict, enc) -> tuple[list[int], int]:
    """(token ids of prompt + header + answer, number of tokens before the answer)."""
    given = prompt_ids(entry, enc)
    return given + enc.encode(_field(entry, "output")), len(given)


def load_instructions(seed: int | None = 123) -> tuple[list[dict], list[dict], list[dict]]:
    """The book's 1,100 instruction examples, shuffled and split 85% / 5% / 10%.

    Returns (train, validation, test): 935, 55 and 110 entries, the book's sizes. Each entry
    is a dict with "instruction", "input" (often "") and "output". With `seed=None` the file
    order is kept, which gives exactly the book's split.
    """
    return split_entries(json.loads(fetch("instruction-data.json").read_text(encoding="utf-8")),
                         seed)


def split_entries(data: list, seed: int | None = 123) -> tuple[list, list, list]:
    """Shuffle a copy of `data` with `seed` (None: keep the order) and cut it as the book does.

    Returns (train, validation, test) with 85%, the rest, and 10% of the entries, sliced in
    the book's order. The preference data (`buildllm.dpo`) is cut by this too: it holds the
    same entries in the same order, so its held-out prompts are these.
    """
    data = list(data)
    if seed is not None:
        random.Random(seed).shuffle(data)
    n_train, n_test = int(0.85 * len(data)), int(0.10 * len(data))
    return data[:n_train], data[n_train + n_test:], data[n_train:n_train + n_test]


class InstructionDataset(torch.utils.data.Dataset):
    """Instruction entries, tokenized once by `encode`; item i is (token ids, prompt length).

    The prompt length (preamble, instruction, input and response header) is kept so that
    `collate(..., mask_prompt=True)` can leave exactly those tokens out of the loss.
    """

    encode = staticmethod(encode_example)  # one entry's tokens (dpo.PreferenceDataset's: a pair)

    def __init__(self, entries: Sequence[dict], enc):
        self.entries = list(entries)
        self.examples = [self.encode(e, enc) for e in self.entries]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int):
        return self.examples[i]


def collate(batch: Sequence[tuple[Sequence[int], int]], pad_id: int = END_OF_TEXT,
            ignore_index: int = -100, max_length: int | None = None,
            mask_prompt: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad a batch of (token ids, prompt length) pairs into inputs and targets.

    Each sequence gets one `pad_id` appended (the end-of-text token: GPT-2's by default,
    `end_of_text_id(enc)` for another tokenizer), then all are padded with it to the
    longest. Inputs are the tokens, targets the same shifted left by one. Targets past each
    sequence's end-of-text become `ignore_index`, which `F.cross_entropy` skips, so padding
    adds nothing to the loss; the end-of-text itself stays a target, which is how the model
    learns to stop. With `mask_prompt`, the targets that are prompt tokens become
    `ignore_index` too. `max_length` then cuts both to that many tokens.

    >>> inputs, targets = collate([([1, 2, 3], 2), ([4], 1)])
    >>> inputs.tolist(), targets.tolist()
    ([[1, 2, 3], [4, 50256, 50256]], [[2, 3, 50256], [50256, -100, -100]])
    """
    if not batch:
        raise ValueError("collate needs at least one example, got an empty batch")
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be at least 1, got {max_length}")
    # inputs: the longest sequence, eot appended, less 1
    inputs = pad_ids([ids for ids, _ in batch], pad_id)[0]
    targets = torch.full_like(inputs, ignore_index)
    for row, (ids, n_prompt) in enumerate(batch):
        n = len(ids)
        if n == 0:
            raise ValueError(f"example {row} of the batch has no tokens")
        if not 0 <= n_prompt <= n:
            raise ValueError(f"example {row}: prompt length {n_prompt} is not within 0..{n}")
        targets[row, : n - 1] = inputs[row, 1:n]
        targets[row, n - 1] = pad_id  # the end-of-text: "the answer ends here"
        if mask_prompt:
            targets[row, : max(n_prompt - 1, 0)] = ignore_index  # targets 0..P-2 are prompt tokens
    if max_length is not None:
        inputs, targets = inputs[:, :max_length], targets[:, :max_length]
    return inputs, targets


def answer_loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                ignore_index: int = -100) -> torch.Tensor:
    """Mean cross entropy over the targets that count, computing logits only for those.

    The same number as `buildllm.training.batch_loss`, but the output layer is most of a
    small GPT's work (GPT-2's vocabulary has 50,257 entries), and with the prompt masked
    about four positions in five would be computed only to be skipped.
    """
    keep = targets != ignore_index
    if not keep.any():
        raise ValueError(f"every target in this batch is ignore_index ({ignore_index}): "
                         "there is nothing to learn from it")
    return F.cross_entropy(logits_at(model, inputs, keep).float(), targets[keep])


def logits_at(model: nn.Module, inputs: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The logits (n, vocab) of the n positions where `keep` (batch, tokens) is True.

    `model(inputs)[keep]`, but a GPTModel (and so GPT-2) runs its output layer only at the
    kept positions (`GPTModel.forward`'s `keep`), so the others' logits are never computed.
    Instruction tuning and DPO need few of them.
    """
    if isinstance(model, GPTModel):
        return model(inputs, keep=keep)
    return model(inputs)[keep]


def finetune(model: nn.Module, train_data: Sequence[dict], val_data: Sequence[dict], *,
             epochs: float, lr: float, batch_size: int, mask_prompt: bool, enc=None,
             weight_decay: float = 0.1, eval_every: int = 20, eval_batches: int | None = 5,
             max_length: int | None = None, seed: int = 123) -> dict[str, list]:
    """Fine-tune `model` on instruction entries with AdamW; returns the loss history.

    The loop is `buildllm.training.fit`, with `answer_loss` for Meeting 5's `batch_loss`, so
    a model with frozen weights (LoRA, say) trains just its adapters. `epochs` may be a
    fraction (0.5: half the batches of one epoch). Every `eval_every` steps the loss is
    measured, with the same masking as training, on the first `eval_batches` batches of each
    split (None: all). `enc` (default GPT-2's) may be any tokenizer with <|endoftext|>.
    History: "step", "epoch", "tokens" (input tokens seen, padding included), "train_loss",
    "val_loss", and "seconds" spent training so far, evaluations left out.
    """
    if epochs <= 0 or lr <= 0 or batch_size < 1 or eval_every < 1:
        raise ValueError(f"need epochs > 0, lr > 0, batch_size >= 1 and eval_every >= 1; got "
                         f"epochs={epochs}, lr={lr}, batch_size={batch_size}, "
                         f"eval_every={eval_every}")
    enc = gpt2_encoding() if enc is None else enc
    length = model.cfg.context_length if max_length is None else max_length
    batches = partial(collate, pad_id=end_of_text_id(enc), max_length=length,
                      mask_prompt=mask_prompt)
    train_loader = torch.utils.data.DataLoader(
        InstructionDataset(train_data, enc), batch_size=batch_size, shuffle=True,
        drop_last=True, collate_fn=batches, generator=torch.Generator().manual_seed(seed))
    val_loader = torch.utils.data.DataLoader(
        InstructionDataset(val_data, enc), batch_size=batch_size, collate_fn=batches)
    if len(train_loader) == 0 or len(val_loader) == 0:
        raise ValueError(f"{len(train_data)} training entries make no full batch of "
                         f"{batch_size}, or there are no validation entries ({len(val_data)})")
    steps = max(1, round(epochs * len(train_loader)))
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr)

    def evaluate_fn(state: FitState) -> dict:
        return {"epoch": state.step / len(train_loader), "tokens": state.seen,
                "train_loss": evaluate(model, train_loader, eval_batches, answer_loss),
                "val_loss": evaluate(model, val_loader, eval_batches, answer_loss),
                "seconds": state.seconds}

    return fit(model, partial(token_step, model, answer_loss), cycle(train_loader), steps=steps,
               optimizer=optimizer, evaluate_fn=evaluate_fn, eval_every=eval_every,
               postfix=LOSSES, desc="fine-tuning")


def _answer(enc, new_ids: list[int], eot: int) -> str:
    """The answer in generated ids: up to the first end-of-text `eot`, cut by visible_answer."""
    ended = new_ids[: new_ids.index(eot)] if eot in new_ids else new_ids
    return visible_answer(enc.decode(ended), final=True)[0]


def respond(model: nn.Module, enc, entry: dict, max_new_tokens: int = 64, **sampling) -> str:
    """The model's answer to `entry`: generated after the prompt, cut at the end of the answer.

    The text is also cut where a new "###" section would begin, which models that have not
    learned to stop write. `sampling` goes to `buildllm.generation.generate`; default greedy.
    """
    device, eot = next(model.parameters()).device, end_of_text_id(enc)
    ids = torch.tensor([prompt_ids(entry, enc)], device=device)
    out = generate(model, ids, max_new_tokens, eos_id=eot, **sampling)
    return _answer(enc, out[0, ids.shape[1]:].tolist(), eot)


def respond_all(model: nn.Module, enc, entries: Sequence[dict], max_new_tokens: int = 64,
                batch_size: int = 32, progress: bool = True, **sampling) -> list[str]:
    """`respond` to every entry, `batch_size` entries at a time; the answers in entry order.

    A token for a batch costs little more than for one prompt (reading the weights
    dominates), so this is several times faster. Prompts are sorted by length so that
    little padding is needed. Each answer is `respond`'s (see `generate_batch`).
    """
    from .progress import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    eot = end_of_text_id(enc)
    prompts = [prompt_ids(e, enc) for e in entries]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers = [""] * len(entries)
    with tqdm(total=len(entries), desc="answering", disable=not progress) as bar:
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            new = generate_batch(model, [prompts[i] for i in chunk], max_new_tokens,
                                 eos_id=eot, **sampling)
            for i, ids in zip(chunk, new, strict=True):
                answers[i] = _answer(enc, ids, eot)
            bar.update(len(chunk))
    return answers


def evaluate_responses(model: nn.Module, enc, entries: Sequence[dict], max_new_tokens: int = 64,
                       progress: bool = True, **sampling) -> dict:
    """Answer every entry (with `respond_all`) and score the answers against the references.

    Returns {"rouge_l": mean ROUGE-L F1, "token_f1": mean token F1, "responses": the answers}.
    """
    if not entries:
        raise ValueError("no entries to evaluate")
    references = [_field(e, "output") for e in entries]
    responses = respond_all(model, enc, entries, max_new_tokens, progress=progress, **sampling)
    return {"rouge_l": mean_score(rouge_l, responses, references),
            "token_f1": mean_score(token_f1, responses, references),
            "responses": responses}
