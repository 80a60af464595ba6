"""The pretraining command: it learns, resumes exactly, survives a kill, runs on 2 processes,
refuses bad input without touching the disk, and leaves a model that `load_run` reads back."""

import contextlib
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from buildllm.data import fetch
from buildllm.pretrain import main, parse_config
from buildllm.pretrain_data import WindowStream, encode_documents, read_texts
from buildllm.runs import load_run
from buildllm.tokenizers import BPETokenizer, CharTokenizer
from buildllm.training import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

# A model small enough that a step takes milliseconds: context 32, 32 dims, 2 layers.
TINY = ["--context-length", "32", "--emb-dim", "32", "--n-heads", "2", "--n-layers", "2",
        "--batch-size", "8", "--eval-batches", "2", "--lr", "3e-3"]


@pytest.fixture(scope="module")
def shakespeare():
    return fetch("tinyshakespeare.txt")


@pytest.fixture
def text(tmp_path, shakespeare):
    """The first 20,000 characters of Shakespeare, as a file."""
    path = tmp_path / "text.txt"
    path.write_text(shakespeare.read_text("utf-8")[:20_000], "utf-8")
    return path


def char_run(text, out, *extra) -> list[str]:
    return [str(text), "--tokenizer", "char", *TINY, "--out", str(out), *extra]


def weights(folder) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [name for name in a if not torch.equal(a[name], b[name])]
    assert not different, f"weights differ: {different}"


def snapshot(folder) -> dict[str, str] | None:
    """Everything under `folder`: each file's sha256, "dir" for folders; None if no folder."""
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            if p.is_file() else "dir" for p in [folder, *folder.rglob("*")]}


def events(out, kind: str) -> list[dict]:
    """The log's records of one kind. A line cut short by a kill is no record: skip it."""
    records = []
    for line in (out / "log.jsonl").read_text("utf-8").split("\n")[:-1]:
        with contextlib.suppress(json.JSONDecodeError):
            records.append(json.loads(line))
    return [r for r in records if r["event"] == kind]


# -- it learns -------------------------------------------------------------------------

def test_the_loss_falls_from_about_ln_vocab_on_shakespeare_characters(shakespeare, tmp_path):
    summary = main(char_run(shakespeare, tmp_path / "run", "--emb-dim", "64", "--n-heads", "4",
                            "--drop-rate", "0", "--batch-size", "16", "--steps", "100",
                            "--eval-every", "50", "--eval-batches", "4"))
    history = summary["history"]
    assert history["step"] == [0, 50, 100]
    assert abs(history["val_loss"][0] - math.log(65)) < 0.15  # a fresh model guesses uniformly
    assert summary["val_loss"] == history["val_loss"][-1] < history["val_loss"][0] - 1.2
    assert summary["step"] == 100 and summary["tokens"] == 100 * 16 * 32
    assert summary["tokens_per_s"] > 0 and summary["mfu"] > 0
    evals = events(tmp_path / "run", "eval")
    assert [e["step"] for e in evals] == [0, 50, 100]
    assert all(e["tokens_per_s"] > 0 for e in evals[1:])
    assert (tmp_path / "run" / "loss.png").read_bytes()[:4] == b"\x89PNG"


# -- checkpoints -----------------------------------------------------------------------

SLOW_RUN = """
import sys, time, torch
import buildllm.pretrain as pretrain

torch.set_num_threads({threads})
real = pretrain.batch_loss
pretrain.batch_loss = lambda *args: (time.sleep(0.05), real(*args))[1]  # time to kill it
pretrain.main(sys.argv[1:])
"""


