"""Runtime latency and throughput, and how far each runtime is from the NumPy floor.

Every target of pipeline/runtime/targets.py for the device asked for is measured (what verify checks):
- latency: one example through the demo's predictor (PredictorCache), the bare runtime call from
  the same load (`predictor.bare`: session.run on a prepared feed, the module on a prepared tensor,
  with the host-to-device copies and back on CUDA, as the predictor pays them) and the catalog's
  hand-written NumPy forward of the same weights, in interleaved rounds;
- throughput: examples per second at each of BATCH_SIZES, through the predictor (and the floor).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline import catalog, formats
from pipeline.artifacts.manifest import Manifest
from pipeline.artifacts.tensors import examples_batch, random_batch
from pipeline.bench.timing import BATCH_SIZES, BenchError, Candidate, Plan, percentiles_us, side_by_side, timed_for
from pipeline.errors import one_line
from pipeline.runtime.predictor import PredictorCache
from pipeline.runtime.targets import Target
from pipeline.runtime.targets import plan as plan_targets

Log = Callable[[str], None]


@dataclass
class Sweep:
    """What the per-model measurements share: the models and devices to sweep, how long, and where to report."""

    manifest: Manifest
    models: Sequence[str]
    targets: Sequence[Target]  # what can run here (bench_targets)
    plan: Plan
    cache: PredictorCache
    skipped: list[str]  # what could not run, one line each
    log: Log

    def __iter__(self) -> Iterator[Any]:
        """The fields in order, so a measurement can unpack what it uses."""
        return iter((self.manifest, self.models, self.targets, self.plan, self.cache, self.skipped, self.log))


FLOOR = ("numpy", "numpy (floor)")  # how the floor's rows name their format and runtime


def bench_targets(requested: str) -> tuple[list[Target], list[str]]:
    """The (format, runtime, device) targets to measure for `requested` (pipeline.runtime.targets.plan), and
    one line for each that cannot run here. mps serves no artifact: its runtimes are measured on the CPU."""
    if requested == "mps":
        chosen, skipped = plan_targets(formats.CPU), ["mps: no runtime serves artifacts on mps; measured on the CPU"]
    else:
        chosen, skipped = plan_targets(requested), []
    skipped += chosen.skipped
    skipped += [f"{t.format}/{t.runtime} on {t.device}: {t.unavailable}" for t in chosen.targets if t.unavailable]
    return [t for t in chosen.targets if not t.unavailable], skipped


def numpy_floor(cache: PredictorCache, model: str) -> Callable[[np.ndarray], tuple[np.ndarray, ...]] | None:
    """The catalog's hand-written NumPy forward over the reference predictor's weights, or None if it has none."""
    if model not in catalog.CATALOG:  # served from its artifacts alone: no spec, no floor
        return None
    spec = catalog.get(model)
    if spec.numpy_forward is None:
        return None
    fmt, runtime, device = formats.REFERENCE
    # the trained state_dict, read by pipeline.artifacts.weights
    module = cache.get(model, fmt, runtime=runtime, device=device).native
    state = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in module.state_dict().items()}
    return spec.numpy_forward(state)


def _check_same(model: str, fmt: str, runtime: str, got: Sequence[np.ndarray], want: Sequence[np.ndarray]) -> None:
    """BenchError unless `fmt` on `runtime` computes what the NumPy floor computes: within 1e-2 (reordered sums),
    or the format's own parity rule where that allows more (int8 and float16 round by design). A wrong floor (a
    transpose, a missing bias) is far off either."""
    own = formats.get(fmt).tolerance
    for g, w in zip(got, want, strict=True):
        ref = np.asarray(w, dtype=np.float64)
        diff = np.abs(np.asarray(g, dtype=np.float64).reshape(ref.shape) - ref)
        if not (diff <= np.maximum(1e-2 + 1e-2 * np.abs(ref), own.bound(ref))).all():
            raise BenchError(f"{model}: {fmt}/{runtime} does not compute what the NumPy floor computes")


def bench_latency(sweep: Sweep) -> list[dict[str, Any]]:
    """One example through the predictor, the bare call from the same load and the floor: a row per runtime."""
    manifest, models, targets, plan, cache, skipped, log = sweep
    rows = []
    for model in models:
        entry = manifest.model(model)
        x2 = examples_batch(entry.inputs, entry.examples[:1])  # a batch of one, of each input's dtype and shape
        x = x2[0] if isinstance(x2, np.ndarray) else {k: v[0] for k, v in x2.items()}  # the example alone
        floor = numpy_floor(cache, model)
        served = manifest.model(model).served_formats()  # a derived format may not apply to this model
        for fmt, runtime, device in ((t.format, t.runtime, t.device) for t in targets if t.format in served):
            label = f"{model} {fmt}/{runtime} on {device}"
            try:
                predictor = cache.get(model, fmt, runtime=runtime, device=device)
            except Exception as exc:  # noqa: BLE001 - a runtime this machine lacks is a skip, with why
                skipped.append(f"latency {label}: {one_line(exc)}")
                continue
            cands = [
                Candidate("predictor", lambda p=predictor, v=x: p.predict(v)),
                Candidate("bare", predictor.bare(x2)),
            ]
            if floor is not None:
                _check_same(model, fmt, runtime, list(predictor.predict(x2).values()), floor(x2))
                cands.append(Candidate("floor", lambda f=floor, v=x2: f(v)))
            samples = side_by_side(cands, plan)
            rows.append(_latency_row(model, fmt, runtime, predictor.device, samples))
            rows[-1]["bytes"] = entry.artifact(formats.get(fmt).artifact_kind).bytes  # every file it loads
            row = rows[-1]
            log(f"  latency {label}: predictor {row['predictor_p50_us']:.1f} us, bare {row['bare_p50_us']:.1f} us")
    return rows


def _latency_row(model: str, fmt: str, runtime: str, device: str, samples: dict[str, list[int]]) -> dict[str, Any]:
    pred, raw = percentiles_us(samples["predictor"]), percentiles_us(samples["bare"])
    row = {
        "model": model,
        "format": fmt,
        "runtime": runtime,
        "device": device,
        "calls": len(samples["predictor"]),
        "predictor_p50_us": pred["p50_us"],
        "predictor_p99_us": pred["p99_us"],
        "bare_p50_us": raw["p50_us"],
        "bare_p99_us": raw["p99_us"],
        "predictor_over_bare": pred["p50_us"] / raw["p50_us"],
    }
    if "floor" in samples:
        low = percentiles_us(samples["floor"])
        row["floor_p50_us"] = low["p50_us"]
        row["floor_p99_us"] = low["p99_us"]
        row["predictor_over_floor"] = pred["p50_us"] / low["p50_us"]
        row["bare_over_floor"] = raw["p50_us"] / low["p50_us"]
    return row


def latency_summary(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model: the fastest runtime through the predictor, and its distance from the NumPy floor."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        # The floor computes in float32: only the formats that are not derived (quantized) race it.
        mine = [r for r in rows if r["model"] == model and "floor_p50_us" in r and not formats.get(r["format"]).source]
        if not mine:
            continue
        best = min(mine, key=lambda r: r["predictor_p50_us"])
        best_bare = min(mine, key=lambda r: r["bare_p50_us"])
        out.append(
            {
                "model": model,
                "best": f"{best['format']}/{best['runtime']} ({best['device']})",
                "best_p50_us": best["predictor_p50_us"],
                "floor_p50_us": best["floor_p50_us"],
                "best_over_floor": best["predictor_p50_us"] / best["floor_p50_us"],
                "best_bare": f"{best_bare['format']}/{best_bare['runtime']} ({best_bare['device']})",
                "best_bare_over_floor": best_bare["bare_p50_us"] / best_bare["floor_p50_us"],
            }
        )
    return out


def bench_throughput(sweep: Sweep) -> list[dict[str, Any]]:
    """Examples per second at each batch size, through every predictor and the floor."""
    manifest, models, targets, plan, cache, skipped, log = sweep
    rows = []
    rng = np.random.default_rng(0)
    for model in models:
        inputs = manifest.model(model).inputs
        batches = {n: random_batch(inputs, n, rng) for n in BATCH_SIZES}
        runners: list[tuple[str, str, str, Callable[[np.ndarray], Any]]] = []
        floor = numpy_floor(cache, model)
        if floor is not None:
            runners.append((*FLOOR, formats.CPU, floor))
        served = manifest.model(model).served_formats()
        for fmt, runtime, device in ((t.format, t.runtime, t.device) for t in targets if t.format in served):
            try:
                predictor = cache.get(model, fmt, runtime=runtime, device=device)
            except Exception as exc:  # noqa: BLE001
                skipped.append(f"throughput {model} {fmt}/{runtime} on {device}: {one_line(exc)}")
                continue
            runners.append((fmt, runtime, predictor.device, predictor.predict))
        for fmt, runtime, device, run in runners:
            row: dict[str, Any] = {"model": model, "format": fmt, "runtime": runtime, "device": device}
            for n, batch in batches.items():
                per_call = float(np.median(timed_for(lambda b=batch, r=run: r(b), plan.throughput_seconds)))
                row[f"batch_{n}_per_s"] = n / per_call
            rows.append(row)
            log(
                f"  throughput {model} {fmt}/{runtime} ({device}): "
                + ", ".join(f"{n}: {row[f'batch_{n}_per_s']:.3g}/s" for n in BATCH_SIZES)
            )
    return rows
