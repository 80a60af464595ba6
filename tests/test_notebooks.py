"""Every notebook follows the course conventions (Supporting/tools/README.md).

nbval checks that notebooks run; these tests check what a learner sees on GitHub or in
Colab before running anything: a badge that opens this very notebook, the same setup
cell everywhere, and stored outputs from one clean top-to-bottom run.
"""

import re
from pathlib import Path

import nbformat
import pytest
from colab_setup import badge_url, setup_cell

ROOT = Path(__file__).resolve().parents[1]
# A learner's own copy (README.md, "Updating the course") is theirs, not the course's.
NOTEBOOKS = sorted(p for p in ROOT.glob("Meeting-*/*.ipynb") if not p.stem.endswith("-mine"))
# A path on the machine that ran the notebook (a home, temp or work folder) leaks into outputs
# through tracebacks, warnings and prints; it means nothing to anyone else.
MACHINE_PATH = re.compile(r"/(work|tmp|root|home|Users)/[\w.-]+/")


def name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=name)
def test_opens_with_a_colab_badge_for_itself_and_the_setup_cell(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[0].cell_type == "markdown" and badge_url(path) in nb.cells[0].source
    assert code_cells(nb)[0].source.strip() == setup_cell(path.parent.name)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=name)
def test_runs_on_the_standard_python3_kernel(path):
    assert nbformat.read(path, as_version=4).metadata.kernelspec.name == "python3"


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.name != "exercises.ipynb"], ids=name)
def test_outputs_come_from_one_clean_run_without_errors(path):
    cells = code_cells(nbformat.read(path, as_version=4))
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1))
    errors = [o for c in cells for o in c.outputs if o.output_type == "error"]
    assert errors == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=name)
def test_no_path_of_the_machine_that_ran_it_is_stored(path):
    assert MACHINE_PATH.findall(path.read_text(encoding="utf-8")) == []
