"""Device answers that hold on any machine: CUDA availability reasons, cuda:N checks, the precision and fallback
settings onnxruntime-CUDA gets, and CUDA parity rows that fail (never vanish) when CUDA was asked for.

The machine-independent half uses fakes; tests/test_cuda.py runs the real thing where a GPU exists.
"""

from __future__ import annotations

import pytest

from pipeline.runtime import devices, parity
from pipeline.runtime.devices import DeviceError
from tests.conftest import run_cli


@pytest.fixture
def one_gpu(monkeypatch):
    """A machine whose driver sees one GPU and supports CUDA 13.0."""
    monkeypatch.setattr(devices, "cuda_device_count", lambda: 1)
    monkeypatch.setattr(devices, "cuda_driver_version", lambda: 13000)


def test_cuda_index_beyond_the_device_count_is_one_line(one_gpu):
    assert devices.cuda_index("cuda") == 0 and devices.cuda_index("cuda:0") == 0
    with pytest.raises(DeviceError) as info:
        devices.cuda_index("cuda:1")
    assert str(info.value) == "device cuda:1: this machine has 1 CUDA GPU(s), index 0 to 0"


def test_cuda_index_on_a_machine_without_gpus(monkeypatch):
    monkeypatch.setattr(devices, "cuda_device_count", lambda: 0)
    with pytest.raises(DeviceError, match=r"^device cuda:0: this machine has no CUDA GPU$"):
        devices.cuda_index("cuda:0")


def test_reason_names_a_cpu_only_torch(monkeypatch, one_gpu):  # a GPU the driver sees, a torch without CUDA
    import torch

    monkeypatch.setattr(torch.version, "cuda", None)
    ok, why = devices.cuda_status("torch")
    assert not ok and why == f"torch {torch.__version__} is a CPU-only build"


def test_reason_names_a_driver_older_than_the_build(monkeypatch):
    import torch

    monkeypatch.setattr(devices, "cuda_device_count", lambda: 2)  # libcuda sees GPUs...
    monkeypatch.setattr(devices, "cuda_driver_version", lambda: 12040)  # ...but its driver is for CUDA 12.4
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ok, why = devices.cuda_status("torch")
    assert not ok and why == "the NVIDIA driver supports CUDA 12.4, older than the CUDA 13.0 this build needs"


def test_reason_names_a_missing_onnxruntime_provider(monkeypatch, one_gpu):
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    ok, why = devices.cuda_status("onnxruntime")
    assert not ok and "has no CUDA execution provider (install onnxruntime-gpu)" in why


def test_the_reference_evaluator_never_claims_cuda():
    assert devices.cuda_status("onnx-reference") == (False, "onnx-reference runs on the CPU only")


def test_requested_cuda_that_cannot_run_is_a_failed_row_not_a_skip(monkeypatch, manifest):
    monkeypatch.setattr(devices, "cuda_index", lambda device: 0)  # the GPU exists...
    monkeypatch.setattr(devices, "cuda_status", lambda runtime: (False, f"{runtime} cannot reach it (fake)"))
    report = parity.verify(manifest, ["linear_3x"], "cuda")
    gpu_rows = [r for r in report.rows if r.device == "cuda"]
    assert not report.passed
    assert {(r.format, r.runtime) for r in gpu_rows} == {
        ("torchscript", "torch"),
        ("onnx", "onnxruntime"),
        ("pt2", "torch"),
        ("eager", "torch"),
        ("onnx-fp16", "onnxruntime"),  # linear_3x has no int8 file (nothing to quantize): no row for it
    }
    assert all(not r.passed and r.failure == parity.UNAVAILABLE and "(fake)" in r.error for r in gpu_rows)
    assert all(r.passed for r in report.rows if r.device != "cuda")


def test_auto_skips_cuda_rows_it_cannot_run_and_says_why(monkeypatch, manifest):
    monkeypatch.setattr(devices, "cuda_status", lambda runtime: (False, "no GPU (fake)"))
    report = parity.verify(manifest, ["linear_3x"], "auto")
    assert report.passed and not [r for r in report.rows if r.device.startswith("cuda")]
    assert report.skipped == [
        "cuda rows torchscript/torch, onnx/onnxruntime, pt2/torch, onnx-int8/onnxruntime, onnx-fp16/onnxruntime, "
        "eager/torch: no GPU (fake)"
    ]


def test_verify_on_a_gpu_index_the_machine_lacks_is_one_line_and_exit_2(artifacts):
    result = run_cli("verify", "--device", "cuda:7", "--models", "linear_3x", "--artifacts", str(artifacts))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and "cuda:7" in lines[0]


def test_verify_refuses_mps_up_front(artifacts):
    result = run_cli("verify", "--device", "mps", "--artifacts", str(artifacts))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "mps" in result.stderr
