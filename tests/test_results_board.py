"""The results board: the committed rows pass the schema, bad rows are named by line and column,
the best rows are the right ones, and the README shows exactly what the script renders."""

import datetime
from pathlib import Path

import pytest
import results_board
from markdown_section import section
from results_board import BoardError, best, leaders, parse, read, render

ROOT = Path(__file__).resolve().parents[1]
TODAY = datetime.date(2026, 12, 31)
HEADER = ",".join(results_board.COLUMNS)
GOOD = {"name": "ada", "meeting": "5", "model_size": "808320",
        "data": "tinyshakespeare.txt as characters, the last 10% held out",
        "hardware": "4-core laptop", "device": "cpu", "time": "154", "metric": "val_loss",
        "value": "1.8", "date": "2026-12-03", "setup": "nanoGPT's CPU recipe",
        "link": "Meeting-5/README.md#benchmarks"}


def csv_line(**changes) -> str:
    values = {**GOOD, **changes}
    return ",".join(f'"{values[c]}"' if "," in values[c] else values[c]
                    for c in results_board.COLUMNS)


def board(*lines: str) -> str:
    return "\n".join([HEADER, *lines]) + "\n"


def problems_of(text: str) -> list[str]:
    with pytest.raises(BoardError) as err:
        parse(text, today=TODAY)
    return err.value.problems


# -- the committed board ------------------------------------------------------------------

def test_the_committed_board_passes_every_check():
    rows = read()
    assert len(rows) >= 9
    assert {row.meeting for row in rows} >= {5, 6}
    course = [row for row in rows if row.name == "course reference"]
    assert course and all(row.link and not row.link.startswith("http") for row in course), \
        "the course's own results link to where this repository reports them"


def test_the_course_rows_hold_the_numbers_the_meeting_readmes_report():
    shown = {(row.metric, row.raw_value) for row in read()}
    for readme, metric, number in [("Meeting-5/README.md", "val_loss", "1.896"),
                                   ("Meeting-5/README.md", "val_loss", "1.758"),
                                   ("Meeting-6/README.md", "rouge_l", "0.174"),
                                   ("Meeting-6/README.md", "token_f1", "0.129")]:
        assert number in (ROOT / readme).read_text(encoding="utf-8")
        assert (metric, number) in shown


def test_the_readme_board_is_exactly_what_render_writes():
    shown = section((ROOT / "README.md").read_text(encoding="utf-8"), "results-board", "README.md")
    assert shown == render(read()), "run python Supporting/tools/results_board.py"


