"""The real Triton Inference Server (the nvidia-pytriton wheel's, Python backend) serving the repository
`export --triton` writes, and one set of client-side conformance tests run against it and against the
demo's Open Inference Protocol routes, so the two cannot drift apart.

The server runs from `.venv-triton` (`make setup` makes it; PIPELINE_TRITON_ENV points elsewhere). It
is started once per session with the `<model>_onnx_python` flavour of every model and always stopped.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from tritonclient import http as httpclient
from tritonclient.utils import InferenceServerException

from pipeline.artifacts.manifest import Manifest
from pipeline.bench.http import measure_oip
from pipeline.formats import Tolerance
from pipeline.runtime.comparison import compare
from pipeline.runtime.parity import parity_inputs, verify
from pipeline.runtime.predictor import NotServed, load_predictor
from pipeline.serving.naming import (
    FLAVOURS,
    MAX_BATCH_SIZE,
    PYTHON_FLAVOUR,
    PYTHON_FLAVOURS,
    flavours_of,
    served_names,
    tensor_names,
)
from pipeline.serving.naming import TRITON_PLATFORMS as PLATFORMS
from pipeline.serving.triton import build_repository
from pipeline.serving.triton_server import TritonServerError, find_env, start_server

from .demo_server import ROOT, free_port

ONNX = PYTHON_FLAVOUR.format  # the format both servers serve from the same file
BACKEND_MISSING = (
    "Invalid argument: unable to find backend library for backend '{backend}', "
    "try specifying runtime on the model configuration."
)


def python_name(model: str) -> str:
    return PYTHON_FLAVOUR.model_name(model)


def python_names(manifest, models=None) -> list[str]:
    """The Python-backend flavours of every file of `models` (default: all): what the server loads."""
    return [f.model_name(m) for m in models or manifest.models for f in flavours_of(manifest.model(m), PYTHON_FLAVOURS)]


def triton_env_path() -> Path:
    return Path(os.environ.get("PIPELINE_TRITON_ENV") or ROOT / ".venv-triton")


@pytest.fixture(scope="session")
def triton_env():
    try:
        return find_env(triton_env_path())
    except TritonServerError as exc:  # CI makes the environment: a missing one is a failure, not a skip
        pytest.fail(f"{exc} (or deselect these tests with -m 'not triton_server')")


@pytest.fixture(scope="session")
def triton_repo(manifest, tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("triton-served") / "repo"
    build_repository(manifest, repo)
    return repo


@pytest.fixture(scope="session")
def triton(triton_env, triton_repo, manifest):
    """A real Triton server serving the Python-backend flavour of every model, started once."""
    server = start_server(triton_repo, python_names(manifest), triton_env)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module", params=["demo", pytest.param("triton", marks=pytest.mark.triton_server)])
def server(request) -> str:
    """The base URL of each server the conformance tests run against."""
    return request.getfixturevalue("demo") if request.param == "demo" else request.getfixturevalue("triton").url


@pytest.fixture(scope="module")
def client(server):
    with httpclient.InferenceServerClient(server.split("://", 1)[1]) as c:
        yield c


def served_name(client, model: str, fmt: str = ONNX) -> str:
    """The name the server serves `model`'s `fmt` file under, found the way the remote runtime finds it."""
    for name in served_names(model, fmt):
        try:
            client.get_model_metadata(name)
            return name
        except InferenceServerException:
            continue
    raise AssertionError(f"the server serves none of {served_names(model, fmt)}")


def infer(client, name, input_name, batch, output_names, binary=True):
    tensor = httpclient.InferInput(input_name, list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=binary)
    wanted = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in output_names]
    result = client.infer(name, [tensor], outputs=wanted)
    return [result.as_numpy(n) for n in output_names]


def assert_close(want, got, what):
    for w, g in zip(want, got, strict=True):
        result = compare(w, g, Tolerance())
        assert result.passed, f"{what}: {result.reason}"


# ---- conformance: the same client-side checks on the demo's routes and on real Triton ---------------


def test_server_is_live_ready_and_describes_itself(client):
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] and meta["version"]
    assert {"binary_tensor_data", "model_configuration"} <= set(meta["extensions"])


