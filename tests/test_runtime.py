"""The predictor (pipeline/runtime/predictor.py): one example or a batch in, named outputs out, the output names
checked against the manifest, bad input refused in one line, and one load per (model, format, runtime, device).
The loaders themselves are tests/test_loaders.py; hostile inputs are tests/test_robustness_inputs.py."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.artifacts.manifest import ArtifactError
from pipeline.runtime.inputs import InputError
from pipeline.runtime.predictor import Predictor, PredictorCache, load_predictor


def test_one_example_and_a_batch_give_named_outputs_of_the_right_shapes(manifest, eager):
    predictor = load_predictor(manifest, "adder_mynet", "onnx", runtime="onnxruntime", device="cpu")
    one = predictor.predict([10, 11])
    assert {k: v.shape for k, v in one.items()} == {"sum": (1,), "hidden": (8,)}
    batch = predictor.predict([[10, 11], [1, 2], [0, 0]])
    assert {k: v.shape for k, v in batch.items()} == {"sum": (3, 1), "hidden": (3, 8)}
    assert float(one["sum"][0]) == pytest.approx(float(eager("adder_mynet").predict([10, 11])["sum"][0]), rel=1e-4)
    assert predictor.outputs(np.array([[10, 11]], np.float32)).keys() == {"sum", "hidden"}


def test_runtime_and_device_are_keywords_so_they_cannot_be_swapped(manifest):
    with pytest.raises(TypeError):
        load_predictor(manifest, "linear_3x", "onnx", "onnxruntime", "cpu")  # the mistake this prevents
    with pytest.raises(TypeError):
        PredictorCache(manifest).get("linear_3x", "onnx", "cpu", "onnxruntime")


def test_the_cache_loads_each_model_format_runtime_and_device_once(manifest):
    cache = PredictorCache(manifest)
    first = cache.get("linear_3x", "onnx", device="cpu")
    assert cache.get("linear_3x", "onnx", device="cpu") is first
    other = cache.get("linear_3x", "onnx", runtime="onnx-reference", device="cpu")
    assert other is not first and other.runtime == "onnx-reference"


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ([1, 2, 3], "adder_mynet expects 2 numbers (x1, x2); got 3"),
        ([[1, 2], [3]], "adder_mynet expects 2 numbers (x1, x2); got something that is not rows of numbers"),
        ([1, float("nan")], "x2 (position 2) is not a finite float32 number"),
        ("1 2", "adder_mynet expects 2 numbers (x1, x2); got something that is not rows of numbers"),
    ],
)
def test_bad_input_is_one_line_naming_what_was_expected(manifest, given, message):
    predictor = load_predictor(manifest, "adder_mynet", "onnx")
    with pytest.raises(InputError) as info:
        predictor.predict(given)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_an_unknown_device_is_refused_before_anything_loads(manifest):
    with pytest.raises(InputError, match=r"unknown device 'tpu'; expected one of: cpu, cuda, auto or cuda:N"):
        load_predictor(manifest, "adder_mynet", "onnx", device="tpu")


def test_an_artifact_whose_outputs_are_not_the_manifests_is_refused_by_name():
    """A file that lost an output (or renamed one) must not answer under the manifest's names."""
    lost = Predictor(
        model="m",
        format="onnx",
        runtime="onnxruntime",
        device="cpu",
        features=["x"],
        output_names=["sum", "hidden"],
        run_batch=lambda x: [x * 2.0],
        declared=["sum"],
    )
    with pytest.raises(ArtifactError, match=r"m onnx on onnxruntime gives outputs sum; the manifest lists sum, hidden"):
        lost.predict([1.0])
