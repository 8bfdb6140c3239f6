"""The Open Inference Protocol (KServe v2) on the wire: bytes and JSON to arrays and back.

Pure functions over a manifest, with no web framework, so every rule is testable on its own;
pipeline/serving/oip.py puts them behind HTTP routes. A request is taken apart in the order it arrives:

    decode_body      Content-Encoding gzip or deflate, inflated up to a limit
    split_body       the JSON header and Triton's binary tensor data (Inference-Header-Content-Length)
    parse_request    the JSON header as an object
    requested_format the artifact a bare model name is asked to serve (parameters.format)
    input_batch      the inputs as the model's batch: names, shapes, datatypes (FP32, INT64), values
    requested_outputs which outputs to send back, each as JSON or binary
    encode_reply     the outputs as the protocol's JSON, with binary tensors appended

Every refusal is a pipeline.errors.Refused carrying the HTTP status and one line naming what was expected.
`read_request` runs them all; `check_json_budget` bounds what the JSON parser will build before it
starts, so no request costs more than the largest batch its model accepts.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from pipeline import formats
from pipeline.artifacts.manifest import Manifest, ManifestError, ModelEntry
from pipeline.artifacts.tensors import describe, dtype_of, fits
from pipeline.errors import Refused, reject_constant
from pipeline.runtime.values import Problem, ValueRule
from pipeline.serving.naming import MAX_BATCH_SIZE, VERSION, data_type, tensor_dims, tensor_names, triton_model_name

HEADER_LENGTH = "Inference-Header-Content-Length"
MAX_NESTING = 8  # levels of nested lists a tensor's "data" may use
# The most bytes one FP32 value takes in a JSON request, separator included: tritonclient writes
# float32 values as Python floats, e.g. "-1.2345678901234567e-05, " (25 bytes).
JSON_BYTES_PER_VALUE = 25
JSON_OVERHEAD = 64 * 1024  # names, shape, parameters: what a request holds besides its values
_NUMBER = (int, float)  # bool is not a number here
FP32 = ValueRule("data", "float32", ())  # the rule of a seed model's input (every manifest input has its own)
_DIGITS = re.compile(rb"[0-9]{1,12}")  # ASCII digits only: str.isdigit also accepts "²", which int() refuses


@dataclass(frozen=True)
class ServedModel:
    """What a model name in a URL serves: a manifest model, an artifact format and tensor names."""

    name: str  # as the client wrote it
    entry: ModelEntry
    format: str
    fixed: bool  # the name pins the format (<model>_<format>, as Triton names its models)
    inputs: list[str]
    outputs: list[str]
    max_batch: int  # the largest batch it accepts (see max_batch_size)

    @property
    def width(self) -> int:
        """Numbers per example, over every input."""
        return self.entry.values_per_example


@dataclass(frozen=True)
class InferRequest:
    """A request taken apart: what to run, on what, and what to send back."""

    request: dict[str, Any]
    format: str
    batch: Any  # one C-contiguous array for a one-input model, else input name -> array
    outputs: list[tuple[int, str, bool]]  # (position, name, as binary)


def max_batch_size(width: int, max_body_bytes: int, cap: int = MAX_BATCH_SIZE) -> int:
    """The largest batch, a power of two up to `cap`, whose JSON request fits in `max_body_bytes` for a model
    taking `width` features: 512 for 1000 features in 16 MiB, `cap` for narrow models."""
    overhead = min(JSON_OVERHEAD, max_body_bytes // 8)
    fits = (max_body_bytes - overhead) // (max(width, 1) * JSON_BYTES_PER_VALUE)
    if fits < 1:
        return 1
    return min(cap, 1 << (int(fits).bit_length() - 1))


def triton_formats_of(entry: ModelEntry) -> list[str]:
    """The formats Triton serves that `entry` has an artifact of (derived ones may not apply to a model)."""
    return [fmt for fmt in entry.served_formats() if fmt in formats.TRITON_FORMATS]


def oip_names(manifest: Manifest) -> list[str]:
    """Every model name the routes answer to: each manifest model, then its Triton-style names."""
    return [
        n for m, e in manifest.models.items() for n in (m, *(triton_model_name(m, f) for f in triton_formats_of(e)))
    ]


def resolve_target(
    manifest: Manifest,
    name: str,
    version: str | None,
    default_format: str,
    max_body_bytes: int,
    max_batch: int = MAX_BATCH_SIZE,
) -> ServedModel:
    """The model `name` (and `version`) of a URL: a manifest model on `default_format`, or Triton's
    <model>_<format> for each format Triton serves; 404 naming the models there are. Its largest batch
    is the one whose JSON request fits in `max_body_bytes`."""
    if name in manifest.models:
        entry, fmt, fixed = manifest.models[name], default_format, False
    else:
        base, _, suffix = name.rpartition("_")
        if suffix not in formats.TRITON_FORMATS or base not in manifest.models:
            raise Refused(
                404,
                f"unknown model {name!r}; expected one of: {', '.join(manifest.models)} "
                f"(each also as <model>_{' and <model>_'.join(formats.TRITON_FORMATS)})",
            )
        entry, fmt, fixed = manifest.models[base], suffix, True
        if fmt not in triton_formats_of(entry):
            try:
                entry.artifact(formats.get(fmt).artifact_kind)  # its ManifestError says why there is none
            except ManifestError as exc:
                raise Refused(404, f"unknown model {name!r}: {exc}") from None
    if version not in (None, "", VERSION):
        raise Refused(404, f"model {name!r} has no version {version!r}; it has version {VERSION}")
    triton = formats.get(fmt).triton
    if triton is not None and triton.positional:
        ins, outs = tensor_names(entry, fmt)
    else:
        ins, outs = [t["name"] for t in entry.inputs], [t["name"] for t in entry.outputs]
    largest = max_batch_size(entry.values_per_example, max_body_bytes, max_batch)
    return ServedModel(name, entry, fmt, fixed, ins, outs, largest)


def model_metadata(target: ServedModel) -> dict[str, Any]:
    """The protocol's model metadata: name, versions, platform, tensors of shape [-1, *dims] with datatypes,
    and in parameters the largest batch a request may carry."""
    entry = target.entry

    def tensors(specs: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
        return [
            {"name": n, "datatype": data_type(s, target.name)[1], "shape": [-1, *tensor_dims(s, target.name)]}
            for s, n in zip(specs, names, strict=True)
        ]

    triton = formats.get(target.format).triton
    return {
        "name": target.name,
        "versions": [VERSION],
        "platform": triton.platform if triton else "",
        "inputs": tensors(entry.inputs, target.inputs),
        "outputs": tensors(entry.outputs, target.outputs),
        "parameters": {"max_batch_size": target.max_batch},
    }


# ---- a request -----------------------------------------------------------------------------------


def decode_body(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body after Content-Encoding gzip or deflate (as tritonclient sends them), at most `limit` bytes."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise Refused(400, f"unsupported Content-Encoding {encoding!r}; expected gzip, deflate or none")
    inflater = zlib.decompressobj(wbits=32 + zlib.MAX_WBITS)  # either header, detected
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise Refused(400, f"the body is not valid {encoding} data ({exc})") from None
    if len(out) > limit:
        raise Refused(413, f"the decompressed request body is over the limit of {limit:,} bytes")
    if not inflater.eof:
        raise Refused(400, f"the {encoding} body is truncated")
    if inflater.unused_data:
        raise Refused(
            400, f"{len(inflater.unused_data)} bytes follow the {encoding} data; expected one {encoding} stream"
        )
    return out


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON header, binary tensor data) per Triton's binary tensor data extension."""
    if header_length is None:
        return body, b""
    text = header_length.strip().encode("utf-8", "replace")
    if not _DIGITS.fullmatch(text) or not 0 < int(text) <= len(body):
        shown = header_length if len(header_length) <= 20 else header_length[:20] + "..."
        raise Refused(
            400,
            f"{HEADER_LENGTH} is {shown!r}; expected the JSON header's size, 1 to {len(body)} bytes",
        )
    n = int(text)
    return body[:n], memoryview(body)[n:]  # the tensors are read in place (np.frombuffer), never copied


