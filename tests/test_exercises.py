"""Exercises stay in step with their solutions, and their stubs fail the right way.

The solutions notebooks themselves are run by nbval, where any failing check fails the
suite. Here we check the other half: exercises.ipynb is exactly what make_exercises.py
derives from solutions.ipynb, and running it raises NotImplementedError at every check
cell and nowhere else (a stub that crashes some other way, or passes, is a bug).
"""

from pathlib import Path

import nbformat
import pytest
from make_exercises import STUB, execute, exercises_from, strip_code

ROOT = Path(__file__).resolve().parents[1]
MEETINGS = sorted(p.parent for p in ROOT.glob("Meeting-*/solutions.ipynb"))


def cells(nb):
    return [(c.cell_type, c.source) for c in nb.cells]


def test_meetings_zero_and_one_have_exercises():
    assert {m.name for m in MEETINGS} >= {"Meeting-0", "Meeting-1"}


@pytest.mark.parametrize("meeting", MEETINGS, ids=lambda m: m.name)
def test_exercises_notebook_is_generated_from_its_solutions(meeting):
    expected = exercises_from(nbformat.read(meeting / "solutions.ipynb", as_version=4))
    actual = nbformat.read(meeting / "exercises.ipynb", as_version=4)
    assert cells(actual) == cells(expected), (
        f"{meeting.name}/exercises.ipynb is stale: run python Supporting/tools/make_exercises.py"
    )


@pytest.mark.parametrize("meeting", MEETINGS, ids=lambda m: m.name)
def test_every_stub_fails_at_its_check_with_not_implemented_error(meeting):
    nb = nbformat.read(meeting / "exercises.ipynb", as_version=4)
    execute(nb, meeting)
    code = [c for c in nb.cells if c.cell_type == "code"]
    checks = [c for c in code if "check.meeting" in c.source]
    assert len(checks) == sum(STUB in c.source for c in code) > 0
    for cell in code:
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if cell in checks:
            assert [e.ename for e in errors] == ["NotImplementedError"], cell.source
        else:
            assert errors == [], f"{cell.source}\nraised {errors[0].ename}: {errors[0].evalue}"


def test_stub_replaces_the_block_at_its_indentation():
    source = "def f(x):\n    y = 1\n    # BEGIN SOLUTION\n    return x + y\n    # END SOLUTION\n"
    assert strip_code(source) == f"def f(x):\n    y = 1\n    {STUB}\n"


def test_a_solution_block_at_top_level_is_refused():
    with pytest.raises(ValueError, match="inside a function"):
        strip_code("# BEGIN SOLUTION\nx = 1\n# END SOLUTION\n")


def test_an_unclosed_solution_block_is_refused():
    with pytest.raises(ValueError, match="unbalanced"):
        strip_code("def f():\n    # BEGIN SOLUTION\n    return 1\n")


def test_solution_only_markdown_is_dropped():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(
            "Intro\n<!-- BEGIN SOLUTION -->\nWhy it works\n<!-- END SOLUTION -->\n"
        ),
        nbformat.v4.new_markdown_cell("<!-- BEGIN SOLUTION -->\nonly here\n<!-- END SOLUTION -->"),
    ]
    assert cells(exercises_from(nb)) == [("markdown", "Intro\n")]
