"""The one loader: a manifest artifact + a runtime + a device -> a predictor.

The parity check, the demo, the tests and the benchmarks all load artifacts here, so what is
verified is what is served. Which loader serves which (format, runtime) is declared in
pipeline/formats.py; the loaders themselves are in pipeline/runtime/loaders.py. ONNX through onnxruntime
never imports torch; torch is imported only for the torch runtimes.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline import formats
from pipeline.artifacts.manifest import ArtifactError, Manifest, ModelEntry
from pipeline.artifacts.tensors import Batch, describe, dtype, fits, random_batch, shape
from pipeline.dtypes import DEFAULT_DTYPE
from pipeline.errors import one_line
from pipeline.runtime.inputs import FLOATS, InputError, expected
from pipeline.runtime.loaders import RuntimeUnavailable
from pipeline.runtime.values import Problem, ValueRule

DEVICES = ("cpu", "cuda", "auto")  # and cuda:N
WARMUP_CALLS = 3  # probe calls at load: TorchScript's profiling runs, cuBLAS handles, lazy CUDA kernels

__all__ = ["DEVICES", "Predictor", "PredictorCache", "RuntimeUnavailable", "is_remote", "load_predictor"]


def positional_names(names: Sequence[str], count: int) -> list[str]:
    """Names for `count` positional outputs: the manifest's, then "output N" for any beyond them."""
    return [names[i] if i < len(names) else f"output {i}" for i in range(count)]


class NotServed(RuntimeUnavailable):
    """A remote server that answers but serves the artifact under none of its Triton names."""


class OutputOverflow(InputError):
    """Finite inputs whose outputs are not finite in float32: the caller's inputs are too large."""


FLOAT32 = np.dtype(np.float32)
SMALL_CHECK = 64  # values summed as Python floats (exact in float64); larger arrays through one BLAS dot


def all_finite(values: np.ndarray) -> bool:
    """Whether every value is finite, in one pass in the array's own dtype.

    A NaN or infinity makes a sum (and a dot with itself) non-finite, so a finite result proves every value
    finite; only when it is not are the values looked at one by one (large finite values may overflow the
    dot's float32 squares). A few values are summed as Python floats, faster than any NumPy reduction call.
    """
    if values.dtype.kind != "f":
        return True
    flat = values.reshape(-1)
    if flat.size <= SMALL_CHECK:
        return math.isfinite(sum(flat.tolist()))  # float64: at most 64 float32 values cannot overflow it
    if math.isfinite(flat.dot(flat)):
        return True
    return bool(np.isfinite(flat).all())


def check_finite(model: str, names: Sequence[str], outputs: Sequence[np.ndarray]) -> None:
    """OutputOverflow naming the first output that holds an infinity or NaN (float32 overflow)."""
    for name, value in zip(names, outputs, strict=True):
        if not all_finite(value):
            raise OutputOverflow(
                f"{model}'s output {name} is not finite for this input (float32 overflow); "
                "expected inputs of a smaller magnitude"
            )


