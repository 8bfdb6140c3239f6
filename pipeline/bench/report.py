"""The report: the targets, each file's size and deviation, and the run as tables.

Each table is declared as data (a title, where its rows are in bench.json, and its columns) and
printed with pipeline.tables.text_table, as text for the terminal or Markdown for BENCHMARKS.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline import formats
from pipeline.artifacts.manifest import Manifest
from pipeline.bench.timing import BATCH_SIZES
from pipeline.tables import text_table

GOALS = {
    "predictor_over_bare": 1.1,
    "best_over_floor": 1.5,
    "http_p50_ms": 15.0,
    "trainer_over_bare": 1.1,
    "cold_start_s": 8.0,
}


def artifact_rows(manifest: Manifest, models: Sequence[str]) -> list[dict[str, Any]]:
    """Per model and exported format: its file size and largest deviation from the reference (parity rows)."""
    rows = []
    for model in models:
        entry = manifest.model(model)
        parity = (entry.raw.get("parity") or {}).get("rows") or []
        for fmt in formats.EXPORTED:
            if fmt not in entry.artifacts:
                continue
            mine = [r for r in parity if r.get("format") == fmt]
            abs_ = [r["max_abs"] for r in mine if isinstance(r.get("max_abs"), (int, float))]
            rel = [r["max_rel"] for r in mine if isinstance(r.get("max_rel"), (int, float))]
            rows.append(
                {
                    "model": model,
                    "format": fmt,
                    "bytes": entry.artifacts[fmt].bytes,
                    "max_abs": max(abs_) if abs_ else None,
                    "max_rel": max(rel) if rel else None,
                    "checks": len(mine),
                    "passed": bool(mine) and all(r.get("passed") for r in mine),
                }
            )
    return rows


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal against the figure it is judged on."""
    out = []

    def add(name: str, goal: float, value: float, detail: str) -> None:
        out.append({"target": name, "goal": goal, "value": value, "met": bool(value <= goal), "detail": detail})

    by_runtime: dict[str, list[dict[str, Any]]] = {}
    for row in result["latency"]:
        by_runtime.setdefault(f"{row['format']}/{row['runtime']} ({row['device']})", []).append(row)
    for runtime, rows in by_runtime.items():
        worst = max(rows, key=lambda r: r["predictor_over_bare"])
        median = float(np.median([r["predictor_over_bare"] for r in rows]))
        detail = f"worst model: {worst['model']}; median over models {median:.3f}"
        add(f"predictor p50 / bare p50, {runtime}", GOALS["predictor_over_bare"], worst["predictor_over_bare"], detail)
    floor_model = result.get("roles", {}).get("floor")  # the catalog's "floor" model (roles.py)
    for row in result["latency_summary"]:
        if row["model"] == floor_model:
            what = f"fastest runtime / NumPy floor, {floor_model} single example"
            add(what, GOALS["best_over_floor"], row["best_over_floor"], f"fastest: {row['best']}")
    for row in result["http"].get("rows", []):
        if row["clients"] == 1:
            what = f"HTTP p50, 1 client, {row['route']} {row['model']} {row['format']}"
            add(what, GOALS["http_p50_ms"], row["p50_ms"], f"p99 {row['p99_ms']:.2f} ms")
    for row in result["training"].get("steps", []):
        detail = f"{row['trainer_step_us']:.1f} vs {row['bare_step_us']:.1f} us/step"
        add(
            f"trainer step / seed-style step, {row['model']}",
            GOALS["trainer_over_bare"],
            row["trainer_over_bare"],
            detail,
        )
    if "seconds" in result["cold_start"]:
        detail = "python demo/app.py to the first successful predict"
        add("demo cold start (s)", GOALS["cold_start_s"], result["cold_start"]["seconds"], detail)
    return out


# ---- the tables -------------------------------------------------------------------------------------------

Value = str | Callable[[dict[str, Any]], Any]  # a row's key, or a function of the row


