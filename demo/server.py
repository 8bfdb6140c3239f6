"""The demo's HTTP server: every limit on what a client may send, the FastAPI app, and uvicorn.

`create_app(service, page)` puts the Gradio page at "/", its `predict` routes (demo/api.py), the Open
Inference Protocol at /v2 (pipeline/serving/oip.py) and /healthz over the one Service, behind RequestLimits;
`serve(app, sock)` runs it with uvicorn, with deadlines for slow clients. The limits, all here:

- a request body: 16 MiB on /v2 (batches), 1 MiB elsewhere (one example is at most 200,000
  characters), read whole before any route sees it; 413 over it, whether declared or streamed;
- all bodies being read or handled at once: 64 MiB together; 503 (retry) past it;
- a request's headers: 16 KiB, within 10 s of the connection (or of the previous response);
  its body within 15 s of its headers (408); an idle keep-alive connection closes after 5 s;
- POST only to the routes the page and its API use (404 elsewhere: no recording or other file-accepting
  route, and the upload route only where a model takes a picture); a session_hash of 1 to 64 letters,
  digits, '-' or '_'; an fn_index of one of the page's events, with as many inputs as it takes (400
  otherwise, before Gradio parses anything);
- pictures (demo/pictures.py): never a path the client names, only files this process's upload route
  wrote or inline data:image URLs; PNG, JPEG, WebP, GIF or BMP, at most 280x280 pixels (the drawing canvas,
  which any upload on the page is fitted into) and 512 KiB by their header, one drawing layer, checked
  before Gradio sees the event (400 otherwise); uploads kept at most 2 minutes, removed once an event reads
  them, at most 256 files and 32 MiB together (the oldest removed first);
- Gradio keeps at most 64 sessions (the least recently used dropped first) and queues at most 32
  page events (503 past it); the predict routes keep at most 1,024 unread results for 5 minutes;
- at most 1,000 connections and requests at once (503 past it).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import json
import re
import signal
import socket
import sys
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import fastapi
import gradio as gr
from starlette.concurrency import run_in_threadpool
from uvicorn.protocols.http.h11_impl import H11Protocol

from demo.api import api_paths, api_router
from demo.gradio_calls import (
    Accepts,
    accepts,
    check_gradio_call,
    check_session,
    forget_unread_sessions,
    holds_file,
    page_event,
    parse_call,
    quiet_queue,
)
from demo.pictures import PictureBudget, PictureRefused, Uploads, checked_editor_value
from pipeline.errors import Refused
from pipeline.serving.batching import Batching
from pipeline.serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from pipeline.serving.oip import MAX_BODY_BYTES as OIP_MAX_BODY_BYTES
from pipeline.serving.oip import oip_router
from pipeline.serving.service import Service

MAX_REQUEST_BYTES = 1024 * 1024  # a predict call: at most 200,000 characters of input, far below this
BODY_LIMITS = (  # (path prefix, bytes, the key the error message goes under), the first match applies
    ("/v2/", OIP_MAX_BODY_BYTES, "error"),  # the protocol's error form
    ("/", MAX_REQUEST_BYTES, "detail"),  # FastAPI's and Gradio's
)
MAX_BODIES_BYTES = 64 * 1024 * 1024  # all request bodies held at once, read or being handled
BODY_TIMEOUT_S = 15.0  # from the end of a request's headers to the end of its body
HEADER_TIMEOUT_S = 10.0  # from a connection (or its previous response) to the end of a request's headers
KEEP_ALIVE_S = 5  # an idle keep-alive connection is closed after this
MAX_HEADER_BYTES = 16 * 1024  # request line and headers
MAX_CONNECTIONS = 1000  # connections and requests in progress; uvicorn answers 503 past it
MAX_SESSIONS = 64  # Gradio sessions kept, each ~100 KB for this page (state for every component)
MAX_QUEUED = 32  # page events waiting in Gradio's queue; Gradio answers 503 "queue full" past it
QUEUE_POLL_S = 0.02  # how often Gradio's idle queue looks for page events (its default, 1 ms, keeps the loop busy)
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
TRIM_AFTER_BYTES = 1024 * 1024  # after a body this large, once no other is held, free heap pages go back
# Dynamic batching (pipeline/serving/batching.py): how long the first of concurrent requests waits for others
# to merge with (0: only those already queued; BENCHMARKS.md has the measurement that chose it), and the
# merged batches small enough to run on the event loop's thread (a thread hop costs more than their call).
BATCH_DELAY_US = 0
INLINE_VALUES = 16 * 1024  # numbers in a merged batch
MAX_UNREAD_SESSIONS = 4096  # sessions whose results nobody read that Gradio may keep event ids of
MAX_PICTURE_SIDE = 280  # pixels a side: the editor's canvas, which the page fits any upload into (fixed_canvas)
MAX_PICTURE_LAYERS = 1  # drawing layers in one event: the page's editor has one
MAX_PICTURE_BYTES = 512 * 1024  # one picture file; a 280x280 RGBA PNG stored uncompressed is 314 KB
MAX_UPLOADS = 256  # uploaded files kept at once (the page uploads 3 per Predict); the oldest removed past it
MAX_UPLOAD_BYTES = 32 * 1024 * 1024  # their bytes together
UPLOAD_TTL_S = 120.0  # an upload no event has read is removed after this
MAX_DECODE_PIXELS = 4_000_000  # PIL refuses to decode past twice this (its decompression-bomb limit; default 89 M)
PICTURES = PictureBudget(
    MAX_PICTURE_SIDE, MAX_PICTURE_LAYERS, MAX_PICTURE_BYTES, MAX_UPLOADS, MAX_UPLOAD_BYTES, UPLOAD_TTL_S
)
UPLOADS = Uploads(PICTURES)  # the files clients uploaded to this process
# POST is refused (404) everywhere else: the page has no file inputs, so Gradio's upload, recording and
# component-server routes would only store (and serve back) strangers' files.
GRADIO_JSON_POSTS = frozenset({"/gradio_api/queue/join", "/gradio_api/cancel", "/gradio_api/reset"})
POST_ROUTES = GRADIO_JSON_POSTS | api_paths()  # the page's own through Gradio; the API (demo/api.py)
# Gradio's upload route, opened only where a model takes a picture (the image editor uploads through it).
UPLOAD_ROUTES = frozenset({"/gradio_api/upload"})
# The page's events that skip the queue POST to /gradio_api/run/predict naming an fn_index; they go to
# Gradio's /run route under this name, which no API function has.
PAGE_RUN_PATH = "/gradio_api/run/page"
HEARTBEAT = re.compile(r"/gradio_api/heartbeat/(.*)")
INFER = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")  # answered straight from RequestLimits


def _limit_decoding() -> None:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_DECODE_PIXELS


_limit_decoding()


class RequestLimits:
    """ASGI middleware that enforces the limits above before any route runs; it reads each request's
    whole body (up to its route's limit), then hands it to the app."""

    def __init__(
        self,
        app: Any,
        fn_ids: frozenset[int] = frozenset(),
        skip_queue: dict[int, tuple[Accepts, ...]] | None = None,
        after_join: Callable[[], None] | None = None,
        limits: tuple[tuple[str, int, str], ...] = BODY_LIMITS,
        budget: int = MAX_BODIES_BYTES,
        body_timeout: float = BODY_TIMEOUT_S,
        post_routes: frozenset[str] = POST_ROUTES,
        infer: Callable[[str, str | None, bytes, dict], Any] | None = None,
        pictures: dict[int, tuple[int, ...]] | None = None,
        uploads: Uploads | None = None,
    ) -> None:
        self.app, self.fn_ids, self.after_join, self.limits = app, fn_ids, after_join, limits
        # The OIP routes' `answer`: an inference request's body is here already, so it goes straight to it,
        # without FastAPI's routing, request object and response classes (a third of a small request's CPU)
        self.infer = infer
        self.post_routes = post_routes
        self.pictures = pictures or {}  # the page's events that take a picture: fn_index -> the editors' positions
        self.uploads = uploads  # None: no model takes a picture, and no event takes a file
        self.skip_queue = skip_queue or {}  # the page's events that skip the queue: fn_index -> its inputs
        self.budget, self.body_timeout = budget, body_timeout
        self.held = 0  # bytes of all bodies held now (one event loop: no lock needed)

    def limit(self, path: str) -> tuple[int, str]:
        """(bytes, error key) for a request to `path`."""
        for prefix, max_bytes, key in self.limits:
            if path.startswith(prefix) or path == prefix.rstrip("/"):
                return max_bytes, key
        return self.limits[-1][1], self.limits[-1][2]

    def check_route(self, scope: dict, path: str) -> None:
        """Refused for a POST to a route the page does not use, or a malformed session_hash in the URL."""
        if (
            scope["method"] == "POST"
            and path not in self.post_routes
            and not (path == "/v2" or path.startswith("/v2/"))
        ):
            raise Refused(404, "not found")
        if path == "/gradio_api/queue/data":
            sessions = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("session_hash", [""])
            check_session(sessions[0], "session_hash")
        heartbeat = HEARTBEAT.fullmatch(path)
        if heartbeat:
            check_session(heartbeat.group(1), "session_hash")

    async def read_body(self, scope: dict, receive: Any, max_bytes: int, held: list[int]) -> list[bytes] | None:
        """The whole body as its chunks (None if the client left), counting its bytes in `held` and
        self.held as they come."""
        too_large = Refused(413, f"request body over the limit of {max_bytes:,} bytes")
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
            raise too_large
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            if held[0] + len(chunk) > max_bytes:  # a chunked body with no Content-Length
                raise too_large
            if self.held + len(chunk) > self.budget:
                raise Refused(503, "the server is busy reading other large requests; try again in a moment")
            chunks.append(chunk)
            held[0] += len(chunk)
            self.held += len(chunk)
            more = message.get("more_body", False)
        return chunks

    async def accept(
        self, scope: dict, receive: Any, path: str, max_bytes: int, held: list[int]
    ) -> tuple[list[bytes] | None, str]:
        """(the request's body once every limit is met, or None if the client left; the path to route it
        to), else Refused."""
        self.check_route(scope, path)
        try:
            body = await asyncio.wait_for(self.read_body(scope, receive, max_bytes, held), self.body_timeout)
        except asyncio.TimeoutError:
            raise Refused(408, f"the request body did not arrive within {self.body_timeout:g} s") from None
        if body is None or scope["method"] != "POST":
            return body, path
        if path == "/gradio_api/queue/join":
            return await self.check_join(parse_call(b"".join(body)), body), path
        if path in GRADIO_JSON_POSTS:
            check_gradio_call(parse_call(b"".join(body)), self.fn_ids)
        elif page_event(path, b"".join(body), self.skip_queue):
            return body, PAGE_RUN_PATH
        return body, path

    async def check_join(self, call: dict, body: list[bytes]) -> list[bytes]:
        """A queue/join body once its pictures are checked (demo/pictures.py): refused (400) when an input that is
        not an image editor holds a file, or an editor's picture is not an upload of ours or inline data within
        the budget. Gradio would otherwise open, hash and copy any path it names, on the event loop."""
        check_gradio_call(call, self.fn_ids)
        data = call.get("data") or []
        editors = self.pictures.get(call.get("fn_index"), ()) if self.uploads is not None else ()
        for position, value in enumerate(data):
            if position not in editors and holds_file(value):
                raise Refused(400, f"input {position + 1} of this event takes no file")
        if not editors:
            return body
        try:
            for position in editors:
                if position < len(data):
                    data[position] = await run_in_threadpool(checked_editor_value, data[position], self.uploads)
        except PictureRefused as exc:
            raise Refused(400, str(exc)) from None
        return [json.dumps(call).encode()]

    async def upload(self, scope: dict, receive: Any, send: Any) -> None:
        """Gradio's upload route, its answer held back until each file it wrote is a picture within the budget
        (else they are removed and the answer is a 400 with one line); older uploads are swept first."""
        assert self.uploads is not None
        await run_in_threadpool(self.uploads.sweep, PICTURES.layers + 2)
        messages: list[dict] = []

        async def hold(message: dict) -> None:
            messages.append(message)

        await self.app(scope, receive, hold)
        if messages and messages[0].get("status") == 200:
            try:
                paths = json.loads(b"".join(m.get("body", b"") for m in messages[1:]))
            except ValueError:
                paths = None
            try:
                await run_in_threadpool(self.uploads.admit, paths)
            except PictureRefused as exc:
                return await _json_response(send, 400, "detail", str(exc))
        for message in messages:
            await send(message)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        max_bytes, key = self.limit(path)
        held = [0]
        try:
            try:
                body, route = await self.accept(scope, receive, path, max_bytes, held)
            except Refused as refused:
                return await _json_response(send, refused.status, key, refused.message)
            if body is None:
                return None
            infer = INFER.fullmatch(path) if self.infer is not None and scope["method"] == "POST" else None
            if infer is not None:
                headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers") or []}
                status, content, extra = await self.infer(infer.group(1), infer.group(2), b"".join(body), headers)
                return await _send(send, status, content, extra)
            if route != path:
                scope = {**scope, "path": route, "raw_path": route.encode()}
            if path == "/gradio_api/queue/join":  # its body may have been rewritten (checked pictures)
                length = str(sum(map(len, body))).encode()
                headers = [(k, v) for k, v in scope.get("headers", []) if k != b"content-length"]
                scope = {**scope, "headers": [*headers, (b"content-length", length)]}
            chunks = deque(body)  # handed on one by one: each is freed once the route has read it
            del body

            async def replay() -> dict:
                if not chunks:
                    return await receive()  # after the body: the client's disconnect, for streaming responses
                chunk = chunks.popleft()
                return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

            if self.uploads is not None and path in UPLOAD_ROUTES and scope["method"] == "POST":
                return await self.upload(scope, replay, send)
            await self.app(scope, replay, send)
            if path == "/gradio_api/queue/join" and self.after_join is not None:
                self.after_join()
        finally:
            self.held -= held[0]
            if held[0] > TRIM_AFTER_BYTES and self.held == 0:
                LIBC.trim()  # the last large body is gone: return the heap pages its chunks took


async def _send(send: Any, status: int, content: bytes, headers: dict[str, str]) -> None:
    pairs = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    pairs.append((b"content-length", str(len(content)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": pairs})
    await send({"type": "http.response.body", "body": content})


async def _json_response(send: Any, status: int, key: str, message: str) -> None:
    body = json.dumps({key: message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 503:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app(
    service: Service,
    page: gr.Blocks,
    *,
    css: str | None = None,
    js: str | None = None,
    batch_delay_us: int = BATCH_DELAY_US,
) -> fastapi.FastAPI:
    """The FastAPI app: `page` at "/" with its predict routes, the Open Inference Protocol at /v2, /healthz,
    /metrics and the request limits; `app.state.service` is the one Service they all ask."""
    if batch_delay_us < 0:
        raise ValueError(f"batch_delay_us must be 0 or more; got {batch_delay_us}")
    app = fastapi.FastAPI(title="seed-pipeline demo", docs_url=None, redoc_url=None, openapi_url=None)
    service.batching = Batching(batch_delay_us, OIP_MAX_BODY_BYTES, inline_values=INLINE_VALUES)
    # /v2/...: KServe v2 / Triton's HTTP API over the same predictors, each model's largest batch fitting
    # the body limit above as JSON
    oip = oip_router(service, max_body_bytes=OIP_MAX_BODY_BYTES)
    entries = service.manifest.models.values() if service.manifest else ()
    pictures = any(t.get("image") for e in entries for t in e.inputs)
    editors = {
        i: tuple(at for at, c in enumerate(fn.inputs) if isinstance(c, gr.ImageEditor)) for i, fn in page.fns.items()
    }
    # before any route sees a request; uploads only where a model takes a picture
    app.add_middleware(
        RequestLimits,
        post_routes=POST_ROUTES | UPLOAD_ROUTES if pictures else POST_ROUTES,
        fn_ids=frozenset(page.fns),
        skip_queue={i: tuple(map(accepts, fn.inputs)) for i, fn in page.fns.items() if not fn.queue},
        after_join=lambda: forget_unread_sessions(page, MAX_UNREAD_SESSIONS),
        infer=oip.oip_routes.answer,
        pictures={i: at for i, at in editors.items() if at},
        uploads=UPLOADS if pictures else None,
    )
    app.state.service = service

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict:
        """Liveness, the models served, what is still warming up, and whether torch has been imported yet."""
        manifest = service.manifest
        return {
            "ok": manifest is not None,
            "ready": service.ready(),
            "pending": [f"{m}/{f}" for m, f in service.pending],  # (model/format) still loading before ready
            "warm_errors": service.warm_errors,
            "models": list(manifest.models) if manifest else [],
            "error": service.error,
            "torch_imported": "torch" in sys.modules,
        }

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> fastapi.Response:
        """Requests, durations, batch sizes and loaded predictors in Prometheus' text format."""
        return fastapi.Response(service.metrics.text(), media_type=METRICS_CONTENT_TYPE)

    app.include_router(oip)
    app.include_router(api_router(service))  # before the page, so these answer /gradio_api/{call,run}/NAME
    # Gradio keeps state for each session (gradio_client sends one per client; the page one per tab).
    page.state_session_capacity = MAX_SESSIONS
    page.queue(max_size=MAX_QUEUED)
    quiet_queue(page, QUEUE_POLL_S)
    return gr.mount_gradio_app(
        app,
        page,
        path="/",
        footer_links=["api", "gradio"],
        run_history=False,
        show_error=False,  # only gr.Error messages reach the page; anything else stays in the log
        css=css,
        js=js,
    )


class TimedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline for each request's headers, which uvicorn lacks: a
    client that connects and sends its request line and headers slowly, or not at all, is disconnected
    HEADER_TIMEOUT_S after it connected or after its previous response."""

    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        waiting_after = self.cycle  # a new request replaces it
        self._deadline = self.loop.call_later(HEADER_TIMEOUT_S, self._expire, waiting_after)

    def _expire(self, waiting_after: Any) -> None:
        if self.cycle is waiting_after and not self.transport.is_closing():
            self.transport.close()


def listen(host: str, port: int) -> socket.socket:
    """A bound TCP socket on host:port (port 0: a free one); OSError when it cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only for sockets that say so
    # (without it every keep-alive response waits ~40 ms for a delayed ACK)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def url_of(host: str, sock: socket.socket) -> str:
    """http://HOST:PORT/ of a socket bound to `host` (as the user wrote it)."""
    port = sock.getsockname()[1]
    return f"http://[{host}]:{port}/" if sock.family == socket.AF_INET6 else f"http://{host}:{port}/"


class _Libc:
    """glibc's malloc tuning, where the process runs on glibc; elsewhere each call does nothing."""

    def __init__(self) -> None:
        try:
            self.libc: Any = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            self.libc.mallopt, self.libc.malloc_trim  # noqa: B018 - both must exist
        except (OSError, AttributeError):
            self.libc = None

    def map_large_blocks(self) -> None:
        """Map each allocation of 1 MiB or more on its own, unmapped when freed. By default glibc raises that
        threshold to the largest block freed so far (up to 32 MiB), so after one 16 MiB body the next ones
        come from the heap, which it keeps."""
        if self.libc is not None:
            self.libc.mallopt(M_MMAP_THRESHOLD, 1024 * 1024)

    def trim(self) -> None:
        """Give the free pages of every heap back to the system (the chunks a large body arrived in)."""
        if self.libc is not None:
            self.libc.malloc_trim(0)


LIBC = _Libc()


def serve(app: fastapi.FastAPI, sock: socket.socket, on_start: Callable[[], None] | None = None) -> None:
    """Run `app` with uvicorn on `sock` until interrupted; `on_start()` once it accepts connections."""
    import uvicorn

    LIBC.map_large_blocks()

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started and on_start is not None:
                on_start()

    config = uvicorn.Config(
        app,
        http=TimedH11Protocol,
        log_level="warning",
        timeout_graceful_shutdown=2,
        timeout_keep_alive=KEEP_ALIVE_S,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        limit_concurrency=MAX_CONNECTIONS,
    )
    # uvicorn shuts down on SIGINT and SIGTERM, then raises the signal again with the handler it found:
    # for SIGTERM the default one, which would end the process there, before its atexit cleanup (the
    # private temp folder). As KeyboardInterrupt, both end here instead.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the signal it handled; it has shut down cleanly by now
        pass