def check_json_budget(header: bytes, target: ServedModel) -> None:
    """400 before any parsing when the JSON holds more values or arrays than a full batch of `target`
    needs: a body of millions of empty lists or numbers would take seconds and hundreds of MB to parse."""
    arrays = header.count(b"[") + header.count(b"{")
    if arrays > 2 * target.max_batch + 1024:
        raise Refused(
            400,
            f"the request holds {arrays:,} arrays and objects; expected one input of at most {target.max_batch} rows",
        )
    max_values = target.max_batch * target.width
    commas = header.count(b",")
    if commas > max_values + 1024:
        raise Refused(
            400,
            f"the request holds about {commas:,} values; {target.name} takes at most "
            f"{target.max_batch} x {target.width} = {max_values:,} per request",
        )


def parse_request(header: bytes) -> dict[str, Any]:
    """The JSON inference request: an object, with 'parameters' an object if present."""
    if not header.strip():
        raise Refused(400, "the request body is empty; expected a JSON inference request")
    try:
        req = orjson.loads(header)  # strict JSON (no NaN or Infinity), several times faster than json
    except orjson.JSONDecodeError:  # json's reading of it: its message, and integers beyond 64 bits
        req = None
    try:
        req = json.loads(header, parse_constant=reject_constant) if req is None else req
    except (ValueError, RecursionError) as exc:
        raise Refused(400, f"the request is not valid JSON ({str(exc)[:120]})") from None
    if not isinstance(req, dict):
        raise Refused(400, "the inference request must be a JSON object with an 'inputs' list")
    if not isinstance(req.get("parameters", {}), dict):
        raise Refused(400, "'parameters' must be a JSON object")
    return req


