"""`python -m pipeline bench --quick`: every section of bench.json is there, every figure a positive number.

No test here asserts a timing: the machine is shared and the figures are what they are.
"""

from __future__ import annotations

import json
import math
import time

import pytest

from .conftest import run_cli

SECTIONS = (
    "latency",
    "latency_summary",
    "throughput",
    "tuning",
    "http",
    "cold_start",
    "training",
    "device_timing",
    "targets",
)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, artifacts):
    import shutil

    root = tmp_path_factory.mktemp("bench") / "artifacts"
    shutil.copytree(artifacts, root)  # bench writes bench.json into the directory
    start = time.perf_counter()
    proc = run_cli("bench", "--artifacts", str(root), "--quick", "--device", "cpu", timeout=900)
    wall = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((root / "bench.json").read_text()), proc.stdout, wall


@pytest.mark.slow
def test_quick_bench_has_every_section_with_positive_figures(quick_run):
    from pipeline.bench import BATCH_SIZES, HTTP_CLIENTS, figures

    result, stdout, wall = quick_run
    for section in SECTIONS:
        assert result.get(section), f"section {section} is missing or empty"
    numbers = list(figures({k: result[k] for k in SECTIONS}))
    assert len(numbers) > 50
    bad = [(where, value) for where, value in numbers if not (math.isfinite(value) and value > 0)]
    assert not bad, bad

    for row in result["latency"]:
        for key in ("predictor_p50_us", "predictor_p99_us", "bare_p50_us", "floor_p50_us", "predictor_over_bare"):
            assert key in row, (key, row)
    assert {(r["format"], r["runtime"]) for r in result["latency"]} >= {
        ("onnx", "onnxruntime"),
        ("torchscript", "torch"),
    }
    for row in result["throughput"]:
        assert all(f"batch_{n}_per_s" in row for n in BATCH_SIZES), row
    http = result["http"]["rows"]
    assert {r["clients"] for r in http} == set(HTTP_CLIENTS)
    assert {r["format"] for r in http} == {"onnx", "torchscript"}
    assert all(r["requests"] > 0 for r in http)
    # The demo printed its URL before it answered its first prediction, all within the bench's run.
    cold = result["cold_start"]
    assert 0 < cold["listening_s"] < cold["seconds"] < wall
    train = result["training"]
    assert train["steps"] and all("trainer_over_bare" in r for r in train["steps"])
    assert 0 < train["walls"]["train_s"] < wall and 0 < train["walls"]["export_s"] < wall
    backends = {r["backend"].split(" (")[0] for r in result["device_timing"]}
    assert {"torch cpu", "numpy"} <= backends
    assert all(isinstance(t["met"], bool) for t in result["targets"])
    assert "Targets" in stdout and "Single-example latency" in stdout


def test_figures_walks_nested_numbers_but_not_booleans():
    from pipeline.bench import figures

    found = dict(figures({"a": [{"b": 1.5}, {"c": True}], "d": 2, "e": "x"}))
    assert found == {"a[0].b": 1.5, "d": 2.0}
