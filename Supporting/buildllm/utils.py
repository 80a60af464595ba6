"""Device choice, seeding, eval mode and a CPU speed calibration (built in Meeting 0).

>>> device = get_device()      # cuda > mps (if it passes a self-test) > cpu
>>> set_seed(123)              # Python, NumPy and PyTorch all start from the same state
>>> speed = measure_cpu_speed()  # this CPU's calibration, and whether it was busy
>>> estimate_minutes(speed.seconds)["Meeting-5"]  # MeetingMinutes(course=..., gpt2=...)

Files are written so that nothing is lost: `write_atomically` replaces a file whole or not at
all, and `folder_lock` keeps two runs from writing into one folder.
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

__all__ = ["CpuSpeed", "FolderInUse", "MeetingMinutes", "atomic_leftovers", "calibrate_cpu",
           "check_folder_lock", "cpu_busy", "estimate_minutes", "eval_mode", "folder_lock",
           "get_device", "measure_cpu_speed", "mps_agrees_with_cpu", "seconds_with_gpt2",
           "set_seed", "write_atomically"]


def set_seed(seed: int) -> None:
    """Seed every random number generator a notebook touches, so reruns match."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA and MPS


def write_atomically(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call write(temporary path) beside `path`, flush it to disk, then rename it over `path`.

    A rename within a folder is atomic, so a run killed at any moment, or a full disk, leaves
    either the old file or the new one, never half of one. The temporary name is unique, so
    two writers never delete each other's work; a failed write removes its own and re-raises,
    an OSError naming `path` (a full disk: "[Errno 28] No space left on device: 'path'").
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno and err.filename is None:
            err.filename = str(path)  # a failed write() names no file
        raise
    return path


def atomic_leftovers(folder: str | os.PathLike, name: str = "*") -> list[Path]:
    """The temporary files that writers of `folder`/`name` ("*": any file) killed mid-write left
    behind, as `write_atomically` names them. Delete one only when its writer cannot be alive."""
    return sorted(Path(folder).glob(f".{name}.*.tmp"))


class FolderInUse(RuntimeError):
    """Another process holds the folder's lock: the message names it."""


def _lock_owner(path: Path) -> dict | None:
    """The record a lock file holds; {} if it cannot be read (being written, or damaged);
    None if there is no lock."""
    try:
        owner = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _is_dead(owner: dict) -> bool:
    """True only when the lock's process is known to be gone: one on this host whose pid no
    longer exists. os.kill(pid, 0) asks without sending a signal (on Windows it would kill,
    so there every lock counts as alive). Another host's process cannot be asked."""
    if os.name != "posix" or owner.get("host") != socket.gethostname() \
            or not isinstance(owner.get("pid"), int):
        return False
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        pass
    return False


def check_folder_lock(path: str | os.PathLike) -> dict | None:
    """Raise FolderInUse if the lock file `path` is held by a process that may still be running;
    otherwise return its record (None: there is no lock; a record: its process is dead).

    This only looks: `folder_lock` takes the lock, and checks again as it does.
    """
    path = Path(path)
    owner = _lock_owner(path)
    if owner is None or _is_dead(owner):
        return owner
    if not owner:
        raise FolderInUse(f"{path.parent} is locked by {path}, which names no process: if no run "
                          f"is writing there, delete {path}")
    here = owner.get("host") == socket.gethostname()
    raise FolderInUse(
        f"{path.parent} is in use by another run: process {owner.get('pid')} on "
        f"{'this machine' if here else owner.get('host')}, since {owner.get('started')}; wait "
        f"for it to end, or choose another folder" + ("" if here else
                                                       f" (if it has ended, delete {path})"))


def _take_over(path: Path, stale: dict) -> None:
    """Move a dead process's lock out of the way. The rename is atomic, so of several runs
    taking over at once each moves a different file or none; one that finds it moved a live
    lock (another run took over between its look and its rename) puts it back."""
    moved = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.stale")
    try:
        os.rename(path, moved)
    except FileNotFoundError:  # another run moved it first
        return
    if _lock_owner(moved) != stale:
        with suppress(FileExistsError):
            os.link(moved, path)  # back, unless yet another lock is there by now
    moved.unlink()


@contextmanager
def folder_lock(path: str | os.PathLike) -> Iterator[Path]:
    """Hold the lock file `path` for the block, so that no other run writes in its folder.

    The lock is created with O_CREAT | O_EXCL, which the operating system makes atomic: of
    two runs, exactly one creates it. It records the process (pid, host, start time), which
    the refusal names. A lock whose process is dead (killed, or the machine crashed) is taken
    over; one from another host, or unreadable, is not, and the message says how to remove
    it. The lock goes when the block ends, by an error or Ctrl-C too, if it is still this
    process's own.
    """
    path = Path(path)
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "token": uuid.uuid4().hex,
            "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")}
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):  # a lock that goes, or is taken over, between our tries: try again
        owner = check_folder_lock(path)
        if owner is not None:
            _take_over(path, owner)  # its process is dead
        with suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            break
    else:
        check_folder_lock(path)
        raise FolderInUse(f"{path.parent}: other runs keep taking its lock {path}; try again")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(mine))
    try:
        yield path
    finally:
        if _lock_owner(path) == mine:
            path.unlink(missing_ok=True)


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Run the block with `model` in eval mode (no dropout), then put back the mode it had.

    Evaluation and sampling happen in the middle of training: a loop that switched to eval
    and forgot to switch back would quietly train the rest of the run without dropout.
    """
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def mps_agrees_with_cpu(atol: float = 1e-4) -> bool:
    """True if Apple's MPS backend computes what the CPU does on the ops this course uses.

    MPS has had silent wrong answers: in-place addcdiv on non-contiguous tensors broke
    every Adam-style optimizer (pytorch/pytorch#118115), and some matmuls still go wrong
    on torch 2.13 (pytorch/pytorch#193487). A wrong answer with no error is the worst
    kind of bug in a course, so MPS must pass this check before we use it.
    """
    if not torch.backends.mps.is_available():
        return False
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 96, generator=g)
    w = torch.randn(96, 48, generator=g, requires_grad=True)

    def ops(x: torch.Tensor, w: torch.Tensor) -> list[torch.Tensor]:
        y = torch.nn.functional.layer_norm(x @ w, (48,)).softmax(-1)
        (grad,) = torch.autograd.grad(y.square().sum(), w)
        t = x[:, :48].t()  # non-contiguous, as optimizer states often are
        return [y, grad, t.clone().addcdiv_(t, t.abs() + 1)]

    on_mps, on_cpu = ops(x.to("mps"), w.detach().to("mps").requires_grad_()), ops(x, w)
    return all(torch.allclose(a, b.cpu(), atol=atol) for a, b in zip(on_cpu, on_mps, strict=True))


def get_device(verbose: bool = False, name: str = "auto") -> torch.device:
    """The fastest device that gives correct results: cuda > mps > cpu.

    Set BUILDLLM_DEVICE (e.g. "cpu") to override the choice. A `name` other than "auto" (a
    setting's "cpu", "cuda" or "mps") is no choice: it is taken as it is.
    """
    if name != "auto":
        return torch.device(name)
    if forced := os.environ.get("BUILDLLM_DEVICE"):
        device, why = torch.device(forced), "set by BUILDLLM_DEVICE"
    elif torch.cuda.is_available():
        device, why = torch.device("cuda"), torch.cuda.get_device_name()
    elif torch.backends.mps.is_available() and mps_agrees_with_cpu():
        device, why = torch.device("mps"), "Apple GPU, self-test passed"
    elif torch.backends.mps.is_available():
        device, why = torch.device("cpu"), "MPS failed its self-test, so we stay on the CPU"
    else:
        threads = torch.get_num_threads()
        device, why = torch.device("cpu"), f"{threads} thread" + ("s" if threads > 1 else "")
    if verbose:
        print(f"Using {device} ({why})")
    return device


def _time_workload(model: torch.nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """One calibration run: 50 forward and backward passes; returns (wall, CPU) seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(50):
        model(x).square().mean().backward()
    return time.perf_counter() - wall, time.process_time() - cpu


def _workload() -> tuple[torch.nn.Module, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    layers = [m for _ in range(4) for m in (torch.nn.Linear(512, 512), torch.nn.GELU())]
    return torch.nn.Sequential(*layers), torch.randn(512, 512, generator=g)


def calibrate_cpu(repeats: int = 3) -> float:
    """Time a small, fixed training workload on the CPU; returns the best of `repeats` runs.

    The workload (a 4-layer MLP on a batch of 512 vectors, forward and backward, 50 steps)
    stresses the same matrix kernels as the course's notebooks, so its time predicts theirs.
    It does not check whether other programs slowed it down: `measure_cpu_speed` does.
    """
    model, x = _workload()
    return min(_time_workload(model, x)[0] for _ in range(repeats))


def cpu_busy(cpu_seconds: float, wall_seconds: float, threads: int, load: float | None = None,
             cores: int | None = None) -> str | None:
    """Why a timed run looks slowed down by other programs, or None when it had the CPU.

    A run on `threads` threads that kept them all busy used about `threads` seconds of CPU
    time per second of wall time (time.process_time counts every thread of the process).
    Getting much less means it waited for cores that other programs held. A smaller shortfall
    counts only when `load`, the one-minute load average (os.getloadavg; Windows has none),
    says that other programs wanted more than all `cores`: the load average trails by a
    minute, so on its own it would also flag a machine that has just become quiet.

    >>> cpu_busy(cpu_seconds=1.9, wall_seconds=1.0, threads=2) is None
    True
    >>> cpu_busy(cpu_seconds=0.8, wall_seconds=1.0, threads=2)
    'the calibration got 40% of the 2 threads it ran on'
    """
    share = cpu_seconds / (wall_seconds * threads)
    plural = "s" if threads > 1 else ""
    got = f"the calibration got {share:.0%} of the {threads} thread{plural} it ran on"
    if share < 0.7:
        return got
    if share < 0.9 and load is not None and cores and load > cores:
        return f"{got}, and the load average is {load:.1f} on {cores} cores"
    return None


class CpuSpeed(NamedTuple):
    """A calibration: the workload's best time, and why it is unreliable (None if it is not)."""

    seconds: float
    busy: str | None


def measure_cpu_speed(repeats: int = 3, tries: int = 3, pause: float = 2.0) -> CpuSpeed:
    """calibrate_cpu(), checked for other programs competing for the CPU.

    Keeps `repeats` runs that had the CPU to themselves (see `cpu_busy`) and returns the best.
    A run slowed down by other programs is dropped and, after a `pause`, tried again, at most
    `tries` times; then the result is marked busy and one line says so.

    >>> speed = measure_cpu_speed()
    >>> minutes = estimate_minutes(None if speed.busy else speed.seconds)
    """
    model, x = _workload()
    threads, cores = torch.get_num_threads(), os.cpu_count()
    quiet, slowed, why = [], [], None  # the runs' wall seconds; why the last was slowed
    while len(quiet) < repeats and len(slowed) < tries:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        wall, cpu = _time_workload(model, x)
        why = cpu_busy(cpu, wall, threads, load, cores)
        if why is None:
            quiet.append(wall)
            continue
        slowed.append(wall)
        if len(slowed) < tries:
            time.sleep(pause)  # give whatever else is running a moment to finish
    if len(quiet) == repeats:
        return CpuSpeed(min(quiet), None)
    print(f"This CPU is busy ({why}), so its speed and the times predicted from it are "
          "unreliable: close other programs and run this cell again.")
    return CpuSpeed(min(quiet + slowed), why)


class MeetingMinutes(NamedTuple):
    """Minutes to run one meeting's notebooks, with the course's model and with GPT-2 124M."""

    course: float
    gpt2: float


def seconds_with_gpt2(record: dict) -> dict[str, float]:
    """Each notebook's time with GPT-2 124M, from a notebook_times.json record: measured
    where it loads GPT-2 ("gpt2_seconds"), otherwise its time with the course model."""
    return record["seconds"] | record.get("gpt2_seconds", {})


def estimate_minutes(seconds: float | None) -> dict[str, MeetingMinutes]:
    """Predict each meeting's notebook time on this machine from its calibration `seconds`.

    Supporting/tools/run_notebooks.py times every notebook on the 2-core reference machine
    and runs calibrate_cpu() there too; we scale its times by how your CPU compares.
    notebook_times.json holds them, with the course's model and with GPT-2 124M (see
    `seconds_with_gpt2`). `seconds=None` gives the reference machine's own times, for a CPU
    too busy to measure.

    >>> estimate_minutes(None)["Meeting-6"]  # MeetingMinutes(course=..., gpt2=...), minutes
    """
    record = json.loads(resources.files("buildllm").joinpath("notebook_times.json").read_text())
    scale = 1.0 if seconds is None else seconds / record["reference_seconds"]
    with_gpt2 = seconds_with_gpt2(record)
    minutes: dict[str, MeetingMinutes] = {}
    for path, secs in record["seconds"].items():
        meeting = path.split("/")[0]
        course, gpt2 = minutes.get(meeting, (0.0, 0.0))
        minutes[meeting] = MeetingMinutes(course + secs * scale / 60,
                                          gpt2 + with_gpt2[path] * scale / 60)
    return minutes
