"""The Open Inference Protocol (KServe v2) REST routes, served by a Service's cached predictors.

`oip_router(service)` returns a FastAPI router with the protocol's routes for every model in the
service's current manifest, so `tritonclient.http`, KServe tooling or plain curl talk to the demo
process as they would to NVIDIA Triton serving the repository `export --triton` writes:

    GET  /v2                                  server metadata
    GET  /v2/health/live, /v2/health/ready    server liveness and readiness
    GET  /v2/models/{name}[/versions/1]       model metadata: inputs and outputs, FP32, shape [-1, N]
    GET  /v2/models/{name}[/versions/1]/ready model readiness (loads the predictor)
    GET  /v2/models/{name}[/versions/1]/config its Triton ModelConfig, as JSON
    POST /v2/models/{name}[/versions/1]/infer inference: JSON tensors, or Triton's binary tensor extension

Each manifest model answers to its own name (formats.DEFAULT_FORMAT's artifact, the manifest's tensor
names; a request may pick any other format with "parameters": {"format": NAME}) and to Triton's
`<model>_<format>` for every format Triton serves, with Triton's tensor names (pipeline/serving/triton.py).

Errors use the protocol's form, {"error": "<message>"}: 400 for a malformed request (wrong shape,
datatype, tensor name, JSON) or inputs whose outputs overflow float32, 404 for an unknown model,
version or route, 503 when there is no manifest or an artifact cannot be loaded (e.g. it fails its
sha256 check). The wire format itself is pipeline/serving/oip_protocol.py; the limit on the bytes a client
may send is the server's (demo/server.py), and `max_body_bytes` here must match it: each model's
largest batch is the one whose JSON request fits in it.

Nothing heavy runs on the event loop that answers everyone else: a body over SMALL_BODY_BYTES, or a
compressed one, is taken apart in a worker thread, one such body at a time, after
oip_protocol.check_json_budget has bounded what parsing it may build; loading and inference run in
worker threads too.
"""

from __future__ import annotations

import asyncio
import logging
from importlib import metadata as importlib_metadata
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from pipeline import formats
from pipeline.artifacts.manifest import ArtifactError, ManifestError
from pipeline.errors import Refused, UserError
from pipeline.runtime.predictor import Predictor, RuntimeUnavailable
from pipeline.serving import oip_protocol as protocol
from pipeline.serving.naming import MAX_BATCH_SIZE, model_config
from pipeline.serving.oip_protocol import HEADER_LENGTH, InferRequest, ServedModel
from pipeline.serving.service import Service, Snapshot

log = logging.getLogger("pipeline.serving.oip")

