"""The capstone (Meeting 7): from a folder of .txt files to a model you can chat with.

Five stages, each one call to a piece the course has built:

    1. train_tokenizer   a byte-level BPE on your texts          (Meeting 2: BPETokenizer)
    2. pretrain          a GPT from scratch on the same texts    (Meeting 5: buildllm.pretrain)
    3. instruction_tune  on the course's instructions and yours  (Meeting 6: buildllm.instruct)
    4. evaluate          held-out loss; answers before and after tuning, scored
    5. chat              a conversation with the tuned model     (Meeting 7: buildllm.chat)

    cfg = Capstone(text_folder="my-texts", project="capstone-run")
    tokenizer = train_tokenizer(cfg)
    base = pretrain(cfg, tokenizer)
    tuned = instruction_tune(cfg, base)
    scores = evaluate(cfg, base, tuned)
    session = chat(cfg, tuned)

Each stage writes into its own folder under `project` (1-tokenizer, 2-pretrain, 3-instruct,
4-evaluate) and, last of all, a stage.json that records the settings it ran with: its own and,
through a fingerprint, those of every stage before it. Called again, a stage whose stage.json
matches loads its output instead of running. A stage whose own settings, or an earlier stage's,
have changed runs again; so changing the instruction-tuning learning rate re-runs tuning and
evaluation, not the tokenizer or pretraining. Each call prints one line saying which it did.
A pretraining run that was interrupted (Ctrl-C, a closed laptop) continues from its last
checkpoint when called again with the same settings, as long as the project folder is still
there. In Colab that holds within one machine (after "Restart session", say) but not across
machines: /content goes with the machine, so keep `project` on Google Drive for a run that
spans sessions (the capstone notebook has a cell for it).

Bad input (a folder that does not exist or holds no .txt files, an empty file, too little text
for the context length, a malformed pairs file, an impossible setting) raises `InputError`
before anything is written.

What a bigger run would cost: `training_cost` and `GPUS`, from `buildllm.costs`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from .chat import ChatSession
from .costs import GPU, GPUS, training_cost
from .data import fetch
from .instruct import encode_example, evaluate_responses, finetune, load_instructions, prompt_ids
from .model import GPTConfig
from .pretrain import RunConfig, check_settings, whole_numbers
from .pretrain import run as run_pretraining
from .pretrain_data import InputError, encode_documents, eval_batches, read_texts, split_ids
from .runs import load_run, save_run, write_json
from .tokenizers import ENDOFTEXT, BPETokenizer
from .training import window_loss
from .utils import get_device, set_seed

__all__ = ["GPU", "GPUS", "STAGES", "Capstone", "InputError", "Stage", "chat", "evaluate",
           "instruction_tune", "pretrain", "run_all", "sample_texts", "train_tokenizer",
           "training_cost"]

STAGES = ("1-tokenizer", "2-pretrain", "3-instruct", "4-evaluate")  # folders under `project`
SAMPLE_TEXTS = ("tinyshakespeare.txt", "the-verdict.txt")  # public domain, in the mirror


@dataclass
class Capstone:
    """Every setting of the pipeline, grouped by stage. The defaults take minutes on a CPU.

    Pretraining's settings are `buildllm.pretrain.RunConfig`'s, with its rules and other
    defaults: `run_config()` is the RunConfig they make.
    `device` is the only setting no stage records: moving to a GPU re-runs nothing.
    """

    text_folder: str | os.PathLike  # every .txt file under it (recursively) is a document
    project: str | os.PathLike  # the stages' folders go here
    # 1. tokenizer
    vocab_size: int = 1024  # the 256 bytes, the merges and <|endoftext|>
    # 2. pretraining
    model: str = "cpu-tiny"  # a name pretrain --model takes; the next four override it
    context_length: int | None = 256  # instruction prompts need about 150 tokens of context
    emb_dim: int | None = None
    n_heads: int | None = None
    n_layers: int | None = None
    batch_size: int = 8
    grad_accum: int = 1
    steps: int = 200
    lr: float = 2e-3
    dtype: str = "fp32"  # bf16 on a GPU; where it has no bfloat16 (a T4) pretrain uses fp16
    val_fraction: float = 0.1  # the last tenth of the tokens is held out
    eval_every: int = 40
    eval_batches: int = 5  # batches of held-out text scored, here and in stage 4
    # 3. instruction tuning
    instructions: int | None = None  # how many of the course's 935 training examples; None: all
    own_pairs: str | None = None  # a JSON list of {"instruction", "input", "output"} of yours
    tune_epochs: float = 1.0
    tune_lr: float = 1e-3
    tune_batch_size: int = 8
    mask_prompt: bool = True
    # 4. evaluation
    test_examples: int = 30  # of the course's 110 held-out instructions
    max_new_tokens: int = 32
    # all stages
    seed: int = 123
    device: str = "auto"  # auto, cpu, cuda or mps

    def __post_init__(self):
        self.run_config().check(flags=False)  # pretraining's settings, by pretraining's rules
        check_settings(self, [
            *whole_numbers("vocab_size", "tune_batch_size", "test_examples", "max_new_tokens"),
            ("vocab_size", lambda v: v >= 257, "at least 257 (256 bytes and <|endoftext|>)"),
            ("tune_lr", lambda v: v > 0, "above 0"),
            ("tune_lr", lambda v: v <= 1, "at most 1 (AdamW moves a weight by about lr a step)"),
            ("tune_epochs", lambda v: v > 0, "above 0"),
            ("tune_epochs", lambda v: v < 1000, "below 1000"),
            ("instructions", lambda v: v is None or (isinstance(v, int) and v >= 0),
             "None (all of them) or a whole number"),
        ], flags=False)
        cfg = self.model_config()
        if self.instructions == 0 and self.own_pairs is None:
            raise InputError("instructions=0 and no own_pairs: there is nothing to tune on")
        if self.max_new_tokens >= cfg.context_length:
            raise InputError(f"max_new_tokens ({self.max_new_tokens}) must be below the "
                             f"context length ({cfg.context_length}): a prompt needs room too")

    def run_config(self, **settings) -> RunConfig:
        """Pretraining's settings as `buildllm.pretrain` takes them, with `settings` added."""
        return RunConfig(device=self.device, **{k: getattr(self, k) for k in _PRETRAIN},
                         **settings)

    def model_config(self) -> GPTConfig:
        """The GPTConfig that pretraining builds: the named model with the overrides."""
        return self.run_config().model_config(self.vocab_size)


