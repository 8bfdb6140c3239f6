"""The parity rule and its verdicts: unit cases at the bound, each figure and reason of the comparison (pure
NumPy, what `make mutate` runs), then check_model and verify on artifacts, end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pipeline import formats
from pipeline.artifacts.manifest import Manifest
from pipeline.formats import Tolerance
from pipeline.runtime import parity
from pipeline.runtime.comparison import (
    EXTRA,
    MISSING,
    NON_FINITE,
    SHAPE,
    TOLERANCE,
    Comparison,
    compare,
    compare_outputs,
)
from tests.conftest import rerecord, run_cli

ATOL, RTOL = 1e-5, 1e-4
TOL = Tolerance(ATOL, RTOL)


def test_default_tolerance_is_the_float32_one_every_format_declares():
    # A thousandfold looser default would let an artifact a thousand times further off pass unnoticed.
    assert (parity.DEFAULT_ATOL, parity.DEFAULT_RTOL) == (1e-5, 1e-4)
    for name in ("torchscript", "onnx", "pt2", "eager"):
        assert (formats.get(name).atol, formats.get(name).rtol) == (1e-5, 1e-4)


@pytest.mark.parametrize(
    ("ref", "delta", "passes"),
    [
        (0.0, 0.99e-5, True),  # the absolute term alone, just inside
        (0.0, 1.01e-5, False),  # just outside
        (1000.0, 1e-5 + 0.099, True),  # the relative term: 1e-4 * 1000 = 0.1, plus atol
        (1000.0, 1e-5 + 0.101, False),
        (-1000.0, -(1e-5 + 0.099), True),  # |ref|, not ref
        (-1000.0, -(1e-5 + 0.101), False),
    ],
)
def test_the_bound_is_atol_plus_rtol_times_the_reference(ref, delta, passes):
    want = np.array([[ref, 1.0]])
    got = want + np.array([[delta, 0.0]])
    result = compare(want, got, TOL)
    assert result.passed is passes
    assert result.max_abs == pytest.approx(abs(delta), rel=1e-9)
    if not passes:
        assert result.failure == TOLERANCE
        bound = ATOL + RTOL * abs(ref)
        assert f"|Δ| {abs(delta):.2g} > atol + rtol·|ref| = {bound:.2g}" in result.reason


def test_the_reason_names_the_worst_offender_not_the_first():
    want = np.array([[1.0, 100.0, 0.0]])
    got = np.array([[1.0 + 2e-5, 100.0, 5e-3]])  # both out; the third is furthest past its bound
    result = compare(want, got, TOL)
    assert result.failure == TOLERANCE and result.reason.startswith("|Δ| 0.005 >")
    assert result.max_abs == pytest.approx(5e-3)


@pytest.mark.parametrize("side", ["got", "ref"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_on_either_side_fails(side, bad):
    want, got = np.zeros((2, 3)), np.zeros((2, 3))
    (got if side == "got" else want)[1, 2] = bad
    result = compare(want, got, TOL)
    assert not result.passed and result.failure == NON_FINITE
    assert ("artifact" if side == "got" else "reference") in result.reason


def test_a_shape_mismatch_fails_naming_both_shapes():
    result = compare(np.zeros((1, 1)), np.zeros((1, 8)), TOL)
    assert result.failure == SHAPE and result.reason == "shape (1, 8), expected (1, 1)"


def _outputs(**arrays):
    return {name: np.asarray(a, dtype=np.float32) for name, a in arrays.items()}


def test_every_output_is_compared_not_only_the_first():
    want = [_outputs(sum=[[21.0]], hidden=[[1.0, 2.0]])]
    got = [_outputs(sum=[[21.0]], hidden=[[1.0, 2.5]])]
    result = compare_outputs(want, got, TOL)
    assert result["sum"].passed
    assert result["hidden"].failure == TOLERANCE and result["hidden"].max_abs == pytest.approx(0.5)


def test_a_missing_and_an_extra_output_each_fail_by_name():
    want = [_outputs(sum=[[21.0]], hidden=[[1.0, 2.0]])]
    got = [_outputs(sum=[[21.0]], logits=[[0.0]])]
    result = compare_outputs(want, got, TOL)
    assert list(result) == ["sum", "hidden", "logits"]
    assert result["sum"].passed
    assert result["hidden"].failure == MISSING and result["logits"].failure == EXTRA


def test_the_worst_batch_decides_and_its_reason_is_kept():
    want = [_outputs(y=[[1.0]]), _outputs(y=[[1.0]]), _outputs(y=[[1.0]])]
    got = [_outputs(y=[[1.0]]), _outputs(y=[[1.5]]), _outputs(y=[[1.2]])]
    result = compare_outputs(want, got, TOL)["y"]
    assert not result.passed and result.max_abs == pytest.approx(0.5) and result.reason.startswith("|Δ| 0.5 ")


class FakePredictor:
    """Stands in for a loaded artifact whose outputs a test decides."""

    device = "cpu"

    def __init__(self, transform):
        self.transform = transform

    def outputs(self, batch):
        return self.transform({"sum": batch.sum(axis=1, keepdims=True), "hidden": np.maximum(batch, 0)})


# ---- each figure and reason of the comparison, case by case (what `make mutate` found left open) ----------


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
    from pipeline.runtime.comparison import input_text

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
    from pipeline.runtime.comparison import INPUT_VALUES, input_text

    row = np.arange(INPUT_VALUES, dtype=np.float32)[None, :]
    assert input_text(row, 0) == "[" + ", ".join(str(v) for v in range(INPUT_VALUES)) + "]"
    assert input_text(np.ones((1, 2, 3)), 0) == "[1, 1, 1, 1, 1, 1]"  # every value of the example, flat


def test_batches_after_a_failing_one_are_still_measured():
    want = [{"y": np.ones(2)}, {"y": np.ones(2)}]
    got = [{"y": np.array([np.nan, 1.0])}, {"y": np.array([1.0, 1.5])}]
    result = compare_outputs(want, got, TOL)["y"]
    assert result.failure == NON_FINITE and result.max_abs == 0.5 and result.stats.worst.batch == 1


# ---- check_model, verify and the report, on the session's artifacts ------------------------------------------


@pytest.mark.parametrize(
    ("transform", "output", "kind"),
    [
        (lambda o: {"sum": o["sum"]}, "hidden", MISSING),
        (lambda o: {**o, "extra": o["sum"]}, "extra", EXTRA),
        (lambda o: {"sum": o["hidden"], "hidden": o["hidden"]}, "sum", SHAPE),
        (lambda o: {"sum": o["sum"] * np.nan, "hidden": o["hidden"]}, "sum", NON_FINITE),
        (lambda o: {"sum": o["sum"], "hidden": o["hidden"] + 1e-3}, "hidden", TOLERANCE),
    ],
)
def test_check_model_fails_a_predictor_that_breaks_an_output(monkeypatch, manifest, transform, output, kind):
    reference = FakePredictor(lambda o: o)

    def fake_load(manifest_, model, fmt, runtime=None, device="cpu", **_):
        return reference if (fmt, runtime, device) == formats.REFERENCE else FakePredictor(transform)

    monkeypatch.setattr(parity, "load_predictor", fake_load)
    monkeypatch.setattr(parity, "parity_inputs", lambda m, name: [np.array([[1.0, 2.0], [3.0, -4.0]], np.float32)])
    rows = parity.check_model(manifest, "adder_mynet", [parity.Target("onnx", "onnxruntime", "cpu")])
    bad = [r for r in rows if not r.passed]
    assert [(r.output, r.failure) for r in bad] == [(output, kind)]
    assert bad[0].error and "\n" not in bad[0].error


def test_the_report_states_its_pass_rule(manifest):
    report = parity.verify(manifest, ["linear_3x"], "cpu")
    assert report.passed
    assert "|got - eager| <= atol + rtol·|eager| + scale·max|eager|" in report.table().splitlines()[-1]
    assert report.as_dict()["rule"] == parity.RULE


def test_artifacts_that_lost_an_output_fail_verify_on_every_runtime(artifacts_copy):
    """adder_mynet's TorchScript and ONNX files without `hidden`: no `hidden` row may pass anywhere."""
    import onnx
    import torch

    manifest = Manifest.load(artifacts_copy)
    entry = manifest.model("adder_mynet")
    ts_path = manifest.path_of(entry.artifact("torchscript").path)
    onnx_path = manifest.path_of(entry.artifact("onnx").path)

    class SumOnly(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)[0]

    torch.jit.save(torch.jit.script(SumOnly(torch.jit.load(str(ts_path)))), str(ts_path))
    proto = onnx.load(str(onnx_path))
    kept = [o for o in proto.graph.output if o.name != "hidden"]
    del proto.graph.output[:]
    proto.graph.output.extend(kept)
    onnx.save(proto, str(onnx_path))
    rerecord(artifacts_copy, entry.artifact("torchscript").path)
    rerecord(artifacts_copy, entry.artifact("onnx").path)

    result = run_cli("verify", "--models", "adder_mynet", "--device", "cpu", "--artifacts", str(artifacts_copy))
    assert result.returncode == 1, result.stdout + result.stderr
    rows = json.loads((artifacts_copy / "parity.json").read_text())["rows"]
    hidden = {(r["format"], r["runtime"]): r for r in rows if r["output"] == "hidden"}
    for key in [("torchscript", "torch"), ("onnx", "onnxruntime"), ("onnx", "onnx-reference")]:
        assert not hidden[key]["passed"] and hidden[key]["failure"] == MISSING, hidden[key]
    assert hidden[("pt2", "torch")]["passed"]  # the untouched artifact still passes
    assert "missing output" in result.stderr


