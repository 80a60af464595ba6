"""Full fine-tuning against LoRA on Meeting 6's two tasks, trained side by side in one run.

    BUILDLLM_MIRROR=../shared/data python Supporting/tools/benchmark_finetune.py

Prints a Markdown table for Meeting-6/README.md with, per task and method: the test score,
the trainable parameters, memory and the time per training step.

- spam: `buildllm.classify`'s balanced SMS spam split and classification head. "full" trains
  every parameter; "LoRA" trains the A and B matrices of every block's linear layers plus the
  new head (it starts random, so it must learn). Score: accuracy on the test messages.
- instructions: `buildllm.instruct`'s split of the book's instruction data, batches from its
  `collate` with padding and prompts left out of the loss (`answer_loss`). "full" trains every
  parameter, "LoRA" only A and B. Scores: mean ROUGE-L and token F1 (`buildllm.metrics`) of
  greedy answers to the test entries, and the loss on the validation answers (the course's
  small model needs far longer training than this before its answers share more than stray
  words with the references, so the loss is the finer measure there).

Both methods start from the same pretrained weights (GPT-2 where its weights can be had,
otherwise the course's model, see `buildllm.pretrained`) and see the same batches in the same
order. Their steps alternate (full, LoRA, full, LoRA...), so a change in the machine's load hits
both, and the time per step is the median: forward, loss, backward and AdamW's update.

Memory, in two parts, counted from the tensors themselves on any device:
- weights + grads + AdamW: every parameter, the gradients of the trainable ones and AdamW's two
  running averages per trainable number, after the last step. This is what LoRA shrinks.
- saved activations: what autograd keeps from the forward pass for the backward pass, in the
  first step (`torch.autograd.graph.saved_tensors_hooks`, each storage once, parameters left
  out). LoRA does not shrink it: the gradient must still flow back through every block.
Neither counts allocator overhead or short-lived temporaries. On a CUDA device a third column
gives the measured peak of a step: `torch.cuda.max_memory_allocated` over the step, less what
the other method's tensors held.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from buildllm.classify import (
    SpamDataset,
    accuracy,
    add_classification_head,
    class_logits,
    load_spam,
    split_frame,
)
from buildllm.data import gpt2_encoding
from buildllm.instruct import (
    InstructionDataset,
    answer_loss,
    collate,
    evaluate_responses,
    load_instructions,
)
from buildllm.lora import add_lora, trainable_parameters
from buildllm.pretrained import course_model, gpt2_or_course_model
from buildllm.progress import tqdm
from buildllm.training import evaluate, param_groups
from buildllm.utils import get_device, set_seed

Batch = tuple[torch.Tensor, torch.Tensor]
LossFn = Callable[[nn.Module, Batch], torch.Tensor]


@dataclass
class Run:
    """One method's model and optimizer, and what was measured while it trained."""

    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    seconds: list[float] = field(default_factory=list)
    activation_bytes: int = 0
    cuda_peak_bytes: int | None = None


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes of all parameters, the gradients that exist, and the optimizer's state tensors."""
    params = list(model.parameters())  # a tied weight once
    grads = [p.grad for p in params if p.grad is not None]
    states = [t for s in optimizer.state.values() for t in s.values()
              if torch.is_tensor(t) and t.ndim > 0]  # AdamW's step counter is a 0-d scalar
    return tensor_bytes(params) + tensor_bytes(grads) + tensor_bytes(states)


def saved_activation_bytes(model: nn.Module, loss_fn: LossFn,
                           batch: Batch) -> tuple[torch.Tensor, int]:
    """The loss of `batch`, and the bytes autograd saved for the backward pass computing it.

    Each storage counts once (a view shares its base's memory) and parameters do not count:
    they live in memory anyway.
    """
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn(model, batch)
    return loss, sum(saved.values())


