"""The Open Inference Protocol's wire format (pipeline/oip_protocol.py), without a server or artifacts:
names to targets, bodies to arrays, arrays to replies, and each refusal's status and words."""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from pipeline import formats
from pipeline import oip_protocol as p
from pipeline.manifest import Manifest
from pipeline.oip_protocol import OIPError


def _tensor(name, width):
    return {"name": name, "shape": ["batch", width], "dtype": "float32", "features": [f"f{i}" for i in range(width)]}


@pytest.fixture(scope="module")
def manifest():
    """Two models as export lists them; no file exists, and none is read."""

    def model(inputs, outputs):
        arts = [{"format": f, "path": f"m/{f}", "sha256": "0" * 64, "bytes": 1} for f in ("onnx", "torchscript")]
        return {"inputs": inputs, "outputs": outputs, "examples": [], "artifacts": arts}

    raw = {
        "models": {
            "adder": model([_tensor("x", 2)], [_tensor("sum", 1), _tensor("hidden", 3)]),
            "wide_net": model([_tensor("x", 1000)], [_tensor("y", 10)]),
        }
    }
    return Manifest.from_dict(Path("/nonexistent"), raw)


LIMIT = 16 * 1024 * 1024


def _target(manifest, name, max_batch=8, version=None):
    return p.resolve_target(manifest, name, version, "onnx", LIMIT, max_batch)


def _req(data=None, shape=(1, 2), name="x", datatype="FP32", **extra):
    tensor = {"name": name, "shape": list(shape), "datatype": datatype, **extra}
    if data is not None:
        tensor["data"] = data
    return {"inputs": [tensor]}


def _refused(status, *words):
    """A context that expects OIPError with `status` and every word in its message."""

    class Check:
        def __enter__(self):
            return self

        def __exit__(self, kind, exc, tb):
            assert isinstance(exc, OIPError), f"expected OIPError {status}, got {exc!r}"
            assert exc.status == status, (exc.status, exc.message)
            for word in words:
                assert word in exc.message, (word, exc.message)
            assert "\n" not in exc.message
            return True

    return Check()


# ---- names -----------------------------------------------------------------------------------------


def test_names_resolve_to_the_manifest_model_and_the_triton_names(manifest):
    bare = _target(manifest, "adder")
    assert (bare.entry.name, bare.format, bare.fixed, bare.inputs, bare.outputs) == (
        "adder",
        "onnx",
        False,
        ["x"],
        ["sum", "hidden"],
    )
    onnx = _target(manifest, "adder_onnx", version="1")
    assert (onnx.format, onnx.fixed, onnx.inputs, onnx.outputs) == ("onnx", True, ["x"], ["sum", "hidden"])
    script = _target(manifest, "adder_torchscript", version="")
    assert (script.format, script.inputs, script.outputs) == ("torchscript", ["x__0"], ["sum__0", "hidden__1"])
    assert p.oip_names(manifest) == [
        "adder",
        "adder_torchscript",
        "adder_onnx",
        "wide_net",
        "wide_net_torchscript",
        "wide_net_onnx",
    ]
    with _refused(404, "unknown model 'adder_pt2'", "adder, wide_net", "<model>_torchscript"):
        _target(manifest, "adder_pt2")
    with _refused(404, "unknown model 'adder_onnx-int8'", "adder has no 'onnx-int8' artifact"):
        _target(manifest, "adder_onnx-int8")  # a format Triton serves, which this model was not given
    with _refused(404, "no version '2'"):
        _target(manifest, "adder", version="2")


def test_model_metadata_lists_fp32_tensors_with_a_variable_batch(manifest):
    meta = p.model_metadata(_target(manifest, "adder_torchscript"))
    assert meta == {
        "name": "adder_torchscript",
        "versions": ["1"],
        "platform": "pytorch_libtorch",
        "inputs": [{"name": "x__0", "datatype": "FP32", "shape": [-1, 2]}],
        "outputs": [
            {"name": "sum__0", "datatype": "FP32", "shape": [-1, 1]},
            {"name": "hidden__1", "datatype": "FP32", "shape": [-1, 3]},
        ],
        "parameters": {"max_batch_size": 8},
    }


def test_the_largest_batch_is_one_whose_json_fits_the_body_limit(manifest):
    assert p.max_batch_size(2, LIMIT) == 1024 and p.max_batch_size(1000, LIMIT) == 512
    assert p.max_batch_size(1000, 4096) == 1 and p.max_batch_size(10, 1_000_000, cap=8) == 8
    assert _target(manifest, "wide_net", max_batch=1024).max_batch == 512
    # a full batch of the widest model, as tritonclient writes JSON (json.dumps of Python floats), fits
    rows = np.full((512, 1000), -1.2345678e-05, dtype=np.float32)
    body = json.dumps(
        {"inputs": [{"name": "x", "shape": [512, 1000], "datatype": "FP32", "data": [v.item() for v in rows.ravel()]}]}
    )
    assert len(body) < LIMIT
    assert p.read_request(body.encode(), None, None, _target(manifest, "wide_net", 1024), LIMIT).batch.shape == (
        512,
        1000,
    )


