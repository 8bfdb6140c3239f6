"""The environment the real Triton Inference Server runs in: `.venv-triton`, made by `make triton-env`.

It holds nvidia-pytriton (Triton server 2.51 with its Python backend; it pins numpy<2, hence its own
environment) and the CPU onnxruntime that model.py needs. pipeline/serving/triton_server.py starts the
server from it.

What starting the wheel's server by hand takes (each one a silent failure when missed):
- a backend directory holding the Python backend and the stub built for the environment's Python;
- LD_LIBRARY_PATH with the wheel's nvidia_pytriton.libs (else the stub cannot find libcudart and the
  model load hangs) and the lib directory of the Python the environment was made from (else the stub
  runs the system's libpython against another standard library);
- the environment's bin first on PATH: the stub's embedded Python finds its site-packages from it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pipeline.artifacts.fileio import atomic_write
from pipeline.errors import UserError

TRITON_ENV = Path(".venv-triton")  # `make triton-env` makes it; PIPELINE_TRITON_ENV or --triton-env moves it
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
