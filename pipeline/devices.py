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
def cuda_device_count() -> int:
    """GPUs the CUDA driver sees, asked of libcuda directly (no torch, no onnxruntime noise)."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return count.value
    return 0


def resolve_torch_device(requested: str) -> tuple[str, str | None]:
    """Map a --device value to a torch device string, with a note when 'auto' fell back.

    Raises DeviceError with one line naming what was expected or why it is unavailable.
    """
    import torch

    requested = (requested or "auto").strip().lower()
    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda:0", None
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps", None
        return "cpu", "device auto: no CUDA or MPS device found, using cpu"
    if requested == "cpu":
        return "cpu", None
    match = re.fullmatch(r"cuda(?::(\d+))?", requested)
    if match:
        if not torch.cuda.is_available():
            raise DeviceError(
                f"--device {requested}: CUDA is not available on this machine "
                f"(torch {torch.__version__}, torch.cuda.is_available() is False); use --device cpu or auto"
            )
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
