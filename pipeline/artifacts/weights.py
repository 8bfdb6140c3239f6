"""State dicts are read here and nowhere else: weights only, onto the CPU, checked against the module."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.errors import UserError, one_line

SHOWN = 4  # names listed per kind of mismatch; the rest are counted


class WeightsError(UserError, ValueError):
    """A state_dict that cannot be read, or that does not fit the module; one line naming what differs."""


def read_state_dict(path: str | Path) -> dict[str, Any]:
    """torch.load(weights_only=True) of `path`: a pickle that is not plain weights never runs."""
    import torch

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
    return ", ".join(names[:SHOWN]) + more


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
        parts.append(f"shape mismatch {_names(shapes)}")
    return "; ".join(parts) or None


def load_state_dict(module: Any, path: str | Path) -> Any:
    """Load `path` into `module` (weights only); a WeightsError naming every key that does not fit."""
    state = read_state_dict(path)
    problem = mismatches(module, state)
    if problem:
        raise WeightsError(f"{path} does not fit {type(module).__name__}: {problem}")
    module.load_state_dict(state)
    return module
