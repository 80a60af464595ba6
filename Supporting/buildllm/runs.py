"""The run folder and the resume checkpoint (Meetings 5 to 7): where a trained model is kept.

A run folder is what `python -m buildllm.pretrain` leaves and what the capstone, the chat, the
server and `buildllm.pretrained` load: model.safetensors (the weights, without the tied
out_head.weight), tokenizer.json (a BPE tokenizer's copy, if one was used) and run.json, written
last, which says how to rebuild the model:

    {"format": "buildllm-run/1", "model": {GPTConfig's fields}
                                          | {"family": "decoder", DecoderConfig's fields},
     "tokenizer": {"kind": "gpt2"} | {"kind": "char", "chars": "..."}
                  | {"kind": "bpe", "file": "tokenizer.json"},
     "weights": {"file": "model.safetensors", "dtype": "float32"},
     "run": {how it was trained}, "result": {final losses, tokens/s...}}

    >>> model, tokenizer = load_run("runs/char")   # a Run unpacks as (model, tokenizer)
    >>> load_run("runs/char").save("runs/copy")     # everything save_run needs: one line

checkpoint.pt, beside them while a run trains, is the resume checkpoint that --resume reads
(`read_checkpoint`), refusing one that another run wrote.

A "model" without "family" is a GPTModel's, as every run.json was before `buildllm.decoder`
existed; "family": "decoder" rebuilds a `Decoder` (Llama 3, Qwen3...) from DecoderConfig's
fields, so every command that loads a run folder runs either.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from contextlib import suppress
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from .costs import check_fits_in_memory
from .decoder import Decoder, DecoderConfig
from .model import GPTConfig, GPTModel
from .modern import RopeScaling
from .pretrain_data import InputError, load_tokenizer
from .tokenizers import Tokenizer
from .training import load_checkpoint
from .utils import write_atomically

__all__ = ["CHECKPOINT_FORMAT", "DTYPES", "RUN_FORMAT", "Run", "add_run_flag", "config_record",
           "load_run", "new_model", "read_checkpoint", "save_run", "write_json"]

RUN_FORMAT = "buildllm-run/1"
CHECKPOINT_FORMAT = "buildllm-checkpoint/1"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}  # what model.safetensors may hold
_DTYPE_NAMES = {str(t)[6:]: name for name, t in DTYPES.items()}  # as run.json: "float32" -> "fp32"
_FAMILIES = {"gpt": GPTConfig, "decoder": DecoderConfig}  # run.json's "model" "family"


def config_record(cfg: GPTConfig | DecoderConfig) -> dict:
    """A model config as run.json and checkpoint.pt record it: its fields, and for a Decoder's
    config the family marker (a GPTConfig's record stays as it always was)."""
    record = asdict(cfg)
    return {"family": "decoder", **record} if isinstance(cfg, DecoderConfig) else record


def new_model(cfg: GPTConfig | DecoderConfig) -> GPTModel | Decoder:
    """A freshly initialized model of `cfg`'s family: GPTModel for GPT-2's, else a Decoder."""
    return Decoder(cfg) if isinstance(cfg, DecoderConfig) else GPTModel(cfg)


@dataclass
class Run:
    """A run folder, loaded: the model (float32, eval mode, on the CPU), its tokenizer, and
    the rest of what `save_run` records. It unpacks as (model, tokenizer)."""

    model: GPTModel | Decoder
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
    state = {name: t.detach().to("cpu", dtype).contiguous()  # blocks' weights are transposed
             for name, t in model.state_dict().items()}
    if model.cfg.tie_embeddings:
        del state["out_head.weight"]  # tok_emb.weight again: safetensors refuses shared tensors
    # Written by Python, not by safetensors' save_file: a full disk is then an OSError that
    # names the file, which every command reports in one line, not a SafetensorError.
    data = save(state, metadata={"format": "pt"})
    write_atomically(path, lambda tmp: tmp.write_bytes(data))


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
    info = {"format": RUN_FORMAT, "model": config_record(model.cfg), "tokenizer": spec,
            "weights": {"file": "model.safetensors", "dtype": str(DTYPES[save_dtype])[6:]},
            "run": run or {}, "result": result or {}}
    write_json(out / "run.json", info)
    return out


def write_json(path: Path, obj) -> None:
    """Write JSON atomically: a reader sees the old file or the new one, never half of one."""
    text = json.dumps(obj, indent=1, ensure_ascii=False)
    write_atomically(path, lambda tmp: tmp.write_text(text, "utf-8"))


def _read_info(folder: Path) -> dict:
    """run.json, checked, or an InputError that says why this folder is no run folder."""
    path, info = folder / "run.json", None
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder: give a run folder, such as the --out of "
                         "python -m buildllm.pretrain")
    with suppress(OSError, ValueError, RecursionError):  # RecursionError: nested too deeply
        info = json.loads(path.read_text("utf-8"))
    if not isinstance(info, dict) or info.get("format") != RUN_FORMAT:
        raise InputError(f"{path} is missing or not a run.json of format {RUN_FORMAT!r}: give a "
                         "folder that buildllm.pretrain or save_run finished writing")
    if problem := _problem_in(info):
        raise InputError(f"{path} is damaged: {problem}; save or train the run again")
    return {"run": {}, "result": {}, **info}


