"""`python -m pipeline bench`: what each runtime costs, side by side in one run, and how close to the floor.

The run, top to bottom (each measurement in its own module; every figure a positive number, and
what could not run listed under "skipped" in DIR/bench.json with the reason, in one line):

- latency, latency_summary, throughput (latency.py): every declared (format, runtime) through the
  predictor, its bare call from the same load, and the NumPy floor;
- artifacts (report.py): each exported file's size and largest parity deviation, from the manifest;
- tuning (tuning.py): the settings that are ours to choose, side by side on one model;
- quantized (quantized.py): each derived ONNX format's size, latency and deviation beside its source;
- http, cold_start (http.py): the demo started in a child process, then its routes under load;
- triton (triton.py): the demo's OIP routes against the real Triton server, the same model and tensors;
- training, device_timing (training.py): trainer against a seed-style loop, train/export wall time,
  and seed 004 §10.8's matrix product;
- targets (report.py): each goal, the figure it is judged on and whether it is met.

No stage here names a model: the catalog declares which models the goals are about (`bench_roles`,
read by roles.py), and bench.json's "roles" records which were picked.
BENCHMARKS.md records a run, what limits each figure and what each tuning setting did.
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pipeline import formats
from pipeline.artifacts.fileio import atomic_write_json
from pipeline.artifacts.manifest import Manifest, model_names
from pipeline.bench import roles
from pipeline.bench.http import HTTP_CLIENTS, HTTP_FORMATS, bench_demo
from pipeline.bench.latency import Sweep, bench_latency, bench_targets, bench_throughput, latency_summary
from pipeline.bench.quantized import bench_quantized
from pipeline.bench.report import artifact_rows, figures, tables, targets
from pipeline.bench.timing import BATCH_SIZES, FULL, QUICK, BenchError, Plan
from pipeline.bench.training import bench_device_timing, bench_training, bench_walls
from pipeline.bench.triton import bench_triton
from pipeline.bench.tuning import bench_tuning
from pipeline.errors import one_line
from pipeline.runtime.devices import cuda_status, resolve_torch_device
from pipeline.runtime.loaders import quiet_torchscript
from pipeline.runtime.predictor import PredictorCache

__all__ = ["BATCH_SIZES", "HTTP_CLIENTS", "HTTP_FORMATS", "BenchError", "figures", "run_bench", "tables"]

BENCH_JSON = "bench.json"


def select_models(manifest: Manifest, models: str, quick: bool) -> list[str]:
    """The models to measure: 'all' (the manifest's; with --quick, the ones the goals name) or a,b,c."""
    if model_names(models) is not None:
        return manifest.select(models)
    return roles.quick_models(manifest) if quick else list(manifest.models)


def training_device(requested: str) -> str:
    """Where the training section runs: the GPU for 'auto' where torch can use one, else the CPU."""
    if requested == "auto":
        return resolve_torch_device(formats.CUDA)[0] if cuda_status(formats.TORCH.name)[0] else formats.CPU
    return resolve_torch_device(requested)[0]


def machine() -> dict[str, Any]:
    """The CPU, memory, system and load the run had."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = None
    with contextlib.suppress(ImportError):
        import psutil

        memory = round(psutil.virtual_memory().total / 2**30, 1)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": memory,
        "system": platform.platform(),
        "load_average_1m_at_start": load,
    }


def versions() -> dict[str, str]:
    """What made the artifacts (export's list), and what serves the demo."""
    from importlib import metadata

    from pipeline.export import versions as export_versions

    out = export_versions()
    for dist in ("onnxruntime-gpu", "gradio", "httpx"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out


def run_bench(
    artifacts: Path,
    models: str = "all",
    device: str = "auto",
    quick: bool = False,
    http: bool = True,
    output: Path | None = None,
    log: Callable[[str], None] = print,
    threads: int | None = None,
) -> dict[str, Any]:
    """Run every section and write the JSON; returns the result.

    A section that fails is listed under "skipped" and the others still run; bench.json is written
    either way. A failed HTTP request then fails the run (BenchError), as the section promises.
    """
    plan: Plan = QUICK if quick else FULL
    started = time.perf_counter()
    artifacts = Path(artifacts)
    manifest = Manifest.load(artifacts)
    names = select_models(manifest, models, quick)
    runnable, not_here = bench_targets(device)
    devices = list(dict.fromkeys(t.device for t in runnable))
    train_device = training_device(device)
    result = _header(manifest, names, quick, threads)
    log(f"bench ({'quick' if quick else 'full'}): models {', '.join(names)}; devices {', '.join(devices)}")
    sections = Sections(log, list(not_here))
    cache = PredictorCache(manifest, threads=threads)  # threads: torch.set_num_threads and onnxruntime's
    _runtime_sections(result, sections, Sweep(manifest, names, runnable, plan, cache, sections.skipped, log))
    del cache
    gc.collect()
    _serving_sections(result, sections, artifacts, manifest, names, plan, http)
    with sections("training", "4. training"):
        result["training"]["steps"] = bench_training(names, train_device, plan, log)
    with sections("walls", "4. wall time of train and export"):
        result["training"]["walls"] = bench_walls(result["roles"]["walls"], train_device, log)
    with sections("device_timing", "6. seed 004 §10.8 device timing"):
        result["device_timing"] = bench_device_timing(plan, log)
    result["section_seconds"] = sections.seconds
    result["targets"] = targets(result)
    result["skipped"] = sections.skipped
    result["seconds"] = time.perf_counter() - started
    if hasattr(os, "getloadavg"):
        result["machine"]["load_average_1m_at_end"] = os.getloadavg()[0]
    out = Path(output) if output else artifacts / BENCH_JSON
    atomic_write_json(out, result)
    log("")
    log(tables(result))
    log(f"\nbench took {result['seconds']:.0f} s; results in {out}")
    if sections.failed:
        raise BenchError(f"{sections.failed[0]} (the other figures are in {out})")
    return result


class Sections:
    """Runs each section, timing it; one that fails is listed under "skipped" and the others still run."""

    def __init__(self, log: Callable[[str], None], skipped: list[str]) -> None:
        self.log, self.skipped = log, skipped
        self.failed: list[BenchError] = []  # failed HTTP requests: they fail the run once bench.json is written
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str, title: str) -> Iterator[None]:
        self.log(title)
        start = time.perf_counter()
        try:
            with quiet_torchscript():  # TorchScript is deprecated in favour of .pt2; it is measured on purpose
                yield
        except Exception as exc:  # noqa: BLE001 - one section's failure must not lose the others' figures
            self.skipped.append(f"section {name}: {one_line(exc)}")
            self.log(f"  {name} failed: {one_line(exc)}")
            if name == "http" and isinstance(exc, BenchError):
                self.failed.append(exc)
        self.seconds[name] = time.perf_counter() - start


def _header(manifest: Manifest, names: list[str], quick: bool, threads: int | None) -> dict[str, Any]:
    """bench.json before any measurement: the command, the machine, the versions, every section empty."""
    import torch

    return {
        "command": " ".join(["python -m pipeline bench", *sys.argv[2:]]) if sys.argv[1:2] == ["bench"] else "",
        "quick": quick,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "versions": versions(),
        "threads_option": threads or "default",
        "torch_threads_at_start": torch.get_num_threads(),
        "ort_threads": threads or int(os.environ.get("PIPELINE_ORT_THREADS", "1")),
        "latency": [],
        "latency_summary": [],
        "artifacts": artifact_rows(manifest, names),
        "throughput": [],
        "tuning": [],
        "quantized": {},
        "http": {},
        "triton": {},
        "cold_start": {},
        "training": {"steps": [], "walls": {}},
        "device_timing": [],
        "roles": roles.roles(manifest, names, quick),
    }


def _runtime_sections(result: dict[str, Any], sections: Sections, sweep: Sweep) -> None:
    """Latency, throughput, tuning and the derived formats: the runtimes in this process."""
    import torch

    manifest, names, plan, log = sweep.manifest, sweep.models, sweep.plan, sweep.log
    with sections("latency", "1. single-example latency"):
        result["latency"] = bench_latency(sweep)
        result["latency_summary"] = latency_summary(result["latency"])
        result["torch_threads"] = torch.get_num_threads()  # in effect once the predictors are loaded
    with sections("throughput", "2. batch throughput"):
        result["throughput"] = bench_throughput(sweep)
    with sections("tuning", "tuning: settings side by side"):
        tuned = result["roles"]["floor"]
        result["tuning"] = bench_tuning(manifest, tuned, plan, log) if tuned else []
    with sections("quantized", "derived ONNX formats beside their source"):
        result["quantized"] = bench_quantized(manifest, names, plan, log)


def _serving_sections(
    result: dict[str, Any],
    sections: Sections,
    artifacts: Path,
    manifest: Manifest,
    names: list[str],
    plan: Plan,
    http: bool,
) -> None:
    """The demo over HTTP and its cold start, then the demo against Triton; all skipped with --skip-http."""
    if not http:
        result["http"], result["cold_start"] = {"skipped": "--skip-http"}, {"skipped": "--skip-http"}
        result["triton"] = {"skipped": "--skip-http"}
        return
    log = sections.log
    with sections("http", "3 and 5. the demo: cold start, then HTTP"):
        result["http"], result["cold_start"] = bench_demo(artifacts, manifest, names, plan, sections.skipped, log)
    with sections("triton", "the demo's OIP routes against the real Triton server"):
        result["triton"] = bench_triton(artifacts, manifest, result["roles"]["http"], plan, log)
    if "skipped" in result["triton"]:
        sections.skipped.append(f"triton: {result['triton']['skipped']}")
