"""The group's results board: rows in Supporting/results/board.csv, the best of them in README.md.

    python Supporting/tools/results_board.py           # check every row, then rewrite the board
    python Supporting/tools/results_board.py check     # only check the rows
    python Supporting/tools/results_board.py --check   # check the rows, and that README is current

Members add a row per result by pull request. `check` reads every row against the rules in
COLUMNS, METRICS and DEVICES below and lists every problem, each with its line, its column and
what was expected, so that a bad row never reaches the board. The README shows, for every task
(a meeting, a data set and a metric), the best result on a CPU and the best on any hardware;
the CSV holds the rest. tests/test_results_board.py runs the --check mode, so a pull request
that adds a row without re-rendering the README fails its tests.
"""

from __future__ import annotations

import csv
import datetime
import io
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from markdown_section import update_section

ROOT = Path(__file__).resolve().parents[2]
BOARD = ROOT / "Supporting" / "results" / "board.csv"
README = ROOT / "README.md"

# Every column, in the order the CSV's header must list them, and what a value must be.
COLUMNS = {
    "name": "who ran it: a GitHub handle, or 'course reference' for the course's own runs",
    "meeting": "the meeting whose task this is: a whole number from 0 to 7",
    "model_size": "the model's parameter count as a whole number, e.g. 124439808 (no commas, no M)",
    "data": "the data set and split that was scored; copy an existing row's text for the same task",
    "hardware": "the machine, in words: '2-core x86-64 CPU', 'Colab T4', '8× H100 80GB'",
    "device": "what did the arithmetic: cpu, cuda (an NVIDIA or AMD GPU) or mps (an Apple GPU)",
    "time": "wall-clock seconds of training, evaluation excluded: a number, e.g. 154 or 5400",
    "metric": "what was measured: one of the names in METRICS",
    "value": "the measured number, in the metric's unit",
    "date": "when it was measured: YYYY-MM-DD",
    "setup": "what was run: model, recipe, steps, settings; two runs of one task differ here",
    "link": "optional: the evidence, an https:// URL or a path in this repository (a log, a "
            "notebook, a README section)",
}
OPTIONAL = {"link"}
# Two rows that agree on all of these describe the same run: the second one is a duplicate.
IDENTITY = ("name", "meeting", "data", "metric", "model_size", "hardware", "device", "setup")


@dataclass(frozen=True)
class Metric:
    """A metric's direction, allowed range and how the README shows a value."""

    label: str
    lower_is_better: bool
    low: float
    high: float
    unit: str
    percent: bool = False  # stored as a fraction, shown as a percentage

    def show(self, raw: str) -> str:
        return f"{round(float(raw) * 100, 4):g}%" if self.percent else raw


METRICS = {
    "val_loss": Metric("validation loss", True, 0.0, math.inf,
                       "cross entropy in nats per token on held-out text"),
    "perplexity": Metric("perplexity", True, 1.0, math.inf, "exp(val_loss), 1 or more"),
    "accuracy": Metric("accuracy", False, 0.0, 1.0,
                       "the share of test examples right, a fraction: 0.973 for 97.3%",
                       percent=True),
    "rouge_l": Metric("ROUGE-L", False, 0.0, 1.0, "ROUGE-L F1 against the references, 0 to 1"),
    "token_f1": Metric("token F1", False, 0.0, 1.0, "token-overlap F1 against the references, "
                                                    "0 to 1"),
}
DEVICES = {"cpu": "a CPU", "cuda": "a CUDA GPU", "mps": "an Apple GPU"}


