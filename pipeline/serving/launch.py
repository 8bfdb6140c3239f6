"""One way to run the demo in a child process and wait for it: used by the benchmarks and the tests.

    with launch.demo(artifacts) as running:
        httpx.get(running.url)          # it answers; running.ready_s says how long that took

The child is `python demo/app.py --artifacts DIR --host HOST --port N`, its output in a temporary
log (running.output() reads its end). Readiness is a GET of the page answering 200, or any probe
the caller passes (the benchmarks wait for a first prediction). On exit the child gets SIGTERM:
uvicorn stops at once on it, while SIGINT waits for open event streams to drain.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "demo" / "app.py"
SERVING = "demo: serving"  # what demo/app.py prints once it listens
STOP_SECONDS = 10.0  # how long SIGTERM may take before the child is killed


class DemoFailed(UserError, RuntimeError):
    """The demo exited or never answered; the message ends with its output."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def page_answers(client: Any, url: str) -> bool:
    """The default readiness probe: the page answers 200."""
    return client.get(url + "/").status_code == 200


@dataclass
class RunningDemo:
    """A demo child process that has answered."""

    process: subprocess.Popen
    url: str  # "http://127.0.0.1:PORT"
    ready_s: float  # from starting the process to the probe's first success
    listening_s: float | None  # from starting the process to its "serving" line, when it was seen
    output: Callable[[], str]  # the end of its stdout and stderr so far


@contextlib.contextmanager
def demo(
    artifacts: Path | str,
    port: int | None = None,
    *,
    host: str = "127.0.0.1",
    env: dict[str, str] | None = None,
    args: Sequence[str] = (),
    timeout: float = 90.0,
    ready: Callable[[Any, str], bool] = page_answers,
    poll_seconds: float = 0.05,
) -> Iterator[RunningDemo]:
    """Start the demo on `host`:`port` (a free port when None), wait until `ready(client, url)` holds,
    yield it, and stop it on exit. DemoFailed, quoting its output, if it exits or is not ready in time.

    `ready` gets an httpx.Client and the base URL; a connection error counts as "not yet".
    """
    import httpx

    port = free_port(host) if port is None else port
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    log = tempfile.NamedTemporaryFile(prefix="demo-", suffix=".log", delete=False)  # noqa: SIM115
    full_env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1", **(env or {})}
    cmd = [sys.executable, str(APP), "--artifacts", str(artifacts), "--host", host, "--port", str(port), *args]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)

    def output(limit: int = 4000) -> str:
        log.flush()
        return Path(log.name).read_text(errors="replace")[-limit:]

    # The "serving" line is watched apart from the probe: the socket is bound before the app is built, so a
    # probe that connects then waits in the backlog and returns after the line was printed, unseen.
    seen: dict[str, float] = {}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set() and proc.poll() is None:
            if SERVING in output():
                seen["at"] = time.perf_counter() - start
                return
            time.sleep(poll_seconds)

    watcher = threading.Thread(target=watch, name="demo-serving-line", daemon=True)
    watcher.start()
    try:
        with httpx.Client(timeout=30.0) as client:
            while True:
                if proc.poll() is not None:
                    raise DemoFailed(f"the demo exited with code {proc.returncode} before answering:\n{output()}")
                try:
                    if ready(client, url):
                        break
                except httpx.TransportError:  # not listening yet
                    pass
                if time.perf_counter() - start > timeout:
                    raise DemoFailed(f"the demo was not ready on {url} within {timeout:.0f} s:\n{output()}")
                time.sleep(poll_seconds)
        ready_s = time.perf_counter() - start
        watcher.join(timeout=1.0)  # a line printed in the last poll interval is seen within one more
        yield RunningDemo(proc, url, ready_s, seen.get("at"), output)
    finally:
        done.set()
        stop(proc)
        log.close()
        os.unlink(log.name)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it has not exited within STOP_SECONDS."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_SECONDS)
