"""The demo's HTTP server: request limits, the FastAPI app around the page, and uvicorn.

`create_app(service, page)` mounts the Gradio page at "/", the Open Inference Protocol routes at
/v2 (pipeline/oip.py) and /healthz, all over the one Service; `serve(app, host, port)` runs it.
Every limit on what a client may send is declared here.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
from typing import Any

import fastapi
import gradio as gr

from pipeline.oip import MAX_BODY_BYTES as OIP_MAX_BODY_BYTES
from pipeline.oip import oip_router
from pipeline.service import Service

log = logging.getLogger("demo")

# A predict request carries at most MAX_TEXT_CHARS (200,000) characters of input: 1 MiB of JSON is
# plenty. /v2 (the Open Inference Protocol) takes batches, so a larger limit.
MAX_REQUEST_BYTES = 1024 * 1024
BODY_LIMITS = (  # (path prefix, bytes, the key the error message goes under), the first match applies
    ("/v2/", OIP_MAX_BODY_BYTES, "error"),  # the protocol's error form
    ("/", MAX_REQUEST_BYTES, "detail"),  # FastAPI's and Gradio's
)
# Gradio's upload route, refused unless a model takes a picture (the image editor uploads through it): on any
# other page it would only store (and serve back) strangers' files.
REFUSED_ROUTES = ("/gradio_api/upload", "/upload")
MAX_SESSIONS = 256  # Gradio sessions kept in memory, the least recently used dropped first (see create_app)


class RequestLimits:
    """ASGI middleware: a request's whole body is read here, up to its route's limit (BODY_LIMITS), before
    any route sees it: 413 for a body over the limit, declared or streamed; 404 for the `refused` routes."""

    def __init__(
        self,
        app: Any,
        limits: tuple[tuple[str, int, str], ...] = BODY_LIMITS,
        refused: tuple[str, ...] = REFUSED_ROUTES,
    ) -> None:
        self.app, self.limits, self.refused = app, limits, refused

    def limit(self, path: str) -> tuple[int, str]:
        """(bytes, error key) for a request to `path`."""
        for prefix, max_bytes, key in self.limits:
            if path.startswith(prefix) or path == prefix.rstrip("/"):
                return max_bytes, key
        return self.limits[-1][1], self.limits[-1][2]

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        max_bytes, key = self.limit(path)
        if path.rstrip("/") in self.refused:
            return await _json_response(send, 404, key, "not found")
        too_large = f"request body over the limit of {max_bytes:,} bytes"
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
            return await _json_response(send, 413, key, too_large)
        chunks, seen, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > max_bytes:  # a chunked body with no Content-Length
                return await _json_response(send, 413, key, too_large)
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: the client's disconnect, for streaming responses
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)


async def _json_response(send: Any, status: int, key: str, message: str) -> None:
    body = json.dumps({key: message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app(service: Service, page: gr.Blocks, *, css: str | None = None, js: str | None = None) -> fastapi.FastAPI:
    """The FastAPI app: `page` at "/", the Open Inference Protocol at /v2, /healthz, and the request limits;
    `app.state.service` is the one Service they all ask."""
    app = fastapi.FastAPI(title="seed-pipeline demo", docs_url=None, redoc_url=None, openapi_url=None)
    entries = service.manifest.models.values() if service.manifest else ()
    pictures = any(t.get("image") for e in entries for t in e.inputs)
    # oversized bodies, and uploads where no model takes a picture, are refused before any route sees them
    app.add_middleware(RequestLimits, refused=() if pictures else REFUSED_ROUTES)
    app.state.service = service

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict:
        """Liveness, the models served, and whether any torch runtime has been loaded yet."""
        manifest = service.manifest
        return {
            "ok": manifest is not None,
            "models": list(manifest.models) if manifest else [],
            "error": service.error,
            "torch_imported": "torch" in sys.modules,
        }

    app.include_router(oip_router(service))  # /v2/...: KServe v2 / Triton's HTTP API over the same predictors
    # Gradio keeps state for each session, and an API call that names none (curl, httpx) gets a new
    # one: about 130 KB for this page, 10,000 of them by default. Bounded, memory stays flat under load.
    page.state_session_capacity = MAX_SESSIONS
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


def serve(app: fastapi.FastAPI, sock: socket.socket, on_start: Any = None) -> None:
    """Run `app` with uvicorn on `sock` until interrupted; `on_start()` once it accepts connections."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started and on_start is not None:
                on_start()

    server = Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled; it has shut down cleanly by now
        pass