SERVER_NAME = "seed-pipeline"
# A request body, as sent or once inflated. 512 examples of the widest model (1000 features) are 12.8 MB
# as tritonclient's JSON (2 MB as binary tensors), so its largest batch is 512; narrower models take 1024.
MAX_BODY_BYTES = 16 * 1024 * 1024
SMALL_BODY_BYTES = 64 * 1024  # parsed on the event loop (well under a millisecond); larger ones in a thread
HEAVY_PARSES = 1  # large bodies taken apart at once: each may build ~50 MB of Python objects while parsed
NO_MANIFEST = "no manifest is loaded: create the artifacts with `make train export`"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class Routes:
    """The handlers, each a few lines over the service and the protocol's functions."""

    def __init__(
        self, service: Service, device: str, default_format: str, max_body_bytes: int, max_batch_size: int
    ) -> None:
        self.service, self.device, self.default_format = service, device, default_format
        self.max_body_bytes, self.max_batch_size = max_body_bytes, max_batch_size
        self.heavy = asyncio.Semaphore(HEAVY_PARSES)

    def resolve(self, name: str, version: str | None) -> tuple[Snapshot, ServedModel]:
        """The service's current manifest and predictors, and what `name` serves in them."""
        loaded = self.service.current()
        if loaded is None:
            raise Refused(503, self.service.error or NO_MANIFEST)
        target = protocol.resolve_target(
            loaded.manifest, name, version, self.default_format, self.max_body_bytes, self.max_batch_size
        )
        return loaded, target

    async def read(self, request: Request, target: ServedModel) -> InferRequest:
        """The request taken apart (oip_protocol.read_request): small ones here, large ones in a thread."""
        body = await request.body()
        encoding = request.headers.get("content-encoding")
        args = (body, encoding, request.headers.get(HEADER_LENGTH), target, self.max_body_bytes)
        if len(body) <= SMALL_BODY_BYTES and encoding is None:
            return protocol.read_request(*args)
        async with self.heavy:
            return await run_in_threadpool(protocol.read_request, *args)

    async def run(self, predictor: Predictor, batch: Any) -> list[Any]:
        """The outputs, in a worker thread; 400 for outputs that overflow float32, 500 for a failure of ours."""
        try:
            return await run_in_threadpool(self.service.run_batch, predictor, batch)
        except UserError as exc:
            raise Refused(400, str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - answered with the protocol's error form, logged in full
            log.exception("inference of %s (%s) failed", predictor.model, predictor.format)
            raise Refused(500, f"inference failed: {type(exc).__name__}: {exc}") from None

    async def predictor(self, loaded: Snapshot, target: ServedModel, fmt: str) -> Predictor:
        """The cached predictor (loaded in a worker thread on first use), or 404 / 503 saying why not."""
        try:
            return await run_in_threadpool(self.service.predictor, loaded, target.entry.name, fmt, self.device)
        except ManifestError as exc:
            raise Refused(404, str(exc)) from None
        except (ArtifactError, RuntimeUnavailable, UserError) as exc:
            raise Refused(503, f"model {target.name!r} is not available: {exc}") from None

    # ---- server ----------------------------------------------------------------------------------

    def server_metadata(self) -> dict[str, Any]:
        try:
            version = importlib_metadata.version(SERVER_NAME)
        except importlib_metadata.PackageNotFoundError:
            version = "0+unknown"
        return {"name": SERVER_NAME, "version": version, "extensions": ["binary_tensor_data", "model_configuration"]}

    def live(self) -> dict[str, Any]:
        return {"live": True}

    def ready(self) -> Any:
        loaded = self.service.current()
        if loaded is None:
            return _error(503, self.service.error or NO_MANIFEST)
        if not loaded.manifest.models:
            return _error(503, "the manifest lists no models; run `make train export`")
        return {"ready": True}

    # ---- models ----------------------------------------------------------------------------------

    async def model_metadata(self, name: str, version: str | None = None) -> Any:
        try:
            return protocol.model_metadata(self.resolve(name, version)[1])
        except Refused as exc:
            return _error(exc.status, exc.message)

    async def model_ready(self, name: str, version: str | None = None) -> Any:
        try:
            loaded, target = self.resolve(name, version)
            await self.predictor(loaded, target, target.format)
        except Refused as exc:
            return _error(exc.status, exc.message)
        return {"name": name, "ready": True}

    async def model_configuration(self, name: str, version: str | None = None) -> Any:
        try:
            target = self.resolve(name, version)[1]
        except Refused as exc:
            return _error(exc.status, exc.message)
        config = model_config(target.entry, target.format, target.max_batch)
        return config if target.fixed else {**config, "name": target.name}

    async def infer(self, request: Request, name: str, version: str | None = None) -> Response:
        try:
            loaded, target = self.resolve(name, version)
            parsed = await self.read(request, target)
            predictor = await self.predictor(loaded, target, parsed.format)
            outputs = await self.run(predictor, parsed.batch)
        except Refused as exc:
            return _error(exc.status, exc.message)
        content, header_length = protocol.encode_reply(parsed.request, target, outputs, parsed.outputs)
        if header_length is None:
            return Response(content, media_type="application/json")
        return Response(content, media_type="application/octet-stream", headers={HEADER_LENGTH: str(header_length)})

    def unknown_route(self, request: Request, rest: str) -> JSONResponse:
        return _error(404, f"no Open Inference Protocol route {request.method} /v2/{rest}")


def oip_router(
    service: Service,
    *,
    device: str = formats.CPU,
    default_format: str = formats.DEFAULT_FORMAT,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_batch_size: int = MAX_BATCH_SIZE,
) -> APIRouter:
    """The Open Inference Protocol routes for every model of `service`'s current manifest.

    Predictors are loaded on `device` through the service's cache, so the routes share them with
    everything else using it. `max_body_bytes` bounds a body once decompressed (the bytes on the wire
    are bounded by the server before any route reads them) and sets each model's largest batch, at most
    `max_batch_size`.
    """
    if default_format not in formats.TRITON_FORMATS:
        raise ValueError(f"default_format must be one of {', '.join(formats.TRITON_FORMATS)}; got {default_format!r}")
    routes = Routes(service, device, default_format, max_body_bytes, max_batch_size)
    router = APIRouter(tags=["Open Inference Protocol"])

    def add(path: str, handler: Any, *methods: str) -> None:  # answers as returned, never re-validated
        router.add_api_route(path, handler, methods=list(methods), response_model=None)

    add("/v2", routes.server_metadata, "GET")
    add("/v2/health/live", routes.live, "GET")
    add("/v2/health/ready", routes.ready, "GET")
    for suffix in ("", "/versions/{version}"):
        base = "/v2/models/{name}" + suffix
        add(base, routes.model_metadata, "GET")
        add(base + "/ready", routes.model_ready, "GET")
        add(base + "/config", routes.model_configuration, "GET")
        add(base + "/infer", routes.infer, "POST")
    add("/v2/{rest:path}", routes.unknown_route, "GET", "POST", "PUT", "DELETE")
    return router
