"""The Open Inference Protocol's wire format (pipeline/serving/oip_protocol.py), without a server or artifacts:
names to targets, bodies to arrays, arrays to replies, and each refusal's status and words."""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from pipeline import formats
from pipeline.artifacts.manifest import Manifest
from pipeline.errors import Refused
from pipeline.serving import oip_protocol as p


def _tensor(name, width):
    return {"name": name, "shape": ["batch", width], "dtype": "float32", "features": [f"f{i}" for i in range(width)]}


@pytest.fixture(scope="module")
def manifest():
    """Three models as export lists them; no file exists, and none is read."""

    def model(inputs, outputs):
        arts = [{"format": f, "path": f"m/{f}", "sha256": "0" * 64, "bytes": 1} for f in ("onnx", "torchscript")]
        return {"inputs": inputs, "outputs": outputs, "examples": [], "artifacts": arts}

    raw = {
        "models": {
            "adder": model([_tensor("x", 2)], [_tensor("sum", 1), _tensor("hidden", 3)]),
            "wide_net": model([_tensor("x", 1000)], [_tensor("y", 10)]),
            "pair": model(
                [{**_tensor("tokens", 3), "dtype": "int64", "values": [0, 10]}, _tensor("mask", 2)],
                [_tensor("logits", 2), {**_tensor("ids", 1), "dtype": "int64"}],
            ),
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


def fails(status, call, *args):
    """The message of the Refused `call(*args)` raises, after checking its status."""
    with pytest.raises(Refused) as info:
        call(*args)
    assert info.value.status == status, info.value.message
    assert str(info.value) == info.value.message and "\n" not in info.value.message
    return info.value.message


# ---- names -----------------------------------------------------------------------------------------


def test_names_resolve_to_the_manifest_model_and_the_triton_names(manifest):
    bare = _target(manifest, "adder")
    assert (bare.name, bare.entry.name, bare.format, bare.fixed, bare.inputs, bare.outputs, bare.max_batch) == (
        "adder",
        "adder",
        "onnx",
        False,
        ["x"],
        ["sum", "hidden"],
        8,
    )
    assert bare.width == 2 and _target(manifest, "pair").width == 5
    onnx = _target(manifest, "adder_onnx", version="1")
    assert (onnx.name, onnx.entry.name, onnx.format, onnx.fixed, onnx.inputs, onnx.outputs) == (
        "adder_onnx",
        "adder",
        "onnx",
        True,
        ["x"],
        ["sum", "hidden"],
    )
    script = _target(manifest, "adder_torchscript", version="")
    assert (script.format, script.fixed, script.inputs, script.outputs) == (
        "torchscript",
        True,
        ["x__0"],
        ["sum__0", "hidden__1"],
    )
    assert p.resolve_target(manifest, "pair", None, "pt2", LIMIT).inputs == ["tokens", "mask"]  # not a Triton format
    assert p.resolve_target(manifest, "adder", None, "onnx", LIMIT).max_batch == 1024  # the default cap
    assert _target(manifest, "wide_net_onnx").entry.name == "wide_net"  # the format is after the last "_"
    assert p.oip_names(manifest) == [
        "adder",
        "adder_torchscript",
        "adder_onnx",
        "wide_net",
        "wide_net_torchscript",
        "wide_net_onnx",
        "pair",
        "pair_torchscript",
        "pair_onnx",
    ]
    triton = " and ".join(f"<model>_{f}" for f in formats.TRITON_FORMATS)
    for unknown in ("adder_pt2", "nothing_onnx", "adder_", "adder"[:-1]):
        assert fails(404, _target, manifest, unknown) == (
            f"unknown model {unknown!r}; expected one of: adder, wide_net, pair (each also as {triton})"
        )
    assert fails(404, _target, manifest, "adder_onnx-int8") == (
        "unknown model 'adder_onnx-int8': adder has no 'onnx-int8' artifact; expected one of: onnx, torchscript"
    )
    assert (
        fails(404, p.resolve_target, manifest, "adder", "2", "onnx", LIMIT)
        == "model 'adder' has no version '2'; it has version 1"
    )
    assert (
        fails(404, p.resolve_target, manifest, "adder_onnx", "0", "onnx", LIMIT)
        == "model 'adder_onnx' has no version '0'; it has version 1"
    )


def test_a_derived_format_export_found_not_applicable_is_404_with_the_reason():
    arts = [{"format": f, "path": f"m/{f}", "sha256": "0" * 64, "bytes": 1} for f in ("onnx", "torchscript")]
    raw = {
        "models": {
            "adder": {
                "inputs": [_tensor("x", 2)],
                "outputs": [_tensor("sum", 1)],
                "examples": [],
                "artifacts": arts,
                "not_applicable": {"onnx-int8": "no MatMul to quantize"},
            }
        }
    }
    manifest = Manifest.from_dict(Path("/nonexistent"), raw)
    assert "adder_onnx-int8" not in p.oip_names(manifest)
    assert fails(404, _target, manifest, "adder_onnx-int8") == (
        "unknown model 'adder_onnx-int8': adder has no 'onnx-int8' artifact: not applicable (no MatMul to quantize)"
    )


def test_model_metadata_lists_tensors_with_a_variable_batch(manifest):
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
    pair = p.model_metadata(_target(manifest, "pair", max_batch=4))
    assert pair == {
        "name": "pair",
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [
            {"name": "tokens", "datatype": "INT64", "shape": [-1, 3]},
            {"name": "mask", "datatype": "FP32", "shape": [-1, 2]},
        ],
        "outputs": [
            {"name": "logits", "datatype": "FP32", "shape": [-1, 2]},
            {"name": "ids", "datatype": "INT64", "shape": [-1, 1]},
        ],
        "parameters": {"max_batch_size": 4},
    }
    bare = p.resolve_target(manifest, "adder", None, "pt2", LIMIT, 8)
    assert p.model_metadata(bare)["platform"] == ""  # a format Triton does not serve has no platform


def test_the_largest_batch_is_one_whose_json_fits_the_body_limit(manifest):
    assert p.max_batch_size(2, LIMIT) == 1024 and p.max_batch_size(1000, LIMIT) == 512
    assert p.max_batch_size(1000, 4096) == 1 and p.max_batch_size(10, 1_000_000, cap=8) == 8
    assert p.max_batch_size(0, LIMIT) == 1024  # a model of no features costs what one of one feature does
    # 1 MiB: 64 KiB of overhead leaves 983,040 bytes, 393 rows of 100 values at 25 bytes: a batch of 256
    assert p.max_batch_size(100, 1 << 20) == 256
    # at 80 KiB the overhead is an eighth of the body (10,240 bytes): 71,680 bytes fit 2 rows of 1000 values
    assert p.max_batch_size(1000, 80 * 1024) == 2
    # 57,142 bytes less an eighth (7,142) leave 50,000: exactly two rows; a byte less leaves one
    assert p.max_batch_size(1000, 57_142) == 2 and p.max_batch_size(1000, 57_141) == 1
    assert p.max_batch_size(1, 57_142, cap=1 << 20) == 1024 and p.max_batch_size(2, 57_142, cap=1 << 20) == 512
    assert p.max_batch_size(1000, 25_000 + 4096) == 1 and p.max_batch_size(1000, 8) == 1
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


def test_identity_and_no_encoding_pass_the_body_through():
    assert p.decode_body(b"abc", None, 10) == b"abc"
    assert p.decode_body(b"abc", "", 10) == b"abc"
    assert p.decode_body(b"abc", " Identity ", 10) == b"abc"
    assert p.decode_body(b"x" * 50, "identity", 10) == b"x" * 50  # the raw size was checked on reading


@pytest.mark.parametrize("encoding", ["gzip", "deflate", " GZIP ", "Deflate"])
def test_gzip_and_deflate_bodies_are_inflated(encoding):
    body = json.dumps(_req([1, 2])).encode()
    packed = gzip.compress(body) if "gzip" in encoding.lower() else zlib.compress(body)
    assert p.decode_body(packed, encoding, len(body)) == body


def test_inflating_stops_at_the_limit():
    bomb = gzip.compress(b" " * 100_000)
    assert fails(413, p.decode_body, bomb, "gzip", 1000) == (
        "the decompressed request body is over the limit of 1,000 bytes"
    )
    assert p.decode_body(gzip.compress(b"a" * 1000), "gzip", 1000) == b"a" * 1000  # exactly at the limit
    assert fails(413, p.decode_body, gzip.compress(b"a" * 1001), "gzip", 1000).endswith("1,000 bytes")


def test_a_compressed_bomb_is_stopped_without_inflating_it():
    import tracemalloc

    bomb = gzip.compress(b"\0" * 20_000_000)  # about 20 KB on the wire, 20 MB inflated
    tracemalloc.start()
    try:
        message = fails(413, p.decode_body, bomb, "gzip", 1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert message == "the decompressed request body is over the limit of 1,000 bytes" and peak < 1_000_000, peak


def test_bad_encodings_are_refused():
    body = json.dumps(_req([1, 2])).encode()
    assert fails(400, p.decode_body, body, "br", 1000) == (
        "unsupported Content-Encoding 'br'; expected gzip, deflate or none"
    )
    assert fails(400, p.decode_body, body, " BR ", 1000) == (
        "unsupported Content-Encoding 'br'; expected gzip, deflate or none"
    )
    message = fails(400, p.decode_body, b"plain text", "gzip", 1000)
    assert message.startswith("the body is not valid gzip data (") and message.endswith(")")
    assert len(message) > len("the body is not valid gzip data ()")
    truncated = gzip.compress(b"hello world" * 10)[:-12]
    assert fails(400, p.decode_body, truncated, "deflate", 1000) == "the deflate body is truncated"
    assert fails(400, p.decode_body, gzip.compress(body) + b"xyz", "gzip", 1000) == (
        "3 bytes follow the gzip data; expected one gzip stream"
    )
    second = gzip.compress(body)  # a second member is not read either
    assert fails(400, p.decode_body, gzip.compress(body) + second, "gzip", 1000) == (
        f"{len(second)} bytes follow the gzip data; expected one gzip stream"
    )


def test_the_binary_extension_splits_header_from_tensors():
    assert p.split_body(b'{"a":1}rest', "7") == (b'{"a":1}', b"rest")
    assert p.split_body(b'{"a":1}', " 7 ") == (b'{"a":1}', b"")  # the whole body is the header
    assert p.split_body(b"ab", "1") == (b"a", b"b")
    assert p.split_body(b"{}", None) == (b"{}", b"")
    for bad in ("\ud800", "0", "12", "99", "-1", "x", "", "²", "٣", "1e1", "0x7", "1.5", "1234567890123"):
        assert fails(400, p.split_body, b'{"a":1}rest', bad) == (
            f"{p.HEADER_LENGTH} is {bad!r}; expected the JSON header's size, 1 to 11 bytes"
        )
    long = "7" * 5000
    assert fails(400, p.split_body, b'{"a":1}rest', long) == (
        f"{p.HEADER_LENGTH} is {'7' * 20 + '...'!r}; expected the JSON header's size, 1 to 11 bytes"
    )
    assert fails(400, p.split_body, b'{"a":1}rest', "7" * 20 + "x") == (
        f"{p.HEADER_LENGTH} is {'7' * 20 + '...'!r}; expected the JSON header's size, 1 to 11 bytes"
    )
    assert "'" + "7" * 20 + "'" in fails(400, p.split_body, b"ab", "7" * 20)  # 20 characters are shown whole


def test_json_requests_are_objects_of_real_numbers():
    assert p.parse_request(b'{"inputs": [], "parameters": {"a": 1}}') == {"inputs": [], "parameters": {"a": 1}}
    assert p.parse_request(b'{"inputs": []}') == {"inputs": []}
    for empty in (b"", b"  \n"):
        assert fails(400, p.parse_request, empty) == "the request body is empty; expected a JSON inference request"
    for constant in (b'{"data": [NaN]}', b'{"data": [Infinity]}', b'{"data": [-Infinity]}'):
        name = constant[10:-2].decode()
        assert fails(400, p.parse_request, constant) == f"the request is not valid JSON ({name} is not a JSON number)"
    huge = b'{"a": ' + b"7" * 5000 + b"}"  # Python's refusal of a 5000-digit integer is a long sentence
    with pytest.raises(ValueError) as info:
        json.loads(huge)
    reason = str(info.value)
    assert len(reason) > 120
    assert fails(400, p.parse_request, huge) == f"the request is not valid JSON ({reason[:120]})"
    assert fails(400, p.parse_request, b"[" * 100_000).startswith("the request is not valid JSON (")
    for other in (b"[1, 2]", b'"x"', b"3"):
        assert fails(400, p.parse_request, other) == "the inference request must be a JSON object with an 'inputs' list"
    for params in (b"[]", b"3", b"null"):
        assert fails(400, p.parse_request, b'{"parameters": ' + params + b"}") == "'parameters' must be a JSON object"


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (
            b'{"inputs": [{"data": [' + b"[]," * 100_000 + b"[]]}]}",
            "the request holds 100,005 arrays and objects; expected one input of at most 8 rows",
        ),
        (
            b'{"inputs": [{"data": [' + b"{}," * 100_000 + b"{}]}]}",
            "the request holds 100,005 arrays and objects; expected one input of at most 8 rows",
        ),
        (
            b'{"inputs": [{"data": [' + b"1," * 100_000 + b"1]}]}",
            "the request holds about 100,000 values; adder takes at most 8 x 2 = 16 per request",
        ),
    ],
)
def test_json_bigger_than_a_full_batch_is_refused_before_parsing(manifest, header, message):
    assert fails(400, p.check_json_budget, header, _target(manifest, "adder")) == message


def test_the_json_budget_is_a_full_batch_and_a_margin(manifest):
    target = _target(manifest, "adder")  # 8 rows of 2: 16 values, 2 * 8 + 1024 arrays and objects
    p.check_json_budget(json.dumps(_req([[1, 2]] * 8, shape=(8, 2))).encode(), target)
    p.check_json_budget(b"[" * 520 + b"{" * 520, target)  # 1040 is the most
    assert fails(400, p.check_json_budget, b"[" * 521 + b"{" * 520, target).startswith("the request holds 1,041 arrays")
    p.check_json_budget(b"," * 1040, target)  # 16 + 1024
    assert fails(400, p.check_json_budget, b"," * 1041, target).startswith("the request holds about 1,041 values")


# ---- the format a request asks for -------------------------------------------------------------------


def test_a_bare_name_may_pick_another_format_and_a_triton_name_may_not(manifest):
    bare = _target(manifest, "adder")
    fixed = _target(manifest, "adder_torchscript")
    assert p.requested_format({}, bare) == "onnx"
    assert p.requested_format({"parameters": {}}, bare) == "onnx"
    assert p.requested_format({"parameters": {"format": "onnx"}}, bare) == "onnx"
    assert p.requested_format({"parameters": {"format": "pt2"}}, bare) == "pt2"
    assert p.requested_format({"parameters": {"format": "eager"}}, bare) == "eager"
    assert p.requested_format({"parameters": {"format": "torchscript"}}, fixed) == "torchscript"
    assert p.requested_format({}, fixed) == "torchscript"
    assert fails(400, p.requested_format, {"parameters": {"format": "onnx"}}, fixed) == (
        "model 'adder_torchscript' serves the torchscript artifact only; ask 'adder' for parameters.format 'onnx'"
    )
    assert fails(400, p.requested_format, {"parameters": {"format": "tflite"}}, bare) == (
        f"parameters.format 'tflite' is not one of: {', '.join(formats.FORMATS)}"
    )


# ---- the input -------------------------------------------------------------------------------------------


def test_json_data_flat_or_nested_gives_a_float32_batch(manifest):
    target = _target(manifest, "adder")
    for data in ([10, 11.5, -1, 2], [[10, 11.5], [-1, 2]], [[10], [11.5, [-1]], 2]):
        batch = p.input_batch(_req(data, shape=(2, 2)), target, b"")
        assert batch.dtype == np.float32 and batch.flags.c_contiguous and batch.tolist() == [[10, 11.5], [-1, 2]]
    assert p.input_batch(_req([1, 2], name="x__0"), _target(manifest, "adder_torchscript"), b"").tolist() == [[1, 2]]
    top = float(np.finfo(np.float32).max)  # the largest float32 is accepted, both signs
    assert p.input_batch(_req([top, -top]), target, b"").tolist() == [[top, -top]]
    empty_params = _req([1, 2], parameters=None)
    assert p.input_batch(empty_params, target, b"").tolist() == [[1, 2]]


def test_binary_data_gives_the_same_batch_from_little_endian_float32(manifest):
    target = _target(manifest, "adder")
    values = np.array([[1.5, -2], [3, 4e-3]], dtype="<f4")
    req = _req(shape=(2, 2), parameters={"binary_data_size": 16})
    batch = p.input_batch(req, target, values.tobytes())
    assert batch.dtype == np.float32 and batch.dtype.isnative and batch.flags.c_contiguous
    np.testing.assert_array_equal(batch, values)


def test_the_batch_may_be_one_to_the_maximum(manifest):
    target = _target(manifest, "adder")
    assert p.input_batch(_req([0] * 16, shape=(8, 2)), target, b"").shape == (8, 2)
    assert p.input_batch(_req([0] * 2, shape=(1, 2)), target, b"").shape == (1, 2)


def test_data_nested_nine_lists_deep_is_read_and_ten_is_refused(manifest):
    target = _target(manifest, "adder")
    deep: list = [1, 2]
    for _ in range(8):
        deep = [deep]
    assert p.input_batch(_req(deep), target, b"").tolist() == [[1, 2]]  # nine levels of lists are read
    assert fails(400, p.input_batch, _req([deep]), target, b"") == f"{WHERE}: 'data' is nested too deeply"


WHERE = "input 'x' of adder"
RANGE = f"{WHERE}: a value is beyond FP32's range (about 3.4e38)"
BAD_INPUTS = [  # (request, binary, message)
    ({}, b"", "the request has no 'inputs' list; adder takes input 'x'"),
    ({"inputs": []}, b"", "the request has no 'inputs' list; adder takes input 'x'"),
    ({"inputs": {"name": "x"}}, b"", "the request has no 'inputs' list; adder takes input 'x'"),
    ({"inputs": [_req([1, 2])["inputs"][0]] * 2}, b"", "adder takes exactly one input, 'x'; got 2"),
    ({"inputs": ["x"]}, b"", "adder takes exactly one input, 'x'; got 1"),
    (_req([1, 2], name="x__0"), b"", "unexpected input 'x__0' for model 'adder'; expected 'x'"),
    ({"inputs": [{"shape": [1, 2], "datatype": "FP32"}]}, b"", "unexpected input None for model 'adder'; expected 'x'"),
    (_req([1, 2], datatype="FP64"), b"", f"{WHERE} has datatype 'FP64'; expected 'FP32'"),
    ({"inputs": [{"name": "x", "shape": [1, 2], "data": [1, 2]}]}, b"", f"{WHERE} has datatype None; expected 'FP32'"),
    (_req([1, 2], shape=(2,)), b"", f"{WHERE} has shape [2]; expected [batch, 2]"),
    (_req([1, 2], shape=(1, 1, 2)), b"", f"{WHERE} has shape [1, 1, 2]; expected [batch, 2]"),
    (_req([1, 2], shape=(1.0, 2)), b"", f"{WHERE} has shape [1.0, 2]; expected [batch, 2]"),
    (_req([1, 2], shape=(True, 2)), b"", f"{WHERE} has shape [True, 2]; expected [batch, 2]"),
    (_req([1, 2], shape=(1, True)), b"", f"{WHERE} has shape [1, True]; expected [batch, 2]"),
    (
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": "1,2"}]},
        b"",
        f"{WHERE} has shape '1,2'; expected [batch, 2]",
    ),
    ({"inputs": [{"name": "x", "datatype": "FP32"}]}, b"", f"{WHERE} has shape None; expected [batch, 2]"),
    (
        _req([1, 2, 3], shape=(1, 3)),
        b"",
        f"{WHERE} has shape [1, 3]; expected [batch, 2] with batch from 1 to 8 (adder takes 2 features per example)",
    ),
    (
        _req([], shape=(0, 2)),
        b"",
        f"{WHERE} has shape [0, 2]; expected [batch, 2] with batch from 1 to 8 (adder takes 2 features per example)",
    ),
    (
        _req([1.0] * 18, shape=(9, 2)),
        b"",
        f"{WHERE} has shape [9, 2]; expected [batch, 2] with batch from 1 to 8 (adder takes 2 features per example)",
    ),
    (_req([1, 2], parameters=[1]), b"", f"{WHERE}: 'parameters' must be a JSON object"),
    (_req(), b"", f"{WHERE} has no 'data'"),
    (
        _req([1, 2]),
        b"\x00" * 8,
        "8 bytes of binary data follow the JSON header, but no input declares parameters.binary_data_size",
    ),
    (_req([1, 2, 3]), b"", f"{WHERE} has 3 values in 'data'; shape [1, 2] needs 2"),
    (_req([1]), b"", f"{WHERE} has 1 values in 'data'; shape [1, 2] needs 2"),
    (_req([1, 2, 3], shape=(2, 2)), b"", f"{WHERE} has 3 values in 'data'; shape [2, 2] needs 4"),
    (_req("1 2"), b"", f"{WHERE}: 'data' must be a JSON array of numbers"),
    (_req({"a": 1}), b"", f"{WHERE}: 'data' must be a JSON array of numbers"),
    (_req([1, "2"]), b"", f"{WHERE}: 'data' holds \"2\", which is not a number (datatype FP32)"),
    (_req([1, True]), b"", f"{WHERE}: 'data' holds true, which is not a number (datatype FP32)"),
    (_req([1, None]), b"", f"{WHERE}: 'data' holds null, which is not a number (datatype FP32)"),
    (_req([[1], {"a": 2}]), b"", f"{WHERE}: 'data' holds {{\"a\": 2}}, which is not a number (datatype FP32)"),
    (_req([1, "x" * 40]), b"", f"{WHERE}: 'data' holds \"{'x' * 19}, which is not a number (datatype FP32)"),
    (_req([1, 1e39]), b"", RANGE),
    (_req([1, -1e39]), b"", RANGE),
    (_req([1, -(10**39)]), b"", RANGE),
    (_req([1, 10**400]), b"", RANGE),
    (_req([float("-inf"), 1]), b"", RANGE),
    (_req([1, float("nan")]), b"", f"{WHERE} holds NaN or infinity; expected finite numbers"),
    (
        _req(parameters={"binary_data_size": 4}),
        b"\x00" * 4,
        f"{WHERE}: binary_data_size is 4 with 4 bytes of binary data; expected 8 bytes (2 FP32 values)",
    ),
    (
        _req(parameters={"binary_data_size": 8}),
        b"\x00" * 4,
        f"{WHERE}: binary_data_size is 8 with 4 bytes of binary data; expected 8 bytes (2 FP32 values)",
    ),
    (
        _req(parameters={"binary_data_size": 8}),
        b"\x00" * 12,
        f"{WHERE}: binary_data_size is 8 with 12 bytes of binary data; expected 8 bytes (2 FP32 values)",
    ),
    (
        _req(parameters={"binary_data_size": "8"}),
        b"\x00" * 8,
        f"{WHERE}: binary_data_size is '8' with 8 bytes of binary data; expected 8 bytes (2 FP32 values)",
    ),
    (
        _req(parameters={"binary_data_size": 8}),
        np.array([1, np.nan], dtype="<f4").tobytes(),
        f"{WHERE} holds NaN or infinity; expected finite numbers",
    ),
    (
        _req(parameters={"binary_data_size": 8}),
        np.array([np.inf, 1], dtype="<f4").tobytes(),
        f"{WHERE} holds NaN or infinity; expected finite numbers",
    ),
]


@pytest.mark.parametrize(("req", "binary", "message"), BAD_INPUTS)
def test_each_malformed_input_is_a_400_naming_what_was_expected(manifest, req, binary, message):
    assert fails(400, p.input_batch, req, _target(manifest, "adder"), binary) == message


# ---- several inputs, INT64 -------------------------------------------------------------------------------

TOKENS = {"name": "tokens", "datatype": "INT64", "shape": [2, 3], "data": [[1, 2, 3], [4, 5, 9]]}
MASK = {"name": "mask", "datatype": "FP32", "shape": [2, 2], "data": [0.5, 1, 0, 1]}


def test_a_two_input_model_gets_each_input_by_its_manifest_name_in_any_order(manifest):
    target = _target(manifest, "pair")
    for inputs in ([TOKENS, MASK], [MASK, TOKENS]):
        batch = p.input_batch({"inputs": inputs}, target, b"")
        assert list(batch) == ["tokens", "mask"]
        assert batch["tokens"].dtype == np.int64 and batch["tokens"].tolist() == [[1, 2, 3], [4, 5, 9]]
        assert batch["mask"].dtype == np.float32 and batch["mask"].tolist() == [[0.5, 1], [0, 1]]
    script = _target(manifest, "pair_torchscript")  # Triton's positional names in, the manifest's names out
    renamed = [{**TOKENS, "name": "tokens__0"}, {**MASK, "name": "mask__1"}]
    assert list(p.input_batch({"inputs": renamed}, script, b"")) == ["tokens", "mask"]
    whole = {**TOKENS, "data": [1.0, 2.0, 3.0, 4.0, 5.0, 9.0]}  # floats that are whole numbers are taken
    assert p.input_batch({"inputs": [whole, MASK]}, target, b"")["tokens"].tolist() == [[1, 2, 3], [4, 5, 9]]


def test_binary_tensors_follow_the_header_in_the_order_the_inputs_are_listed(manifest):
    target = _target(manifest, "pair")
    tokens = np.array([[0, 1, 2], [7, 8, 9]], dtype="<i8")
    mask = np.array([[1, 0], [0.25, 1]], dtype="<f4")
    inputs = [
        {"name": "mask", "datatype": "FP32", "shape": [2, 2], "parameters": {"binary_data_size": 16}},
        {"name": "tokens", "datatype": "INT64", "shape": [2, 3], "parameters": {"binary_data_size": 48}},
    ]
    batch = p.input_batch({"inputs": inputs}, target, mask.tobytes() + tokens.tobytes())
    assert batch["tokens"].dtype == np.int64 and batch["tokens"].dtype.isnative
    assert batch["tokens"].tolist() == tokens.tolist() and batch["mask"].tolist() == mask.tolist()
    mixed = [inputs[0], TOKENS]  # one binary, one JSON
    assert p.input_batch({"inputs": mixed}, target, mask.tobytes())["mask"].tolist() == mask.tolist()
    short = [inputs[0], {**inputs[1], "parameters": {"binary_data_size": 48}}]
    where = "input 'tokens' of pair"
    assert fails(400, p.input_batch, {"inputs": short}, target, mask.tobytes() + tokens.tobytes()[:40]) == (
        f"{where}: binary_data_size is 48 with 40 bytes of binary data; expected 48 bytes (6 INT64 values)"
    )
    too_short = [inputs[0], TOKENS]  # a binary input before a JSON one, with fewer bytes than it declares
    assert fails(400, p.input_batch, {"inputs": too_short}, target, mask.tobytes()[:8]) == (
        "input 'mask' of pair: binary_data_size is 16 with 8 bytes of binary data; expected 16 bytes (4 FP32 values)"
    )
    first = [{**inputs[0], "parameters": {"binary_data_size": 16}}, TOKENS]  # bytes left over after the last
    assert fails(400, p.input_batch, {"inputs": first}, target, mask.tobytes() + b"\x00" * 8) == (
        "8 bytes of binary data are left after the inputs' binary_data_size (16 bytes); expected exactly 16 bytes"
    )


PAIR = "input 'tokens' of pair"
BAD_PAIRS = [  # (inputs, message)
    ([], "the request has no 'inputs' list; pair takes input 'tokens', 'mask'"),
    ([TOKENS], "pair takes 2 inputs, 'tokens', 'mask'; got 1"),
    ([TOKENS, MASK, MASK], "pair takes 2 inputs, 'tokens', 'mask'; got 3"),
    ([TOKENS, "mask"], "pair takes 2 inputs, 'tokens', 'mask'; got 2"),
    ([TOKENS, {**MASK, "name": "m"}], "unexpected input 'm' for model 'pair'; expected \"'tokens' and 'mask'\""),
    ([{**TOKENS, "datatype": "FP32"}, MASK], f"{PAIR} has datatype 'FP32'; expected 'INT64'"),
    (
        [{**TOKENS, "shape": [2, 2]}, MASK],
        f"{PAIR} has shape [2, 2]; expected [batch, 3] with batch from 1 to 8 (pair takes 3 features per example)",
    ),
    (
        [{**TOKENS, "data": [1, 2, 3, 4, 5, 6.5]}, MASK],
        f"{PAIR}: 'data' holds a value that is not a whole number (datatype INT64)",
    ),
    ([{**TOKENS, "data": [1, 2, 3, 4, 5, 2**63]}, MASK], f"{PAIR}: a value is beyond INT64's range"),
    (
        [{**TOKENS, "data": [1, 2, 3, 4, 5, "6"]}, MASK],
        f"{PAIR}: 'data' holds \"6\", which is not a number (datatype INT64)",
    ),
    ([{**TOKENS, "data": [1, 2, 3, 4, 5, 10]}, MASK], f"{PAIR} holds a value outside [0, 10)"),
    ([{**TOKENS, "data": [-1, 2, 3, 4, 5, 6]}, MASK], f"{PAIR} holds a value outside [0, 10)"),
    ([{**TOKENS, "shape": [1, 3], "data": [1, 2, 3]}, MASK], "the inputs of pair have different batch sizes"),
]


@pytest.mark.parametrize(("inputs", "message"), BAD_PAIRS)
def test_each_malformed_input_of_a_two_input_model_is_a_400(manifest, inputs, message):
    assert fails(400, p.input_batch, {"inputs": inputs}, _target(manifest, "pair"), b"") == message


def test_a_model_whose_inputs_have_shapes_names_the_shape_it_takes():
    raw = {
        "models": {
            "img": {
                "inputs": [{"name": "pixels", "shape": ["batch", 2, 3], "dtype": "float32", "features": []}],
                "outputs": [_tensor("y", 1)],
                "examples": [],
                "artifacts": [{"format": "onnx", "path": "m/onnx", "sha256": "0" * 64, "bytes": 1}],
            }
        }
    }
    target = _target(Manifest.from_dict(Path("/nonexistent"), raw), "img")
    req = {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 3, 2], "data": [0] * 6}]}
    assert fails(400, p.input_batch, req, target, b"") == (
        "input 'pixels' of img has shape [1, 3, 2]; expected [batch, 2, 3] with batch from 1 to 8 "
        "(img takes shape [2, 3] per example)"
    )
    req["inputs"][0]["shape"] = [1, 2, 3]
    assert p.input_batch(req, target, b"").shape == (1, 2, 3)


