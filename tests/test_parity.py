"""The parity rule and its verdicts: unit cases at the bound, each figure and reason of the comparison (pure
NumPy, what `make mutate` runs), then check_model and verify on artifacts, end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pipeline import formats
from pipeline.artifacts.manifest import Manifest
from pipeline.runtime import parity
from pipeline.runtime.parity import (
    EXTRA,
    MISSING,
    NON_FINITE,
    SHAPE,
    TOLERANCE,
    Comparison,
    compare,
    compare_outputs,
    merge,
)
from tests.conftest import rerecord, run_cli

ATOL, RTOL = 1e-5, 1e-4


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
    result = compare(want, got, ATOL, RTOL)
    assert result.passed is passes
    assert result.max_abs == pytest.approx(abs(delta), rel=1e-9)
    if not passes:
        assert result.failure == TOLERANCE
        bound = ATOL + RTOL * abs(ref)
        assert f"|Δ| {abs(delta):.2g} > atol + rtol·|ref| = {bound:.2g}" in result.reason


def test_the_reason_names_the_worst_offender_not_the_first():
    want = np.array([[1.0, 100.0, 0.0]])
    got = np.array([[1.0 + 2e-5, 100.0, 5e-3]])  # both out; the third is furthest past its bound
    result = compare(want, got, ATOL, RTOL)
    assert result.failure == TOLERANCE and result.reason.startswith("|Δ| 0.005 >")
    assert result.max_abs == pytest.approx(5e-3)


@pytest.mark.parametrize("side", ["got", "ref"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_on_either_side_fails(side, bad):
    want, got = np.zeros((2, 3)), np.zeros((2, 3))
    (got if side == "got" else want)[1, 2] = bad
    result = compare(want, got, ATOL, RTOL)
    assert not result.passed and result.failure == NON_FINITE
    assert ("artifact" if side == "got" else "reference") in result.reason


def test_a_shape_mismatch_fails_naming_both_shapes():
    result = compare(np.zeros((1, 1)), np.zeros((1, 8)), ATOL, RTOL)
    assert result.failure == SHAPE and result.reason == "shape (1, 8), expected (1, 1)"


def _outputs(**arrays):
    return {name: np.asarray(a, dtype=np.float32) for name, a in arrays.items()}


def test_every_output_is_compared_not_only_the_first():
    want = [_outputs(sum=[[21.0]], hidden=[[1.0, 2.0]])]
    got = [_outputs(sum=[[21.0]], hidden=[[1.0, 2.5]])]
    result = compare_outputs(want, got, ATOL, RTOL)
    assert result["sum"].passed
    assert result["hidden"].failure == TOLERANCE and result["hidden"].max_abs == pytest.approx(0.5)


def test_a_missing_and_an_extra_output_each_fail_by_name():
    want = [_outputs(sum=[[21.0]], hidden=[[1.0, 2.0]])]
    got = [_outputs(sum=[[21.0]], logits=[[0.0]])]
    result = compare_outputs(want, got, ATOL, RTOL)
    assert list(result) == ["sum", "hidden", "logits"]
    assert result["sum"].passed
    assert result["hidden"].failure == MISSING and result["logits"].failure == EXTRA


def test_the_worst_batch_decides_and_its_reason_is_kept():
    want = [_outputs(y=[[1.0]]), _outputs(y=[[1.0]]), _outputs(y=[[1.0]])]
    got = [_outputs(y=[[1.0]]), _outputs(y=[[1.5]]), _outputs(y=[[1.2]])]
    result = compare_outputs(want, got, ATOL, RTOL)["y"]
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
    assert "atol + rtol * |eager|" in report.table().splitlines()[-1]
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
    result = compare(ref, got, 0.0, 0.0, 0.01)
    assert result.passed is passes
    if not passes:
        assert result.reason == (
            "|Δ| 0.007 > atol + rtol·|ref| + scale·max|ref| = 0.005 (atol 0, rtol 0, scale 0.01, max|ref| 0.5)"
        )


def test_compare_outputs_passes_each_term_to_its_place():
    want = [_outputs(y=[[0.5, 0.0]])]
    got = [_outputs(y=[[0.5, 0.004]])]
    assert compare_outputs(want, got, 0.0, 0.0, 0.01)["y"].passed  # only the scale term admits 0.004 at ref 0
    assert not compare_outputs(want, got, 0.0, 0.01, 0.0)["y"].passed  # as rtol it admits nothing at ref 0
    assert compare_outputs(want, got, 0.005, 0.0, 0.0)["y"].passed  # as atol it does
