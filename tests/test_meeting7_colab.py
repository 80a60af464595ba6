"""Meeting 7 on Colab: the capstone's Google Drive switch does nothing unless it is turned on
in Colab, and then mounts Drive and moves the project there; on a GPU without bfloat16
units (a T4) the capstone's pretraining and notebook 2's 16-bit row use float16 instead; and
notebook 3's server accepts the host name of Colab's port proxy there, and only there."""

import json
import sys
import types
from pathlib import Path

import httpx
import pytest
import torch

from buildllm.capstone import GPUS
from buildllm.costs import GPU_PEAK_TFLOPS
from buildllm.pretrain import autocast_dtype
from buildllm.serve import BackgroundServer, create_app

ROOT = Path(__file__).resolve().parents[1]
CAPSTONE = ROOT / "Meeting-7" / "01_capstone.ipynb"
INFERENCE = ROOT / "Meeting-7" / "02_inference.ipynb"
SERVING = ROOT / "Meeting-7" / "03_serving.ipynb"


def cell_with(notebook: Path, text: str) -> str:
    """The source of the one code cell of `notebook` that contains `text`."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    sources = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    found = [s for s in sources if text in s]
    assert len(found) == 1, f"{len(found)} code cells of {notebook.name} contain {text!r}"
    return found[0]


DRIVE_CELL = cell_with(CAPSTONE, "KEEP_ON_DRIVE = False")


@pytest.fixture
def fake_colab(monkeypatch):
    """`google.colab` as Colab provides it, with a `drive.mount` that records its calls."""
    mounted = []
    drive = types.SimpleNamespace(mount=lambda folder, **kwargs: mounted.append(folder))
    colab = types.ModuleType("google.colab")
    colab.drive = drive
    google = types.ModuleType("google")
    google.colab = colab
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    return mounted


def run_drive_cell(turned_on: bool) -> dict:
    source = DRIVE_CELL.replace("KEEP_ON_DRIVE = False", f"KEEP_ON_DRIVE = {turned_on}")
    namespace = {"PROJECT": "capstone-run"}  # as the settings cell above it leaves it
    exec(compile(source, "drive cell", "exec"), namespace)
    return namespace


def test_the_drive_switch_is_off_by_default_and_then_does_nothing_even_in_colab(fake_colab,
                                                                                capsys):
    assert run_drive_cell(turned_on=False)["PROJECT"] == "capstone-run"
    assert fake_colab == [] and capsys.readouterr().out == ""


def test_outside_colab_the_drive_switch_only_says_it_is_for_colab(monkeypatch, capsys):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert run_drive_cell(turned_on=True)["PROJECT"] == "capstone-run"
    assert "for Colab" in capsys.readouterr().out


def test_in_colab_the_drive_switch_mounts_drive_and_moves_the_project_onto_it(fake_colab):
    project = run_drive_cell(turned_on=True)["PROJECT"]
    assert fake_colab == ["/content/drive"]
    assert project.startswith("/content/drive/MyDrive/")


def test_the_settings_are_built_after_the_drive_switch():
    cells = ["".join(c["source"]) for c in json.loads(CAPSTONE.read_text("utf-8"))["cells"]]
    switch = next(i for i, s in enumerate(cells) if "KEEP_ON_DRIVE = False" in s)
    build = next(i for i, s in enumerate(cells) if "cfg = Capstone(TEXT_FOLDER, PROJECT" in s)
    assert switch < build


@pytest.mark.parametrize(("device", "capability", "expected"), [
    ("cpu", None, torch.bfloat16),  # notebook 2's CPU rows stay bf16
    ("mps", None, torch.bfloat16),
    ("cuda", (7, 5), torch.float16),  # Colab's T4: no bfloat16 units
    ("cuda", (7, 0), torch.float16),  # V100
    ("cuda", (8, 0), torch.bfloat16),  # A100
    ("cuda", (9, 0), torch.bfloat16),  # H100
])
def test_the_16_bit_type_follows_the_compute_capability(device, capability, expected):
    assert autocast_dtype("bf16", device, capability) == expected


def test_notebook_2_picks_its_16_bit_type_by_the_compute_capability_wherever_it_times_one():
    table = cell_with(INFERENCE, "variants = {\"fp32\": model")
    gpu = cell_with(INFERENCE, "GPU_DEMO = ")
    for source in (table, gpu):
        assert 'autocast_dtype("bf16"' in source
        assert "torch.bfloat16)" not in source.replace("!= torch.bfloat16", "")


def test_the_capstones_t4_estimate_uses_float16_the_type_pretraining_computes_in_there():
    t4 = next(gpu for gpu in GPUS if gpu.name == "T4")
    assert autocast_dtype("bf16", "cuda", (7, 5)) == torch.float16
    assert t4.precision == "fp16"
    assert t4.peak_tflops == dict(GPU_PEAK_TFLOPS)["T4"]


@pytest.mark.parametrize("in_colab", [True, False])
def test_notebook_3s_server_answers_colabs_proxy_host_in_colab_only(in_colab, chat, request):
    if in_colab:
        request.getfixturevalue("fake_colab")
    namespace = {"sys": sys, "chat": chat, "name": "tiny", "create_app": create_app,
                 "BackgroundServer": BackgroundServer}
    exec(compile(cell_with(SERVING, "allowed_hosts=hosts"), "server cell", "exec"), namespace)
    with namespace["server"] as server:
        proxied = httpx.get(f"{server.url}/v1/models", timeout=30,
                            headers={"Host": "8000-m-s-abc123.prod.colab.dev"})
        direct = httpx.get(f"{server.url}/v1/models", timeout=30)
    assert proxied.status_code == (200 if in_colab else 421)
    assert direct.status_code == 200