# ---- the outputs ---------------------------------------------------------------------------------------


def test_without_outputs_every_output_comes_back_in_order(manifest):
    target = _target(manifest, "adder")
    assert p.requested_outputs({}, target) == [(0, "sum", False), (1, "hidden", False)]
    assert p.requested_outputs({"outputs": []}, target) == [(0, "sum", False), (1, "hidden", False)]  # as Triton
    assert p.requested_outputs(
        {"parameters": {"binary_data_output": True}}, _target(manifest, "adder_torchscript")
    ) == [
        (0, "sum__0", True),
        (1, "hidden__1", True),
    ]


def test_outputs_asked_for_come_back_in_the_order_asked_with_their_own_binary_choice(manifest):
    target = _target(manifest, "adder")
    req = {"outputs": [{"name": "hidden", "parameters": {"binary_data": True}}, {"name": "sum"}]}
    assert p.requested_outputs(req, target) == [(1, "hidden", True), (0, "sum", False)]
    req = {"parameters": {"binary_data_output": True}, "outputs": [{"name": "sum", "parameters": None}]}
    assert p.requested_outputs(req, target) == [(0, "sum", True)]
    req = {
        "parameters": {"binary_data_output": True},
        "outputs": [{"name": "sum", "parameters": {"binary_data": False}}],
    }
    assert p.requested_outputs(req, target) == [(0, "sum", False)]
    req = {"outputs": [{"name": "sum", "parameters": {"classification": 0, "binary_data": False}}]}
    assert p.requested_outputs(req, target) == [(0, "sum", False)]


