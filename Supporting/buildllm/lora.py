"""LoRA, low-rank adaptation (Meeting 6): fine-tune a few small matrices beside frozen weights.

A linear layer computes x·Wᵀ + b with W of shape (out, in). LoRA (Hu et al. 2021) leaves W
frozen and learns an update of rank r, written as the product of two thin matrices:

    y = x·Wᵀ + b + (alpha / r) · x·Aᵀ·Bᵀ        A: (r, in), B: (out, r)

Training then touches r·(in + out) numbers per layer instead of in·out. B starts at zero,
so the wrapped model begins exactly where the pretrained one was; A starts random, so the
first gradient step already moves B in a useful direction. alpha / r keeps the size of the
update roughly the same when you try another rank. After training, `merge_lora` folds
(alpha / r)·B·A into W, and inference costs what it cost before.

    >>> add_lora(model, rank=8, alpha=16)      # wraps att.qkv, att.out_proj and the two ff layers
    >>> trainable_parameters(model)            # only the A and B matrices
    >>> merge_lora(model)                      # plain nn.Linear layers again, same outputs

The initialization follows Hugging Face peft's default, and tests/test_lora.py checks outputs
and gradients against peft itself.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn

from .model import count_parameters as trainable_parameters  # what an optimizer would update

__all__ = ["DEFAULT_TARGETS", "LoRALinear", "add_lora", "merge_lora", "trainable_parameters"]

# Every linear layer of a GPTModel block: the fused query/key/value projection, the projection
# after attention, and the feed-forward's widening and narrowing layers.
DEFAULT_TARGETS = ("att.qkv", "att.out_proj", "ff.layers.0", "ff.layers.2")


def _check_settings(rank: int, dropout: float) -> None:
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank must be a positive integer, got {rank!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


class LoRALinear(nn.Module):
    """A frozen nn.Linear plus a trainable low-rank update: base(x) + scale · x·Aᵀ·Bᵀ.

    >>> layer = LoRALinear(nn.Linear(64, 32), rank=4, alpha=8)   # 4·(64 + 32) = 384 trainable
    >>> torch.equal(layer(x), layer.base(x))                     # True until B is trained
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        _check_settings(rank, dropout)
        self.base = base.requires_grad_(False)
        self.rank, self.alpha, self.scale = rank, alpha, alpha / rank
        like = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.A = nn.Parameter(torch.empty(rank, base.in_features, **like))
        # peft's default, which is nn.Linear's own: uniform in ±1/√in, the spread of a fresh layer.
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        # Zero, so B·A = 0 and the wrapped layer starts as the pretrained one.
        self.B = nn.Parameter(torch.zeros(base.out_features, rank, **like))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (…, in) -> (…, r) -> (…, out): two thin products; the (out, in) matrix B·A is never built.
        return self.base(x) + (self.dropout(x) @ self.A.T @ self.B.T) * self.scale

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """A plain nn.Linear computing the same function: weight W + scale · B·A, in the base
        weight's memory layout (GPTModel stores its block weights transposed)."""
        layer = copy.deepcopy(self.base)  # keeps the strides and requires_grad flags
        layer.weight.add_(self.scale * (self.B @ self.A))
        return layer

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha}, scale={self.scale:g}"


def add_lora(model: nn.Module, rank: int = 8, alpha: float = 16,
             targets: Sequence[str] = DEFAULT_TARGETS, dropout: float = 0.0) -> nn.Module:
    """Freeze every parameter of `model`, then wrap the target linear layers in LoRALinear.

    A target is a suffix of a module name inside `model.trf_blocks` (inside the model itself
    for a module without one): "att.qkv" matches trf_blocks.0.att.qkv, trf_blocks.1.att.qkv...
    Afterwards only the A and B matrices train; unfreeze anything else you want trained (a new
    classification head, say) yourself. Changes `model` in place and returns it.

    >>> add_lora(model, rank=8, alpha=16, targets=("att.qkv",))
    """
    if isinstance(targets, str):
        raise TypeError(f"targets must be a sequence of names, e.g. ({targets!r},), "
                        "not a single string")
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise ValueError("this model already has LoRA layers: merge them with merge_lora() "
                         "before adding new ones")
    _check_settings(rank, dropout)  # before anything changes
    root = getattr(model, "trf_blocks", model)
    chosen: dict[str, nn.Module] = {}
    for target in targets:
        found = {name: m for name, m in root.named_modules()
                 if name == target or name.endswith("." + target)}
        if not found:
            raise ValueError(f"target {target!r} matches no module; module names look like "
                             f"{[n for n, _ in root.named_modules() if n][:4]}")
        for name, m in found.items():
            if not isinstance(m, nn.Linear):
                raise ValueError(f"target {target!r} matches {name}, a {type(m).__name__}; "
                                 "LoRA wraps nn.Linear layers only")
        chosen.update(found)
    model.requires_grad_(False)
    for name, linear in chosen.items():
        root.set_submodule(name, LoRALinear(linear, rank, alpha, dropout))
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every LoRALinear in `model` with the plain nn.Linear it computes (in place).

    The outputs stay the same up to float rounding, the extra matrix products go away, and
    the model holds no A or B matrices any more. Returns `model`; a model without LoRA
    layers comes back unchanged.
    """
    if isinstance(model, LoRALinear):
        return model.merged()
    wrapped = [name for name, m in model.named_modules() if isinstance(m, LoRALinear)]
    for name in wrapped:
        model.set_submodule(name, model.get_submodule(name).merged())
    return model
