"""The Open Inference Protocol (KServe v2) REST routes, served by the demo's cached predictors.

`oip_router(manifest, predictors)` returns a FastAPI router with the protocol's routes for every
model in the manifest, so `tritonclient.http`, KServe tooling or plain curl talk to the demo process
as they would to NVIDIA Triton serving the repository `export --triton` writes:

    GET  /v2                                  server metadata
    GET  /v2/health/live, /v2/health/ready    server liveness and readiness
    GET  /v2/models/{name}[/versions/1]       model metadata: inputs and outputs, FP32, shape [-1, N]
    GET  /v2/models/{name}[/versions/1]/ready model readiness (loads the predictor)
    GET  /v2/models/{name}[/versions/1]/config its Triton ModelConfig, as JSON
    POST /v2/models/{name}[/versions/1]/infer inference: JSON tensors, or Triton's binary tensor extension

Each manifest model answers to three names:

    <model>               the ONNX artifact on onnxruntime (CPU) by default; a request may pick another
                          artifact with "parameters": {"format": "torchscript" | "pt2" | "eager" | "onnx"}.
                          Tensor names are the manifest's (x -> y, or x -> sum, hidden).
    <model>_onnx          exactly Triton's <model>_onnx: the ONNX artifact, the manifest's tensor names.
    <model>_torchscript   exactly Triton's <model>_torchscript: the TorchScript artifact on torch (CPU),
                          tensor names <name>__<index> (x__0 -> sum__0, hidden__1), as Triton's PyTorch
                          backend requires.

Errors use the protocol's form, {"error": "<message>"}: 400 for a malformed request (wrong shape,
datatype, tensor name, JSON), 404 for an unknown model, version or route, 413 for a body over the
limit, 503 when an artifact cannot be loaded (e.g. it fails its sha256 check).
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from pipeline.inputs import InputError
from pipeline.manifest import ArtifactError, Manifest, ManifestError, ModelEntry
from pipeline.naming import (
    MAX_BATCH_SIZE,
    TRITON_FORMATS,
    VERSION,
    data_type,
    model_config,
    tensor_dims,
    tensor_names,
    triton_model_name,
)
from pipeline.runtime import PREDICT_FORMATS, PredictorCache, RuntimeUnavailable

SERVER_NAME = "seed-pipeline"
# 1024 examples of the widest model (1000 features) are 4 MiB as binary tensors, about 12 MiB as JSON.
MAX_BODY_BYTES = 16 * 1024 * 1024
HEADER_LENGTH = "Inference-Header-Content-Length"
FLOAT32_MAX = float(np.finfo(np.float32).max)
_NUMBER = (int, float)


class OIPError(Exception):
    """A request the protocol answers with {"error": message} and an HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Target:
    """What a model name in a URL serves: a manifest model, an artifact format and tensor names."""

    name: str  # as the client wrote it
    entry: ModelEntry
    format: str
    fixed: bool  # the name pins the format (<model>_onnx, <model>_torchscript)
    inputs: list[str]
    outputs: list[str]


def _value_or_getter(value: Any) -> Callable[[], Any]:
    return value if callable(value) else (lambda: value)


