"""The run folder and the resume checkpoint (Meetings 5 to 7): where a trained model is kept.

A run folder is what `python -m buildllm.pretrain` leaves and what the capstone, the chat, the
server and `buildllm.pretrained` load: model.safetensors (the weights, without the tied
out_head.weight), tokenizer.json (a BPE tokenizer's copy, if one was used) and run.json, written
last, which says how to rebuild the model:

    {"format": "buildllm-run/1", "model": {GPTConfig's fields},
     "tokenizer": {"kind": "gpt2"} | {"kind": "char", "chars": "..."}
                  | {"kind": "bpe", "file": "tokenizer.json"},
     "weights": {"file": "model.safetensors", "dtype": "float32"},
     "run": {how it was trained}, "result": {final losses, tokens/s...}}

    >>> model, tokenizer = load_run("runs/char")   # a Run unpacks as (model, tokenizer)
    >>> load_run("runs/char").save("runs/copy")     # everything save_run needs: one line

checkpoint.pt, beside them while a run trains, is the resume checkpoint that --resume reads
(`read_checkpoint`), refusing one that another run wrote.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .model import GPTConfig, GPTModel
from .pretrain_data import InputError, load_tokenizer
from .tokenizers import Tokenizer
from .training import load_checkpoint
from .utils import write_atomically

__all__ = ["CHECKPOINT_FORMAT", "DTYPES", "RUN_FORMAT", "Run", "add_run_flag", "load_run",
           "read_checkpoint", "save_run", "write_json"]

RUN_FORMAT = "buildllm-run/1"
CHECKPOINT_FORMAT = "buildllm-checkpoint/1"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}  # what model.safetensors may hold


@dataclass
class Run:
    """A run folder, loaded: the model (float32, eval mode, on the CPU), its tokenizer, and
    the rest of what `save_run` records. It unpacks as (model, tokenizer)."""

    model: GPTModel
    tokenizer: Tokenizer  # buildllm.tokenizers.Tokenizer: the word, char, BPE or GPT-2 one
    tokenizer_spec: dict  # as save_run takes it: a BPE file's path leads to the file
    settings: dict = field(default_factory=dict)  # run.json's "run": how it was trained
    result: dict = field(default_factory=dict)
    save_dtype: str = "fp32"

    def __iter__(self):
        return iter((self.model, self.tokenizer))

    def __getitem__(self, index: int):
        return (self.model, self.tokenizer)[index]

    def save(self, folder: str | os.PathLike) -> Path:
        """Write this run into `folder`, as `save_run` does; returns the folder."""
        return save_run(self.model, self.tokenizer_spec, folder, run=self.settings,
                        result=self.result, save_dtype=self.save_dtype)


def _save_model(model: GPTModel, path: Path, dtype: torch.dtype) -> None:
    from safetensors.torch import save_file

    state = {name: t.detach().to("cpu", dtype).contiguous()  # blocks' weights are transposed
             for name, t in model.state_dict().items()}
    if model.cfg.tie_embeddings:
        del state["out_head.weight"]  # tok_emb.weight again: safetensors refuses shared tensors
    write_atomically(path, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))


def save_run(model: GPTModel, tokenizer_spec: dict, folder: str | os.PathLike, *,
             run: dict | None = None, result: dict | None = None,
             save_dtype: str = "fp32") -> Path:
    """Write `model` and its tokenizer as a run folder that `load_run` reads; returns it.

    This is how the pretraining command ends, and how a model trained any other way
    (instruction-tuned, say) becomes a run folder too. `tokenizer_spec` is what run.json
    records: {"kind": "gpt2"}, {"kind": "char", "chars": ...} or {"kind": "bpe", "file":
    a path}; a BPE file is copied into the folder as tokenizer.json. `run` records how the
    model was trained (the pretraining command stores its settings), `result` its numbers.

    Every file is replaced atomically, and run.json, which names the others, is removed
    first and written last: a save killed half-way leaves no run.json, never one that
    describes weights it did not write.

    >>> save_run(model, {"kind": "gpt2"}, "runs/tuned", run={"lr": 1e-4})
    """
    if save_dtype not in DTYPES:
        raise ValueError(f"save_dtype must be fp32 or bf16, got {save_dtype!r}")
    if tokenizer_spec.get("kind") not in ("gpt2", "char", "bpe"):
        raise ValueError(f"tokenizer_spec must be of kind gpt2, char or bpe, got {tokenizer_spec}")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    (out / "run.json").unlink(missing_ok=True)
    _save_model(model, out / "model.safetensors", DTYPES[save_dtype])
    spec = tokenizer_spec
    if spec["kind"] == "bpe":
        source, copy = Path(spec["file"]), out / "tokenizer.json"
        if not (copy.exists() and copy.samefile(source)):
            write_atomically(copy, lambda tmp: shutil.copyfile(source, tmp))
        spec = {"kind": "bpe", "file": "tokenizer.json"}
    info = {"format": RUN_FORMAT, "model": asdict(model.cfg), "tokenizer": spec,
            "weights": {"file": "model.safetensors", "dtype": str(DTYPES[save_dtype])[6:]},
            "run": run or {}, "result": result or {}}
    write_json(out / "run.json", info)
    return out


def write_json(path: Path, obj) -> None:
    """Write JSON atomically: a reader sees the old file or the new one, never half of one."""
    text = json.dumps(obj, indent=1, ensure_ascii=False)
    write_atomically(path, lambda tmp: tmp.write_text(text, "utf-8"))


def _read_info(folder: Path) -> dict:
    """run.json, or an InputError that says why this folder is no run folder."""
    path, info = folder / "run.json", None
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder: give a run folder, such as the --out of "
                         "python -m buildllm.pretrain")
    with suppress(OSError, ValueError):
        info = json.loads(path.read_text("utf-8"))
    if not isinstance(info, dict) or info.get("format") != RUN_FORMAT:
        raise InputError(f"{path} is missing or not a run.json of format {RUN_FORMAT!r}: give a "
                         "folder that buildllm.pretrain or save_run finished writing")
    return info


def load_run(folder: str | os.PathLike) -> Run:
    """The model a run folder holds (float32, eval mode, on the CPU), its tokenizer, and how it
    was made. A missing, foreign or damaged folder raises InputError, saying what to do.

    >>> model, tokenizer = load_run("runs/char")
    >>> tokenizer.decode(generate(model, torch.tensor([tokenizer.encode("ROMEO:")]), 50)[0])
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    info = _read_info(folder)
    weights = folder / info["weights"]["file"]
    try:
        state = {k: v.float() for k, v in load_file(weights).items()}
    except Exception as err:  # safetensors' own error for a cut file; OSError for none
        raise InputError(f"{weights} cannot be read ({type(err).__name__}: {err}): the file is "
                         "missing or incomplete; save or train the run again") from None
    model = GPTModel(GPTConfig(**info["model"]))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"out_head.weight"} if model.cfg.tie_embeddings else set()
    if unexpected or set(missing) != tied:
        raise InputError(f"{folder} holds weights that do not fit its model: missing "
                         f"{sorted(set(missing) - tied)}, unexpected {sorted(unexpected)}")
    spec = info["tokenizer"]
    if spec["kind"] == "bpe":
        spec = {**spec, "file": str(folder / spec["file"])}
    save_dtype = {str(t)[6:]: name for name, t in DTYPES.items()}[info["weights"]["dtype"]]
    return Run(model.eval(), load_tokenizer(spec), spec, info["run"], info["result"], save_dtype)


