"""The ExecuTorch loader: the .pte program loaded and run by ExecuTorch's Python runtime (executorch.runtime).

A loaded method holds planned memory that each execute reuses, so calls are serialized by a lock and the
outputs copied out before the next call can overwrite them. That memory is planned for the batch bound the
exporter gave (the file records it): a larger batch runs in slices of that size, joined in order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pipeline.artifacts.manifest import ModelEntry
from pipeline.artifacts.tensors import feeds
from pipeline.runtime.loaders import Loaded, RuntimeUnavailable

METHOD = "forward"


def load_executorch(entry: ModelEntry, path: str, device: str, threads: int | None) -> Loaded:
    """executorch.runtime.Runtime: load_program, load_method("forward"), execute on torch tensors."""
    import torch
    from executorch.runtime import Runtime

    if device not in ("cpu", "auto"):
        raise RuntimeUnavailable(f"ExecuTorch runs on the CPU here; got device {device}")
    program = Runtime.get().load_program(path)
    method = program.load_method(METHOD)
    bound = int(method.metadata.input_tensor_meta(0).sizes()[0])  # the largest batch its memory holds
    lock = threading.Lock()

    def run(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        with lock:
            outs = method.execute([torch.from_numpy(a) for a in arrays])
            return [np.array(o.numpy()) for o in outs]

    def run_batch(x: Any) -> Sequence[np.ndarray]:
        arrays = feeds(entry.input_names, x)
        rows = len(arrays[0])
        if rows <= bound:
            return run(arrays)
        parts = [run([np.ascontiguousarray(a[i : i + bound]) for a in arrays]) for i in range(0, rows, bound)]
        return [np.concatenate(outs) for outs in zip(*parts, strict=True)]

    def bare(x: Any) -> Callable[[], Any]:
        tensors = [torch.from_numpy(a) for a in feeds(entry.input_names, x)]
        return lambda: method.execute(tensors)

    return Loaded(run_batch, "cpu", program, bare)
