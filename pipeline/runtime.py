"""The one loader: a manifest artifact + a runtime + a device -> a predictor.

The parity check, the demo, the tests and the benchmarks all load artifacts here, so what is
verified is what is served. Which loader serves which (format, runtime) is declared in
pipeline/formats.py; the loaders themselves are in pipeline/loaders.py. ONNX through onnxruntime
never imports torch; torch is imported only for the torch runtimes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline import formats
from pipeline.errors import one_line
from pipeline.inputs import InputError, expected
from pipeline.loaders import RuntimeUnavailable
from pipeline.manifest import ArtifactError, Manifest, ModelEntry

DEVICES = ("cpu", "cuda", "auto")  # and cuda:N
WARMUP_CALLS = 3  # probe calls at load: TorchScript's profiling runs, cuBLAS handles, lazy CUDA kernels

# Views of pipeline/formats.py for modules that still read them here (the demo, oip and bench, until they move).
PREDICT_FORMATS = tuple(formats.FORMATS)
ARTIFACT_OF = {f.name: f.artifact_kind for f in formats.FORMATS.values()}
RUNTIMES_OF = {f.name: f.runtimes for f in formats.FORMATS.values()}
from pipeline.loaders import onnxruntime_providers, session_options  # noqa: E402,F401
from pipeline.loaders import torch_device as _torch_device  # noqa: E402,F401

__all__ = ["DEVICES", "Predictor", "PredictorCache", "RuntimeUnavailable", "is_remote", "load_predictor"]


def positional_names(names: Sequence[str], count: int) -> list[str]:
    """Names for `count` positional outputs: the manifest's, then "output N" for any beyond them."""
    return [names[i] if i < len(names) else f"output {i}" for i in range(count)]


class NotServed(RuntimeUnavailable):
    """A remote server that answers but serves the artifact under none of its Triton names."""


