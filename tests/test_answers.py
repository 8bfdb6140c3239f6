"""What the page shows beside the outputs (pipeline/serving/answers.py): the task's true value, read from the
manifest as arithmetic and never run as code, and class probabilities."""

from __future__ import annotations

import math

import pytest

from pipeline.artifacts.manifest import ModelEntry
from pipeline.serving.answers import TruthError, class_labels, expected_answer, truth_value


def entry(truth=None, classes=()):
    tensor = {"name": "x", "shape": ["batch", 2], "dtype": "float32", "features": ["x1", "x2"]}
    out = {"name": "y", "shape": ["batch", len(classes) or 1], "dtype": "float32", "features": [], "classes": classes}
    raw = {"truth": truth} if truth else {}
    return ModelEntry("m", "", "", [tensor], [out], [], {}, raw)


def test_the_expected_answer_is_the_true_function_at_the_example_and_the_models_error():
    got = expected_answer(entry("x1 * x2 + sin(pi / 2)"), [3.0, 4.0], {"y": [12.5]})
    assert got == {"output": "y", "truth": "x1 * x2 + sin(pi / 2)", "value": 13.0, "model": 12.5, "error": -0.5}
    assert expected_answer(entry(), [3.0, 4.0], {"y": [1.0]}) is None  # no true function declared
    assert expected_answer(entry("x1 +"), [3.0, 4.0], {"y": [1.0]}) is None  # one that does not parse: none shown


def test_class_labels_are_the_softmax_of_the_scores_by_class_name():
    labels = class_labels(entry(classes=["cat", "dog"]), {"y": [0.0, math.log(3.0)]})
    assert labels["y"] == pytest.approx({"cat": 0.25, "dog": 0.75})
    assert class_labels(entry(), {"y": [2.0]}) == {}  # no classes declared: no labels


@pytest.mark.parametrize(
    "expression", ["__import__('os').system('true')", "x1.real", "open('f')", "[x1]", "x1 if x1 else x2", "x9 + 1"]
)
def test_a_truth_expression_is_read_as_arithmetic_never_run_as_code(expression):
    with pytest.raises(TruthError):
        truth_value(expression, ["x1", "x2"], [1.0, 2.0])
