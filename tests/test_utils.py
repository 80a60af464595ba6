"""Seeding, device choice and the CPU calibration."""

import json
import random

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


def test_estimates_scale_the_reference_times_per_meeting(monkeypatch):
    record = {
        "reference_seconds": 2.0,
        "seconds": {"Meeting-0/a.ipynb": 60, "Meeting-0/b.ipynb": 60, "Meeting-1/c.ipynb": 120},
    }

    class Files:
        def joinpath(self, _):
            return self

        def read_text(self):
            return json.dumps(record)

    monkeypatch.setattr(utils.resources, "files", lambda _: Files())
    # A CPU that takes 1 s where the reference took 2 s is twice as fast.
    assert utils.estimate_minutes(1.0) == pytest.approx({"Meeting-0": 1.0, "Meeting-1": 1.0})
