"""Tensors as the manifest declares them: shapes, dtypes, random and example batches, feeds. No torch here.

A batch for a model with one input is one array (batch, *shape); for several inputs it is a dict of
input name -> array. Every runtime, the parity check and the benchmarks build their feeds here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pipeline.dtypes import DEFAULT_DTYPE, DTYPES, DType

INT_RANGE = (0, 2)  # values drawn for an int64 input that declares no range

Batch = np.ndarray | dict[str, np.ndarray]


def shape(tensor: Mapping[str, Any]) -> tuple[int, ...]:
    """The shape after the batch axis of a manifest tensor entry."""
    return tuple(int(d) for d in tensor["shape"][1:])


def dtype(tensor: Mapping[str, Any]) -> str:
    """The tensor's dtype name (float32 where an older manifest does not say)."""
    return str(tensor.get("dtype", DEFAULT_DTYPE))


def dtype_of(tensor: Mapping[str, Any]) -> DType:
    """The tensor's entry in pipeline.dtypes.DTYPES (the manifest accepts no other)."""
    return DTYPES[dtype(tensor)]


def numpy_dtype(tensor: Mapping[str, Any]) -> type[np.generic]:
    """The NumPy type of the tensor's values."""
    return dtype_of(tensor).numpy


def width(tensor: Mapping[str, Any]) -> int:
    """Values per example."""
    return int(np.prod(shape(tensor)))


def describe(tensor: Mapping[str, Any]) -> str:
    """'ids int64 [batch, 12]'."""
    return f"{tensor['name']} {dtype(tensor)} {['batch', *shape(tensor)]}"


def random_batch(inputs: Sequence[Mapping[str, Any]], n: int, rng: np.random.Generator) -> Batch:
    """n random examples: standard normal floats, int64 values drawn from the declared range [low, high)."""
    out = {}
    for t in inputs:
        if dtype_of(t).whole:
            low, high = t.get("values") or INT_RANGE
            out[t["name"]] = rng.integers(int(low), int(high), size=(n, *shape(t)), dtype=np.int64)
        else:
            out[t["name"]] = rng.standard_normal((n, *shape(t))).astype(np.float32)
    return pack(inputs, out)


def examples_batch(inputs: Sequence[Mapping[str, Any]], examples: Sequence[Any]) -> Batch:
    """The manifest's examples as one batch (flat rows for a one-input model, else dicts of values)."""
    out = {}
    for t in inputs:
        values = [e[t["name"]] if isinstance(e, Mapping) else e for e in examples]
        out[t["name"]] = np.asarray(values, dtype=numpy_dtype(t)).reshape(len(values), *shape(t))
    return pack(inputs, out)


def pack(inputs: Sequence[Mapping[str, Any]], arrays: Mapping[str, np.ndarray]) -> Batch:
    """One array for a one-input model (what the seed models' callers pass), else the dict."""
    return arrays[inputs[0]["name"]] if len(inputs) == 1 else dict(arrays)


def feeds(names: Sequence[str], x: Any) -> list[np.ndarray]:
    """A batch as one array per input, in `names` order."""
    if isinstance(x, np.ndarray):
        return [x]
    if isinstance(x, Mapping):
        return [x[n] for n in names]
    return list(x)


def size(x: Batch) -> int:
    """How many examples a batch holds."""
    return len(x) if isinstance(x, np.ndarray) else len(next(iter(x.values())))


def take(x: Batch, rows: slice) -> Batch:
    """Some rows of a batch, every input alike."""
    return x[rows] if isinstance(x, np.ndarray) else {k: v[rows] for k, v in x.items()}
