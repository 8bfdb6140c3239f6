"""The real Triton Inference Server, from the nvidia-pytriton wheel, serving the model repository.

`make triton-env` makes `.venv-triton`: nvidia-pytriton (Triton server 2.51 with its Python
backend; it pins numpy<2, hence its own environment) and the CPU onnxruntime that model.py needs.
`python -m pipeline triton-serve` (`make triton-serve`) builds the repository if needed and serves
the `<model>_onnx_python` flavour on loopback until Ctrl-C or SIGTERM.

What starting the wheel's server by hand takes (each one a silent failure when missed):
- a backend directory holding the Python backend and the stub built for the environment's Python;
- LD_LIBRARY_PATH with the wheel's nvidia_pytriton.libs (else the stub cannot find libcudart and the
  model load hangs) and the lib directory of the Python the environment was made from (else the stub
  runs the system's libpython against another standard library);
- the environment's bin first on PATH: the stub's embedded Python finds its site-packages from it;
- SIGTERM to stop it (SIGINT from a non-interactive shell is ignored); a killed server leaves shared
  memory regions in /dev/shm and a python_env_* folder in /tmp, which `stop` removes.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.artifacts.fileio import atomic_write
from pipeline.errors import UserError

TRITON_ENV = Path(".venv-triton")  # `make triton-env` makes it; PIPELINE_TRITON_ENV or --triton-env moves it
HOST = "127.0.0.1"  # loopback only: the server has no authentication
EXIT_TIMEOUT_S = 5  # how long Triton waits for in-flight requests after SIGTERM (it stops in about 4 s)
SHM = Path("/dev/shm")
_PROBE = """import json, sys, sysconfig
try:
    import numpy, onnxruntime
    missing = None
except ImportError as exc:
    missing = exc.name
print(json.dumps({"site": sysconfig.get_paths()["purelib"], "libdir": sysconfig.get_config_var("LIBDIR"),
                  "ldlibrary": sysconfig.get_config_var("LDLIBRARY"), "missing": missing,
                  "version": f"{sys.version_info[0]}.{sys.version_info[1]}"}))
"""


class TritonServerError(UserError, RuntimeError):
    """The server's environment is missing, its port is taken, or it did not start; one line says which."""


