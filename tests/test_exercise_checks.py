"""The exercise checks accept right answers and reject the mistakes learners make.

A check that passes a wrong answer teaches the wrong thing, and one that fails a right
answer teaches nothing. tests/exercise_answers/ holds, for every exercise, a few correct
solutions written the ways learners write them and a list of plausible wrong ones.

What a check says about a mistake is the course's best feedback, so each message is kept in
tests/exercise_messages.json and compared word for word: a refactor of buildllm.check may
change how a diagnosis is found, never what the learner reads. After a deliberate change of
wording, rewrite the file with `python tests/test_exercise_checks.py` and review its diff.
"""

import contextlib
import io
import json
import re
import sys
from pathlib import Path

import pytest
from exercise_answers import (
    meeting0,
    meeting1,
    meeting2,
    meeting3,
    meeting4,
    meeting5,
    meeting6,
    meeting7,
)

from buildllm.check import ExerciseFailed

MEETINGS = (meeting0, meeting1, meeting2, meeting3, meeting4, meeting5, meeting6, meeting7)
EXERCISES = [exercise for meeting in MEETINGS for exercise in meeting.EXERCISES]
RIGHT = [(ex, run, answer) for ex, run, answers, _ in EXERCISES for answer in answers]
WRONG = [(ex, run, answer, why) for ex, run, _, wrong in EXERCISES for why, answer in wrong.items()]
MESSAGES = Path(__file__).with_name("exercise_messages.json")


def message_for(run_check, answer) -> str | None:
    """What the learner reads for this answer, without a crash's line number (which moves
    whenever a check's source does) or a measured time; None if the check passed it."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            run_check(answer)
    except ExerciseFailed as err:
        message = re.sub(r"\n  at line \d+: .*", "\n  at line …", str(err))
        return re.sub(r"\b\d+\.\d+ s\b", "… s", message)
    return None


@pytest.mark.parametrize(
    "exercise, run_check, answer", RIGHT, ids=[f"{e}-{a.__name__}" for e, _, a in RIGHT]
)
def test_a_right_answer_passes_with_praise(exercise, run_check, answer, capsys):
    run_check(answer)
    assert capsys.readouterr().out.startswith(f"✓ Exercise {exercise}: all ")


@pytest.mark.parametrize(
    "exercise, run_check, answer, mistake", WRONG, ids=[f"{e}-{m}" for e, _, _, m in WRONG]
)
def test_a_wrong_answer_fails_with_its_diagnosis(exercise, run_check, answer, mistake):
    expected = json.loads(MESSAGES.read_text(encoding="utf-8"))[f"{exercise}-{mistake}"]
    got = message_for(run_check, answer)
    assert got is not None, f"the check passed the mistake {mistake!r}"
    assert got.startswith(f"✗ Exercise {exercise}")
    assert got == expected


def test_every_kept_message_belongs_to_a_mistake_still_tested():
    kept = set(json.loads(MESSAGES.read_text(encoding="utf-8")))
    assert kept == {f"{ex}-{why}" for ex, _, _, why in WRONG}


def unfinished_stub(*args, **kwargs):
    raise NotImplementedError("Your code here")


@pytest.mark.parametrize(
    "exercise, run_check", [e[:2] for e in EXERCISES], ids=[e[0] for e in EXERCISES]
)
def test_an_unfinished_stub_is_not_done_yet(exercise, run_check):
    with pytest.raises(NotImplementedError, match=f"Exercise {exercise} is not done yet"):
        run_check(unfinished_stub)


if __name__ == "__main__":
    messages = {f"{ex}-{why}": message_for(run, answer) for ex, run, answer, why in WRONG}
    MESSAGES.write_text(json.dumps(messages, indent=1, ensure_ascii=False) + "\n", "utf-8")
    print(f"wrote {len(messages)} messages to {MESSAGES}", file=sys.stderr)
