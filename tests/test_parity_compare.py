"""The parity comparison's figures and reasons, case by case: what test_parity.py's rule tests leave open
(found by `make mutate`). Pure NumPy, no artifacts.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.formats import Tolerance
from pipeline.runtime.parity import EXTRA, MISSING, NON_FINITE, TOLERANCE, Comparison, compare, compare_outputs

ATOL, RTOL = 1e-5, 1e-4
TOL = Tolerance(ATOL, RTOL)


def test_missing_and_extra_outputs_say_which_side_lacks_it():
    assert compare(np.zeros(1), None, TOL) == Comparison(
        None, None, MISSING, "missing output: the artifact does not declare it"
    )
    assert compare(None, np.zeros(1), TOL) == Comparison(
        None, None, EXTRA, "extra output: the reference has no output of this name"
    )


@pytest.mark.parametrize(("side", "want"), [("got", "artifact"), ("ref", "reference")])
def test_a_non_finite_value_is_named_with_its_side(side, want):
    ref, got = np.zeros(3), np.zeros(3)
    (got if side == "got" else ref)[2] = np.inf
    assert compare(ref, got, TOL).reason == f"non-finite value inf from the {want}"


def test_a_difference_exactly_at_the_bound_passes():
    # |got - ref| == atol + rtol * |ref|, exactly, in float64: the rule is <=, not <
    result = compare(np.array([0.0, 4.0]), np.array([0.5, 4.0 + 0.5 + 4.0 * 0.25]), Tolerance(0.5, 0.25))
    assert result.passed and result.max_abs == 1.5


def test_max_rel_is_the_largest_difference_relative_to_the_reference():
    result = compare(np.array([2.0, -100.0]), np.array([2.1, -100.5]), Tolerance(1.0, 0.0))
    assert result.passed and result.max_abs == pytest.approx(0.5) and result.max_rel == pytest.approx(0.05)
    failed = compare(np.array([2.0]), np.array([3.0]), TOL)
    assert failed.failure == TOLERANCE and (failed.max_abs, failed.max_rel) == (1.0, 0.5)
    # a zero reference is divided by float32's smallest normal, not by zero
    tiny = float(np.finfo(np.float32).tiny)
    assert compare(np.array([0.0]), np.array([1e-40]), TOL).max_rel == pytest.approx(1e-40 / tiny)


def test_empty_outputs_compare_equal_with_zero_figures():
    assert compare(np.zeros((0, 3)), np.zeros((0, 3)), TOL) == Comparison(0.0, 0.0)


def test_differences_are_taken_in_float64_so_float32_extremes_do_not_overflow():
    top = np.finfo(np.float32).max
    result = compare(np.array([top], dtype=np.float32), np.array([-top], dtype=np.float32), TOL)
    assert (
        result.failure == TOLERANCE and result.max_abs == pytest.approx(2 * float(top)) and np.isfinite(result.max_abs)
    )
    assert compare(np.array([0.1], dtype=np.float32), np.array([0.1]), Tolerance(0.0, 0.0)).max_abs == pytest.approx(
        abs(float(np.float32(0.1)) - 0.1)
    )


def test_several_batches_keep_the_worst_figures_and_the_first_failure():
    want = [{"y": np.array([[2.0]])}, {"y": np.array([[10.0]])}]
    got = [{"y": np.array([[2.2]])}, {"y": np.array([[10.5]])}]
    result = compare_outputs(want, got, Tolerance(1.0, 0.0))["y"]
    assert result == Comparison(pytest.approx(0.5), pytest.approx(0.1))
    missing = compare_outputs(want, [{"y": np.array([[2.2]])}, {}], TOL)["y"]
    assert missing.failure == TOLERANCE and missing.max_abs == pytest.approx(0.2)  # the first failure decides
    assert compare_outputs([{"y": None}], [{}], TOL)["y"].failure == MISSING


def test_the_reference_and_the_artifact_must_give_the_same_number_of_batches():
    one = [{"y": np.zeros(1)}]
    with pytest.raises(ValueError):
        compare_outputs(one * 2, one, TOL)
    with pytest.raises(ValueError):
        compare_outputs(one, one * 2, TOL)


def test_a_non_finite_batch_among_good_ones_fails_the_output():
    want = [{"y": np.ones(2)}, {"y": np.ones(2)}]
    got = [{"y": np.ones(2)}, {"y": np.array([1.0, np.nan])}]
    result = compare_outputs(want, got, TOL)["y"]
    assert result.failure == NON_FINITE and result.max_abs == 0.0


def _known_pair():
    """Two batches of a (rows, 4) output with differences of known sizes, the worst in batch 1 row 2 value 3."""
    rng = np.random.default_rng(3)
    ref = [rng.standard_normal((3, 4)) * 10, rng.standard_normal((5, 4)) * 10]
    got = [r + rng.uniform(-1e-3, 1e-3, r.shape) for r in ref]
    got[1][2, 3] = ref[1][2, 3] + 0.25
    inputs = [rng.standard_normal((3, 2)).astype(np.float32), rng.standard_normal((5, 2)).astype(np.float32)]
    return ref, got, inputs


def test_error_statistics_match_numpy_on_a_known_pair():
    ref, got, inputs = _known_pair()
    tol = Tolerance(1e-5, 1e-4, 0.01)
    result = compare_outputs([{"y": r} for r in ref], [{"y": g} for g in got], tol, inputs)["y"]
    diff = np.concatenate([np.abs(g - r).ravel() for r, g in zip(ref, got, strict=True)])
    stats = result.stats
    assert stats.max_abs == pytest.approx(diff.max()) == pytest.approx(0.25)
    assert stats.mean_abs == pytest.approx(diff.mean())
    assert stats.p99_abs == pytest.approx(np.percentile(diff, 99))
    assert stats.values == diff.size == 32
    assert (stats.worst.batch, stats.worst.row, stats.worst.index) == (1, 2, 3)
    assert (stats.worst.eager, stats.worst.got) == (ref[1][2, 3], got[1][2, 3])
    assert stats.worst.input == "[" + ", ".join(f"{v:.4g}" for v in inputs[1][2]) + "]"
    # the smallest atol: per batch, the largest |Δ| beyond rtol·|ref| + scale·max|ref|
    need = max(
        float((np.abs(g - r) - 1e-4 * np.abs(r) - 0.01 * np.abs(r).max()).max()) for r, g in zip(ref, got, strict=True)
    )
    assert stats.min_atol == pytest.approx(need, rel=1e-12)
    assert not result.passed and result.failure == TOLERANCE


def test_the_minimum_atol_passes_and_just_below_it_fails():
    ref, got, _ = _known_pair()
    want, have = [{"y": r} for r in ref], [{"y": g} for g in got]
    need = compare_outputs(want, have, Tolerance(1e-5, 1e-4, 0.01))["y"].stats.min_atol
    assert need > 0
    assert compare_outputs(want, have, Tolerance(need, 1e-4, 0.01))["y"].passed
    below = float(np.nextafter(need, 0.0))
    assert not compare_outputs(want, have, Tolerance(below, 1e-4, 0.01))["y"].passed
    assert not compare_outputs(want, have, Tolerance(need * 0.999, 1e-4, 0.01))["y"].passed


def test_a_passing_output_needs_no_atol_and_its_rule_is_written_once():
    ref = np.array([[1.0, -2.0]])
    result = compare(ref, ref, Tolerance())
    assert result.passed and result.stats.min_atol == 0.0 and result.stats.mean_abs == 0.0
    assert Tolerance(1e-3, 1e-3, 0.005).describe() == "|value - eager| <= 0.001 + 0.001·|eager| + 0.005·max|eager|"
    assert Tolerance().describe() == "|value - eager| <= 1e-05 + 0.0001·|eager|"


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


def test_the_worst_value_of_a_flat_output_and_of_an_empty_one():
    result = compare(
        np.zeros(3),
        np.array([0.0, 0.5, 0.25]),
        TOL,
    )
    worst = result.stats.worst
    assert (worst.batch, worst.row, worst.index, worst.got) == (0, 1, 0, 0.5)
    assert result.stats.mean_abs == 0.25 and result.stats.max_rel == pytest.approx(0.5 / np.finfo(np.float32).tiny)
    empty = compare(np.zeros((0, 3)), np.zeros((0, 3)), TOL).stats
    assert (empty.max_abs, empty.mean_abs, empty.p99_abs, empty.min_atol, empty.values, empty.worst) == (
        0,
        0,
        0,
        0,
        0,
        None,
    )


def test_float32_outputs_are_compared_in_float64_on_both_sides():
    top = np.finfo(np.float32).max
    big = np.array([[top, -top]], dtype=np.float32)
    result = compare(big, -big, Tolerance(0.0, 0.0))
    assert result.stats.max_abs == pytest.approx(2 * float(top)) and np.isfinite(result.stats.mean_abs)
    assert result.stats.worst.index == 0 and result.stats.worst.eager == float(top)
    assert np.isfinite(compare(-big, big, Tolerance(0.0, 0.0)).stats.p99_abs)


def test_an_input_of_exactly_the_quoted_length_is_quoted_whole():
    from pipeline.runtime.parity import INPUT_VALUES, input_text

    row = np.arange(INPUT_VALUES, dtype=np.float32)[None, :]
    assert input_text(row, 0) == "[" + ", ".join(str(v) for v in range(INPUT_VALUES)) + "]"
    assert input_text(np.ones((1, 2, 3)), 0) == "[1, 1, 1, 1, 1, 1]"  # every value of the example, flat


def test_batches_after_a_failing_one_are_still_measured():
    want = [{"y": np.ones(2)}, {"y": np.ones(2)}]
    got = [{"y": np.array([np.nan, 1.0])}, {"y": np.array([1.0, 1.5])}]
    result = compare_outputs(want, got, TOL)["y"]
    assert result.failure == NON_FINITE and result.max_abs == 0.5 and result.stats.worst.batch == 1
