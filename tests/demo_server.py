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
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from pipeline.serving.client import PredictError  # noqa: F401 - re-exported for the tests
from pipeline.serving.client import call_predict as _call_predict

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "demo" / "app.py"


class DemoFailed(RuntimeError):
    """The demo process exited or never answered; the message ends with its output."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


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
    """`python demo/app.py --artifacts ARTIFACTS --port PORT` until the page answers; yields its base
    URL ("http://127.0.0.1:PORT"), and stops the process on exit. The process's output goes to a
    temporary log, quoted in the exception if it dies or does not answer within `timeout` seconds."""
    port = free_port(host) if port is None else port
    base_url = f"http://{host}:{port}"
    log = tempfile.NamedTemporaryFile(prefix="demo-", suffix=".log", delete=False)  # noqa: SIM115
    full_env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1", **(env or {})}
    cmd = [sys.executable, str(APP), "--artifacts", str(artifacts), "--host", host, "--port", str(port)]
    proc = subprocess.Popen([*cmd, *args], cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)

    def output() -> str:
        log.flush()
        return Path(log.name).read_text(errors="replace")[-4000:]

    try:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while True:
                if proc.poll() is not None:
                    raise DemoFailed(f"demo exited with code {proc.returncode} before answering:\n{output()}")
                try:
                    if client.get(base_url + "/").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise DemoFailed(f"demo did not answer on {base_url} within {timeout:.0f} s:\n{output()}")
                time.sleep(0.1)
        yield base_url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # uvicorn shuts down at once; SIGINT waits on open streams
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        log.close()
        os.unlink(log.name)


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