def _problem_in(info: dict) -> str | None:
    """What is wrong with a run.json's parts other than "model" (see _model_config), or None."""
    tokenizer, weights = info.get("tokenizer"), info.get("weights")
    kind = tokenizer.get("kind") if isinstance(tokenizer, dict) else None
    if kind not in ("gpt2", "char", "bpe"):
        return '"tokenizer" must be {"kind": "gpt2"}, {"kind": "char", ...} or {"kind": "bpe", ...}'
    if kind == "char" and not (isinstance(tokenizer.get("chars"), str) and tokenizer["chars"]):
        return 'a char tokenizer needs "chars", a non-empty string'
    if kind == "bpe" and not _plain_name(tokenizer.get("file")):
        return 'a bpe tokenizer needs "file", the name of a file in the run folder'
    if not (isinstance(weights, dict) and _plain_name(weights.get("file"))
            and weights.get("dtype") in _DTYPE_NAMES):
        return '"weights" must name a file in the run folder and a dtype, float32 or bfloat16'
    if not all(isinstance(info.get(part, {}), dict) for part in ("run", "result")):
        return '"run" and "result" must be objects'
    return None


def _plain_name(name: object) -> bool:
    """True for a file name with no folder in it: a run folder only names its own files."""
    return isinstance(name, str) and name not in ("", ".", "..") and Path(name).name == name


def _model_config(model: object, path: Path) -> GPTConfig | DecoderConfig:
    """run.json's "model" as a GPTConfig or, with "family": "decoder", a DecoderConfig, its
    every key and type checked: a wrong one gives a one-line InputError here instead of a
    TypeError deep in the model."""
    if not isinstance(model, dict):
        raise InputError(f'{path}: "model" must be an object of a model config\'s fields')
    model = dict(model)
    family = model.pop("family", "gpt")
    if not isinstance(family, str) or family not in _FAMILIES:
        raise InputError(f'{path}: "model" family must be "decoder" or left out (GPT-2\'s), '
                         f"got {family!r}: this run folder needs a newer buildllm, or is damaged")
    kind = _FAMILIES[family]
    _check_fields(model, kind, path)
    try:
        if isinstance(model.get("rope_scaling"), dict):
            model["rope_scaling"] = RopeScaling(**model["rope_scaling"])
        return kind(**model)
    except (TypeError, ValueError) as err:
        raise InputError(f"{path}: {err}") from None


def _check_fields(model: dict, kind: type, path: Path) -> None:
    """Refuse a "model" key that `kind` (GPTConfig or DecoderConfig) lacks, or a value of the
    wrong type; None is fine where the field's default is None (filled in from the others)."""
    defaults = asdict(kind())  # DecoderConfig() fills its None sizes in: their type is int
    optional = {f.name for f in fields(kind) if f.default is None}
    if unknown := sorted(set(model) - set(defaults)):
        raise InputError(f'{path}: "model" has unknown settings {unknown}; {kind.__name__} '
                         f"knows {sorted(defaults)}")
    for name, value in model.items():
        if value is None and name in optional:
            continue
        want = dict if name == "rope_scaling" else type(defaults[name])  # a JSON 2 is a float
        if isinstance(value, bool) != (want is bool) or not isinstance(
                value, (int, float) if want is float else want):
            raise InputError(f'{path}: "model" {name} must be {want.__name__}, got {value!r}')


