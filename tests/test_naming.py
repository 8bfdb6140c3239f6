"""Triton names (pipeline/serving/naming.py), from hand-made manifest entries, no server and no files: model
names per flavour, tensor names per platform, data types from the dtype table and each ModelConfig refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import formats
from pipeline.artifacts.manifest import Manifest, ManifestError
from pipeline.serving import naming


def _tensor(name, width, dtype="float32"):
    return {"name": name, "shape": ["batch", width], "dtype": dtype, "features": [f"f{i}" for i in range(width)]}


def _entry(inputs, outputs, files=("onnx", "torchscript"), not_applicable=None):
    arts = [{"format": f, "path": f"m/{f}", "sha256": "0" * 64, "bytes": 1} for f in files]
    model = {"inputs": inputs, "outputs": outputs, "examples": [], "artifacts": arts}
    if not_applicable:
        model["not_applicable"] = not_applicable
    return Manifest.from_dict(Path("/nonexistent"), {"models": {"m": model}}).model("m")


def test_model_names_say_the_format_and_the_backend():
    assert naming.triton_model_name("adder", "onnx") == "adder_onnx"
    assert naming.triton_model_name("adder", "onnx", naming.PYTHON_BACKEND) == "adder_onnx_python"
    assert naming.served_names("adder", "onnx") == ["adder_onnx", "adder_onnx_python"]  # its own backend first
    assert naming.served_names("adder", "torchscript") == ["adder_torchscript"]  # no Python flavour: torch
    assert naming.PYTHON_FLAVOUR.format == formats.DEFAULT_FORMAT


def test_torchscript_tensors_are_positional_and_onnx_keeps_the_manifest_names():
    entry = _entry([_tensor("x", 2), _tensor("a__b", 1)], [_tensor("sum", 1), _tensor("hidden", 3)])
    assert naming.tensor_names(entry, "onnx") == (["x", "a__b"], ["sum", "hidden"])
    # a name that already holds "__" would be misread as an index by the PyTorch backend
    assert naming.tensor_names(entry, "torchscript") == (["x__0", "INPUT__1"], ["sum__0", "hidden__1"])


def test_a_derived_format_without_a_file_has_no_flavour():
    entry = _entry([_tensor("x", 2)], [_tensor("y", 1)], not_applicable={"onnx-int8": "no MatMul to quantize"})
    names = {f.suffix for f in naming.flavours_of(entry)}
    assert "onnx" in names and "torchscript" in names and "onnx_python" in names
    assert not any(name.startswith("onnx-int8") for name in names)


def test_the_config_reads_data_types_from_the_dtype_table():
    entry = _entry([{**_tensor("ids", 3, "int64"), "values": [0, 9]}], [_tensor("y", 2)])
    config = naming.model_config(entry, "onnx", max_batch_size=8)
    assert config["platform"] == "onnxruntime_onnx" and config["max_batch_size"] == 8
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == [("ids", "TYPE_INT64", [3])]
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["output"]] == [("y", "TYPE_FP32", [2])]
    python = naming.model_config(entry, "onnx", backend=naming.PYTHON_BACKEND)
    assert python["backend"] == "python" and python["parameters"] == {
        "MODEL_FILE": {"string_value": "model.onnx"},
        "VALUE_RANGES": {"string_value": "ids=0:9"},  # the Python model refuses ids outside them
    }
    assert naming.data_type({"name": "t", "dtype": "int64"}, "where") == ("TYPE_INT64", "INT64")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"name": "t", "dtype": "float64"},
            "where: tensor 't' has dtype 'float64', which is not mapped to a Triton type",
        ),
        ({"name": "t", "dtype": "int32"}, "which is not mapped to a Triton type"),  # no spec can declare it
    ],
)
def test_a_dtype_outside_the_table_is_refused_by_name(spec, message):
    with pytest.raises(ManifestError, match=message):
        naming.data_type(spec, "where")


@pytest.mark.parametrize("shape", [[3, 2], ["batch", 0], ["batch", True], "batch,3"])
def test_a_malformed_shape_is_refused_naming_what_was_expected(shape):
    with pytest.raises(ManifestError, match=r"where: tensor 't' has shape .*; expected \['batch', N\]"):
        naming.tensor_dims({"name": "t", "shape": shape}, "where")


def test_a_tensor_name_that_is_not_a_plain_identifier_is_refused():
    entry = _entry([_tensor("x y", 2)], [_tensor("y", 1)])
    with pytest.raises(ManifestError, match=r"m_onnx: tensor name 'x y' is not a plain identifier"):
        naming.model_config(entry, "onnx")