def requested_format(req: dict[str, Any], target: ServedModel) -> str:
    """The format to run: the target's, or on a bare model name any format asked for in parameters.format."""
    fmt = req.get("parameters", {}).get("format")
    if fmt is None or fmt == target.format:
        return target.format
    if not isinstance(fmt, str):
        raise Refused(400, f"parameters.format is {fmt!r}; expected one of: {', '.join(formats.FORMATS)}")
    if target.fixed:
        raise Refused(
            400,
            f"model {target.name!r} serves the {target.format} artifact only; "
            f"ask {target.entry.name!r} for parameters.format {fmt!r}",
        )
    if fmt not in formats.FORMATS:
        raise Refused(400, f"parameters.format {fmt!r} is not one of: {', '.join(formats.FORMATS)}")
    return fmt  # the bare name keeps the manifest's tensor names whatever the format


def _flat_numbers(data: Any, where: str, rule: ValueRule = FP32, depth: int = 0) -> list[Any]:
    """`data` (a flat or nested JSON array) as one flat list of numbers, or Refused."""
    if not isinstance(data, list):
        raise Refused(400, f"{where}: 'data' must be a JSON array of numbers")
    if all(type(v) in _NUMBER for v in data):  # the common case: flat, row-major
        return data
    if depth >= MAX_NESTING:
        raise Refused(400, f"{where}: 'data' is nested too deeply")
    flat: list[Any] = []
    for v in data:
        if isinstance(v, list):
            flat.extend(_flat_numbers(v, where, rule, depth + 1))
            continue
        try:
            rule.scalar(v, len(flat))
        except Problem:
            shown = json.dumps(v)[:20]
            raise Refused(
                400, f"{where}: 'data' holds {shown}, which is not a number (datatype {rule.datatype})"
            ) from None
        flat.append(v)
    return flat


def _expected(dims: list[int]) -> str:
    return "[batch, " + ", ".join(map(str, dims)) + "]"


def _shape(tensor: dict[str, Any], where: str, spec: dict[str, Any], max_batch: int, model: str) -> list[int]:
    dims = tensor_dims(spec, where)  # -1 where an axis varies: any length in its range
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) != len(dims) + 1
        or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
    ):
        raise Refused(400, f"{where} has shape {shape!r}; expected {_expected(dims)}")
    if not fits(spec, shape[1:]) or not 1 <= shape[0] <= max_batch:
        axes = "[" + describe(spec).split(" ", 2)[2].removeprefix("[batch, ")  # a varying axis with its range
        per = f"{dims[0]} features" if len(dims) == 1 and dims[0] > 0 else f"shape {axes}"
        raise Refused(
            400,
            f"{where} has shape {shape}; expected {_expected(dims)} with batch from 1 "
            f"to {max_batch} ({model} takes {per} per example)",
        )
    return shape