def test_a_run_killed_mid_way_resumes_to_the_same_weights_as_an_uninterrupted_one(text, tmp_path):
    args = ["--steps", "30", "--eval-every", "10", "--checkpoint-every", "3", "--drop-rate", "0.1"]
    main(char_run(text, tmp_path / "straight", *args))

    killed = tmp_path / "killed"
    code = SLOW_RUN.format(threads=torch.get_num_threads())
    proc = subprocess.Popen([sys.executable, "-c", code, *char_run(text, killed, *args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not ((killed / "log.jsonl").exists() and events(killed, "checkpoint")):
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    saved = load_checkpoint(killed / "checkpoint.pt")  # whole, whenever the kill came
    assert 3 <= saved["step"] < 30 and saved["step"] % 3 == 0
    assert not (killed / "model.safetensors").exists()

    summary = main(["--out", str(killed), "--resume"])  # the settings come from the checkpoint
    assert summary["step"] == 30
    assert_same_weights(weights(killed), weights(tmp_path / "straight"))
    assert not list(killed.glob(".*.tmp"))
    assert events(killed, "resume")[0]["step"] == saved["step"]


# -- several processes -----------------------------------------------------------------

def test_torchrun_with_two_cpu_processes_ends_with_identical_weights_and_learns(text, tmp_path):
    out = tmp_path / "ddp"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
         str(ROOT / "tests" / "ddp_probe.py"),
         *char_run(text, out, "--steps", "20", "--eval-every", "10", "--device", "cpu")],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert_same_weights(ranks[0]["model"], ranks[1]["model"])
    saved = weights(out)
    assert_same_weights(saved, {k: ranks[0]["model"][k] for k in saved})
    losses = ranks[0]["summary"]["history"]["val_loss"]
    assert losses[-1] < losses[0] - 0.4
    start = events(out, "start")[0]
    assert start["processes"] == 2 and start["device"] == "cpu"
    assert ranks[0]["summary"]["tokens"] == 20 * 8 * 32 * 2  # each process its own batch
    assert len(load_checkpoint(out / "checkpoint.pt")["rng"]) == 2


def test_two_ranks_draw_different_windows_and_together_cover_an_epoch():
    ids = torch.arange(1010)  # 100 windows of 10 (+1) tokens, whatever the epoch's offset
    streams = [WindowStream(ids, context=10, batch_size=5, seed=0, rank=r, world_size=2)
               for r in (0, 1)]
    starts = [torch.cat([s.next_batch()[0][:, 0] for _ in range(10)]).tolist() for s in streams]
    assert not set(starts[0]) & set(starts[1])
    assert len(set(starts[0]) | set(starts[1])) == 100  # every window of the epoch, once
    assert len({start % 10 for start in starts[0] + starts[1]}) == 1  # one offset per epoch
    assert [s.state_dict() for s in streams] == [{"epoch": 0, "index": 50}] * 2
    streams[0].next_batch()
    assert streams[0].state_dict() == {"epoch": 1, "index": 5}


def test_a_window_stream_restored_from_its_state_continues_the_same_batches():
    ids = torch.arange(500)
    stream = WindowStream(ids, context=16, batch_size=7, seed=3)
    for _ in range(5):  # into the second epoch: 30 windows an epoch, 35 drawn
        stream.next_batch()
    state = stream.state_dict()
    expected = [stream.next_batch() for _ in range(6)]
    again = WindowStream(ids, context=16, batch_size=7, seed=3)
    again.load_state_dict(state)
    for (x, y), (x2, y2) in zip(expected, (again.next_batch() for _ in range(6)), strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)
        assert torch.equal(y, x + 1)  # targets are the inputs shifted by one token


# -- bad input -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, shakespeare):
    """A short run's output folder, to resume or to overwrite."""
    folder = tmp_path_factory.mktemp("finished")
    text = folder / "text.txt"
    text.write_text(shakespeare.read_text("utf-8")[:5_000], "utf-8")
    main(char_run(text, folder / "run", "--steps", "2"))
    return folder / "run", text


def bad_cases(tmp_path, finished_run):
    """(flags, expected message, output folder) for each kind of bad input."""
    import shutil

    done = tmp_path / "done"
    shutil.copytree(finished_run[0], done)
    good = finished_run[1]
    (tmp_path / "empty.txt").write_text("\n \n", "utf-8")
    (tmp_path / "latin1.txt").write_bytes("café, naïve".encode("latin-1") * 100)
    (tmp_path / "notext").mkdir()
    (tmp_path / "notext" / "notes.md").write_text("not a .txt file", "utf-8")
    (tmp_path / "short.txt").write_text("To be, or not to be.", "utf-8")
    (tmp_path / "config.json").write_text('{"lr": 1e-3, "learning_rate": 1e-3}', "utf-8")
    (tmp_path / "other.txt").write_text(good.read_text("utf-8")[:4_000], "utf-8")
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "checkpoint.pt").write_bytes(
        (done / "checkpoint.pt").read_bytes()[:1000])
    new = tmp_path / "new"
    return {
        "empty": ([tmp_path / "empty.txt"], "empty.txt is empty", new),
        "missing": ([tmp_path / "missing.txt"], "missing.txt does not exist", new),
        "not utf-8": ([tmp_path / "latin1.txt"], "is not UTF-8 text", new),
        "no txt in folder": ([tmp_path / "notext"], "holds no .txt files", new),
        "too short": ([tmp_path / "short.txt"], "training split has 18 tokens", new),
        "val too short": ([good, "--val-fraction", "0.001"], "validation split has 5 tokens",
                          new),
        "heads": ([good, "--n-heads", "3"], "not divisible by n_heads=3", new),
        "config file": ([good, "--config-file", tmp_path / "config.json"],
                        "unknown settings ['learning_rate']", new),
        "resume nothing": ([good, "--resume"], "no checkpoint to resume from", new),
        "damaged checkpoint": ([good, "--resume"], "cannot be read as a checkpoint",
                               tmp_path / "damaged"),
        "overwrite": ([good], "already holds a checkpoint: add --resume", done),
        "other model": ([good, "--resume", "--emb-dim", "16", "--n-layers", "1"],
                        "model emb_dim: 32 in the checkpoint, 16 now", done),
        "other lr": ([good, "--resume", "--lr", "1e-2"],
                     "--lr: 0.003 in the checkpoint, 0.01 now", done),
        "other text": ([tmp_path / "other.txt", "--resume"],
                       "the input text or the tokenizer has changed", done),
    }


CASES = ["empty", "missing", "not utf-8", "no txt in folder", "too short", "val too short",
         "heads", "config file", "resume nothing", "damaged checkpoint", "overwrite",
         "other model", "other lr", "other text"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_stops_with_a_clear_message_and_changes_nothing_on_disk(
    case, tmp_path, finished_run
):
    inputs, message, out = bad_cases(tmp_path, finished_run)[case]
    before = snapshot(out)
    flags = [str(x) for x in inputs]
    with pytest.raises(SystemExit) as stopped:
        main([flags[0], "--tokenizer", "char", *TINY, "--out", str(out), *flags[1:]])
    assert message in str(stopped.value)
    assert snapshot(out) == before


def test_resuming_from_another_model_names_every_differing_field(tmp_path, finished_run):
    with pytest.raises(SystemExit) as stopped:
        main(char_run(finished_run[1], finished_run[0], "--resume", "--emb-dim", "16",
                      "--n-layers", "1"))
    message = str(stopped.value)
    assert "emb_dim: 32 in the checkpoint, 16 now" in message
    assert "n_layers: 2 in the checkpoint, 1 now" in message
    assert "n_heads" not in message


# -- settings, tokenizers, and the saved model -----------------------------------------

def test_flags_override_the_config_file_which_overrides_the_defaults(text, tmp_path):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"inputs": [str(text)], "tokenizer": "char", "steps": 9,
                                  "lr": 0.002, "eval-every": 2, "context_length": 32,
                                  "emb_dim": 32, "n_heads": 2, "n_layers": 2}), "utf-8")
    out = tmp_path / "run"
    summary = main(["--config-file", str(config), "--steps", "3", "--out", str(out)])
    assert summary["step"] == 3 and summary["history"]["step"] == [0, 2, 3]
    run = json.loads((out / "run.json").read_text("utf-8"))["run"]
    assert (run["steps"], run["lr"], run["eval_every"], run["batch_size"]) == (3, 0.002, 2, 16)
    # A finished run's run.json is a config file too: it trains the same way again.
    again = parse_config(["--config-file", str(out / "run.json"), "--out", "elsewhere"])
    assert (again.steps, again.lr, again.out, again.inputs) == (3, 0.002, "elsewhere", [str(text)])