def oip_router(
    manifest: Manifest | Callable[[], Manifest | None],
    predictors: PredictorCache | Callable[[], PredictorCache | None],
    *,
    device: str = "cpu",
    default_format: str = "onnx",
    max_body_bytes: int = MAX_BODY_BYTES,
    max_batch_size: int = MAX_BATCH_SIZE,
) -> APIRouter:
    """The Open Inference Protocol routes for every model of `manifest`, run by `predictors`.

    Both arguments may be zero-argument callables returning the current object (or None while there
    is no manifest: the routes then answer 503), for an app that reloads its manifest. Predictors are
    loaded on `device` through the cache, so the routes share them with everything else using it.
    """
    if default_format not in TRITON_FORMATS:
        raise ValueError(f"default_format must be one of {', '.join(TRITON_FORMATS)}; got {default_format!r}")
    get_manifest = _value_or_getter(manifest)
    get_predictors = _value_or_getter(predictors)
    router = APIRouter(tags=["Open Inference Protocol"])

    def current_manifest() -> Manifest:
        try:
            current = get_manifest()
        except ManifestError as exc:
            raise OIPError(503, str(exc)) from None
        if current is None:
            raise OIPError(503, "no manifest is loaded: create the artifacts with `make train export`")
        return current

    def resolve(name: str, version: str | None) -> Target:
        current = current_manifest()
        if name in current.models:
            entry, fmt, fixed = current.models[name], default_format, False
        else:
            base, _, suffix = name.rpartition("_")
            if suffix not in TRITON_FORMATS or base not in current.models:
                listed = ", ".join(current.models)
                raise OIPError(
                    404,
                    f"unknown model {name!r}; expected one of: {listed} "
                    f"(each also as <model>_{' and <model>_'.join(TRITON_FORMATS)})",
                )
            entry, fmt, fixed = current.models[base], suffix, True
        if version not in (None, "", VERSION):
            raise OIPError(404, f"model {name!r} has no version {version!r}; it has version {VERSION}")
        ins, outs = (
            tensor_names(entry, fmt)
            if TRITON_FORMATS[fmt].positional
            else ([t["name"] for t in entry.inputs], [t["name"] for t in entry.outputs])
        )
        return Target(name, entry, fmt, fixed, ins, outs)

    def tensors_metadata(specs: list[dict[str, Any]], names: list[str], where: str) -> list[dict[str, Any]]:
        return [
            {"name": n, "datatype": data_type(s, where)[1], "shape": [-1, *tensor_dims(s, where)]}
            for s, n in zip(specs, names, strict=True)
        ]

    def metadata(target: Target) -> dict[str, Any]:
        entry = target.entry
        return {
            "name": target.name,
            "versions": [VERSION],
            "platform": TRITON_FORMATS[target.format].platform,
            "inputs": tensors_metadata(entry.inputs, target.inputs, target.name),
            "outputs": tensors_metadata(entry.outputs, target.outputs, target.name),
        }

    async def predictor_for(target: Target, fmt: str):
        cache = get_predictors()
        if cache is None:
            raise OIPError(503, "no predictors are loaded: create the artifacts with `make train export`")
        try:
            return await run_in_threadpool(cache.get, target.entry.name, fmt, device)
        except ManifestError as exc:
            raise OIPError(404, str(exc)) from None
        except (ArtifactError, RuntimeUnavailable, InputError) as exc:
            raise OIPError(503, f"model {target.name!r} is not available: {exc}") from None

    # ---- server ----------------------------------------------------------------------------------

    @router.get("/v2")
    def server_metadata() -> dict[str, Any]:
        try:
            version = importlib_metadata.version(SERVER_NAME)
        except importlib_metadata.PackageNotFoundError:
            version = "0+unknown"
        extensions = ["binary_tensor_data", "model_configuration"]
        return {"name": SERVER_NAME, "version": version, "extensions": extensions}

    @router.get("/v2/health/live")
    def live() -> dict[str, Any]:
        return {"live": True}

    @router.get("/v2/health/ready")
    def ready():
        try:
            current = current_manifest()
        except OIPError as exc:
            return _error(exc.status, exc.message)
        if not current.models:
            return _error(503, "the manifest lists no models; run `make train export`")
        return {"ready": True}

    # ---- models ----------------------------------------------------------------------------------

    async def model_metadata(name: str, version: str | None = None):
        try:
            return metadata(resolve(name, version))
        except OIPError as exc:
            return _error(exc.status, exc.message)

    async def model_ready(name: str, version: str | None = None):
        try:
            target = resolve(name, version)
            await predictor_for(target, target.format)
        except OIPError as exc:
            return _error(exc.status, exc.message)
        return {"name": name, "ready": True}

    async def model_configuration(name: str, version: str | None = None):
        try:
            target = resolve(name, version)
            config = model_config(target.entry, target.format, max_batch_size)
        except OIPError as exc:
            return _error(exc.status, exc.message)
        if not target.fixed:
            config = {**config, "name": target.name}
        return config

    async def infer(request: Request, name: str, version: str | None = None):
        try:
            target = resolve(name, version)
            body = _decode(
                await _read_body(request, max_body_bytes),
                request.headers.get("content-encoding"),
                max_body_bytes,
            )
            header, binary = _split(body, request.headers.get(HEADER_LENGTH))
            req = _parse_json(header)
            fmt = _format(req, target)
            batch = _input(req, target, binary, max_batch_size)
            wanted = _outputs(req, target)
            predictor = await predictor_for(target, fmt)
            try:
                outs = await run_in_threadpool(predictor.run_batch, batch)
            except Exception as exc:  # noqa: BLE001 - answered with the protocol's error form
                raise OIPError(500, f"inference failed: {type(exc).__name__}: {exc}") from None
        except OIPError as exc:
            return _error(exc.status, exc.message)
        return _reply(req, target, outs, wanted)

    for suffix in ("", "/versions/{version}"):
        base = "/v2/models/{name}" + suffix
        router.add_api_route(base, model_metadata, methods=["GET"])
        router.add_api_route(base + "/ready", model_ready, methods=["GET"])
        router.add_api_route(base + "/config", model_configuration, methods=["GET"])
        router.add_api_route(base + "/infer", infer, methods=["POST"])

    @router.api_route("/v2/{rest:path}", methods=["GET", "POST", "PUT", "DELETE"], include_in_schema=False)
    def unknown_route(request: Request, rest: str):
        return _error(404, f"no Open Inference Protocol route {request.method} /v2/{rest}")

    return router