def _from_json(tensor: dict[str, Any], where: str, shape: list[int], spec: dict[str, Any]) -> np.ndarray:
    rule = ValueRule.of(spec)
    if "data" not in tensor:
        raise Refused(400, f"{where} has no 'data'")
    count = math.prod(shape)
    flat = _flat_numbers(tensor["data"], where, rule)
    if len(flat) != count:
        raise Refused(400, f"{where} has {len(flat)} values in 'data'; shape {shape} needs {count}")
    try:
        return _checked(rule, np.array(flat, dtype=np.float64), where).reshape(shape)
    except OverflowError:  # an integer beyond float64: beyond every datatype served here
        raise Refused(400, f"{where}: a value is beyond {rule.datatype}'s range") from None


def _checked(rule: ValueRule, arr: np.ndarray, where: str) -> np.ndarray:
    """`arr` as the rule's dtype once its values keep the tensor's rule (pipeline/runtime/values.py), else 400."""
    try:
        return rule.check(arr)
    except Problem as problem:
        label = f"value {problem.index + 1}" if problem.index is not None else "'data'"
        raise Refused(400, f"{where}: {problem.at(label)}") from None


def _check_binary_read(binary: bytes, offset: int) -> None:
    """400 unless the inputs' binary_data_size took every byte after the JSON header."""
    if binary and offset == 0:
        raise Refused(
            400,
            f"{len(binary)} bytes of binary data follow the JSON header, but no input "
            "declares parameters.binary_data_size",
        )
    if offset != len(binary):  # a binary input listed before a JSON one: no last-input check saw the tail
        raise Refused(
            400,
            f"{len(binary) - offset} bytes of binary data are left after the inputs' binary_data_size "
            f"({offset} bytes); expected exactly {offset} bytes",
        )


def input_batch(req: dict[str, Any], target: ServedModel, binary: bytes) -> Any:
    """The request's inputs as the model's batch: one C-contiguous array for a one-input model (float32
    (batch, features) for the seed models), else input name -> array, each of its declared dtype and shape.
    Binary tensors follow the JSON header in the order the inputs are listed."""
    inputs = _named_inputs(req, target)
    specs = target.entry.inputs
    want = target.inputs
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for tensor in inputs:  # the binary data is in the request's order
        name = tensor["name"]
        spec = specs[want.index(name)]
        where = f"input {name!r} of {target.name}"
        datatype = data_type(spec, where)[1]
        if tensor.get("datatype") != datatype:
            raise Refused(400, f"{where} has datatype {tensor.get('datatype')!r}; expected {datatype!r}")
        shape = _shape(tensor, where, spec, target.max_batch, target.entry.name)
        params = tensor.get("parameters") or {}
        if not isinstance(params, dict):
            raise Refused(400, f"{where}: 'parameters' must be a JSON object")
        if "binary_data_size" in params:
            arr = _from_binary(binary, offset, params["binary_data_size"], tensor is inputs[-1], where, shape, spec)
            offset += params["binary_data_size"]
        else:
            arr = _from_json(tensor, where, shape, spec)
        arrays[name] = arr
    _check_binary_read(binary, offset)
    if len({len(a) for a in arrays.values()}) > 1:
        raise Refused(400, f"the inputs of {target.name} have different batch sizes")
    ordered = [arrays[n] for n in want]
    if len(ordered) == 1:
        return ordered[0]
    return {t["name"]: a for t, a in zip(specs, ordered, strict=True)}  # keyed by the manifest's names


def _named_inputs(req: dict[str, Any], target: ServedModel) -> list[dict[str, Any]]:
    """The request's 'inputs': one object per input the model takes, each named as the model names it."""
    inputs = req.get("inputs")
    want = target.inputs
    if not isinstance(inputs, list) or not inputs:
        raise Refused(400, f"the request has no 'inputs' list; {target.name} takes input {', '.join(map(repr, want))}")
    if len(inputs) != len(want) or not all(isinstance(t, dict) for t in inputs):
        if len(want) == 1:
            raise Refused(400, f"{target.name} takes exactly one input, {want[0]!r}; got {len(inputs)}")
        raise Refused(400, f"{target.name} takes {len(want)} inputs, {', '.join(map(repr, want))}; got {len(inputs)}")
    seen: set[str] = set()
    for tensor in inputs:
        got = tensor.get("name")
        if not isinstance(got, str) or got not in want:
            expected = want[0] if len(want) == 1 else " and ".join(map(repr, want))
            raise Refused(400, f"unexpected input {got!r} for model {target.name!r}; expected {expected!r}")
        if got in seen:
            names = " and ".join(map(repr, want))
            raise Refused(400, f"input {got!r} is listed twice; {target.name} takes {names} once each")
        seen.add(got)
    return inputs