@dataclass(frozen=True)
class Table:
    """One table of the report: its title, where its rows are in bench.json ("http.rows") and its columns."""

    title: str
    rows: str
    columns: tuple[tuple[str, Value], ...]  # (header, value)

    def render(self, result: dict[str, Any], markdown: bool) -> str | None:
        rows: Any = result
        for key in self.rows.split("."):
            rows = rows.get(key, {}) if isinstance(rows, dict) else {}
        if not rows:
            return None
        cells = [[v(r) if callable(v) else r.get(v) for _, v in self.columns] for r in rows]
        return self.title + "\n" + text_table([h for h, _ in self.columns], cells, markdown)


def runtime_of(row: dict[str, Any]) -> str:
    return f"{row['format']}/{row['runtime']}"


BIG = f"batch_{BATCH_SIZES[-1]}"


def cold_start_line(result: dict[str, Any]) -> str | None:
    """The demo's cold start as a sentence, when it was measured."""
    cold = result.get("cold_start", {})
    if "seconds" not in cold:
        return None
    parts = [
        f"{k.removesuffix('_s').replace('_', ' ')} {v:.2f} s"
        for k, v in cold.items()
        if k.endswith("_s") and isinstance(v, float)
    ]
    return f"Demo cold start: {cold['seconds']:.2f} s to the first prediction ({'; '.join(parts)})"


def not_applicable_line(result: dict[str, Any]) -> str | None:
    """The derived formats export wrote no file for, and why, as a sentence."""
    missing = result.get("quantized", {}).get("not_applicable", {})
    parts = [f"{model} {fmt}: {why}" for model, by_fmt in missing.items() for fmt, why in by_fmt.items()]
    return "Not applicable: " + "; ".join(parts) if parts else None


def triton_skipped_line(result: dict[str, Any]) -> str | None:
    """Why the demo-against-Triton comparison did not run, when it did not."""
    why = result.get("triton", {}).get("skipped")
    return f"Demo OIP against Triton: skipped ({why})" if why else None


def walls_line(result: dict[str, Any]) -> str | None:
    """The wall time of train and export as a sentence, when it was measured."""
    walls = result.get("training", {}).get("walls", {})
    if "train_s" not in walls:
        return None
    where = f"{walls['models']}, {walls['device']}"
    return f"Wall time ({where}): train {walls['train_s']:.1f} s, export {walls['export_s']:.1f} s"