@dataclass
class Predictor:
    """Runs one artifact. Call it with one example or a batch: for a model with one 1-D input, a flat list
    or rows of features; for any model, a dict of input name -> values (one example, or a batch)."""

    model: str
    format: str
    runtime: str
    device: str  # what really runs it: "cpu", "cuda:0", "CUDAExecutionProvider", ...
    features: list[str]
    output_names: list[str]  # what the manifest promises, in its order
    run_batch: Callable[[np.ndarray], Sequence[np.ndarray]] = field(repr=False)  # the artifact's outputs
    declared: Sequence[str] | None = None  # the names the artifact declares; None: positional (torch)
    native: Any = field(default=None, repr=False)  # the runtime's own object (session, module, ...)
    bare: Callable[[np.ndarray], Callable[[], Any]] | None = field(default=None, repr=False)
    load_seconds: float = 0.0  # including the warm-up calls
    inputs: list[dict[str, Any]] = field(default_factory=list)  # the manifest's input entries

    def __post_init__(self) -> None:
        # One float32 row of features, as every seed model takes: the fast path, decided once.
        self._flat = not self.inputs or (
            len(self.inputs) == 1 and len(shape(self.inputs[0])) == 1 and dtype(self.inputs[0]) == DEFAULT_DTYPE
        )
        # The file names its outputs as the manifest does (positional ones are counted on every call).
        self._same_names = self.declared is None or list(self.declared) == list(self.output_names)
        self._count = len(self.output_names)
        self._width = len(self.features)

    def prepare(self, x: Any) -> tuple[Batch, bool]:
        """x as the model's batch (one C-contiguous array, or a dict of them), and whether it was one example."""
        if not self._flat:
            return self._prepare_named(x)
        if isinstance(x, dict) and self.inputs and set(x) == {self.inputs[0]["name"]}:
            x = x[self.inputs[0]["name"]]
        if isinstance(x, np.ndarray) and x.dtype.kind == "b":
            raise InputError(f"{expected(self.model, self.features)}; got true/false values, not numbers")
        if type(x) is np.ndarray and x.dtype == np.float32 and x.ndim == 1 and x.flags.c_contiguous:
            arr, single = x.reshape(1, -1), True  # one example as the loaders and the benchmark give it
            if arr.shape[1] == len(self.features) and all_finite(arr):
                return arr, single
        try:
            with np.errstate(over="ignore"):  # a number beyond float32 becomes infinity: refused below
                arr = np.ascontiguousarray(x, dtype=np.float32)
        except (ValueError, TypeError, OverflowError):  # ragged rows, text, objects
            want = expected(self.model, self.features)
            raise InputError(f"{want}; got something that is not rows of numbers") from None
        single = arr.ndim == 1
        if single:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != len(self.features):
            got = arr.shape[-1] if arr.ndim else 0
            raise InputError(f"{expected(self.model, self.features)}; got {got}")
        if all_finite(arr):
            return arr, single
        try:  # the value rule names the first value and why: not finite, or beyond float32
            FLOATS.check(np.asarray(x, dtype=np.float64).reshape(arr.shape))
        except Problem as problem:
            row, col = divmod(problem.index or 0, len(self.features))
            where = f"{self.features[col]} (position {col + 1}" + (f", row {row + 1}" if not single else "") + ")"
            raise InputError(f"{expected(self.model, self.features)}; {problem.at(where)}") from None
        raise InputError(f"{expected(self.model, self.features)}; got a value that is not a finite float32 number")

    def _prepare_named(self, x: Any) -> tuple[Batch, bool]:
        """Any model: input name -> values, each of its declared dtype and shape, with or without the batch axis."""
        names = [t["name"] for t in self.inputs]
        want = f"{self.model} expects " + ", ".join(describe(t) for t in self.inputs)
        if len(names) == 1 and not isinstance(x, dict):
            x = {names[0]: x}
        if not isinstance(x, dict):
            raise InputError(f"{want}, as an object of input name -> values; got a {type(x).__name__}")
        unknown = [k for k in x if k not in names]
        missing = [n for n in names if n not in x]
        if unknown or missing:
            raise InputError(f"{want}; got " + ", ".join(map(repr, x)) if x else f"{want}; got no input")
        arrays, singles = {}, set()
        for t in self.inputs:
            arr, single = _array(x[t["name"]], t, want)
            arrays[t["name"]] = arr
            singles.add(single)
        sizes = {len(a) for a in arrays.values()}
        if len(singles) > 1 or len(sizes) > 1:
            raise InputError(f"{want}; got inputs with different batch sizes")
        batch = arrays[names[0]] if len(names) == 1 else arrays
        return batch, singles.pop()

    def outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every output the artifact gives for `batch`, under the name it declares (or the manifest's, by position)."""
        outs = list(self.run_batch(batch))
        names = positional_names(self.output_names, len(outs)) if self.declared is None else self.declared
        return dict(zip(names, outs, strict=True))

    def predict(self, x: Any) -> dict[str, np.ndarray]:
        """Named outputs: (features,) arrays for one example, (batch, features) for a batch. The one predict
        path: the page, the predict API, the OIP routes (through serving/batching.py) and the benchmark."""
        if self._flat and type(x) is np.ndarray and x.dtype is FLOAT32 and x.shape == (self._width,) and all_finite(x):
            # one float32 example, as the benchmark and the loaders give it: a view with the batch axis
            outs = self.run(x.reshape(1, -1))
            return {name: out[0] for name, out in zip(self.output_names, outs, strict=True)}
        arr, single = self.prepare(x)
        outs = self.run(arr)
        if single:
            return {name: out[0] for name, out in zip(self.output_names, outs, strict=True)}
        return dict(zip(self.output_names, outs, strict=True))

    def run(self, batch: Batch) -> Sequence[np.ndarray]:
        """The outputs, in the manifest's order, for a batch `prepare` made (or merged from several): refused
        when the artifact names its outputs otherwise, or when one is not finite (float32 overflow)."""
        outs = self.run_batch(batch)
        if self._same_names and len(outs) == self._count:
            # The common case, small outputs, in one Python sum over all of them: exact in float64 for float32
            # values, and an integer output's sum is always finite. A larger or non-finite one: check_finite.
            total = 0.0
            for out in outs:
                if out.size > SMALL_CHECK:
                    break
                total += sum(out.ravel().tolist())
            else:
                if math.isfinite(total):
                    return outs
            check_finite(self.model, self.output_names, outs)
            return outs
        names = self.output_names
        got = positional_names(names, len(outs)) if self.declared is None else self.declared
        raise ArtifactError(
            f"{self.model} {self.format} on {self.runtime} gives outputs {', '.join(got) or 'none'}; "
            f"the manifest lists {', '.join(names)}: re-run `make export`"
        )

    __call__ = predict


def _array(values: Any, tensor: dict[str, Any], want: str) -> tuple[np.ndarray, bool]:
    """One input's values as a contiguous array of its dtype with the batch axis, and whether it was one example:
    the tensor's value rule (pipeline/runtime/values.py) checks them."""
    dims, rule = shape(tensor), ValueRule.of(tensor)
    try:
        arr = rule.array(values)
    except Problem as problem:
        label = tensor["name"] + (f" value {problem.index + 1}" if problem.index is not None else "")
        raise InputError(f"{want}; {problem.at(label)}") from None
    single = arr.ndim == len(dims)
    if single:
        arr = arr[None]
    if not fits(tensor, arr.shape[1:]):
        raise InputError(f"{want}; {tensor['name']} has shape {list(arr.shape[int(single) :])}")
    return arr, single


def load_predictor(
    manifest: Manifest,
    model: str,
    fmt: str,
    *,
    runtime: str | None = None,
    device: str = "cpu",
    threads: int | None = None,
) -> Predictor:
    """A predictor for `model`'s `fmt` artifact on `runtime` (default: the format's first) and `device`.

    The file's sha256 is checked against the manifest before anything is loaded; the predictor is
    warmed with a few probe calls, counted in its load time, so first-call costs are not latency.
    """
    entry = manifest.model(model)
    try:
        spec = formats.get(fmt)
    except formats.UnknownFormat as exc:
        raise InputError(str(exc)) from None
    runtime = runtime or spec.default_runtime
    if is_remote(runtime):
        return formats.resolve(formats.REMOTE_LOADER)(entry, fmt, runtime)
    load = spec.loader(runtime) if isinstance(runtime, str) else None
    if load is None:
        raise InputError(f"format {fmt} runs on {', '.join(spec.runtimes)}; got runtime {runtime!r}")
    if not isinstance(device, str) or (device not in DEVICES and not device.startswith("cuda:")):
        raise InputError(f"unknown device {device!r}; expected one of: {', '.join(DEVICES)} or cuda:N")
    artifact = entry.artifact(spec.artifact_kind)
    path = manifest.verified_path(artifact)
    if spec.missing():  # the file is there, its runtime's package is not
        raise RuntimeUnavailable(f"{model} {fmt}: {spec.missing()}")
    start = time.perf_counter()
    try:
        loaded = load.resolve()(entry, str(path), device, threads)
        _warm_up(loaded.run_batch, entry)
    except RuntimeUnavailable:
        raise
    except Exception as exc:  # a damaged or hostile file: one line naming it, whatever the parser raised
        raise ArtifactError(f"{artifact.path} could not be loaded as {fmt} by {runtime}: {one_line(exc)}") from exc
    return Predictor(
        model=entry.name,
        format=fmt,
        runtime=runtime,
        device=loaded.device,
        features=entry.features,
        output_names=entry.output_names,
        run_batch=loaded.run_batch,
        declared=loaded.declared,
        native=loaded.native,
        bare=loaded.bare,
        load_seconds=time.perf_counter() - start,
        inputs=entry.inputs,
    )


def _warm_up(run_batch: Callable[[Any], Any], entry: ModelEntry) -> None:
    probe = random_batch(entry.inputs, 2, np.random.default_rng(0))
    for _ in range(WARMUP_CALLS):
        run_batch(probe)
    run_batch(probe[:1] if isinstance(probe, np.ndarray) else {k: v[:1] for k, v in probe.items()})


# ---- a remote server: Triton, the demo's Open Inference Protocol routes, any KServe v2 server ------

REMOTE_SCHEMES = ("http://", "https://")


def is_remote(runtime: Any) -> bool:
    """Whether `runtime` names a remote server by URL rather than a local runtime."""
    return isinstance(runtime, str) and runtime.startswith(REMOTE_SCHEMES)


class PredictorCache:
    """Predictors loaded once per (model, format, runtime, device) and shared between threads."""

    def __init__(self, manifest: Manifest, threads: int | None = None) -> None:
        self.manifest = manifest
        self.threads = threads
        self._predictors: dict[tuple[str, str, str | None, str], Predictor] = {}
        self._lock = threading.Lock()

    def cached(self, model: str, fmt: str, *, runtime: str | None = None, device: str = "cpu") -> Predictor | None:
        """The predictor if it is loaded already, else None (nothing is loaded)."""
        return self._predictors.get((model, fmt, runtime, device))

    def __len__(self) -> int:
        return len(self._predictors)

    def get(self, model: str, fmt: str, *, runtime: str | None = None, device: str = "cpu") -> Predictor:
        """The cached predictor, loading (and sha256-checking) it on first use."""
        return self.fetch(model, fmt, runtime=runtime, device=device)[0]

    def fetch(self, model: str, fmt: str, *, runtime: str | None = None, device: str = "cpu") -> tuple[Predictor, bool]:
        """The cached predictor and whether this call loaded it (False when it was loaded already, or by
        another thread this call waited for): only the call that loaded it may report its load time."""
        key = (model, fmt, runtime, device)
        predictor = self._predictors.get(key)
        if predictor is None:
            with self._lock:
                predictor = self._predictors.get(key)
                if predictor is None:
                    predictor = load_predictor(
                        self.manifest, model, fmt, runtime=runtime, device=device, threads=self.threads
                    )
                    self._predictors[key] = predictor
                    return predictor, True
        return predictor, False
