"""Execute notebooks in place, top to bottom, and record how long each one took.

Committed notebooks carry the outputs of one clean run; this script is that run.
It also writes the measured times to Supporting/buildllm/notebook_times.json (read by
buildllm.utils.estimate_minutes) and to the hardware table in README.md.

    BUILDLLM_MIRROR=../shared/data python Supporting/tools/run_notebooks.py
    python Supporting/tools/run_notebooks.py Meeting-1/02_data_loader.ipynb

Run it on the 2-core reference machine, or the README's times stop being true.
It refuses to start while other programs use more than a quarter of the CPU, since
times taken then overstate what a learner waits; `--busy-ok` runs anyway and records nothing.
exercises.ipynb is left to make_exercises.py, which runs it allowing the stubs' errors.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from buildllm.utils import calibrate_cpu  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TIMES = ROOT / "Supporting" / "buildllm" / "notebook_times.json"
README = ROOT / "README.md"
TABLE = re.compile(r"(<!-- notebook-times:start -->\n).*?(<!-- notebook-times:end -->)", re.S)


def run(path: Path) -> float:
    """Execute one notebook in its own folder and save it; returns seconds taken."""
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=1200, resources={"metadata": {"path": str(path.parent)}}).execute()
    seconds = time.perf_counter() - start
    nbformat.write(nb, path)
    return seconds


def table(seconds: dict[str, float]) -> str:
    """The README's hardware table: one row per meeting."""
    rows = [
        "| Meeting | Notebooks | Time to run them all on a 2-core laptop CPU |",
        "|---|---|---|",
    ]
    meetings = sorted({p.split("/")[0] for p in seconds})
    for meeting in meetings:
        mine = {p: s for p, s in seconds.items() if p.startswith(meeting + "/")}
        total = sum(mine.values())
        shown = f"{total:.0f} s" if total < 90 else f"{total / 60:.1f} min"
        rows.append(f"| [{meeting}]({meeting}/README.md) | {len(mine)} | {shown} |")
    return "\n".join(rows) + "\n"


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
    paths = [a for a in args if a != "--busy-ok"]
    if record_times and (why := busy()):
        sys.exit(f"The machine is busy ({why}), so the times would be wrong. Wait until it is "
                 "quiet, or pass --busy-ok to execute the notebooks without recording times.")
    notebooks = [ROOT / p for p in paths] or sorted(
        p for p in ROOT.glob("Meeting-*/*.ipynb") if p.name != "exercises.ipynb"
    )
    record = json.loads(TIMES.read_text()) if TIMES.exists() else {"seconds": {}}
    record["reference_seconds"] = round(calibrate_cpu(), 3)
    for path in notebooks:
        seconds = run(path)
        record["seconds"][str(path.relative_to(ROOT))] = round(seconds, 1)
        print(f"{seconds:6.1f} s  {path.relative_to(ROOT)}", flush=True)
    if not record_times:
        return
    record["seconds"] = dict(sorted(record["seconds"].items()))
    TIMES.write_text(json.dumps(record, indent=2) + "\n")
    if README.exists():
        README.write_text(
            TABLE.sub(
                lambda m: m.group(1) + table(record["seconds"]) + m.group(2), README.read_text()
            )
        )


if __name__ == "__main__":
    main(sys.argv[1:])
