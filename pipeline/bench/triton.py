"""The demo's Open Inference Protocol routes against the real Triton server, measured in one run.

triton: the demo (`python demo/app.py`) and Triton (the nvidia-pytriton wheel's server, from
  .venv-triton) both running, the same model's ONNX file on onnxruntime behind each (the demo's
  `<model>_<format>` route, Triton's Python-backend `<model>_<format>_python`), the same one-example
  binary tensor through tritonclient (http.measure_oip), 1 and 16 clients, the two servers
  taking turns (demo, Triton, Triton, demo) so the neighbours' load hits both alike.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline.artifacts.manifest import Manifest
from pipeline.bench.http import measure_oip
from pipeline.bench.timing import Plan
from pipeline.serving import launch

TRITON_CLIENTS = (1, 16)
OIP_SECONDS = {False: 1.5, True: 0.3}  # per server, turn and client count: (full, quick)


def bench_triton(
    artifacts: Path, manifest: Manifest, models: Sequence[str], plan: Plan, log: Callable[[str], None]
) -> dict[str, Any]:
    """Demo OIP against Triton for each of `models`: p50 and requests/s at 1 and 16 clients, and demo/Triton.

    {"skipped": why} when there is no Triton environment (`make triton-env` makes it); TritonServerError
    (one line) when the server does not start.
    """
    from pipeline.serving.naming import PYTHON_FLAVOUR
    from pipeline.serving.triton import build_repository
    from pipeline.serving.triton_server import TritonServerError, find_env, start_server

    try:
        env = find_env()
    except TritonServerError as exc:
        return {"skipped": str(exc)}
    fmt = PYTHON_FLAVOUR.format  # the one file both serve: the default format's, on onnxruntime
    names = {m: (f"{m}_{fmt}", PYTHON_FLAVOUR.model_name(m)) for m in models}
    seconds = OIP_SECONDS[plan.quick]
    turns = 1 if plan.quick else 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-triton-") as repo:
        build_repository(manifest, repo, list(models), flavours=(PYTHON_FLAVOUR,))
        with (
            start_server(repo, [t for _, t in names.values()], env) as triton,
            launch.demo(artifacts, timeout=120) as demo,
        ):
            log(f"  Triton {triton.version} at {triton.url}; demo at {demo.url}")
            for model, (demo_name, triton_name) in names.items():
                for clients in TRITON_CLIENTS:
                    got: dict[str, list[dict[str, float]]] = {"demo": [], "triton": []}
                    for turn in range(turns):
                        order = ("demo", "triton") if turn % 2 == 0 else ("triton", "demo")
                        for who in order:
                            url, name = (demo.url, demo_name) if who == "demo" else (triton.url, triton_name)
                            got[who].append(measure_oip(url, name, clients, seconds))
                    row: dict[str, Any] = {"model": model, "format": fmt, "clients": clients}
                    for who, runs in got.items():
                        row[f"{who}_p50_ms"] = sum(r["p50_ms"] for r in runs) / len(runs)
                        row[f"{who}_per_s"] = sum(r["throughput"] for r in runs) / len(runs)
                    row["p50_ratio"] = row["demo_p50_ms"] / row["triton_p50_ms"]
                    row["throughput_ratio"] = row["demo_per_s"] / row["triton_per_s"]
                    rows.append(row)
                    log(
                        f"  OIP {model} x{clients}: demo p50 {row['demo_p50_ms']:.2f} ms, "
                        f"{row['demo_per_s']:.0f}/s; Triton {row['triton_p50_ms']:.2f} ms, {row['triton_per_s']:.0f}/s"
                    )
            version = triton.version
    return {
        "server": f"Triton Inference Server {version} (nvidia-pytriton wheel, Python backend)",
        "demo": "python demo/app.py (its default --threads 1), OIP routes",
        "seconds_per_turn": seconds,
        "turns_per_server": turns,
        "rows": rows,
    }
