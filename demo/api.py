"""Gradio's documented HTTP routes for the page's public API functions, served straight from the Service.

For each function in API (`predict`, `compare`):

    POST /gradio_api/call/NAME {"data": [arguments]}  ->  {"event_id": ID}
    GET  /gradio_api/call/NAME/ID  ->  an event stream: `event: complete` with data [result], or
                                       `event: error` with data {"error": message}
    POST /gradio_api/run/NAME {"data": [arguments]}  ->  {"data": [result], "duration": s}, or 4xx {"error": message}

The same wire format as the routes Gradio mounts for a `gr.api` function, which these take over:
Gradio's own build a ~100 KB session state for every call (about 6 ms on the event loop, so a burst
of calls delays everyone behind it), keep every result nobody reads, and answer every /run error
with 500. Here a call runs when it is posted, in a worker thread, and its result waits to be read:
at most MAX_UNREAD results, each for at most RESULT_TTL_S seconds, the oldest dropped first. The
page's own events and gradio_client go through Gradio's queue (/gradio_api/queue/join) as before;
the page's events that skip the queue name an fn_index, and demo/server.py sends those to Gradio.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from pipeline import formats
from pipeline.errors import Refused, UserError, reject_constant
from pipeline.serving.service import Service

log = logging.getLogger("demo")

MAX_UNREAD = 1024  # results posted but not yet read; each is a few KB
RESULT_TTL_S = 300.0  # seconds a result waits to be read
SESSION_HASH = re.compile(r"[A-Za-z0-9_-]{1,64}")  # what Gradio's clients send: a uuid4 or a short random id
API = {  # name: (what it does, for messages; its arguments, in order)
    "predict": ("prediction", ("model", "format", "device", "features")),
    "compare": ("comparison", ("model", "device", "features")),
}


def answer(what: str, call: Callable[[], Any]) -> Any:
    """call(), or Refused: 400 with a UserError's own message; anything else is a bug, logged in full and
    named by its type only (500)."""
    try:
        return call()
    except (UserError, formats.UnknownFormat) as exc:
        raise Refused(400, str(exc)) from None
    except Exception as exc:
        log.exception("%s failed", what)
        message = f"the {what} failed unexpectedly ({type(exc).__name__}); the server log has the details"
        raise Refused(500, message) from None


def attempt(what: str, call: Callable[[], Any]) -> tuple[Any, str | None]:
    """(call(), None), or (None, why in one line), as `answer` words it."""
    try:
        return answer(what, call), None
    except Refused as exc:
        return None, exc.message


def arguments(name: str, body: bytes) -> list[Any]:
    """The arguments of a call body {"data": [...], "session_hash"?} to API function `name`."""
    expected = f'expected {{"data": [{", ".join(API[name][1])}]}}'
    try:
        call = json.loads(body, parse_constant=reject_constant)
    except (ValueError, RecursionError):
        raise Refused(400, f"the request body is not valid JSON; {expected}") from None
    if not isinstance(call, dict) or not isinstance(call.get("data"), list):
        raise Refused(400, f"the request body has no 'data' list; {expected}")
    session = call.get("session_hash")
    if session is not None and not (isinstance(session, str) and SESSION_HASH.fullmatch(session)):
        raise Refused(400, "session_hash must be 1 to 64 letters, digits, '-' or '_'")
    if len(call["data"]) != len(API[name][1]):
        raise Refused(400, f"'data' holds {len(call['data'])} values; {expected}")
    return call["data"]


class ApiRoutes:
    """The routes over one Service, and the results waiting to be read."""

    def __init__(self, service: Service) -> None:
        self.functions = {"predict": service.predict, "compare": service.compare}
        assert set(self.functions) == set(API)
        self.unread: OrderedDict[str, tuple[float, str, str]] = OrderedDict()  # id -> (expiry, event, data)

    def run_call(self, name: str, body: bytes) -> tuple[str, Any]:
        """("complete", [result]) or ("error", {"error": message}) for a call body; Refused when the body is
        not a call at all. Run in a worker thread, JSON parsing included."""
        args = arguments(name, body)
        try:
            return "complete", [answer(API[name][0], lambda: self.functions[name](*args))]
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

    async def call(self, name: str, request: Request) -> JSONResponse:
        try:
            event, data = await run_in_threadpool(self.run_call, name, await request.body())
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

    async def run(self, name: str, request: Request) -> JSONResponse:
        body = await request.body()
        start = time.perf_counter()
        try:
            args = await run_in_threadpool(arguments, name, body)
            result = await run_in_threadpool(answer, API[name][0], lambda: self.functions[name](*args))
        except Refused as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        return JSONResponse({"data": [result], "duration": time.perf_counter() - start})


def api_paths() -> set[str]:
    """The paths clients POST to: /gradio_api/call/NAME and /gradio_api/run/NAME, with or without a slash."""
    return {f"/gradio_api/{way}/{name}{end}" for name in API for way in ("call", "run") for end in ("", "/")}


def api_router(service: Service) -> APIRouter:
    """POST /gradio_api/call/NAME, GET /gradio_api/call/NAME/{event_id}, POST /gradio_api/run/NAME for each API."""
    routes = ApiRoutes(service)
    router = APIRouter()

    def add(path: str, handler: Any, method: str) -> None:
        router.add_api_route(path, handler, methods=[method], response_model=None, include_in_schema=False)

    def bound(handler: Callable[[str, Request], Any], name: str) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> JSONResponse:
            return await handler(name, request)

        return endpoint

    for name in API:
        for end in ("", "/"):
            add(f"/gradio_api/call/{name}{end}", bound(routes.call, name), "POST")
            add(f"/gradio_api/run/{name}{end}", bound(routes.run, name), "POST")
        add(f"/gradio_api/call/{name}/{{event_id}}", routes.result, "GET")
    return router
