"""Text in, batches out, for the pretraining command (Meeting 5): `buildllm.pretrain` uses it.

    read_texts(["books/", "extra.txt"])  -> the documents, one string per .txt file
    make_tokenizer("char", documents)    -> a tokenizer and its spec (what run.json records)
    encode_documents(tokenizer, docs)    -> one long list of token ids
    split_ids(ids, val_fraction)         -> training and validation ids
    WindowStream(ids, context, ...)      -> training batches in a seeded order, resumable
    eval_batches(ids, context, ...)      -> the fixed windows every evaluation scores

Errors a user can cause (a missing or empty file, an unknown tokenizer) raise `InputError`
with a message that says what to change.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import DistributedSampler

from .data import gpt2_encoding
from .datasets import windows_at
from .tokenizers import BPETokenizer, CharTokenizer, Tokenizer

__all__ = ["InputError", "WindowStream", "encode_documents", "eval_batches", "load_tokenizer",
           "make_tokenizer", "read_texts", "split_ids"]


class InputError(ValueError):
    """Bad input from the user: the message says what is wrong and what to do."""


def read_texts(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """Read every named file, and every *.txt file under every named folder (sorted), as UTF-8.

    Only regular files are read: a named pipe would wait forever for a writer, and /dev/zero
    would fill the memory."""
    if not inputs:
        raise InputError("no input: name at least one text file or folder to train on")
    files: list[Path] = []
    for name in map(Path, inputs):
        if name.is_dir():
            found = sorted(p for p in name.rglob("*.txt") if p.is_file())
            if not found:
                raise InputError(f"the folder {name} holds no .txt files")
            files += found
        elif name.is_file():  # stat says a regular file: a pipe or a device is never opened
            files.append(name)
        elif name.exists():
            raise InputError(f"{name} is not a regular file (a pipe or a device, say): name a "
                             "text file, or a folder of them")
        else:
            raise InputError(f"{name} does not exist")
    texts = []
    for path in files:
        try:
            text = path.read_bytes().decode("utf-8")
        except OSError as err:
            raise InputError(f"cannot read {path}: {err.strerror or err}") from None
        except UnicodeDecodeError as err:
            raise InputError(f"{path} is not UTF-8 text (byte {err.start} is not valid)") from None
        if not text.strip():
            raise InputError(f"{path} is empty: there is nothing to train on in it")
        texts.append(text)
    return texts


def make_tokenizer(name: str, texts: Sequence[str]) -> tuple[Tokenizer, dict]:
    """The tokenizer `name` ("gpt2", "char" or a BPE json's path) and its spec for run.json.

    "char" takes its vocabulary from `texts`. A BPE spec records the file's path; the
    pretraining command copies the file into its output folder as tokenizer.json.
    """
    if name == "char":
        tok = CharTokenizer("".join(texts))
        return tok, {"kind": "char", "chars": tok.chars}
    if name != "gpt2" and not Path(name).is_file():
        raise InputError(f"--tokenizer must be gpt2, char or the path of a BPE tokenizer json "
                         f"saved in Meeting 2; {name} is none of them")
    spec = {"kind": "gpt2"} if name == "gpt2" else {"kind": "bpe", "file": name}
    return load_tokenizer(spec), spec


def load_tokenizer(spec: dict) -> Tokenizer:
    """The tokenizer a spec (what run.json records) describes."""
    if spec["kind"] == "gpt2":
        return gpt2_encoding()
    if spec["kind"] == "char":
        return CharTokenizer(spec["chars"])
    if spec["kind"] == "bpe":
        try:
            return BPETokenizer.load(Path(spec["file"]))  # Path: "./a.json" reads as "a.json"
        except (OSError, ValueError) as err:
            raise InputError(str(err)) from None
    raise InputError(f"unknown tokenizer kind {spec['kind']!r}")


def encode_documents(tokenizer: Tokenizer, texts: Sequence[str]) -> list[int]:
    """All documents as one list of ids, with <|endoftext|> between them where the tokenizer
    has it (GPT-2's and a BPE trained with it); without it, documents just follow each other.

    <|endoftext|> written inside a document stays plain text, so no file can fake a boundary.
    """
    separator = [] if tokenizer.eot_token is None else [tokenizer.eot_token]
    ids: list[int] = []
    for n, text in enumerate(texts):
        ids += (separator if n else []) + tokenizer.encode_ordinary(text)
    return ids


def split_ids(ids: Sequence[int], val_fraction: float) -> tuple[Sequence[int], Sequence[int]]:
    """(training, validation) ids: the last `val_fraction` of them is held out."""
    split = round(len(ids) * (1 - val_fraction))
    return ids[:split], ids[split:]


class WindowStream:
    """Training batches: non-overlapping windows, reshuffled every epoch, split across ranks.

    Each epoch cuts the tokens into windows at a new seeded offset (so a token does not sit at
    the same position in every epoch), and a `DistributedSampler` deals each rank its own
    share in a seeded order. Everything follows from (seed, epoch), so the position
    (epoch, windows drawn in it) is all a checkpoint needs to continue the same stream.
    """

    def __init__(self, ids: torch.Tensor, context: int, batch_size: int, seed: int,
                 rank: int = 0, world_size: int = 1):
        self.ids, self.context, self.batch_size, self.seed = ids, context, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.index = 0, 0
        self._load_epoch()

    def _load_epoch(self) -> None:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        room = min(self.context, len(self.ids) - self.context)  # keep at least one window
        offset = int(torch.randint(room, (1,), generator=g))
        n_windows = (len(self.ids) - 1 - offset) // self.context
        sampler = DistributedSampler(range(n_windows), num_replicas=self.world_size,
                                     rank=self.rank, shuffle=True, seed=self.seed)
        sampler.set_epoch(self.epoch)
        self.starts = [offset + i * self.context for i in sampler]

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next (batch_size, context) inputs and targets; an epoch may end mid-batch."""
        starts: list[int] = []
        while len(starts) < self.batch_size:
            if self.index == len(self.starts):
                self.epoch, self.index = self.epoch + 1, 0
                self._load_epoch()
            take = self.starts[self.index : self.index + self.batch_size - len(starts)]
            starts += take
            self.index += len(take)
        return windows_at(self.ids, starts, self.context)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.index = state["epoch"], state["index"]
        self._load_epoch()


def eval_batches(ids: torch.Tensor, context: int, batch_size: int, max_batches: int,
                 rank: int = 0, world_size: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's share of the fixed evaluation windows: up to `max_batches` batches' worth of
    non-overlapping windows spread evenly over `ids`, the same ones at every evaluation."""
    n_windows = (len(ids) - 1) // context
    count = min(n_windows, max_batches * batch_size)
    picks = torch.linspace(0, n_windows - 1, count).round().long()[rank::world_size]
    starts = (picks * context).tolist()
    return [windows_at(ids, starts[i : i + batch_size], context)
            for i in range(0, len(starts), batch_size)]