TABLES: tuple[Table | Callable[[dict[str, Any]], str | None], ...] = (
    Table(
        "Single-example latency (us): predictor = PredictorCache.get(...).predict(x); "
        "bare = the runtime's own call; floor = NumPy forward",
        "latency",
        (
            ("model", "model"),
            ("format/runtime", runtime_of),
            ("device", "device"),
            ("KiB", lambda r: r["bytes"] / 1024 if "bytes" in r else None),
            ("pred p50", "predictor_p50_us"),
            ("pred p99", "predictor_p99_us"),
            ("bare p50", "bare_p50_us"),
            ("bare p99", "bare_p99_us"),
            ("floor p50", "floor_p50_us"),
            ("pred/bare", "predictor_over_bare"),
            ("pred/floor", "predictor_over_floor"),
        ),
    ),
    Table(
        "Fastest runtime per model against the NumPy floor",
        "latency_summary",
        (
            ("model", "model"),
            ("fastest (predictor)", "best"),
            ("p50 us", "best_p50_us"),
            ("floor p50 us", "floor_p50_us"),
            ("best/floor", "best_over_floor"),
            ("fastest bare", "best_bare"),
            ("bare/floor", "best_bare_over_floor"),
        ),
    ),
    Table(
        f"Artifacts: file size and largest parity deviation from the reference ({formats.REFERENCE[0]})",
        "artifacts",
        (
            ("model", "model"),
            ("format", "format"),
            ("KiB", lambda r: r["bytes"] / 1024),
            ("max abs", lambda r: None if r["max_abs"] is None else f"{r['max_abs']:.2e}"),
            ("max rel", lambda r: None if r["max_rel"] is None else f"{r['max_rel']:.2e}"),
            ("checks", "checks"),
            ("parity", lambda r: "passed" if r["passed"] else "FAILED"),
        ),
    ),
    Table(
        "Derived ONNX formats beside their source, onnxruntime CPU, 1 thread (x: the ratio to the source)",
        "quantized.rows",
        (
            ("model", "model"),
            ("format", "format"),
            ("bytes", "bytes"),
            ("x", "bytes_ratio"),
            ("p50 b1 ms", "p50_ms_b1"),
            ("x", "p50_ms_b1_ratio"),
            ("p50 b64 ms", "p50_ms_b64"),
            ("x", "p50_ms_b64_ratio"),
            ("max abs Δ", lambda r: f"{r['max_abs']:.2e}"),
            ("max abs Δ / max abs ref", lambda r: f"{r['max_frac']:.2e}"),
        ),
    ),
    not_applicable_line,
    Table(
        "Batch throughput (examples/s)",
        "throughput",
        (
            ("model", "model"),
            ("format/runtime", runtime_of),
            ("device", "device"),
            *((f"batch {n}", f"batch_{n}_per_s") for n in BATCH_SIZES),
        ),
    ),
    Table(
        "Tuning (bare calls side by side, us)",
        "tuning",
        (
            ("setting", "setting"),
            ("model", "model"),
            ("single p50", "single_p50_us"),
            ("single p99", "single_p99_us"),
            (f"batch {BATCH_SIZES[-1]} p50", f"{BIG}_p50_us"),
        ),
    ),
    Table(
        "HTTP over loopback (ms)",
        "http.rows",
        (
            ("route", "route"),
            ("model", "model"),
            ("format", "format"),
            ("clients", "clients"),
            ("requests", "requests"),
            ("p50", "p50_ms"),
            ("p99", "p99_ms"),
            ("req/s", "requests_per_s"),
        ),
    ),
    cold_start_line,
    Table(
        "Demo OIP routes against the real Triton server, same run (ms, requests/s; ratios demo/Triton)",
        "triton.rows",
        (
            ("model", "model"),
            ("format", "format"),
            ("clients", "clients"),
            ("demo p50", "demo_p50_ms"),
            ("Triton p50", "triton_p50_ms"),
            ("p50 demo/Triton", "p50_ratio"),
            ("demo req/s", "demo_per_s"),
            ("Triton req/s", "triton_per_s"),
            ("req/s demo/Triton", "throughput_ratio"),
        ),
    ),
    triton_skipped_line,
    Table(
        "Training step (us): our trainer against the seed-style loop",
        "training.steps",
        (
            ("model", "model"),
            ("recipe", "recipe"),
            ("steps", "steps"),
            ("trainer", "trainer_step_us"),
            ("seed-style", "bare_step_us"),
            ("trainer/bare", "trainer_over_bare"),
        ),
    ),
    walls_line,
    Table(
        "Seed 004 §10.8: (1x6400)·(6400x5000)",
        "device_timing",
        (("backend", "backend"), ("dtype", "dtype"), ("p50 ms", "p50_ms"), ("min ms", "min_ms")),
    ),
    Table(
        "Targets",
        "targets",
        (
            ("target", "target"),
            ("goal", "goal"),
            ("value", "value"),
            ("met", lambda t: "yes" if t["met"] else "NO"),
            ("detail", "detail"),
        ),
    ),
)


def tables(result: dict[str, Any], markdown: bool = False) -> str:
    """The run as tables, one per section: plain text, or Markdown (for BENCHMARKS.md)."""
    parts = [p.render(result, markdown) if isinstance(p, Table) else p(result) for p in TABLES]
    parts = [p for p in parts if p]
    if markdown:  # each title a heading, the table after a blank line
        parts = [f"#### {p.split(chr(10), 1)[0]}\n\n{p.split(chr(10), 1)[1]}" if "\n" in p else p for p in parts]
    return "\n\n".join(parts)


def figures(obj: Any, path: str = "") -> Iterator[tuple[str, float]]:
    """Every number in a result (booleans aside), with where it is: what the test checks."""
    if isinstance(obj, bool):
        return
    if isinstance(obj, (int, float)):
        yield path, float(obj)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from figures(value, f"{path}.{key}" if path else str(key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from figures(value, f"{path}[{i}]")
