"""Launch the demo in a subprocess and call its `predict` endpoint over HTTP (shared by the demo,
benchmark and robustness tests).

    with running_demo(artifacts) as base_url:
        result = call_predict(base_url, "adder_mynet", "onnx", "cpu", "10 11")

`call_predict` speaks the documented Gradio routes with plain httpx: POST
/gradio_api/call/predict {"data": [...]} -> {"event_id"}, then GET
/gradio_api/call/predict/{event_id}, an event stream ending in `complete` (data: [result]) or
`error` (data: {"error": message}). A failure raises PredictError carrying that message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from pipeline.serving.client import PredictError  # noqa: F401 - re-exported for the tests
from pipeline.serving.client import call_predict as _call_predict
from pipeline.serving.launch import APP, ROOT, DemoFailed, demo, free_port  # noqa: F401 - re-exported for the tests


@contextlib.contextmanager
def running_demo(
    artifacts: Path,
    port: int | None = None,
    env: dict[str, str] | None = None,
    *,
    host: str = "127.0.0.1",
    timeout: float = 90.0,
    args: tuple[str, ...] = (),
) -> Iterator[str]:
    """`python demo/app.py --artifacts ARTIFACTS --port PORT` (pipeline.serving.launch.demo) until the page
    answers; yields its base URL ("http://127.0.0.1:PORT"), and stops the process on exit. DemoFailed, quoting
    the process's output, if it dies or does not answer within `timeout` seconds."""
    with demo(artifacts, port, host=host, env=env, args=args, timeout=timeout, poll_seconds=0.1) as running:
        yield running.url


def call_predict(
    base_url: str,
    model: str,
    fmt: str,
    device: str,
    features: Any,
    *,
    timeout: float = 60.0,
    client: httpx.Client | None = None,
    session: str | None = None,
) -> dict:
    """The demo's `predict` over HTTP (call, then its event stream): the result object, or PredictError."""
    if client is not None:
        return _call_predict(client, base_url, model, fmt, device, features, session=session, timeout=timeout)
    with httpx.Client(timeout=timeout) as own:
        return _call_predict(own, base_url, model, fmt, device, features, session=session)