def test_metadata_and_config_of_every_model_match_the_manifest(client, manifest, request):
    from demo.server import OIP_MAX_BODY_BYTES
    from pipeline.serving.oip_protocol import max_batch_size

    on_demo = request.node.callspec.params["server"] == "demo"
    for model, entry in manifest.models.items():
        name = served_name(client, model)
        meta = client.get_model_metadata(name)
        assert meta["name"] == name and "1" in meta["versions"]
        assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [
            (t["name"], "FP32", [-1, *t["shape"][1:]]) for t in entry.inputs
        ]
        assert [(t["name"], t["datatype"], t["shape"]) for t in meta["outputs"]] == [
            (t["name"], "FP32", [-1, *t["shape"][1:]]) for t in entry.outputs
        ]
        config = client.get_model_config(name)
        # Triton takes the repository's batch; the demo the largest whose JSON fits its body limit.
        largest = max_batch_size(entry.values_per_example, OIP_MAX_BODY_BYTES) if on_demo else MAX_BATCH_SIZE
        assert config["max_batch_size"] == largest
        assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == [
            (t["name"], "TYPE_FP32", t["shape"][1:]) for t in entry.inputs
        ]
        assert client.is_model_ready(name)


def test_binary_and_json_tensors_give_the_eager_outputs(client, manifest, eager):
    for model in manifest.models:
        name = served_name(client, model)
        (input_name,), output_names = tensor_names(manifest.model(model), ONNX)
        for batch in parity_inputs(manifest, model)[1:]:  # random batches of 1, 2 and 7
            for binary in (True, False):
                got = infer(client, name, input_name, batch, output_names, binary)
                assert_close(eager(model).run_batch(batch), got, f"{name} batch {len(batch)} binary={binary}")


def test_the_remote_runtime_gives_the_eager_outputs(server, manifest, eager):
    for model in manifest.models:
        predictor = load_predictor(manifest, model, ONNX, runtime=server)
        assert predictor.device.startswith(f"remote {server} ({model}_{ONNX}")
        for batch in parity_inputs(manifest, model)[1:]:
            assert_close(
                eager(model).run_batch(batch), predictor.run_batch(batch), f"{predictor.device} batch {len(batch)}"
            )


def test_only_the_outputs_asked_for_come_back(client):
    name = served_name(client, "adder_mynet")
    tensor = httpclient.InferInput("x", [1, 2], "FP32")
    tensor.set_data_from_numpy(np.array([[10.0, 11.0]], dtype=np.float32))
    result = client.infer(name, [tensor], outputs=[httpclient.InferRequestedOutput("hidden")])
    assert [o["name"] for o in result.get_response()["outputs"]] == ["hidden"]
    assert result.as_numpy("hidden").shape == (1, 8)


def test_an_unknown_model_is_a_clear_client_error(client):
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata("no_such_model")
    assert info.value.status() == "404" and "no_such_model" in info.value.message()
    tensor = httpclient.InferInput("x", [1, 2], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 2), dtype=np.float32))
    with pytest.raises(InferenceServerException) as info:
        client.infer("no_such_model", [tensor])
    assert info.value.status() == "404" and "unknown model" in info.value.message()
    assert not client.is_model_ready("no_such_model")


def test_a_batch_over_max_batch_size_is_a_clear_client_error(client):
    name = served_name(client, "linear_3x")
    too_many = np.zeros((MAX_BATCH_SIZE + 1, 1), dtype=np.float32)
    tensor = httpclient.InferInput("x", list(too_many.shape), "FP32")
    tensor.set_data_from_numpy(too_many)
    with pytest.raises(InferenceServerException) as info:
        client.infer(name, [tensor])
    assert info.value.status() == "400" and str(MAX_BATCH_SIZE) in info.value.message()
    assert "batch" in info.value.message()
    full = np.zeros((MAX_BATCH_SIZE, 1), dtype=np.float32)  # the largest batch still passes
    tensor = httpclient.InferInput("x", list(full.shape), "FP32")
    tensor.set_data_from_numpy(full)
    assert client.infer(name, [tensor]).as_numpy("y").shape == (MAX_BATCH_SIZE, 1)


def test_the_parity_check_passes_on_the_server(server, manifest):
    report = verify(manifest, list(manifest.models), remote=[server])
    assert report.passed, report.table()
    remote = [r for r in report.rows if r.runtime == server]
    assert {(r.model, r.format) for r in remote if r.format == ONNX} == {(m, ONNX) for m in manifest.models}


# ---- real Triton only ------------------------------------------------------------------------------