def train_step(run: Run, loss_fn: LossFn, batch: Batch, first: bool, others: list[Run]) -> None:
    """One timed step: forward, loss, backward, AdamW. Also measures memory on the first."""
    cuda = batch[0].is_cuda
    if cuda:
        torch.cuda.synchronize()
        held_by_others = sum(state_bytes(o.model, o.optimizer) for o in others)
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    run.optimizer.zero_grad(set_to_none=True)
    if first:
        loss, run.activation_bytes = saved_activation_bytes(run.model, loss_fn, batch)
    else:
        loss = loss_fn(run.model, batch)
    loss.backward()
    run.optimizer.step()
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - held_by_others
        run.cuda_peak_bytes = max(run.cuda_peak_bytes or 0, peak)
    run.seconds.append(time.perf_counter() - start)


def train_side_by_side(runs: list[Run], loss_fn: LossFn, batches: Iterator[Batch], steps: int,
                       device: torch.device, desc: str) -> None:
    """Train every run on the same `steps` batches, alternating runs within each step."""
    for run in runs:
        run.model.train()
    for step in tqdm(range(steps), desc=desc):
        batch = tuple(t.to(device) for t in next(batches))
        for run in runs:
            train_step(run, loss_fn, batch, step == 0, [o for o in runs if o is not run])


def cycle(loader: DataLoader) -> Iterator[Batch]:
    while True:
        yield from loader


def make_runs(base: nn.Module, prepare: Callable[[nn.Module], nn.Module], *, rank: int,
              alpha: float, lr_full: float, lr_lora: float, device: torch.device,
              unfreeze: Callable[[nn.Module], list[nn.Module]] = lambda m: []) -> list[Run]:
    """Two copies of `base`: every parameter trainable, and LoRA (plus what `unfreeze` names)."""
    runs = []
    for name, lr in (("full", lr_full), (f"LoRA r={rank}", lr_lora)):
        set_seed(123)
        model = prepare(copy.deepcopy(base)).to(device)
        model.requires_grad_(True)
        if name != "full":
            add_lora(model, rank=rank, alpha=alpha)
            for part in unfreeze(model):
                part.requires_grad_(True)
        optimizer = torch.optim.AdamW(param_groups(model, 0.1), lr=lr)
        runs.append(Run(name, model, optimizer))
    return runs


def spam_task(base: nn.Module, args, device: torch.device) -> tuple[list[Run], list[str]]:
    enc = gpt2_encoding()
    train, _val, test = split_frame(load_spam())
    train_set = SpamDataset(train, enc)
    test_set = SpamDataset(test.iloc[: args.test_examples], enc, max_length=train_set.max_length)
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(123))
    runs = make_runs(base, add_classification_head, rank=args.rank, alpha=args.alpha,
                     lr_full=args.spam_lr_full, lr_lora=args.spam_lr_lora, device=device,
                     unfreeze=lambda m: [m.out_head])

    def loss_fn(model, batch):
        return F.cross_entropy(class_logits(model, batch[0]), batch[1])

    train_side_by_side(runs, loss_fn, cycle(loader), args.steps, device, "spam")
    scores = [f"accuracy {accuracy(r.model, DataLoader(test_set, batch_size=32)):.1%}"
              for r in runs]
    return runs, scores


def instruction_task(base: nn.Module, args, device: torch.device) -> tuple[list[Run], list[str]]:
    enc = gpt2_encoding()
    train, val, test = load_instructions()
    batches = partial(collate, max_length=min(args.max_length, base.cfg.context_length),
                      mask_prompt=True)  # the loss, and so the validation loss, is the answers'
    loader = DataLoader(InstructionDataset(train, enc), batch_size=args.batch_size, shuffle=True,
                        drop_last=True, generator=torch.Generator().manual_seed(123),
                        collate_fn=batches)
    val_loader = DataLoader(InstructionDataset(val[: args.val_examples], enc), batch_size=8,
                            collate_fn=batches)
    runs = make_runs(base, lambda m: m, rank=args.rank, alpha=args.alpha,
                     lr_full=args.instruct_lr_full, lr_lora=args.instruct_lr_lora, device=device)
    train_side_by_side(runs, lambda m, b: answer_loss(m, *b), cycle(loader), args.steps, device,
                       "instructions")
    scores = []
    for run in runs:
        run.model.eval()
        answers = evaluate_responses(run.model, enc, test[: args.test_examples],
                                     max_new_tokens=args.max_new_tokens, progress=False)
        scores.append(f"ROUGE-L {answers['rouge_l']:.3f}, token F1 {answers['token_f1']:.3f}, "
                      f"val loss {evaluate(run.model, val_loader):.2f}")
    return runs, scores


