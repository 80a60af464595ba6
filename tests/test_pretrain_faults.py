"""The pretraining command under faults: it loses nothing and lets nobody in.

A kill in the middle of a checkpoint write, a run that diverges, a full disk, a second run
into the same folder, a lock left by a dead run, and every kind of bad setting, path or file:
each either stops with one clear line and the disk as it was, or carries on to the same
weights an undisturbed run gets.
"""

import errno
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from test_pretrain import assert_same_weights, char_run, events, snapshot, weights

import buildllm.costs as costs
import buildllm.pretrain as pretrain
from buildllm.data import fetch
from buildllm.model import CONFIGS, GPTConfig, GPTModel, count_parameters
from buildllm.pretrain import main
from buildllm.training import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def short_text(tmp_path_factory):
    """The first 6,000 characters of Shakespeare, as a file."""
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text(fetch("tinyshakespeare.txt").read_text("utf-8")[:6_000], "utf-8")
    return path


def refused(argv: list, out: Path) -> str:
    """Run the command, which must stop with an error and leave `out` as it was: the message."""
    before = snapshot(out)
    with pytest.raises(SystemExit) as stopped:
        main([str(a) for a in argv])
    assert snapshot(out) == before
    message = str(stopped.value)
    assert message.startswith("error: ") and "\n" not in message
    return message


# -- settings --------------------------------------------------------------------------

@pytest.mark.parametrize("flags, message", [
    (["--lr", "inf"], "--lr must be at most 1 (AdamW moves a weight by about lr a step)"),
    (["--lr", "1e30"], "--lr must be at most 1"),
    (["--lr", "nan"], "--lr must be above 0, got nan"),
    (["--lr", "0"], "--lr must be above 0, got 0.0"),
    (["--weight-decay", "inf"], "--weight-decay must be 0 or more, with --lr × --weight-decay"),
    (["--weight-decay", "-0.1"], "--weight-decay must be 0 or more"),
    (["--weight-decay", "nan"], "--weight-decay must be 0 or more"),
    (["--lr", "0.1", "--weight-decay", "10"], "--lr × --weight-decay below 1"),
    (["--clip", "inf"], "--clip must be 0 (off) or more, and finite"),
    (["--clip", "nan"], "--clip must be 0 (off) or more, and finite"),
    (["--beta2", "nan"], "--beta2 must be in [0, 1)"),
    (["--min-lr-ratio", "inf"], "--min-lr-ratio must be between 0 and 1"),
    (["--val-fraction", "nan"], "--val-fraction must be between 0 and 1"),
    (["--seed", "-1"], "--seed must be a whole number from 0 to 2**32 - 1"),
    (["--seed", str(2**32)], "--seed must be a whole number from 0 to 2**32 - 1"),
    (["--skip-nonfinite", "-1"], "--skip-nonfinite must be a whole number, 0 or more"),
])
def test_settings_that_are_not_finite_or_out_of_range_are_refused_before_any_write(
    flags, message, tmp_path, short_text
):
    out = tmp_path / "run"
    assert message in refused([short_text, "--tokenizer", "char", "--out", out, *flags], out)


def test_a_config_file_cannot_smuggle_in_an_infinite_learning_rate(tmp_path, short_text):
    config = tmp_path / "config.json"
    config.write_text('{"lr": 1e400}', "utf-8")  # JSON's way to write infinity
    out = tmp_path / "run"
    assert "--lr must be at most 1" in refused(
        [short_text, "--config-file", config, "--out", out], out)


# -- paths and files -------------------------------------------------------------------

def test_an_out_that_is_a_file_or_inside_one_is_refused(tmp_path, short_text):
    afile = tmp_path / "notes.txt"
    afile.write_text("keep me", "utf-8")
    args = [short_text, "--tokenizer", "char", "--out"]
    assert f"{afile} is a file, not a folder" in refused([*args, afile], tmp_path)
    assert f"cannot be made: {afile} is a file" in refused([*args, afile / "run"], tmp_path)
    assert afile.read_text("utf-8") == "keep me"


def test_an_out_this_user_may_not_write_in_is_refused(tmp_path, short_text, monkeypatch):
    parent = tmp_path / "shared"
    parent.mkdir()
    real_access = os.access
    # As root every folder is writable, so pretend: the test is about the message and the disk.
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != parent and real_access(p, mode))
    message = refused([short_text, "--tokenizer", "char", "--out", parent / "run"], tmp_path)
    assert f"may not write in {parent}" in message


