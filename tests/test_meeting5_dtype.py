"""The pretraining command's compute dtype: bfloat16 only where the hardware has it.

Colab's free T4 (compute capability 7.5) has no bfloat16 units, so `--dtype bf16` computes
in float16 there, with a gradient scaler. The choice is a pure function of the capability,
so it is tested here without a GPU; the float16 path itself runs on the CPU, where PyTorch's
autocast and GradScaler accept float16 too.
"""

import math

import pytest
import torch

import buildllm.pretrain
from buildllm.pretrain import autocast_dtype, main
from buildllm.training import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.mark.parametrize("capability", [(7, 5), (7, 0), (6, 1)])  # T4, V100, GTX 10xx
def test_bf16_becomes_float16_on_a_gpu_older_than_ampere(capability):
    assert autocast_dtype("bf16", "cuda", capability) == torch.float16


@pytest.mark.parametrize("capability", [(8, 0), (8, 6), (8, 9), (9, 0)])  # A100, RTX 30xx...
def test_bf16_stays_bfloat16_on_a_gpu_with_bfloat16_units(capability):
    assert autocast_dtype("bf16", "cuda", capability) == torch.bfloat16


def test_fp32_is_float32_everywhere():
    for device, capability in [("cuda", (7, 5)), ("cuda", (9, 0)), ("cpu", None), ("mps", None)]:
        assert autocast_dtype("fp32", device, capability) == torch.float32


def test_fp16_is_for_gpus_and_a_cpu_computes_in_float32_instead():
    assert autocast_dtype("fp16", "cuda", (7, 5)) == torch.float16
    assert autocast_dtype("fp16", "cpu") == torch.float32


def test_bf16_on_a_cpu_is_left_as_asked():
    assert autocast_dtype("bf16", "cpu") == torch.bfloat16


def test_a_float16_run_scales_its_gradients_and_keeps_the_scaler_in_its_checkpoint(
    tmp_path, monkeypatch
):
    # What a T4 would do with --dtype bf16, run on the CPU: float16 autocast and a scaler.
    monkeypatch.setattr(buildllm.pretrain, "autocast_dtype", lambda *args: torch.float16)
    text = tmp_path / "text.txt"
    text.write_text("To be, or not to be, that is the question.\n" * 200, "utf-8")
    tiny = ["--tokenizer", "char", "--context-length", "16", "--emb-dim", "16", "--n-heads", "2",
            "--n-layers", "1", "--batch-size", "4", "--eval-batches", "1", "--eval-every", "3"]
    out = tmp_path / "run"
    summary = main([str(text), *tiny, "--steps", "6", "--dtype", "bf16", "--out", str(out)])
    assert all(math.isfinite(x) for x in summary["history"]["train_loss"])
    assert summary["val_loss"] < summary["history"]["val_loss"][0]  # it learned
    scaler = load_checkpoint(out / "checkpoint.pt")["scaler"]
    assert scaler["scale"] > 0  # a live scaler's state, for --resume
    resumed = main(["--out", str(out), "--resume", "--steps", "6"])
    assert resumed["step"] == 6