# ---- the derived formats' third term: scale · max|ref| over the output ------------------------------


@pytest.mark.parametrize(("delta", "passes"), [(0.004, True), (0.007, False)])
def test_the_scale_term_is_a_share_of_the_largest_reference_value(delta, passes):
    ref = np.array([[0.5, 0.0]])  # max|ref| 0.5: the allowance is 0.01 * 0.5 = 0.005 on every value
    got = ref + np.array([[0.0, delta]])
    result = compare(ref, got, Tolerance(0.0, 0.0, 0.01))
    assert result.passed is passes
    if not passes:
        assert result.reason == (
            "|Δ| 0.007 > atol + rtol·|ref| + scale·max|ref| = 0.005 (atol 0, rtol 0, scale 0.01, max|ref| 0.5)"
        )


def test_compare_outputs_passes_each_term_to_its_place():
    want = [_outputs(y=[[0.5, 0.0]])]
    got = [_outputs(y=[[0.5, 0.004]])]
    assert compare_outputs(want, got, Tolerance(0.0, 0.0, 0.01))["y"].passed  # only scale admits 0.004 at ref 0
    assert not compare_outputs(want, got, Tolerance(0.0, 0.01, 0.0))["y"].passed  # as rtol it admits nothing at ref 0
    assert compare_outputs(want, got, Tolerance(0.005, 0.0, 0.0))["y"].passed  # as atol it does


def test_compared_batches_keep_their_numbers_in_the_worst_value():
    # A calibrated int8 is ruled on batches 0 and 4 (the examples and the task's data) of five: the worst value
    # must name batch 4 and quote its input, not "batch 1" and the first random batch's input.
    batches = [np.full((2, 3), float(b), dtype=np.float32) for b in range(5)]
    want = [{"y": np.zeros((2, 1))} for _ in (0, 4)]
    got = [{"y": np.zeros((2, 1))}, {"y": np.array([[0.0], [0.5]])}]
    stats = compare_outputs(want, got, TOL, batches, [0, 4])["y"].stats
    assert (stats.worst.batch, stats.worst.row) == (4, 1)
    assert stats.worst.input == "[4, 4, 4]"