def fifo_writer_after(fifo: Path, seconds: float) -> threading.Timer:
    """Unblock a reader of `fifo` after `seconds`, so that a regression fails, not hangs."""
    def unblock():
        with open(fifo, "w") as f:
            f.write("text from the pipe " * 100)

    timer = threading.Timer(seconds, unblock)
    timer.daemon = True
    timer.start()
    return timer


def test_a_fifo_or_a_device_as_input_is_refused_without_being_opened(tmp_path):
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    timer = fifo_writer_after(fifo, 20)
    try:
        started = time.monotonic()
        message = refused([fifo, "--tokenizer", "char", "--out", tmp_path / "run"], tmp_path)
        assert time.monotonic() - started < 20
    finally:
        timer.cancel()
    assert f"{fifo} is not a regular file (a pipe or a device, say)" in message
    assert "/dev/zero is not a regular file" in refused(
        ["/dev/zero", "--tokenizer", "char", "--out", tmp_path / "run"], tmp_path)


def test_a_fifo_as_config_file_is_refused_without_being_opened(tmp_path, short_text):
    fifo = tmp_path / "config.json"
    os.mkfifo(fifo)
    timer = fifo_writer_after(fifo, 20)
    try:
        message = refused([short_text, "--config-file", fifo, "--out", tmp_path / "run"],
                          tmp_path)
    finally:
        timer.cancel()
    assert f"--config-file {fifo} is not a regular file" in message


def test_a_model_too_big_for_memory_is_refused_before_it_is_allocated(tmp_path, short_text):
    out = tmp_path / "run"
    message = refused([short_text, "--tokenizer", "char", "--emb-dim", "1000000", "--out", out],
                      out)
    assert "parameters needs at least" in message and "choose a smaller model" in message


@pytest.mark.parametrize("cfg", [
    CONFIGS["cpu-tiny"],
    GPTConfig(vocab_size=97, context_length=16, emb_dim=24, n_heads=3, n_layers=3,
              qkv_bias=False, tie_embeddings=False),
])
def test_the_parameter_count_comes_from_the_config_alone(cfg):
    assert costs.parameter_count(cfg) == count_parameters(GPTModel(cfg))


def test_a_model_is_refused_only_when_it_cannot_fit(monkeypatch):
    cfg = CONFIGS["124M"]
    need = costs.memory_needed(cfg, training=True, batch_size=4)
    assert need == 16 * 124_439_808 + 2 * 4 * 4 * 1024 * 50257  # weights to AdamW, logits
    assert costs.memory_needed(cfg, training=False) == 4 * 124_439_808
    monkeypatch.setattr(costs, "available_memory", lambda device: need)
    costs.check_fits_in_memory(cfg, training=True, batch_size=4)  # just fits: no error
    monkeypatch.setattr(costs, "available_memory", lambda device: need - 1)
    with pytest.raises(costs.InputError, match=r"a model of 124.4M parameters needs at least "
                       r"3.6 GB to train .* but this machine has 3.6 GB available"):
        costs.check_fits_in_memory(cfg, training=True, batch_size=4)
    monkeypatch.setattr(costs, "available_memory", lambda device: None)  # no way to tell
    costs.check_fits_in_memory(cfg, training=True, batch_size=4)


# -- the lock --------------------------------------------------------------------------

def lock_of(pid: int, host: str | None = None) -> str:
    return json.dumps({"pid": pid, "host": host or socket.gethostname(), "token": "t",
                       "started": "2026-01-01 00:00:00 UTC"})


