"""The README's hardware table shows the times measured for the notebooks now in the course."""

import json
import re
from pathlib import Path

from run_notebooks import table

ROOT = Path(__file__).resolve().parents[1]
RECORD = json.loads((ROOT / "Supporting" / "buildllm" / "notebook_times.json").read_text())


def test_every_notebook_has_a_measured_time():
    notebooks = {
        p.relative_to(ROOT).as_posix()
        for p in ROOT.glob("Meeting-*/*.ipynb")
        if p.name != "exercises.ipynb"
    }
    assert set(RECORD["seconds"]) == notebooks, "run Supporting/tools/run_notebooks.py"


def test_readme_table_is_the_one_written_from_the_measured_times():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shown = re.search(
        r"<!-- notebook-times:start -->\n(.*?)<!-- notebook-times:end -->", readme, re.S
    )
    assert shown is not None, "README.md lost its notebook-times markers"
    assert shown.group(1) == table(RECORD["seconds"])


def test_no_notebook_takes_more_than_three_minutes_on_the_reference_cpu():
    slow = {p: s for p, s in RECORD["seconds"].items() if s > 180}
    assert slow == {}, "notebook defaults must stay small enough for a 2-core laptop"