@pytest.mark.parametrize(
    ("req", "message"),
    [
        ({"parameters": {"binary_data_output": 1}}, "parameters.binary_data_output must be true or false"),
        ({"parameters": {"binary_data_output": "yes"}}, "parameters.binary_data_output must be true or false"),
        ({"outputs": {"name": "sum"}}, "'outputs' must be a list of objects with a 'name'"),
        ({"outputs": ["sum"]}, "'outputs' must be a list of objects with a 'name'"),
        ({"outputs": [{"name": "sum"}, "hidden"]}, "'outputs' must be a list of objects with a 'name'"),
        ({"outputs": [{"name": "y"}]}, "unknown output 'y' for model 'adder'; expected one of: sum, hidden"),
        ({"outputs": [{}]}, "unknown output None for model 'adder'; expected one of: sum, hidden"),
        ({"outputs": [{"name": "sum"}, {"name": "sum"}]}, "output 'sum' is requested twice"),
        ({"outputs": [{"name": "sum", "parameters": [1]}]}, "output 'sum': 'parameters' must be a JSON object"),
        (
            {"outputs": [{"name": "sum", "parameters": {"classification": 2}}]},
            "output 'sum': the classification extension is not supported",
        ),
        (
            {"outputs": [{"name": "sum", "parameters": {"binary_data": "yes"}}]},
            "output 'sum': parameters.binary_data must be true or false",
        ),
        (
            {"outputs": [{"name": "sum", "parameters": {"binary_data": 1}}]},
            "output 'sum': parameters.binary_data must be true or false",
        ),
    ],
)
def test_bad_output_requests_are_400(manifest, req, message):
    assert fails(400, p.requested_outputs, req, _target(manifest, "adder")) == message