def load_run(folder: str | os.PathLike) -> Run:
    """The model a run folder holds (float32, eval mode, on the CPU), its tokenizer, and how it
    was made. A missing, foreign, damaged or impossibly large folder raises a one-line
    InputError, saying what to do, before anything big is allocated.

    >>> model, tokenizer = load_run("runs/char")
    >>> tokenizer.decode(generate(model, torch.tensor([tokenizer.encode("ROMEO:")]), 50)[0])
    """
    folder = Path(folder)
    info = _read_info(folder)
    cfg = _model_config(info["model"], folder / "run.json")
    try:  # a run.json whose sizes are absurd is damaged: one line, not a crash
        check_fits_in_memory(cfg, training=False)
    except InputError as err:
        raise InputError(f"{folder}: {err}, or its run.json is damaged") from None
    spec = info["tokenizer"]
    if spec["kind"] == "bpe":
        spec = {**spec, "file": str(folder / spec["file"])}
    tokenizer = load_tokenizer(spec)
    if tokenizer.n_vocab > cfg.vocab_size:
        raise InputError(f"{folder}: its tokenizer has {tokenizer.n_vocab} ids but the model "
                         f"only {cfg.vocab_size}: the run folder's files do not belong together")
    model = _load_weights(folder / info["weights"]["file"], cfg)
    return Run(model.eval(), tokenizer, spec, info["run"], info["result"],
               _DTYPE_NAMES[info["weights"]["dtype"]])


def _load_weights(path: Path, cfg: GPTConfig | DecoderConfig) -> GPTModel | Decoder:
    """A GPTModel or Decoder of `cfg` holding the weights in the safetensors file at `path`."""
    try:
        state = {k: v.float() for k, v in load_file(path).items()}
    except Exception as err:  # safetensors' own error for a cut file; OSError for none
        reason = str(err).splitlines()[0] if str(err) else ""
        raise InputError(f"{path} cannot be read ({type(err).__name__}: {reason}): the file is "
                         "missing or incomplete; save or train the run again") from None
    model = new_model(cfg)
    expected = model.state_dict()
    tied = {"out_head.weight"} if cfg.tie_embeddings else set()
    missing = sorted(set(expected) - set(state) - tied)
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        raise InputError(f"{path.parent} holds weights that do not fit its model: missing "
                         f"{missing}, unexpected {unexpected}, of another shape {wrong}")
    model.load_state_dict(state, strict=False)
    return model


def read_checkpoint(path: Path, model_cfg: GPTConfig | DecoderConfig, settings: dict,
                    data_sha256: str, world_size: int) -> dict:
    """The resume checkpoint at `path`, refused unless this run wrote it: every setting in
    `settings` (those that must not change on resume), the model, the tokens (their sha256)
    and the number of processes must be as they were. The refusal names each difference."""
    try:
        ckpt = load_checkpoint(path)
    except Exception as err:  # a damaged or foreign file: say so, and touch nothing
        # Never pass on torch's advice to retry with weights_only=False: for a file from
        # elsewhere, that would let it run any code it holds.
        raise InputError(f"{path} cannot be read as a checkpoint ({type(err).__name__}): it is "
                         "damaged, cut short or not from buildllm.pretrain. Resume from a copy "
                         "you trust, or delete it to start the run afresh") from None
    if not (isinstance(ckpt, dict) and ckpt.get("format") == CHECKPOINT_FORMAT
            and isinstance(ckpt.get("model_config"), dict) and isinstance(ckpt.get("config"), dict)
            and {"data_sha256", "world_size"} <= set(ckpt)):
        raise InputError(f"{path} was not written by buildllm.pretrain")
    was, now = ckpt["model_config"], config_record(model_cfg)
    families = [record.get("family", "gpt") for record in (was, now)]  # a GPT's has no marker
    diffs = [f"model {k}: {was.get(k)!r} in the checkpoint, {now.get(k)!r} now"
             for k in {**was, **now} if was.get(k) != now.get(k)]
    if families[0] != families[1]:  # then every field differs: name the family alone
        diffs = [f"model family: {families[0]} in the checkpoint, {families[1]} now"]
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
