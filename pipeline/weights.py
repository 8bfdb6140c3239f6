"""State dicts are read here and nowhere else: weights only, onto the CPU, into a module."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_state_dict(module: Any, path: str | Path) -> Any:
    """Load `path` into `module` with torch.load(weights_only=True); a pickle that is not plain weights never runs."""
    import torch

    module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return module