@pytest.fixture
def other_process():
    """A live process that is not this one: the owner of another run's lock."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_a_second_run_into_a_folder_in_use_is_refused_naming_the_other_process(
    tmp_path, short_text, other_process
):
    out = tmp_path / "run"
    out.mkdir()
    (out / "pretrain.lock").write_text(lock_of(other_process), "utf-8")
    (out / ".checkpoint.pt.1234abcd.tmp").write_bytes(b"the other run is writing this")
    for extra in ([], ["--resume"]):
        message = refused([short_text, "--tokenizer", "char", "--out", out, *extra], out)
        assert f"is in use by another run: process {other_process} on this machine" in message
    assert (out / ".checkpoint.pt.1234abcd.tmp").exists()  # its temporary file is left alone


@pytest.mark.parametrize("lock, message", [
    (lock_of(1234, host="elsewhere.example"), "process 1234 on elsewhere.example"),
    ("", "which names no process: if no run is writing there, delete"),
])
def test_a_lock_from_another_host_or_unreadable_is_refused_with_what_to_do(
    lock, message, tmp_path, short_text
):
    out = tmp_path / "run"
    out.mkdir()
    (out / "pretrain.lock").write_text(lock, "utf-8")
    assert message in refused([short_text, "--tokenizer", "char", "--out", out], out)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_run_that_came_and_went_while_this_one_loaded_its_text_is_not_overwritten(
    tmp_path, short_text, monkeypatch
):
    out = tmp_path / "run"
    real = pretrain._load_data

    def another_run_meanwhile(cfg):
        out.mkdir()
        (out / "checkpoint.pt").write_bytes(b"another run's checkpoint")
        return real(cfg)

    monkeypatch.setattr(pretrain, "_load_data", another_run_meanwhile)
    with pytest.raises(SystemExit, match="another run wrote .* while this one was starting"):
        main(char_run(short_text, out, "--steps", "2"))
    assert [p.name for p in out.iterdir()] == ["checkpoint.pt"]
    assert (out / "checkpoint.pt").read_bytes() == b"another run's checkpoint"


def test_a_dead_runs_lock_and_temporary_files_are_taken_over_and_cleaned(tmp_path, short_text):
    out = tmp_path / "run"
    out.mkdir()
    (out / "pretrain.lock").write_text(lock_of(dead_pid()), "utf-8")
    (out / ".checkpoint.pt.1234abcd.tmp").write_bytes(b"half of a checkpoint")
    summary = main(char_run(short_text, out, "--steps", "2"))
    assert summary["step"] == 2
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint.pt", "log.jsonl", "loss.png", "model.safetensors", "run.json"]


def test_the_lock_is_released_after_ctrl_c(tmp_path, short_text, monkeypatch):
    real = pretrain.batch_loss
    calls = []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(pretrain, "batch_loss", interrupted)
    out = tmp_path / "run"
    with pytest.raises(SystemExit, match="continue from the last checkpoint with --resume"):
        main(char_run(short_text, out, "--steps", "4"))
    assert not (out / "pretrain.lock").exists()


# -- divergence ------------------------------------------------------------------------

def poison(monkeypatch, out: Path, steps: set[int], where: str = "loss") -> dict:
    """Make the training loss (or only its gradient) NaN at these steps (one micro-step a
    step); the returned dict gets, at each of them, the bytes of out's checkpoint."""
    real, seen = pretrain.batch_loss, {"step": 0}

    def batch_loss(model, inputs, targets):
        seen["step"] += 1
        loss = real(model, inputs, targets)
        if seen["step"] not in steps:
            return loss
        seen["checkpoint"] = (out / "checkpoint.pt").read_bytes()
        if where == "loss":
            return loss + math.nan  # the value only: the gradients stay finite
        loss.register_hook(lambda grad: grad * math.nan)  # the loss stays finite
        return loss

    monkeypatch.setattr(pretrain, "batch_loss", batch_loss)
    return seen


@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_a_diverging_run_stops_non_zero_and_leaves_the_last_good_checkpoint(
    where, tmp_path, short_text, monkeypatch
):
    out = tmp_path / "run"
    seen = poison(monkeypatch, out, {5}, where)
    with pytest.raises(SystemExit) as stopped:
        main(char_run(short_text, out, "--steps", "8", "--eval-every", "2"))
    message = str(stopped.value)
    assert message.startswith("error: the loss or a gradient became NaN or infinite at step 5, "
                              "so the run stopped at step 6 without saving; the last checkpoint")
    assert f"{out / 'checkpoint.pt'} at step 4, is untouched" in message
    assert "\n" not in message
    assert (out / "checkpoint.pt").read_bytes() == seen["checkpoint"]  # byte for byte
    saved = load_checkpoint(out / "checkpoint.pt")
    assert saved["step"] == 4
    assert all(torch.isfinite(t).all() for t in saved["model"].values())
    assert not (out / "model.safetensors").exists() and not (out / "pretrain.lock").exists()
    assert [e["step"] for e in events(out, "stop")] == [6]
    assert [e["step"] for e in events(out, "eval")] == [0, 2, 4]  # no NaN was logged


