"""Evaluation runner: suites -> resumable records -> scores -> report. Drives a :class:`Recognizer`;
never imports the model itself (see :func:`load_recognizer`)."""

from speechkit.evaluation.recognizer import Hypothesis, Recognizer, Sample, Task, load_recognizer
from speechkit.evaluation.runner import SetRun, run_set

__all__ = ["Hypothesis", "Recognizer", "Sample", "SetRun", "Task", "load_recognizer", "run_set"]
