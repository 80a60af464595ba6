"""The run folder: `load_run` gives back all that `save_run` wrote, so a copy is identical; a
save cut short leaves no run.json; a missing, foreign or damaged folder stops with one line
that says what to do, and changes nothing; the commands take it as --run, and still as
--checkpoint with a note."""

import json

import pytest
import torch

import buildllm.runs
from buildllm import chat, serve
from buildllm.model import GPTConfig, GPTModel
from buildllm.pretrain_data import InputError
from buildllm.runs import load_run, save_run
from buildllm.tokenizers import BPETokenizer


def files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def bpe(tmp_path):
    bpe = BPETokenizer.train("to be or not to be " * 50, 264, ["<|endoftext|>"])
    bpe.save(tmp_path / "bpe.json")
    return bpe


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GPTModel(GPTConfig(vocab_size=264, context_length=16, emb_dim=8, n_heads=2,
                              n_layers=1))


@pytest.fixture
def run_folder(tmp_path, bpe, model):
    """A run folder of a tiny GPT with a BPE tokenizer."""
    return save_run(model, {"kind": "bpe", "file": str(tmp_path / "bpe.json")}, tmp_path / "run",
                    run={"lr": 0.1}, result={"val_loss": 1.5})


def test_save_run_writes_a_folder_load_run_reads_with_its_bpe_tokenizer(run_folder, bpe, model):
    loaded, tokenizer = load_run(run_folder)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 loaded.state_dict().values(), strict=True))
    assert tokenizer.to_printable() == bpe.to_printable()
    info = json.loads((run_folder / "run.json").read_text("utf-8"))
    assert info["tokenizer"] == {"kind": "bpe", "file": "tokenizer.json"}
    assert (info["run"], info["result"]) == ({"lr": 0.1}, {"val_loss": 1.5})
    save_run(loaded, {"kind": "bpe", "file": str(run_folder / "tokenizer.json")},
             run_folder)  # itself
    assert load_run(run_folder)[1].to_printable() == bpe.to_printable()


def test_a_failed_save_run_leaves_no_run_json_describing_other_weights(run_folder, model,
                                                                       monkeypatch):
    def full_disk(*args):
        raise OSError("No space left on device")

    monkeypatch.setattr(buildllm.runs, "_save_model", full_disk)
    with pytest.raises(OSError, match="No space"):
        save_run(model, {"kind": "gpt2"}, run_folder)
    assert not (run_folder / "run.json").exists()
    with pytest.raises(ValueError, match="tokenizer_spec must be"):
        save_run(model, {"kind": "sentencepiece"}, run_folder)


@pytest.mark.parametrize("spec", ["bpe", "char in bfloat16"])
def test_a_loaded_run_saves_again_as_the_same_files(run_folder, model, tmp_path, spec):
    if spec == "char in bfloat16":  # the same weights, with a tokenizer of 264 characters
        run_folder = save_run(model, {"kind": "char", "chars": "".join(map(chr, range(264)))},
                              tmp_path / "char", run={"steps": 3}, save_dtype="bf16")
    copy = load_run(run_folder).save(tmp_path / "copy")
    assert files(copy) == files(run_folder)
    assert files(load_run(copy).save(tmp_path / "copy2")) == files(run_folder)


def test_a_run_unpacks_as_model_and_tokenizer(run_folder):
    run = load_run(run_folder)
    model, tokenizer = run
    assert model is run.model is run[0] and tokenizer is run.tokenizer is run[1]
    assert not model.training and model.tok_emb.weight.dtype == torch.float32
    assert tokenizer.decode(tokenizer.encode("to be")) == "to be"
    assert (run.settings, run.result, run.save_dtype) == ({"lr": 0.1}, {"val_loss": 1.5}, "fp32")


def _damage(folder, how):
    if how == "a missing folder":
        return folder.parent / "nowhere"
    if how == "a run.json of another format":
        info = json.loads((folder / "run.json").read_text("utf-8"))
        (folder / "run.json").write_text(json.dumps({**info, "format": "other/2"}), "utf-8")
    elif how == "no run.json":
        (folder / "run.json").unlink()
    elif how == "a truncated model.safetensors":
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:300])
    return folder


BAD = {  # how a folder is damaged, and what the error says
    "a missing folder": "nowhere is not a folder: give a run folder",
    "a run.json of another format": "not a run.json of format 'buildllm-run/1': give",
    "no run.json": "run.json is missing",
    "a truncated model.safetensors": "model.safetensors cannot be read",
}


@pytest.mark.parametrize(("how", "message"), BAD.items())
def test_a_bad_run_folder_stops_with_one_line_and_changes_nothing(run_folder, how, message):
    folder = _damage(run_folder, how)
    before = files(run_folder.parent / "run")
    with pytest.raises(InputError, match=message) as stopped:
        load_run(folder)
    assert "\n" not in str(stopped.value)
    assert files(run_folder.parent / "run") == before


@pytest.mark.parametrize("command", [serve, chat])
def test_the_commands_take_a_run_folder_as_run_and_still_as_checkpoint(command, capsys):
    assert command._parser().parse_args(["--run", "runs/a"]).run == "runs/a"
    assert capsys.readouterr().err == ""
    assert command._parser().parse_args(["--checkpoint", "runs/b"]).run == "runs/b"
    note = capsys.readouterr().err
    assert note.count("\n") == 1 and "--checkpoint is deprecated: use --run" in note