def test_a_stopped_run_continues_with_skip_nonfinite(tmp_path, short_text, monkeypatch):
    out = tmp_path / "run"
    poison(monkeypatch, out, {5})
    args = char_run(short_text, out, "--steps", "8", "--eval-every", "2")
    with pytest.raises(SystemExit, match="at step 5"):
        main(args)
    poison(monkeypatch, out, {1})  # step 5 again: the first step after resuming from step 4
    summary = main(["--out", str(out), "--resume", "--skip-nonfinite", "1"])
    assert summary["step"] == 8 and summary["skipped_steps"] == 1
    assert [e["step"] for e in events(out, "skip")] == [5]


def test_skip_nonfinite_skips_the_bad_steps_without_updating_and_counts_them(
    tmp_path, short_text, monkeypatch
):
    out = tmp_path / "run"
    poison(monkeypatch, out, {3, 5})
    summary = main(char_run(short_text, out, "--steps", "6", "--eval-every", "2",
                            "--skip-nonfinite", "2"))
    assert summary["step"] == 6 and summary["skipped_steps"] == 2
    assert [e["step"] for e in events(out, "skip")] == [3, 5]
    saved = load_checkpoint(out / "checkpoint.pt")
    assert saved["skipped_steps"] == 2
    adam_steps = {float(s["step"]) for s in saved["optimizer"]["state"].values()}
    assert adam_steps == {4.0}  # 6 steps, 2 of them without an update
    assert all(torch.isfinite(t).all() for t in weights(out).values())
    assert json.loads((out / "run.json").read_text("utf-8"))["result"]["skipped_steps"] == 2


def test_skip_nonfinite_stops_once_more_steps_than_allowed_were_bad(
    tmp_path, short_text, monkeypatch
):
    out = tmp_path / "run"
    seen = poison(monkeypatch, out, {3, 4, 5})
    with pytest.raises(SystemExit) as stopped:
        main(char_run(short_text, out, "--steps", "8", "--eval-every", "2",
                      "--skip-nonfinite", "2"))
    assert str(stopped.value).startswith(
        "error: 3 steps had a NaN or infinite loss or gradient (the last at step 5), more than "
        f"--skip-nonfinite 2; the last checkpoint, {out / 'checkpoint.pt'} at step 4, is "
        "untouched: lower --lr and start again in a new --out")
    assert (out / "checkpoint.pt").read_bytes() == seen["checkpoint"]  # step 4's: 3 and 4
    assert load_checkpoint(out / "checkpoint.pt")["skipped_steps"] == 2  # were skipped
    assert not (out / "pretrain.lock").exists()


DDP_NAN = """
import math, os, sys, torch
from pathlib import Path
import buildllm.pretrain as pretrain

real, calls = pretrain.batch_loss, []

def batch_loss(*args):  # process 1 alone sees a NaN loss at step 3; the gradients stay finite
    calls.append(1)
    loss = real(*args)
    return loss + math.nan if len(calls) == 3 and os.environ["RANK"] == "1" else loss

pretrain.batch_loss = batch_loss
cfg = pretrain.parse_config(sys.argv[1:])
model, summary = pretrain.run(cfg)
torch.save({"model": model.state_dict(), "summary": summary},
           Path(cfg.out) / f"rank{os.environ['RANK']}.pt")
"""


@pytest.mark.parametrize("skip", [0, 1])
def test_with_two_processes_a_nan_in_one_stops_or_skips_the_step_in_both(
    skip, tmp_path, short_text
):
    script, out = tmp_path / "ddp_nan.py", tmp_path / "ddp"
    script.write_text(DDP_NAN, "utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
         str(script), *char_run(short_text, out, "--steps", "4", "--eval-every", "2",
                                "--device", "cpu", "--skip-nonfinite", str(skip))],
        capture_output=True, text=True, timeout=300)
    if skip:
        assert done.returncode == 0, done.stderr[-3000:]
        ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
        assert_same_weights(ranks[0]["model"], ranks[1]["model"])  # both skipped step 3
        assert [r["summary"]["skipped_steps"] for r in ranks] == [1, 1]
        assert [e["step"] for e in events(out, "skip")] == [3]
    else:
        assert done.returncode != 0
        assert "NaN or infinite at step 3, so the run stopped at step 4 without saving" \
            in done.stderr
        assert load_checkpoint(out / "checkpoint.pt")["step"] == 2
        assert not (out / "model.safetensors").exists()
        assert not (out / "pretrain.lock").exists()


# -- a full disk -----------------------------------------------------------------------

