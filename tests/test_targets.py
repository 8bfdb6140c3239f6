"""The one plan of (format, runtime, device) targets: parity, the page's comparison, the benchmarks and the
demo's device note read it, so they agree about CUDA. CUDA is faked here; tests/test_cuda.py runs the real one."""

from __future__ import annotations

import pytest

from pipeline import formats
from pipeline.bench.latency import bench_targets
from pipeline.runtime import devices, parity, targets
from pipeline.runtime.devices import DeviceError
from pipeline.serving.service import compare_targets

GPU_PAIRS = {
    (f, load.runtime.name)
    for f, spec in formats.FORMATS.items()
    for load in spec.loaders
    if "cuda" in load.runtime.devices
}
CPU_PAIRS = {(f, load.runtime.name) for f, spec in formats.FORMATS.items() for load in spec.loaders}


@pytest.fixture
def torch_gpu_only(monkeypatch):
    """One GPU that torch can use and onnxruntime cannot (a CPU-only onnxruntime)."""
    monkeypatch.setattr(devices, "cuda_device_count", lambda: 1)
    status = {"torch": (True, "torch sees 1 GPU (fake)"), "onnxruntime": (False, "no CUDA provider (fake)")}
    monkeypatch.setattr(devices, "cuda_status", lambda runtime: status.get(runtime, (False, "CPU only")))


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(devices, "cuda_device_count", lambda: 0)
    monkeypatch.setattr(devices, "cuda_status", lambda runtime: (False, "no CUDA GPU is visible (fake)"))


def pairs(chosen, device: str) -> set[tuple[str, str]]:
    return {(t.format, t.runtime) for t in chosen if t.device == device}


def test_cpu_is_every_declared_format_and_runtime_on_the_cpu(no_gpu):
    plan = targets.plan("cpu")
    assert pairs(plan.targets, "cpu") == CPU_PAIRS and len(plan.targets) == len(CPU_PAIRS)
    assert plan.skipped == [] and all(t.unavailable is None for t in plan.targets)


def test_cuda_asked_for_gives_every_gpu_runtime_a_row_each_stage_sees_the_same(torch_gpu_only, manifest):
    plan = targets.plan("cuda")
    assert pairs(plan.targets, "cpu") == CPU_PAIRS and pairs(plan.targets, "cuda") == GPU_PAIRS
    why = {(t.format, t.runtime): t.unavailable for t in plan.targets if t.device == "cuda"}
    assert why[("onnx", "onnxruntime")] == "no CUDA provider (fake)" and why[("pt2", "torch")] is None

    checked, _ = parity.targets("cuda")  # parity: the same, less the reference it compares with
    assert set(checked) == set(plan.targets) - {targets.Target(*formats.REFERENCE)}
    entry = manifest.model("adder_mynet")
    compared = compare_targets(entry, "cuda")  # the page: the same, for the artifacts the model has
    assert set(compared) == {t for t in plan.targets if formats.get(t.format).artifact_kind in entry.artifacts}
    measured, skipped = bench_targets("cuda")  # the benchmarks: what can run, the rest skipped with why
    assert set(measured) == {t for t in plan.targets if not t.unavailable}
    assert "onnx/onnxruntime on cuda: no CUDA provider (fake)" in skipped
    assert targets.cuda_unavailable_reason() is None  # the page offers cuda: torch can use it


def test_auto_leaves_out_what_cannot_run_and_says_why_everywhere(no_gpu, manifest):
    plan = targets.plan("auto")
    assert pairs(plan.targets, "cuda") == set() and pairs(plan.targets, "cpu") == CPU_PAIRS
    assert len(plan.skipped) == 1 and plan.skipped[0].endswith(": no CUDA GPU is visible (fake)")
    assert parity.targets("auto")[1] == plan.skipped
    assert bench_targets("auto") == (plan.targets, plan.skipped)
    assert {t.device for t in compare_targets(manifest.model("adder_mynet"), "auto")} == {"cpu"}
    assert targets.cuda_unavailable_reason() == "torch, onnxruntime: no CUDA GPU is visible (fake)"


def test_auto_with_a_gpu_adds_the_runtimes_that_can_use_it(torch_gpu_only):
    plan = targets.plan("auto")
    assert pairs(plan.targets, "cuda") == {p for p in GPU_PAIRS if p[1] == "torch"}
    assert plan.skipped == [
        "cuda rows onnx/onnxruntime, onnx-int8/onnxruntime, onnx-fp16/onnxruntime: no CUDA provider (fake)"
    ]


def test_a_gpu_index_the_machine_lacks_is_every_gpu_rows_reason(torch_gpu_only):
    plan = targets.plan("cuda:3")
    gpu = [t for t in plan.targets if t.device == "cuda:3"]
    assert {(t.format, t.runtime) for t in gpu} == GPU_PAIRS
    assert all(t.unavailable == "device cuda:3: this machine has 1 CUDA GPU(s), index 0 to 0" for t in gpu)


def test_remote_servers_add_their_triton_formats():
    plan = targets.plan("cpu", remote=["http://127.0.0.1:9"])
    assert pairs([t for t in plan.targets if t.runtime.startswith("http")], "cpu") == {
        (f, "http://127.0.0.1:9") for f in formats.TRITON_FORMATS
    }


@pytest.mark.parametrize("device", ["mps", "tpu", "", None, "gpu"])
def test_a_device_no_artifact_runs_on_is_one_line(device):
    with pytest.raises(DeviceError, match=r"expected cpu, auto, cuda or cuda:N"):
        targets.plan(device)
