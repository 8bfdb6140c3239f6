"""Device selection shared by every stage. Importing this module does not import torch."""

from __future__ import annotations

import ctypes
import functools
import re

from pipeline.errors import UserError

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


class DeviceError(UserError, RuntimeError):
    """A device was asked for that this machine cannot give."""


@functools.cache
def _libcuda() -> ctypes.CDLL | None:
    """The CUDA driver library, or None where there is none (no torch, no onnxruntime noise)."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


@functools.cache
def cuda_device_count() -> int:
    """GPUs the CUDA driver sees, asked of libcuda directly."""
    lib, count = _libcuda(), ctypes.c_int(0)
    if lib is None or lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def cuda_driver_version() -> int | None:
    """The CUDA version the installed driver supports (13000 for 13.0), or None without a driver."""
    lib, version = _libcuda(), ctypes.c_int(0)
    if lib is None or lib.cuDriverGetVersion(ctypes.byref(version)) != 0:
        return None
    return version.value


def _cuda_number(version: str | None) -> int | None:
    """'13.0' -> 13000, the form cuDriverGetVersion reports."""
    match = re.match(r"(\d+)\.(\d+)", version or "")
    return int(match.group(1)) * 1000 + int(match.group(2)) * 10 if match else None


def _driver_reason(build: str | None) -> str | None:
    """Why a CUDA build cannot run with this machine's driver and GPUs, or None when it can."""
    if cuda_device_count() == 0:
        return "no CUDA GPU is visible (the NVIDIA driver reports none)"
    driver, need = cuda_driver_version(), _cuda_number(build)
    if driver is not None and need is not None and driver < need:
        have = f"{driver // 1000}.{driver % 1000 // 10}"
        return f"the NVIDIA driver supports CUDA {have}, older than the CUDA {build} this build needs"
    return None


def cuda_status(runtime: str) -> tuple[bool, str]:
    """Whether `runtime` ("torch" or "onnxruntime") can run on a GPU here, and the reason naming the real cause.

    The one answer to "is there CUDA?": the demo's device choice, parity's CUDA rows, the benchmarks and
    `auto` all ask here, per runtime, because torch and onnxruntime can disagree (a CPU-only torch, an
    onnxruntime without its CUDA provider, a driver older than the CUDA a build needs).
    """
    if runtime not in ("torch", "onnxruntime"):
        return False, f"{runtime} runs on the CPU only"
    if cuda_device_count() == 0:  # asked of the driver first: no GPU, no need to import torch or onnxruntime
        return False, "no CUDA GPU is visible (the NVIDIA driver reports none)"
    if runtime == "torch":
        import torch

        build = torch.version.cuda
        if build is None:
            return False, f"torch {torch.__version__} is a CPU-only build"
        if torch.cuda.is_available():
            return True, f"torch {torch.__version__} (CUDA {build}) sees {torch.cuda.device_count()} GPU(s)"
        return False, _driver_reason(build) or f"torch {torch.__version__} cannot initialise CUDA {build}"
    if runtime == "onnxruntime":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return False, f"onnxruntime {ort.__version__} has no CUDA execution provider (install onnxruntime-gpu)"
        try:
            from onnxruntime.capi import build_and_package_info as info

            build = getattr(info, "cuda_version", None)
        except ImportError:
            build = None
        reason = _driver_reason(build)
        if reason:
            return False, reason
        return True, f"onnxruntime {ort.__version__} CUDA provider, {cuda_device_count()} GPU(s)"
    return False, f"{runtime} runs on the CPU only"


def cuda_index(device: str) -> int:
    """N of "cuda" or "cuda:N", checked against the GPUs the driver sees (one line when out of range)."""
    match = re.fullmatch(r"cuda(?::(\d+))?", device)
    if not match:
        raise DeviceError(f"device {device!r}: expected cuda or cuda:N")
    index, count = int(match.group(1) or 0), cuda_device_count()
    if index >= count:
        have = "no CUDA GPU" if count == 0 else f"{count} CUDA GPU(s), index 0 to {count - 1}"
        raise DeviceError(f"device {device}: this machine has {have}")
    return index


def resolve_torch_device(requested: str) -> tuple[str, str | None]:
    """Map a --device value to a torch device string, with a note when 'auto' fell back.

    Raises DeviceError with one line naming what was expected or why it is unavailable.
    """
    import torch

    requested = (requested or "auto").strip().lower()
    if requested == "auto":
        ok, why = cuda_status("torch")
        if ok:
            return "cuda:0", None
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps", None
        return "cpu", f"device auto: no CUDA ({why}) and no MPS, using cpu"
    if requested == "cpu":
        return "cpu", None
    match = re.fullmatch(r"cuda(?::(\d+))?", requested)
    if match:
        ok, why = cuda_status("torch")
        if not ok:
            raise DeviceError(f"--device {requested}: CUDA is not available to torch: {why}; use --device cpu or auto")
        index = int(match.group(1) or 0)
        if index >= torch.cuda.device_count():
            raise DeviceError(
                f"--device {requested}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                f"so the index must be below {torch.cuda.device_count()}"
            )
        return f"cuda:{index}", None
    if requested == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DeviceError("--device mps: Apple's MPS backend is not available on this machine")
        return "mps", None
    raise DeviceError(f"--device {requested!r}: expected one of {DEVICE_CHOICES}")
