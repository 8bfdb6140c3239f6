"""Which (format, runtime, device) runs here: the one plan that parity, the page's comparison, the
benchmarks and the demo's device note all read, so they cannot disagree about CUDA.

    plan("cpu")     every declared (format, runtime) on the CPU;
    plan("auto")    also on CUDA each runtime that can use a GPU here; the others skipped, with why;
    plan("cuda:N")  also on that GPU every runtime that can use one; a row that cannot run carries its
                    reason (`unavailable`) and is a failure where it is reported, never a silent skip.

The reference (eager on the CPU) is one of the targets: parity compares the others with it.
Importing this module does not import torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pipeline import formats
from pipeline.runtime import devices
from pipeline.runtime.devices import DeviceError

PLAN_DEVICES = "cpu, auto, cuda or cuda:N"


@dataclass(frozen=True)
class Target:
    """One (format, runtime, device) to run, or the reason it cannot run here when it was asked for."""

    format: str
    runtime: str  # a declared runtime's name, or the URL of an Open Inference Protocol server
    device: str
    unavailable: str | None = None


@dataclass
class TargetPlan:
    """The targets for one requested device and, one line each, what `auto` left out and why."""

    targets: list[Target]
    skipped: list[str] = field(default_factory=list)


def gpu_runtimes() -> dict[str, tuple[bool, str]]:
    """Each runtime that is declared able to use CUDA: whether it can here, and why (devices.cuda_status)."""
    return {
        name: devices.cuda_status(name) for name, runtime in formats.RUNTIMES.items() if formats.CUDA in runtime.devices
    }


def cuda_unavailable_reason() -> str | None:
    """Why no runtime can use CUDA here (grouped by reason), or None where at least one can."""
    reasons: dict[str, list[str]] = {}
    for name, (ok, why) in gpu_runtimes().items():
        if ok:
            return None
        reasons.setdefault(why, []).append(name)
    return "; ".join(f"{', '.join(names)}: {why}" for why, names in reasons.items())


def _declared(device: str) -> list[tuple[str, str]]:
    """Every declared (format, runtime) whose runtime can run on `device` ("cpu" or "cuda")."""
    pairs = [(f.name, load.runtime) for f in formats.FORMATS.values() for load in f.loaders]
    return [(fmt, runtime.name) for fmt, runtime in pairs if device in runtime.devices]


def plan(device: str = formats.CPU, remote: Sequence[str] = ()) -> TargetPlan:
    """The targets for `device` (cpu, auto, cuda or cuda:N); each URL in `remote` adds that Open Inference
    Protocol server's models of every Triton format, on its own CPU as far as we know."""
    if not isinstance(device, str) or (device not in (formats.CPU, "auto") and not device.startswith(formats.CUDA)):
        raise DeviceError(f"device {device!r}: expected {PLAN_DEVICES}")
    chosen = [Target(fmt, runtime, formats.CPU) for fmt, runtime in _declared(formats.CPU)]
    skipped: list[str] = []
    if device != formats.CPU:
        gpu = formats.CUDA if device == "auto" else device
        bad_index = None
        if device != "auto":
            try:
                devices.cuda_index(device)
            except DeviceError as exc:
                bad_index = str(exc)
        status = gpu_runtimes()
        left_out: dict[str, list[str]] = {}  # reason -> the rows auto leaves out for it
        for fmt, runtime in _declared(formats.CUDA):
            ok, why = status[runtime]
            why = bad_index or (None if ok else why)
            if why and device == "auto":
                left_out.setdefault(why, []).append(f"{fmt}/{runtime}")
                continue
            chosen.append(Target(fmt, runtime, gpu, why))
        skipped += [f"{formats.CUDA} rows {', '.join(rows)}: {why}" for why, rows in left_out.items()]
    chosen += [Target(fmt, url, formats.CPU) for url in remote for fmt in formats.TRITON_FORMATS]
    return TargetPlan(chosen, skipped)
