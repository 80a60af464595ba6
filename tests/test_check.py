"""The exercise checks' own behaviour: praise, clear failures, and 'not done yet'."""

import pytest

from buildllm.check import ExerciseFailed, expect_equal, verify


def test_all_cases_passing_prints_one_line_of_praise(capsys):
    verify("Exercise 9.1", [("a", lambda: None), ("b", lambda: None)])
    assert capsys.readouterr().out == "✓ Exercise 9.1: all 2 cases pass.\n"


def test_a_wrong_answer_names_the_exercise_case_and_values():
    with pytest.raises(ExerciseFailed, match=r"Exercise 9.1, case 2 \(b\): total is 3, expected 4"):
        verify("Exercise 9.1", [("a", lambda: None), ("b", lambda: expect_equal(3, 4, "total"))])


def test_an_unfinished_stub_stays_not_implemented():
    def stub():
        raise NotImplementedError("Your code here")

    with pytest.raises(NotImplementedError, match="Exercise 9.1 is not done yet"):
        verify("Exercise 9.1", [("a", stub)])


def test_a_crash_in_learner_code_reports_its_type_and_line():
    def buggy():
        return [][0]

    with pytest.raises(
        ExerciseFailed, match=r"crashed with IndexError.*\n  at line \d+: return \[\]\[0\]"
    ):
        verify("Exercise 9.1", [("a", buggy)])


def test_tensor_comparison_reports_shape_and_value_mismatches():
    import torch

    with pytest.raises(AssertionError, match=r"shape \(2,\), expected \(3,\)"):
        expect_equal(torch.zeros(2), torch.zeros(3))
    with pytest.raises(AssertionError, match="should be a tensor"):
        expect_equal([0.0], torch.zeros(1))
    with pytest.raises(AssertionError, match="expected"):
        expect_equal(torch.ones(2), torch.zeros(2))
    expect_equal(torch.zeros(2) + 1e-7, torch.zeros(2))