# ---- bodies ------------------------------------------------------------------------------------------


def test_bodies_are_inflated_within_the_limit():
    body = json.dumps(_req([1, 2])).encode()
    assert p.decode_body(body, None, 100) == body
    assert p.decode_body(gzip.compress(body), "gzip", 1000) == body
    assert p.decode_body(zlib.compress(body), " Deflate ", 1000) == body
    with _refused(413, "decompressed", "limit of 1,000 bytes"):
        p.decode_body(gzip.compress(b" " * 100_000), "gzip", 1000)
    with _refused(400, "truncated"):
        p.decode_body(gzip.compress(body)[:-12], "gzip", 1000)
    with _refused(400, "not valid gzip"):
        p.decode_body(b"plain text", "gzip", 1000)
    with _refused(400, "'br'", "gzip, deflate or none"):
        p.decode_body(body, "br", 1000)
    with _refused(400, "3 bytes follow the gzip data"):
        p.decode_body(gzip.compress(body) + b"xyz", "gzip", 1000)
    with _refused(400, "bytes follow the gzip data"):  # a second member is not read either
        p.decode_body(gzip.compress(body) + gzip.compress(body), "gzip", 1000)


def test_the_binary_extension_splits_header_from_tensors():
    assert p.split_body(b'{"a":1}rest', "7") == (b'{"a":1}', b"rest")
    assert p.split_body(b"{}", None) == (b"{}", b"")
    for bad in ("0", "99", "-1", "x", "", "²", "٣", "7" * 5000, "1e1", "0x7"):
        with _refused(400, p.HEADER_LENGTH, "1 to 11 bytes"):
            p.split_body(b'{"a":1}rest', bad)


@pytest.mark.parametrize(
    ("header", "words"),
    [
        (b"", ["empty"]),
        (b"  ", ["empty"]),
        (b"{inputs", ["not valid JSON"]),
        (b'{"inputs": [NaN]}', ["not valid JSON", "NaN"]),
        (b"[1, 2]", ["JSON object"]),
        (b'{"inputs": [], "parameters": 3}', ["'parameters'"]),
    ],
)
def test_requests_that_are_not_a_json_object_are_refused(header, words):
    with _refused(400, *words):
        p.parse_request(header)


@pytest.mark.parametrize(
    ("header", "words"),
    [
        (b'{"inputs": [{"data": [' + b"[]," * 100_000 + b"[]]}]}", ["100,005 arrays and objects", "at most 8 rows"]),
        (b'{"inputs": [{"data": [' + b"{}," * 100_000 + b"{}]}]}", ["arrays and objects"]),
        (b'{"inputs": [{"data": [' + b"1," * 100_000 + b"1]}]}", ["about 100,000", "8 x 2 = 16"]),
    ],
)
def test_json_bigger_than_a_full_batch_is_refused_before_parsing(manifest, header, words):
    with _refused(400, *words):
        p.check_json_budget(header, _target(manifest, "adder"))
    p.check_json_budget(json.dumps(_req([[1, 2]] * 8, shape=(8, 2))).encode(), _target(manifest, "adder"))


# ---- the input -------------------------------------------------------------------------------------------


def test_json_data_flat_or_nested_gives_a_float32_batch(manifest):
    target = _target(manifest, "adder")
    flat = p.input_batch(_req([1, 2, 3, 4], shape=(2, 2)), target, b"")
    nested = p.input_batch(_req([[1, 2], [3, 4]], shape=(2, 2)), target, b"")
    for batch in (flat, nested):
        assert batch.dtype == np.float32 and batch.flags.c_contiguous
        np.testing.assert_array_equal(batch, [[1, 2], [3, 4]])


def test_binary_data_gives_the_same_batch(manifest):
    target = _target(manifest, "adder")
    values = np.array([[1.5, -2], [3, 4e-3]], dtype=np.float32)
    req = _req(shape=(2, 2), parameters={"binary_data_size": 16})
    np.testing.assert_array_equal(p.input_batch(req, target, values.tobytes()), values)