class BoardError(ValueError):
    """The board has bad rows; `problems` lists each one, with its line and column."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class Row:
    """One checked result. `line` is its line in the CSV (the header is line 1)."""

    line: int
    name: str
    meeting: int
    model_size: int
    data: str
    hardware: str
    device: str
    time: float
    metric: str
    value: float
    raw_value: str  # as written, so the README shows the precision the member gave
    date: datetime.date
    setup: str
    link: str

    @property
    def task(self) -> tuple[int, str, str]:
        return self.meeting, self.data, self.metric


def _number(text: str) -> float | None:
    try:
        x = float(text)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def _date_problem(text: str, today: datetime.date) -> str | None:
    """What a bad date should have been, or None for a good one."""
    try:
        date = datetime.date.fromisoformat(text)
        if not re.fullmatch(r"\d{4}-\d\d-\d\d", text):
            raise ValueError
    except ValueError:
        return "a date written YYYY-MM-DD, e.g. 2026-12-03"
    return f"a date no later than today ({today})" if date > today else None


def _link_problem(link: str) -> str | None:
    """What a bad link should have been, or None for a good one (or none: it is optional)."""
    if not link:
        return None
    if re.match(r"[a-z]+:", link):
        if not re.fullmatch(r"https?://\S+", link):
            return "an http(s):// URL without spaces, or a path in this repository"
    elif not link.split("#")[0] or not (ROOT / link.split("#")[0]).exists():
        return ("an https:// URL, or the path of a file in this repository relative to its "
                "root, e.g. Meeting-5/README.md#benchmarks")
    return None


def _check_row(values: dict[str, str], line: int, today: datetime.date, problem) -> Row | None:
    """A Row from one line's values, or None after reporting each bad value to `problem`."""
    bad = False

    def fail(column: str, expected: str) -> None:
        nonlocal bad
        bad = True
        problem(line, column, f"expected {expected}, got {values[column]!r}")

    for column in COLUMNS:
        if not values[column] and column not in OPTIONAL:
            fail(column, f"a value ({COLUMNS[column]})")
    if bad:
        return None
    if not re.fullmatch(r"[0-7]", values["meeting"]):
        fail("meeting", "a meeting number, a whole number from 0 to 7")
    if not re.fullmatch(r"[1-9][0-9]*", values["model_size"]):
        fail("model_size", "a parameter count as a whole number above 0, e.g. 124439808 "
                           "(no commas, no M)")
    if values["device"] not in DEVICES:
        fail("device", f"one of {', '.join(DEVICES)} (cpu for any CPU; cuda for an NVIDIA or "
                       "AMD GPU; mps for an Apple GPU)")
    seconds = _number(values["time"])
    if seconds is None or seconds < 0:
        fail("time", "wall-clock seconds of training as a number, e.g. 154 (for 17 minutes "
                     "write 1020)")
    metric = METRICS.get(values["metric"])
    if metric is None:
        fail("metric", f"one of {', '.join(METRICS)}; a new metric is added to METRICS in "
                       "Supporting/tools/results_board.py in the same pull request")
    value = _number(values["value"])
    if value is None:
        fail("value", "a number, e.g. 1.752")
    elif metric is not None and not metric.low <= value <= metric.high:
        fail("value", f"{metric.unit} (from {metric.low:g} to {metric.high:g})")
    for column, expected in (("date", _date_problem(values["date"], today)),
                             ("link", _link_problem(values["link"]))):
        if expected:
            fail(column, expected)
    if bad:
        return None
    return Row(line, values["name"], int(values["meeting"]), int(values["model_size"]),
               values["data"], values["hardware"], values["device"], float(values["time"]),
               values["metric"], float(values["value"]), values["value"],
               datetime.date.fromisoformat(values["date"]), values["setup"], values["link"])


def parse(text: str, source: str = "board.csv", today: datetime.date | None = None) -> list[Row]:
    """Every row of a board CSV, checked. Raises BoardError listing every problem found.

    >>> [row.raw_value for row in parse(BOARD.read_text())][:2]
    ['1.896', '1.758']
    """
    today = today or datetime.date.today()
    problems: list[str] = []

    def problem(line: int, column: str | None, what: str) -> None:
        where = f"{source}, line {line}" + (f", column {column!r}" if column else "")
        problems.append(f"{where}: {what}")

    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    expected = list(COLUMNS)
    if header is None or [h.strip() for h in header] != expected:
        got = [h.strip() for h in header or []]
        for column in expected:
            if column not in got:
                problem(1, column, f"the header lacks this column; it must be exactly "
                                   f"{','.join(expected)}")
        for column in got:
            if column not in expected:
                problem(1, column, f"unknown column; the header must be exactly "
                                   f"{','.join(expected)}")
        if not problems:
            problem(1, None, f"the columns are out of order; the header must be exactly "
                             f"{','.join(expected)}")
        raise BoardError(problems)

    rows: list[Row] = []
    seen: dict[tuple, int] = {}
    line_end = reader.line_num
    for fields in reader:
        line, line_end = line_end + 1, reader.line_num  # where this record starts
        if not any(f.strip() for f in fields):
            continue  # a blank line
        if len(fields) != len(expected):
            problem(line, None, f"{len(fields)} values, expected {len(expected)} "
                                f"({','.join(expected)}); a value with a comma in it needs "
                                f"double quotes around it")
            continue
        values = {column: f.strip() for column, f in zip(expected, fields, strict=True)}
        row = _check_row(values, line, today, problem)
        if row is None:
            continue
        key = tuple(getattr(row, column) for column in IDENTITY)
        if key in seen:
            problem(line, None, f"the same result as line {seen[key]} (same "
                                f"{', '.join(IDENTITY)}); if you ran it again, keep the better "
                                f"row, or say in 'setup' what changed")
            continue
        seen[key] = line
        rows.append(row)
    if problems:
        raise BoardError(problems)
    return rows


