"""The loaders (pipeline/runtime/loaders.py), called directly: each declared (format, runtime) turns its
sha256-checked file into a Runner that computes what eager computes and says where it ran; onnxruntime on
CUDA gets full float32 precision and no silent CPU fallback (faked here: tests/test_cuda.py has the real one).
"""

from __future__ import annotations

import types

import numpy as np
import pytest

from pipeline import formats
from pipeline.artifacts.tensors import examples_batch
from pipeline.runtime import loaders
from pipeline.runtime.loaders import RuntimeUnavailable

CPU_DEVICE = {
    "torch": "cpu",
    "onnxruntime": "CPUExecutionProvider",
    "onnx-reference": "onnx.reference.ReferenceEvaluator",
}


@pytest.mark.parametrize(
    ("fmt", "runtime"), [(f, load.runtime.name) for f, spec in formats.FORMATS.items() for load in spec.loaders]
)
def test_every_loader_gives_a_runner_that_computes_what_eager_computes_on_the_cpu(manifest, eager, fmt, runtime):
    spec = formats.get(fmt)
    model = next(m for m, e in manifest.models.items() if spec.artifact_kind in e.artifacts)  # int8: a big net
    entry = manifest.model(model)
    path = manifest.verified_path(entry.artifact(spec.artifact_kind))
    runner = spec.loader(runtime).resolve()(entry, str(path), "cpu", 1)
    assert runner.device == CPU_DEVICE[runtime]
    x = examples_batch(entry.inputs, entry.examples)
    got, want = runner.run_batch(x), eager(model).run_batch(x)
    assert len(got) == len(want) == len(entry.outputs)  # every declared output, in the manifest's order
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=spec.rtol, atol=spec.atol + spec.scale * float(np.abs(w).max()))
    runner.bare(x)()  # the runtime's own call from the same load, as the benchmarks time it


def test_torch_on_a_gpu_it_cannot_use_is_refused_with_the_reason(monkeypatch):
    monkeypatch.setattr(loaders, "cuda_status", lambda runtime: (False, "torch 2.x is a CPU-only build (fake)"))
    assert loaders.torch_device("auto") == "cpu"  # auto falls back
    with pytest.raises(RuntimeUnavailable, match=r"torch cannot use cuda:0: torch 2.x is a CPU-only build \(fake\)"):
        loaders.torch_device("cuda:0")


def test_onnxruntime_cuda_gets_full_float32_precision_on_the_named_gpu(monkeypatch):
    monkeypatch.setattr(loaders, "cuda_status", lambda runtime: (True, "fake GPU"))
    monkeypatch.setattr(loaders, "cuda_index", lambda device: int(device.partition(":")[2] or 0))
    providers = loaders.onnxruntime_providers("cuda:1")
    name, options = providers[0]
    assert name == "CUDAExecutionProvider"
    assert options == {"device_id": "1", "use_tf32": "0"}  # TF32 would put onnxruntime 1e-4..1e-1 off torch
    assert providers[1:] == ["CPUExecutionProvider"]


def test_onnxruntime_cuda_session_has_its_cpu_fallback_disabled(monkeypatch, manifest):
    """If a CUDA run fails, onnxruntime must raise rather than quietly re-run on the CPU under a CUDA label."""
    import onnxruntime as ort

    calls = []

    class FakeSession:
        def __init__(self, path, sess_options=None, providers=None):
            self.providers = providers

        def get_providers(self):
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]

        def disable_fallback(self):
            calls.append("disable_fallback")

        def get_inputs(self):
            return [types.SimpleNamespace(name="x")]

        def get_outputs(self):
            return [types.SimpleNamespace(name="y")]

        def run(self, names, feed):
            return [feed["x"] * 3.0]

    monkeypatch.setattr(loaders, "cuda_status", lambda runtime: (True, "fake GPU"))
    monkeypatch.setattr(loaders, "cuda_index", lambda device: 0)
    monkeypatch.setattr(ort, "InferenceSession", FakeSession)
    monkeypatch.setattr(ort, "preload_dlls", lambda: None, raising=False)
    entry = manifest.model("linear_3x")
    loaded = loaders.load_onnxruntime(entry, "model.onnx", "cuda", None)
    assert calls == ["disable_fallback"]
    assert loaded.device == "CUDAExecutionProvider"
    assert loaded.native.providers[0][1]["use_tf32"] == "0"
