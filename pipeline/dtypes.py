"""Tensor dtypes, declared once, the way pipeline/formats.py declares formats.

A tensor spec in the catalog names one of these; the manifest accepts them; the runtimes build their feeds,
the Open Inference Protocol routes and the Triton repository name them from here. A new dtype is one entry.
Nothing here imports torch: the torch dtype is named, and pipeline/spec.py looks it up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DType:
    """One tensor dtype and what each stage calls it."""

    name: str  # what a tensor spec and the manifest say ("float32")
    numpy: type[np.generic]  # the NumPy scalar type of its arrays
    torch: str  # the attribute of `torch` (torch.float32)
    oip: str  # the Open Inference Protocol's datatype ("FP32")
    triton: str  # config.pbtxt's data_type ("TYPE_FP32")
    whole: bool  # whole numbers: a value with a fraction is refused, not rounded

    def wire(self) -> np.dtype:
        """The little-endian NumPy dtype of its values in binary request and reply data."""
        return np.dtype(self.numpy).newbyteorder("<")


DTYPES: dict[str, DType] = {
    d.name: d
    for d in (
        DType("float32", np.float32, "float32", "FP32", "TYPE_FP32", whole=False),
        DType("int64", np.int64, "int64", "INT64", "TYPE_INT64", whole=True),
    )
}
DEFAULT_DTYPE = "float32"  # what a tensor is where a spec or an older manifest does not say
