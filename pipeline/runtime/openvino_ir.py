"""The OpenVINO IR loader: the .xml (and its .bin beside it) compiled by OpenVINO's runtime for the CPU.

Inference precision is declared f32: the CPU plugin's default is bf16 on processors with native bf16,
which moved two_layer_net by 1.8e-3, outside float32's parity rule. Each thread gets its own infer
request (one request is not safe to share); outputs are copies, never views of a request's buffers.
No torch here: the IR needs only openvino and numpy.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pipeline.artifacts.manifest import ModelEntry
from pipeline.artifacts.tensors import feeds
from pipeline.runtime.loaders import Runner, RuntimeUnavailable

DEVICE = "CPU"
# One stream and one thread unless asked, as the onnxruntime sessions here (single examples of small models);
# threads not pinned to cores, which other processes share.
# No runtime cache: the CPU plugin (2026.4) caches kernels by input shape, and once a model with a varying length
# had first run at length 1, a self-attention layer answered 0.25 to 8.6 off eager at lengths 16 to 37 (a
# transformer over token ids: top-1 40.6% against eager's 93.8%); with the cache off it is 1e-6 at every length.
CONFIG = {
    "CPU_RUNTIME_CACHE_CAPACITY": 0,
    "INFERENCE_PRECISION_HINT": "f32",
    "PERFORMANCE_HINT": "LATENCY",
    "NUM_STREAMS": 1,
    "ENABLE_CPU_PINNING": False,
}


def load_openvino(entry: ModelEntry, path: str, device: str, threads: int | None) -> Runner:
    """openvino.Core().compile_model on the CPU at f32 inference precision."""
    import openvino as ov

    if device not in ("cpu", "auto"):
        raise RuntimeUnavailable(f"OpenVINO runs on the CPU here; got device {device}")
    core = ov.Core()
    config: dict[str, Any] = {**CONFIG, "INFERENCE_NUM_THREADS": 1 if threads is None else threads}
    compiled = core.compile_model(core.read_model(path), DEVICE, config)
    input_names = [port.get_any_name() for port in compiled.inputs]
    names = [port.get_any_name() for port in compiled.outputs]
    local = threading.local()

    def request() -> Any:
        req = getattr(local, "request", None)
        if req is None:
            req = local.request = compiled.create_infer_request()
        return req

    def run_batch(x: Any) -> Sequence[np.ndarray]:
        result = request().infer(dict(zip(input_names, feeds(entry.input_names, x), strict=True)))
        return [np.array(result[port]) for port in compiled.outputs]

    def bare(x: Any) -> Callable[[], Any]:
        fed = dict(zip(input_names, feeds(entry.input_names, x), strict=True))
        req = compiled.create_infer_request()
        return lambda: req.infer(fed)

    return Runner(run_batch, "cpu", compiled, bare, names)