def test_a_meeting_2_bpe_tokenizer_trains_and_travels_with_the_model(shakespeare, tmp_path):
    words = shakespeare.read_text("utf-8")[:30_000]
    books = tmp_path / "books"
    (books / "b").mkdir(parents=True)
    (books / "a.txt").write_text(words[:15_000], "utf-8")
    (books / "b" / "two.txt").write_text(words[15_000:], "utf-8")
    bpe = BPETokenizer.train(words, vocab_size=300, special_tokens=["<|endoftext|>"])
    bpe.save(tmp_path / "bpe.json")
    out = tmp_path / "run"
    main([str(books), "--tokenizer", str(tmp_path / "bpe.json"), *TINY, "--steps", "4",
          "--out", str(out)])
    model, tokenizer = load_run(out)
    assert isinstance(tokenizer, BPETokenizer) and model.cfg.vocab_size == 300
    assert tokenizer.decode(tokenizer.encode(" To be, or not")) == " To be, or not"
    assert json.loads((out / "run.json").read_text("utf-8"))["tokenizer"] == {
        "kind": "bpe", "file": "tokenizer.json"}
    ids = encode_documents(bpe, read_texts([books]))  # sorted: a.txt, then b/two.txt
    assert ids.count(bpe.special_tokens["<|endoftext|>"]) == 1
    assert bpe.decode(ids) == words[:15_000] + "<|endoftext|>" + words[15_000:]


