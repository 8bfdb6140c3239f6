"""On a machine with a CUDA GPU: training, parity and predictions really run there, and say so.

Every test here is skipped where torch sees no CUDA device; where one is, a runtime that silently
falls back to the CPU fails them, because each asserts the device that really ran (`cuda:0`,
`CUDAExecutionProvider`), not the one asked for.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline import formats
from pipeline.artifacts.manifest import PARITY, Manifest
from pipeline.runtime.predictor import load_predictor

from .conftest import assert_matches_eager, run_cli

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA GPU here (torch.cuda.is_available() is False): the CUDA device checks did not run",
)

GPU_DEVICES = {"cuda:0", "CUDAExecutionProvider"}  # how torch and onnxruntime name the first GPU


def test_train_on_cuda_records_the_gpu_in_its_history(tmp_path):
    result = run_cli("train", "--models", "linear_3x", "--device", "cuda", "--artifacts", str(tmp_path), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "steps on cuda:0" in result.stdout
    history = json.loads((tmp_path / "linear_3x" / "history.json").read_text())
    assert history["device"] == "cuda:0"
    # the weights come back to the CPU, and they learned y = 3x there as on the CPU
    state = torch.load(tmp_path / "linear_3x" / "state_dict.pt", weights_only=True)
    assert all(t.device.type == "cpu" for t in state.values())
    assert state["linear.weight"].item() == pytest.approx(3.0, abs=1e-3)


def test_verify_on_cuda_checks_every_gpu_runtime_and_names_the_device(artifacts_copy):
    result = run_cli("verify", "--device", "cuda", "--artifacts", str(artifacts_copy))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((artifacts_copy / PARITY).read_text())
    assert report["passed"] and all(r["passed"] and r["error"] is None for r in report["rows"])
    on_gpu = {
        (r["model"], r["format"], r["runtime"], r["device"]) for r in report["rows"] if r["device"] in GPU_DEVICES
    }
    for model in Manifest.load(artifacts_copy).models:
        # torch runs eager and TorchScript on cuda:0; onnxruntime runs ONNX on its CUDA provider
        assert (model, "eager", "torch", "cuda:0") in on_gpu, model
        assert (model, "torchscript", "torch", "cuda:0") in on_gpu, model
        assert (model, "pt2", "torch", "cuda:0") in on_gpu, model
        assert (model, "onnx", "onnxruntime", "CUDAExecutionProvider") in on_gpu, model
    assert "cuda:0" in result.stdout and "CUDAExecutionProvider" in result.stdout


@pytest.mark.parametrize("fmt", list(formats.FORMATS))
def test_predictors_on_cuda_report_the_gpu_and_give_the_cpu_outputs(manifest, fmt):
    runtime = formats.get(fmt).default_runtime
    if formats.CUDA not in formats.RUNTIMES[runtime].devices:
        pytest.skip(f"{runtime} runs on the CPU only")
    for model, entry in manifest.models.items():
        if fmt not in entry.served_formats():
            continue  # a derived format that does not apply to this model
        predictor = load_predictor(manifest, model, fmt, device="cuda")
        assert predictor.device in GPU_DEVICES, (model, fmt, predictor.device)
        reference = load_predictor(manifest, model, "eager", device="cpu")
        batch = np.asarray(entry.examples, dtype=np.float32)
        got, want = predictor.predict(batch), reference.predict(batch)
        assert list(got) == list(want)
        assert_matches_eager(fmt, got, want, f"{model}/{fmt}")


def test_the_demo_predicts_on_cuda_and_says_the_gpu_ran_it(artifacts):
    from pipeline.serving.service import Service

    service = Service(artifacts)
    for fmt in ("onnx", "torchscript", "pt2", "eager"):
        answer = service.predict("adder_mynet", fmt, "cuda", "10 11")
        assert answer["device"] in GPU_DEVICES and answer["requested_device"] == "cuda", answer


def test_bench_on_cuda_completes_with_gpu_rows(artifacts_copy):
    result = run_cli("bench", "--quick", "--skip-http", "--device", "auto", "--artifacts", str(artifacts_copy))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    bench = json.loads((artifacts_copy / "bench.json").read_text())
    devices = {r["device"] for r in bench["latency"]}
    assert devices & GPU_DEVICES, devices  # the GPU rows are there, named by what ran them