# ---- the reply -----------------------------------------------------------------------------------------

OUTS = [np.array([[21.0], [3.0]], dtype=np.float32), np.array([[1.0, 0.5, -0.5], [0.0, 2.0, 3.0]], np.float32)]


def test_a_json_reply_names_the_model_each_output_its_shape_and_values(manifest):
    target = _target(manifest, "adder")
    body, header_length = p.encode_reply({"id": "r1"}, target, OUTS, [(1, "hidden", False), (0, "sum", False)])
    assert header_length is None
    assert b" " not in body  # compact JSON: the header of every binary reply is as small as it can be
    assert json.loads(body) == {
        "model_name": "adder",
        "model_version": "1",
        "id": "r1",
        "outputs": [
            {"name": "hidden", "datatype": "FP32", "shape": [2, 3], "data": [1.0, 0.5, -0.5, 0.0, 2.0, 3.0]},
            {"name": "sum", "datatype": "FP32", "shape": [2, 1], "data": [21.0, 3.0]},
        ],
    }
    body, _ = p.encode_reply({"id": 7}, _target(manifest, "adder_torchscript"), OUTS, [(0, "sum__0", False)])
    assert "id" not in json.loads(body)  # only a string id is echoed


def test_a_binary_reply_puts_the_tensors_after_the_json_header(manifest):
    target = _target(manifest, "adder_torchscript")
    body, n = p.encode_reply({}, target, OUTS, [(0, "sum__0", True), (1, "hidden__1", False)])
    header = json.loads(body[:n])
    assert header == {
        "model_name": "adder_torchscript",
        "model_version": "1",
        "outputs": [
            {"name": "sum__0", "datatype": "FP32", "shape": [2, 1], "parameters": {"binary_data_size": 8}},
            {"name": "hidden__1", "datatype": "FP32", "shape": [2, 3], "data": [1.0, 0.5, -0.5, 0.0, 2.0, 3.0]},
        ],
    }
    assert np.frombuffer(body[n:], dtype="<f4").tolist() == [21.0, 3.0]
    body, n = p.encode_reply({}, target, OUTS, [(1, "hidden__1", True), (0, "sum__0", True)])
    assert json.loads(body[:n])["outputs"][1]["parameters"] == {"binary_data_size": 8}
    assert np.frombuffer(body[n:], dtype="<f4").tolist() == [1.0, 0.5, -0.5, 0.0, 2.0, 3.0, 21.0, 3.0]


