"""Answers to every exercise, right and wrong, for tests/test_exercise_checks.py.

One module a meeting. Each holds EXERCISES: (exercise, run_check, right answers, wrong
answers by the name of the mistake each one makes).
"""
