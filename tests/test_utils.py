"""Seeding, device choice, the CPU calibration, atomic writes and the folder lock."""

import errno
import json
import os
import random
import socket

import numpy as np
import pytest
import torch

from buildllm import utils


def test_set_seed_makes_python_numpy_and_torch_repeat_themselves():
    def draw():
        return random.random(), np.random.rand(), torch.rand(3).tolist()

    utils.set_seed(7)
    first = draw()
    utils.set_seed(7)
    assert draw() == first


def test_device_can_be_forced_with_an_environment_variable(monkeypatch):
    monkeypatch.setenv("BUILDLLM_DEVICE", "cpu")
    assert utils.get_device() == torch.device("cpu")


def test_mps_is_never_chosen_where_it_is_unavailable(monkeypatch):
    monkeypatch.delenv("BUILDLLM_DEVICE", raising=False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert utils.mps_agrees_with_cpu() is False
    if not torch.cuda.is_available():
        assert utils.get_device() == torch.device("cpu")


def test_mps_failing_its_self_test_falls_back_to_cpu(monkeypatch):
    monkeypatch.delenv("BUILDLLM_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(utils, "mps_agrees_with_cpu", lambda: False)
    assert utils.get_device() == torch.device("cpu")


def test_calibration_returns_a_positive_time():
    assert 0 < utils.calibrate_cpu(repeats=1) < 120


def test_calibration_of_a_quiet_cpu_is_not_marked_busy(monkeypatch):
    threads = torch.get_num_threads()
    runs = iter([(1.2, 1.2 * threads), (1.0, 1.0 * threads), (1.1, 1.1 * threads)])
    monkeypatch.setattr(utils, "_time_workload", lambda model, x: next(runs))
    monkeypatch.setattr(utils.os, "getloadavg", lambda: (0.1, 0.1, 0.1), raising=False)
    assert utils.measure_cpu_speed() == utils.CpuSpeed(seconds=1.0, busy=None)


def test_a_run_slowed_by_other_programs_is_dropped_and_tried_again(monkeypatch):
    threads = torch.get_num_threads()
    runs = iter([(0.5, 0.1), (1.0, 1.0 * threads), (1.1, 1.1 * threads), (1.2, 1.2 * threads)])
    monkeypatch.setattr(utils, "_time_workload", lambda model, x: next(runs))
    monkeypatch.setattr(utils.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(utils.os, "getloadavg", lambda: (0.1, 0.1, 0.1), raising=False)
    assert utils.measure_cpu_speed() == utils.CpuSpeed(seconds=1.0, busy=None)


def test_a_cpu_busy_on_every_try_is_reported_in_one_line(monkeypatch, capsys):
    runs = []
    monkeypatch.setattr(utils, "_time_workload", lambda model, x: runs.append(1) or (9.0, 3.0))
    monkeypatch.setattr(utils.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(utils.os, "getloadavg", lambda: (0.1, 0.1, 0.1), raising=False)
    speed = utils.measure_cpu_speed(tries=3)
    assert len(runs) == 3, "a busy CPU is tried `tries` times, then given up on"
    assert speed.seconds == 9.0 and speed.busy.startswith("the calibration got")
    printed = capsys.readouterr().out
    assert printed.count("\n") == 1 and "busy" in printed and "unreliable" in printed


def test_busy_when_the_run_got_a_fraction_of_its_threads():
    # Measured on the reference machine with other programs running: 10.3 s of CPU time
    # in 11.8 s on 2 threads, a calibration nine times slower than on the quiet machine.
    assert (
        utils.cpu_busy(10.3, 11.8, threads=2)
        == "the calibration got 44% of the 2 threads it ran on"
    )
    assert (
        utils.cpu_busy(1.9, 3.0, threads=1) == "the calibration got 63% of the 1 thread it ran on"
    )


def test_not_busy_when_the_run_kept_its_threads_working():
    assert utils.cpu_busy(1.9, 1.0, threads=2) is None
    assert utils.cpu_busy(0.98, 1.0, threads=1, load=0.5, cores=2) is None


def test_a_small_shortfall_is_busy_only_when_the_load_average_exceeds_the_cores():
    assert utils.cpu_busy(1.6, 1.0, threads=2, load=3.7, cores=2) == (
        "the calibration got 80% of the 2 threads it ran on, and the load average is 3.7 on 2 cores"
    )
    assert utils.cpu_busy(1.6, 1.0, threads=2, load=1.2, cores=2) is None


def test_a_high_load_average_alone_is_not_busy():
    # The load average trails by a minute: right after another program ends it is still high,
    # though the calibration had the CPU to itself.
    assert utils.cpu_busy(1.95, 1.0, threads=2, load=2.1, cores=2) is None


def test_without_a_load_average_only_the_cpu_share_counts():
    # Windows has no os.getloadavg, so the load is None there.
    assert utils.cpu_busy(1.6, 1.0, threads=2, load=None, cores=2) is None
    assert utils.cpu_busy(1.2, 1.0, threads=2, load=None, cores=2) is not None


def fake_record(monkeypatch, record):
    class Files:
        def joinpath(self, _):
            return self

        def read_text(self):
            return json.dumps(record)

    monkeypatch.setattr(utils.resources, "files", lambda _: Files())


def test_estimates_scale_the_reference_times_per_meeting(monkeypatch):
    fake_record(
        monkeypatch,
        {
            "reference_seconds": 2.0,
            "seconds": {"Meeting-0/a.ipynb": 60, "Meeting-0/b.ipynb": 60, "Meeting-1/c.ipynb": 120},
        },
    )
    # A CPU that takes 1 s where the reference took 2 s is twice as fast; with no GPT-2
    # times recorded, GPT-2 takes what the course model takes.
    assert utils.estimate_minutes(1.0) == {
        "Meeting-0": utils.MeetingMinutes(course=1.0, gpt2=1.0),
        "Meeting-1": utils.MeetingMinutes(course=1.0, gpt2=1.0),
    }


def test_estimates_add_gpt2_times_and_course_times_for_notebooks_without_gpt2(monkeypatch):
    fake_record(
        monkeypatch,
        {
            "reference_seconds": 2.0,
            "seconds": {"Meeting-5/a.ipynb": 60, "Meeting-5/b.ipynb": 60, "Meeting-6/c.ipynb": 120},
            "gpt2_seconds": {"Meeting-5/b.ipynb": 300, "Meeting-6/c.ipynb": 240},
        },
    )
    minutes = utils.estimate_minutes(4.0)  # half as fast as the reference
    assert minutes["Meeting-5"] == pytest.approx(utils.MeetingMinutes(course=4.0, gpt2=12.0))
    assert minutes["Meeting-6"].gpt2 == pytest.approx(8.0)


def test_estimates_without_a_calibration_are_the_reference_times(monkeypatch):
    fake_record(monkeypatch, {"reference_seconds": 2.0, "seconds": {"Meeting-7/a.ipynb": 90}})
    assert utils.estimate_minutes(None) == {"Meeting-7": utils.MeetingMinutes(1.5, 1.5)}


@pytest.mark.parametrize("training", [True, False])
def test_eval_mode_switches_dropout_off_and_restores_the_mode_even_after_an_error(training):
    model = torch.nn.Sequential(torch.nn.Dropout(0.5))
    model.train(training)
    with pytest.raises(RuntimeError), utils.eval_mode(model) as inside:
        assert inside is model and not model.training and not model[0].training
        raise RuntimeError("a failed evaluation")
    assert model.training is training and model[0].training is training


def test_write_atomically_keeps_the_old_file_whole_when_the_write_fails(tmp_path):
    path = tmp_path / "run.json"
    utils.write_atomically(path, lambda tmp: tmp.write_text("old"))

    def fails_halfway(tmp):
        tmp.write_text("half of the new")
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space left"):
        utils.write_atomically(path, fails_halfway)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temporary file left


def test_a_full_disk_during_an_atomic_write_names_the_file_it_was_writing(tmp_path):
    def disk_full(tmp):
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")  # as f.write() raises it

    with pytest.raises(OSError) as failed:
        utils.write_atomically(tmp_path / "model.bin", disk_full)
    assert failed.value.errno == errno.ENOSPC
    assert failed.value.filename == str(tmp_path / "model.bin")
    assert list(tmp_path.iterdir()) == []


# -- the folder lock -------------------------------------------------------------------

def test_a_folder_lock_admits_one_holder_and_goes_when_the_block_ends(tmp_path):
    lock = tmp_path / "run" / "pretrain.lock"
    with utils.folder_lock(lock):
        owner = json.loads(lock.read_text("utf-8"))
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        with pytest.raises(utils.FolderInUse, match=f"process {os.getpid()} on this machine"), \
                utils.folder_lock(lock):
            pass
        assert json.loads(lock.read_text("utf-8")) == owner  # the refused one took nothing
    assert not lock.exists()
    with pytest.raises(KeyboardInterrupt), utils.folder_lock(lock):
        raise KeyboardInterrupt
    assert not lock.exists()


def test_taking_over_a_stale_lock_never_removes_a_live_one(tmp_path):
    """Two runs saw the same dead lock; the first took it over. The second, late, must move
    the first's live lock back instead of deleting it."""
    lock = tmp_path / "pretrain.lock"
    stale = {"pid": 999_999_999, "host": socket.gethostname(), "token": "dead"}
    live = {"pid": os.getpid(), "host": socket.gethostname(), "token": "live"}
    lock.write_text(json.dumps(live), "utf-8")
    utils._take_over(lock, stale)
    assert json.loads(lock.read_text("utf-8")) == live
    assert [p.name for p in tmp_path.iterdir()] == ["pretrain.lock"]
    lock.write_text(json.dumps(stale), "utf-8")
    utils._take_over(lock, stale)
    assert list(tmp_path.iterdir()) == []


def test_atomic_leftovers_finds_a_writers_temporary_file_and_only_that(tmp_path):
    (tmp_path / ".hidden.txt").write_text("not a temporary file")
    seen = {}

    def write(tmp):
        tmp.write_text("half")
        seen["here"] = utils.atomic_leftovers(tmp_path, "f.txt")
        seen["any"] = utils.atomic_leftovers(tmp_path)
        seen["other"] = utils.atomic_leftovers(tmp_path, "g.txt")

    utils.write_atomically(tmp_path / "f.txt", write)
    assert len(seen["here"]) == 1 and seen["any"] == seen["here"] and seen["other"] == []
    assert utils.atomic_leftovers(tmp_path) == []  # gone once the write is done