def _from_binary(
    binary: bytes, offset: int, size: Any, last: bool, where: str, shape: list[int], spec: dict[str, Any]
) -> np.ndarray:
    """The `size` bytes at `offset` of the binary data as the input's array; the last input must take the rest."""
    dtype = dtype_of(spec).wire()
    count = math.prod(shape)
    wrong = type(size) is not int or size != count * dtype.itemsize  # 8.0 or true would not slice the bytes
    if wrong or offset + size > len(binary) or (last and offset + size != len(binary)):
        raise Refused(
            400,
            f"{where}: binary_data_size is {size!r} with {len(binary) - offset} bytes of binary "
            f"data; expected {count * dtype.itemsize} bytes ({count} {dtype_of(spec).oip} values)",
        )
    # A view of the body: no copy on a little-endian machine, one byte swap elsewhere.
    raw = np.frombuffer(binary, dtype=dtype, count=count, offset=offset).reshape(shape)
    return _checked(ValueRule.of(spec), raw.astype(dtype.newbyteorder("="), copy=False), where)


def requested_outputs(req: dict[str, Any], target: ServedModel) -> list[tuple[int, str, bool]]:
    """(position, name, binary) of each output to return, in the order asked for."""
    params = req.get("parameters", {})
    default_binary = params.get("binary_data_output", False)
    if not isinstance(default_binary, bool):
        raise Refused(400, "parameters.binary_data_output must be true or false")
    asked = req.get("outputs")
    if asked is None or asked == []:  # as Triton: no output named, every output
        return [(i, n, default_binary) for i, n in enumerate(target.outputs)]
    if not isinstance(asked, list) or not all(isinstance(o, dict) for o in asked):
        raise Refused(400, "'outputs' must be a list of objects with a 'name'")
    chosen: list[tuple[int, str, bool]] = []
    for out in asked:
        name = out.get("name")
        if name not in target.outputs:
            raise Refused(
                400,
                f"unknown output {name!r} for model {target.name!r}; expected one of: {', '.join(target.outputs)}",
            )
        if any(name == c[1] for c in chosen):
            raise Refused(400, f"output {name!r} is requested twice")
        oparams = out.get("parameters") or {}
        if not isinstance(oparams, dict):
            raise Refused(400, f"output {name!r}: 'parameters' must be a JSON object")
        if oparams.get("classification"):
            raise Refused(400, f"output {name!r}: the classification extension is not supported")
        binary = oparams.get("binary_data", default_binary)
        if not isinstance(binary, bool):
            raise Refused(400, f"output {name!r}: parameters.binary_data must be true or false")
        chosen.append((target.outputs.index(name), name, binary))
    return chosen


# ---- a reply -------------------------------------------------------------------------------------


def encode_reply(
    req: dict[str, Any], target: ServedModel, outputs: list[np.ndarray], wanted: list[tuple[int, str, bool]]
) -> tuple[bytes, int | None]:
    """(body, JSON header length) of the inference response: the header length is None when no output is
    binary (the body is then JSON alone), else the size of the JSON header before the binary tensors."""
    reply: dict[str, Any] = {"model_name": target.name, "model_version": VERSION}
    if isinstance(req.get("id"), str):
        reply["id"] = req["id"]
    tensors, blobs = [], []
    for index, name, binary in wanted:
        spec = target.entry.outputs[index]
        datatype = data_type(spec, target.name)[1]
        out = np.ascontiguousarray(outputs[index], dtype=dtype_of(spec).wire())
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(out.shape)}
        if binary:
            blob = out.tobytes()
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = out.ravel()  # written by orjson straight from the array
        tensors.append(tensor)
    reply["outputs"] = tensors
    header = orjson.dumps(reply, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def read_request(
    body: bytes, encoding: str | None, header_length: str | None, target: ServedModel, limit: int
) -> InferRequest:
    """A whole inference request for `target`, from the body as received to the arrays to run, each step
    bounded before it starts (the body inflated to at most `limit` bytes, the JSON by check_json_budget)."""
    header, binary = split_body(decode_body(body, encoding, limit), header_length)
    check_json_budget(header, target)
    req = parse_request(header)
    return InferRequest(
        req, requested_format(req, target), input_batch(req, target, binary), requested_outputs(req, target)
    )
