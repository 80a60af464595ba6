"""The pretraining command (Meeting 5): train GPTModel on your own text, resumably, on N devices.

    python -m buildllm.pretrain shakespeare.txt --tokenizer char --steps 2000 --out runs/char
    python -m buildllm.pretrain shakespeare.txt --tokenizer char --model qwen3-cpu-tiny --out runs/q
    python -m buildllm.pretrain books/ --model cpu-small --dtype bf16 --out runs/books
    python -m buildllm.pretrain books/ --model cpu-small --dtype fp16 --out runs/t4   # a T4
    python -m buildllm.pretrain --out runs/books --resume     # after a crash, or Ctrl-C
    python -m buildllm.pretrain --config-file run.json --lr 3e-4   # flags override the file

Inputs are text files, or folders whose *.txt files (recursively, sorted) are read as
separate documents. --model names a GPTModel configuration (`buildllm.model.CONFIGS`) or a
modern decoder's (`buildllm.decoder.CONFIGS`: llama3-cpu-tiny, qwen3-cpu-small...), which
trains a `buildllm.decoder.Decoder`; the run folder records which, so every command loads it.
--optimizer muon trains the blocks' matrices with Muon, the rest with AdamW (`buildllm.muon`).
The tokenizer is GPT-2's (`gpt2`, documents joined by <|endoftext|>), one token per character
(`char`), or a BPE tokenizer saved in Meeting 2 (its json's path). The last --val-fraction
of the tokens is held out for validation. `--help` lists every setting; a --config-file is a
JSON object of the same settings (`{"lr": 3e-4, ...}`, names with underscores), or a previous
run's run.json.

Several processes, one per device, train one model together with PyTorch's
DistributedDataParallel: each process draws its own share of the data and their gradients
are averaged. Start them with torchrun, e.g. on a node with 8 GPUs (nccl), or on a CPU with
2 processes (gloo):

    torchrun --nproc-per-node 8 -m buildllm.pretrain books/ --model 124M --dtype bf16 --out runs/gpt
    torchrun --nproc-per-node 2 -m buildllm.pretrain shakespeare.txt --tokenizer char --out runs/ddp

--batch-size is per process and per micro-step: one optimizer step sees
batch-size × grad-accum × processes windows. Process 0 alone prints, logs and writes files.

--resume takes every setting from the checkpoint unless a flag changes it, and refuses a change
that would alter the run (the model, the tokens, the learning rate...). The data order follows
from the seed and the checkpoint records where each process is in it, so on a CPU a resumed run
ends with exactly the weights it would have had without the interruption.

What lands in --out:
    log.jsonl         one JSON object per event: start, eval (step, tokens, train_loss,
                      val_loss, lr, tokens_per_s, mfu), checkpoint, skip, stop, end
    loss.png          train and validation loss, redrawn at each evaluation
    checkpoint.pt     everything --resume needs (model, optimizer, scheduler, step, each
                      process's random number generators and data position, the settings),
                      replaced atomically: a run killed at any moment leaves the last one whole
    model.safetensors, run.json (and tokenizer.json, for a BPE tokenizer): the final model
                      as a run folder, which `buildllm.runs.load_run` reads
    pretrain.lock     while the run writes: its process id and host. A second run into the
                      same --out is refused and names it; the lock of a run that died (its
                      process gone from this host) is taken over (`buildllm.utils.folder_lock`)

--dtype bf16 computes in bfloat16 autocast, or, on a GPU without bfloat16 units (Colab's T4),
in float16 autocast with a gradient scaler, and says so (`autocast_dtype`). MFU, the share of
the hardware's peak that the model's own arithmetic uses, is counted as `buildllm.costs` says.

Nothing is lost:
- A step whose loss or gradient is NaN or infinite never reaches a checkpoint. The run stops
  at the next evaluation or checkpoint with a message naming that step and the last good
  checkpoint, which it leaves as it was, and exits non-zero. --skip-nonfinite N skips such
  steps instead (no weight changes; the step still counts) and stops once more than N were.
- A full disk stops the run with "no space left on device" and the file's name; the last
  checkpoint stays whole. Free some space and --resume.

Bad input stops the run with one line before anything is written: a missing, empty,
non-UTF-8 or non-regular file (a pipe, /dev/zero), too little text, a setting that is not
finite or out of range (--lr inf), an --out that is a file or not writable, a model too big
for this machine's memory (`buildllm.costs.check_fits_in_memory`), a checkpoint from
another run...

    >>> model, summary = run(RunConfig(inputs=["shakespeare.txt"], tokenizer="char", steps=50))
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import math
import os
import time
from contextlib import nullcontext, suppress
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import NoReturn

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .costs import check_fits_in_memory, peak_flops
from .decoder import CONFIGS as DECODER_CONFIGS
from .decoder import Decoder, DecoderConfig, swiglu_hidden_dim
from .generation import generate
from .model import CONFIGS, GPTConfig, GPTModel, count_parameters, forward_flops_per_token
from .muon import MuonAdamW
from .pretrain_data import (
    InputError,
    WindowStream,
    encode_documents,
    eval_batches,
    make_tokenizer,
    read_texts,
    split_ids,
)
from .progress import tqdm
from .runs import (
    CHECKPOINT_FORMAT,
    DTYPES,
    RUN_FORMAT,
    config_record,
    new_model,
    read_checkpoint,
    save_run,
)
from .training import (
    AdamW,
    FitState,
    batch_loss,
    fit,
    param_groups,
    rng_state,
    save_checkpoint,
    set_rng_state,
    warmup_cosine,
    window_loss,
)
from .utils import (
    FolderInUse,
    atomic_leftovers,
    check_folder_lock,
    folder_lock,
    get_device,
    set_seed,
    write_atomically,
)

__all__ = ["MODELS", "FolderInUse", "InputError", "RunConfig", "RunStopped", "autocast_dtype",
           "main", "parse_config", "run"]

COMPUTE_DTYPES = {**DTYPES, "fp16": torch.float16}  # what --dtype may ask autocast for
LOCK = "pretrain.lock"  # in --out while a run writes there (buildllm.utils.folder_lock)
NEVER = 2**62  # the step of a non-finite loss that has not happened
# What --model may name: GPTModel's configs, then the decoders that are not GPT-2 again.
MODELS = {**CONFIGS, **{name: cfg for name, cfg in DECODER_CONFIGS.items()
                        if not name.startswith("gpt2-")}}


class RunStopped(RuntimeError):
    """The run stopped itself (it diverged, or the disk is full) and left its last checkpoint
    as it was: the message says which, and what to do."""


@dataclass
class RunConfig:
    """Every setting of a run; each is also a flag (`lr` is --lr, `n_layers` is --n-layers)."""

    inputs: list[str] = field(default_factory=list)  # text files and folders of .txt files
    tokenizer: str = "gpt2"  # "gpt2", "char", or the path of a Meeting-2 BPE json
    val_fraction: float = 0.1
    model: str = "cpu-tiny"  # a name in MODELS, GPTModel's or a Decoder's; the next 5 override it
    context_length: int | None = None
    emb_dim: int | None = None
    n_heads: int | None = None
    n_layers: int | None = None
    drop_rate: float | None = None
    batch_size: int = 16  # windows per process and micro-step
    grad_accum: int = 1  # micro-steps per optimizer step
    lr: float = 1e-3  # the peak learning rate, reached after warmup
    min_lr_ratio: float = 0.1  # the cosine ends at lr × this
    warmup_steps: int | None = None  # None: a tenth of the steps, at most 100
    steps: int = 2000  # optimizer steps
    weight_decay: float = 0.1
    beta2: float = 0.95  # AdamW's second-moment decay (nanoGPT's char recipe uses 0.99)
    optimizer: str = "adamw"  # or "muon": Muon for the blocks' matrices, AdamW for the rest
    clip: float = 1.0  # global gradient norm limit; 0 turns clipping off
    skip_nonfinite: int = 0  # steps with a NaN or infinite loss or gradient to skip; 0: stop
    eval_every: int = 200
    eval_batches: int = 20  # batches scored per split at each evaluation
    dtype: str = "fp32"  # "bf16" or "fp16" autocast (see autocast_dtype); weights stay float32
    device: str = "auto"  # auto, cpu, cuda or mps
    seed: int = 123
    out: str = "runs/pretrain"
    resume: bool = False
    checkpoint_every: int | None = None  # None: at every evaluation (and always at the end)
    sample_prompt: str | None = None  # print a continuation of it at every evaluation
    sample_tokens: int = 100
    save_dtype: str = "fp32"  # dtype of model.safetensors: fp32 or bf16 (half the size)

    def check(self, flags: bool = True) -> None:
        """Refuse a setting that cannot work (InputError), named as a flag or, with
        flags=False, as a Python name (the capstone's)."""
        check_settings(self, _rules(self), flags)

    def model_config(self, vocab_size: int) -> GPTConfig | DecoderConfig:
        """The config this run builds (a GPTConfig, or a Decoder's DecoderConfig): the named
        model with the settings that override it, refused in one line if they cannot fit."""
        changes = {k: getattr(self, k) for k in _MODEL_FIELDS if getattr(self, k) is not None}
        base = MODELS[self.model]
        if isinstance(base, DecoderConfig):
            changes = _decoder_sizes(base, changes)
        try:
            return replace(base, vocab_size=vocab_size, **changes)
        except ValueError as err:
            raise InputError(f"the model settings do not fit together: {err}") from None


# Settings that may change when a run is resumed: they do not change what it computes.
# (The inputs and tokenizer may too, as long as they give exactly the same tokens.)
_FREE_ON_RESUME = {"inputs", "tokenizer", "out", "resume", "device", "eval_every", "eval_batches",
                   "checkpoint_every", "sample_prompt", "sample_tokens", "save_dtype",
                   "skip_nonfinite"}
_MODEL_FIELDS = ("context_length", "emb_dim", "n_heads", "n_layers", "drop_rate")


def _decoder_sizes(base: DecoderConfig, changes: dict) -> dict:
    """`changes` with the sizes a decoder derives from emb_dim and n_heads derived again:
    head_dim = emb_dim / n_heads, and the feed-forward's hidden size (4·emb_dim, or SwiGLU's
    `swiglu_hidden_dim`, as the course's decoder configs choose it). n_kv_heads stays: a
    --n-heads it does not divide is refused."""
    if "emb_dim" in changes or "n_heads" in changes:
        changes = {"head_dim": None, **changes}
    if "emb_dim" in changes:
        swiglu = base.mlp == "swiglu" and isinstance(changes["emb_dim"], int)
        changes["hidden_dim"] = swiglu_hidden_dim(changes["emb_dim"]) if swiglu else None
    return changes


# -- checking the settings and the input, before anything is written ----------------------

def check_settings(obj, rules: list, flags: bool = True) -> None:
    """Raise InputError for the first (name, ok, wanted) rule that `obj`'s setting `name`
    breaks, naming the setting as a flag (--val-fraction) or, with flags=False, as Python
    does (val_fraction). A value of the wrong type breaks its rule too."""
    for name, ok, wanted in rules:
        value = getattr(obj, name)
        try:
            good = ok(value)
        except TypeError:  # a string where a number belongs, say
            good = False
        if not good:
            shown = f"--{name.replace('_', '-')}" if flags else name
            raise InputError(f"{shown} must be {wanted}, got {value!r}")


def whole_numbers(*names: str) -> list:
    """The rules that each of `names` is a whole number, at least 1."""
    return [(name, lambda v: isinstance(v, int) and v >= 1, "a whole number, at least 1")
            for name in names]


def _rules(cfg: RunConfig) -> list:
    return whole_numbers("batch_size", "grad_accum", "steps", "eval_every", "eval_batches",
                         "sample_tokens") + [
        ("model", lambda v: v in MODELS, f"one of {', '.join(MODELS)}"),
        ("seed", lambda v: isinstance(v, int) and 0 <= v < 2**32,
         "a whole number from 0 to 2**32 - 1 (NumPy's seeds)"),
        ("skip_nonfinite", lambda v: isinstance(v, int) and v >= 0, "a whole number, 0 or more"),
        # The comparisons also refuse NaN; the upper limits refuse infinity.
        ("val_fraction", lambda v: 0 < v < 1, "between 0 and 1"),
        ("lr", lambda v: v > 0, "above 0"),
        ("lr", lambda v: v <= 1, "at most 1 (AdamW moves a weight by about lr a step)"),
        ("min_lr_ratio", lambda v: 0 <= v <= 1, "between 0 and 1"),
        ("weight_decay", lambda v: 0 <= v * cfg.lr < 1, "0 or more, with --lr × --weight-decay "
                                                         "below 1 (the share of each weight a "
                                                         "step decays)"),
        ("beta2", lambda v: 0 <= v < 1, "in [0, 1)"),
        ("clip", lambda v: 0 <= v < math.inf, "0 (off) or more, and finite"),
        ("warmup_steps", lambda v: 0 <= _warmup(cfg) <= cfg.steps, "between 0 and --steps"),
        ("checkpoint_every", lambda v: v is None or v >= 1, "at least 1"),
        ("optimizer", lambda v: v in ("adamw", "muon"), "adamw or muon"),
        ("dtype", lambda v: v in COMPUTE_DTYPES, "fp32, bf16 or fp16"),
        ("save_dtype", lambda v: v in DTYPES, "fp32 or bf16"),
        ("device", lambda v: v in ("auto", "cpu", "cuda", "mps"), "auto, cpu, cuda or mps"),
        ("sample_prompt", lambda v: v != "", "some text (or left out)"),
    ]


def _warmup(cfg: RunConfig) -> int:
    return min(100, cfg.steps // 10) if cfg.warmup_steps is None else cfg.warmup_steps


@dataclass
class _Data:
    tokenizer: object
    spec: dict  # the tokenizer, as run.json records it
    train: torch.Tensor  # token ids
    val: torch.Tensor
    sha256: str  # of all the ids: a resumed run must see exactly the same tokens


def _load_data(cfg: RunConfig) -> _Data:
    texts = read_texts(cfg.inputs)
    tokenizer, spec = make_tokenizer(cfg.tokenizer, texts)
    ids = torch.tensor(encode_documents(tokenizer, texts), dtype=torch.long)
    data = _Data(tokenizer, spec, *split_ids(ids, cfg.val_fraction),
                 hashlib.sha256(ids.numpy().tobytes()).hexdigest())
    need = (cfg.context_length or MODELS[cfg.model].context_length) + 1
    for name, part, fix in (("training", data.train, "more text"),
                            ("validation", data.val, "more text or a larger --val-fraction")):
        if len(part) < need:
            raise InputError(
                f"the {name} split has {len(part):,} tokens of {len(ids):,}, fewer than one "
                f"window of context_length + 1 = {need}: use {fix}, or a smaller --context-length"
            )
    return data


def _check_out(out: Path) -> None:
    """Refuse an --out that cannot become a folder this run writes in: a file, a path inside
    a file, or a place this user may not write."""
    # os.path.exists, unlike Path.exists, says False where a folder may not be looked into
    if os.path.exists(out) and not os.path.isdir(out):
        raise InputError(f"--out {out} is a file, not a folder: choose a folder")
    existing = next(p for p in (out, *out.absolute().parents) if os.path.exists(p))
    if not os.path.isdir(existing):
        raise InputError(f"--out {out} cannot be made: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"--out {out}: this user may not write in {existing}: choose a folder "
                         "you can write in")


def _stat(path: Path) -> tuple[int, int] | None:
    """A file's size and modification time, to tell whether it changed; None if absent."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


def _encode_prompt(tokenizer, prompt: str) -> list[int]:
    try:
        return tokenizer.encode(prompt)
    except ValueError as err:
        raise InputError(f"--sample-prompt cannot be encoded: {err}") from None


# -- the device ------------------------------------------------------------------------

def _device(name: str, local_rank: int, world_size: int) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: PyTorch sees no CUDA GPU here")
    if name == "mps" and not torch.backends.mps.is_available():
        raise InputError("--device mps: this PyTorch has no MPS (Apple GPU) support")
    device = get_device(name=name)
    if device.type == "cuda" and world_size > 1:
        return torch.device("cuda", local_rank)  # one GPU per process
    if device.type == "mps" and world_size > 1:
        raise InputError("several processes cannot share one Apple GPU: use --device cpu")
    return device


def autocast_dtype(requested: str, device_type: str,
                   capability: tuple[int, int] | None = None) -> torch.dtype:
    """The dtype autocast computes in, for --dtype `requested` on this kind of device.

    `capability` is a CUDA GPU's compute capability, `torch.cuda.get_device_capability()`.
    bfloat16 units arrived with NVIDIA's Ampere generation, capability 8.0 (A100, A10, L4,
    RTX 30xx and later). Older GPUs, Colab's T4 (7.5) and the V100 (7.0) among them, only
    emulate bfloat16, slower than float32; their tensor cores do float16, which needs a
    gradient scaler so that small gradients do not underflow to 0. So bf16 becomes float16
    there. float16 autocast is for GPUs: on a CPU, fp16 computes in float32.

    >>> autocast_dtype("bf16", "cuda", (7, 5))  # a T4
    torch.float16
    >>> autocast_dtype("bf16", "cuda", (8, 0))  # an A100
    torch.bfloat16
    """
    if requested == "bf16" and device_type == "cuda" and capability is not None \
            and tuple(capability) < (8, 0):
        return torch.float16
    if requested == "fp16" and device_type == "cpu":
        return torch.float32
    return COMPUTE_DTYPES[requested]


# -- writing ---------------------------------------------------------------------------

def _plot(history: dict, path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: no window, no global state

    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.subplots()
    ax.plot(history["tokens"], history["train_loss"], "o-", ms=3, label="train")
    ax.plot(history["tokens"], history["val_loss"], "o-", ms=3, label="validation")
    ax.set(xlabel="tokens seen", ylabel="loss (cross entropy)",
           title=f"step {history['step'][-1]:,}: val loss {history['val_loss'][-1]:.3f}")
    ax.grid(alpha=0.3)
    ax.legend()
    write_atomically(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


def _gather(obj) -> list:
    """obj from every process, in rank order (just [obj] without torchrun)."""
    if not dist.is_initialized():
        return [obj]
    objects = [None] * dist.get_world_size()
    dist.all_gather_object(objects, obj)
    return objects


# -- the run ---------------------------------------------------------------------------

def run(cfg: RunConfig) -> tuple[GPTModel | Decoder, dict]:
    """Train as `cfg` says. Returns the model (on its device, in train mode) and a summary:
    step, tokens, train_loss and val_loss (the last evaluation's), tokens_per_s (training
    throughput of all processes together, evaluations and checkpoints excluded), mfu,
    seconds and the history of evaluations. Bad input raises InputError before any write, an
    --out another run is writing in FolderInUse; a run that diverges or fills the disk stops
    with RunStopped, its last checkpoint untouched.
    """
    cfg.check()
    rank, world_size, local_rank = (int(os.environ.get(k, d)) for k, d in
                                    (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)))
    device = _device(cfg.device, local_rank, world_size)
    out = Path(cfg.out)
    _check_out(out)
    if rank == 0:  # process 0 holds the lock for all of them
        check_folder_lock(out / LOCK)
    ckpt_path = out / "checkpoint.pt"
    seen = _stat(ckpt_path)
    if ckpt_path.exists() and not cfg.resume:
        raise InputError(f"{out} already holds a checkpoint: add --resume to continue that run, "
                         "or choose another --out")
    if cfg.resume and not ckpt_path.is_file():
        raise InputError(f"--resume: there is no checkpoint to resume from in {out}")
    data = _load_data(cfg)
    model_cfg = cfg.model_config(data.tokenizer.n_vocab)
    check_fits_in_memory(model_cfg, training=True, batch_size=cfg.batch_size, device=device)
    prompt = _encode_prompt(data.tokenizer, cfg.sample_prompt) if cfg.sample_prompt else None
    ckpt = None
    if cfg.resume:
        fixed = {k: v for k, v in asdict(cfg).items()
                 if k not in _FREE_ON_RESUME and k not in ("model", *_MODEL_FIELDS)}
        ckpt = read_checkpoint(ckpt_path, model_cfg, fixed, data.sha256, world_size)
    # Everything is checked. From here on the run may write into `out`, holding its lock.

    own_group = world_size > 1 and not dist.is_initialized()
    with folder_lock(out / LOCK) if rank == 0 else nullcontext():
        if rank == 0 and _stat(ckpt_path) != seen:  # another run came and went meanwhile
            raise InputError(f"another run wrote {ckpt_path} while this one was starting: "
                             "start again")
        if own_group:
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        try:  # this process's part: build it, say what it is, train it, write it
            return _Trainer(cfg, data, model_cfg, device, rank, world_size, ckpt, prompt).train()
        finally:
            if own_group:
                dist.destroy_process_group()


def _optimizer(cfg: RunConfig, model: GPTModel | Decoder) -> torch.optim.Optimizer:
    """The course's AdamW (matrices decayed, norms and biases not) or, with --optimizer muon,
    `buildllm.muon.MuonAdamW`: Muon for the blocks' matrices and that AdamW for the rest,
    with the same lr, weight decay and beta2, and one state_dict that checkpoints both."""
    if cfg.optimizer == "muon":
        return MuonAdamW(model, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, cfg.beta2))
    return AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, cfg.beta2))


class _Trainer:
    """One process's part of a run: its model, optimizer and data, and what `fit` calls back."""

    def __init__(self, cfg, data, model_cfg, device, rank, world_size, ckpt, prompt):
        self.cfg, self.data, self.model_cfg, self.device = cfg, data, model_cfg, device
        self.rank, self.world_size, self.ckpt, self.prompt = rank, world_size, ckpt, prompt
        self.out, self.lead = Path(cfg.out), rank == 0
        set_seed(cfg.seed)  # every process builds the same initial weights
        self.raw = new_model(model_cfg).to(device)
        self.optimizer = _optimizer(cfg, self.raw)
        self.scheduler = warmup_cosine(self.optimizer, _warmup(cfg), cfg.steps, cfg.min_lr_ratio)
        context = model_cfg.context_length
        self.stream = WindowStream(data.train, context, cfg.batch_size, cfg.seed, rank, world_size)
        self.scored = {split: eval_batches(ids, context, cfg.batch_size, cfg.eval_batches, rank,
                                           world_size)
                       for split, ids in (("train", data.train), ("val", data.val))}
        self.skipped, self.saved_step = 0, None  # steps skipped as non-finite; last checkpoint
        self.state = self._restore(ckpt)
        self.start, self.model = self.state.step, self.raw
        if world_size > 1:
            self.model = DistributedDataParallel(
                self.raw, device_ids=[device.index] if device.type == "cuda" else None)
        self.capability = (torch.cuda.get_device_capability(device) if device.type == "cuda"
                           else None)
        self.compute = autocast_dtype(cfg.dtype, device.type, self.capability)
        self.autocast = torch.autocast(device.type, self.compute,
                                       enabled=self.compute != torch.float32)
        # float16's small range: scale the loss up so that small gradients stay above 0
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.compute == torch.float16)
        if ckpt is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.tokens_per_step = cfg.batch_size * cfg.grad_accum * context * world_size
        self.flops_per_token = 3 * forward_flops_per_token(model_cfg)  # forward + backward (2×)
        self.peak, self.peak_label = peak_flops(device, self.compute) if self.lead else (None, "")
        self.log_file = self._open_log() if self.lead else None
        self.shown, self.losses = time.perf_counter(), []  # for the progress bar's loss
        self.step_loss = None  # the sum of this step's micro-batch losses
        self.first_bad = torch.tensor(NEVER, device=device)  # first non-finite step, if any

    def _restore(self, ckpt) -> FitState:
        """Where training starts: a fresh run, or the checkpoint's step, states and history."""
        if ckpt is None:
            set_seed(self.cfg.seed + self.rank)  # each process draws its own dropout masks
            return FitState()
        self.raw.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.stream.load_state_dict(ckpt["data"][self.rank])
        set_rng_state(ckpt["rng"][self.rank])
        self.skipped, self.saved_step = ckpt.get("skipped_steps", 0), ckpt["step"]
        return FitState(step=ckpt["step"], history=ckpt["history"])

    def _open_log(self):
        self.out.mkdir(parents=True, exist_ok=True)
        # This run holds the folder's lock, so every temporary file here was left by a run
        # that was killed while writing: remove them.
        for stale in atomic_leftovers(self.out):
            stale.unlink(missing_ok=True)
        path = self.out / "log.jsonl"
        torn = path.exists() and not path.read_bytes().endswith(b"\n")  # killed mid-line
        log_file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed by finish)
        log_file.write("\n" if torn else "")
        return log_file

    def log(self, record: dict, line: str | None = None) -> None:
        """Append `record` to log.jsonl and print `line`, in process 0 only."""
        if self.lead:
            self.log_file.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.log_file.flush()
            if line:
                tqdm.write(line)

    def train(self) -> tuple[GPTModel | Decoder, dict]:
        """Say what is trained, train it, write it. A full disk stops the run with a message
        naming the file, and the last checkpoint stays whole (it is replaced atomically)."""
        cfg = self.cfg
        try:
            self.announce()
            fit(self.model, self.micro_steps, self.batches(), steps=cfg.steps,
                optimizer=self.optimizer, scheduler=self.scheduler, clip=cfg.clip,
                scaler=self.scaler, evaluate_fn=self.evaluate, eval_every=cfg.eval_every,
                evaluate_first=True, checkpoint=self.save, checkpoint_every=cfg.checkpoint_every,
                on_step=self.show, on_eval=self.report, state=self.state,
                check_step=self.check_step, desc="pretraining", unit="step",
                disable=not self.lead)
            return self.finish()
        except OSError as err:
            if err.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            self.stop(f"no space left on device while writing {err.filename or self.out}",
                      "free some space, then continue with --resume")

    def stop(self, what: str, advice: str) -> NoReturn:
        """Log why the run stops and raise RunStopped, naming the checkpoint it leaves."""
        saved = ("no checkpoint was written yet" if self.saved_step is None else
                 f"the last checkpoint, {self.out / 'checkpoint.pt'} at step "
                 f"{self.saved_step:,}, is untouched")
        message = f"{what}; {saved}: {advice}"
        if self.lead:
            with suppress(OSError):  # the disk may be full
                self.log({"event": "stop", "step": self.state.step, "reason": message})
                self.log_file.close()
        raise RunStopped(message)

    def check_step(self, state: FitState, norm: torch.Tensor) -> bool:
        """fit's check_step: take the step only if its loss and gradients are finite.

        By default the check stays on the device, so a GPU is not waited for at every step:
        it keeps the first bad step, and `refuse_nonfinite` stops the run at the next
        evaluation or checkpoint, before anything is written. With --skip-nonfinite N each
        step is checked at once (all processes agree) and a bad one skipped, until more than
        N were. Under a float16 scaler an overflowing gradient is normal (the scaler skips
        that step and lowers its scale), so there only the loss counts."""
        bad = ~torch.isfinite(self.step_loss)
        if not self.scaler.is_enabled():
            bad |= ~torch.isfinite(norm)
        if not self.cfg.skip_nonfinite:
            self.first_bad = torch.minimum(self.first_bad, torch.where(bad, state.step, NEVER))
            return True
        bad = bad.to(torch.int64)
        if self.world_size > 1:
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)  # every process skips it, or none
        if not bad.item():
            return True
        self.skipped += 1
        self.log({"event": "skip", "step": state.step},
                 f"step {state.step:,}: skipped, its loss or a gradient is NaN or infinite")
        if self.skipped > self.cfg.skip_nonfinite:
            self.stop(f"{self.skipped} steps had a NaN or infinite loss or gradient (the last at "
                      f"step {state.step:,}), more than --skip-nonfinite "
                      f"{self.cfg.skip_nonfinite}", "lower --lr and start again in a new --out")
        return False

    def refuse_nonfinite(self, state: FitState) -> None:
        """Stop before evaluating or saving weights that a non-finite step has touched."""
        first = self.first_bad.clone()
        if self.world_size > 1:
            dist.all_reduce(first, op=dist.ReduceOp.MIN)
        if first.item() != NEVER:
            self.stop(f"the loss or a gradient became NaN or infinite at step {first.item():,}, "
                      f"so the run stopped at step {state.step:,} without saving",
                      "lower --lr and start again in a new --out, or continue with --resume "
                      "--skip-nonfinite N to skip such steps")

    def announce(self) -> None:
        """Log the start (or the resumption) with what is trained, on what, and how."""
        cfg, model_cfg, compute = self.cfg, self.model_cfg, self.compute
        capability = self.capability
        dtype_note = ""
        if compute != COMPUTE_DTYPES[cfg.dtype]:
            gpu = (f"this GPU (compute capability {capability[0]}.{capability[1]})"
                   if capability else f"this {self.device.type}")
            dtype_note = (f"\n--dtype {cfg.dtype}: {gpu} has no bfloat16 units, so it computes "
                          "in float16 autocast with a gradient scaler instead."
                          if compute == torch.float16 else
                          f"\n--dtype {cfg.dtype}: float16 autocast is for GPUs; this CPU "
                          "computes in float32.")
        name = cfg.model if all(getattr(cfg, k) is None for k in _MODEL_FIELDS) else "custom"
        parameters, step, resumed = count_parameters(self.raw), self.start, self.ckpt is not None
        self.log(
            {"event": "resume" if resumed else "start", "step": step, "config": asdict(cfg),
             "model": config_record(model_cfg), "parameters": parameters,
             "train_tokens": len(self.data.train), "val_tokens": len(self.data.val),
             "device": str(self.device), "processes": self.world_size,
             "mfu_peak": self.peak_label, "autocast_dtype": str(compute)[6:]},
            f"{f'Resuming at step {step:,}' if resumed else 'Pretraining'} a {name} "
            f"{'decoder' if isinstance(model_cfg, DecoderConfig) else 'GPT'} of "
            f"{parameters / 1e6:.2f}M parameters ({model_cfg.n_layers} layers, "
            f"{model_cfg.emb_dim} dims, context {model_cfg.context_length}, vocabulary "
            f"{model_cfg.vocab_size:,}) on {len(self.data.train):,} training and "
            f"{len(self.data.val):,} validation tokens; {self.device}, {self.world_size} "
            f"process{'es' * (self.world_size > 1)}, {cfg.dtype}, {self.tokens_per_step:,} "
            f"tokens per step. MFU is against {self.peak_label}.{dtype_note}")

    def batches(self):
        """Each optimizer step's grad_accum micro-batches, without end."""
        while True:
            yield [self.stream.next_batch() for _ in range(self.cfg.grad_accum)]

    def micro_steps(self, batches: list) -> None:
        """Forward and backward over one step's micro-batches, adding up their gradients."""
        self.step_loss = 0.0
        for micro, (inputs, targets) in enumerate(batches):
            last = micro == len(batches) - 1
            # DDP averages the gradients of all processes during backward. Only the last
            # micro-step needs that: the others just add to this process's gradients.
            with nullcontext() if last or self.world_size == 1 else self.model.no_sync():
                with self.autocast:
                    loss = batch_loss(self.model, inputs.to(self.device), targets.to(self.device))
                self.scaler.scale(loss / len(batches)).backward()  # unscaled unless float16
            self.losses.append(loss.detach())
            self.step_loss = self.step_loss + loss.detach()

    def show(self, state: FitState) -> None:
        """The recent training loss and speed on the progress bar, at most once a second
        (.item() waits for a GPU: not every step)."""
        if self.lead and time.perf_counter() - self.shown > 1:
            speed = state.timed_steps * self.tokens_per_step / (time.perf_counter() - state.clock)
            state.bar.set_postfix(loss=f"{torch.stack(self.losses).mean().item():.3f}",
                                  tokens_per_s=f"{speed:,.0f}")
            self.shown, self.losses = time.perf_counter(), []

    def evaluate(self, state: FitState) -> dict:
        """The mean loss over each split's scored windows, those of every process."""
        self.refuse_nonfinite(state)
        every_process = dist.all_reduce if self.world_size > 1 else None  # each scored its own
        with self.autocast:
            losses = {split: window_loss(self.raw, batches, every_process)
                      for split, batches in self.scored.items()}
        return {"tokens": state.step * self.tokens_per_step, "train_loss": losses["train"],
                "val_loss": losses["val"]}

    def mfu(self, speed: float | None) -> float | None:
        """The share of the hardware's peak (all processes') that `speed` tokens/s use."""
        return (speed * self.flops_per_token / (self.peak * self.world_size)
                if speed and self.peak else None)

    def report(self, state: FitState) -> None:
        """Log the evaluation just made, with a sample if asked for, and redraw loss.png."""
        step, history = state.step, state.history
        speed = (state.timed_steps * self.tokens_per_step / state.timed_seconds
                 if state.timed_steps else None)
        mfu = self.mfu(speed)
        record = {"event": "eval", "step": step, "tokens": history["tokens"][-1],
                  "train_loss": history["train_loss"][-1], "val_loss": history["val_loss"][-1],
                  "lr": self.optimizer.param_groups[0]["lr"], "tokens_per_s": speed, "mfu": mfu}
        line = (f"step {step:,}: train loss {record['train_loss']:.3f}, val loss "
                f"{record['val_loss']:.3f}, lr {record['lr']:.2e}")
        if speed:
            line += f", {speed:,.0f} tokens/s" + (f", MFU {mfu:.1%}" if mfu else "")
        if self.prompt is not None and self.lead:
            ids = torch.tensor([self.prompt[-self.model_cfg.context_length:]], device=self.device)
            new = generate(self.raw, ids, self.cfg.sample_tokens, use_cache=False,
                           temperature=0.8, seed=self.cfg.seed)  # one seed: changes are learning
            record["sample"] = self.data.tokenizer.decode(new[0].tolist())
            line += f"\n{record['sample']}\n"
        self.log(record, line)
        if self.lead:
            _plot(history, self.out / "loss.png")

    def save(self, state: FitState) -> None:
        """Write checkpoint.pt: everything --resume needs to go on as if never stopped."""
        self.refuse_nonfinite(state)
        cfg, data = self.cfg, self.data
        ckpt = {"format": CHECKPOINT_FORMAT, "model": self.raw.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "step": state.step, "data": _gather(self.stream.state_dict()),
                "rng": _gather(rng_state()), "scaler": self.scaler.state_dict(),
                "config": asdict(cfg), "model_config": config_record(self.model_cfg),
                "tokenizer": data.spec, "data_sha256": data.sha256,
                "world_size": self.world_size, "history": state.history,
                "skipped_steps": self.skipped}
        if self.lead:
            save_checkpoint(self.out / "checkpoint.pt", **ckpt)
            self.log({"event": "checkpoint", "step": state.step})
        self.saved_step = state.step

    def finish(self) -> tuple[GPTModel | Decoder, dict]:
        """The summary; process 0 also writes model.safetensors and run.json."""
        state, history = self.state, self.state.history
        seconds = state.seconds  # this session's training, evaluations and checkpoints left out
        speed = (state.step - self.start) * self.tokens_per_step / seconds if seconds else 0.0
        summary = {"step": state.step, "tokens": state.step * self.tokens_per_step,
                   "train_loss": history["train_loss"][-1], "val_loss": history["val_loss"][-1],
                   "tokens_per_s": speed, "mfu": self.mfu(speed), "seconds": seconds,
                   "skipped_steps": self.skipped, "history": history}
        if self.lead:
            result = {k: v for k, v in summary.items() if k != "history"}
            save_run(self.raw, self.data.spec, self.out, run=asdict(self.cfg),
                     save_dtype=self.cfg.save_dtype, result=result)
            self.log({"event": "end", **result},
                     f"Done: val loss {summary['val_loss']:.3f} after {state.step:,} steps. "
                     f"model.safetensors and run.json are in {self.out}")
            self.log_file.close()
        return self.raw, summary