# The settings each stage records. A stage also records the fingerprint of the stage before it.
_PRETRAIN = tuple(f.name for f in fields(Capstone)  # RunConfig's, but device
                  if f.name in RunConfig.__dataclass_fields__ and f.name != "device")
_TUNE = ("instructions", "tune_epochs", "tune_lr", "tune_batch_size", "mask_prompt", "seed")
_EVALUATE = ("test_examples", "max_new_tokens", "eval_batches", "val_fraction", "batch_size")


@dataclass
class Stage:
    """What one stage made: where it lives, whether it ran just now (False: loaded), the
    fingerprint of its settings and every earlier stage's, what it recorded, and its output
    (the tokenizer; (model, tokenizer); the scores)."""

    name: str
    folder: Path
    ran: bool
    key: str
    info: dict
    output: Any


# -- bookkeeping ---------------------------------------------------------------------------

def _fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _texts_fingerprint(texts: list[str]) -> str:
    digests = b"".join(hashlib.sha256(t.encode()).digest() for t in texts)
    return hashlib.sha256(digests).hexdigest()[:16]


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None


class _Record:
    """One stage's stage.json: whether it can be loaded, and if not, why the stage must run."""

    def __init__(self, cfg: Capstone, name: str, settings: dict, previous: str):
        self.name, self.folder = name, Path(cfg.project) / name
        self.settings, self.previous = settings, previous
        self.key = _fingerprint({"settings": settings, "previous": previous})
        self.stored = _read_json(self.folder / "stage.json") or {}
        self.cached = self.stored.get("key") == self.key
        self.start = time.perf_counter()

    def why(self) -> str:
        if not self.stored:
            return "nothing saved yet"
        old = self.stored.get("settings", {})
        changed = [f"{k} {old.get(k)!r} -> {v!r}" for k, v in self.settings.items()
                   if old.get(k) != v]
        return "changed: " + ", ".join(changed) if changed else "an earlier stage changed"

    def fresh_folder(self) -> None:
        """Empty this stage's folder (an older output with other settings goes)."""
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)

    def loaded(self, output) -> Stage:
        print(f"{self.name}: loaded from {self.folder} (made earlier with these settings)")
        return Stage(self.name, self.folder, False, self.key, self.stored["info"], output)

    def done(self, info: dict, output) -> Stage:
        """Write stage.json, last: from now on the stage's output counts as made."""
        info = {**info, "seconds": round(time.perf_counter() - self.start, 1)}
        write_json(self.folder / "stage.json", {"stage": self.name, "key": self.key,
                                                 "previous": self.previous,
                                                 "settings": self.settings, "info": info})
        print(f"{self.name}: ran in {info['seconds']:.1f} s ({self.why()}); "
              f"saved in {self.folder}")
        return Stage(self.name, self.folder, True, self.key, info, output)


