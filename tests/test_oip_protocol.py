"""The Open Inference Protocol codec alone: bytes and JSON to arrays and back, without a server or models.

Each malformed request is pinned with its status and message; what is accepted reads back exactly.
Fast: no artifacts, no predictors (the routes over HTTP are in test_oip.py).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from pipeline import oip as protocol
from pipeline.manifest import Manifest
from pipeline.oip import HEADER_LENGTH, OIPError, Target

OUT_SPECS = [
    {"name": "sum", "shape": ["batch", 1], "dtype": "float32", "features": ["sum"]},
    {"name": "hidden", "shape": ["batch", 3], "dtype": "float32", "features": ["h0", "h1", "h2"]},
]


def model_entry():
    raw = {
        "inputs": [{"name": "x", "shape": ["batch", 2], "dtype": "float32", "features": ["x1", "x2"]}],
        "outputs": OUT_SPECS,
        "examples": [[10.0, 11.0]],
        "artifacts": [],
    }
    return Manifest.from_dict(Path("."), {"models": {"adder": raw}}).model("adder")


ENTRY = model_entry()
BARE = Target("adder", ENTRY, "onnx", False, ["x"], ["sum", "hidden"])  # the manifest's tensor names
TRITON = Target("adder_torchscript", ENTRY, "torchscript", True, ["x__0"], ["sum__0", "hidden__1"])


def fails(status: int, call, *args) -> str:
    """The message of the OIPError `call(*args)` raises, after checking its status."""
    with pytest.raises(OIPError) as info:
        call(*args)
    assert info.value.status == status, info.value.message
    assert info.value.message == str(info.value) and "\n" not in info.value.message
    return info.value.message


def tensor(data=None, shape=(1, 2), name="x", datatype="FP32", **extra) -> dict:
    t = {"name": name, "shape": list(shape), "datatype": datatype, **extra}
    if data is not None:
        t["data"] = data
    return {"inputs": [t]}


# ---- the body: encoding, header and binary parts, JSON ---------------------------------------------


def test_identity_and_no_encoding_pass_the_body_through():
    assert protocol._decode(b"abc", None, 10) == b"abc"
    assert protocol._decode(b"abc", " Identity ", 10) == b"abc"
    assert protocol._decode(b"x" * 50, "identity", 10) == b"x" * 50  # the raw size was checked on reading


@pytest.mark.parametrize("encoding", ["gzip", "deflate", " GZIP "])
def test_gzip_and_deflate_bodies_are_inflated(encoding):
    body = json.dumps(tensor([1, 2])).encode()
    packed = gzip.compress(body) if "gzip" in encoding.lower() else zlib.compress(body)
    assert protocol._decode(packed, encoding, len(body)) == body


def test_inflating_stops_at_the_limit():
    bomb = gzip.compress(b" " * 100_000)
    message = fails(413, protocol._decode, bomb, "gzip", 1000)
    assert message == "the decompressed request body is over the limit of 1,000 bytes"
    assert protocol._decode(gzip.compress(b"a" * 1000), "gzip", 1000) == b"a" * 1000  # exactly at the limit


def test_a_compressed_bomb_is_stopped_without_inflating_it():
    import tracemalloc

    bomb = gzip.compress(b"\0" * 20_000_000)  # about 20 KB on the wire, 20 MB inflated
    tracemalloc.start()
    try:
        with pytest.raises(OIPError) as info:
            protocol._decode(bomb, "gzip", 1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.status == 413 and peak < 1_000_000, peak


def test_bad_encodings_are_refused():
    assert (
        fails(400, protocol._decode, b"abc", "br", 10)
        == "unsupported Content-Encoding 'br'; expected gzip, deflate or none"
    )
    assert fails(400, protocol._decode, b"not gzip", "gzip", 100).startswith("the body is not valid gzip data (")
    truncated = gzip.compress(b"hello world" * 10)[:-12]
    assert fails(400, protocol._decode, truncated, "deflate", 1000) == "the deflate body is truncated"


def test_header_and_binary_parts_are_split_at_the_declared_length():
    assert protocol._split(b'{"a":1}', None) == (b'{"a":1}', b"")
    assert protocol._split(b'{"a":1}\x00\x01', "7") == (b'{"a":1}', b"\x00\x01")
    assert protocol._split(b'{"a":1}', " 7 ") == (b'{"a":1}', b"")  # the whole body is the header
    assert protocol._split(b"ab", "1") == (b"a", b"b")


@pytest.mark.parametrize("length", ["0", "8", "-1", "x", "", "1.5"])
def test_a_header_length_outside_the_body_is_refused(length):
    message = fails(400, protocol._split, b'{"a":1}', length)
    assert message == f"{HEADER_LENGTH} is {length!r}; expected the JSON header's size, 1 to 7 bytes"


def test_json_requests_are_objects_of_real_numbers():
    assert protocol._parse_json(b'{"inputs": [], "parameters": {"a": 1}}') == {"inputs": [], "parameters": {"a": 1}}
    assert protocol._parse_json(b'{"inputs": []}') == {"inputs": []}
    for empty in (b"", b"  \n"):
        assert fails(400, protocol._parse_json, empty) == "the request body is empty; expected a JSON inference request"
    for constant in (b'{"data": [NaN]}', b'{"data": [Infinity]}', b'{"data": [-Infinity]}'):
        assert fails(400, protocol._parse_json, constant).startswith("the request is not valid JSON (")
    assert "is not a JSON number" in fails(400, protocol._parse_json, b'{"data": [NaN]}')
    huge = b'{"a": ' + b"7" * 5000 + b"}"  # Python's refusal of a 5000-digit integer is a long sentence
    try:
        json.loads(huge)
    except ValueError as exc:
        reason = str(exc)
    assert len(reason) > 120
    assert fails(400, protocol._parse_json, huge) == f"the request is not valid JSON ({reason[:120]})"
    assert fails(400, protocol._parse_json, b"[" * 100_000).startswith("the request is not valid JSON (")
    for other in (b"[1, 2]", b'"x"', b"3"):
        assert (
            fails(400, protocol._parse_json, other)
            == "the inference request must be a JSON object with an 'inputs' list"
        )
    assert fails(400, protocol._parse_json, b'{"parameters": []}') == "'parameters' must be a JSON object"


class FakeRequest:
    def __init__(self, chunks, headers):
        self._chunks, self.headers = chunks, headers

    async def stream(self):
        for chunk in self._chunks:
            yield chunk


def read(chunks, headers=None, limit=10):
    return asyncio.run(protocol._read_body(FakeRequest(chunks, headers or {}), limit))


def test_the_body_is_read_whole_up_to_the_limit():
    assert read([b"abc", b"def"]) == b"abcdef"
    assert read([b"a" * 10], {"content-length": "10"}) == b"a" * 10
    assert read([]) == b""


def test_bodies_over_the_limit_are_refused_by_declared_or_counted_size():
    with pytest.raises(OIPError) as info:
        read([b"a"], {"content-length": "11"})
    assert (info.value.status, info.value.message) == (413, "request body of 11 bytes is over the limit of 10 bytes")
    with pytest.raises(OIPError) as info:
        read([b"abcdef", b"ghijk"])  # 11 bytes with no length declared
    assert (info.value.status, info.value.message) == (413, "request body is over the limit of 10 bytes")
    with pytest.raises(OIPError) as info:
        read([b"a"], {"content-length": "-1"})
    assert (info.value.status, info.value.message) == (400, "invalid Content-Length '-1'")
    with pytest.raises(OIPError) as info:
        asyncio.run(protocol._read_body(FakeRequest([b"a" * 2000], {"content-length": "2000"}), 1999))
    assert info.value.message == "request body of 2,000 bytes is over the limit of 1,999 bytes"


# ---- the format a request asks for -------------------------------------------------------------------


def test_the_format_is_the_targets_unless_the_bare_name_asks_for_another():
    assert protocol._format({}, BARE) == "onnx"
    assert protocol._format({"parameters": {"format": "onnx"}}, BARE) == "onnx"
    assert protocol._format({"parameters": {"format": "pt2"}}, BARE) == "pt2"
    assert protocol._format({"parameters": {"format": "eager"}}, BARE) == "eager"
    assert protocol._format({"parameters": {"format": "torchscript"}}, TRITON) == "torchscript"
    assert (
        fails(400, protocol._format, {"parameters": {"format": "tflite"}}, BARE)
        == "parameters.format 'tflite' is not one of: torchscript, onnx, pt2, eager"
    )
    assert fails(400, protocol._format, {"parameters": {"format": "onnx"}}, TRITON) == (
        "model 'adder_torchscript' serves the torchscript artifact only; ask 'adder' for parameters.format 'onnx'"
    )


# ---- the input tensor --------------------------------------------------------------------------------


def test_json_data_flat_or_nested_becomes_a_float32_batch():
    for data in ([10, 11.5, -1, 2], [[10, 11.5], [-1, 2]], [[10], [11.5, [-1]], 2]):
        arr = protocol._input(tensor(data, shape=(2, 2)), BARE, b"", 8)
        assert arr.dtype == np.float32 and arr.flags["C_CONTIGUOUS"] and arr.tolist() == [[10, 11.5], [-1, 2]]
    arr = protocol._input(tensor([1, 2], name="x__0"), TRITON, b"", 8)
    assert arr.tolist() == [[1, 2]]
    top = float(np.finfo(np.float32).max)  # the largest float32 is accepted, both signs
    assert protocol._input(tensor([top, -top]), BARE, b"", 8).tolist() == [[top, -top]]


def test_binary_data_is_read_as_little_endian_float32():
    values = np.array([[1.5, -2.0], [3.0, 4.25]], dtype="<f4")
    req = tensor(shape=(2, 2), parameters={"binary_data_size": 16})
    arr = protocol._input(req, BARE, values.tobytes(), 8)
    assert arr.dtype == np.float32 and arr.flags["C_CONTIGUOUS"] and arr.tolist() == values.tolist()


def test_the_batch_may_be_one_to_the_maximum():
    assert protocol._input(tensor([0] * 16, shape=(8, 2)), BARE, b"", 8).shape == (8, 2)
    assert "batch from 1 to 8" in fails(400, protocol._input, tensor([0] * 18, shape=(9, 2)), BARE, b"", 8)
    assert "batch from 1 to 8" in fails(400, protocol._input, tensor([], shape=(0, 2)), BARE, b"", 8)


WHERE = "input 'x' of adder"
BAD_INPUTS = [
    # (request, binary, message)
    ({}, b"", "the request has no 'inputs' list; adder takes input 'x'"),
    ({"inputs": []}, b"", "the request has no 'inputs' list; adder takes input 'x'"),
    ({"inputs": {"name": "x"}}, b"", "the request has no 'inputs' list; adder takes input 'x'"),
    ({"inputs": [tensor([1, 2])["inputs"][0]] * 2}, b"", "adder takes exactly one input, 'x'; got 2"),
    ({"inputs": ["x"]}, b"", "adder takes exactly one input, 'x'; got 1"),
    (tensor([1, 2], name="x__0"), b"", "unexpected input 'x__0' for model 'adder'; expected 'x'"),
    (tensor([1, 2], datatype="FP64"), b"", f"{WHERE} has datatype 'FP64'; expected 'FP32'"),
    ({"inputs": [{"name": "x", "shape": [1, 2], "data": [1, 2]}]}, b"", f"{WHERE} has datatype None; expected 'FP32'"),
    (tensor([1, 2], shape=(2,)), b"", f"{WHERE} has shape [2]; expected [batch, 2]"),
    (tensor([1, 2], shape=(1, 1, 2)), b"", f"{WHERE} has shape [1, 1, 2]; expected [batch, 2]"),
    (tensor([1, 2], shape=(1.0, 2)), b"", f"{WHERE} has shape [1.0, 2]; expected [batch, 2]"),
    (tensor([1, 2], shape=(True, 2)), b"", f"{WHERE} has shape [True, 2]; expected [batch, 2]"),
    (
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": "1,2"}]},
        b"",
        f"{WHERE} has shape '1,2'; expected [batch, 2]",
    ),
    (
        tensor([1, 2, 3], shape=(1, 3)),
        b"",
        f"{WHERE} has shape [1, 3]; expected [batch, 2] with batch from 1 to 8 (adder takes 2 features per example)",
    ),
    (tensor([1, 2], parameters=[1]), b"", f"{WHERE}: 'parameters' must be a JSON object"),
    (tensor(), b"", f"{WHERE} has no 'data'"),
    (
        tensor([1, 2]),
        b"\x00" * 8,
        "8 bytes of binary data follow the JSON header, but no input declares parameters.binary_data_size",
    ),
    (tensor([1, 2, 3]), b"", f"{WHERE} has 3 values in 'data'; shape [1, 2] needs 2"),
    (tensor([1]), b"", f"{WHERE} has 1 values in 'data'; shape [1, 2] needs 2"),
    (tensor("1 2"), b"", f"{WHERE}: 'data' must be a JSON array of numbers"),
    (tensor([1, "2"]), b"", f"{WHERE}: 'data' holds \"2\", which is not a number (datatype FP32)"),
    (tensor([1, True]), b"", f"{WHERE}: 'data' holds true, which is not a number (datatype FP32)"),
    (tensor([1, None]), b"", f"{WHERE}: 'data' holds null, which is not a number (datatype FP32)"),
    (tensor([[1], {"a": 2}]), b"", f"{WHERE}: 'data' holds {{\"a\": 2}}, which is not a number (datatype FP32)"),
    (tensor([1, "x" * 40]), b"", f"{WHERE}: 'data' holds \"{'x' * 19}, which is not a number (datatype FP32)"),
    (tensor([1, 1e39]), b"", f"{WHERE}: a value is beyond FP32's range (about 3.4e38)"),
    (tensor([1, -(10**39)]), b"", f"{WHERE}: a value is beyond FP32's range (about 3.4e38)"),
    (tensor([1, 10**400]), b"", f"{WHERE}: a value is beyond FP32's range (about 3.4e38)"),
    (tensor([1, float("nan")]), b"", f"{WHERE} holds NaN or infinity; expected finite numbers"),
    (tensor([float("-inf"), 1]), b"", f"{WHERE}: a value is beyond FP32's range (about 3.4e38)"),
    (
        tensor(parameters={"binary_data_size": 4}),
        b"\x00" * 4,
        f"{WHERE}: binary_data_size is 4 with 4 bytes of binary data; expected 8 bytes (2 FP32 values)",
    ),
    (
        tensor(parameters={"binary_data_size": 8}),
        b"\x00" * 12,
        f"{WHERE}: binary_data_size is 8 with 12 bytes of binary data; expected 8 bytes (2 FP32 values)",
    ),
    (
        tensor(parameters={"binary_data_size": "8"}),
        b"\x00" * 8,
        f"{WHERE}: binary_data_size is '8' with 8 bytes of binary data; expected 8 bytes (2 FP32 values)",
    ),
    (
        tensor(parameters={"binary_data_size": 8}),
        np.array([1, np.nan], dtype="<f4").tobytes(),
        f"{WHERE} holds NaN or infinity; expected finite numbers",
    ),
]


@pytest.mark.parametrize(("req", "binary", "message"), BAD_INPUTS)
def test_each_malformed_input_is_a_400_naming_what_was_expected(req, binary, message):
    assert fails(400, protocol._input, req, BARE, binary, 8) == message


def test_data_nested_ten_lists_deep_is_refused():
    deep: list = [1, 2]
    for _ in range(8):
        deep = [deep]
    assert protocol._input(tensor(deep), BARE, b"", 8).tolist() == [[1, 2]]  # nine levels of lists are read
    message = fails(400, protocol._input, tensor([deep]), BARE, b"", 8)
    assert message == f"{WHERE}: 'data' is nested too deeply"


# ---- the outputs asked for, and the reply ---------------------------------------------------------


def test_without_outputs_every_output_comes_back_in_order():
    assert protocol._outputs({}, BARE) == [(0, "sum", False), (1, "hidden", False)]
    assert protocol._outputs({"parameters": {"binary_data_output": True}}, TRITON) == [
        (0, "sum__0", True),
        (1, "hidden__1", True),
    ]


def test_outputs_asked_for_come_back_in_the_order_asked_with_their_own_binary_choice():
    req = {"outputs": [{"name": "hidden", "parameters": {"binary_data": True}}, {"name": "sum"}]}
    assert protocol._outputs(req, BARE) == [(1, "hidden", True), (0, "sum", False)]
    req = {"parameters": {"binary_data_output": True}, "outputs": [{"name": "sum", "parameters": None}]}
    assert protocol._outputs(req, BARE) == [(0, "sum", True)]
    req = {"outputs": [{"name": "sum", "parameters": {"classification": 0, "binary_data": False}}]}
    assert protocol._outputs(req, BARE) == [(0, "sum", False)]


@pytest.mark.parametrize(
    ("req", "message"),
    [
        ({"parameters": {"binary_data_output": 1}}, "parameters.binary_data_output must be true or false"),
        ({"outputs": {"name": "sum"}}, "'outputs' must be a list of objects with a 'name'"),
        ({"outputs": ["sum"]}, "'outputs' must be a list of objects with a 'name'"),
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
    ],
)
def test_bad_output_requests_are_400(req, message):
    assert fails(400, protocol._outputs, req, BARE) == message


OUTS = [np.array([[21.0], [3.0]], dtype=np.float32), np.array([[1.0, np.inf, -0.5], [0.0, 2.0, np.nan]], np.float32)]


def test_a_json_reply_names_the_model_each_output_its_shape_and_values():
    reply = protocol._reply({"id": "r1"}, BARE, OUTS, [(1, "hidden", False), (0, "sum", False)])
    assert reply.media_type == "application/json" and HEADER_LENGTH.lower() not in reply.headers
    assert b" " not in reply.body  # compact JSON: the header of every binary reply is as small as it can be
    assert json.loads(reply.body) == {
        "model_name": "adder",
        "model_version": "1",
        "id": "r1",
        "outputs": [
            # JSON has no infinity or NaN: they are null
            {"name": "hidden", "datatype": "FP32", "shape": [2, 3], "data": [1.0, None, -0.5, 0.0, 2.0, None]},
            {"name": "sum", "datatype": "FP32", "shape": [2, 1], "data": [21.0, 3.0]},
        ],
    }


def test_an_id_that_is_not_text_is_not_echoed():
    reply = protocol._reply({"id": 7}, TRITON, OUTS, [(0, "sum__0", False)])
    assert "id" not in json.loads(reply.body)


def test_a_binary_reply_puts_the_tensors_after_the_json_header():
    reply = protocol._reply({}, TRITON, OUTS, [(0, "sum__0", True), (1, "hidden__1", False)])
    body = reply.body
    n = int(reply.headers[HEADER_LENGTH])
    assert reply.media_type == "application/octet-stream"
    header = json.loads(body[:n])
    assert header["model_name"] == "adder_torchscript" and "id" not in header
    assert header["outputs"][0] == {
        "name": "sum__0",
        "datatype": "FP32",
        "shape": [2, 1],
        "parameters": {"binary_data_size": 8},
    }
    assert header["outputs"][1]["data"][:3] == [1.0, None, -0.5]
    assert np.frombuffer(body[n:], dtype="<f4").tolist() == [21.0, 3.0]


def test_a_binary_reply_is_little_endian_float32_whatever_the_runtime_gave():
    outs = [np.array([[21.0], [3.0]], dtype=">f8")]
    reply = protocol._reply({}, BARE, outs, [(0, "sum", True)])
    n = int(reply.headers[HEADER_LENGTH])
    assert len(reply.body) - n == 8 and np.frombuffer(reply.body[n:], dtype="<f4").tolist() == [21.0, 3.0]
