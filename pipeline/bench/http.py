"""The demo over HTTP: its cold start, then its routes under load.

cold start: seconds from `python demo/app.py` to the first successful prediction (pipeline.serving.launch).
http: the demo's `predict` over loopback with each of HTTP_CLIENTS concurrent clients: Gradio's
documented /call route, the same with a session_hash per client (as gradio_client sends), Gradio's
one-request /run route and the Open Inference Protocol route, each where the demo answers it. Any
failed request fails the run.
measure_oip: one Open Inference Protocol server (the demo's routes or Triton) through tritonclient, as
the remote runtime calls it; the Triton comparison (bench/triton.py) times both servers with it.
Every load here runs through one loop, run_clients.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import formats
from pipeline.artifacts.manifest import Manifest
from pipeline.bench import roles
from pipeline.bench.timing import BenchError, Plan
from pipeline.errors import one_line
from pipeline.serving import launch

# The default format and every other float32 format Triton serves (the derived ones are timed by latency alone).
HTTP_FORMATS = (
    formats.DEFAULT_FORMAT,
    *(f for f in formats.TRITON_FORMATS if f != formats.DEFAULT_FORMAT and formats.get(f).source is None),
)
HTTP_CLIENTS = (1, 8)
READY_SECONDS = 180.0  # the longest the demo may take to give its first prediction
MAX_REFUSALS = 20  # predictions refused while the demo is listening but not ready, before it is an error


@dataclass(frozen=True)
class PredictCall:
    """One prediction to ask the demo for."""

    model: str
    format: str
    device: str
    input_name: str
    features: list[float]


def gradio_predict(client: Any, base: str, target: PredictCall, session: bool = False) -> dict[str, Any]:
    """The demo's Gradio `predict` route as curl calls it (README), or with one session_hash per client
    connection as gradio_client sends it. Any error fails the run."""
    from pipeline.serving.client import PredictError, call_predict

    what = f"predict({target.model}, {target.format})"
    hash_ = f"bench-{id(client):x}" if session else None
    try:
        result = call_predict(client, base, target.model, target.format, target.device, target.features, session=hash_)
    except PredictError as exc:
        raise BenchError(f"{what} failed: {exc}") from None
    if "outputs" not in result:
        raise BenchError(f"{what} answered without outputs: {result}")
    return result


def gradio_predict_session(client: Any, base: str, target: PredictCall) -> dict[str, Any]:
    """gradio_predict with a session_hash."""
    return gradio_predict(client, base, target, session=True)


def gradio_run(client: Any, base: str, target: PredictCall) -> dict[str, Any]:
    """Gradio's direct route for the same function: one POST /gradio_api/run/predict, no queue."""
    body = {"data": [target.model, target.format, target.device, target.features]}
    answer = client.post(base + "/gradio_api/run/predict", json=body)
    if answer.status_code != 200:
        raise BenchError(f"POST /gradio_api/run/predict answered {answer.status_code}: {answer.text[:300]}")
    data = answer.json().get("data")
    if not isinstance(data, list) or not data or "outputs" not in data[0]:
        raise BenchError(f"/gradio_api/run/predict answered no outputs: {answer.text[:300]}")
    return data[0]


def oip_infer(client: Any, base: str, target: PredictCall) -> dict[str, Any]:
    """The Open Inference Protocol route: POST /v2/models/{model}/infer with a JSON tensor."""
    tensor = {
        "name": target.input_name,
        "shape": [1, len(target.features)],
        "datatype": "FP32",
        "data": target.features,
    }
    body = {"inputs": [tensor], "parameters": {"format": target.format}}
    answer = client.post(f"{base}/v2/models/{target.model}/infer", json=body)
    what = f"infer {target.model} ({target.format})"
    if answer.status_code != 200:
        raise BenchError(f"{what} answered {answer.status_code}: {answer.text[:300]}")
    data = answer.json()
    if not data.get("outputs"):
        raise BenchError(f"{what} answered no outputs: {str(data)[:300]}")
    return data


Request = Callable[[Any, str, PredictCall], dict[str, Any]]
ROUTES: dict[str, Request] = {
    "gradio /call/predict": gradio_predict,  # the documented route (README's curl, tests/demo_server.py)
    "gradio /call/predict + session_hash": gradio_predict_session,  # what gradio_client sends
    "gradio /run/predict": gradio_run,  # README's one-request curl, where the demo answers it
    "OIP /v2 infer": oip_infer,  # where the demo has the Open Inference Protocol routes
}
PRIMARY_ROUTE = "gradio /call/predict"