# -- input ---------------------------------------------------------------------------------

def sample_texts(folder: str | os.PathLike) -> Path:
    """Fill `folder` with the course's public-domain texts (Tiny Shakespeare and Edith
    Wharton's "The Verdict", 1.1 MB) from `buildllm.data.fetch`; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in SAMPLE_TEXTS:
        if not (folder / name).exists():
            shutil.copyfile(fetch(name), folder / name)
    return folder


def _read_corpus(cfg: Capstone) -> list[str]:
    folder = Path(cfg.text_folder)
    if not folder.is_dir():
        raise InputError(f"text_folder {cfg.text_folder} is not a folder" if folder.exists()
                         else f"text_folder {cfg.text_folder} does not exist")
    return read_texts([folder])  # InputError: no .txt files, an empty or non-UTF-8 one


def _own_pairs(cfg: Capstone) -> list[dict]:
    """The learner's instruction pairs, checked: a list of dicts with text fields."""
    if cfg.own_pairs is None:
        return []
    try:
        pairs = json.loads(Path(cfg.own_pairs).read_text("utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"own_pairs {cfg.own_pairs} cannot be read as JSON: {err}") from None
    example = '[{"instruction": "...", "input": "", "output": "..."}]'
    if not isinstance(pairs, list) or not pairs:
        raise InputError(f"own_pairs {cfg.own_pairs} must hold a non-empty list like {example}")
    for n, pair in enumerate(pairs):
        ok = (isinstance(pair, dict) and all(isinstance(pair.get(k), str) and pair[k].strip()
                                             for k in ("instruction", "output"))
              and isinstance(pair.get("input", ""), str))
        if not ok:
            raise InputError(f"own_pairs {cfg.own_pairs}: entry {n} is {pair!r}; each entry "
                             f"needs non-empty 'instruction' and 'output' texts, as in {example}")
    return [{"instruction": p["instruction"], "input": p.get("input", ""), "output": p["output"]}
            for p in pairs]


def _check_enough_tokens(cfg: Capstone, n_tokens: int) -> None:
    """Both splits must hold one window of context + 1 tokens, as `buildllm.pretrain` needs."""
    need = cfg.model_config().context_length + 1
    train, val = split_ids(range(n_tokens), cfg.val_fraction)  # as buildllm.pretrain splits
    if min(len(train), len(val)) < need:
        raise InputError(
            f"the text is too short: its {n_tokens:,} tokens leave {len(val):,} for "
            f"validation (val_fraction {cfg.val_fraction}), fewer than one window of "
            f"context_length + 1 = {need}. Add text, or lower context_length.")


# -- the stages ----------------------------------------------------------------------------

def train_tokenizer(cfg: Capstone) -> Stage:
    """Stage 1: a byte-level BPE of `vocab_size` tokens, <|endoftext|> the last, trained on
    the texts (Meeting 2). Output: the BPETokenizer, saved as 1-tokenizer/tokenizer.json.
    It checks all the input first: bad input stops the pipeline before anything is written.
    """
    texts = _read_corpus(cfg)
    _own_pairs(cfg)  # a broken pairs file should stop the pipeline now, not after pretraining
    record = _Record(cfg, "1-tokenizer", {"vocab_size": cfg.vocab_size,
                                          "texts": _texts_fingerprint(texts)}, previous="")
    if record.cached:
        _check_enough_tokens(cfg, record.stored["info"]["tokens"])
        return record.loaded(BPETokenizer.load(record.folder / "tokenizer.json"))
    tokenizer = BPETokenizer.train(texts, cfg.vocab_size, [ENDOFTEXT], progress=True)
    n_tokens = len(encode_documents(tokenizer, texts))
    _check_enough_tokens(cfg, n_tokens)
    record.fresh_folder()
    tokenizer.save(record.folder / "tokenizer.json")
    info = {"documents": len(texts), "characters": sum(map(len, texts)),
            "words": sum(len(t.split()) for t in texts), "tokens": n_tokens,
            "vocab_size": tokenizer.vocab_size}
    return record.done(info, tokenizer)


def pretrain(cfg: Capstone, tokenizer: Stage) -> Stage:
    """Stage 2: pretrain a GPT from scratch on the texts with `buildllm.pretrain` (Meeting 5),
    documents joined by <|endoftext|>. Output: (model, tokenizer), from the run folder
    2-pretrain (run.json, model.safetensors, log.jsonl, loss.png).

    An interrupted run leaves its checkpoint; called again with the same settings, it resumes
    there (the pretraining command's --resume). The checkpoint is deleted once the run is done.
    """
    settings = {k: getattr(cfg, k) for k in _PRETRAIN}
    record = _Record(cfg, "2-pretrain", settings, previous=tokenizer.key)
    if not record.cached:
        _check_enough_tokens(cfg, tokenizer.info["tokens"])
        folder, checkpoint = record.folder, record.folder / "checkpoint.pt"
        pending = _read_json(folder / "pending.json") or {}
        resume = pending.get("key") == record.key and checkpoint.is_file()
        if not resume:
            record.fresh_folder()
        write_json(folder / "pending.json", {"key": record.key})
        _, summary = run_pretraining(cfg.run_config(
            inputs=[str(cfg.text_folder)], tokenizer=str(tokenizer.folder / "tokenizer.json"),
            out=str(folder), resume=resume))
        checkpoint.unlink()  # only --resume needs it, and this run is over
        (folder / "pending.json").unlink()
        info = {k: summary[k] for k in ("train_loss", "val_loss", "tokens", "tokens_per_s")}
        return record.done({**info, "resumed": resume, "history": summary["history"]},
                           load_run(folder))
    return record.loaded(load_run(record.folder))


def _fits(entry: dict, tokenizer, context: int) -> bool:
    return len(encode_example(entry, tokenizer)[0]) <= context


def instruction_tune(cfg: Capstone, pretrained: Stage) -> Stage:
    """Stage 3: instruction-tune the pretrained model (Meeting 6's `finetune`) on the first
    `instructions` of the course's training examples and your own pairs. Examples longer
    than the context are left out (and counted). Output: (model, tokenizer), from the run
    folder 3-instruct, which `buildllm.runs.load_run` reads.
    """
    own = _own_pairs(cfg)
    settings = {**{k: getattr(cfg, k) for k in _TUNE}, "own_pairs": _fingerprint(own)}
    record = _Record(cfg, "3-instruct", settings, previous=pretrained.key)
    if record.cached:
        return record.loaded(load_run(record.folder))
    base = load_run(pretrained.folder)
    model, tokenizer = base
    context = model.cfg.context_length
    train, val, _ = load_instructions()  # the course's split: its test part stays unseen
    train = (train if cfg.instructions is None else train[:cfg.instructions]) + own
    kept = [e for e in train if _fits(e, tokenizer, context)]
    val = [e for e in val if _fits(e, tokenizer, context)]
    if len(kept) < cfg.tune_batch_size:
        raise InputError(f"{len(kept)} of the {len(train)} instruction examples fit in the "
                         f"context of {context} tokens, fewer than one batch of "
                         f"{cfg.tune_batch_size}: use more examples or a longer context_length")
    steps = max(1, round(cfg.tune_epochs * (len(kept) // cfg.tune_batch_size)))
    set_seed(cfg.seed)
    history = finetune(model.to(get_device(name=cfg.device)), kept, val, epochs=cfg.tune_epochs,
                       lr=cfg.tune_lr, batch_size=cfg.tune_batch_size,
                       mask_prompt=cfg.mask_prompt, enc=tokenizer,
                       eval_every=max(1, steps // 10), eval_batches=4, seed=cfg.seed)
    record.fresh_folder()
    save_run(model, base.tokenizer_spec, record.folder, run={"instruction_tuned": settings},
             result={"train_loss": history["train_loss"][-1],
                     "val_loss": history["val_loss"][-1]})
    info = {"examples": len(kept), "too_long": len(train) - len(kept), "own_pairs": len(own),
            "history": history}
    return record.done(info, load_run(record.folder))


def evaluate(cfg: Capstone, pretrained: Stage, tuned: Stage) -> Stage:
    """Stage 4: measure both models. Output, also saved as 4-evaluate/scores.json:

    - "text": the loss and perplexity of each model on the held-out text (the validation
      tokens of pretraining, the same windows its last evaluation scored);
    - "answers": mean ROUGE-L and token F1 of each model's answers to the first
      `test_examples` held-out course instructions that fit in the context;
    - "examples": those instructions, the reference answers and both models' answers.
    """
    settings = {k: getattr(cfg, k) for k in _EVALUATE}
    record = _Record(cfg, "4-evaluate", settings, previous=pretrained.key + tuned.key)
    if record.cached:
        return record.loaded(_read_json(record.folder / "scores.json"))
    device = get_device(name=cfg.device)
    models = {"pretrained": pretrained.output[0].to(device), "tuned": tuned.output[0].to(device)}
    tokenizer = tuned.output[1]
    context = models["tuned"].cfg.context_length
    ids = torch.tensor(encode_documents(tokenizer, _read_corpus(cfg)), dtype=torch.long)
    windows = eval_batches(split_ids(ids, cfg.val_fraction)[1], context, cfg.batch_size,
                           cfg.eval_batches)  # pretraining's validation windows
    losses = {label: window_loss(model, windows) for label, model in models.items()}  # as pretrain
    _, _, test = load_instructions()
    room = context - cfg.max_new_tokens
    entries = [e for e in test if len(prompt_ids(e, tokenizer)) <= room][:cfg.test_examples]
    results = {label: evaluate_responses(model, tokenizer, entries, cfg.max_new_tokens)
               for label, model in models.items()}
    scores = {
        "text": {label: {"loss": loss, "perplexity": math.exp(loss)}
                 for label, loss in losses.items()},
        "answers": {label: {"rouge_l": r["rouge_l"], "token_f1": r["token_f1"]}
                    for label, r in results.items()},
        "examples": [{"instruction": e["instruction"], "input": e["input"],
                      "reference": e["output"],
                      **{label: r["responses"][i] for label, r in results.items()}}
                     for i, e in enumerate(entries)],
    }
    record.fresh_folder()
    write_json(record.folder / "scores.json", scores)
    return record.done({"test_examples": len(entries)}, scores)


def chat(cfg: Capstone, tuned: Stage, **settings):
    """Stage 5: a chat session with the tuned model (`buildllm.chat.ChatSession`); it reads
    the run folder 3-instruct and writes nothing. `settings` are the session's (e.g.
    max_new_tokens, temperature). `session.reply(messages)` answers a conversation."""
    return ChatSession.from_run(tuned.folder, device=get_device(name=cfg.device), **settings)


def run_all(cfg: Capstone) -> dict[str, Stage]:
    """The four stages that write, in order; each loads instead of running where it can."""
    tokenizer = train_tokenizer(cfg)
    base = pretrain(cfg, tokenizer)
    tuned = instruction_tune(cfg, base)
    return {"tokenizer": tokenizer, "pretrain": base, "instruct": tuned,
            "evaluate": evaluate(cfg, base, tuned)}
