"""The Service behind the page and the Open Inference Protocol routes: the manifest it serves (and
follows when export replaces it), its predictor cache, `predict` and its refusals, in this process."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.catalog import CATALOG
from pipeline.errors import UserError
from pipeline.manifest import ArtifactError, Manifest, ManifestError
from pipeline.runtime import RuntimeUnavailable
from pipeline.service import OutputOverflow, Service, cuda_unavailable_reason


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
        with pytest.raises(RuntimeUnavailable, match=r"device cuda is unavailable: no CUDA GPU is visible"):
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