def run_clients(
    clients: int,
    connect: Callable[[], contextlib.AbstractContextManager[Any]],
    call: Callable[[Any], Any],
    *,
    requests: int | None = None,
    seconds: float | None = None,
) -> tuple[list[float], list[Any], list[str], float]:
    """The one load loop: `clients` threads, each with its own connection from `connect()`, making one warm-up
    call, then, once all are warm, `call(connection)` `requests` times or for `seconds`.
    Returns (latencies in s, the answers, errors in one line each, wall s from the start to the last answer)."""
    latencies: list[float] = []
    answers: list[Any] = []
    errors: list[str] = []
    lock = threading.Lock()
    ready = threading.Barrier(clients + 1)

    def worker() -> None:
        with connect() as connection:
            try:
                call(connection)  # a warm connection (and a first run), not counted
            except Exception as exc:  # noqa: BLE001 - every error is kept and fails the run
                with lock:
                    errors.append(one_line(exc))
            ready.wait()
            deadline = time.perf_counter() + (seconds or 0.0)
            done = 0
            while (done < requests) if requests is not None else (time.perf_counter() < deadline):
                done += 1
                start = time.perf_counter()
                try:
                    answer = call(connection)
                except Exception as exc:  # noqa: BLE001
                    with lock:
                        errors.append(one_line(exc))
                    continue
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
                    answers.append(answer)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return latencies, answers, errors, time.perf_counter() - start


def load_test(
    request: Request, base: str, target: PredictCall, clients: int, requests: int
) -> tuple[list[float], list[float], list[str], float]:
    """`request` to the demo from `clients` connections, `requests` calls each (run_clients):
    (latencies in s, server-side predict times in ms where the route reports them, errors, wall s)."""
    import httpx

    latencies, answers, errors, wall = run_clients(
        clients, lambda: httpx.Client(timeout=60.0), lambda client: request(client, base, target), requests=requests
    )
    server_ms = [float(a["latency_ms"]) for a in answers if isinstance(a.get("latency_ms"), (int, float))]
    return latencies, [ms for ms in server_ms if ms > 0], errors, wall


def measure_oip(url: str, model: str, clients: int = 1, seconds: float = 3.0) -> dict[str, float]:
    """{p50_ms, throughput}: `clients` connections each sending one-example requests to `model` at `url` for
    `seconds` (run_clients); BenchError if any fails.

    `model` is the Triton model name (e.g. adder_mynet_onnx, or adder_mynet_onnx_python); the input is
    zeros of the width the server's metadata gives, sent as a binary tensor through tritonclient, as
    the remote runtime sends it. Throughput is requests per second over all clients.
    """
    import tritonclient.http as httpclient

    address = url.split("://", 1)[1].rstrip("/")
    with httpclient.InferenceServerClient(address) as probe:
        spec = probe.get_model_metadata(model)["inputs"][0]
    x = np.zeros([1, *spec["shape"][1:]], dtype=np.float32)
    tensor = httpclient.InferInput(spec["name"], list(x.shape), spec["datatype"])
    tensor.set_data_from_numpy(x, binary_data=True)
    latencies, _, errors, wall = run_clients(
        clients,
        lambda: httpclient.InferenceServerClient(address),
        lambda client: client.infer(model, [tensor]),
        seconds=seconds,
    )
    if errors:
        raise BenchError(f"{model} at {url}: {len(errors)} requests failed, e.g. {errors[0]}")
    p50 = float(np.median(latencies) * 1000) if latencies else float("nan")
    return {"p50_ms": p50, "throughput": len(latencies) / wall}


def import_seconds(module: str) -> float:
    """Seconds a fresh interpreter takes to import `module`."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=launch.ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"python -c 'import {module}' failed: {proc.stderr.strip()[-300:]}")
    return float(proc.stdout.strip().splitlines()[-1])


def first_prediction(target: PredictCall) -> Callable[[Any, str], bool]:
    """A readiness probe for pipeline.serving.launch: the demo gave `target`'s prediction (a few refusals allowed)."""
    refusals = 0

    def ready(client: Any, base: str) -> bool:
        nonlocal refusals
        try:
            gradio_predict(client, base, target)
            return True
        except BenchError:  # listening, but the route is not ready: a few tries, then it is an error
            refusals += 1
            if refusals > MAX_REFUSALS:
                raise
            return False

    return ready


