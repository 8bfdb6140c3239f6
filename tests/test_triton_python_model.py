"""The Triton Python-backend model (pipeline/serving/triton_python_model.py), in this process and on the real server.

In this process, with a stand-in for the `triton_python_backend_utils` module Triton provides: batches of
requests, each with rows of its own, come back to their own senders, and a bad request is answered as an
error. The file runs inside Triton's stub with the config Triton passes as JSON; the config here is the one
the repository writer wrote, read with Triton's own schema (tritonclient's model_config_pb2).

On the real server (marked triton_server, one server for the module): every worked example (examples/:
int64 token ids beside float32 signals, an image) in every Python flavour, inputs fed as the dtypes the
config declares, and each bad request refused on its own with one line naming the input or output, as the
demo refuses it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from pipeline.artifacts.manifest import Manifest
from pipeline.runtime.parity import parity_inputs
from pipeline.runtime.predictor import load_predictor
from pipeline.serving.naming import PYTHON_BACKEND, PYTHON_FLAVOURS, flavours_of, tensor_names, triton_model_name
from pipeline.serving.triton import build_repository
from pipeline.serving.triton_server import TritonServerError, find_env, start_server
from tests.conftest import ROOT
from tests.test_triton_server import _dead_pid, leftovers

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

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


def test_in_a_batch_a_bad_request_gets_its_error_and_the_others_their_rows(repository, monkeypatch):
    """NaN, infinity and outputs that overflow float32 are refused per request, naming the input or output."""
    instance, config = _model(repository, monkeypatch, "adder_mynet")
    name, out = config.input[0].name, config.output[0].name
    rows = [[[10.0, 11.0]], [[1.0, np.nan]], [[np.inf, 0.0]], [[3e38, 3e38]], [[1.0, 2.0]]]
    responses = instance.execute([_Request({name: np.array(r, dtype=np.float32)}) for r in rows])
    errors = [r.error.message() if r.error is not None else None for r in responses]
    assert errors[1] == f"input {name!r}: value 2 is nan, expected a finite number"
    assert errors[2] == f"input {name!r}: value 1 is inf, expected a finite number"
    assert errors[3] is not None and "is not finite for this input (float32 overflow)" in errors[3]
    assert errors[0] is None and errors[4] is None
    assert (
        abs(float(responses[0].outputs[out][0, 0]) - 21.0) < 3.0
        and abs(float(responses[4].outputs[out][0, 0]) - 3.0) < 3.0
    )


# ---- on the real server: every worked example in every Python flavour ----------------------------------

HAPPY = {"words": [[1, 2, 3, 4, 5, 30, 31, 32, 33, 34, 35, 36]], "signals": [[1.0, 0.0, 0.0, 0.0]]}


@pytest.fixture(scope="module")
def examples(built):
    return Manifest.load(built)


@pytest.fixture(scope="module")
def flavours(examples):
    """(model, Triton name, format) of every Python flavour of every example model."""
    return [
        (m, f.model_name(m), f.format) for m in examples.models for f in flavours_of(examples.model(m), PYTHON_FLAVOURS)
    ]


@pytest.fixture(scope="module")
def client(examples, flavours, tmp_path_factory):
    try:
        env = find_env(Path(os.environ.get("PIPELINE_TRITON_ENV") or ROOT / ".venv-triton"))
    except TritonServerError as exc:
        pytest.fail(f"{exc} (or deselect these tests with -m 'not triton_server')")
    repo = tmp_path_factory.mktemp("triton-examples") / "repo"
    build_repository(examples, repo)
    left, folder = leftovers(_dead_pid())  # what a run killed with SIGKILL leaves: this start removes it
    with start_server(repo, [name for _, name, _ in flavours], env) as server:
        with httpclient.InferenceServerClient(server.url.split("://", 1)[1]) as c:
            c.leftovers = [p for p in (*left, folder) if p.exists()]
            yield c


def infer(client, examples, model: str, name: str, fmt: str, batch) -> dict[str, np.ndarray]:
    entry = examples.model(model)
    ins, outs = tensor_names(entry, fmt)
    arrays = batch if isinstance(batch, dict) else {entry.inputs[0]["name"]: batch}
    tensors = []
    for spec, wire in zip(entry.inputs, ins, strict=True):
        a = np.asarray(arrays[spec["name"]], dtype=np.int64 if spec.get("dtype") == "int64" else np.float32)
        tensor = httpclient.InferInput(wire, list(a.shape), "INT64" if a.dtype == np.int64 else "FP32")
        tensor.set_data_from_numpy(a, binary_data=True)
        tensors.append(tensor)
    result = client.infer(name, tensors)
    return {spec["name"]: result.as_numpy(wire) for spec, wire in zip(entry.outputs, outs, strict=True)}


@pytest.mark.triton_server
def test_every_python_flavour_of_every_example_answers_as_its_file_does_locally(client, examples, flavours):
    assert {m for m, _, _ in flavours} == {"digits_cnn", "mood_bag"} and len(flavours) >= 4
    for model, name, fmt in flavours:
        local = load_predictor(examples, model, fmt)
        for batch in parity_inputs(examples, model)[1:]:  # random batches of 1, 2 and 7
            got = infer(client, examples, model, name, fmt, batch)
            want = local.outputs(batch)
            for out, value in got.items():
                assert np.allclose(value, want[out], atol=1e-5, rtol=1e-4), (name, out)
    for model, name, fmt in flavours:
        if model == "mood_bag":
            scores = infer(client, examples, model, name, fmt, HAPPY)["scores"]
            assert int(np.argmax(scores)) == 2, (name, scores)  # "happy", as the demo answers


@pytest.mark.triton_server
@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"signals": [[1.0, float("nan"), 0.0, 0.0]]}, "input 'signals': value 2 is nan, expected a finite number"),
        ({"signals": [[float("-inf"), 0.0, 0.0, 0.0]]}, "input 'signals': value 1 is -inf, expected a finite number"),
        ({"words": [[1] * 11 + [50]]}, "input 'words': value 12 is 50, outside [0, 50)"),
        ({"signals": [[3.4e38, 3.4e38, 3.4e38, 3.4e38]]}, "is not finite for this input (float32 overflow)"),
    ],
    ids=["nan", "inf", "word out of range", "overflow"],
)
def test_a_bad_request_is_refused_naming_its_input_and_the_next_one_answers(client, examples, flavours, change, words):
    for model, name, fmt in flavours:
        if model != "mood_bag":
            continue
        with pytest.raises(InferenceServerException) as info:
            infer(client, examples, model, name, fmt, {**HAPPY, **change})
        assert words in str(info.value) and "\n" not in str(info.value), (name, str(info.value))
        assert int(np.argmax(infer(client, examples, model, name, fmt, HAPPY)["scores"])) == 2


@pytest.mark.triton_server
def test_an_image_holding_nan_is_refused_naming_the_image(client, examples, flavours):
    image = np.zeros((1, 1, 8, 8), dtype=np.float32)
    image[0, 0, 0, 1] = np.nan
    for model, name, fmt in flavours:
        if model == "digits_cnn":
            with pytest.raises(InferenceServerException, match=r"input 'image': value 2 is nan, expected a finite"):
                infer(client, examples, model, name, fmt, image)


@pytest.mark.triton_server
def test_the_start_removed_what_a_run_killed_hard_had_left(client):
    assert client.leftovers == []