@dataclass(frozen=True)
class TritonEnv:
    """The environment `make triton-env` makes, and where the wheel keeps the server in it."""

    root: Path
    site: Path  # its site-packages
    python_libdir: Path  # the lib directory of the Python it was made from (libpython3.X.so)
    python_version: str  # "3.11": picks the backend stub built for it

    @property
    def server(self) -> Path:
        return self.site / "pytriton" / "tritonserver"

    @property
    def binary(self) -> Path:
        return self.server / "bin" / "tritonserver"

    def run_env(self) -> dict[str, str]:
        """The server's environment variables: the traps in the module docstring, avoided."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        libs = [str(self.site / "nvidia_pytriton.libs"), str(self.python_libdir)]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libs + [p for p in [env.get("LD_LIBRARY_PATH")] if p])
        env["PATH"] = os.pathsep.join([str(self.root.absolute() / "bin"), env.get("PATH", "")])
        return env


def find_env(root: Path | str | None = None) -> TritonEnv:
    """The Triton environment at `root` (default: $PIPELINE_TRITON_ENV or .venv-triton), checked."""
    root = Path(root or os.environ.get("PIPELINE_TRITON_ENV") or TRITON_ENV)
    python = root / "bin" / "python"
    hint = "run `make triton-env`"
    if not python.exists():
        raise TritonServerError(f"no Triton environment at {root}: {hint}")
    probe = subprocess.run([str(python), "-c", _PROBE], capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        raise TritonServerError(f"the Python of {root} does not run ({probe.stderr.strip()[-200:]}): {hint}")
    facts = json.loads(probe.stdout)
    env = TritonEnv(root, Path(facts["site"]), Path(facts["libdir"]), facts["version"])
    if not env.binary.is_file():
        raise TritonServerError(f"{root} has no Triton server (the nvidia-pytriton wheel): {hint}")
    if facts["missing"]:
        raise TritonServerError(f"{root} lacks {facts['missing']}, which the Python backend's model.py needs: {hint}")
    if not (env.python_libdir / facts["ldlibrary"]).exists() or not facts["ldlibrary"].endswith(".so"):
        raise TritonServerError(
            f"the Python that made {root} has no shared libpython ({facts['ldlibrary']}), which Triton's "
            "backend stub needs: make the environment with a Python built with --enable-shared"
        )
    if not (env.server / "python_backend_stubs" / env.python_version).is_dir():
        raise TritonServerError(f"the Triton wheel in {root} has no backend stub for Python {env.python_version}")
    return env


def backend_directory(env: TritonEnv) -> Path:
    """A backend directory (python/: the backend, its utilities, the stub for the env's Python), made once."""
    dest = env.root / "triton-backends"
    wheel = env.server
    files = [
        wheel / "backends" / "python" / "libtriton_python.so",
        wheel / "backends" / "python" / "triton_python_backend_utils.py",
        wheel / "python_backend_stubs" / env.python_version / "triton_python_backend_stub",
    ]
    for src in files:
        target = dest / "python" / src.name
        if not target.exists() or target.stat().st_size != src.stat().st_size:
            atomic_write(target, lambda tmp, src=src: shutil.copy2(src, tmp))
    return dest


def free_port(host: str = HOST) -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as Triton binds: a port a stopped server left in TIME_WAIT is free, one with a listener is not
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise TritonServerError(f"port {port} on {host} is in use; choose another with --port") from None


def _die_with_parent() -> Any:
    """A preexec_fn asking Linux to SIGTERM the child when we die, so a killed parent takes the server with
    it; None elsewhere. prctl is looked up here, before the fork: the child only calls it."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


@dataclass
class TritonServer:
    """A running tritonserver process; `stop()` (or leaving the `with` block) stops it and cleans up."""

    process: subprocess.Popen
    url: str
    log: Path
    models: list[str]
    shm_prefix: str
    tmp_before: set[Path]
    own_log: bool = True  # the log is a temporary file, removed at stop
    version: str = ""
    _stopped: bool = field(default=False, repr=False)

    def log_text(self, chars: int = 6000) -> str:
        """The last `chars` of the server's log."""
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = EXIT_TIMEOUT_S + 10) -> None:
        """SIGTERM, then SIGKILL after `timeout` s; removes its /dev/shm regions and /tmp folder either way."""
        if self._stopped:
            return
        self._stopped = True
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        for region in SHM.glob(f"{self.shm_prefix}*"):
            region.unlink(missing_ok=True)
        for folder in _python_envs() - self.tmp_before:  # empty unless an execution env was unpacked (never)
            with contextlib.suppress(OSError):
                folder.rmdir()
        if self.own_log:
            self.log.unlink(missing_ok=True)

    def __enter__(self) -> TritonServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _python_envs() -> set[Path]:
    """The folders Triton's Python backend makes in /tmp (it ignores TMPDIR)."""
    return set(Path("/tmp").glob("python_env_*"))


def _get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310 - our own loopback URL
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _failure(log: str, code: int | None) -> str:
    """The one line of the server's log that says why it stopped, or its last line."""
    load = re.search(r"failed to load '([^']+)' version \d+: (.+?)\"?$", log, re.MULTILINE)
    if load:
        return f"Triton could not load {load.group(1)}: {load.group(2).rstrip('.')}"
    if "Address already in use" in log or "address already in use" in log:
        return "Triton's HTTP port is in use; choose another with --port"
    lines = [line for line in log.splitlines() if line.strip()]
    return f"Triton exited with code {code}: " + (lines[-1][:300] if lines else "no output")


