"""What training costs (Meetings 5 and 7): FLOPs, the hardware's peak, MFU, hours and dollars.

Training a GPT costs three forward passes per token (the backward pass is twice the forward),
so 3 × `buildllm.model.forward_flops_per_token` per token. MFU (model FLOPs utilization) is the
share of the hardware's peak that this arithmetic uses: the pretraining command prints it,
against `peak_flops`. `training_cost` goes the other way: from a model, a token budget, a GPU
and an assumed MFU to hours and dollars.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass

import torch

from .model import GPTConfig, forward_flops_per_token

__all__ = ["GPU", "GPUS", "GPU_PEAK_TFLOPS", "peak_flops", "training_cost"]

# Dense 16-bit tensor-core peaks in TFLOP/s, from NVIDIA's data sheets: bf16, or fp16 for the
# T4 and V100, which have no bf16 units.
# The first name found in torch.cuda.get_device_name() wins, so "H100 PCIe" precedes "H100".
GPU_PEAK_TFLOPS = (("H100 PCIe", 756), ("H100 NVL", 835), ("H100", 989), ("H200", 989),
                   ("A100", 312), ("L40S", 362), ("L4", 121), ("T4", 65), ("V100", 125))


@functools.cache
def _cpu_peak_flops(dtype: torch.dtype) -> float:
    """FLOP/s of the best of ten 512 × 512 matrix products: what this CPU really sustains."""
    a = torch.full((512, 512), 0.5, dtype=dtype)  # no random numbers: the run's stay untouched
    best = math.inf
    for _ in range(10):
        start = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - start)
    return 2 * 512**3 / best


def peak_flops(device: torch.device, dtype: torch.dtype) -> tuple[float | None, str]:
    """The FLOP/s that MFU divides by, and a label that says what it is: a known GPU's dense
    16-bit peak from its data sheet, or on a CPU the matrix-multiply speed measured now."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tflops in GPU_PEAK_TFLOPS:
            if key in name:
                return tflops * 1e12, f"{name}: {tflops} TFLOP/s 16-bit peak (data sheet)"
        return None, f"{name}: peak unknown, no MFU"
    if device.type == "cpu":
        flops, threads = _cpu_peak_flops(dtype), torch.get_num_threads()
        return flops, (f"CPU: {flops / 1e9:.0f} GFLOP/s, the {str(dtype)[6:]} matrix-multiply "
                       f"speed measured now on {threads} thread{'s' * (threads > 1)}")
    return None, f"{device.type}: peak unknown, no MFU"


@dataclass(frozen=True)
class GPU:
    """A GPU as a cost estimate sees it: the peak it can reach and an example rental price."""

    name: str
    peak_tflops: float  # dense (no sparsity), in the precision buildllm.pretrain would use
    precision: str
    usd_per_hour: float  # an example on-demand price for one GPU in 2026; providers vary a lot
    spec_sheet: str  # the vendor's page the peak is read from


_PEAKS = dict(GPU_PEAK_TFLOPS)  # the 16-bit peaks buildllm.pretrain divides by for its MFU
# The GPUs, peaks and example prices of Meeting-7/SCALING.md, which says where each comes from.
GPUS = (
    # no bfloat16 units: --dtype bf16 runs in float16 there (buildllm.pretrain.autocast_dtype)
    GPU("T4", _PEAKS["T4"], "fp16", 0.35, "https://www.nvidia.com/en-us/data-center/tesla-t4/"),
    GPU("L4", _PEAKS["L4"], "bf16", 0.80, "https://www.nvidia.com/en-us/data-center/l4/"),
    GPU("A100 40GB", _PEAKS["A100"], "bf16", 1.20,
        "https://www.nvidia.com/en-us/data-center/a100/"),
    GPU("H100 SXM", _PEAKS["H100"], "bf16", 2.50,
        "https://www.nvidia.com/en-us/data-center/h100/"),
)


def training_cost(cfg: GPTConfig, tokens: float, gpu: GPU, mfu: float = 0.4,
                  n_gpus: int = 1) -> dict:
    """Time and price of training `cfg` on `tokens` tokens with `n_gpus` of `gpu`, which deliver
    their peak × `mfu` (30-50% is usual for a well-fed GPT of this size).

    >>> training_cost(CONFIGS["124M"], 2.5e9, GPUS[3])["hours"]  # an H100: about 1.5 hours
    """
    if tokens <= 0 or not 0 < mfu <= 1 or n_gpus < 1:
        raise ValueError(f"need tokens > 0, 0 < mfu <= 1 and n_gpus >= 1; got tokens={tokens}, "
                         f"mfu={mfu}, n_gpus={n_gpus}")
    flops = 3 * forward_flops_per_token(cfg) * tokens
    hours = flops / (gpu.peak_tflops * 1e12 * mfu * n_gpus) / 3600
    return {"gpu": gpu.name, "gpus": n_gpus, "precision": gpu.precision, "tokens": tokens,
            "flops": flops, "hours": hours, "usd": hours * n_gpus * gpu.usd_per_hour}