@pytest.mark.triton_server
def test_verify_remote_from_the_command_line_passes_on_triton(triton, artifacts_copy, capsys):
    from pipeline.cli import main as cli

    assert cli(["verify", "--remote", triton.url, "--device", "cpu", "--artifacts", str(artifacts_copy)]) == 0
    out = capsys.readouterr().out
    report = json.loads((artifacts_copy / "parity.json").read_text())
    remote = [r for r in report["rows"] if r["runtime"] == triton.url]
    manifest = Manifest.load(artifacts_copy)
    models = manifest.models
    assert {r["model"] for r in remote} == set(models) and all(r["passed"] for r in remote)
    # through the Python-backend flavours: this server has no TorchScript backend, so no TorchScript rows
    assert {r["device"] for r in remote} == {f"remote {triton.url} ({n})" for n in python_names(manifest)}
    assert f"({python_name('adder_mynet')})" in out


@pytest.mark.triton_server
def test_the_native_flavours_fail_to_load_for_want_of_their_backends(triton, manifest):
    """The wheel's server has only the Python backend; the day it has the others this test says so."""
    backends = {
        "onnxruntime_onnx": "onnxruntime",
        "pytorch_libtorch": "pytorch",
        "openvino": "openvino",
    }  # Triton's backend per platform
    natives = tuple(f for f in FLAVOURS if f.backend is None)
    expected = {
        f.model_name(m): BACKEND_MISSING.format(backend=backends[PLATFORMS[f.format].platform])
        for m, entry in manifest.models.items()
        for f in flavours_of(entry, natives)
    }
    assert {"adder_mynet_onnx", "adder_mynet_torchscript"} <= set(expected)
    with httpclient.InferenceServerClient(triton.url.split("://", 1)[1]) as client:
        for name, reason in expected.items():
            with pytest.raises(InferenceServerException) as info:
                client.load_model(name)
            assert reason in info.value.message(), info.value.message()
        index = {m["name"]: m for m in client.get_model_repository_index()}
    assert {name: (index[name]["state"], index[name]["reason"]) for name in expected} == {
        name: ("UNAVAILABLE", reason) for name, reason in expected.items()
    }
    assert all(index[name]["state"] == "READY" for name in python_names(manifest))
    # the remote runtime says which names it asked for
    with pytest.raises(NotServed, match="adder_mynet_torchscript"):
        load_predictor(manifest, "adder_mynet", "torchscript", runtime=triton.url)


@pytest.mark.triton_server
def test_concurrent_requests_are_batched(triton, manifest, eager):
    """16 clients, each sending rows of its own: Triton merges them, and every client gets its own rows back."""
    name = python_name("two_layer_net")
    address = triton.url.split("://", 1)[1]
    rng = np.random.default_rng(7)
    rows = [rng.standard_normal((1 + i % 3, 1000)).astype(np.float32) for i in range(16 * 8)]  # 1 to 3 rows each

    def stats() -> tuple[int, int]:
        with httpclient.InferenceServerClient(address) as c:
            s = c.get_inference_statistics(name)["model_stats"][0]
        return int(s["inference_count"]), int(s["execution_count"])

    local = threading.local()

    def one(i):
        if getattr(local, "client", None) is None:
            local.client = httpclient.InferenceServerClient(address)
        return infer(local.client, name, "x", rows[i], ["y"])[0]

    before = stats()
    with ThreadPoolExecutor(16) as pool:
        outs = list(pool.map(one, range(len(rows))))
    inferences, executions = (a - b for a, b in zip(stats(), before, strict=True))
    assert inferences == sum(len(r) for r in rows)
    reference = eager("two_layer_net")
    for i, (x, out) in enumerate(zip(rows, outs, strict=True)):  # each client's own rows, in its own order
        assert_close(reference.run_batch(x), [out], f"client {i}")
    assert executions < len(rows), f"{executions} executions for {len(rows)} requests: nothing was batched"


@pytest.mark.triton_server
def test_measure_oip_reports_latency_and_throughput(triton):
    figures = measure_oip(triton.url, python_name("linear_3x"), clients=2, seconds=0.5)
    assert figures["p50_ms"] > 0 and figures["throughput"] > 0


# ---- starting and stopping the server --------------------------------------------------------------


@pytest.mark.triton_server
def test_errors_are_one_line(triton_env, triton_repo, tmp_path):
    with pytest.raises(TritonServerError, match=r"^no Triton environment at .*: run `make triton-env`$"):
        find_env(tmp_path / "none")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(TritonServerError, match=f"^port {port} on 127.0.0.1 is in use"):
            start_server(triton_repo, [python_name("linear_3x")], triton_env, port=port)
    before = set(Path("/dev/shm").glob("seed-triton-*"))
    with pytest.raises(TritonServerError) as info:
        start_server(triton_repo, ["linear_3x_onnx"], triton_env)
    message = str(info.value)
    assert message == "Triton could not load linear_3x_onnx: " + BACKEND_MISSING.format(backend="onnxruntime")[:-1]
    assert "\n" not in message
    assert set(Path("/dev/shm").glob("seed-triton-*")) == before