# -- the command line ------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m buildllm.pretrain", argument_default=argparse.SUPPRESS,
        description="Pretrain a GPT on your own text files. Any setting can also come from "
                    "--config-file; flags given here override it.",
    )
    p.add_argument("inputs", nargs="*", help="text files, and folders of .txt files")
    p.add_argument("--config-file", metavar="FILE", help="a JSON file of settings, or a run.json")
    p.add_argument("--tokenizer", metavar="NAME",
                   help="gpt2, char, or a Meeting-2 BPE json (default gpt2)")
    p.add_argument("--val-fraction", type=float, metavar="F",
                   help="held-out share of tokens (default 0.1)")
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=MODELS,
                   help="a configuration: GPT-2's, or a modern decoder's (default cpu-tiny)")
    for name, kind in (("context-length", int), ("emb-dim", int), ("n-heads", int),
                       ("n-layers", int), ("drop-rate", float)):
        g.add_argument(f"--{name}", type=kind, metavar="N" if kind is int else "P",
                       help="overrides the configuration's value")
    g = p.add_argument_group("optimization")
    for name, kind, what in (
        ("batch-size", int, "windows per process and micro-step (default 16)"),
        ("grad-accum", int, "micro-steps per optimizer step (default 1)"),
        ("lr", float, "peak learning rate (default 1e-3)"),
        ("min-lr-ratio", float, "final lr / peak lr (default 0.1)"),
        ("warmup-steps", int, "linear warmup (default: steps / 10, at most 100)"),
        ("steps", int, "optimizer steps (default 2000)"),
        ("weight-decay", float, "AdamW weight decay of the matrices (default 0.1)"),
        ("beta2", float, "AdamW's beta2 (default 0.95)"),
        ("clip", float, "gradient norm limit, 0 for none (default 1.0)"),
        ("skip-nonfinite", int, "skip up to N steps whose loss or gradient is NaN or infinite "
                                "(default 0: stop at the first, saving nothing)"),
        ("seed", int, "random seed (default 123)"),
    ):
        g.add_argument(f"--{name}", type=kind, metavar="N" if kind is int else "X", help=what)
    g.add_argument("--optimizer", choices=("adamw", "muon"),
                   help="muon: Muon for the blocks' matrices, AdamW for the rest "
                        "(buildllm.muon.MuonAdamW; default adamw)")
    g.add_argument("--dtype", choices=COMPUTE_DTYPES,
                   help="bf16: bfloat16 autocast, float16 on a GPU without bfloat16 units (a T4); "
                        "fp16: float16 autocast with a gradient scaler (default fp32)")
    g.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), help="(default auto)")
    g = p.add_argument_group("evaluation and output")
    g.add_argument("--eval-every", type=int, metavar="N",
                   help="steps between evaluations (default 200)")
    g.add_argument("--eval-batches", type=int, metavar="N",
                   help="batches scored per split (default 20)")
    g.add_argument("--sample-prompt", metavar="TEXT",
                   help="print a sampled continuation at each evaluation")
    g.add_argument("--sample-tokens", type=int, metavar="N", help="tokens to sample (default 100)")
    g.add_argument("--out", metavar="DIR", help="output folder (default runs/pretrain)")
    g.add_argument("--checkpoint-every", type=int, metavar="N",
                   help="steps (default: at every evaluation)")
    g.add_argument("--resume", action="store_true", help="continue from --out's checkpoint.pt")
    g.add_argument("--save-dtype", choices=DTYPES, help="of model.safetensors (default fp32)")
    return p


