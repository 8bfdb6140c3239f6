"""One loader per (format, runtime) that pipeline/formats.py declares: a file -> a batch function.

Each loader is called as loader(entry, path, device, threads) with a sha256-checked path and returns
a `Runner`: the batch function, the device or provider that really runs it, the runtime's own object
(session, ScriptModule, exported program's module, nn.Module) and its bare call, which the benchmarks
time against the predictor from the same load. Only pipeline/runtime/predictor.py calls these, through the
formats' declarations; torch is imported only by the torch loaders.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.artifacts.manifest import ModelEntry
from pipeline.artifacts.tensors import feeds, random_batch
from pipeline.errors import UserError
from pipeline.runtime.devices import DeviceError, cuda_index, cuda_status


class RuntimeUnavailable(UserError, RuntimeError):
    """The runtime or device asked for cannot run here; the message says why."""


@dataclass
class Runner:
    """What a loader gives the predictor."""

    run_batch: Callable[[np.ndarray], Sequence[np.ndarray]]  # every output the artifact declares, in its order
    device: str  # what really runs it: "cpu", "cuda:0", "CUDAExecutionProvider", ...
    native: Any  # the runtime's own object
    bare: Callable[[np.ndarray], Callable[[], Any]]  # x -> the runtime's own call on x, nothing of ours around it
    declared: Sequence[str] | None = None  # the output names the file declares; None: positional (torch)


# ---- onnxruntime ------------------------------------------------------------------------------


def onnxruntime_providers(device: str) -> list[Any]:
    """The execution providers to ask for: CUDA only where a GPU and the CUDA provider can work.

    TF32 is turned off: the CUDA provider enables it for float32 MatMul/Gemm by default, which rounds
    inputs to 10 mantissa bits and puts onnxruntime-CUDA 1e-4 to 1e-1 away from torch (which keeps
    float32 matmuls exact), far outside the parity tolerance.
    """
    if device == "cpu":
        return ["CPUExecutionProvider"]
    ok, why = cuda_status("onnxruntime")
    if not ok:
        if device == "auto":
            return ["CPUExecutionProvider"]
        raise RuntimeUnavailable(f"onnxruntime cannot use {device}: {why}")
    index = 0 if device == "auto" else _cuda_index(device)
    options = {"device_id": str(index), "use_tf32": "0"}
    return [("CUDAExecutionProvider", options), "CPUExecutionProvider"]


def session_options(threads: int | None = None) -> Any:
    """Session options tuned for single examples of small models (see BENCHMARKS.md)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    threads = threads if threads is not None else int(os.environ.get("PIPELINE_ORT_THREADS", "1"))
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return opts


def load_onnxruntime(entry: ModelEntry, path: str, device: str, threads: int | None) -> Runner:
    """An onnxruntime session; on CUDA, with fallback to the CPU disabled so the device never lies."""
    import onnxruntime as ort

    providers = onnxruntime_providers(device)
    if providers[0] != "CPUExecutionProvider" and hasattr(ort, "preload_dlls"):
        ort.preload_dlls()  # CUDA and cuDNN from the nvidia-* wheels torch brings, without importing torch
    session = ort.InferenceSession(path, sess_options=session_options(threads), providers=providers)
    actual = session.get_providers()[0]
    if device.startswith("cuda") and actual != "CUDAExecutionProvider":
        raise RuntimeUnavailable(f"onnxruntime's CUDA provider did not load for {path}; it fell back to {actual}")
    if actual != "CPUExecutionProvider":
        session.disable_fallback()  # a failing CUDA run raises instead of quietly re-running on the CPU
    input_names = [i.name for i in session.get_inputs()]
    names = [o.name for o in session.get_outputs()]
    fast = _ort_binding_run(session, actual, names, input_names, entry)
    run = fast or session.run
    extra = () if fast is None else (None,)
    one = input_names[0] if len(input_names) == 1 else None

    def run_batch(x: Any) -> Sequence[np.ndarray]:
        if one is not None and isinstance(x, np.ndarray):
            return run(names, {one: x}, *extra)
        return run(names, dict(zip(input_names, feeds(entry.input_names, x), strict=True)), *extra)

    def bare(x: Any) -> Callable[[], Any]:
        feed = dict(zip(input_names, feeds(entry.input_names, x), strict=True))
        return lambda: session.run(None, feed)

    return Runner(run_batch, actual, session, bare, names)


def _ort_binding_run(session: Any, provider: str, names: list[str], input_names: list[str], entry: ModelEntry) -> Any:
    """The C++ binding's run under InferenceSession.run, where it is safe to call directly, else None.

    InferenceSession.run re-checks the feed in Python on every call (missing inputs, OrtValue ownership,
    graph capture) and catches provider failures to fall back: 2-3 us, a fifth of a small model's call
    (BENCHMARKS.md). Our feed is always one array of the declared dtype per input name, so on the CPU
    provider (nothing to fall back from) the binding is called directly, once it has been seen to give
    what the public call gives.
    """
    binding = getattr(session, "_sess", None)
    if provider != "CPUExecutionProvider" or binding is None:
        return None
    batch = feeds(entry.input_names, random_batch(entry.inputs, 2, np.random.default_rng(0)))
    probe = dict(zip(input_names, batch, strict=True))
    try:
        got = binding.run(names, probe, None)
        want = session.run(names, probe)
    except Exception:  # noqa: BLE001 - a binding that changed shape: keep the public call
        return None
    same = len(got) == len(want) and all(np.array_equal(a, b, equal_nan=True) for a, b in zip(got, want, strict=True))
    return binding.run if same else None