@dataclass
class Predictor:
    """Runs one artifact. Call it with one example (a flat list) or a batch (rows of features)."""

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

    def prepare(self, x: Any) -> tuple[np.ndarray, bool]:
        """x as a C-contiguous float32 (batch, features) array, and whether it was one example."""
        try:
            arr = np.ascontiguousarray(x, dtype=np.float32)
        except (ValueError, TypeError):  # ragged rows, text, objects
            want = expected(self.model, self.features)
            raise InputError(f"{want}; got something that is not rows of numbers") from None
        single = arr.ndim == 1
        if single:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != len(self.features):
            got = arr.shape[-1] if arr.ndim else 0
            raise InputError(f"{expected(self.model, self.features)}; got {got}")
        return arr, single

    def outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every output the artifact gives for `batch`, under the name it declares (or the manifest's, by position)."""
        outs = list(self.run_batch(batch))
        names = positional_names(self.output_names, len(outs)) if self.declared is None else self.declared
        return dict(zip(names, outs, strict=True))

    def predict(self, x: Any) -> dict[str, np.ndarray]:
        """Named outputs: (features,) arrays for one example, (batch, features) for a batch."""
        arr, single = self.prepare(x)
        outs = self.outputs(arr)
        if list(outs) != self.output_names:
            raise ArtifactError(
                f"{self.model} {self.format} on {self.runtime} gives outputs {', '.join(outs) or 'none'}; "
                f"the manifest lists {', '.join(self.output_names)}: re-run `make export`"
            )
        return {name: (out[0] if single else out) for name, out in outs.items()}

    __call__ = predict


def load_predictor(
    manifest: Manifest,
    model: str,
    fmt: str,
    runtime: str | None = None,
    device: str = "cpu",
    *,
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
        return load_remote_predictor(entry, fmt, runtime)
    load = spec.loader(runtime) if isinstance(runtime, str) else None
    if load is None:
        raise InputError(f"format {fmt} runs on {', '.join(spec.runtimes)}; got runtime {runtime!r}")
    if not isinstance(device, str) or (device not in DEVICES and not device.startswith("cuda:")):
        raise InputError(f"unknown device {device!r}; expected one of: {', '.join(DEVICES)} or cuda:N")
    artifact = entry.artifact(spec.artifact_kind)
    path = manifest.verified_path(artifact)
    start = time.perf_counter()
    try:
        loaded = load.resolve()(entry, str(path), device, threads)
        _warm_up(loaded.run_batch, len(entry.features))
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
    )


def _warm_up(run_batch: Callable[[np.ndarray], Any], width: int) -> None:
    probe = np.linspace(-1.0, 1.0, 2 * width, dtype=np.float32).reshape(2, width)
    for _ in range(WARMUP_CALLS):
        run_batch(probe)
    run_batch(probe[:1])


# ---- a remote server: Triton, the demo's Open Inference Protocol routes, any KServe v2 server ------

REMOTE_SCHEMES = ("http://", "https://")


def is_remote(runtime: Any) -> bool:
    """Whether `runtime` names a remote server by URL rather than a local runtime."""
    return isinstance(runtime, str) and runtime.startswith(REMOTE_SCHEMES)


def load_remote_predictor(entry: ModelEntry, fmt: str, url: str) -> Predictor:
    """A predictor that runs `entry`'s `fmt` model on the Open Inference Protocol server at `url`.

    The server is asked for the Triton model `<model>_<fmt>`, else another flavour serving the same
    file (pipeline/naming.py names them), with its tensor names, through tritonclient's HTTP client
    and binary tensors; the model's metadata is checked against the manifest before the predictor is
    returned. The server keeps its own copy of
    the artifact and picks its own device: no local file is read and `device` does not apply.
    """
    from pipeline.naming import TRITON_FORMATS, served_names, tensor_names

    if fmt not in TRITON_FORMATS:
        raise InputError(f"a remote server serves the formats {', '.join(TRITON_FORMATS)}; got {fmt!r}")
    try:
        import tritonclient.http as httpclient
        from tritonclient.utils import InferenceServerException
    except ImportError:
        hint = "pip install 'tritonclient[http]'"
        raise RuntimeUnavailable(f"the remote runtime needs tritonclient: {hint}") from None
    start = time.perf_counter()
    address = url.split("://", 1)[1].rstrip("/")
    in_names, out_names = tensor_names(entry, fmt)
    in_name = in_names[0]
    width = len(entry.features)
    local = threading.local()  # tritonclient's clients are not thread-safe: one per thread

    def client() -> Any:
        if getattr(local, "client", None) is None:
            local.client = httpclient.InferenceServerClient(
                address, ssl=url.startswith("https://"), connection_timeout=10.0, network_timeout=60.0
            )
        return local.client

    names, refusals, meta = served_names(entry.name, fmt), [], None
    for name in names:  # the format's own backend first, then a flavour that runs the same file
        try:
            meta = client().get_model_metadata(name)
            break
        except InferenceServerException as exc:
            refusals.append(exc.message())
        except Exception as exc:  # noqa: BLE001 - refused connections, DNS, TLS: one line
            raise RuntimeUnavailable(f"cannot reach {url}: {type(exc).__name__}: {exc}") from None
    if meta is None:
        raise NotServed(f"{url} does not serve {' or '.join(names)}: {refusals[0]}")
    got_in = [(t.get("name"), t.get("datatype"), list(t.get("shape", []))) for t in meta.get("inputs", [])]
    got_out = {t.get("name"): t.get("datatype") for t in meta.get("outputs", [])}
    if got_in != [(in_name, "FP32", [-1, width])] or any(got_out.get(n) != "FP32" for n in out_names):
        raise RuntimeUnavailable(
            f"{url} serves {name} with inputs {got_in} and outputs {sorted(got_out)}; the manifest "
            f"expects {in_name} FP32 [-1, {width}] -> {', '.join(out_names)} (is it serving these artifacts?)"
        )

    served = [t.get("name") for t in meta.get("outputs", [])]  # every output the server declares, in its order
    manifest_name = dict(zip(out_names, entry.output_names, strict=True))

    def run_batch(x: np.ndarray) -> Sequence[np.ndarray]:
        tensor = httpclient.InferInput(in_name, list(x.shape), "FP32")
        tensor.set_data_from_numpy(np.ascontiguousarray(x, dtype=np.float32), binary_data=True)
        result = client().infer(name, [tensor])  # no outputs named: all of them, as binary tensors
        return [result.as_numpy(n) for n in served]

    return Predictor(
        model=entry.name,
        format=fmt,
        runtime=url,
        device=f"remote {url} ({name})",
        features=entry.features,
        output_names=entry.output_names,
        run_batch=run_batch,
        declared=[manifest_name.get(n, n) for n in served],
        load_seconds=time.perf_counter() - start,
    )


class PredictorCache:
    """Predictors loaded once per (model, format, runtime, device) and shared between threads."""

    def __init__(self, manifest: Manifest, threads: int | None = None) -> None:
        self.manifest = manifest
        self.threads = threads
        self._predictors: dict[tuple[str, str, str | None, str], Predictor] = {}
        self._lock = threading.Lock()

    def get(self, model: str, fmt: str, device: str = "cpu", runtime: str | None = None) -> Predictor:
        """The cached predictor, loading (and sha256-checking) it on first use."""
        key = (model, fmt, runtime, device)
        predictor = self._predictors.get(key)
        if predictor is None:
            with self._lock:
                predictor = self._predictors.get(key)
                if predictor is None:
                    predictor = load_predictor(self.manifest, model, fmt, runtime, device, threads=self.threads)
                    self._predictors[key] = predictor
        return predictor