def read(path: Path = BOARD) -> list[Row]:
    """The checked rows of the board file at `path`."""
    return parse(path.read_text(encoding="utf-8"), source=_shown(path))


def _shown(path: Path) -> str:
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def _rank_key(row: Row) -> tuple:
    """Sorts the best first: the better value, then less time, then the earlier date."""
    sign = 1 if METRICS[row.metric].lower_is_better else -1
    return sign * row.value, row.time, row.date, row.line


def best(rows: list[Row], device: str | None = None) -> Row | None:
    """The best row (on `device` only, if given), or None when there is none.

    All rows must be of one task: a loss from another data set, or an accuracy next to a
    loss, cannot be ranked together.
    """
    tasks = {row.task for row in rows}
    if len(tasks) > 1:
        raise ValueError(f"best() ranks one task's rows at a time, got {len(tasks)} tasks: "
                         f"{sorted(tasks)}")
    pool = [row for row in rows if device is None or row.device == device]
    return min(pool, key=_rank_key) if pool else None


def leaders(rows: list[Row]) -> list[tuple[tuple[int, str, str], Row | None, Row]]:
    """For every task (meeting, data, metric), in that order: (task, best on a CPU, best)."""
    tasks: dict[tuple[int, str, str], list[Row]] = {}
    for row in rows:
        tasks.setdefault(row.task, []).append(row)
    return [(task, best(group, "cpu"), best(group)) for task, group in sorted(tasks.items())]


def _size(n: int) -> str:
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return str(n)


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.2g} s"
    if seconds < 600:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _cell(row: Row | None) -> str:
    if row is None:
        return "none yet"
    value = f"**{METRICS[row.metric].show(row.raw_value)}**"
    if row.link:
        value = f"[{value}]({row.link})"
    return (f"{value}: {row.name}; {row.setup}; {_size(row.model_size)} parameters, "
            f"{_duration(row.time)} on {row.hardware}").replace("|", "/")


def render(rows: list[Row]) -> str:
    """The README's board: per task the best on a CPU and the best overall, then a summary."""
    lines = ["| Meeting | Data | Metric | Best on a CPU | Best overall |",
             "|---|---|---|---|---|"]
    for (meeting, data, metric), on_cpu, overall in leaders(rows):
        m = METRICS[metric]
        shown = f"{m.label} ({'lower' if m.lower_is_better else 'higher'} is better)"
        top = "the same" if overall is on_cpu else _cell(overall)
        lines.append(f"| {meeting} | {data.replace('|', '/')} | {shown} | {_cell(on_cpu)} "
                     f"| {top} |")
    names = {row.name for row in rows}
    lines += ["", f"{len(rows)} results under {len(names)} name{'s' * (len(names) > 1)}, "
                  f"all of them in [Supporting/results/board.csv](Supporting/results/board.csv)."
                  f" Of two equal values, the shorter training time ranks first."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (0 when all is well)."""
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in args):
        print(__doc__ + "\nThe columns of board.csv, in order:")
        for column, what in COLUMNS.items():
            print(f"  {column:<11} {what}")
        print("\nMetrics, with what a value means:")
        for name, m in METRICS.items():
            better = "lower" if m.lower_is_better else "higher"
            print(f"  {name:<11} {m.unit}; {better} is better")
        print(f"\nDevices: {', '.join(DEVICES)}")
        return 0
    if any(a not in ("check", "render", "--check") for a in args) or len(args) > 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        rows = read(BOARD)
    except BoardError as err:
        print(f"{len(err.problems)} problem{'s' * (len(err.problems) > 1)} in the board:",
              *err.problems, sep="\n  ", file=sys.stderr)
        return 1
    print(f"{_shown(BOARD)}: {len(rows)} rows, all valid")
    if args == ["check"]:
        return 0
    try:  # between README.md's <!-- results-board:start --> and <!-- results-board:end -->
        stale = update_section(README, "results-board", render(rows), write="--check" not in args)
    except ValueError as err:
        print(err, file=sys.stderr)
        return 1
    if "--check" in args:
        if stale:
            print("README.md's results board is out of date: run "
                  "python Supporting/tools/results_board.py", file=sys.stderr)
            return 1
        print("README.md's results board is current")
    else:
        print(f"README.md's results board {'rewritten' if stale else 'was already current'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