def test_a_full_disk_names_the_file_and_leaves_the_last_checkpoint_whole(
    tmp_path, short_text, monkeypatch
):
    out = tmp_path / "run"
    real_save, saves, before = torch.save, [], []

    def save_until_the_disk_is_full(obj, f, *args, **kwargs):
        saves.append(obj["step"])
        if len(saves) == 1:
            return real_save(obj, f, *args, **kwargs)
        before.append((out / "checkpoint.pt").read_bytes())
        f.write(b"the first half of a checkpoint")  # into the temporary file
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", save_until_the_disk_is_full)
    with pytest.raises(SystemExit) as stopped:
        main(char_run(short_text, out, "--steps", "6", "--eval-every", "2"))
    assert str(stopped.value) == (
        f"error: no space left on device while writing {out / 'checkpoint.pt'}; the last "
        f"checkpoint, {out / 'checkpoint.pt'} at step 2, is untouched: free some space, then "
        "continue with --resume")
    assert saves == [2, 4]
    assert (out / "checkpoint.pt").read_bytes() == before[0]
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "log.jsonl", "loss.png"]
    assert events(out, "stop")[0]["step"] == 4


def test_a_disk_that_fills_while_the_final_weights_are_written_stops_in_one_line(
    tmp_path, short_text, monkeypatch
):
    out = tmp_path / "run"
    real_write_bytes = Path.write_bytes

    def full_for_the_weights(self, data):
        if ".model.safetensors." in self.name:  # write_atomically's temporary file
            real_write_bytes(self, data[:100])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_for_the_weights)
    with pytest.raises(SystemExit) as stopped:
        main(char_run(short_text, out, "--steps", "2", "--eval-every", "2"))
    assert str(stopped.value).startswith(
        f"error: no space left on device while writing {out / 'model.safetensors'}; the last "
        f"checkpoint, {out / 'checkpoint.pt'} at step 2, is untouched")
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 2
    assert not list(out.glob(".*.tmp")) and not (out / "model.safetensors").exists()


# -- a kill in the middle of a checkpoint write ----------------------------------------

PAUSE_IN_WRITE = """
import io, sys, time, torch
from pathlib import Path
import buildllm.pretrain as pretrain

torch.set_num_threads({threads})
real, saves = torch.save, []

def save(obj, f, *args, **kwargs):  # the third checkpoint: write half of it, then wait
    saves.append(obj["step"])
    if len(saves) < 3:
        return real(obj, f, *args, **kwargs)
    whole = io.BytesIO()
    real(obj, whole)
    f.write(whole.getvalue()[: len(whole.getvalue()) // 2])
    f.flush()
    Path({flag!r}).write_text(str(obj["step"]))
    time.sleep(600)

torch.save = save
pretrain.main(sys.argv[1:])
"""


def test_a_run_killed_inside_a_checkpoint_write_resumes_to_the_same_weights(
    tmp_path, short_text
):
    args = ["--steps", "12", "--eval-every", "6", "--checkpoint-every", "3", "--drop-rate", "0.1"]
    main(char_run(short_text, tmp_path / "straight", *args))

    killed, flag = tmp_path / "killed", tmp_path / "in-write"
    code = PAUSE_IN_WRITE.format(threads=torch.get_num_threads(), flag=str(flag))
    proc = subprocess.Popen([sys.executable, "-c", code, *char_run(short_text, killed, *args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while not flag.exists():
            assert proc.poll() is None, "the run ended before its third checkpoint"
            assert time.monotonic() < deadline, "no third checkpoint after 180 s"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # inside write_atomically, the temporary file half full
    finally:
        proc.kill()
        proc.wait()
    assert flag.read_text() == "9"
    (half,) = killed.glob(".checkpoint.pt.*.tmp")
    assert 0 < half.stat().st_size < (killed / "checkpoint.pt").stat().st_size
    assert load_checkpoint(killed / "checkpoint.pt")["step"] == 6  # the last one, whole
    assert json.loads((killed / "pretrain.lock").read_text("utf-8"))["pid"] == proc.pid

    summary = main(["--out", str(killed), "--resume"])  # takes over the dead run's lock
    assert summary["step"] == 12
    assert_same_weights(weights(killed), weights(tmp_path / "straight"))
    assert not list(killed.glob(".*.tmp")) and not (killed / "pretrain.lock").exists()
    assert events(killed, "resume")[0]["step"] == 6

