"""The Triton Python-backend model (pipeline/serving/triton_python_model.py) in this process, with a stand-in for
the `triton_python_backend_utils` module Triton provides: batches of requests, each with rows of its own, come
back to their own senders, and a bad request is answered as an error.

The file runs inside Triton's stub with the config Triton passes as JSON; the config here is the one the
repository writer wrote, read with Triton's own schema (tritonclient's model_config_pb2).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from pipeline.serving.naming import PYTHON_BACKEND, triton_model_name
from pipeline.serving.triton import build_repository

SOURCE = Path(__file__).resolve().parents[1] / "pipeline" / "serving" / "triton_python_model.py"


class _Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self._name, self._array = name, array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class _Response:
    def __init__(self, output_tensors=(), error=None) -> None:
        self.outputs = {t.name(): t.as_numpy() for t in output_tensors}
        self.error = error


class _Error:
    def __init__(self, message: str, *args) -> None:
        self._message = message

    def message(self) -> str:
        return self._message


class _Request:
    def __init__(self, tensors: dict[str, np.ndarray]) -> None:
        self.tensors = tensors

    def inputs(self):
        return [_Tensor(n, a) for n, a in self.tensors.items()]


def _fake_backend_utils() -> types.ModuleType:
    pb = types.ModuleType("triton_python_backend_utils")
    pb.Tensor = _Tensor
    pb.InferenceResponse = _Response
    pb.TritonError = _Error
    pb.get_input_tensor_by_name = lambda request, name: (
        _Tensor(name, request.tensors[name]) if name in request.tensors else None
    )
    pb.triton_string_to_numpy = lambda t: {
        "TYPE_FP32": np.float32,
        "TYPE_INT64": np.int64,
        "TYPE_FP16": np.float16,
        "TYPE_BOOL": np.bool_,
    }[t]
    return pb


@pytest.fixture(scope="module")
def repository(manifest, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("triton-python") / "repo"
    build_repository(manifest, out)
    return out


def _model(repository: Path, monkeypatch, model: str, fmt: str = "onnx"):
    """The repository's Python-backend model for `model`, initialised as Triton would."""
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _fake_backend_utils())
    folder = repository / triton_model_name(model, fmt, PYTHON_BACKEND)
    config = text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    spec = importlib.util.spec_from_file_location(f"triton_model_{model}", folder / "1" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    instance = module.TritonPythonModel()
    as_json = json_format.MessageToDict(config, preserving_proto_field_name=True)
    instance.initialize({"model_config": json.dumps(as_json), "model_repository": str(folder), "model_version": "1"})
    return instance, config


def test_the_shipped_model_is_this_file(repository, manifest):
    model = next(iter(manifest.models))
    folder = repository / triton_model_name(model, "onnx", PYTHON_BACKEND)
    assert (folder / "1" / "model.py").read_bytes() == SOURCE.read_bytes()


def test_a_batch_of_requests_answers_each_with_its_own_rows(repository, manifest, eager, monkeypatch):
    """Dynamic batching hands several requests to one execute(): each sender gets exactly its rows, in order."""
    model = "adder_mynet"
    instance, config = _model(repository, monkeypatch, model)
    name = config.input[0].name
    rng = np.random.default_rng(3)
    batches = [rng.uniform(-50, 50, size=(n, 2)).astype(np.float32) for n in (1, 3, 2, 1)]  # distinct, uneven
    responses = instance.execute([_Request({name: b}) for b in batches])
    assert len(responses) == len(batches)
    reference = eager(model)
    for i, (batch, response) in enumerate(zip(batches, responses, strict=True)):
        assert response.error is None, response.error.message()
        want = reference.predict(batch)
        for out_name, values in want.items():
            got = response.outputs[out_name]
            assert got.shape == values.shape, f"request {i}: {out_name} {got.shape} != {values.shape}"
            np.testing.assert_allclose(got, values, rtol=1e-4, atol=1e-4, err_msg=f"request {i}, output {out_name}")


def test_a_request_that_cannot_run_is_answered_with_an_error_and_the_server_goes_on(repository, monkeypatch):
    instance, config = _model(repository, monkeypatch, "adder_mynet")
    name = config.input[0].name
    wrong = instance.execute([_Request({name: np.zeros((1, 3), dtype=np.float32)})])
    assert len(wrong) == 1 and wrong[0].error is not None and wrong[0].outputs == {}
    message = wrong[0].error.message()
    assert len(message.splitlines()) == 1 and len(message) <= 400
    fine = instance.execute([_Request({name: np.array([[10.0, 11.0]], dtype=np.float32)})])
    assert fine[0].error is None and abs(float(next(iter(fine[0].outputs.values()))[0, 0]) - 21.0) < 3.0