# ---- request parsing -----------------------------------------------------------------------------


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise OIPError(400, f"invalid Content-Length {declared!r}")
        if int(declared) > limit:
            raise OIPError(413, f"request body of {int(declared):,} bytes is over the limit of {limit:,} bytes")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise OIPError(413, f"request body is over the limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _decode(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body after Content-Encoding gzip or deflate (as tritonclient sends them), size-limited."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise OIPError(400, f"unsupported Content-Encoding {encoding!r}; expected gzip, deflate or none")
    inflater = zlib.decompressobj(wbits=32 + zlib.MAX_WBITS)  # either header, detected
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise OIPError(400, f"the body is not valid {encoding} data ({exc})") from None
    if len(out) > limit:
        raise OIPError(413, f"the decompressed request body is over the limit of {limit:,} bytes")
    if not inflater.eof:
        raise OIPError(400, f"the {encoding} body is truncated")
    return out


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON header, binary tensor data) per Triton's binary tensor data extension."""
    if header_length is None:
        return body, b""
    if not header_length.strip().isdigit() or not 0 < int(header_length) <= len(body):
        raise OIPError(
            400,
            f"{HEADER_LENGTH} is {header_length!r}; expected the JSON header's size, 1 to {len(body)} bytes",
        )
    n = int(header_length)
    return body[:n], body[n:]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _parse_json(header: bytes) -> dict[str, Any]:
    if not header.strip():
        raise OIPError(400, "the request body is empty; expected a JSON inference request")
    try:
        req = json.loads(header, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise OIPError(400, f"the request is not valid JSON ({str(exc)[:120]})") from None
    if not isinstance(req, dict):
        raise OIPError(400, "the inference request must be a JSON object with an 'inputs' list")
    if not isinstance(req.get("parameters", {}), dict):
        raise OIPError(400, "'parameters' must be a JSON object")
    return req


def _format(req: dict[str, Any], target: Target) -> str:
    fmt = req.get("parameters", {}).get("format")
    if fmt is None or fmt == target.format:
        return target.format
    if target.fixed:
        raise OIPError(
            400,
            f"model {target.name!r} serves the {target.format} artifact only; "
            f"ask {target.entry.name!r} for parameters.format {fmt!r}",
        )
    if fmt not in PREDICT_FORMATS:
        raise OIPError(400, f"parameters.format {fmt!r} is not one of: {', '.join(PREDICT_FORMATS)}")
    return fmt  # the bare name keeps the manifest's tensor names whatever the format


def _flat_numbers(data: Any, where: str, depth: int = 0) -> list[Any]:
    """`data` (a flat or nested JSON array) as one flat list of numbers, or OIPError."""
    if not isinstance(data, list):
        raise OIPError(400, f"{where}: 'data' must be a JSON array of numbers")
    if all(type(v) in _NUMBER for v in data):  # the common case: flat, row-major; bool is not a number here
        return data
    if depth >= 8:
        raise OIPError(400, f"{where}: 'data' is nested too deeply")
    flat: list[Any] = []
    for v in data:
        if isinstance(v, list):
            flat.extend(_flat_numbers(v, where, depth + 1))
        elif type(v) in _NUMBER:
            flat.append(v)
        else:
            shown = json.dumps(v)[:20]
            raise OIPError(400, f"{where}: 'data' holds {shown}, which is not a number (datatype FP32)")
    return flat


def _input(req: dict[str, Any], target: Target, binary: bytes, max_batch: int) -> np.ndarray:
    """The request's one input as a C-contiguous float32 (batch, features) array."""
    inputs = req.get("inputs")
    want = target.inputs[0]
    features = target.entry.features
    if not isinstance(inputs, list) or not inputs:
        raise OIPError(400, f"the request has no 'inputs' list; {target.name} takes input {want!r}")
    if len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise OIPError(400, f"{target.name} takes exactly one input, {want!r}; got {len(inputs)}")
    tensor = inputs[0]
    if tensor.get("name") != want:
        got = tensor.get("name")
        raise OIPError(400, f"unexpected input {got!r} for model {target.name!r}; expected {want!r}")
    where = f"input {want!r} of {target.name}"
    if tensor.get("datatype") != "FP32":
        raise OIPError(400, f"{where} has datatype {tensor.get('datatype')!r}; expected 'FP32'")
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
    ):
        raise OIPError(400, f"{where} has shape {shape!r}; expected [batch, {len(features)}]")
    if shape[1] != len(features) or not 1 <= shape[0] <= max_batch:
        raise OIPError(
            400,
            f"{where} has shape {shape}; expected [batch, {len(features)}] with batch from 1 "
            f"to {max_batch} ({target.entry.name} takes {len(features)} features per example)",
        )
    count = shape[0] * shape[1]
    params = tensor.get("parameters") or {}
    if not isinstance(params, dict):
        raise OIPError(400, f"{where}: 'parameters' must be a JSON object")
    if "binary_data_size" in params:
        size = params["binary_data_size"]
        if size != count * 4 or size != len(binary):
            raise OIPError(
                400,
                f"{where}: binary_data_size is {size!r} with {len(binary)} bytes of binary "
                f"data; expected {count * 4} bytes ({count} FP32 values)",
            )
        arr = np.frombuffer(binary, dtype="<f4").reshape(shape).astype(np.float32)
    else:
        if binary:
            raise OIPError(
                400,
                f"{len(binary)} bytes of binary data follow the JSON header, but no input "
                "declares parameters.binary_data_size",
            )
        if "data" not in tensor:
            raise OIPError(400, f"{where} has no 'data'")
        flat = _flat_numbers(tensor["data"], where)
        if len(flat) != count:
            raise OIPError(400, f"{where} has {len(flat)} values in 'data'; shape {shape} needs {count}")
        try:
            wide = np.array(flat, dtype=np.float64)
        except OverflowError:
            raise OIPError(400, f"{where}: a value is beyond FP32's range (about 3.4e38)") from None
        if np.any(np.abs(wide) > FLOAT32_MAX):
            raise OIPError(400, f"{where}: a value is beyond FP32's range (about 3.4e38)")
        arr = wide.astype(np.float32).reshape(shape)
    if not np.all(np.isfinite(arr)):
        raise OIPError(400, f"{where} holds NaN or infinity; expected finite numbers")
    return np.ascontiguousarray(arr)


