"""Sinusoidal position encodings against their defining formula."""

import math

import pytest
import torch

from buildllm.embeddings import sinusoidal_positions


def test_matches_the_formula_of_vaswani_et_al_element_by_element():
    pe = sinusoidal_positions(50, 16)
    for pos in (0, 1, 17, 49):
        for i in range(8):
            angle = pos / 10_000 ** (2 * i / 16)
            assert pe[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-5)
            assert pe[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-5)


def test_each_sine_cosine_pair_lies_on_the_unit_circle():
    pe = sinusoidal_positions(30, 8)
    radii = pe[:, 0::2] ** 2 + pe[:, 1::2] ** 2
    assert torch.allclose(radii, torch.ones_like(radii), atol=1e-6)


def test_odd_dimension_is_rejected():
    with pytest.raises(ValueError, match="even"):
        sinusoidal_positions(4, 5)
