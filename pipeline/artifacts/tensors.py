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
    """The shape after the batch axis of a manifest tensor entry; -1 for an axis whose length varies."""
    return tuple(-1 if isinstance(d, str) else int(d) for d in tensor["shape"][1:])


def ranges(tensor: Mapping[str, Any]) -> dict[int, tuple[str, int, int]]:
    """Each varying axis after the batch (0 = the first after it) -> (its name, min, max length)."""
    dims = tensor.get("dims") or {}
    return {i: (d, *map(int, dims[d])) for i, d in enumerate(tensor["shape"][1:]) if isinstance(d, str)}


def fits(tensor: Mapping[str, Any], dims: Sequence[int]) -> bool:
    """Whether an example of shape `dims` (after the batch axis) is one this tensor takes."""
    want, varying = shape(tensor), ranges(tensor)
    return len(dims) == len(want) and all(
        varying[i][1] <= n <= varying[i][2] if i in varying else n == w
        for i, (n, w) in enumerate(zip(dims, want, strict=True))
    )


def concrete(tensor: Mapping[str, Any], length: int | None = None) -> tuple[int, ...]:
    """The shape after the batch axis with each varying axis `length` long (default: its shortest length)."""
    varying = ranges(tensor)
    return tuple(
        (min(max(length, varying[i][1]), varying[i][2]) if length else varying[i][1]) if i in varying else d
        for i, d in enumerate(shape(tensor))
    )


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
    """Values per example (at most, where an axis varies: its longest length)."""
    return int(np.prod([r[2] for r in ranges(tensor).values()] + [d for d in shape(tensor) if d > 0]))


def count_text(tensor: Mapping[str, Any]) -> str:
    """Values per example as a person counts them: '12', '1 to 128' (one varying axis), '3 × (1 to 512)'."""
    fixed = int(np.prod([d for d in shape(tensor) if d > 0]))
    spans = [f"{low} to {high}" for _, low, high in ranges(tensor).values()]
    if not spans:
        return str(fixed)
    span = spans[0] if len(spans) == 1 else " × ".join(f"({s})" for s in spans)
    return span if fixed == 1 else f"{fixed} × ({span})" if len(spans) == 1 else f"{fixed} × {span}"


def shape_text(tensor: Mapping[str, Any]) -> str:
    """The shape after the batch axis, a varying axis by its name: '[12]', '[steps, 3]'."""
    return "[" + ", ".join(str(d) for d in tensor["shape"][1:]) + "]"


def describe(tensor: Mapping[str, Any]) -> str:
    """'ids int64 [batch, 12]', or 'x float32 [batch, steps 1..512, 3]' where an axis varies."""
    varying = ranges(tensor)
    dims = [
        f"{varying[i][0]} {varying[i][1]}..{varying[i][2]}" if i in varying else d for i, d in enumerate(shape(tensor))
    ]
    return f"{tensor['name']} {dtype(tensor)} [{', '.join(map(str, ['batch', *dims]))}]"


def random_batch(
    inputs: Sequence[Mapping[str, Any]], n: int, rng: np.random.Generator, length: int | None = None
) -> Batch:
    """n random examples, each varying axis `length` long: standard normal floats, int64 values drawn from the
    declared range [low, high), pictures uniform between their declared paper and ink values (never negative)."""
    out = {}
    for t in inputs:
        if dtype_of(t).whole:
            low, high = t.get("values") or INT_RANGE
            out[t["name"]] = rng.integers(int(low), int(high), size=(n, *concrete(t, length)), dtype=np.int64)
        elif t.get("image"):
            low, high = sorted((float(t["image"]["low"]), float(t["image"]["high"])))
            out[t["name"]] = rng.uniform(low, high, size=(n, *concrete(t, length))).astype(np.float32)
        else:
            out[t["name"]] = rng.standard_normal((n, *concrete(t, length))).astype(np.float32)
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
