"""The Triton Python-backend model (pipeline/serving/triton_python_model.py) on the real server, for every
worked example (examples/: int64 token ids beside float32 signals, an image) in every Python flavour:
inputs fed as the dtypes the config declares, and each bad request refused on its own with one line
naming the input or output, as the demo refuses it. One server for the module."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pipeline.artifacts.manifest import Manifest
from pipeline.runtime.parity import parity_inputs
from pipeline.runtime.predictor import load_predictor
from pipeline.serving.naming import PYTHON_FLAVOURS, flavours_of, tensor_names
from pipeline.serving.triton import build_repository
from pipeline.serving.triton_server import TritonServerError, find_env, start_server
from tests.conftest import ROOT
from tests.test_triton_server import _dead_pid, leftovers

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

pytestmark = pytest.mark.triton_server
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


def test_an_image_holding_nan_is_refused_naming_the_image(client, examples, flavours):
    image = np.zeros((1, 1, 8, 8), dtype=np.float32)
    image[0, 0, 0, 1] = np.nan
    for model, name, fmt in flavours:
        if model == "digits_cnn":
            with pytest.raises(InferenceServerException, match=r"input 'image': value 2 is nan, expected a finite"):
                infer(client, examples, model, name, fmt, image)


def test_the_start_removed_what_a_run_killed_hard_had_left(client):
    assert client.leftovers == []