@pytest.mark.triton_server
def test_a_killed_server_leaves_nothing_behind(triton_env, triton_repo):
    tmp_before = set(Path("/tmp").glob("python_env_*"))
    server = start_server(triton_repo, [python_name("linear_3x")], triton_env)
    regions = list(Path("/dev/shm").glob(f"{server.shm_prefix}*"))
    assert regions and set(Path("/tmp").glob("python_env_*")) - tmp_before
    server.process.kill()  # no clean shutdown: what the server would leave, stop() removes
    server.process.wait(timeout=10)
    time.sleep(0.5)  # let the stub notice its parent is gone
    assert set(Path("/tmp").glob("python_env_*")) - tmp_before, "nothing left for stop() to clean"
    server.stop()
    assert not list(Path("/dev/shm").glob(f"{server.shm_prefix}*"))
    assert not set(Path("/tmp").glob("python_env_*")) - tmp_before
    assert not server.log.exists()


@pytest.mark.triton_server
def test_triton_serve_command_serves_until_sigterm(triton_env, artifacts_copy):
    port = free_port()
    cmd = [sys.executable, "-m", "pipeline", "triton-serve", "--artifacts", str(artifacts_copy)]
    cmd += ["--models", "adder_mynet", "--port", str(port), "--triton-env", str(triton_env.root)]
    shm_before = set(Path("/dev/shm").glob("seed-triton-*"))
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "stops it" in line:
                break
        served = python_names(Manifest.load(artifacts_copy), ["adder_mynet"])
        assert f"at http://127.0.0.1:{port} serving {len(served)} models" in "".join(lines), "".join(lines)
        with httpclient.InferenceServerClient(f"127.0.0.1:{port}") as c:
            assert all(c.is_model_ready(name) for name in served) and python_name("adder_mynet") in served
        assert (artifacts_copy / "triton" / python_name("adder_mynet") / "1" / "model.py").is_file()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and out.rstrip().endswith("Triton stopped"), out
    assert set(Path("/dev/shm").glob("seed-triton-*")) == shm_before
    # the port free again at once (a restart needs no wait); a port something listens on: one line, exit 2
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", port))
        taken.listen()
        busy = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (
        busy.returncode == 2
        and busy.stderr == f"error: port {port} on 127.0.0.1 is in use; choose another with --port\n"
    )


# ---- what a hard-killed run leaves: removed at the next start, only when its owner is provably dead ----


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def leftovers(owner: int) -> tuple[list[Path], Path]:
    """Regions and a claims file as a run owned by `owner` names them, and the empty /tmp folder it claims."""
    import secrets

    from pipeline.serving.triton_server import CLAIMS, CLAIMS_DIR, SHM, region_prefix

    folder = Path(f"/tmp/python_env_{secrets.token_hex(3)}")
    folder.mkdir()
    prefix = region_prefix(owner)
    regions = [SHM / f"{prefix}region_0", SHM / f"{prefix}region_1", CLAIMS_DIR / f"{prefix}{CLAIMS}"]
    for region in regions[:2]:
        region.write_bytes(b"\0" * 4096)
    regions[2].write_text(f"{folder}\n/etc\n")  # a line that is not Triton's folder is never touched
    return regions, folder


def test_start_removes_the_regions_of_a_dead_owner_and_keeps_a_live_ones(tmp_path):
    from pipeline.serving.triton_server import TritonEnv

    dead, dead_folder = leftovers(_dead_pid())
    live, live_folder = leftovers(os.getpid())
    foreign = Path("/dev/shm/seed-triton-notours")  # no owner in its name: never removed
    foreign.write_bytes(b"x")
    fake = TritonEnv(tmp_path, tmp_path, tmp_path, "3.11")  # no server in it: start fails after the clean-up
    try:
        with pytest.raises((TritonServerError, OSError)):
            start_server(tmp_path, [], fake, timeout=1)
        assert not any(p.exists() for p in dead) and not dead_folder.exists()
        assert all(p.exists() for p in live) and live_folder.is_dir() and foreign.exists() and Path("/etc").is_dir()
    finally:
        for path in (*dead, *live, foreign):
            path.unlink(missing_ok=True)
        for folder in (dead_folder, live_folder):
            if folder.exists():
                folder.rmdir()
