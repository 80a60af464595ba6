"""Meeting 6 fine-tunes the model a learner pretrained in Meeting 5.

Every Meeting-6 notebook loads its model in one visible line, `MODEL = "gpt2"`, which also
takes "course" or the folder of a run of `python -m buildllm.pretrain`. Here a fresh run is
made, each notebook is executed on it end to end (a smoke run), and bad choices of MODEL
are refused in one line.
"""

import json
from pathlib import Path

import nbformat
import pytest
from gpt2_stand_in import ROOT, execute, loss_outputs, output_texts

from buildllm.data import fetch
from buildllm.pretrain import main as pretrain
from buildllm.pretrained import COURSE_MODEL_DIR, load_base

MODEL_LINE = 'MODEL = "gpt2"'
NOTEBOOKS = sorted((ROOT / "Meeting-6").glob("0*.ipynb"))


def tiny_run(out: Path, *flags: str) -> Path:
    pretrain([str(fetch("the-verdict.txt")), "--out", str(out), "--model", "cpu-tiny",
              "--context-length", "128", "--emb-dim", "32", "--n-heads", "2", "--n-layers", "1",
              "--batch-size", "4", "--steps", "4", "--eval-every", "2", "--eval-batches", "1",
              "--sample-tokens", "4", "--device", "cpu", *flags])
    return out


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_every_meeting6_notebook_chooses_its_model_in_one_visible_line(notebook):
    cells = nbformat.read(notebook, as_version=4).cells
    sources = [cell.source for cell in cells if cell.cell_type == "code"]
    assert sum(MODEL_LINE in s for s in sources) == 1
    assert sum("load_base(MODEL)" in s for s in sources) == 1


@pytest.fixture(scope="module")
def fresh_run(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("pretrain") / "my-run")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_the_notebook_fine_tunes_a_fresh_pretraining_run(notebook, fresh_run, cache):
    run = fresh_run
    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = cell.source.replace(MODEL_LINE, f"MODEL = {str(run)!r}")
    execute(nb, notebook.parent, {"BUILDLLM_SMOKE": "1", "BUILDLLM_CACHE": str(cache)})
    printed = "".join(output_texts(nb))
    assert f"Settings for your model from {run}" in printed
    losses, not_finite = loss_outputs(nb)
    assert losses and not_finite == []


def test_a_run_with_its_own_tokenizer_is_refused_in_one_line(tmp_path, cache):
    run = tiny_run(tmp_path / "char-run", "--tokenizer", "char")
    before = sorted((p.name, p.stat().st_mtime_ns) for p in run.iterdir())
    with pytest.raises(ValueError, match="pretrain again with --tokenizer gpt2") as err:
        load_base(str(run))
    assert "\n" not in str(err.value)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in run.iterdir()) == before


@pytest.mark.parametrize("name", ["gpt3", "no/such/folder"])
def test_a_model_that_is_neither_a_name_nor_a_run_is_refused_in_one_line(name):
    with pytest.raises(ValueError, match="is not \"gpt2\", \"course\" or a run folder") as err:
        load_base(name)
    assert "\n" not in str(err.value)


def test_course_is_the_course_model():
    model, name = load_base("course")
    info = json.loads((COURSE_MODEL_DIR / "run.json").read_text())
    assert name == "the course model"
    assert model.cfg.emb_dim == info["model"]["emb_dim"] and not model.training
