"""The ExecuTorch loader: the .pte program loaded and run by ExecuTorch's C++ runtime through its Python binding.

The binding is imported as `executorch.extension.pybindings._C`, which `executorch.runtime` and
`portable_lib` wrap: those wrappers import the whole `executorch.exir` compiler first (for a warning class),
20 to 70 s on this project's loaded two-core machine against 0.04 s for the binding, and a first predict on
the page waited for it. The program and its calls are the same.

ExecuTorch's C++ runtime aborts the whole process (SIGABRT, no exception) on some damaged files, even ones
whose sha256 was re-recorded to match: each file is therefore first opened, and its method loaded, in a child
process (`probe`, once per path and content), and only a file that survives that is loaded here.

A loaded method holds planned memory that each execute reuses, so calls are serialized by a lock and the
outputs copied out. That memory is planned for the batch bound the exporter gave (the file records it):
a larger batch runs in slices of that size, joined in order.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pipeline.artifacts.manifest import ModelEntry
from pipeline.artifacts.tensors import feeds
from pipeline.runtime.loaders import Runner, RuntimeUnavailable

METHOD = "forward"
PROBE_TIMEOUT_S = 120.0  # the child imports torch and the binding, then loads the file
PROBE = (
    "import sys, torch\n"
    "from executorch.extension.pybindings import _C\n"
    "m = _C._load_for_executorch(sys.argv[1])\n"
    "m.method_meta('forward').input_tensor_meta(0).sizes()\n"
)


@functools.lru_cache(maxsize=64)
def probe(path: str, size: int, mtime_ns: int) -> str | None:
    """None when ExecuTorch loads `path` in a child process, else why not, in one line (size and mtime key the
    cache: a file replaced in place is probed again)."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", PROBE, path], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return f"ExecuTorch did not load it within {PROBE_TIMEOUT_S:g} s"
    if done.returncode == 0:
        return None
    last = (done.stderr.strip().splitlines() or ["no message"])[-1][:200]
    how = f"signal {-done.returncode}" if done.returncode < 0 else f"exit {done.returncode}"
    return f"ExecuTorch's runtime failed on it ({how}: {last})"


def load_executorch(entry: ModelEntry, path: str, device: str, threads: int | None) -> Runner:
    """ExecuTorch's _load_for_executorch on the CPU; its forward runs on torch tensors."""
    import torch  # the binding links against torch's libraries: loaded first
    from executorch.extension.pybindings import _C

    if device not in ("cpu", "auto"):
        raise RuntimeUnavailable(f"ExecuTorch runs on the CPU here; got device {device}")
    stat = os.stat(path)
    why = probe(path, stat.st_size, stat.st_mtime_ns)
    if why:
        raise ValueError(why)  # load_predictor words it: "<file> could not be loaded as executorch ..."
    module = _C._load_for_executorch(path)
    bound = int(module.method_meta(METHOD).input_tensor_meta(0).sizes()[0])  # the largest batch its memory holds
    lock = threading.Lock()

    def run(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        with lock:
            outs = module.run_method(METHOD, [torch.from_numpy(a) for a in arrays])
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
        return lambda: module.run_method(METHOD, tensors)

    return Runner(run_batch, "cpu", module, bare)
