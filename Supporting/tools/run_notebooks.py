"""Execute notebooks in place, top to bottom, and record how long each one took.

Committed notebooks carry the outputs of one clean run; this script is that run.
It also writes the measured times to Supporting/buildllm/notebook_times.json (read by
buildllm.utils.estimate_minutes), to the table in README.md and to the one in each
meeting's kit.

    BUILDLLM_MIRROR=../shared/data python Supporting/tools/run_notebooks.py
    python Supporting/tools/run_notebooks.py Meeting-1/02_data_loader.ipynb

`--gpt2` times the notebooks that load GPT-2 124M as a learner with internet runs them: on
a stand-in with GPT-2's layout and random weights (tests/gpt2_stand_in.py), which costs the
same per step. Those runs are not saved; only their times are recorded.

Run it on the 2-core reference machine, or the README's times stop being true.
It refuses to start while other programs use more than a quarter of the CPU, since
times taken then overstate what a learner waits; `--busy-ok` runs anyway and records nothing.
exercises.ipynb is left to make_exercises.py, which runs it allowing the stubs' errors.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from markdown_section import update_section
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from buildllm.utils import calibrate_cpu, seconds_with_gpt2  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
TIMES = ROOT / "Supporting" / "buildllm" / "notebook_times.json"
README = ROOT / "README.md"


def run(path: Path) -> float:
    """Execute one notebook in its own folder and save it; returns seconds taken."""
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=1200, resources={"metadata": {"path": str(path.parent)}}).execute()
    seconds = time.perf_counter() - start
    nbformat.write(nb, path)
    return seconds


def _shown(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def table(record: dict) -> str:
    """The README's table: one row per meeting, with the course model and with GPT-2."""
    rows = [
        "| Meeting | Notebooks | With the course model | With GPT-2 124M |",
        "|---|---|---|---|",
    ]
    gpt2 = seconds_with_gpt2(record)
    for meeting in sorted({p.split("/")[0] for p in record["seconds"]}):
        mine = [p for p in record["seconds"] if p.startswith(meeting + "/")]
        course = sum(record["seconds"][p] for p in mine)
        rows.append(f"| [{meeting}]({meeting}/README.md) | {len(mine)} | {_shown(course)} | "
                    f"{_shown(sum(gpt2[p] for p in mine))} |")
    return "\n".join(rows) + "\n"


def meeting_table(meeting: str, record: dict) -> str:
    """A kit's table: one row per notebook of `meeting`, with both times."""
    rows = [
        "| Notebook | With the course model | With GPT-2 124M |",
        "|---|---|---|",
    ]
    gpt2 = seconds_with_gpt2(record)
    for path in sorted(p for p in record["seconds"] if p.startswith(meeting + "/")):
        name = path.split("/")[1]
        loads = "" if path in record.get("gpt2_seconds", {}) else " (no GPT-2)"
        rows.append(f"| [{name}]({name}) | {_shown(record['seconds'][path])} | "
                    f"{_shown(gpt2[path])}{loads} |")
    return "\n".join(rows) + "\n"


def write_tables(record: dict) -> None:
    """Put the measured times between the notebook-times markers of README.md and of the
    README of every meeting that has notebooks."""
    update_section(README, "notebook-times", table(record))
    for meeting in sorted({path.split("/")[0] for path in record["seconds"]}):
        update_section(ROOT / meeting / "README.md", "notebook-times",
                       meeting_table(meeting, record))


def busy(seconds: float = 3.0) -> str | None:
    """Why this machine is too busy to time notebooks on, or None when it is quiet enough.

    Busy means more than a quarter of the CPU time in use over the next `seconds`, read from
    /proc/stat; where that file is missing (macOS), the one-minute load average instead.
    """
    stat = Path("/proc/stat")
    if not stat.exists():
        load, cores = os.getloadavg()[0], os.cpu_count() or 1
        return f"load average {load:.1f} on {cores} cores" if load > cores / 2 else None

    def idle_and_total() -> tuple[int, int]:
        ticks = [int(n) for n in stat.read_text().split("\n")[0].split()[1:]]
        return ticks[3] + ticks[4], sum(ticks)  # idle + iowait, everything

    idle0, total0 = idle_and_total()
    time.sleep(seconds)
    idle1, total1 = idle_and_total()
    used = 1 - (idle1 - idle0) / max(total1 - total0, 1)
    return f"{used:.0%} of the CPU in use by other programs" if used > 0.25 else None


def main(args: list[str]) -> None:
    record_times = "--busy-ok" not in args
    on_gpt2 = "--gpt2" in args
    paths = [a for a in args if a not in ("--busy-ok", "--gpt2")]
    if record_times and (why := busy()):
        sys.exit(f"The machine is busy ({why}), so the times would be wrong. Wait until it is "
                 "quiet, or pass --busy-ok to execute the notebooks without recording times.")
    if on_gpt2:
        from gpt2_stand_in import GPT2_NOTEBOOKS

        notebooks = [ROOT / p for p in paths or GPT2_NOTEBOOKS]
    else:
        notebooks = [ROOT / p for p in paths] or sorted(
            p for p in ROOT.glob("Meeting-*/*.ipynb")
            if p.name != "exercises.ipynb" and not p.stem.endswith("-mine")
        )
    record = json.loads(TIMES.read_text()) if TIMES.exists() else {"seconds": {}}
    times = record.setdefault("gpt2_seconds" if on_gpt2 else "seconds", {})
    if not on_gpt2:
        record["reference_seconds"] = round(calibrate_cpu(), 3)
    cache = tempfile.TemporaryDirectory() if on_gpt2 else None  # the stand-in, written once
    for path in notebooks:
        seconds = run_on_gpt2(path, Path(cache.name)) if cache else run(path)
        times[str(path.relative_to(ROOT))] = round(seconds, 1)
        print(f"{seconds:6.1f} s  {path.relative_to(ROOT)}", flush=True)
    if cache:
        cache.cleanup()
    if not record_times:
        return
    for key in ("seconds", "gpt2_seconds"):
        if key in record:
            record[key] = dict(sorted(record[key].items()))
    TIMES.write_text(json.dumps(record, indent=2) + "\n")
    write_tables(record)


def run_on_gpt2(path: Path, cache: Path) -> float:
    """Execute one notebook on GPT-2's stand-in in `cache`, full settings, without saving it."""
    from gpt2_stand_in import execute_on_stand_in

    return execute_on_stand_in(path, cache, smoke=False)[1]


if __name__ == "__main__":
    main(sys.argv[1:])