def test_check_mode_fails_on_a_stale_readme_and_passes_once_rendered(tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text("# Course\n<!-- results-board:start -->\nold\n<!-- results-board:end -->\n")
    monkeypatch.setattr(results_board, "README", readme)
    assert results_board.main(["--check"]) == 1
    assert "old" in readme.read_text()  # --check never writes
    assert results_board.main([]) == 0
    assert results_board.main(["--check"]) == 0
    assert readme.read_text().startswith("# Course\n<!-- results-board:start -->\n| Meeting |")


def test_a_readme_without_markers_is_an_error_that_says_what_to_add(tmp_path, monkeypatch,
                                                                     capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# Course\n")
    monkeypatch.setattr(results_board, "README", readme)
    assert results_board.main([]) == 1
    assert "<!-- results-board:start -->" in capsys.readouterr().err


def test_a_bad_committed_row_fails_the_command_with_its_line(tmp_path, monkeypatch, capsys):
    path = tmp_path / "board.csv"
    path.write_text(board(csv_line(), csv_line(meeting="9", setup="other")))
    monkeypatch.setattr(results_board, "BOARD", path)
    assert results_board.main(["check"]) == 1
    assert "line 3, column 'meeting'" in capsys.readouterr().err


# -- the schema -----------------------------------------------------------------------------

def test_a_good_row_parses_into_typed_values():
    (row,) = parse(board(csv_line()), today=TODAY)
    assert (row.line, row.meeting, row.model_size, row.time, row.value) == (2, 5, 808320, 154, 1.8)
    assert row.date == datetime.date(2026, 12, 3) and row.data == GOOD["data"]


@pytest.mark.parametrize("changes, column, expected", [
    ({"name": ""}, "name", "expected a value"),
    ({"name": "   "}, "name", "expected a value"),
    ({"meeting": "9"}, "meeting", "from 0 to 7"),
    ({"meeting": "five"}, "meeting", "from 0 to 7"),
    ({"model_size": "124M"}, "model_size", "no commas, no M"),
    ({"model_size": "0"}, "model_size", "above 0"),
    ({"device": "gpu"}, "device", "one of cpu, cuda, mps"),
    ({"time": "2 min"}, "time", "seconds"),
    ({"time": "-5"}, "time", "seconds"),
    ({"metric": "bleu"}, "metric", "one of val_loss, perplexity, accuracy, rouge_l, token_f1"),
    ({"value": "abc"}, "value", "a number"),
    ({"value": "nan"}, "value", "a number"),
    ({"value": "-0.1"}, "value", "cross entropy"),
    ({"metric": "accuracy", "value": "97.3"}, "value", "0.973 for 97.3%"),
    ({"metric": "perplexity", "value": "0.5"}, "value", "1 or more"),
    ({"date": "03/12/2026"}, "date", "YYYY-MM-DD"),
    ({"date": "2027-01-01"}, "date", "no later than today"),
    ({"link": "Meeting-9/README.md"}, "link", "path of a file in this repository"),
    ({"link": "http://has space"}, "link", "URL without spaces"),
])
def test_a_bad_value_is_named_by_line_column_and_what_is_expected(changes, column, expected):
    problems = problems_of(board(csv_line(), csv_line(**changes, setup="another run")))
    assert len(problems) == 1
    assert problems[0].startswith(f"board.csv, line 3, column {column!r}: expected ")
    assert expected in problems[0]


def test_a_header_without_a_column_names_the_missing_column():
    header = HEADER.replace(",time", "")
    (problem,) = problems_of(header + "\n")
    assert problem.startswith("board.csv, line 1, column 'time': the header lacks this column")


def test_an_unknown_or_misordered_header_is_refused():
    assert "unknown column" in problems_of(HEADER + ",notes\n")[0]
    swapped = HEADER.replace("name,meeting", "meeting,name")
    assert "out of order" in problems_of(swapped + "\n")[0]


def test_a_row_with_a_value_missing_says_to_quote_commas():
    line = csv_line().replace('"tinyshakespeare.txt as characters, the last 10% held out"',
                              "tinyshakespeare.txt as characters, the last 10% held out")
    (problem,) = problems_of(board(line))
    assert problem.startswith("board.csv, line 2: 13 values, expected 12")
    assert "double quotes" in problem


def test_a_duplicate_row_is_named_with_the_line_it_repeats():
    (problem,) = problems_of(board(csv_line(), csv_line(value="1.7")))
    assert problem.startswith("board.csv, line 3: the same result as line 2")


def test_every_problem_is_reported_not_just_the_first():
    problems = problems_of(board(csv_line(meeting="9"), csv_line(setup="b", value="abc"),
                                 csv_line(setup="c")))
    assert [p.split(":")[0] for p in problems] == [
        "board.csv, line 2, column 'meeting'", "board.csv, line 3, column 'value'"]


def test_blank_lines_are_skipped_and_line_numbers_stay_true():
    rows = parse(board(csv_line(), "", csv_line(setup="b")), today=TODAY)
    assert [row.line for row in rows] == [2, 4]


# -- choosing the best -------------------------------------------------------------------

def rows_of(*specs: tuple[str, str, str]) -> list:
    """Rows of one task from (value, device, time) triples, each its own setup."""
    return parse(board(*(csv_line(value=v, device=d, time=t, setup=f"run {i}")
                         for i, (v, d, t) in enumerate(specs))), today=TODAY)


def test_lower_is_better_picks_the_smallest_loss_on_cpu_and_overall():
    rows = rows_of(("1.90", "cpu", "100"), ("1.75", "cpu", "300"), ("1.60", "cuda", "20"),
                   ("2.10", "mps", "50"))
    assert best(rows, "cpu").value == 1.75
    assert best(rows).value == 1.60
    assert best(rows, "mps").value == 2.10


def test_higher_is_better_picks_the_largest_accuracy():
    rows = parse(board(*(csv_line(metric="accuracy", value=v, device=d, setup=v)
                         for v, d in [("0.90", "cpu"), ("0.97", "cpu"), ("0.95", "cuda")])),
                 today=TODAY)
    assert best(rows, "cpu").value == 0.97
    assert best(rows).value == 0.97


def test_a_tie_goes_to_the_shorter_training_time():
    rows = rows_of(("1.80", "cpu", "300"), ("1.80", "cpu", "30"))
    assert best(rows).time == 30


def test_no_cpu_row_means_no_best_on_cpu():
    rows = rows_of(("1.60", "cuda", "20"))
    assert best(rows, "cpu") is None
    assert "| none yet |" in render(rows)


def test_rows_of_different_tasks_are_never_ranked_together():
    rows = parse(board(csv_line(), csv_line(data="the-verdict.txt", value="4.0")), today=TODAY)
    with pytest.raises(ValueError, match="one task's rows at a time"):
        best(rows)
    assert [(task[1], on_cpu.value) for task, on_cpu, _ in leaders(rows)] == [
        ("the-verdict.txt", 4.0), (GOOD["data"], 1.8)]


def test_render_links_the_value_and_says_when_the_best_overall_is_the_cpu_one():
    cpu_only = render(rows_of(("1.80", "cpu", "154")))
    assert "[**1.80**](Meeting-5/README.md#benchmarks): ada; run 0; 808K parameters, 154 s on " \
           "4-core laptop | the same |" in cpu_only
    with_gpu = render(rows_of(("1.80", "cpu", "154"), ("1.50", "cuda", "7200")))
    assert with_gpu.splitlines()[2].endswith("**1.50**](Meeting-5/README.md#benchmarks): ada; "
                                             "run 1; 808K parameters, 2.0 h on 4-core laptop |")


def test_accuracy_is_stored_as_a_fraction_and_shown_as_a_percentage():
    rows = parse(board(csv_line(metric="accuracy", value="0.9667")), today=TODAY)
    assert "**96.67%**" in render(rows)
