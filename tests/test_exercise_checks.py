"""The exercise checks accept right answers and reject the mistakes learners make.

A check that passes a wrong answer teaches the wrong thing, and one that fails a right
answer teaches nothing. tests/answers_meeting*.py hold, for every exercise, a few correct
solutions written the ways learners write them and a list of plausible wrong ones.
"""

import answers_meeting0
import answers_meeting1
import answers_meeting2
import answers_meeting3
import answers_meeting4
import answers_meeting5
import answers_meeting6
import answers_meeting7
import pytest

from buildllm.check import ExerciseFailed

EXERCISES = (
    answers_meeting0.EXERCISES
    + answers_meeting1.EXERCISES
    + answers_meeting2.EXERCISES
    + answers_meeting3.EXERCISES
    + answers_meeting4.EXERCISES
    + answers_meeting5.EXERCISES
    + answers_meeting6.EXERCISES
    + answers_meeting7.EXERCISES
)
RIGHT = [(ex, run, answer) for ex, run, answers, _ in EXERCISES for answer in answers]
WRONG = [(ex, run, answer, why) for ex, run, _, wrong in EXERCISES for why, answer in wrong.items()]


@pytest.mark.parametrize(
    "exercise, run_check, answer", RIGHT, ids=[f"{e}-{a.__name__}" for e, _, a in RIGHT]
)
def test_a_right_answer_passes_with_praise(exercise, run_check, answer, capsys):
    run_check(answer)
    assert capsys.readouterr().out.startswith(f"✓ Exercise {exercise}: all ")


@pytest.mark.parametrize(
    "exercise, run_check, answer, mistake", WRONG, ids=[f"{e}-{m}" for e, _, _, m in WRONG]
)
def test_a_wrong_answer_fails(exercise, run_check, answer, mistake):
    with pytest.raises(ExerciseFailed, match=f"Exercise {exercise}"):
        run_check(answer)


def unfinished_stub(*args, **kwargs):
    raise NotImplementedError("Your code here")


@pytest.mark.parametrize(
    "exercise, run_check", [e[:2] for e in EXERCISES], ids=[e[0] for e in EXERCISES]
)
def test_an_unfinished_stub_is_not_done_yet(exercise, run_check):
    with pytest.raises(NotImplementedError, match=f"Exercise {exercise} is not done yet"):
        run_check(unfinished_stub)