def test_a_binary_reply_is_little_endian_of_the_declared_datatype_whatever_the_runtime_gave(manifest):
    body, n = p.encode_reply(
        {}, _target(manifest, "adder"), [np.array([[21.0], [3.0]], dtype=">f8")], [(0, "sum", True)]
    )
    assert len(body) - n == 8 and np.frombuffer(body[n:], dtype="<f4").tolist() == [21.0, 3.0]
    outs = [np.zeros((1, 2), np.float32), np.array([[2**40]], dtype=">i8")]
    body, n = p.encode_reply({}, _target(manifest, "pair"), outs, [(1, "ids", True), (0, "logits", False)])
    assert json.loads(body[:n])["outputs"] == [
        {"name": "ids", "datatype": "INT64", "shape": [1, 1], "parameters": {"binary_data_size": 8}},
        {"name": "logits", "datatype": "FP32", "shape": [1, 2], "data": [0.0, 0.0]},
    ]
    assert np.frombuffer(body[n:], dtype="<i8").tolist() == [2**40]


# ---- a whole request -------------------------------------------------------------------------------------


def test_a_whole_request_is_read_in_order_each_step_bounded(manifest):
    target = _target(manifest, "adder")
    header = json.dumps(
        {
            "id": "a",
            "parameters": {"format": "pt2", "binary_data_output": True},
            "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}],
            "outputs": [{"name": "hidden"}],
        }
    ).encode()
    values = np.array([[3, 4]], dtype="<f4")
    body = gzip.compress(header + values.tobytes())
    got = p.read_request(body, "gzip", str(len(header)), target, LIMIT)
    assert (got.request["id"], got.format, got.outputs) == ("a", "pt2", [(1, "hidden", True)])
    assert got.batch.tolist() == [[3, 4]]
    assert fails(413, p.read_request, body, "gzip", str(len(header)), target, 10).startswith("the decompressed")
    big = b'{"inputs": [{"data": [' + b"1," * 2000 + b"1]}]}"
    assert fails(400, p.read_request, big, None, None, target, LIMIT).startswith("the request holds about 2,000 values")