def load_onnx_reference(entry: ModelEntry, path: str, device: str, threads: int | None) -> Runner:
    """onnx's ReferenceEvaluator: an independent ONNX runtime, in NumPy, CPU only."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    if device != "cpu":
        raise RuntimeUnavailable(f"onnx's ReferenceEvaluator runs on the CPU only; got device {device}")
    proto = onnx.load(path)
    evaluator = ReferenceEvaluator(proto)
    input_names = [i.name for i in proto.graph.input]
    # The graph's declared outputs, asked for with None: asked by name, the evaluator also returns an
    # intermediate value of that name that the graph no longer outputs.
    names = [o.name for o in proto.graph.output]

    def feed(x: Any) -> dict[str, np.ndarray]:
        return dict(zip(input_names, feeds(entry.input_names, x), strict=True))

    def run_batch(x: Any) -> Sequence[np.ndarray]:
        return [np.asarray(o) for o in evaluator.run(None, feed(x))]

    def bare(x: Any) -> Callable[[], Any]:
        fed = feed(x)
        return lambda: evaluator.run(None, fed)

    return Runner(run_batch, "onnx.reference.ReferenceEvaluator", evaluator, bare, names)


# ---- torch ------------------------------------------------------------------------------------


def torch_device(device: str) -> str:
    """The torch device string for a predictor's `device` (auto: the first GPU torch can use, else cpu)."""
    if device == "cpu":
        return "cpu"
    ok, why = cuda_status("torch")
    if device == "auto":
        return "cuda:0" if ok else "cpu"
    if not ok:
        raise RuntimeUnavailable(f"torch cannot use {device}: {why}")
    return f"cuda:{_cuda_index(device)}"


def _cuda_index(device: str) -> int:
    try:
        return cuda_index(device)
    except DeviceError as exc:
        raise RuntimeUnavailable(str(exc)) from None


def _torch_loaded(module: Any, device: str, names: Sequence[str]) -> Runner:
    import torch

    on_cpu = device == "cpu"
    # This predictor's module needs no gradients: with none of its parameters requiring one (and inputs
    # from NumPy never do), autograd records nothing, so no per-call guard is needed. Entering
    # torch.inference_mode() on every call costs more than it saves on these small modules (a few us a
    # call; BENCHMARKS.md, tuning).
    for param in module.parameters():
        param.requires_grad_(False)

    def run_batch(x: Any) -> Sequence[np.ndarray]:
        if isinstance(x, np.ndarray):
            t = torch.from_numpy(x)
            out = module(t if on_cpu else t.to(device))
        else:
            ts = [torch.from_numpy(a) for a in feeds(names, x)]
            out = module(*(ts if on_cpu else [t.to(device) for t in ts]))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return [o.numpy() if on_cpu else o.cpu().numpy() for o in outs]

    def bare(x: Any) -> Callable[[], Any]:
        arrays = feeds(names, x)
        ts = [torch.from_numpy(a).to(device) for a in arrays]
        if on_cpu:
            return lambda: module(*ts)

        def call() -> Any:  # the same copies the predictor pays: host to device, and the outputs back
            out = module(*(torch.from_numpy(a).to(device) for a in arrays))
            return [o.cpu() for o in (out if isinstance(out, (tuple, list)) else (out,))]

        return call

    return Runner(run_batch, device, module, bare)


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def load_torchscript(entry: ModelEntry, path: str, device: str, threads: int | None) -> Runner:
    """torch.jit.load onto the device."""
    import torch

    _set_threads(threads)
    dev = torch_device(device)
    with quiet_torchscript():
        module = torch.jit.load(path, map_location=dev).eval()
    return _torch_loaded(module, dev, entry.input_names)


_PT2_LOCK = threading.Lock()


def load_pt2_weights_only(path: str) -> Any:
    """torch.export.load with every torch.load inside it forced to weights_only=True.

    torch.export.load unpickles sample inputs and 'use_pickle' payloads with weights_only=False, so a
    hostile .pt2 would run code. TORCH_FORCE_WEIGHTS_ONLY_LOAD, read by torch.load on each call,
    overrides that; the lock keeps two loads from restoring the variable under each other.
    """
    import torch

    with _PT2_LOCK:
        before = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
        os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
        try:
            return torch.export.load(path)
        finally:
            if before is None:
                os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
            else:
                os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = before


def load_pt2(entry: ModelEntry, path: str, device: str, threads: int | None) -> Runner:
    """torch.export.load (weights only) and the program's module, moved to the device."""
    _set_threads(threads)
    dev = torch_device(device)
    program = load_pt2_weights_only(path)
    if dev != "cpu":
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, dev)
    return _torch_loaded(program.module(), dev, entry.input_names)


def load_eager(entry: ModelEntry, path: str, device: str, threads: int | None) -> Runner:
    """The catalog module with the trained state_dict (read with weights_only=True); needs the model's catalog."""
    _set_threads(threads)
    dev = torch_device(device)
    from pipeline import catalog
    from pipeline.artifacts.weights import load_state_dict

    if entry.name not in catalog.CATALOG:  # a catalog runs code: loaded only from --catalog, never from here
        where = (entry.raw.get("catalog") or {}).get("path", "its catalog file")
        raise RuntimeUnavailable(f"eager {entry.name} needs its catalog: pass --catalog {where}")
    module = catalog.get(entry.name).build()
    load_state_dict(module, path)
    return _torch_loaded(module.to(dev).eval(), dev, entry.input_names)


@contextlib.contextmanager
def quiet_torchscript() -> Iterator[None]:
    """Hide TorchScript's deprecation warnings: it is superseded by .pt2 and still shipped on purpose."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..*deprecated", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..*deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*TorchScript.*", category=DeprecationWarning)
        yield
