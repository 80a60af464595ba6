"""The measured time of every notebook (run_notebooks.py): the record, and the tables of it in
README.md and in each meeting's kit."""

import json
from pathlib import Path

import pytest
import run_notebooks
from gpt2_stand_in import GPT2_NOTEBOOKS
from markdown_section import section
from run_notebooks import busy, meeting_table, table

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
    assert section(readme, "notebook-times", "README.md") == table(RECORD)


@pytest.mark.parametrize("meeting", sorted({p.split("/")[0] for p in RECORD["seconds"]}))
def test_each_kit_shows_its_notebooks_times_with_both_models(meeting):
    kit = (ROOT / meeting / "README.md").read_text(encoding="utf-8")
    shown = section(kit, "notebook-times", f"{meeting}/README.md")
    assert shown == meeting_table(meeting, RECORD)


def test_every_notebook_that_loads_gpt2_has_its_gpt2_time():
    assert set(RECORD["gpt2_seconds"]) == set(GPT2_NOTEBOOKS), "run run_notebooks.py --gpt2"


def test_no_notebook_takes_more_than_three_minutes_on_the_reference_cpu():
    slow = {p: s for p, s in RECORD["seconds"].items() if s > 180}
    assert slow == {}, "notebook defaults must stay small enough for a 2-core laptop"


def test_with_gpt2_on_a_cpu_no_notebook_takes_more_than_about_five_minutes():
    slow = {p: s for p, s in RECORD["gpt2_seconds"].items() if s > 330}
    assert slow == {}, "GPT-2's CPU settings must be a short run"


def test_run_notebooks_refuses_to_time_on_a_busy_machine(monkeypatch):
    monkeypatch.setattr(run_notebooks, "busy", lambda: "90% of the CPU in use by other programs")
    monkeypatch.setattr(run_notebooks, "run", lambda path: pytest.fail("a notebook was run"))
    with pytest.raises(SystemExit, match="busy .90% of the CPU.*--busy-ok"):
        run_notebooks.main(["Meeting-0/01_environment_check.ipynb"])


def test_a_busy_ok_run_executes_but_records_nothing(monkeypatch, tmp_path):
    times, readme = tmp_path / "times.json", tmp_path / "README.md"
    monkeypatch.setattr(run_notebooks, "TIMES", times)
    monkeypatch.setattr(run_notebooks, "README", readme)
    monkeypatch.setattr(run_notebooks, "calibrate_cpu", lambda: 1.0)
    ran = []
    monkeypatch.setattr(run_notebooks, "run", lambda path: ran.append(path) or 1.0)
    run_notebooks.main(["--busy-ok", "Meeting-0/01_environment_check.ipynb"])
    assert [p.name for p in ran] == ["01_environment_check.ipynb"]
    assert not times.exists() and not readme.exists()


def test_busy_reads_the_cpu_share_or_says_none():
    why = busy(seconds=0.2)
    assert why is None or "of the CPU in use" in why or "load average" in why
