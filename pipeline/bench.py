"""`python -m pipeline bench`: what each runtime costs, side by side in one run, and how close to the floor.

Sections of DIR/bench.json (every figure a positive number; what could not run is listed under
"skipped" with the reason):

- latency: one example through the demo's predictor objects (PredictorCache), the bare runtime call
  (session.run on a prepared feed; the torch module under one inference_mode) and a hand-written NumPy
  forward of the same weights (the catalog's `numpy_forward`), measured in interleaved rounds.
- throughput: examples per second at batch sizes 1, 64 and 4096 for every runtime (and the floor).
- tuning: the settings that are ours to choose (onnxruntime session options, torch threads), each
  measured side by side on the same model.
- http: the demo's `predict` over loopback with 1 and 8 concurrent clients: Gradio's documented
  /call route, the same with a session_hash per client (as gradio_client sends), Gradio's one-request
  /run route and the Open Inference Protocol route, each where the demo answers it; any failed
  request fails the run.
- cold_start: seconds from `python demo/app.py` to the first successful predict response.
- training: seconds per optimisation step in our trainer against a bare loop in the seed's style,
  and the wall time of `python -m pipeline train` and `export` into a scratch directory.
- device_timing: seed 004 §10.8's (1x6400)·(6400x5000) product with torch (CPU, CUDA where there is
  one) and NumPy.
- targets: each goal of issue 5, the figure it is judged on and whether it is met.

No stage here branches on a model's name: the models named below are the ones the issue asks about.
BENCHMARKS.md records a run, what limits each figure and what each tuning setting did.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import UserError
from pipeline.fileio import atomic_write_json
from pipeline.manifest import Manifest

ROOT = Path(__file__).resolve().parents[1]
BENCH_JSON = "bench.json"
BATCH_SIZES = (1, 64, 4096)
# What issue 5 names: the HTTP models and formats, the concurrency levels, the floor's model.
HTTP_MODELS = ("adder_mynet", "two_layer_net")
HTTP_FORMATS = ("onnx", "torchscript")
HTTP_CLIENTS = (1, 8)
FLOOR_MODEL = "two_layer_net"
GOALS = {
    "predictor_over_bare": 1.1,
    "best_over_floor": 1.5,
    "http_p50_ms": 15.0,
    "trainer_over_bare": 1.1,
    "cold_start_s": 8.0,
}


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


# ---- measuring --------------------------------------------------------------------------------------


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
    arr = np.asarray(samples_ns, dtype=np.float64) / 1e3
    return {"p50_us": float(np.percentile(arr, 50)), "p99_us": float(np.percentile(arr, 99))}


def timed_for(call: Callable[[], Any], seconds: float, min_calls: int = 3) -> list[float]:
    """Per-call seconds of `call`, repeated until `seconds` have passed (at least `min_calls` times)."""
    call()  # warm-up
    out: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(out) < min_calls or time.perf_counter() < deadline:
        start = time.perf_counter()
        call()
        out.append(time.perf_counter() - start)
    return out


# ---- runtimes ---------------------------------------------------------------------------------------


def runtime_pairs() -> list[tuple[str, str]]:
    """Every (format, runtime) the loader serves."""
    from pipeline.runtime import PREDICT_FORMATS, RUNTIMES_OF

    return [(fmt, rt) for fmt in PREDICT_FORMATS for rt in RUNTIMES_OF[fmt]]


def bench_devices(requested: str) -> list[str]:
    """The devices to measure: 'auto' means the CPU and, where there is one, the GPU."""
    from pipeline.devices import cuda_device_count

    if requested == "auto":
        return ["cpu", "cuda"] if cuda_device_count() > 0 else ["cpu"]
    return [requested]


@dataclass
class Bare:
    """The runtime's own call on a prepared feed, with no project code around it."""

    call: Callable[[], Any]
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    provider: str = ""


def bare_call(manifest: Manifest, model: str, fmt: str, runtime: str, device: str, x: np.ndarray) -> Bare:
    """Load the artifact straight into its runtime and return a call on `x` (a (1, features) array)."""
    from pipeline.runtime import ARTIFACT_OF, onnxruntime_providers, session_options

    entry = manifest.model(model)
    path = str(manifest.verified_path(entry.artifact(ARTIFACT_OF[fmt])))
    if runtime == "onnxruntime":
        import onnxruntime as ort

        # The same session options as the predictor, so the ratio is the wrapper's cost alone
        # (the options themselves are compared in the tuning section).
        session = ort.InferenceSession(path, session_options(), providers=onnxruntime_providers(device))
        feed = {session.get_inputs()[0].name: x}
        return Bare(lambda: session.run(None, feed), provider=session.get_providers()[0])
    if runtime == "onnx-reference":
        import onnx
        from onnx.reference import ReferenceEvaluator

        from pipeline.runtime import RuntimeUnavailable

        if device != "cpu":
            raise RuntimeUnavailable("onnx's ReferenceEvaluator runs on the CPU only")
        evaluator = ReferenceEvaluator(onnx.load(path))
        feed = {entry.input["name"]: x}
        return Bare(lambda: evaluator.run(None, feed), provider="onnx.reference")
    import torch

    from pipeline.runtime import _torch_device

    dev = _torch_device(device)
    if fmt == "torchscript":
        module = torch.jit.load(path, map_location=dev).eval()
    elif fmt == "pt2":
        program = torch.export.load(path)
        if dev != "cpu":
            from torch.export.passes import move_to_device_pass

            program = move_to_device_pass(program, dev)
        module = program.module()
    else:
        from pipeline import catalog

        module = catalog.get(model).build()
        module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        module = module.to(dev).eval()
    t = torch.from_numpy(x).to(dev)
    if dev == "cpu":
        return Bare(lambda: module(t), context=torch.inference_mode, provider=dev)

    def call() -> None:
        module(t)
        torch.cuda.synchronize()

    return Bare(call, context=torch.inference_mode, provider=dev)


