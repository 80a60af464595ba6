"""Malformed run folders, tokenizer files and checkpoints: each stops every command that reads
it (load_run, chat, serve, the notebooks' load_base, pretrain --resume's read_checkpoint) with
one line that says what is wrong, and leaves the files as they were."""

import argparse
import hashlib
import json
import struct

import pytest
import torch

from buildllm import chat, pretrained, serve
from buildllm.model import GPTConfig, GPTModel
from buildllm.pretrain_data import InputError
from buildllm.runs import CHECKPOINT_FORMAT, load_run, read_checkpoint, save_run
from buildllm.tokenizers import BPETokenizer

DEEP = "[" * 100_000 + "]" * 100_000  # json.loads raises RecursionError on this


def snapshot(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A good run folder: a tiny GPT (vocabulary 264) with its BPE tokenizer."""
    folder = tmp_path_factory.mktemp("template")
    bpe = BPETokenizer.train("to be or not to be " * 50, 264, ["<|endoftext|>"])
    bpe.save(folder / "bpe.json")
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=264, context_length=16, emb_dim=8, n_heads=2,
                               n_layers=1))
    return save_run(model, {"kind": "bpe", "file": str(folder / "bpe.json")}, folder / "run")


@pytest.fixture
def run(template, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    for path in template.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


def edit_json(path, change):
    info = json.loads(path.read_text("utf-8"))
    change(info)
    path.write_text(json.dumps(info), "utf-8")


def model_setting(**settings):
    return lambda folder: edit_json(folder / "run.json", lambda i: i["model"].update(settings))


def run_json(key, value):
    return lambda folder: edit_json(folder / "run.json", lambda i: i.__setitem__(key, value))


def tokenizer_json(key, value):
    return lambda folder: edit_json(folder / "tokenizer.json",
                                    lambda t: t.__setitem__(key, value))


def write(name, content):
    return lambda folder: (folder / name).write_bytes(content)


def huge_header(folder):
    """A safetensors file whose first 8 bytes claim a header of 2**60 bytes."""
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", 1 << 60) + b"{}")


def many_chars(folder):  # a char tokenizer of 300 characters for a model of 264 ids
    edit_json(folder / "run.json", lambda i: i.__setitem__(
        "tokenizer", {"kind": "char", "chars": "".join(map(chr, range(300)))}))


TOO_BIG = "needs at least .* GB to load .* or its run.json is damaged"
BAD = {  # how the folder is broken: what the one line says
    "an unknown model setting": (model_setting(n_kv_heads=2),
                                 r"unknown settings \['n_kv_heads'\]"),
    "a setting of the wrong type": (model_setting(emb_dim="8"), "emb_dim must be int, got '8'"),
    "true as a number of layers": (model_setting(n_layers=True), "n_layers must be int"),
    "an impossible setting": (model_setting(drop_rate=2.0), r"drop_rate must be in \[0, 1\)"),
    "an absurd width": (model_setting(emb_dim=1_000_000, n_heads=2), TOO_BIG),
    "an absurd context": (model_setting(context_length=10**13), TOO_BIG),
    "a model that is no object": (run_json("model", [8, 2]), '"model" must be an object'),
    "a tokenizer outside the folder": (run_json("tokenizer", {"kind": "bpe",
                                                              "file": "../bpe.json"}),
                                       'a bpe tokenizer needs "file", the name of a file'),
    "an unknown tokenizer kind": (run_json("tokenizer", {"kind": "sentencepiece"}),
                                  '"tokenizer" must be'),
    "chars that are no string": (run_json("tokenizer", {"kind": "char", "chars": ["a"]}),
                                 'needs "chars", a non-empty string'),
    "an unknown weights dtype": (run_json("weights", {"file": "model.safetensors",
                                                      "dtype": "float16"}),
                                 '"weights" must name a file'),
    "a run that is no object": (run_json("run", [1]), '"run" and "result" must be objects'),
    "a deeply nested run.json": (write("run.json", DEEP.encode()), "not a run.json of format"),
    "a tokenizer with more ids than the model": (many_chars, "tokenizer has 300 ids but the "
                                                             "model only 264"),
    "special tokens as a string": (tokenizer_json("special_tokens", "<|endoftext|>"),
                                   '"special_tokens" must be a list of strings'),
    "token ids that are not integers": (tokenizer_json("vocab", {"a": "0"}),
                                        '"vocab" must map each token to its id'),
    "a deeply nested tokenizer.json": (write("tokenizer.json", DEEP.encode()),
                                       "tokenizer.json is not a valid tokenizer file: nested "
                                       "too deeply"),
    "a tokenizer.json that is a list": (write("tokenizer.json", b"[1, 2]"),
                                        "format is 'list', expected 'buildllm-bpe/1'"),
    "a safetensors header of 2**60 bytes": (huge_header, r"cannot be read \(SafetensorError"),
    "weights of another shape": (model_setting(context_length=32),
                                 r"of another shape \['pos_emb.weight'\]"),
}


@pytest.mark.parametrize(("how", "message"), [(h, m) for h, (_, m) in BAD.items()],
                         ids=list(BAD))
def test_a_malformed_run_folder_stops_load_run_with_one_line(run, how, message):
    BAD[how][0](run)
    before = snapshot(run)
    with pytest.raises(InputError, match=message) as stopped:
        load_run(run)
    assert "\n" not in str(stopped.value)
    assert snapshot(run) == before


@pytest.mark.parametrize("how", ["an unknown model setting", "special tokens as a string",
                                 "a safetensors header of 2**60 bytes", "an absurd width"])
@pytest.mark.parametrize("command", [chat, serve])
def test_chat_and_serve_stop_on_a_malformed_run_with_one_line(run, how, command):
    BAD[how][0](run)
    before = snapshot(run)
    with pytest.raises(SystemExit) as stopped:
        command.main(["--run", str(run), "--device", "cpu"])
    line = str(stopped.value.code)
    assert line.startswith("error: ") and "\n" not in line, line
    assert snapshot(run) == before


def test_the_notebooks_load_base_stops_on_a_malformed_run_with_one_line(run):
    BAD["an unknown model setting"][0](run)
    with pytest.raises(InputError, match="unknown settings") as stopped:
        pretrained.load_base(str(run))
    assert "\n" not in str(stopped.value)


# The resume checkpoint (python -m buildllm.pretrain --resume)


def _checkpoint_with(obj):
    return lambda path: torch.save(obj, path)


def _cut_short(path):
    torch.save({"format": CHECKPOINT_FORMAT, "weights": torch.zeros(1000)}, path)
    path.write_bytes(path.read_bytes()[:500])


CHECKPOINTS = {
    "random bytes": lambda path: path.write_bytes(b"\x80\x02not a checkpoint" * 10),
    "a file cut short": _cut_short,
    # A pickled object that weights_only refuses: torch's message then suggests turning it off.
    "a foreign pickle": _checkpoint_with({"format": CHECKPOINT_FORMAT,
                                          "args": argparse.Namespace(lr=1.0)}),
}


@pytest.mark.parametrize("how", CHECKPOINTS)
def test_a_corrupt_checkpoint_gets_a_course_message_never_torchs_weights_only_advice(tmp_path,
                                                                                   how):
    path = tmp_path / "checkpoint.pt"
    CHECKPOINTS[how](path)
    before = snapshot(tmp_path)
    with pytest.raises(InputError, match="cannot be read as a checkpoint") as stopped:
        read_checkpoint(path, GPTConfig(), {}, "0" * 64, 1)
    message = str(stopped.value)
    assert "weights_only" not in message and "\n" not in message
    assert "Resume from a copy you trust, or delete it" in message
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("ckpt", [{"format": CHECKPOINT_FORMAT},
                                  {"format": CHECKPOINT_FORMAT, "model_config": [],
                                   "config": {}, "data_sha256": "", "world_size": 1}],
                         ids=["keys missing", "a model_config that is no object"])
def test_a_checkpoint_of_the_wrong_shape_is_refused_in_one_line(tmp_path, ckpt):
    path = tmp_path / "checkpoint.pt"
    torch.save(ckpt, path)
    with pytest.raises(InputError, match="was not written by buildllm.pretrain"):
        read_checkpoint(path, GPTConfig(), {}, "0" * 64, 1)