def start_server(
    repository: Path | str,
    models: list[str],
    env: TritonEnv | None = None,
    *,
    port: int | None = None,
    timeout: float = 120.0,
    log: Path | None = None,
) -> TritonServer:
    """Start tritonserver on 127.0.0.1 with `models` loaded from `repository` and wait until it is ready.

    Raises TritonServerError with one line: no environment, the port taken, a model that failed to
    load, or no answer within `timeout` s. The server is stopped again on any failure.
    """
    env = env or find_env()
    repository = Path(repository).resolve()
    if port is None:
        port = free_port()
    _check_port(HOST, port)
    own_log = log is None
    if log is None:
        fd, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
        os.close(fd)
        log = Path(name)
    prefix = f"seed-triton-{uuid.uuid4().hex[:8]}-"
    cmd = [
        str(env.binary),
        f"--model-repository={repository}",
        f"--backend-directory={backend_directory(env).resolve()}",
        f"--http-address={HOST}",
        f"--http-port={port}",
        "--allow-grpc=false",
        "--allow-metrics=false",
        "--model-control-mode=explicit",
        *(f"--load-model={m}" for m in models),
        "--disable-auto-complete-config",  # the configs are complete; filling them in costs a second at start
        f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
        f"--backend-config=python,shm-region-prefix-name={prefix}",  # ours to remove after a kill
    ]
    tmp_before = _python_envs()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            cmd,
            env=env.run_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us, and we stop it with SIGTERM
            preexec_fn=_die_with_parent() if sys.platform.startswith("linux") else None,
        )
    server = TritonServer(process, f"http://{HOST}:{port}", log, list(models), prefix, tmp_before, own_log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise TritonServerError(_failure(server.log_text(20000), process.returncode))
            try:
                status, body = _get(server.url + "/v2/health/ready")
                if status == 200:
                    server.version = json.loads(_get(server.url + "/v2")[1]).get("version", "")
                    return server
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise TritonServerError(f"Triton did not become ready on {server.url} within {timeout:.0f} s")
            time.sleep(0.05)
    except BaseException:
        server.stop()
        raise


# ---- Open Inference Protocol latency and throughput (the demo's routes or Triton), for the benchmarks ----


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by process `pid` and its live descendants (Triton's Python
    backend runs each model in a stub child process)."""
    try:
        import psutil  # the dev extra's
    except ImportError:
        return float("nan")
    total = 0.0
    try:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.Error:  # a child that just ended
                continue
    except psutil.Error:
        return float("nan")
    return total


def measure_oip(
    url: str, model: str, clients: int = 1, seconds: float = 3.0, pid: int | None = None
) -> dict[str, float]:
    """{p50_ms, p99_ms, throughput, cpu_ms_per_request}: `clients` threads each sending one-example requests
    to `model` at `url`; the server's CPU per request is measured when its process `pid` is given.

    `model` is the Triton model name (e.g. adder_mynet_onnx, or adder_mynet_onnx_python); the input is
    zeros of the width the server's metadata gives, sent as a binary tensor through tritonclient, as
    the remote runtime sends it. Throughput is requests per second over all clients.
    """
    import numpy as np
    import tritonclient.http as httpclient

    address = url.split("://", 1)[1].rstrip("/")
    with httpclient.InferenceServerClient(address) as probe:
        meta = probe.get_model_metadata(model)
    spec = meta["inputs"][0]
    x = np.zeros([1, *spec["shape"][1:]], dtype=np.float32)
    latencies: list[list[float]] = [[] for _ in range(clients)]
    warmed = threading.Barrier(clients + 1)
    go = threading.Event()
    deadline = [0.0]

    def worker(i: int) -> None:
        with httpclient.InferenceServerClient(address) as client:
            tensor = httpclient.InferInput(spec["name"], list(x.shape), spec["datatype"])
            tensor.set_data_from_numpy(x, binary_data=True)
            client.infer(model, [tensor])  # a warm-up call (connection, first run), not counted
            warmed.wait()
            go.wait()
            while time.perf_counter() < deadline[0]:
                t0 = time.perf_counter()
                client.infer(model, [tensor])
                latencies[i].append(time.perf_counter() - t0)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    warmed.wait()
    cpu_before = process_cpu_seconds(pid) if pid else float("nan")
    began = time.perf_counter()
    deadline[0] = began + seconds
    go.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    cpu = process_cpu_seconds(pid) - cpu_before if pid else float("nan")
    every = [v for per in latencies for v in per]
    if not every:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "throughput": 0.0, "cpu_ms_per_request": float("nan")}
    return {
        "p50_ms": float(np.median(every) * 1000),
        "p99_ms": float(np.percentile(every, 99) * 1000),
        "throughput": len(every) / elapsed,
        "cpu_ms_per_request": cpu * 1000 / len(every),
    }


# ---- `python -m pipeline triton-serve` ------------------------------------------------------------------


def register_cli(command: Any, artifacts_default: Path) -> None:
    """Add `triton-serve` through the CLI's `command(name, summary) -> ArgumentParser`."""
    p = command("triton-serve", "serve the models on the real Triton server (Python backend) on 127.0.0.1")
    p.add_argument("--models", default="all", help="'all' or comma-separated catalog names")
    p.add_argument("--artifacts", type=Path, default=artifacts_default, help="artifacts directory")
    p.add_argument("--repository", type=Path, default=None, help="model repository (default: ARTIFACTS/triton)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port on 127.0.0.1")
    p.add_argument(
        "--triton-env",
        type=Path,
        default=None,
        help="the environment `make triton-env` made (default: $PIPELINE_TRITON_ENV, else .venv-triton)",
    )
    p.set_defaults(func=cmd_triton_serve)


def _repository_for(artifacts: Path, repository: Path, names: list[str]) -> None:
    """Build the repository when it is missing one of `names` or is older than the manifest."""
    from pipeline.artifacts.fileio import exclusive
    from pipeline.artifacts.manifest import Manifest
    from pipeline.serving.triton import README, build_repository

    manifest_file = Manifest.load(artifacts).root / "manifest.json"
    readme = repository / README
    fresh = readme.is_file() and readme.stat().st_mtime >= manifest_file.stat().st_mtime
    if not fresh or not all((repository / name / "config.pbtxt").is_file() for name in names):
        with exclusive(artifacts):
            build_repository(Manifest.load(artifacts), repository)
        print(f"built the Triton model repository {repository}/")


def cmd_triton_serve(args: argparse.Namespace) -> int:
    """Serve the Python-backend flavours of every model until Ctrl-C or SIGTERM."""
    from pipeline.artifacts.manifest import Manifest
    from pipeline.serving.naming import PYTHON_FLAVOURS, flavours_of
    from pipeline.serving.triton import TritonError

    env = find_env(args.triton_env)  # first: a missing environment is the likeliest failure
    manifest = Manifest.load(args.artifacts)
    models = (
        list(manifest.models)
        if args.models == "all"
        else [manifest.model(m.strip()).name for m in args.models.split(",") if m.strip()]
    )
    names = [f.model_name(m) for m in models for f in flavours_of(manifest.model(m), PYTHON_FLAVOURS)]
    repository = args.repository or args.artifacts / "triton"
    try:
        _repository_for(args.artifacts, repository, names)
    except TritonError as exc:
        raise TritonServerError(str(exc)) from None
    log = args.artifacts / "triton-server.log"

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        with start_server(repository, names, env, port=args.port, log=log) as server:
            print(f"Triton Inference Server {server.version} at {server.url} serving {len(names)} models:")
            print("  " + ", ".join(names))
            print(f"log: {log}; Ctrl-C or SIGTERM stops it", flush=True)
            try:
                code = server.process.wait()
            except KeyboardInterrupt:
                print("stopping Triton...", flush=True)
                code = None
        if code is not None:  # it stopped by itself
            raise TritonServerError(_failure(server.log_text(), code))
    finally:
        signal.signal(signal.SIGTERM, previous)
    print("Triton stopped")
    return 0
