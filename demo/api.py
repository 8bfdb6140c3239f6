"""Gradio's documented HTTP routes for the page's `predict` API, served straight from the Service.

    POST /gradio_api/call/predict {"data": [model, format, device, features]}  ->  {"event_id": ID}
    GET  /gradio_api/call/predict/ID   ->  an event stream: `event: complete` with data [result], or
                                           `event: error` with data {"error": message}
    POST /gradio_api/run/predict {"data": [...]}  ->  {"data": [result], "duration": s}, or 4xx {"error": message}

The same wire format as the routes Gradio mounts for a `gr.api` function, which these take over (the
page's own events all go through Gradio's queue, /gradio_api/queue/join, never these routes):
Gradio's own build a ~100 KB session state for every call (about 6 ms on the event loop, so a
burst of calls delays everyone behind it), keep every result nobody reads, and answer every /run
error with 500. Here a call is predicted when it is posted, in a worker thread, and its result waits
to be read: at most MAX_UNREAD results, each for at most RESULT_TTL_S seconds, the oldest dropped
first. The page and gradio_client (queue/join) still go through Gradio's queue.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections import OrderedDict
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from pipeline import formats
from pipeline.errors import UserError
from pipeline.service import Service

log = logging.getLogger("demo")

MAX_UNREAD = 1024  # results posted but not yet read; each is a few KB
RESULT_TTL_S = 300.0  # seconds a result waits to be read
SESSION_HASH = re.compile(r"[A-Za-z0-9_-]{1,64}")  # what Gradio's clients send: a uuid4 or a short random id
EXPECTED = 'expected {"data": [model, format, device, features]}'
UNEXPECTED = "the prediction failed unexpectedly ({}); the server log has the details"


class Refused(Exception):
    """A call answered with an error: `status` 400 (the caller's input) or 500 (a failure of ours)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def predict_or_refuse(service: Service, model: Any, fmt: Any, device: Any, features: Any) -> dict:
    """`service.predict`, its failures as Refused with one line (a bug is logged in full, not shown)."""
    try:
        return service.predict(model, fmt, device, features)
    except (UserError, formats.UnknownFormat) as exc:
        raise Refused(400, str(exc)) from None
    except Exception as exc:
        log.exception("predict(%r, %r, %r) failed", model, fmt, device)
        raise Refused(500, UNEXPECTED.format(type(exc).__name__)) from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def arguments(body: bytes) -> list[Any]:
    """The four arguments of a call body {"data": [model, format, device, features], "session_hash"?}."""
    try:
        call = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise Refused(400, f"the request body is not valid JSON; {EXPECTED}") from None
    if not isinstance(call, dict) or not isinstance(call.get("data"), list):
        raise Refused(400, f"the request body has no 'data' list; {EXPECTED}")
    if call.get("fn_index") is not None:  # Gradio's page events name one; they go through its queue
        raise Refused(400, f"fn_index is not taken here (the page's events join /gradio_api/queue/join); {EXPECTED}")
    session = call.get("session_hash")
    if session is not None and not (isinstance(session, str) and SESSION_HASH.fullmatch(session)):
        raise Refused(400, "session_hash must be 1 to 64 letters, digits, '-' or '_'")
    if len(call["data"]) != 4:
        raise Refused(400, f"'data' holds {len(call['data'])} values; {EXPECTED}")
    return call["data"]


class PredictRoutes:
    """The two routes over one Service, and the results waiting to be read."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.unread: OrderedDict[str, tuple[float, str, str]] = OrderedDict()  # id -> (expiry, event, data)

    def answer(self, body: bytes) -> tuple[str, Any]:
        """("complete", [result]) or ("error", {"error": message}) for a call body; Refused when the body is
        not a call at all. Run in a worker thread, JSON parsing included."""
        args = arguments(body)
        try:
            return "complete", [predict_or_refuse(self.service, *args)]
        except Refused as exc:
            return "error", {"error": exc.message}

    def keep(self, event: str, data: Any) -> str:
        """Keep one result to be read, dropping expired and excess ones; returns its id."""
        now = time.monotonic()
        while self.unread and (next(iter(self.unread.values()))[0] < now or len(self.unread) >= MAX_UNREAD):
            self.unread.popitem(last=False)
        event_id = uuid.uuid4().hex
        self.unread[event_id] = (now + RESULT_TTL_S, event, json.dumps(data))
        return event_id

    async def call(self, request: Request) -> JSONResponse:
        try:
            event, data = await run_in_threadpool(self.answer, await request.body())
        except Refused as exc:
            return JSONResponse({"detail": exc.message}, status_code=exc.status)
        return JSONResponse({"event_id": self.keep(event, data)})

    async def result(self, event_id: str) -> Response:
        kept = self.unread.pop(event_id, None)
        if kept is None or kept[0] < time.monotonic():
            message = f"no result for event_id {event_id[:64]!r}: it was read already, expired, or never posted"
            return JSONResponse({"detail": message}, status_code=404)
        _, event, data = kept
        return Response(f"event: {event}\ndata: {data}\n\n", media_type="text/event-stream")

    async def run(self, request: Request) -> JSONResponse:
        body = await request.body()
        start = time.perf_counter()
        try:
            args = await run_in_threadpool(arguments, body)
            result = await run_in_threadpool(predict_or_refuse, self.service, *args)
        except Refused as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        return JSONResponse({"data": [result], "duration": time.perf_counter() - start})


def predict_router(service: Service) -> APIRouter:
    """POST /gradio_api/call/predict, GET /gradio_api/call/predict/{event_id}, POST /gradio_api/run/predict."""
    routes = PredictRoutes(service)
    router = APIRouter()
    for path in ("/gradio_api/call/predict", "/gradio_api/call/predict/"):
        router.add_api_route(path, routes.call, methods=["POST"], response_model=None, include_in_schema=False)
    router.add_api_route(
        "/gradio_api/call/predict/{event_id}",
        routes.result,
        methods=["GET"],
        response_model=None,
        include_in_schema=False,
    )
    for path in ("/gradio_api/run/predict", "/gradio_api/run/predict/"):
        router.add_api_route(path, routes.run, methods=["POST"], response_model=None, include_in_schema=False)
    return router