BAD_INPUTS = [  # (request, binary, status words)
    ({"outputs": []}, b"", ["no 'inputs' list", "input 'x'"]),
    ({"inputs": [_req([1, 2])["inputs"][0]] * 2}, b"", ["exactly one input"]),
    (_req([1, 2], name="y"), b"", ["unexpected input 'y'", "expected 'x'"]),
    (_req([1, 2], datatype="FP64"), b"", ["'FP64'", "expected 'FP32'"]),
    (_req([1, 2, 3], shape=(1, 3)), b"", ["shape [1, 3]", "[batch, 2]"]),
    (_req([1, 2], shape=(2,)), b"", ["shape [2]"]),
    (_req([1, 2], shape=(1, True)), b"", ["shape [1, True]"]),
    (_req([], shape=(0, 2)), b"", ["batch from 1 to 8"]),
    (_req([1.0] * 18, shape=(9, 2)), b"", ["batch from 1 to 8"]),
    (_req([1, 2, 3], shape=(2, 2)), b"", ["3 values", "needs 4"]),
    (_req([1, "two"]), b"", ['"two"', "not a number"]),
    (_req([1, True]), b"", ["true", "not a number"]),
    (_req([1, None]), b"", ["null", "not a number"]),
    (_req({"a": 1}), b"", ["JSON array"]),
    (_req(None), b"", ["has no 'data'"]),
    (_req([1, 1e39]), b"", ["FP32's range"]),
    (_req([1, 10**400]), b"", ["FP32's range"]),
    (_req([[[[[[[[[[1, 2]]]]]]]]]]), b"", ["nested too deeply"]),
    (_req([1, 2], parameters=[1]), b"", ["'parameters' must be a JSON object"]),
    (_req(shape=(1, 2), parameters={"binary_data_size": 8}), b"\x00" * 4, ["binary_data_size is 8", "expected 8"]),
    (_req(shape=(1, 2), parameters={"binary_data_size": 4}), b"\x00" * 4, ["binary_data_size is 4", "expected 8"]),
    (_req([1, 2]), b"\x00" * 8, ["8 bytes of binary data", "binary_data_size"]),
    (
        _req(shape=(1, 2), parameters={"binary_data_size": 8}),
        np.array([np.nan, 1], dtype=np.float32).tobytes(),
        ["NaN or infinity"],
    ),
]


@pytest.mark.parametrize(("req", "binary", "words"), BAD_INPUTS)
def test_malformed_inputs_are_400_naming_what_was_expected(manifest, req, binary, words):
    target = _target(manifest, "adder")
    with _refused(400, *words):
        p.input_batch(req, target, binary)


def test_a_bare_name_may_pick_another_format_and_a_triton_name_may_not(manifest):
    bare = _target(manifest, "adder")
    fixed = _target(manifest, "adder_onnx")
    assert p.requested_format({}, bare) == "onnx"
    assert p.requested_format({"parameters": {"format": "pt2"}}, bare) == "pt2"
    assert p.requested_format({"parameters": {"format": "onnx"}}, fixed) == "onnx"
    with _refused(400, "onnx artifact only", "ask 'adder'"):
        p.requested_format({"parameters": {"format": "pt2"}}, fixed)
    with _refused(400, "'tflite'", ", ".join(formats.FORMATS)):
        p.requested_format({"parameters": {"format": "tflite"}}, bare)


# ---- the outputs ---------------------------------------------------------------------------------------


def test_outputs_are_chosen_by_name_each_as_json_or_binary(manifest):
    target = _target(manifest, "adder")
    assert p.requested_outputs({}, target) == [(0, "sum", False), (1, "hidden", False)]
    assert p.requested_outputs({"outputs": []}, target) == [(0, "sum", False), (1, "hidden", False)]  # as Triton
    assert p.requested_outputs({"parameters": {"binary_data_output": True}}, target) == [
        (0, "sum", True),
        (1, "hidden", True),
    ]
    asked = {"outputs": [{"name": "hidden", "parameters": {"binary_data": True}}, {"name": "sum"}]}
    assert p.requested_outputs(asked, target) == [(1, "hidden", True), (0, "sum", False)]
    for req, words in [
        ({"outputs": [{"name": "y"}]}, ["'y'", "sum, hidden"]),
        ({"outputs": [{"name": "sum"}, {"name": "sum"}]}, ["twice"]),
        ({"outputs": ["sum"]}, ["list of objects"]),
        ({"outputs": [{"name": "sum", "parameters": {"classification": 2}}]}, ["classification"]),
        ({"outputs": [{"name": "sum", "parameters": {"binary_data": 1}}]}, ["true or false"]),
        ({"parameters": {"binary_data_output": "yes"}}, ["true or false"]),
    ]:
        with _refused(400, *words):
            p.requested_outputs(req, target)


def test_replies_carry_json_tensors_or_binary_ones_after_the_header(manifest):
    target = _target(manifest, "adder_torchscript")
    outs = [np.array([[21.0]], dtype=np.float32), np.arange(3, dtype=np.float32).reshape(1, 3)]
    body, header_length = p.encode_reply({"id": "r1"}, target, outs, [(0, "sum__0", False), (1, "hidden__1", False)])
    assert header_length is None
    assert json.loads(body) == {
        "model_name": "adder_torchscript",
        "model_version": "1",
        "id": "r1",
        "outputs": [
            {"name": "sum__0", "datatype": "FP32", "shape": [1, 1], "data": [21.0]},
            {"name": "hidden__1", "datatype": "FP32", "shape": [1, 3], "data": [0.0, 1.0, 2.0]},
        ],
    }
    body, header_length = p.encode_reply({"id": 5}, target, outs, [(1, "hidden__1", True)])
    header = json.loads(body[:header_length])
    assert "id" not in header  # only a string id is echoed
    assert header["outputs"] == [
        {"name": "hidden__1", "datatype": "FP32", "shape": [1, 3], "parameters": {"binary_data_size": 12}}
    ]
    np.testing.assert_array_equal(np.frombuffer(body[header_length:], dtype="<f4"), [0, 1, 2])