def read_checkpoint(path: Path, model_cfg: GPTConfig, settings: dict, data_sha256: str,
                    world_size: int) -> dict:
    """The resume checkpoint at `path`, refused unless this run wrote it: every setting in
    `settings` (those that must not change on resume), the model, the tokens (their sha256)
    and the number of processes must be as they were. The refusal names each difference."""
    try:
        ckpt = load_checkpoint(path)
    except Exception as err:  # a damaged or foreign file: say so, and touch nothing
        raise InputError(f"{path} cannot be read as a checkpoint: {err}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path} was not written by buildllm.pretrain")
    diffs = [f"model {k}: {v!r} in the checkpoint, {getattr(model_cfg, k)!r} now"
             for k, v in ckpt["model_config"].items() if getattr(model_cfg, k) != v]
    diffs += [f"--{k.replace('_', '-')}: {v!r} in the checkpoint, {settings[k]!r} now"
              for k, v in ckpt["config"].items() if k in settings and settings[k] != v]
    if ckpt["data_sha256"] != data_sha256:
        diffs.append("the tokens: the input text or the tokenizer has changed")
    if ckpt["world_size"] != world_size:
        diffs.append(f"processes: {ckpt['world_size']} in the checkpoint, {world_size} now")
    if diffs:
        raise InputError(f"{path} comes from a different run, so --resume cannot continue it:\n  "
                         + "\n  ".join(diffs)
                         + "\nResume with the checkpoint's settings, or choose another --out.")
    return ckpt


class _OldName(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        print(f"note: {option_string} is deprecated: use --run, the same run folder",
              file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_run_flag(parser: argparse.ArgumentParser) -> None:
    """--run FOLDER, the run folder a command loads (chat, serve). Its old name, --checkpoint,
    still works and says it is deprecated: a run folder is no checkpoint.pt."""
    parser.add_argument("--run", metavar="FOLDER",
                        help="a run folder (run.json + model.safetensors); default: the course's "
                             "Shakespeare model, which is not instruction-tuned")
    parser.add_argument("--checkpoint", dest="run", action=_OldName, help=argparse.SUPPRESS)
