"""Every notebook follows the course conventions (Supporting/tools/README.md).

nbval checks that notebooks run; these tests check what a learner sees on GitHub or in
Colab before running anything: a badge that opens this very notebook, the same setup
cell everywhere, and stored outputs from one clean top-to-bottom run.
"""

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(ROOT.glob("Meeting-*/*.ipynb"))
REPO = "buildllm-study-group/llms-from-scratch"
SETUP = """# Colab only: fetch the course and install its package. Does nothing elsewhere.
import sys

if "google.colab" in sys.modules:
    import os
    import subprocess
    subprocess.run(["git", "clone", "--depth=1", "https://github.com/{repo}", "/content/course"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "/content/course"], check=True)
    sys.path.insert(0, "/content/course/Supporting")
    os.chdir("/content/course/{meeting}")"""  # noqa: E501
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
    # The solutions' badge opens the exercises: in Colab a learner should start unsolved.
    target = path.with_name("exercises.ipynb") if path.name == "solutions.ipynb" else path
    badge = f"https://colab.research.google.com/github/{REPO}/blob/main/{name(target)}"
    assert nb.cells[0].cell_type == "markdown" and badge in nb.cells[0].source
    expected = SETUP.format(repo=REPO, meeting=path.parent.name)
    assert code_cells(nb)[0].source.strip() == expected


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
