"""Muon (Meeting 5, bonus): an optimizer for a network's hidden weight matrices, written out.

AdamW scales each weight's step by that weight's own history. It never looks at a matrix as
a whole. A weight matrix's momentum is usually dominated by a few directions: most of its
"energy" sits in its top singular values. Muon (Keller Jordan, 2024) replaces the momentum
M = U·S·Vᵀ by U·Vᵀ, the nearest orthogonal matrix: every direction gets a step of the same
size, so the rare directions learn as fast as the common ones. An SVD per step would be slow;
a few Newton–Schulz iterations (matrix multiplications only, fine in bfloat16) give nearly the
same thing (`orthogonalize`).

Muon only makes sense for matrices that map one hidden vector to another. Embeddings (a
lookup, one row per token), the output layer, norm scales and biases keep AdamW, as in
modded-nanogpt and nanochat: `split_parameters` sorts a model's parameters that way and
`MuonAdamW` steps both as one optimizer that `training.fit`, a scheduler and a checkpoint
treat like any other.

`Muon` matches `torch.optim.Muon` step for step (tests/test_muon.py), with one different
default: the learning-rate adjustment, explained in `ADJUST_LR`.

>>> model = GPTModel(CONFIGS["cpu-tiny"])
>>> optimizer = MuonAdamW(model, lr=1e-3)   # then use it wherever an AdamW went
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .training import AdamW

__all__ = ["ADJUST_LR", "KELLER_COEFFICIENTS", "Muon", "MuonAdamW", "orthogonalize",
           "split_parameters"]

# (a, b, c) of the quintic a·x + b·x³ + c·x⁵ that each Newton–Schulz step applies to every
# singular value x. Chosen (Keller Jordan) for the steepest rise near 0, so that 5 steps lift
# even small singular values: 5 steps multiply a tiny one by a⁵ ≈ 490.
KELLER_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalize(G: torch.Tensor, steps: int = 5,
                  coefficients: tuple[float, float, float] = KELLER_COEFFICIENTS,
                  eps: float = 1e-7, dtype: torch.dtype | None = None) -> torch.Tensor:
    """U·S'·Vᵀ for G = U·S·Vᵀ, with every singular value S' near 1: Muon's update direction.

    First G is divided by its Frobenius norm, which is at least its largest singular value,
    so every singular value x lies in [0, 1]. Each step X ← a·X + b·(XXᵀ)X + c·(XXᵀ)²X then
    maps each singular value x to a·x + b·x³ + c·x⁵ and keeps U and V. With Keller Jordan's
    coefficients, 5 steps send every x ≥ 0.002 (in exact arithmetic) into [0.68, 1.21]: not
    exactly 1, but Muon trains as well with that as with U·Vᵀ. Smaller ones rise less (x·a⁵ at
    most), and 0 stays 0. A tall matrix is worked on transposed: XXᵀ is then the smaller of
    the two square matrices. `eps` keeps a zero G at zero; a G whose norm is not far above it
    comes out shrunk in proportion.

    G may be a stack (..., rows, cols) of matrices of one shape, each orthogonalized on its
    own: one batched multiplication costs less than many small ones.

    The work runs in `dtype` (default: G's; torch.bfloat16 as Muon does on GPUs) and the
    result comes back in G's dtype. bfloat16 keeps 3 significant digits, and the steps lift
    its rounding errors like any small singular value: a matrix of rank 4 comes out of
    float32 with 4 singular values near 1 and the rest below 1e-4, out of bfloat16 with the
    rest up to about 0.35.

    >>> torch.linalg.svdvals(orthogonalize(torch.randn(64, 256)))   # all in [0.68, 1.21]
    """
    if G.ndim < 2:
        raise ValueError(f"orthogonalize takes a matrix or a stack of them, got a tensor of "
                         f"shape {tuple(G.shape)}")
    a, b, c = coefficients
    X = G.to(dtype or G.dtype).reshape(-1, *G.shape[-2:])  # (matrices, rows, cols)
    tall = X.shape[1] > X.shape[2]
    if tall:
        X = X.mT  # (matrices, short side, long side)
    X = X / X.norm(dim=(1, 2), keepdim=True).clamp(min=eps)  # singular values now in [0, 1]
    for _ in range(steps):
        A = X @ X.mT  # (matrices, short, short)
        B = torch.baddbmm(A, A, A, beta=b, alpha=c)  # b·A + c·A², fused as torch.optim.Muon does
        X = torch.baddbmm(X, B, X, beta=a)  # a·X + B·X
    return (X.mT if tall else X).reshape(G.shape).to(G.dtype)


# How much to scale a (rows, cols) matrix's learning rate. The orthogonalized update has
# singular values near 1, so its entries' RMS is 1/√max(rows, cols), whatever the gradient's
# size: a wide layer would move less per entry than a narrow one.
# - "original" (Keller Jordan, modded-nanogpt, nanochat; torch.optim.Muon's default):
#   √max(1, rows/cols). Tall matrices, which widen their input, take bigger steps; Muon's
#   learning rate then needs its own tuning (0.02 to 0.05 in those recipes).
# - "match_rms_adamw" (Moonshot AI, "Muon is Scalable for LLM Training", 2025), our default:
#   0.2·√max(rows, cols), which makes the update's RMS 0.2, about what AdamW's is. The
#   learning rate, its schedule and the weight decay tuned for AdamW then carry over
#   unchanged, so swapping AdamW for Muon in the course's recipe changes one thing only.
ADJUST_LR = {
    "original": lambda rows, cols: math.sqrt(max(1.0, rows / cols)),
    "match_rms_adamw": lambda rows, cols: 0.2 * math.sqrt(max(rows, cols)),
}


class Muon(torch.optim.Optimizer):
    """Momentum, orthogonalized: SGD with Nesterov momentum whose step is `orthogonalize`d.

    Per matrix W, with gradient g, it keeps a running average of the gradient,
    M ← μ·M + (1 - μ)·g. With Nesterov it steps along (1 - μ)·g + μ·M, a look ahead, else
    along M. That direction is orthogonalized, then W ← W·(1 - lr·weight_decay)
    - lr·ADJUST_LR[adjust_lr](rows, cols)·update. The decay is decoupled (as in AdamW) and
    uses the unadjusted lr, as torch.optim.Muon does. Only 2-D parameters: give the rest to
    AdamW (`split_parameters`). Pass `model.named_parameters()`-style pairs to get errors
    that name the parameter. Newton–Schulz runs in `ns_dtype`, bfloat16 by default as in
    torch.optim.Muon (which has no other); None runs it in the parameter's own dtype.
    """

    def __init__(self, params, lr: float = 1e-3, weight_decay: float = 0.1,
                 momentum: float = 0.95, nesterov: bool = True,
                 adjust_lr: str = "match_rms_adamw", ns_steps: int = 5,
                 ns_coefficients: tuple[float, float, float] = KELLER_COEFFICIENTS,
                 eps: float = 1e-7, ns_dtype: torch.dtype | None = torch.bfloat16):
        for ok, need in ((lr >= 0, f"lr must be 0 or more, got {lr}"),
                         (0 <= momentum < 1, f"momentum must be in [0, 1), got {momentum}"),
                         (weight_decay >= 0, f"weight_decay must be 0 or more, got {weight_decay}"),
                         (adjust_lr in ADJUST_LR,
                          f"adjust_lr must be one of {sorted(ADJUST_LR)}, got {adjust_lr!r}"),
                         (ns_steps >= 1, f"ns_steps must be 1 or more, got {ns_steps}")):
            if not ok:
                raise ValueError(f"Muon: {need}")
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "momentum": momentum,
                                  "nesterov": nesterov, "adjust_lr": adjust_lr,
                                  "ns_steps": ns_steps, "ns_coefficients": ns_coefficients,
                                  "eps": eps, "ns_dtype": ns_dtype})

    def add_param_group(self, param_group: dict) -> None:
        """Refuse, with the parameter's name, anything that is not a matrix."""
        super().add_param_group(param_group)
        names = param_group.get("param_names") or [
            f"parameter {i} of group {len(self.param_groups) - 1}"
            for i in range(len(param_group["params"]))]
        for name, p in zip(names, param_group["params"], strict=True):
            if p.ndim != 2:
                self.param_groups.pop()  # the group just added: leave the optimizer as it was
                raise ValueError(f"Muon updates matrices only, but {name} has shape "
                                 f"{tuple(p.shape)}: give it to AdamW (see split_parameters)")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else torch.enable_grad()(closure)()
        for group in self.param_groups:
            by_shape: dict[torch.Size, list] = {}
            for p in group["params"]:
                if p.grad is not None:
                    by_shape.setdefault(p.shape, []).append((p, self._direction(p, group)))
            # A model repeats its shapes in every block: orthogonalizing them as one stack
            # takes 40% less time on a CPU than one matrix at a time, with the same result.
            for shape, pairs in by_shape.items():
                updates = orthogonalize(torch.stack([d for _, d in pairs]), group["ns_steps"],
                                        group["ns_coefficients"], group["eps"], group["ns_dtype"])
                scale = ADJUST_LR[group["adjust_lr"]](*shape)
                for (p, _), update in zip(pairs, updates, strict=True):
                    p.mul_(1 - group["lr"] * group["weight_decay"])  # decoupled weight decay
                    p.add_(update, alpha=-group["lr"] * scale)
        return loss

    def _direction(self, p: torch.Tensor, group: dict) -> torch.Tensor:
        """Update p's running average of its gradient; return the direction to orthogonalize."""
        state = self.state[p]
        if not state:
            state["momentum_buffer"] = torch.zeros_like(p)
        m, mu = state["momentum_buffer"], group["momentum"]
        m.lerp_(p.grad, 1 - mu)  # M = μ·M + (1 - μ)·g
        return p.grad.lerp(m, mu) if group["nesterov"] else m  # Nesterov: (1 - μ)·g + μ·M


def split_parameters(model: nn.Module) -> tuple[list[tuple[str, nn.Parameter]],
                                                list[tuple[str, nn.Parameter]]]:
    """The model's trainable parameters as (name, parameter) pairs: (for Muon, for AdamW).

    Muon gets the hidden matrices: the 2-D weights inside the repeated blocks, which a model
    keeps in an nn.ModuleList (GPTModel's `trf_blocks`). AdamW gets the rest: the embeddings
    (a lookup table, not a map between hidden vectors), the output layer, norm scales and
    biases. A weight shared by two layers (GPT-2's tied embedding and output layer) is listed
    once, under its first name; frozen parameters (LoRA's base weights) are left out.

    >>> hidden, rest = split_parameters(GPTModel(CONFIGS["cpu-tiny"]))
    >>> [name for name, _ in rest][:3]
    ['tok_emb.weight', 'pos_emb.weight', 'trf_blocks.0.norm1.scale']
    """
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    in_blocks = {id(p) for m in model.modules() if isinstance(m, nn.ModuleList)
                 for p in m.parameters()}
    hidden, rest = [], []
    for name, p in model.named_parameters():  # each shared weight once
        if p.requires_grad:
            is_hidden = p.ndim == 2 and id(p) in in_blocks and id(p) not in embeddings
            (hidden if is_hidden else rest).append((name, p))
    return hidden, rest


class MuonAdamW(torch.optim.Optimizer):
    """Muon for a model's hidden matrices and the course's AdamW for the rest, as one optimizer.

    `split_parameters` decides which is which. AdamW decays the rest's matrices (embeddings,
    the output layer) and not its norms and biases, like `training.param_groups`. Both use
    `lr` and `weight_decay`: with Muon's default "match_rms_adamw" adjustment that is right
    for both (`ADJUST_LR`). `muon_lr` gives Muon its own, for adjust_lr="original" say.
    `muon_options` are Muon's other settings (nesterov, adjust_lr, ns_dtype...).

    A training loop sees one optimizer. Its param_groups are the two optimizers' own group
    dicts (Muon's first), so a scheduler or a loop that sets a group's "lr" sets it where
    that optimizer's step reads it. step() and zero_grad() cover both; state_dict() holds
    both, for a checkpoint that resumes exactly. `self.muon` and `self.adamw` are the two.
    """

    def __init__(self, model: nn.Module, lr: float = 1e-3, weight_decay: float = 0.1,
                 betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8,
                 momentum: float = 0.95, muon_lr: float | None = None, **muon_options):
        hidden, rest = split_parameters(model)
        if not hidden:
            raise ValueError(f"{type(model).__name__} has no hidden matrices (2-D weights inside "
                             "an nn.ModuleList) for Muon: train it with AdamW alone")
        if not rest:
            raise ValueError(f"{type(model).__name__} has nothing but hidden matrices, nothing "
                             "for AdamW: train it with Muon alone")
        self.muon = Muon(hidden, lr=lr if muon_lr is None else muon_lr,
                         weight_decay=weight_decay, momentum=momentum, **muon_options)
        groups = [{"params": [(n, p) for n, p in rest if p.ndim >= 2],
                   "weight_decay": weight_decay},
                  {"params": [(n, p) for n, p in rest if p.ndim < 2], "weight_decay": 0.0}]
        self.adamw = AdamW([g for g in groups if g["params"]], lr=lr, betas=betas, eps=eps)
        super().__init__(self._groups(), {})

    def _groups(self) -> list[dict]:
        return self.muon.param_groups + self.adamw.param_groups

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else torch.enable_grad()(closure)()
        self.muon.step()
        self.adamw.step()
        return loss

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        if not isinstance(state_dict, dict) or set(state_dict) != {"muon", "adamw"}:
            raise ValueError("this optimizer state is not a MuonAdamW's (it needs 'muon' and "
                             "'adamw' entries): resume with the optimizer it was saved from")
        self.muon.load_state_dict(state_dict["muon"])
        self.adamw.load_state_dict(state_dict["adamw"])
        self.param_groups = self._groups()  # loading gave both optimizers new group dicts