TASKS = {"spam": spam_task, "instructions": instruction_task}


def rows(task: str, runs: list[Run], scores: list[str], cuda: bool) -> list[list[str]]:
    """The table's cells for one task, one row per method."""
    total = sum(p.numel() for p in runs[0].model.parameters())
    lines = []
    for run, score in zip(runs, scores, strict=True):
        n = trainable_parameters(run.model)
        cells = [task, run.name, f"{n:,} ({n / total:.2%})", score,
                 f"{state_bytes(run.model, run.optimizer) / 1e6:.1f}",
                 f"{run.activation_bytes / 1e6:.1f}"]
        if cuda:
            cells.append(f"{run.cuda_peak_bytes / 1e6:.1f}")
        cells.append(f"{statistics.median(run.seconds) * 1e3:.0f}")
        lines.append(cells)
    return lines


def table(body: list[list[str]], cuda: bool) -> str:
    """A Markdown table of `rows`."""
    header = ["task", "fine-tuning", "trainable parameters", "test score",
              "weights + grads + AdamW (MB)", "saved activations (MB)"]
    if cuda:
        header.append("CUDA peak of a step (MB)")
    header.append("time per step (ms)")
    lines = [header, ["---"] * len(header), *body]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="124M",
                        help="a GPT-2 size (the course's model if its weights cannot be had), "
                             "or 'course' for the course's model")
    parser.add_argument("--tasks", default="spam,instructions", help="comma-separated: " +
                        ", ".join(TASKS))
    parser.add_argument("--steps", type=int, default=130, help="training steps per method")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16)
    # Learning rates picked from a few tries each on the course's model (LoRA wants 3 to 10x
    # more than full fine-tuning); the book fine-tunes GPT-2 at 5e-5.
    parser.add_argument("--spam-lr-full", type=float, default=1e-4)
    parser.add_argument("--spam-lr-lora", type=float, default=1e-3)
    parser.add_argument("--instruct-lr-full", type=float, default=1e-3)
    parser.add_argument("--instruct-lr-lora", type=float, default=3e-3)
    parser.add_argument("--max-length", type=int, default=256,
                        help="instruction batches are cut to this many tokens")
    parser.add_argument("--test-examples", type=int, default=None,
                        help="score on the first N test messages / instructions (default: all)")
    parser.add_argument("--val-examples", type=int, default=None,
                        help="validation loss on the first N validation entries (default: all)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    tasks = args.tasks.split(",")
    unknown = set(tasks) - set(TASKS)
    if unknown:
        parser.error(f"unknown tasks {sorted(unknown)}; choose from {list(TASKS)}")
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")

    torch.set_num_threads(args.threads)
    device = get_device()
    base, model_name = ((course_model(), "the course model") if args.model == "course"
                        else gpt2_or_course_model(args.model))
    cuda = device.type == "cuda"
    body = []
    for task in tasks:
        runs, scores = TASKS[task](base, args, device)
        body += rows(task, runs, scores, cuda)
        del runs  # free both models before the next task
    where = (torch.cuda.get_device_name() if device.type == "cuda"
             else f"{platform.processor() or platform.machine()}, {args.threads} "
                  f"thread{'s' * (args.threads != 1)}")
    print(f"\n{model_name}, {args.steps} steps of batch {args.batch_size} per method, "
          f"LoRA rank {args.rank}, alpha {args.alpha:g}; {device.type} ({where}); "
          f"torch {torch.__version__}\n")
    print(table(body, cuda))


if __name__ == "__main__":
    main()