def numpy_floor(manifest: Manifest, model: str) -> Callable[[np.ndarray], tuple[np.ndarray, ...]] | None:
    """The catalog's hand-written NumPy forward over the manifest's state_dict, or None if it has none."""
    import torch

    from pipeline import catalog

    spec = catalog.get(model)
    if spec.numpy_forward is None:
        return None
    entry = manifest.model(model)
    path = manifest.verified_path(entry.artifact("state_dict"))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return spec.numpy_forward({k: v.numpy().astype(np.float32) for k, v in state.items()})


def _check_same(model: str, what: str, got: Sequence[np.ndarray], want: Sequence[np.ndarray]) -> None:
    for g, w in zip(got, want, strict=True):
        # Loose enough for TF32 and reordered sums; a wrong floor (a transpose, a missing bias) is far off.
        if not np.allclose(np.asarray(g).reshape(np.shape(w)), w, rtol=1e-2, atol=1e-2):
            raise BenchError(f"{model}: {what} does not compute what the NumPy floor computes")


# ---- 1. single-example latency -------------------------------------------------------------------------


def bench_latency(
    manifest: Manifest,
    models: Sequence[str],
    devices: Sequence[str],
    plan: Plan,
    cache: Any,
    skipped: list[str],
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    rows = []
    for model in models:
        entry = manifest.model(model)
        x = np.ascontiguousarray(entry.examples[0], dtype=np.float32)
        x2 = x[None, :]
        floor = numpy_floor(manifest, model)
        for device in devices:
            for fmt, runtime in runtime_pairs():
                label = f"{model} {fmt}/{runtime} on {device}"
                try:
                    predictor = cache.get(model, fmt, device, runtime)
                    bare = bare_call(manifest, model, fmt, runtime, device, x2)
                except Exception as exc:  # noqa: BLE001 - a runtime this machine lacks is a skip, with why
                    skipped.append(f"latency {label}: {_one_line(exc)}")
                    continue
                cands = [
                    Candidate("predictor", lambda p=predictor, v=x: p.predict(v)),
                    Candidate("bare", bare.call, bare.context),
                ]
                if floor is not None:
                    want = floor(x2)
                    _check_same(model, f"{fmt}/{runtime}", list(predictor.predict(x2).values()), want)
                    cands.append(Candidate("floor", lambda f=floor, v=x2: f(v)))
                samples = side_by_side(cands, plan)
                pred, raw = percentiles_us(samples["predictor"]), percentiles_us(samples["bare"])
                row = {
                    "model": model,
                    "format": fmt,
                    "runtime": runtime,
                    "device": predictor.device,
                    "calls": len(samples["predictor"]),
                    "predictor_p50_us": pred["p50_us"],
                    "predictor_p99_us": pred["p99_us"],
                    "bare_p50_us": raw["p50_us"],
                    "bare_p99_us": raw["p99_us"],
                    "predictor_over_bare": pred["p50_us"] / raw["p50_us"],
                }
                if floor is not None:
                    low = percentiles_us(samples["floor"])
                    row.update(
                        {
                            "floor_p50_us": low["p50_us"],
                            "floor_p99_us": low["p99_us"],
                            "predictor_over_floor": pred["p50_us"] / low["p50_us"],
                            "bare_over_floor": raw["p50_us"] / low["p50_us"],
                        }
                    )
                rows.append(row)
                log(f"  latency {label}: predictor {pred['p50_us']:.1f} us, bare {raw['p50_us']:.1f} us")
    return rows


def latency_summary(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model: the fastest runtime through the predictor, and its distance from the NumPy floor."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model and "floor_p50_us" in r]
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


# ---- 2. batch throughput ---------------------------------------------------------------------------------


def bench_throughput(
    manifest: Manifest,
    models: Sequence[str],
    devices: Sequence[str],
    plan: Plan,
    cache: Any,
    skipped: list[str],
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    rows = []
    rng = np.random.default_rng(0)
    for model in models:
        width = len(manifest.model(model).features)
        batches = {n: rng.standard_normal((n, width)).astype(np.float32) for n in BATCH_SIZES}
        runners: list[tuple[str, str, str, Callable[[np.ndarray], Any]]] = []
        floor = numpy_floor(manifest, model)
        if floor is not None:
            runners.append(("numpy", "numpy (floor)", "cpu", floor))
        for device in devices:
            for fmt, runtime in runtime_pairs():
                try:
                    predictor = cache.get(model, fmt, device, runtime)
                except Exception as exc:  # noqa: BLE001
                    skipped.append(f"throughput {model} {fmt}/{runtime} on {device}: {_one_line(exc)}")
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


# ---- tuning: what each setting that is ours to choose does ------------------------------------------------


def bench_tuning(manifest: Manifest, model: str, plan: Plan, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Bare onnxruntime sessions and a TorchScript module under each setting, side by side, on `model`."""
    import onnxruntime as ort
    import torch

    from pipeline.runtime import session_options

    entry = manifest.model(model)
    x1 = np.ascontiguousarray(np.asarray(entry.examples[0], dtype=np.float32)[None, :])
    xb = np.random.default_rng(0).standard_normal((BATCH_SIZES[-1], x1.shape[1])).astype(np.float32)
    onnx_path = str(manifest.verified_path(entry.artifact("onnx")))
    ts_path = str(manifest.verified_path(entry.artifact("torchscript")))

    def options(threads: int | None = None, **changes: Any) -> Any:
        opts = session_options(threads) if threads is not None else ort.SessionOptions()
        opts.log_severity_level = 3
        for key, value in changes.items():
            if key == "spinning":
                opts.add_session_config_entry("session.intra_op.allow_spinning", value)
            else:
                setattr(opts, key, value)
        return opts

    ort_variants = {
        "onnxruntime defaults (SessionOptions())": options(),
        "ours: 1 intra-op thread, sequential, ENABLE_ALL": options(1),
        "2 intra-op threads": options(2),
        "2 intra-op threads, no spinning": options(2, spinning="0"),
        "1 thread, ORT_PARALLEL execution mode": options(1, execution_mode=ort.ExecutionMode.ORT_PARALLEL),
        "1 thread, ORT_ENABLE_BASIC graph optimisation": options(
            1, graph_optimization_level=ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        ),
        "1 thread, no memory arena / pattern": options(1, enable_cpu_mem_arena=False, enable_mem_pattern=False),
    }
    cands1, candsb = [], []
    for name, opts in ort_variants.items():
        session = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
        in_name = session.get_inputs()[0].name
        cands1.append(Candidate(f"onnxruntime: {name}", lambda s=session, f={in_name: x1}: s.run(None, f)))
        candsb.append(Candidate(f"onnxruntime: {name}", lambda s=session, f={in_name: xb}: s.run(None, f)))
    # io_binding: input and output bound once, no per-call output allocation.
    session = ort.InferenceSession(onnx_path, options(1), providers=["CPUExecutionProvider"])
    for cands, xin in ((cands1, x1), (candsb, xb)):
        binding = session.io_binding()
        binding.bind_cpu_input(session.get_inputs()[0].name, xin)
        for out in session.get_outputs():
            binding.bind_output(out.name, "cpu")
        cands.append(
            Candidate("onnxruntime: ours + io_binding (bound once)", lambda b=binding: session.run_with_iobinding(b))
        )
    # What the predictor calls: the binding under InferenceSession.run, without its per-call Python checks.
    names = [o.name for o in session.get_outputs()]
    in_name = session.get_inputs()[0].name
    for cands, xin in ((cands1, x1), (candsb, xb)):
        cands.append(
            Candidate(
                "onnxruntime: ours, via session._sess.run (the predictor's call)",
                lambda f={in_name: xin}: session._sess.run(names, f, None),
            )
        )

    module = torch.jit.load(ts_path).eval()
    t1, tb = torch.from_numpy(x1), torch.from_numpy(xb)
    default_threads = torch.get_num_threads()

    def threads_ctx(n: int) -> Callable[[], contextlib.AbstractContextManager]:
        @contextlib.contextmanager
        def ctx() -> Iterator[None]:
            torch.set_num_threads(n)
            try:
                with torch.inference_mode():
                    yield
            finally:
                torch.set_num_threads(default_threads)

        return ctx

    for n in sorted({1, default_threads, os.cpu_count() or 1}):
        cands1.append(Candidate(f"torchscript: torch.set_num_threads({n})", lambda: module(t1), threads_ctx(n)))
        candsb.append(Candidate(f"torchscript: torch.set_num_threads({n})", lambda: module(tb), threads_ctx(n)))

    frozen = torch.jit.freeze(torch.jit.load(ts_path).eval())  # weights folded in as constants
    cands1.append(Candidate("torchscript: torch.jit.freeze", lambda: frozen(t1), torch.inference_mode))
    candsb.append(Candidate("torchscript: torch.jit.freeze", lambda: frozen(tb), torch.inference_mode))

    # The predictor's torch call (numpy in, numpy out) with each per-call inference-mode guard.
    def runner(guard: Callable[[bool], Any], xin: np.ndarray) -> Callable[[], Any]:
        def run() -> Any:
            with guard(True):
                out = module(torch.from_numpy(xin))
            outs = out if isinstance(out, (tuple, list)) else (out,)
            return [o.numpy() for o in outs]

        return run

    guards = {"with torch.inference_mode()": torch.inference_mode}
    if hasattr(torch._C, "_InferenceMode"):
        guards["with torch._C._InferenceMode"] = torch._C._InferenceMode
    for label, guard in guards.items():
        cands1.append(Candidate(f"torchscript call, numpy in/out, {label}", runner(guard, x1)))
        candsb.append(Candidate(f"torchscript call, numpy in/out, {label}", runner(guard, xb)))
    no_grad_module = torch.jit.load(ts_path).eval()  # what the predictor does: no parameter needs a gradient
    for param in no_grad_module.parameters():
        param.requires_grad_(False)
    label = "torchscript call, numpy in/out, parameters without grad, no guard (the predictor's)"
    for cands, xin in ((cands1, x1), (candsb, xb)):
        cands.append(
            Candidate(label, lambda v=xin: [o.numpy() for o in _as_tuple(no_grad_module(torch.from_numpy(v)))])
        )
    per_call = {
        "single": side_by_side(cands1, plan),
        f"batch_{BATCH_SIZES[-1]}": side_by_side(
            candsb,
            replace(
                plan,
                seconds_per_candidate=plan.seconds_per_candidate,
                min_calls=5,
                max_calls=500,
                warmup=max(plan.warmup // 30, 2),
            ),
        ),
    }
    rows = []
    for cand in cands1:
        single = percentiles_us(per_call["single"][cand.name])
        big = percentiles_us(per_call[f"batch_{BATCH_SIZES[-1]}"][cand.name])
        rows.append(
            {
                "setting": cand.name,
                "model": model,
                "single_p50_us": single["p50_us"],
                "single_p99_us": single["p99_us"],
                f"batch_{BATCH_SIZES[-1]}_p50_us": big["p50_us"],
            }
        )
        log(f"  tuning {cand.name}: single {single['p50_us']:.1f} us, batch {big['p50_us']:.0f} us")
    return rows


# ---- 4. training ---------------------------------------------------------------------------------------


class _MyDataset:
    """Seed 004 §10.10's MyDataset, as the seed writes it (indexable pairs for a DataLoader)."""

    def __init__(self, x: Any, y: Any) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, ix: int) -> tuple[Any, Any]:
        return self.x[ix], self.y[ix]


def seed_style_fit(spec: Any, recipe: Any, device: str, seed: int = 0) -> int:
    """The seeds' own training loop for `spec` and `recipe`, written out with none of our trainer's code:
    data, model, loss, optimizer, then zero_grad / forward / loss / backward / step and
    `loss_history.append(loss_value.item())` (seed 004 §10.9-10.10). Returns the number of steps."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader

    torch.manual_seed(seed)
    x, y = spec.data(torch.Generator().manual_seed(seed))
    model = spec.build()
    init = getattr(recipe, "init", None)
    if init is not None:
        init(model)
    model = model.to(device)
    x, y = x.to(device), y.to(device)
    loss_func = nn.MSELoss(reduction="sum" if recipe.loss == "sse" else "mean")
    optimizers = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop}
    opt = optimizers[recipe.optimizer](model.parameters(), lr=recipe.lr)
    if recipe.batch_size:
        data: Any = DataLoader(_MyDataset(x, y), batch_size=recipe.batch_size, shuffle=recipe.shuffle)
    else:
        data = [(x, y)]
    manual = recipe.gradients == "manual"
    loss_history = []
    for _ in range(recipe.epochs):
        for xb, yb in data:
            opt.zero_grad()
            if manual:
                loss_value = model.manual_gradients(xb, yb)
            else:
                out = model(xb)
                loss_value = loss_func(out[0] if isinstance(out, tuple) else out, yb)
                loss_value.backward()
            opt.step()
            loss_history.append(loss_value.item())
    return len(loss_history)


def bench_training(models: Sequence[str], device: str, plan: Plan, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Per model: our trainer's `fit` against `seed_style_fit`, whole calls timed the same way (setup,
    loop and collecting the losses; on CUDA up to a synchronize), interleaved, median per step."""
    import torch

    from pipeline import catalog
    from pipeline.train import fit

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    steps: dict[str, int] = {}

    def timed(name: str, call: Callable[[], int]) -> float:
        sync()
        start = time.perf_counter()
        steps[name] = call()
        sync()
        return (time.perf_counter() - start) / steps[name]

    rows = []
    for model in models:
        spec = catalog.get(model)
        recipe = spec.recipe()
        if plan.train_max_epochs:
            recipe = replace(recipe, epochs=min(recipe.epochs, plan.train_max_epochs))
        warm = replace(recipe, epochs=min(recipe.epochs, 5))

        def ours(r: Any = recipe, sp: Any = spec) -> int:
            return len(fit(sp, r, device, 0, progress=False).losses)

        def bare(r: Any = recipe, sp: Any = spec) -> int:
            return seed_style_fit(sp, r, device)

        ours(warm)
        bare(warm)
        mine, theirs = [], []
        for i in range(plan.train_repeats):
            for name, call in (("ours", ours), ("bare", bare)) if i % 2 == 0 else (("bare", bare), ("ours", ours)):
                (mine if name == "ours" else theirs).append(timed(name, call))
        row = {
            "model": model,
            "recipe": spec.default_recipe,
            "device": device,
            "steps": steps["bare"],
            "repeats": plan.train_repeats,
            "trainer_step_us": float(np.median(mine)) * 1e6,
            "bare_step_us": float(np.median(theirs)) * 1e6,
        }
        row["trainer_over_bare"] = row["trainer_step_us"] / row["bare_step_us"]
        if steps["ours"] != steps["bare"]:
            raise BenchError(f"{model}: the trainer made {steps['ours']} steps, the seed-style loop {steps['bare']}")
        rows.append(row)
        log(
            f"  training {model}: trainer {row['trainer_step_us']:.1f} us/step, "
            f"seed-style {row['bare_step_us']:.1f} us/step"
        )
    return rows


def bench_walls(models: str, device: str, log: Callable[[str], None]) -> dict[str, Any]:
    """Wall time of `python -m pipeline train` and `export` (what `make train` / `make export` run)."""
    out: dict[str, Any] = {"models": models, "device": device}
    with tempfile.TemporaryDirectory(prefix="bench-walls-") as tmp:
        for stage, extra in (("train", ["--quiet"]), ("export", [])):
            cmd = [
                sys.executable,
                "-m",
                "pipeline",
                stage,
                "--models",
                models,
                "--device",
                device,
                "--artifacts",
                tmp,
                *extra,
            ]
            start = time.perf_counter()
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
            seconds = time.perf_counter() - start
            if proc.returncode != 0:
                raise BenchError(f"`{' '.join(cmd[1:])}` failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
            out[f"{stage}_s"] = seconds
            log(f"  wall: python -m pipeline {stage} --models {models}: {seconds:.1f} s")
    return out


# ---- 3 and 5. the demo over HTTP --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def demo_process(artifacts: Path, port: int) -> Iterator[tuple[subprocess.Popen, float, Callable[[], str]]]:
    """`python demo/app.py` on 127.0.0.1:`port` as a child process: yields it, the perf_counter time it
    was started at and a function returning the end of its output; stops it on exit."""
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    log = tempfile.NamedTemporaryFile(prefix="bench-demo-", suffix=".log", delete=False)  # noqa: SIM115
    cmd = [
        sys.executable,
        str(ROOT / "demo" / "app.py"),
        "--artifacts",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def output() -> str:
        log.flush()
        return Path(log.name).read_text(errors="replace")[-3000:]

    try:
        yield proc, start, output
    finally:
        if proc.poll() is None:
            proc.terminate()  # uvicorn stops at once on SIGTERM (SIGINT waits for connections to drain)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)
        log.close()
        os.unlink(log.name)


@dataclass(frozen=True)
class Target:
    """One prediction to ask the demo for."""

    model: str
    format: str
    device: str
    input_name: str
    features: list[float]


def gradio_predict(client: Any, base: str, target: Target, session: bool = False) -> dict[str, Any]:
    """The demo's Gradio `predict` route as curl calls it (README), or with one session_hash per client
    connection as gradio_client sends it. Any error fails the run."""
    from pipeline.client import PredictError, call_predict

    try:
        result = call_predict(
            client,
            base,
            target.model,
            target.format,
            target.device,
            target.features,
            session=f"bench-{id(client):x}" if session else None,
        )
    except PredictError as exc:
        raise BenchError(f"predict({target.model}, {target.format}) failed: {exc}") from None
    if "outputs" not in result:
        raise BenchError(f"predict({target.model}, {target.format}) answered without outputs: {result}")
    return result


def gradio_run(client: Any, base: str, target: Target) -> dict[str, Any]:
    """Gradio's direct route for the same function: one POST /gradio_api/run/predict, no queue."""
    answer = client.post(
        base + "/gradio_api/run/predict", json={"data": [target.model, target.format, target.device, target.features]}
    )
    if answer.status_code != 200:
        raise BenchError(f"POST /gradio_api/run/predict answered {answer.status_code}: {answer.text[:300]}")
    data = answer.json().get("data")
    if not isinstance(data, list) or not data or "outputs" not in data[0]:
        raise BenchError(f"/gradio_api/run/predict answered no outputs: {answer.text[:300]}")
    return data[0]


def oip_infer(client: Any, base: str, target: Target) -> dict[str, Any]:
    """The Open Inference Protocol route: POST /v2/models/{model}/infer with a JSON tensor."""
    body = {
        "inputs": [
            {"name": target.input_name, "shape": [1, len(target.features)], "datatype": "FP32", "data": target.features}
        ],
        "parameters": {"format": target.format},
    }
    answer = client.post(f"{base}/v2/models/{target.model}/infer", json=body)
    if answer.status_code != 200:
        raise BenchError(f"infer {target.model} ({target.format}) answered {answer.status_code}: {answer.text[:300]}")
    data = answer.json()
    if not data.get("outputs"):
        raise BenchError(f"infer {target.model} ({target.format}) answered no outputs: {str(data)[:300]}")
    return data


def gradio_predict_session(client: Any, base: str, target: Target) -> dict[str, Any]:
    return gradio_predict(client, base, target, session=True)


ROUTES: dict[str, Callable[[Any, str, Target], dict[str, Any]]] = {
    "gradio /call/predict": gradio_predict,  # the documented route (README's curl, tests/demo_server.py)
    "gradio /call/predict + session_hash": gradio_predict_session,  # what gradio_client sends
    "gradio /run/predict": gradio_run,  # README's one-request curl, where the demo answers it
    "OIP /v2 infer": oip_infer,  # where the demo has the Open Inference Protocol routes
}
PRIMARY_ROUTE = "gradio /call/predict"


def load_test(
    request: Callable[[Any, str, Target], dict[str, Any]], base: str, target: Target, clients: int, requests: int
) -> tuple[list[float], list[float], list[str], float]:
    """`clients` threads, each with its own connection, making `requests` calls after one warm-up call:
    (latencies in s, server-side predict times in ms where the route reports them, errors, wall s)."""
    import httpx

    latencies: list[float] = []
    server_ms: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    ready = threading.Barrier(clients + 1)

    def worker() -> None:
        with httpx.Client(timeout=60.0) as client:
            try:
                request(client, base, target)  # a warm connection
            except Exception as exc:  # noqa: BLE001 - every error is kept and fails the run
                with lock:
                    errors.append(_one_line(exc))
            ready.wait()
            for _ in range(requests):
                start = time.perf_counter()
                try:
                    answer = request(client, base, target)
                except Exception as exc:  # noqa: BLE001
                    with lock:
                        errors.append(_one_line(exc))
                    continue
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
                    if isinstance(answer.get("latency_ms"), (int, float)) and answer["latency_ms"] > 0:
                        server_ms.append(float(answer["latency_ms"]))

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return latencies, server_ms, errors, time.perf_counter() - start


def import_seconds(module: str) -> float:
    """Seconds a fresh interpreter takes to import `module`."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"python -c 'import {module}' failed: {proc.stderr.strip()[-300:]}")
    return float(proc.stdout.strip().splitlines()[-1])


def bench_demo(
    artifacts: Path,
    manifest: Manifest,
    models: Sequence[str],
    plan: Plan,
    skipped: list[str],
    log: Callable[[str], None],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Cold start of the demo, then its routes under load: (http section, cold_start section)."""
    import httpx

    def target(model: str, fmt: str) -> Target:
        entry = manifest.model(model)
        return Target(model, fmt, "cpu", entry.input["name"], [float(v) for v in entry.examples[0]])

    http_models = [m for m in HTTP_MODELS if m in manifest.models] or list(models[:1])
    first = target(http_models[0], HTTP_FORMATS[0])
    port = free_port()
    with demo_process(artifacts, port) as (proc, started, output):
        base = f"http://127.0.0.1:{port}"
        deadline = started + 180.0
        listening = None
        refusals = 0
        with httpx.Client(timeout=30.0) as client:
            while True:
                if proc.poll() is not None:
                    raise BenchError(f"the demo exited with code {proc.returncode} before answering:\n{output()}")
                if listening is None and "demo: serving" in output():
                    listening = time.perf_counter() - started
                try:
                    gradio_predict(client, base, first)
                    break
                except httpx.TransportError as exc:  # not listening yet
                    if time.perf_counter() > deadline:
                        raise BenchError(f"the demo gave no prediction within 180 s ({exc}):\n{output()}") from None
                except BenchError:  # listening, but the route is not ready: a few tries, then it is an error
                    refusals += 1
                    if refusals > 20:
                        raise
                time.sleep(0.01)
            cold: dict[str, Any] = {
                "seconds": time.perf_counter() - started,
                "request": f"{first.model} {first.format} cpu",
                "command": "python demo/app.py --artifacts DIR --host 127.0.0.1 --port PORT",
            }
            if listening is not None:
                cold["listening_s"] = listening  # when the demo printed its URL (imports and app built)
            log(f"  cold start: {cold['seconds']:.2f} s to the first {first.model} prediction")
            if not plan.quick:  # what the start is made of: importing the demo, most of it gradio
                for module in ("gradio", "demo.app"):
                    cold[f"import_{module.replace('.', '_')}_s"] = import_seconds(module)
            routes = [PRIMARY_ROUTE]
            for route in ROUTES:
                if route == PRIMARY_ROUTE:
                    continue
                try:
                    ROUTES[route](client, base, first)
                    routes.append(route)
                except (BenchError, httpx.HTTPError) as exc:
                    skipped.append(f"http {route}: {_one_line(exc)}")
        rows = []
        for route in routes:
            for model in http_models:
                for fmt in HTTP_FORMATS:
                    tgt = target(model, fmt)
                    for clients in HTTP_CLIENTS:
                        per_client = plan.http_requests if clients == 1 else max(plan.http_requests // 4, 3)
                        lat, server_ms, errors, wall = load_test(ROUTES[route], base, tgt, clients, per_client)
                        if errors:
                            raise BenchError(
                                f"{route} {model} {fmt} with {clients} clients: {len(errors)} of "
                                f"{clients * per_client} requests failed, e.g. {errors[0]}"
                            )
                        ms = np.asarray(lat) * 1e3
                        row = {
                            "route": route,
                            "model": model,
                            "format": fmt,
                            "device": "cpu",
                            "clients": clients,
                            "requests": len(lat),
                            "p50_ms": float(np.percentile(ms, 50)),
                            "p99_ms": float(np.percentile(ms, 99)),
                            "requests_per_s": len(lat) / wall,
                        }
                        if server_ms:
                            row["server_predict_p50_ms"] = float(np.median(server_ms))
                        rows.append(row)
                        log(
                            f"  http {route} {model} {fmt} x{clients}: p50 {row['p50_ms']:.2f} ms, "
                            f"p99 {row['p99_ms']:.2f} ms, {row['requests_per_s']:.0f} req/s"
                        )
    return {"routes": routes, "rows": rows, "errors": "none: any failed request fails the run"}, cold


def _as_tuple(out: Any) -> tuple[Any, ...]:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


# ---- 6. seed 004 §10.8 ----------------------------------------------------------------------------------


def bench_device_timing(plan: Plan, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """(1x6400)·(6400x5000) as the seed times it: torch on CPU, on CUDA where available, and NumPy."""
    import torch

    rows = []

    def record(backend: str, dtype: str, call: Callable[[], Any]) -> None:
        for _ in range(2):
            call()
        times = []
        for _ in range(plan.matmul_repeats):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        rows.append(
            {
                "backend": backend,
                "dtype": dtype,
                "repeats": plan.matmul_repeats,
                "p50_ms": float(np.median(times)) * 1e3,
                "min_ms": min(times) * 1e3,
            }
        )
        log(f"  x @ y (1x6400 . 6400x5000) {backend} {dtype}: {rows[-1]['p50_ms']:.2f} ms")

    x, y = torch.rand(1, 6400), torch.rand(6400, 5000)  # as the seed writes it
    record(f"torch cpu ({torch.get_num_threads()} threads)", "float32", lambda: x @ y)
    if torch.cuda.is_available():
        xc, yc = x.to("cuda"), y.to("cuda")

        def on_gpu() -> None:
            xc @ yc
            torch.cuda.synchronize()

        record(f"torch cuda ({torch.cuda.get_device_name(0)})", "float32", on_gpu)
    xn, yn = np.random.random((1, 6400)), np.random.random((6400, 5000))  # float64, as the seed draws them
    record("numpy", "float64", lambda: np.matmul(xn, yn))
    xf, yf = xn.astype(np.float32), yn.astype(np.float32)
    record("numpy", "float32", lambda: np.matmul(xf, yf))
    return rows


# ---- the run ----------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
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
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("torch", "numpy", "onnx", "onnxruntime-gpu", "onnxruntime", "gradio", "httpx"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal of issue 5 against the figure it is judged on."""
    out = []

    def add(name: str, goal: float, value: float, detail: str) -> None:
        out.append({"target": name, "goal": goal, "value": value, "met": bool(value <= goal), "detail": detail})

    by_runtime: dict[str, list[dict[str, Any]]] = {}
    for row in result["latency"]:
        by_runtime.setdefault(f"{row['format']}/{row['runtime']} ({row['device']})", []).append(row)
    for runtime, rows in by_runtime.items():
        worst = max(rows, key=lambda r: r["predictor_over_bare"])
        add(
            f"predictor p50 / bare p50, {runtime}",
            GOALS["predictor_over_bare"],
            worst["predictor_over_bare"],
            f"worst model: {worst['model']}; median over models "
            f"{float(np.median([r['predictor_over_bare'] for r in rows])):.3f}",
        )
    for row in result["latency_summary"]:
        if row["model"] == FLOOR_MODEL:
            add(
                f"fastest runtime / NumPy floor, {FLOOR_MODEL} single example",
                GOALS["best_over_floor"],
                row["best_over_floor"],
                f"fastest: {row['best']}",
            )
    for row in result["http"].get("rows", []):
        if row["clients"] == 1:
            add(
                f"HTTP p50, 1 client, {row['route']} {row['model']} {row['format']}",
                GOALS["http_p50_ms"],
                row["p50_ms"],
                f"p99 {row['p99_ms']:.2f} ms",
            )
    for row in result["training"]["steps"]:
        add(
            f"trainer step / seed-style step, {row['model']}",
            GOALS["trainer_over_bare"],
            row["trainer_over_bare"],
            f"{row['trainer_step_us']:.1f} vs {row['bare_step_us']:.1f} us/step",
        )
    if "seconds" in result["cold_start"]:
        add(
            "demo cold start (s)",
            GOALS["cold_start_s"],
            result["cold_start"]["seconds"],
            "python demo/app.py to the first successful predict",
        )
    return out


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], markdown: bool = False) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 100 else f"{v:,.0f}"
        return str(v)

    cells = [[fmt(v) for v in row] for row in rows]
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        return "\n".join(lines + ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in cells])
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def tables(result: dict[str, Any], markdown: bool = False) -> str:
    """The run as tables, one per section: plain text, or Markdown (for BENCHMARKS.md)."""

    def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
        return _table(headers, rows, markdown)

    parts = []
    lat = result["latency"]
    parts.append(
        "Single-example latency (us): predictor = PredictorCache.get(...).predict(x); "
        "bare = the runtime's own call; floor = NumPy forward\n"
        + table(
            [
                "model",
                "format/runtime",
                "device",
                "pred p50",
                "pred p99",
                "bare p50",
                "bare p99",
                "floor p50",
                "pred/bare",
                "pred/floor",
            ],
            [
                [
                    r["model"],
                    f"{r['format']}/{r['runtime']}",
                    r["device"],
                    r["predictor_p50_us"],
                    r["predictor_p99_us"],
                    r["bare_p50_us"],
                    r["bare_p99_us"],
                    r.get("floor_p50_us", "-"),
                    r["predictor_over_bare"],
                    r.get("predictor_over_floor", "-"),
                ]
                for r in lat
            ],
        )
    )
    parts.append(
        "Fastest runtime per model against the NumPy floor\n"
        + table(
            [
                "model",
                "fastest (predictor)",
                "p50 us",
                "floor p50 us",
                "best/floor",
                "fastest bare",
                "bare/floor",
            ],
            [
                [
                    r["model"],
                    r["best"],
                    r["best_p50_us"],
                    r["floor_p50_us"],
                    r["best_over_floor"],
                    r["best_bare"],
                    r["best_bare_over_floor"],
                ]
                for r in result["latency_summary"]
            ],
        )
    )
    parts.append(
        "Batch throughput (examples/s)\n"
        + table(
            ["model", "format/runtime", "device", *(f"batch {n}" for n in BATCH_SIZES)],
            [
                [
                    r["model"],
                    f"{r['format']}/{r['runtime']}",
                    r["device"],
                    *(r[f"batch_{n}_per_s"] for n in BATCH_SIZES),
                ]
                for r in result["throughput"]
            ],
        )
    )
    big = f"batch_{BATCH_SIZES[-1]}_p50_us"
    parts.append(
        "Tuning (bare calls side by side, us)\n"
        + table(
            ["setting", "model", "single p50", "single p99", f"batch {BATCH_SIZES[-1]} p50"],
            [[r["setting"], r["model"], r["single_p50_us"], r["single_p99_us"], r[big]] for r in result["tuning"]],
        )
    )
    http = result["http"]
    if http.get("rows"):
        parts.append(
            "HTTP over loopback (ms)\n"
            + table(
                ["route", "model", "format", "clients", "requests", "p50", "p99", "req/s"],
                [
                    [
                        r["route"],
                        r["model"],
                        r["format"],
                        r["clients"],
                        r["requests"],
                        r["p50_ms"],
                        r["p99_ms"],
                        r["requests_per_s"],
                    ]
                    for r in http["rows"]
                ],
            )
        )
    if "seconds" in result["cold_start"]:
        cold = result["cold_start"]
        extra = [
            f"{k.removesuffix('_s').replace('_', ' ')} {v:.2f} s"
            for k, v in cold.items()
            if k.endswith("_s") and isinstance(v, float)
        ]
        parts.append(f"Demo cold start: {cold['seconds']:.2f} s to the first prediction ({'; '.join(extra)})")
    train = result["training"]
    parts.append(
        "Training step (us): our trainer against the seed-style loop\n"
        + table(
            ["model", "recipe", "steps", "trainer", "seed-style", "trainer/bare"],
            [
                [
                    r["model"],
                    r["recipe"],
                    r["steps"],
                    r["trainer_step_us"],
                    r["bare_step_us"],
                    r["trainer_over_bare"],
                ]
                for r in train["steps"]
            ],
        )
    )
    walls = train["walls"]
    if "train_s" in walls:
        parts.append(
            f"Wall time ({walls['models']}, {walls['device']}): train {walls['train_s']:.1f} s, "
            f"export {walls['export_s']:.1f} s"
        )
    parts.append(
        "Seed 004 §10.8: (1x6400)·(6400x5000)\n"
        + table(
            ["backend", "dtype", "p50 ms", "min ms"],
            [[r["backend"], r["dtype"], r["p50_ms"], r["min_ms"]] for r in result["device_timing"]],
        )
    )
    parts.append(
        "Targets\n"
        + table(
            ["target", "goal", "value", "met", "detail"],
            [[t["target"], t["goal"], t["value"], "yes" if t["met"] else "NO", t["detail"]] for t in result["targets"]],
        )
    )
    if markdown:  # each title a heading, the table after a blank line
        parts = [f"#### {p.split(chr(10), 1)[0]}\n\n{p.split(chr(10), 1)[1]}" if "\n" in p else p for p in parts]
    return "\n\n".join(parts)


def _quiet_torchscript(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():  # TorchScript is deprecated in favour of .pt2; it is measured on purpose
            warnings.filterwarnings("ignore", message=r".*torch\.jit\..*deprecated", category=FutureWarning)
            return fn(*args, **kwargs)

    return wrapper


@_quiet_torchscript
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
    """Run every section and write the JSON; returns the result."""
    import torch

    from pipeline.devices import resolve_torch_device
    from pipeline.runtime import PredictorCache

    plan = QUICK if quick else FULL
    started = time.perf_counter()
    manifest = Manifest.load(artifacts)
    if models == "all":
        names = list(manifest.models)
        if quick:  # the models issue 5 names; --models picks others
            names = [n for n in dict.fromkeys((FLOOR_MODEL, *HTTP_MODELS)) if n in manifest.models] or names
    else:
        names = [manifest.model(n.strip()).name for n in models.split(",") if n.strip()]
    devices = bench_devices(device)
    train_device, _ = resolve_torch_device("cpu" if device == "auto" and "cuda" not in devices else device)
    skipped: list[str] = []
    cache = PredictorCache(manifest, threads=threads)  # threads: torch.set_num_threads and onnxruntime's
    result: dict[str, Any] = {
        "command": " ".join(["python -m pipeline bench", *sys.argv[2:]]) if sys.argv[1:2] == ["bench"] else "",
        "quick": quick,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "versions": versions(),
        "threads_option": threads or "default",
        "torch_threads_at_start": torch.get_num_threads(),
        "ort_threads": threads or int(os.environ.get("PIPELINE_ORT_THREADS", "1")),
    }
    log(f"bench ({'quick' if quick else 'full'}): models {', '.join(names)}; devices {', '.join(devices)}")
    sections: dict[str, float] = {}

    @contextlib.contextmanager
    def section(name: str, title: str) -> Iterator[None]:
        log(title)
        start = time.perf_counter()
        yield
        sections[name] = time.perf_counter() - start

    with section("latency", "1. single-example latency"):
        result["latency"] = bench_latency(manifest, names, devices, plan, cache, skipped, log)
        result["latency_summary"] = latency_summary(result["latency"])
        result["torch_threads"] = torch.get_num_threads()  # in effect once the predictors are loaded
    with section("throughput", "2. batch throughput"):
        result["throughput"] = bench_throughput(manifest, names, devices, plan, cache, skipped, log)
    with section("tuning", "tuning: settings side by side"):
        result["tuning"] = bench_tuning(manifest, FLOOR_MODEL if FLOOR_MODEL in names else names[0], plan, log)
    del cache
    gc.collect()
    if http:
        with section("http", "3 and 5. the demo: cold start, then HTTP"):
            result["http"], result["cold_start"] = bench_demo(Path(artifacts), manifest, names, plan, skipped, log)
    else:
        result["http"], result["cold_start"] = {"skipped": "--skip-http"}, {"skipped": "--skip-http"}
    with section("training", "4. training"):
        result["training"] = {"steps": bench_training(names, train_device, plan, log)}
    wall_models = plan.wall_models if plan.wall_models in names else (names[-1] if quick else ",".join(names))
    with section("walls", "4. wall time of train and export"):
        result["training"]["walls"] = bench_walls(wall_models, train_device, log)
    with section("device_timing", "6. seed 004 §10.8 device timing"):
        result["device_timing"] = bench_device_timing(plan, log)
    result["section_seconds"] = sections
    result["targets"] = targets(result)
    result["skipped"] = skipped
    result["seconds"] = time.perf_counter() - started
    if hasattr(os, "getloadavg"):
        result["machine"]["load_average_1m_at_end"] = os.getloadavg()[0]
    out = Path(output) if output else Path(artifacts) / BENCH_JSON
    atomic_write_json(out, result)
    log("")
    log(tables(result))
    log(f"\nbench took {result['seconds']:.0f} s; results in {out}")
    return result


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
