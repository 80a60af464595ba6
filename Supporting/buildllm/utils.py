"""Device choice, seeding and a CPU speed calibration (built in Meeting 0).

>>> device = get_device()      # cuda > mps (if it passes a self-test) > cpu
>>> set_seed(123)              # Python, NumPy and PyTorch all start from the same state
"""

from __future__ import annotations

import json
import os
import random
import time
from importlib import resources

import numpy as np
import torch

__all__ = ["calibrate_cpu", "estimate_minutes", "get_device", "mps_agrees_with_cpu", "set_seed"]


def set_seed(seed: int) -> None:
    """Seed every random number generator a notebook touches, so reruns match."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA and MPS


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

    on_mps = ops(x.to("mps"), w.detach().to("mps").requires_grad_())
    return all(
        torch.allclose(a, b.cpu(), atol=atol) for a, b in zip(ops(x, w), on_mps, strict=True)
    )


def get_device(verbose: bool = False) -> torch.device:
    """The fastest device that gives correct results: cuda > mps > cpu.

    Set BUILDLLM_DEVICE (e.g. "cpu") to override the choice.
    """
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


def calibrate_cpu(repeats: int = 3) -> float:
    """Time a small, fixed training workload on the CPU; returns the best of `repeats` runs.

    The workload (a 4-layer MLP on a batch of 512 vectors, forward and backward, 50 steps)
    stresses the same matrix kernels as the course's notebooks, so its time predicts theirs.
    """
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(
        *[m for _ in range(4) for m in (torch.nn.Linear(512, 512), torch.nn.GELU())]
    )
    x = torch.randn(512, 512, generator=g)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(50):
            model(x).square().mean().backward()
        best = min(best, time.perf_counter() - start)
    return best


def estimate_minutes(seconds: float) -> dict[str, float]:
    """Predict each meeting's notebook time on this machine from a calibrate_cpu() result.

    Supporting/tools/run_notebooks.py times every notebook on the 2-core reference machine
    and runs calibrate_cpu() there too; we scale its times by how your CPU compares.
    """
    record = json.loads(resources.files("buildllm").joinpath("notebook_times.json").read_text())
    scale = seconds / record["reference_seconds"]
    per_meeting: dict[str, float] = {}
    for path, secs in record["seconds"].items():
        meeting = path.split("/")[0]
        per_meeting[meeting] = per_meeting.get(meeting, 0.0) + secs * scale / 60
    return per_meeting