def _outputs(req: dict[str, Any], target: Target) -> list[tuple[int, str, bool]]:
    """(position, name, binary) of each output to return, in the order asked for."""
    params = req.get("parameters", {})
    default_binary = params.get("binary_data_output", False)
    if not isinstance(default_binary, bool):
        raise OIPError(400, "parameters.binary_data_output must be true or false")
    asked = req.get("outputs")
    if asked is None:
        return [(i, n, default_binary) for i, n in enumerate(target.outputs)]
    if not isinstance(asked, list) or not all(isinstance(o, dict) for o in asked):
        raise OIPError(400, "'outputs' must be a list of objects with a 'name'")
    chosen: list[tuple[int, str, bool]] = []
    for out in asked:
        name = out.get("name")
        if name not in target.outputs:
            raise OIPError(
                400,
                f"unknown output {name!r} for model {target.name!r}; expected one of: {', '.join(target.outputs)}",
            )
        if any(name == c[1] for c in chosen):
            raise OIPError(400, f"output {name!r} is requested twice")
        oparams = out.get("parameters") or {}
        if not isinstance(oparams, dict):
            raise OIPError(400, f"output {name!r}: 'parameters' must be a JSON object")
        if oparams.get("classification"):
            raise OIPError(400, f"output {name!r}: the classification extension is not supported")
        binary = oparams.get("binary_data", default_binary)
        if not isinstance(binary, bool):
            raise OIPError(400, f"output {name!r}: parameters.binary_data must be true or false")
        chosen.append((target.outputs.index(name), name, binary))
    return chosen


def _reply(req: dict[str, Any], target: Target, outs, wanted: list[tuple[int, str, bool]]) -> Response:
    reply: dict[str, Any] = {"model_name": target.name, "model_version": VERSION}
    if isinstance(req.get("id"), str):
        reply["id"] = req["id"]
    tensors, blobs = [], []
    for index, name, binary in wanted:
        out = np.ascontiguousarray(outs[index], dtype="<f4")
        tensor: dict[str, Any] = {"name": name, "datatype": "FP32", "shape": list(out.shape)}
        if binary:
            blob = out.tobytes()
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = [v if math.isfinite(v) else None for v in out.ravel().tolist()]
        tensors.append(tensor)
    reply["outputs"] = tensors
    header = json.dumps(reply, separators=(",", ":")).encode()
    if not blobs:
        return Response(header, media_type="application/json")
    return Response(
        b"".join([header, *blobs]),
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(header))},
    )


def oip_names(manifest: Manifest) -> list[str]:
    """Every model name the routes answer to: each manifest model, then its Triton-style names."""
    return [n for m in manifest.models for n in (m, *(triton_model_name(m, f) for f in TRITON_FORMATS))]