def _settings_from_file(path: str) -> dict:
    if Path(path).exists() and not Path(path).is_file():  # a pipe would wait forever
        raise InputError(f"--config-file {path} is not a regular file")
    try:
        settings = json.loads(Path(path).read_text("utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"--config-file {path} cannot be read as JSON: {err}") from None
    if isinstance(settings, dict) and settings.get("format") == RUN_FORMAT:
        settings = settings["run"]  # a previous run's run.json: train the same way again
    if not isinstance(settings, dict):
        raise InputError(f"--config-file {path} must hold a JSON object of settings")
    settings = {k.replace("-", "_"): v for k, v in settings.items()}
    known = {f.name for f in fields(RunConfig)}
    if unknown := sorted(set(settings) - known):
        raise InputError(f"--config-file {path} has unknown settings {unknown}; "
                         f"known: {sorted(known)}")
    # Parse the values as if they were flags, so that they are checked the same way.
    argv, inputs = [], settings.pop("inputs", [])
    for key, value in settings.items():
        if value is not None and value is not False:
            flag = f"--{key.replace('_', '-')}"
            argv.append(flag if value is True else f"{flag}={value}")
    inputs = inputs if isinstance(inputs, list) else [inputs]
    return vars(_parser().parse_args([*argv, "--", *map(str, inputs)]))


def parse_config(argv: list[str] | None = None) -> RunConfig:
    """A RunConfig from command-line flags. Each setting comes from the first place that has
    it: the flags, the --config-file, the checkpoint being resumed, RunConfig's defaults."""
    flags = vars(_parser().parse_args(argv))
    from_file = _settings_from_file(flags.pop("config_file")) if "config_file" in flags else {}
    given = {**from_file, **flags}
    settings, out = {}, given.setdefault("out", RunConfig.out)
    ckpt = Path(out) / "checkpoint.pt"
    if given.get("resume") and ckpt.is_file():
        with suppress(Exception):  # a damaged checkpoint: run() will say so
            # mmap: read the settings without loading every tensor
            settings = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)["config"]
    return RunConfig(**{**settings, **given})


def main(argv: list[str] | None = None) -> dict:
    """`python -m buildllm.pretrain ...`: parse the flags, run, return the summary."""
    try:
        return run(parse_config(argv))[1]
    except (InputError, FolderInUse, RunStopped) as err:
        raise SystemExit(f"error: {err}") from None
    except KeyboardInterrupt:
        raise SystemExit("\nStopped: continue from the last checkpoint with --resume") from None


if __name__ == "__main__":
    main()
