"""The Service behind the page and the Open Inference Protocol routes: the manifest it serves (and
follows when export replaces it), its predictor cache, `predict` and its refusals, in this process."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.artifacts.manifest import ArtifactError, Manifest, ManifestError
from pipeline.catalog import CATALOG
from pipeline.errors import UserError
from pipeline.formats import FORMATS, REFERENCE
from pipeline.runtime.predictor import OutputOverflow, RuntimeUnavailable
from pipeline.runtime.targets import cuda_unavailable_reason
from pipeline.serving.answers import truth_value
from pipeline.serving.service import Service


@pytest.fixture(scope="module")
def service(artifacts):
    return Service(artifacts)


def test_predict_answers_with_the_outputs_and_what_ran_them(service):
    result = service.predict(" adder_mynet ", " ONNX ", " CPU ", "10, 11")
    assert (result["model"], result["format"], result["runtime"]) == ("adder_mynet", "onnx", "onnxruntime")
    assert (result["device"], result["requested_device"]) == ("CPUExecutionProvider", "cpu")
    assert set(result["outputs"]) == {"sum", "hidden"} and len(result["outputs"]["hidden"]) == 8
    assert abs(result["outputs"]["sum"][0] - 21) < 1.5 and result["latency_ms"] >= 0
    assert service.predict("adder_mynet", "onnx", "", [10, 11])["requested_device"] == "cpu"  # empty: cpu


def test_load_time_is_reported_once_per_model_format_and_device(service):
    first = service.predict("sigmoid_net", "torchscript", "cpu", "1 1")
    again = service.predict("sigmoid_net", "torchscript", "cpu", [1, 1])
    assert first["load_ms"] > 0 and again["load_ms"] == 0 and first["outputs"] == again["outputs"]


def test_a_request_that_did_not_load_the_artifact_reports_no_load_time(artifacts):
    # Loaded at start-up (the demo's warm-up): the first request did not wait for that load, so it must
    # not report it (it did, and the demo's answer then claimed a load longer than the whole request).
    service = Service(artifacts)
    service.warm([("sigmoid_net", "onnx")])
    assert service.ready()
    assert service.predict("sigmoid_net", "onnx", "cpu", "1 1")["load_ms"] == 0
    assert service.predict("sigmoid_net", "pt2", "cpu", "1 1")["load_ms"] > 0  # this one it loaded


@pytest.mark.parametrize(
    ("model", "fmt", "device", "features", "error", "fragment"),
    [
        ("nope", "onnx", "cpu", "1 2", ManifestError, "unknown model 'nope'; expected one of:"),
        ("adder_mynet", "tf", "cpu", "1 2", UserError, "unknown format 'tf'; expected one of: torchscript, onnx"),
        ("adder_mynet", ["onnx"], "cpu", "1 2", UserError, "unknown format"),
        ("adder_mynet", "onnx", "tpu", "1 2", UserError, "unknown device 'tpu'; expected one of: cpu, cuda, auto"),
        ("adder_mynet", "onnx", {"d": 1}, "1 2", UserError, "unknown device"),
        ("adder_mynet", "onnx", "cpu", "1 2 3", UserError, "adder_mynet expects 2 numbers (x1, x2); got 3"),
        ("adder_mynet", "onnx", "cpu", "3e38 3e38", OutputOverflow, "output sum is not finite"),
    ],
)
def test_refusals_are_user_errors_of_one_line(service, model, fmt, device, features, error, fragment):
    with pytest.raises(error) as info:
        service.predict(model, fmt, device, features)
    assert isinstance(info.value, UserError) and fragment in str(info.value) and "\n" not in str(info.value)


def test_cuda_without_a_gpu_is_refused_before_anything_loads(service):
    if cuda_unavailable_reason() is None:
        pytest.skip("this machine has a CUDA GPU")
    for fmt in ("onnx", "eager", "pt2"):
        with pytest.raises(RuntimeUnavailable, match=r"device cuda is unavailable: .*no CUDA GPU is visible"):
            service.predict("linear_3x", fmt, "cuda", "2")
    assert not [key for key in service.current().predictors._predictors if key[3] == "cuda"]


def test_run_batch_refuses_outputs_that_overflow(service):
    loaded = service.current()
    predictor = service.predictor(loaded, "adder_mynet", "onnx", "cpu")
    fine = service.run_batch(predictor, np.array([[1, 2], [3, 4]], dtype=np.float32))
    assert [o.shape for o in fine] == [(2, 1), (2, 8)]
    with pytest.raises(OutputOverflow, match="adder_mynet's output sum is not finite"):
        service.run_batch(predictor, np.array([[1, 2], [3e38, 3e38]], dtype=np.float32))


def test_tampered_artifact_is_refused_by_name(artifacts_copy):
    path = Manifest.load(artifacts_copy).model("adder_mynet").artifact("onnx").path
    with open(artifacts_copy / path, "ab") as fh:
        fh.write(b"tampered")
    svc = Service(artifacts_copy)
    with pytest.raises(ArtifactError) as err:
        svc.predict("adder_mynet", "onnx", "cpu", "10 11")
    assert path in str(err.value) and "sha256" in str(err.value)
    assert svc.predict("adder_mynet", "torchscript", "cpu", "10 11")["format"] == "torchscript"


def test_service_follows_a_re_export_while_it_runs(artifacts_copy):
    from pipeline.export import run_export
    from pipeline.train import train_model

    svc = Service(artifacts_copy)
    before = svc.predict("linear_3x", "onnx", "cpu", "2")["outputs"]["y"][0]
    old = svc.current()
    old_path = old.manifest.model("linear_3x").artifact("onnx").path
    # Retrain and re-export: the manifest moves to a new revision and the old folder is removed.
    train_model(CATALOG["linear_3x"], artifacts_copy, "cpu", 0, progress=False)
    report, errors = run_export([CATALOG["linear_3x"]], artifacts_copy, log=lambda _: None)
    assert not errors and not (artifacts_copy / old_path).exists()
    after = svc.predict("linear_3x", "onnx", "cpu", "2")
    assert svc.current() is not old and svc.current().predictors is not old.predictors
    assert svc.manifest.model("linear_3x").artifact("onnx").path != old_path
    assert after["outputs"]["y"][0] == pytest.approx(before, abs=1e-3)  # same recipe, same seed: y(2) = 6
    assert after["load_ms"] > 0  # loaded again, from the new revision


def test_without_a_manifest_it_says_how_to_create_the_artifacts(tmp_path):
    svc = Service(tmp_path)
    assert svc.current() is None and svc.manifest is None and "make train export" in svc.error
    with pytest.raises(ManifestError, match="make train export"):
        svc.predict("adder_mynet", "onnx", "cpu", "1 2")


# ---- every artifact side by side, and what the answer should be ---------------------------------


def _declared(entry) -> list[tuple[str, str]]:
    """Every (format, runtime) pipeline/formats.py declares for the artifacts `entry` has."""
    return [
        (f.name, load.runtime.name)
        for f in FORMATS.values()
        if f.artifact_kind in entry.artifacts
        for load in f.loaders
    ]


def test_compare_runs_every_declared_artifact_and_runtime_against_eager(service):
    rows = service.compare("adder_mynet", "cpu", "10, 11")
    entry = service.entry("adder_mynet")
    assert [(r["format"], r["runtime"]) for r in rows] == _declared(entry) and len(rows) >= 5
    eager = next(r for r in rows if (r["format"], r["runtime"], r["device"]) == REFERENCE)
    for row in rows:
        assert row["within_rule"] is True and row["reason"] is None, row
        assert set(row["outputs"]) == {"sum", "hidden"} and len(row["outputs"]["hidden"]) == 8
        spec = FORMATS[row["format"]]
        size = max(abs(v) for out in eager["outputs"].values() for v in out)
        assert row["max_abs_diff"] <= spec.atol + spec.rtol * size + spec.scale * size
        assert row["latency_ms"] > 0 and row["load_ms"] > 0
        assert row["bytes"] == entry.artifact(spec.artifact_kind).bytes
    assert eager["max_abs_diff"] == 0.0
    assert {r["device"] for r in rows if r["runtime"] == "onnxruntime"} == {"CPUExecutionProvider"}


def test_compare_shows_an_artifact_that_fails_to_load_as_a_row_with_its_reason(artifacts_copy):
    path = Manifest.load(artifacts_copy).model("adder_mynet").artifact("onnx").path
    with open(artifacts_copy / path, "ab") as fh:
        fh.write(b"tampered")
    rows = Service(artifacts_copy).compare("adder_mynet", "cpu", [10, 11])
    broken = [r for r in rows if r["format"] == "onnx"]
    assert len(broken) == len(FORMATS["onnx"].loaders) >= 2
    for row in broken:
        assert row["within_rule"] is None and row["outputs"] == {} and "sha256" in row["reason"]
        assert path in row["reason"] and "\n" not in row["reason"]
    assert all(r["within_rule"] for r in rows if r["format"] != "onnx")


def test_compare_refuses_bad_input_with_one_line(service):
    with pytest.raises(UserError, match=r"adder_mynet expects 2 numbers \(x1, x2\); got 3"):
        service.compare("adder_mynet", "cpu", "1 2 3")
    with pytest.raises(UserError, match="unknown device 'tpu'"):
        service.compare("adder_mynet", "tpu", "1 2")


def test_compare_on_cuda_without_a_gpu_gives_each_gpu_runtime_its_reason(service):
    if cuda_unavailable_reason() is None:
        pytest.skip("this machine has a CUDA GPU")
    rows = service.compare("linear_3x", "cuda", "2")
    gpu_rows = [row for row in rows if row["device"] == "cuda"]
    assert {(r["format"], r["runtime"]) for r in gpu_rows} == {
        (f, load.runtime.name) for f, spec in FORMATS.items() for load in spec.loaders if "cuda" in load.runtime.devices
    } - {("onnx-int8", "onnxruntime")}  # linear_3x has no int8 file
    assert all(row["within_rule"] is None and row["reason"] for row in gpu_rows)
    # every runtime, CPU-only ones included, still answers on the CPU, as parity checks it there too
    assert all(row["within_rule"] is True for row in rows if row["device"] == "cpu")


def test_the_answer_says_what_it_should_be_by_the_catalogs_true_function(service):
    result = service.predict("adder_mynet", "onnx", "cpu", "10 11")
    expected = result["expected"]
    assert (expected["output"], expected["truth"], expected["value"]) == ("sum", "x1 + x2", 21.0)
    assert expected["model"] == result["outputs"]["sum"][0]
    assert expected["error"] == pytest.approx(result["outputs"]["sum"][0] - 21.0)
    assert service.predict("linear_3x", "onnx", "cpu", "-2.5")["expected"]["value"] == -7.5
    assert service.predict("poly3_sin", "onnx", "cpu", "1.5")["expected"]["value"] == pytest.approx(np.sin(1.5))
    assert service.predict("sigmoid_net", "onnx", "cpu", "1 1")["expected"] is None  # no true function declared


def test_every_declared_truth_is_close_to_what_training_learned_on_the_seeds_inputs(service):
    for spec in CATALOG.values():
        if spec.truth is None:
            continue
        entry = service.entry(spec.name)
        x = entry.examples[-1]  # near the training data for each task
        got = service.predict(spec.name, "onnx", "cpu", list(x))
        assert got["expected"]["value"] == pytest.approx(truth_value(spec.truth, entry.features, x))
        assert abs(got["expected"]["error"]) < 1.0, (spec.name, got["expected"])


def test_compare_refuses_inputs_whose_eager_outputs_overflow_and_never_returns_non_finite_numbers(service):
    import json

    with pytest.raises(OutputOverflow, match="adder_mynet's output sum is not finite"):
        service.compare("adder_mynet", "cpu", "3e38 3e38")
    rows = service.compare("adder_mynet", "cpu", "70000 70000")  # finite in float32, beyond float16's 65504
    fp16 = next(r for r in rows if r["format"] == "onnx-fp16")
    assert fp16["within_rule"] is False and "non-finite" in fp16["reason"] and fp16["outputs"]["sum"] == [None]
    assert all(r["within_rule"] for r in rows if r["format"] != "onnx-fp16")
    json.dumps(rows, allow_nan=False)  # what the routes send: JSON has no Infinity


@pytest.mark.parametrize(("model", "features"), [("adder_mynet", [37.5, -4.25]), ("poly3_sin", [0.7])])
def test_compare_is_computed_on_the_input_given_not_an_example(service, eager, model, features):
    """Each row's values and difference are those of the input sent, checked against eager run on it separately."""
    entry = service.entry(model)
    assert [features] not in [list(e) for e in entry.examples]
    want = eager(model).predict(np.asarray(features, dtype=np.float32))
    rows = service.compare(model, "cpu", features)
    assert rows
    for row in rows:
        assert row["within_rule"] is True, row
        largest = 0.0
        for name, values in want.items():
            got = np.asarray(row["outputs"][name], dtype=np.float64)
            np.testing.assert_allclose(got, np.asarray(values, dtype=np.float64).reshape(-1), rtol=0.06, atol=0.06)
            largest = max(largest, float(np.abs(got - np.asarray(values).reshape(-1)).max()))
        assert row["max_abs_diff"] == pytest.approx(largest, rel=1e-3, abs=1e-6), row
