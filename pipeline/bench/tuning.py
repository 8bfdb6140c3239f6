"""Tuning: each setting that is ours to choose, measured side by side on one model.

onnxruntime sessions under each session option, and the TorchScript module under each thread count,
guard and freezing, one example and one large batch. This is the only module allowed to call private
runtime APIs (`session._sess.run`, `torch._C._InferenceMode`): it measures what they would save.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from pipeline import formats
from pipeline.artifacts.manifest import Manifest
from pipeline.bench.timing import BATCH_SIZES, WARMUP_PER_SHAPE, Candidate, Plan, percentiles_us, side_by_side
from pipeline.runtime.loaders import session_options
from pipeline.runtime.predictor import load_predictor


def _format_loaded_by(function: str) -> str:
    """The first exported format whose loader is `function` ("module:function" in pipeline/formats.py)."""
    return next(
        f.name for f in formats.FORMATS.values() if f.exporter and any(ld.function == function for ld in f.loaders)
    )


ONNXRUNTIME_FORMAT = _format_loaded_by("pipeline.runtime.loaders:load_onnxruntime")  # tuned: session options
TORCHSCRIPT_FORMAT = _format_loaded_by("pipeline.runtime.loaders:load_torchscript")  # tuned: threads, guards, freezing


def _ort_options(threads: int | None = None, **changes: Any) -> Any:
    """onnxruntime's own defaults (threads None) or ours, with `changes` on top."""
    import onnxruntime as ort

    opts = session_options(threads) if threads is not None else ort.SessionOptions()
    opts.log_severity_level = 3
    for key, value in changes.items():
        if key == "spinning":
            opts.add_session_config_entry("session.intra_op.allow_spinning", value)
        else:
            setattr(opts, key, value)
    return opts


def onnxruntime_candidates(path: str, x: np.ndarray) -> list[Candidate]:
    """Bare session.run on `x` under each session option, then io_binding and the binding's run."""
    import onnxruntime as ort

    variants = {
        "onnxruntime defaults (SessionOptions())": _ort_options(),
        "ours: 1 intra-op thread, sequential, ENABLE_ALL": _ort_options(1),
        "2 intra-op threads": _ort_options(2),
        "2 intra-op threads, no spinning": _ort_options(2, spinning="0"),
        "1 thread, ORT_PARALLEL execution mode": _ort_options(1, execution_mode=ort.ExecutionMode.ORT_PARALLEL),
        "1 thread, ORT_ENABLE_BASIC graph optimisation": _ort_options(
            1, graph_optimization_level=ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        ),
        "1 thread, no memory arena / pattern": _ort_options(1, enable_cpu_mem_arena=False, enable_mem_pattern=False),
    }
    cands = []
    for name, opts in variants.items():
        session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x}
        cands.append(Candidate(f"onnxruntime: {name}", lambda s=session, f=feed: s.run(None, f)))
    session = ort.InferenceSession(path, _ort_options(1), providers=["CPUExecutionProvider"])
    in_name, names = session.get_inputs()[0].name, [o.name for o in session.get_outputs()]
    binding = session.io_binding()  # input and output bound once, no per-call output allocation
    binding.bind_cpu_input(in_name, x)
    for name in names:
        binding.bind_output(name, "cpu")
    cands.append(Candidate("onnxruntime: ours + io_binding (bound once)", lambda: session.run_with_iobinding(binding)))
    # What the predictor calls: the binding under InferenceSession.run, without its per-call Python checks.
    feed = {in_name: x}
    cands.append(
        Candidate(
            "onnxruntime: ours, via session._sess.run (the predictor's call)",
            lambda: session._sess.run(names, feed, None),
        )
    )
    return cands


def torchscript_candidates(module: Any, x: np.ndarray) -> list[Candidate]:
    """The ScriptModule the predictor loaded, on `x`: thread counts, freezing, and per-call guards."""
    import torch

    t = torch.from_numpy(x)
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

    cands = [
        Candidate(f"torchscript: torch.set_num_threads({n})", lambda: module(t), threads_ctx(n))
        for n in sorted({1, default_threads, os.cpu_count() or 1})
    ]
    frozen = torch.jit.freeze(module)  # a copy with the weights folded in as constants
    cands.append(Candidate("torchscript: torch.jit.freeze", lambda: frozen(t), torch.inference_mode))

    # The predictor's torch call (numpy in, numpy out), under each per-call inference-mode guard and under none.
    def runner(guard: Callable[[bool], Any] | None) -> Callable[[], Any]:
        def run() -> Any:
            with guard(True) if guard else contextlib.nullcontext():
                out = module(torch.from_numpy(x))
            return [o.numpy() for o in (out if isinstance(out, (tuple, list)) else (out,))]

        return run

    guards = {"with torch.inference_mode()": torch.inference_mode}
    if hasattr(torch._C, "_InferenceMode"):
        guards["with torch._C._InferenceMode"] = torch._C._InferenceMode
    for label, guard in guards.items():
        cands.append(Candidate(f"torchscript call, numpy in/out, {label}", runner(guard)))
    label = "torchscript call, numpy in/out, parameters without grad, no guard (the predictor's)"
    cands.append(Candidate(label, runner(None)))
    return cands


def bench_tuning(manifest: Manifest, model: str, plan: Plan, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Every candidate setting on one example and on a batch of BATCH_SIZES[-1], side by side, on `model`."""
    entry = manifest.model(model)
    x1 = np.ascontiguousarray(np.asarray(entry.examples[0], dtype=np.float32)[None, :])
    xb = np.random.default_rng(0).standard_normal((BATCH_SIZES[-1], x1.shape[1])).astype(np.float32)
    onnx_path = str(manifest.verified_path(entry.artifact(formats.get(ONNXRUNTIME_FORMAT).artifact_kind)))
    module = load_predictor(manifest, model, TORCHSCRIPT_FORMAT).native  # the one loader's ScriptModule
    cands1 = onnxruntime_candidates(onnx_path, x1) + torchscript_candidates(module, x1)
    candsb = onnxruntime_candidates(onnx_path, xb) + torchscript_candidates(module, xb)
    big = f"batch_{BATCH_SIZES[-1]}"
    batch_plan = replace(plan, min_calls=5, max_calls=500, warmup=max(plan.warmup // 30, WARMUP_PER_SHAPE))
    per_call = {"single": side_by_side(cands1, plan), big: side_by_side(candsb, batch_plan)}
    rows = []
    for cand in cands1:
        single, batch = percentiles_us(per_call["single"][cand.name]), percentiles_us(per_call[big][cand.name])
        rows.append(
            {
                "setting": cand.name,
                "model": model,
                "single_p50_us": single["p50_us"],
                "single_p99_us": single["p99_us"],
                f"{big}_p50_us": batch["p50_us"],
            }
        )
        log(f"  tuning {cand.name}: single {single['p50_us']:.1f} us, batch {batch['p50_us']:.0f} us")
    return rows