def _row(route: str, tgt: PredictCall, clients: int, lat: list[float], server_ms: list[float], wall: float) -> dict:
    ms = np.asarray(lat) * 1e3
    row = {
        "route": route,
        "model": tgt.model,
        "format": tgt.format,
        "device": tgt.device,
        "clients": clients,
        "requests": len(lat),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "requests_per_s": len(lat) / wall,
    }
    if server_ms:
        row["server_predict_p50_ms"] = float(np.median(server_ms))
    return row


def bench_demo(
    artifacts: Path,
    manifest: Manifest,
    models: Sequence[str],
    plan: Plan,
    skipped: list[str],
    log: Callable[[str], None],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Cold start of the demo, then its routes under load: (http section, cold_start section)."""
    http_models = roles.http_models(manifest, models)
    first = _target(manifest, http_models[0], HTTP_FORMATS[0])
    try:
        with launch.demo(artifacts, timeout=READY_SECONDS, ready=first_prediction(first), poll_seconds=0.01) as running:
            cold: dict[str, Any] = {
                "seconds": running.ready_s,
                "request": f"{first.model} {first.format} {first.device}",
                "command": "python demo/app.py --artifacts DIR --host 127.0.0.1 --port PORT",
            }
            if running.listening_s is not None:
                cold["listening_s"] = running.listening_s  # when the demo printed its URL (imports and app built)
            log(f"  cold start: {cold['seconds']:.2f} s to the first {first.model} prediction")
            if not plan.quick:  # what the start is made of: importing the demo, most of it gradio
                for module in ("gradio", "demo.app"):
                    cold[f"import_{module.replace('.', '_')}_s"] = import_seconds(module)
            routes = answered_routes(running.url, first, skipped)
            rows = [
                row
                for route in routes
                for model in http_models
                for fmt in HTTP_FORMATS
                for row in route_rows(route, running.url, _target(manifest, model, fmt), plan, log)
            ]
    except launch.DemoFailed as exc:
        raise BenchError(str(exc)) from None
    return {"routes": routes, "rows": rows, "errors": "none: any failed request fails the run"}, cold


def _target(manifest: Manifest, model: str, fmt: str) -> PredictCall:
    entry = manifest.model(model)
    return PredictCall(model, fmt, formats.CPU, entry.input["name"], [float(v) for v in entry.examples[0]])


def answered_routes(base: str, target: PredictCall, skipped: list[str]) -> list[str]:
    """The primary route and every other route the demo answers (the others are skipped, with why)."""
    import httpx

    routes = [PRIMARY_ROUTE]
    with httpx.Client(timeout=30.0) as client:
        for route, request in ROUTES.items():
            if route == PRIMARY_ROUTE:
                continue
            try:
                request(client, base, target)
                routes.append(route)
            except (BenchError, httpx.HTTPError) as exc:
                skipped.append(f"http {route}: {one_line(exc)}")
    return routes


def route_rows(route: str, base: str, tgt: PredictCall, plan: Plan, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """`route` for `tgt` with each of HTTP_CLIENTS concurrent clients: a row each; any failed request is an error."""
    rows = []
    for clients in HTTP_CLIENTS:
        per_client = plan.http_requests if clients == 1 else max(plan.http_requests // 4, 3)
        lat, server_ms, errors, wall = load_test(ROUTES[route], base, tgt, clients, per_client)
        if errors:
            raise BenchError(
                f"{route} {tgt.model} {tgt.format} with {clients} clients: {len(errors)} of "
                f"{clients * per_client} requests failed, e.g. {errors[0]}"
            )
        rows.append(_row(route, tgt, clients, lat, server_ms, wall))
        r = rows[-1]
        log(
            f"  http {route} {tgt.model} {tgt.format} x{clients}: p50 {r['p50_ms']:.2f} ms, "
            f"p99 {r['p99_ms']:.2f} ms, {r['requests_per_s']:.0f} req/s"
        )
    return rows
