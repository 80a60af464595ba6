"""What training costs (Meetings 5 and 7): FLOPs, the hardware's peak, MFU, hours and dollars.

Training a GPT costs three forward passes per token (the backward pass is twice the forward),
so 3 × `buildllm.model.forward_flops_per_token` per token, which also counts a
`buildllm.decoder.DecoderConfig`'s shapes. MFU (model FLOPs utilization) is the
share of the hardware's peak that this arithmetic uses: the pretraining command prints it,
against `peak_flops`. `training_cost` goes the other way: from a model, a token budget, a GPU
and an assumed MFU to hours and dollars. `check_fits_in_memory` asks, before anything is
allocated, whether a model (and its training) fits in this machine's memory at all.
"""

from __future__ import annotations

import functools
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .decoder import DecoderConfig
from .model import GPTConfig, forward_flops_per_token
from .pretrain_data import InputError

__all__ = ["GPU", "GPUS", "GPU_PEAK_TFLOPS", "available_memory", "check_fits_in_memory",
           "memory_needed", "parameter_count", "peak_flops", "training_cost"]

# Dense 16-bit tensor-core peaks in TFLOP/s, from NVIDIA's data sheets: bf16, or fp16 for the
# T4 and V100, which have no bf16 units.
# The first name found in torch.cuda.get_device_name() wins, so "H100 PCIe" precedes "H100".
GPU_PEAK_TFLOPS = {"H100 PCIe": 756, "H100 NVL": 835, "H100": 989, "H200": 989, "A100": 312,
                   "L40S": 362, "L4": 121, "T4": 65, "V100": 125}


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
        for key, tflops in GPU_PEAK_TFLOPS.items():
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


# The GPUs, peaks and example prices of Meeting-7/SCALING.md, which says where each comes from.
GPUS = (
    # no bfloat16 units: --dtype bf16 runs in float16 there (buildllm.pretrain.autocast_dtype)
    GPU("T4", GPU_PEAK_TFLOPS["T4"], "fp16", 0.35,
        "https://www.nvidia.com/en-us/data-center/tesla-t4/"),
    GPU("L4", GPU_PEAK_TFLOPS["L4"], "bf16", 0.80, "https://www.nvidia.com/en-us/data-center/l4/"),
    GPU("A100 40GB", GPU_PEAK_TFLOPS["A100"], "bf16", 1.20,
        "https://www.nvidia.com/en-us/data-center/a100/"),
    GPU("H100 SXM", GPU_PEAK_TFLOPS["H100"], "bf16", 2.50,
        "https://www.nvidia.com/en-us/data-center/h100/"),
)


def training_cost(cfg: GPTConfig | DecoderConfig, tokens: float, gpu: GPU, mfu: float = 0.4,
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


# -- will it fit? ----------------------------------------------------------------------

def parameter_count(cfg: GPTConfig | DecoderConfig) -> int:
    """GPTModel(cfg)'s or Decoder(cfg)'s parameters, from the config alone (a tied output layer
    counts once), so that a size can be judged before a single weight is allocated."""
    if isinstance(cfg, GPTConfig):
        cfg = DecoderConfig.from_gpt(cfg)  # the same shapes, so the same count
    d, hidden = cfg.emb_dim, cfg.hidden_dim
    q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim  # features, all heads
    norm = 2 * d if cfg.norm == "layer" else d  # LayerNorm has a shift, RMSNorm only a scale
    mlp_matrices = 3 if cfg.mlp == "swiglu" else 2
    per_layer = (2 * norm + 2 * cfg.head_dim * cfg.qk_norm
                 + d * (q + 2 * kv) + (q + 2 * kv) * cfg.qkv_bias  # queries, keys and values
                 + q * d + d * cfg.proj_bias  # attention's output projection
                 + mlp_matrices * d * hidden  # the feed-forward network
                 + ((mlp_matrices - 1) * hidden + d) * cfg.mlp_bias)
    positions = cfg.context_length * d if cfg.positions == "learned" else 0
    head = 0 if cfg.tie_embeddings else cfg.vocab_size * d
    return cfg.vocab_size * d + positions + cfg.n_layers * per_layer + norm + head


def memory_needed(cfg: GPTConfig | DecoderConfig, *, training: bool, batch_size: int = 1) -> int:
    """Bytes that `cfg` needs at the least: its float32 weights, 4 bytes a parameter. Training
    adds the gradients and AdamW's two running averages (16 bytes a parameter in all) and one
    batch's logits with their gradient (2 × batch × context × vocab floats). The activations
    of the blocks come on top, so a model that passes may still not fit; one that fails cannot."""
    if not training:
        return 4 * parameter_count(cfg)
    logits = batch_size * cfg.context_length * cfg.vocab_size
    return 16 * parameter_count(cfg) + 2 * 4 * logits


def available_memory(device: str | torch.device = "cpu") -> int | None:
    """Bytes free for a new model on `device`: a CUDA GPU's free memory; elsewhere the RAM
    Linux says it can give (MemAvailable + SwapFree in /proc/meminfo), or, on other systems,
    the physical RAM. None where there is no way to tell (Windows)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        kib = dict(line.split()[:2] for line in meminfo.read_text().splitlines())
        return (int(kib["MemAvailable:"]) + int(kib.get("SwapFree:", 0))) * 1024
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return None


def check_fits_in_memory(cfg: GPTConfig | DecoderConfig, *, training: bool, batch_size: int = 1,
                         device: str | torch.device = "cpu") -> None:
    """Raise InputError, before anything is allocated, if `cfg` cannot fit in `device`'s
    memory (see `memory_needed` and `available_memory`): one clear line instead of a crash,
    or of an hour of swapping."""
    free = available_memory(device)
    need = memory_needed(cfg, training=training, batch_size=batch_size)
    if free is not None and need > free:
        what = ("to train (weights, gradients, AdamW's two averages and one batch's logits)"
                if training else "to load (its float32 weights)")
        where = "this GPU" if torch.device(device).type == "cuda" else "this machine"
        n = parameter_count(cfg)
        size = f"{n / 1e6:,.1f}M" if n < 1e9 else f"{n / 1e9:,.1f}B"
        raise InputError(
            f"a model of {size} parameters needs at least {need / 1e9:,.1f} GB {what}, but "
            f"{where} has {free / 1e9:,.1f} GB available: choose a smaller model"
            + (" or batch" if training else ""))
