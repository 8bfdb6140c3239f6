"""State dicts are read here and nowhere else: weights only, onto the CPU, checked against the module.

Every check runs in memory before a caller writes anything (`import` keeps the artifacts folder as it
was): the archive's member sizes before a byte is unpacked, then each tensor's kind, dtype and values.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from pipeline.errors import UserError, one_line, printable

SHOWN = 4  # names listed per kind of mismatch; the rest are counted
# The tensor data an archive may hold, against the bytes of the module's own state: twice them (a float64
# copy of float32 weights) plus this much for the pickle, key names and torch.save's 64-byte alignment.
STATE_BYTES_FACTOR = 2
STATE_SLACK_BYTES = 1 << 20


class WeightsError(UserError, ValueError):
    """A state_dict that cannot be read, or that does not fit the module; one line naming what differs."""


def _quote(name: Any) -> str:
    """A key as the messages show it: quoted and escaped only when it holds something unprintable."""
    text = str(name)
    return repr(text) if printable(text) != text else text


def check_archive(path: str | Path, budget: int) -> None:
    """WeightsError unless `path` is a zip archive as torch.save writes it, its members stored (never
    compressed) and unpacking to at most `budget` bytes: read from the zip's directory, nothing unpacked."""
    size = Path(path).stat().st_size
    expected = "expected a state_dict saved with torch.save (a zip archive, torch's format since 1.6)"
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise WeightsError(f"{path} is not a zip archive ({one_line(exc, 120)}); {expected}") from None
    unpacked = sum(m.file_size for m in members)
    packed = [m for m in members if m.compress_type != zipfile.ZIP_STORED]
    if packed or unpacked > size:
        raise WeightsError(
            f"{path} holds {len(packed)} compressed members ({unpacked:,} bytes unpacked from a {size:,}-byte "
            f"file); torch.save stores tensors uncompressed, refused before unpacking"
        )
    if unpacked > budget:
        raise WeightsError(
            f"{path} holds {unpacked:,} bytes of tensors and pickle; the module's weights need at most {budget:,}"
        )


def read_state_dict(path: str | Path, budget: int | None = None) -> dict[str, Any]:
    """torch.load(weights_only=True) of `path`: a pickle that is not plain weights never runs, an archive
    larger than `budget` bytes (when given) or compressed is never unpacked."""
    import torch

    if not Path(path).is_file():
        raise WeightsError(f"{path}: no such file; expected a state_dict saved with torch.save")
    if budget is not None:
        check_archive(path, budget)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such file; expected a state_dict saved with torch.save") from None
    except Exception as exc:  # noqa: BLE001 - a damaged or hostile file: one line
        raise WeightsError(f"{path} is not a weights-only state_dict ({one_line(exc, 200)})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise WeightsError(f"{path} holds a {type(state).__name__}; expected a state_dict (parameter name -> tensor)")
    return state


def _names(names: list[str]) -> str:
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(_quote(n) for n in names[:SHOWN]) + more


def mismatches(module: Any, state: dict[str, Any]) -> str | None:
    """Missing and unexpected keys and shape mismatches of `state` against `module`, in one line, or None."""
    own = module.state_dict()
    parts = []
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {list(getattr(state[k], 'shape', []))} (expected {list(v.shape)})"
        for k, v in own.items()
        if k in state and tuple(getattr(state[k], "shape", ())) != tuple(v.shape)
    ]
    if missing:
        parts.append(f"missing keys {_names(missing)}")
    if unexpected:
        parts.append(f"unexpected keys {_names(unexpected)}")
    if shapes:
        parts.append(
            f"shape mismatch {', '.join(shapes[:SHOWN])}"
            + (f" and {len(shapes) - SHOWN} more" if len(shapes) > SHOWN else "")
        )
    return "; ".join(parts) or None


def tensor_problem(name: str, value: Any, target: Any) -> str | None:
    """Why `value` cannot stand for the module's tensor `target` (same name), or None: a dense tensor whose
    dtype casts to the target's without loss (floating for floating weights), every value finite."""
    import torch

    if not isinstance(value, torch.Tensor):
        return f"{name} is a {type(value).__name__}; expected a tensor"
    if value.layout != torch.strided or value.is_quantized:
        what = "quantized" if value.is_quantized else "sparse"
        return f"{name} is a {what} tensor ({value.layout}); expected a dense tensor"
    src, dst = value.dtype, target.dtype
    kind = str(src).removeprefix("torch.")
    if dst.is_floating_point and not src.is_floating_point:
        return (
            f"{name} is {kind}; expected a floating dtype that casts to {str(dst).removeprefix('torch.')} without loss"
        )
    if not dst.is_floating_point and src != dst and torch.promote_types(src, dst) != dst:
        return f"{name} is {kind}; expected {str(dst).removeprefix('torch.')}"
    if src.is_floating_point:
        finite = torch.isfinite(value)
        if not bool(finite.all()):
            nan = int(torch.isnan(value).sum())
            inf = value.numel() - int(finite.sum()) - nan
            held = [f"{nan} NaN"] * bool(nan) + [f"{inf} infinite value{'s' * (inf > 1)}"] * bool(inf)
            return f"{name} holds {' and '.join(held)}; expected finite weights"
        if torch.promote_types(src, dst) != dst and not torch.equal(value.to(dst).to(src), value):
            return (
                f"{name} is {kind} with values {str(dst).removeprefix('torch.')} cannot hold exactly; "
                f"cast them yourself (e.g. .float()) if that rounding is acceptable"
            )
    return None


def own_bytes(module: Any) -> int:
    """The bytes of the module's own state_dict tensors."""
    return sum(v.numel() * v.element_size() for v in module.state_dict().values())


def load_state_dict(module: Any, path: str | Path) -> Any:
    """Load `path` into `module` (weights only); a WeightsError naming the first key that does not fit."""
    budget = STATE_BYTES_FACTOR * own_bytes(module) + STATE_SLACK_BYTES
    state = read_state_dict(path, budget)
    import torch

    for name, value in state.items():  # before shapes: a number or a list has none worth comparing
        if not isinstance(value, torch.Tensor):
            raise WeightsError(f"{path}: {_quote(name)} is a {type(value).__name__}; expected a tensor")
    problem = mismatches(module, state)
    if problem:
        raise WeightsError(f"{path} does not fit {type(module).__name__}: {problem}")
    own = module.state_dict()
    for name, value in state.items():
        why = tensor_problem(name, value, own[name])
        if why:
            raise WeightsError(f"{path}: {why}")
    module.load_state_dict(state)
    return module