def test_gpt2_tokens_join_documents_with_endoftext_and_chars_just_follow(tmp_path):
    from buildllm.data import gpt2_encoding

    enc = gpt2_encoding()
    assert encode_documents(enc, ["Hello", " world<|endoftext|>"]) == \
        enc.encode("Hello") + [enc.eot_token] + enc.encode_ordinary(" world<|endoftext|>")
    chars = CharTokenizer("abc")
    assert encode_documents(chars, ["ab", "ca"]) == [0, 1, 2, 0]
    with pytest.raises(ValueError, match="'d' is not in"):
        chars.encode("abd")


@pytest.mark.parametrize("save_dtype", ["fp32", "bf16"])
def test_load_run_gives_back_the_trained_model_and_its_tokenizer(text, tmp_path, save_dtype):
    out = tmp_path / "run"
    summary = main(char_run(text, out, "--steps", "3", "--save-dtype", save_dtype))
    model, tokenizer = load_run(out)
    assert not model.training and isinstance(tokenizer, CharTokenizer)
    assert tokenizer.decode(tokenizer.encode("ROMEO: ")) == "ROMEO: "
    info = json.loads((out / "run.json").read_text("utf-8"))
    assert info["result"]["val_loss"] == summary["val_loss"]
    assert info["model"] == {"vocab_size": tokenizer.n_vocab, "context_length": 32,
                             "emb_dim": 32, "n_heads": 2, "n_layers": 2, "drop_rate": 0.1,
                             "qkv_bias": True, "tie_embeddings": True}
    final = load_checkpoint(out / "checkpoint.pt")["model"]
    for name, tensor in model.state_dict().items():
        assert tensor.dtype == torch.float32
        expected = final[name] if save_dtype == "fp32" else final[name].bfloat16().float()
        assert torch.equal(tensor, expected), name
    stored = weights(out)
    assert "out_head.weight" not in stored  # tied to tok_emb.weight, stored once
    assert {t.dtype for t in stored.values()} == {torch.float32 if save_dtype == "fp32"
                                                  else torch.bfloat16}
