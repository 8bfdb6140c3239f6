"""The real Triton Inference Server, from the nvidia-pytriton wheel, serving the model repository.

`make triton-env` makes `.venv-triton`: nvidia-pytriton (Triton server 2.51 with its Python
backend; it pins numpy<2, hence its own environment) and the CPU onnxruntime that model.py needs.
`python -m pipeline triton-serve` (`make triton-serve`) builds the repository if needed and serves
the `<model>_onnx_python` flavour on loopback until Ctrl-C or SIGTERM.

The environment it runs in (find_env, what it takes to start the wheel's server by hand) is
pipeline/serving/triton_env.py. SIGTERM stops it (SIGINT from a non-interactive shell is ignored); a
killed server leaves shared memory regions in /dev/shm and a python_env_* folder in /tmp, which `stop`
removes.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.serving.launch import free_port
from pipeline.serving.triton_env import TritonEnv, TritonServerError, backend_directory, find_env

HOST = "127.0.0.1"  # loopback only: the server has no authentication
EXIT_TIMEOUT_S = 5  # how long Triton waits for in-flight requests after SIGTERM (it stops in about 4 s)
SHM = Path("/dev/shm")


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
    if port is None:
        port = free_port()
    _check_port(HOST, port)
    own_log = log is None
    if log is None:
        fd, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
        os.close(fd)
        log = Path(name)
    prefix = f"seed-triton-{uuid.uuid4().hex[:8]}-"
    tmp_before = _python_envs()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            _command(env, Path(repository).resolve(), models, port, prefix),
            env=env.run_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us, and we stop it with SIGTERM
            preexec_fn=_die_with_parent() if sys.platform.startswith("linux") else None,
        )
    server = TritonServer(process, f"http://{HOST}:{port}", log, list(models), prefix, tmp_before, own_log)
    try:
        _wait_ready(server, timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _command(env: TritonEnv, repository: Path, models: list[str], port: int, shm_prefix: str) -> list[str]:
    """tritonserver's command line: loopback HTTP only, explicit model control, our shared-memory prefix."""
    return [
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
        f"--backend-config=python,shm-region-prefix-name={shm_prefix}",  # ours to remove after a kill
    ]


def _wait_ready(server: TritonServer, timeout: float) -> None:
    """Until the server answers ready (its version then read), or TritonServerError saying why not."""
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise TritonServerError(_failure(server.log_text(20000), server.process.returncode))
        try:
            status, _ = _get(server.url + "/v2/health/ready")
            if status == 200:
                server.version = json.loads(_get(server.url + "/v2")[1]).get("version", "")
                return
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise TritonServerError(f"Triton did not become ready on {server.url} within {timeout:.0f} s")
        time.sleep(0.05)


# ---- `python -m pipeline triton-serve` (its options are declared in pipeline/cli.py) ----------------------


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


def serve(artifacts: Path, models: str, repository: Path | None, port: int, triton_env: Path | None = None) -> None:
    """Serve the Python-backend flavours of `models` ('all' or a,b) until Ctrl-C or SIGTERM."""
    from pipeline.artifacts.manifest import Manifest
    from pipeline.serving.naming import PYTHON_FLAVOURS, flavours_of
    from pipeline.serving.triton import TritonError

    env = find_env(triton_env)  # first: a missing environment is the likeliest failure
    manifest = Manifest.load(artifacts)
    names = [f.model_name(m) for m in manifest.select(models) for f in flavours_of(manifest.model(m), PYTHON_FLAVOURS)]
    repository = repository or artifacts / "triton"
    try:
        _repository_for(artifacts, repository, names)
    except TritonError as exc:
        raise TritonServerError(str(exc)) from None
    log = artifacts / "triton-server.log"

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        with start_server(repository, names, env, port=port, log=log) as server:
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
