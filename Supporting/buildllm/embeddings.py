"""Position information for token embeddings (built in Meeting 1).

GPT-2 learns one vector per position (an nn.Embedding, like its token embedding).
The original Transformer used fixed sinusoids instead; this module holds those.

    >>> sinusoidal_positions(4, 6).shape
    torch.Size([4, 6])
"""

from __future__ import annotations

import torch

__all__ = ["sinusoidal_positions"]


def sinusoidal_positions(num_positions: int, dim: int, base: float = 10_000.0) -> torch.Tensor:
    """The fixed position encodings of "Attention Is All You Need" (Vaswani et al., 2017).

    Row p holds sin(p / base^(2i/dim)) in column 2i and cos(...) in column 2i+1: each pair
    of columns is a clock at its own frequency, from one turn every 2*pi positions down to
    one every base*2*pi, so nearby positions get similar vectors.
    """
    if dim % 2:
        raise ValueError(f"dim must be even so sines and cosines pair up, got {dim}")
    positions = torch.arange(num_positions, dtype=torch.float32)[:, None]  # (P, 1)
    freqs = base ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim)  # (dim/2,)
    angles = positions * freqs  # (P, dim/2)
    return torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1).flatten(1)  # interleaved
