"""The parity comparison's figures and reasons, case by case: what test_parity.py's rule tests leave open
(found by `make mutate`). Pure NumPy, no artifacts.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.runtime.parity import EXTRA, MISSING, NON_FINITE, TOLERANCE, Comparison, compare, compare_outputs, merge

ATOL, RTOL = 1e-5, 1e-4


def test_missing_and_extra_outputs_say_which_side_lacks_it():
    assert compare(np.zeros(1), None, ATOL, RTOL) == Comparison(
        None, None, MISSING, "missing output: the artifact does not declare it"
    )
    assert compare(None, np.zeros(1), ATOL, RTOL) == Comparison(
        None, None, EXTRA, "extra output: the reference has no output of this name"
    )


@pytest.mark.parametrize(("side", "want"), [("got", "artifact"), ("ref", "reference")])
def test_a_non_finite_value_is_named_with_its_side(side, want):
    ref, got = np.zeros(3), np.zeros(3)
    (got if side == "got" else ref)[2] = np.inf
    assert compare(ref, got, ATOL, RTOL).reason == f"non-finite value inf from the {want}"


def test_a_difference_exactly_at_the_bound_passes():
    # |got - ref| == atol + rtol * |ref|, exactly, in float64: the rule is <=, not <
    result = compare(np.array([0.0, 4.0]), np.array([0.5, 4.0 + 0.5 + 4.0 * 0.25]), 0.5, 0.25)
    assert result.passed and result.max_abs == 1.5


def test_max_rel_is_the_largest_difference_relative_to_the_reference():
    result = compare(np.array([2.0, -100.0]), np.array([2.1, -100.5]), 1.0, 0.0)
    assert result.passed and result.max_abs == pytest.approx(0.5) and result.max_rel == pytest.approx(0.05)
    failed = compare(np.array([2.0]), np.array([3.0]), ATOL, RTOL)
    assert failed.failure == TOLERANCE and (failed.max_abs, failed.max_rel) == (1.0, 0.5)
    # a zero reference is divided by float32's smallest normal, not by zero
    tiny = float(np.finfo(np.float32).tiny)
    assert compare(np.array([0.0]), np.array([1e-40]), ATOL, RTOL).max_rel == pytest.approx(1e-40 / tiny)


def test_empty_outputs_compare_equal_with_zero_figures():
    assert compare(np.zeros((0, 3)), np.zeros((0, 3)), ATOL, RTOL) == Comparison(0.0, 0.0)


def test_differences_are_taken_in_float64_so_float32_extremes_do_not_overflow():
    top = np.finfo(np.float32).max
    result = compare(np.array([top], dtype=np.float32), np.array([-top], dtype=np.float32), ATOL, RTOL)
    assert (
        result.failure == TOLERANCE and result.max_abs == pytest.approx(2 * float(top)) and np.isfinite(result.max_abs)
    )
    assert compare(np.array([0.1], dtype=np.float32), np.array([0.1]), 0.0, 0.0).max_abs == pytest.approx(
        abs(float(np.float32(0.1)) - 0.1)
    )


def test_merging_keeps_the_worst_figures_of_both_sides():
    a, b = Comparison(1.0, 0.1), Comparison(0.5, 0.4)
    assert merge(a, b) == Comparison(1.0, 0.4) == merge(b, a)
    assert merge(None, b) is b
    missing = Comparison(None, None, MISSING, "missing")
    assert merge(missing, a) == Comparison(1.0, 0.1, MISSING, "missing")  # figures from the batch that has them
    assert merge(a, missing) == Comparison(1.0, 0.1, MISSING, "missing")
    assert merge(missing, missing) == missing


def test_the_reference_and_the_artifact_must_give_the_same_number_of_batches():
    one = [{"y": np.zeros(1)}]
    with pytest.raises(ValueError):
        compare_outputs(one * 2, one, ATOL, RTOL)
    with pytest.raises(ValueError):
        compare_outputs(one, one * 2, ATOL, RTOL)


def test_a_non_finite_batch_among_good_ones_fails_the_output():
    want = [{"y": np.ones(2)}, {"y": np.ones(2)}]
    got = [{"y": np.ones(2)}, {"y": np.array([1.0, np.nan])}]
    result = compare_outputs(want, got, ATOL, RTOL)["y"]
    assert result.failure == NON_FINITE and result.max_abs == 0.0


def test_a_row_writes_its_statistics_and_the_verify_table_shows_them_in_one_column():
    from pipeline.runtime.parity import ParityReport, ParityRow

    ref, got, inputs = _known_pair()
    tol = Tolerance(1e-5, 1e-4, 0.01)
    c = compare_outputs([{"y": r} for r in ref], [{"y": g} for g in got], tol, inputs)["y"]
    row = ParityRow("m", "onnx", "onnxruntime", "cpu", "y", c.passed, tol, c.reason, c.failure, c.stats)
    written = row.as_dict()
    assert written["worst"] == {
        "batch": 1,
        "row": 2,
        "index": 3,
        "eager": ref[1][2, 3],
        "got": got[1][2, 3],
        "input": c.stats.worst.input,
    }
    assert (written["max_abs"], written["min_atol"], written["values"]) == (c.stats.max_abs, c.stats.min_atol, 32)
    assert (written["atol"], written["rtol"], written["scale"]) == (1e-5, 1e-4, 0.01)
    assert written["rule"] == "|value - eager| <= 1e-05 + 0.0001·|eager| + 0.01·max|eager|"
    line = ParityReport([row]).table().splitlines()[1]
    s = c.stats
    assert f"{s.mean_abs:.1e}/{s.p99_abs:.1e} @b1[2][3] · {s.min_atol:.1e}".replace("e-0", "e-") in line, line
    empty = ParityRow("m", "onnx", "onnxruntime", "cpu", "*", False, tol, "gone", "error").as_dict()
    assert empty["worst"] is None and empty["mean_abs"] is None and empty["max_abs"] is None


def test_an_input_row_is_quoted_short_and_by_name():
    from pipeline.runtime.parity import input_text

    assert input_text(np.arange(20, dtype=np.float32).reshape(2, 10), 1) == "[10, 11, 12, 13, 14, 15, … (10 values)]"
    assert input_text({"a": np.array([[1.5]]), "b": np.array([[2, 3]])}, 0) == "a=[1.5] b=[2, 3]"
    assert input_text(None, 0) == ""
