"""Timing primitives shared by every measurement: the plan (how long each one runs), candidates timed
side by side in alternating rounds, percentiles, and a call repeated for a given time."""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.errors import UserError

BATCH_SIZES = (1, 64, 4096)
WARMUP_PER_SHAPE = 5  # calls before timing a new input shape: TorchScript re-specialises its graph per shape


class BenchError(UserError, RuntimeError):
    """A benchmark that could not produce its figures (an HTTP error, a demo that never answered)."""


@dataclass(frozen=True)
class Plan:
    """How long each measurement runs: the full plan, or the quick one (under two minutes in all)."""

    quick: bool
    seconds_per_candidate: float  # latency: time spent on each of predictor / bare / floor per row
    min_calls: int
    max_calls: int
    rounds: int  # the candidates take turns this many times, so drift and noise hit all of them
    warmup: int
    throughput_seconds: float  # per (runtime, batch size)
    train_repeats: int  # interleaved trainer / bare runs per model
    train_max_epochs: int | None  # None: the recipe's epochs
    http_requests: int  # per client and route
    matmul_repeats: int
    wall_models: str | None  # models for the train/export wall time; None: all selected


FULL = Plan(False, 1.0, 500, 20000, 10, 300, 0.3, 5, None, 300, 30, None)
QUICK = Plan(True, 0.06, 100, 1500, 2, 30, 0.02, 1, 20, 12, 3, "linear_3x")


@dataclass
class Candidate:
    """One thing to time: a call, and the context it runs in (entered once per block of calls)."""

    name: str
    call: Callable[[], Any]
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext


def _block(call: Callable[[], Any], n: int, out: list[int]) -> None:
    clock = time.perf_counter_ns
    for _ in range(n):
        start = clock()
        call()
        out.append(clock() - start)


def side_by_side(candidates: Sequence[Candidate], plan: Plan) -> dict[str, list[int]]:
    """Per-call nanoseconds of each candidate, measured in alternating rounds after a warm-up."""
    calls = {}
    for cand in candidates:
        with cand.context():
            for _ in range(plan.warmup):
                cand.call()
            start = time.perf_counter()
            for _ in range(plan.warmup):
                cand.call()
            each = max((time.perf_counter() - start) / plan.warmup, 1e-7)
        calls[cand.name] = int(min(max(plan.seconds_per_candidate / each, plan.min_calls), plan.max_calls))
    samples: dict[str, list[int]] = {c.name: [] for c in candidates}
    gc.collect()  # once (it takes ~0.1 s with torch loaded); the collector stays on, as in a server
    for r in range(plan.rounds):
        for cand in candidates if r % 2 == 0 else reversed(candidates):
            with cand.context():
                _block(cand.call, max(calls[cand.name] // plan.rounds, 1), samples[cand.name])
    return samples


def percentiles_us(samples_ns: Sequence[int]) -> dict[str, float]:
    """p50 and p99 in microseconds of per-call nanoseconds."""
    arr = np.asarray(samples_ns, dtype=np.float64) / 1e3
    return {"p50_us": float(np.percentile(arr, 50)), "p99_us": float(np.percentile(arr, 99))}


def timed_for(
    call: Callable[[], Any], seconds: float, min_calls: int = 3, warmup: int = WARMUP_PER_SHAPE
) -> list[float]:
    """Per-call seconds of `call`, after `warmup` calls, repeated until `seconds` have passed (at least `min_calls`)."""
    for _ in range(warmup):
        call()
    out: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(out) < min_calls or time.perf_counter() < deadline:
        start = time.perf_counter()
        call()
        out.append(time.perf_counter() - start)
    return out
