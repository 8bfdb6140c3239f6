"""Concurrent paths, each client with rows of its own: every answer is checked against eager on that client's own
input, so a swap between clients (an answer meant for another thread) fails, not only a crash.

(The Triton Python model's batching: tests/test_triton_python_model.py and the real server in
tests/test_triton_server.py; the demo's own HTTP load: tests/test_robustness_app.py.)
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from pipeline import formats
from pipeline.catalog import CATALOG
from pipeline.runtime.comparison import compare
from pipeline.runtime.predictor import PredictorCache
from pipeline.serving.service import Service

THREADS = 8


def _rows(model_width: int, count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(-3, 3, size=(1 + i % 4, model_width)).astype(np.float32) for i in range(count)]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "pt2"])
def test_the_predictor_cache_from_many_threads_answers_each_its_own_rows(manifest, eager, fmt):
    cache = PredictorCache(manifest)  # empty: the threads race to load it too
    model = "adder_mynet"
    jobs = _rows(len(manifest.model(model).features), THREADS * 6, seed=11)
    start = threading.Barrier(THREADS)

    def run(index: int) -> list[tuple[np.ndarray, dict]]:
        start.wait()
        mine = jobs[index::THREADS]
        return [(x, cache.get(model, fmt).predict(x)) for x in mine]

    with ThreadPoolExecutor(THREADS) as pool:
        answers = [pair for chunk in pool.map(run, range(THREADS)) for pair in chunk]
    assert len(answers) == len(jobs)
    assert len({id(cache.get(model, fmt))}) == 1 and len(cache._predictors) == 1  # loaded once
    reference, spec = eager(model), formats.get(fmt)
    for x, got in answers:
        want = reference.predict(x)
        for name in want:
            check = compare(want[name], got[name], spec.tolerance)
            assert check.passed, f"rows {x.tolist()}: {name}: {check.reason}"


def test_a_re_export_while_threads_predict_gives_each_its_own_answer(artifacts_copy):
    """linear_3x learns y = 3x: each thread sends its own x while the model is retrained and re-exported, and
    every answer, from the old revision or the new one, is 3x for that thread's x."""
    from pipeline.export import run_export
    from pipeline.train import train_model

    svc = Service(artifacts_copy)
    stop = threading.Event()
    problems: list[str] = []
    answered = [0]

    def client(index: int) -> None:
        x = float(index) + 0.25 * index  # distinct per thread
        while not stop.is_set():
            try:
                y = svc.predict("linear_3x", "onnx", "cpu", [x])["outputs"]["y"][0]
            except Exception as exc:  # noqa: BLE001 - counted and shown
                problems.append(f"x={x}: {type(exc).__name__}: {exc}")
                return
            if abs(y - 3 * x) > 1e-2 * max(1.0, abs(x)):
                problems.append(f"x={x}: got {y}, which is not 3x (another client's answer?)")
            answered[0] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        for _ in range(2):
            train_model(CATALOG["linear_3x"], artifacts_copy, "cpu", 0, progress=False)
            report, errors = run_export([CATALOG["linear_3x"]], artifacts_copy, log=lambda _: None)
            assert not errors and report.passed
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not problems, problems[:5]
    assert answered[0] >= 4
