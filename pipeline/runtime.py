"""The one loader: a manifest artifact + a runtime + a device -> a predictor.

The parity check, the demo, the tests and the benchmarks all load artifacts here, so what is
verified is what is served. ONNX through onnxruntime never imports torch; torch is imported only
for the torch runtimes.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.devices import DeviceError, cuda_device_count
from pipeline.errors import UserError
from pipeline.inputs import InputError, expected
from pipeline.manifest import ArtifactError, Manifest, ModelEntry

# Formats a person picks; "eager" is the state_dict in the catalog module.
PREDICT_FORMATS = ("torchscript", "onnx", "pt2", "eager")
ARTIFACT_OF = {"eager": "state_dict", "torchscript": "torchscript", "onnx": "onnx", "pt2": "pt2"}
RUNTIMES_OF = {
    "eager": ("torch",),
    "torchscript": ("torch",),
    "pt2": ("torch",),
    "onnx": ("onnxruntime", "onnx-reference"),
}
DEVICES = ("cpu", "cuda", "auto")


class RuntimeUnavailable(UserError, RuntimeError):
    """The runtime or device asked for cannot run here; the message says why."""


class NotServed(RuntimeUnavailable):
    """A remote server that answers but serves the artifact under none of its Triton names."""


@dataclass
class Predictor:
    """Runs one artifact. Call it with one example (a flat list) or a batch (rows of features)."""

    model: str
    format: str
    runtime: str
    device: str  # what really runs it: "cpu", "cuda:0", "CPUExecutionProvider", ...
    features: list[str]
    output_names: list[str]
    run_batch: Callable[[np.ndarray], Sequence[np.ndarray]] = field(repr=False)
    load_seconds: float = 0.0

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

    def predict(self, x: Any) -> dict[str, np.ndarray]:
        """Named outputs: (features,) arrays for one example, (batch, features) for a batch."""
        arr, single = self.prepare(x)
        outs = self.run_batch(arr)
        return {name: (out[0] if single else out) for name, out in zip(self.output_names, outs)}

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

    The file's sha256 is checked against the manifest before anything is loaded.
    """
    entry = manifest.model(model)
    if not isinstance(fmt, str) or fmt not in ARTIFACT_OF:
        raise InputError(f"unknown format {fmt!r}; expected one of: {', '.join(PREDICT_FORMATS)}")
    runtime = runtime or RUNTIMES_OF[fmt][0]
    if is_remote(runtime):
        return load_remote_predictor(entry, fmt, runtime)
    if runtime not in RUNTIMES_OF[fmt]:
        raise InputError(f"format {fmt} runs on {', '.join(RUNTIMES_OF[fmt])}; got runtime {runtime!r}")
    if not isinstance(device, str) or (device not in DEVICES and not device.startswith("cuda:")):
        raise InputError(f"unknown device {device!r}; expected one of: {', '.join(DEVICES)}")
    artifact = entry.artifact(ARTIFACT_OF[fmt])
    path = manifest.verified_path(artifact)
    start = time.perf_counter()
    loader = _LOADERS[runtime]
    try:
        run_batch, actual = loader(entry, fmt, str(path), device, threads)
    except RuntimeUnavailable:
        raise
    except Exception as exc:  # a damaged or hostile file: one line naming it, whatever the parser raised
        detail = " ".join(str(exc).split())
        if "WeightsUnpickler error:" in detail:  # torch refused a pickle: keep the part naming what it refused
            detail = detail[detail.index("WeightsUnpickler error:") :]
        detail = detail[:300]
        raise ArtifactError(
            f"{artifact.path} could not be loaded as {fmt} by {runtime}: {type(exc).__name__}: {detail}"
        ) from exc
    return Predictor(
        model=entry.name,
        format=fmt,
        runtime=runtime,
        device=actual,
        features=entry.features,
        output_names=entry.output_names,
        run_batch=run_batch,
        load_seconds=time.perf_counter() - start,
    )


# ---- onnxruntime ------------------------------------------------------------------------------


def onnxruntime_providers(device: str) -> list[str]:
    """The execution providers to ask for: CUDA only where a GPU and the CUDA provider exist."""
    import onnxruntime as ort

    want_cuda = device.startswith("cuda") or device == "auto"
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers() and cuda_device_count() > 0
    if want_cuda and has_cuda:
        index = device.split(":", 1)[1] if ":" in device else "0"
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]  # type: ignore[list-item]
    if device.startswith("cuda"):
        raise RuntimeUnavailable(
            "onnxruntime cannot use CUDA here: "
            + ("no CUDA GPU is visible" if cuda_device_count() == 0 else "the CUDA execution provider is not installed")
        )
    return ["CPUExecutionProvider"]


def session_options(threads: int | None = None) -> Any:
    """Session options tuned for single examples of small models (see BENCHMARKS.md)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    threads = threads if threads is not None else int(os.environ.get("PIPELINE_ORT_THREADS", "1"))
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return opts


def _load_onnxruntime(entry: ModelEntry, fmt: str, path: str, device: str, threads: int | None):
    import onnxruntime as ort

    providers = onnxruntime_providers(device)
    if providers[0] != "CPUExecutionProvider" and hasattr(ort, "preload_dlls"):
        ort.preload_dlls()  # CUDA and cuDNN from the nvidia-* wheels torch brings, without importing torch
    session = ort.InferenceSession(path, sess_options=session_options(threads), providers=providers)
    actual = session.get_providers()[0]
    if device.startswith("cuda") and actual != "CUDAExecutionProvider":
        raise RuntimeUnavailable(f"onnxruntime's CUDA provider did not load for {path}; it fell back to {actual}")
    input_name = session.get_inputs()[0].name
    names = entry.output_names
    run = session.run
    fast = _ort_binding_run(session, actual, names, input_name, len(entry.features))
    if fast is not None:

        def run_batch(x: np.ndarray) -> Sequence[np.ndarray]:
            return fast(names, {input_name: x}, None)

    else:

        def run_batch(x: np.ndarray) -> Sequence[np.ndarray]:
            return run(names, {input_name: x})

    return run_batch, actual


def _ort_binding_run(session: Any, provider: str, names: list[str], input_name: str, width: int) -> Any:
    """The C++ binding's run under InferenceSession.run, where it is safe to call directly, else None.

    InferenceSession.run re-checks the feed in Python on every call (missing inputs, OrtValue ownership,
    graph capture) and catches provider failures to fall back: 2-3 us, a fifth of a small model's call
    (BENCHMARKS.md). Our feed is always one float32 array under the model's input name, so on the CPU
    provider (nothing to fall back from) the binding is called directly, once it has been seen to give
    what the public call gives.
    """
    binding = getattr(session, "_sess", None)
    if provider != "CPUExecutionProvider" or binding is None:
        return None
    probe = {input_name: np.linspace(-1.0, 1.0, 2 * width, dtype=np.float32).reshape(2, width)}
    try:
        got = binding.run(names, probe, None)
        want = session.run(names, probe)
    except Exception:  # noqa: BLE001 - a binding that changed shape: keep the public call
        return None
    same = len(got) == len(want) and all(np.array_equal(a, b, equal_nan=True) for a, b in zip(got, want))
    return binding.run if same else None


def _load_onnx_reference(entry: ModelEntry, fmt: str, path: str, device: str, threads: int | None):
    import onnx
    from onnx.reference import ReferenceEvaluator

    if device.startswith("cuda"):
        raise RuntimeUnavailable("onnx's ReferenceEvaluator runs on the CPU only")
    evaluator = ReferenceEvaluator(onnx.load(path))
    input_name = entry.input["name"]
    names = entry.output_names

    def run_batch(x: np.ndarray) -> Sequence[np.ndarray]:
        return [np.asarray(o) for o in evaluator.run(names, {input_name: x})]

    return run_batch, "onnx.reference.ReferenceEvaluator"


# ---- torch ------------------------------------------------------------------------------------


def _torch_device(device: str) -> str:
    from pipeline.devices import resolve_torch_device

    if device == "auto":
        import torch

        return "cuda:0" if torch.cuda.is_available() else "cpu"
    try:
        return resolve_torch_device(device)[0]
    except DeviceError as exc:
        raise RuntimeUnavailable(str(exc).replace("--device ", "device ")) from None


def _torch_runner(module: Any, device: str) -> Callable[[np.ndarray], Sequence[np.ndarray]]:
    import torch

    on_cpu = device == "cpu"
    # This predictor's module needs no gradients: with none of its parameters requiring one (and inputs
    # from NumPy never do), autograd records nothing, so no per-call guard is needed. Entering
    # torch.inference_mode() on every call costs more than it saves on these small modules (a few us a
    # call; BENCHMARKS.md, tuning).
    for param in module.parameters():
        param.requires_grad_(False)

    def run_batch(x: np.ndarray) -> Sequence[np.ndarray]:
        t = torch.from_numpy(x)
        out = module(t if on_cpu else t.to(device))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return [o.numpy() if on_cpu else o.cpu().numpy() for o in outs]

    return run_batch


_PT2_LOCK = threading.Lock()


def _load_pt2_weights_only(path: str) -> Any:
    """torch.export.load with every torch.load inside it forced to weights_only=True.

    torch.export.load unpickles sample inputs and 'use_pickle' payloads with weights_only=False, so a
    hostile .pt2 would run code. TORCH_FORCE_WEIGHTS_ONLY_LOAD, read by torch.load on each call,
    overrides that; the lock keeps two loads from restoring the variable under each other.
    """
    import torch

    with _PT2_LOCK:
        before = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
        os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
        try:
            return torch.export.load(path)
        finally:
            if before is None:
                os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
            else:
                os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = before


def _load_torch(entry: ModelEntry, fmt: str, path: str, device: str, threads: int | None):
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    dev = _torch_device(device)
    if fmt == "torchscript":
        with warnings.catch_warnings():  # deprecated in favour of .pt2, still served on purpose
            warnings.filterwarnings("ignore", message=r".*torch\.jit\..*deprecated", category=FutureWarning)
            module = torch.jit.load(path, map_location=dev).eval()
    elif fmt == "pt2":
        program = _load_pt2_weights_only(path)
        if dev != "cpu":
            from torch.export.passes import move_to_device_pass

            program = move_to_device_pass(program, dev)
        module = program.module()
    else:  # eager: the trained catalog module from its state_dict
        from pipeline import catalog

        module = catalog.get(entry.name).build()
        module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        module = module.to(dev).eval()
    return _torch_runner(module, dev), dev


_LOADERS = {
    "onnxruntime": _load_onnxruntime,
    "onnx-reference": _load_onnx_reference,
    "torch": _load_torch,
}


# ---- a remote server: Triton, the demo's Open Inference Protocol routes, any KServe v2 server ------

REMOTE_SCHEMES = ("http://", "https://")


def is_remote(runtime: Any) -> bool:
    """Whether `runtime` names a remote server by URL rather than a local runtime."""
    return isinstance(runtime, str) and runtime.startswith(REMOTE_SCHEMES)


def load_remote_predictor(entry: ModelEntry, fmt: str, url: str) -> Predictor:
    """A predictor that runs `entry`'s `fmt` model on the Open Inference Protocol server at `url`.

    The server is asked for the Triton model `<model>_<fmt>`, else another flavour serving the same
    file (pipeline/naming.py names them), with
    its tensor names, through tritonclient's HTTP client and binary tensors; the model's metadata is
    checked against the manifest before the predictor is returned. The server keeps its own copy of
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

    def run_batch(x: np.ndarray) -> Sequence[np.ndarray]:
        tensor = httpclient.InferInput(in_name, list(x.shape), "FP32")
        tensor.set_data_from_numpy(np.ascontiguousarray(x, dtype=np.float32), binary_data=True)
        wanted = [httpclient.InferRequestedOutput(n, binary_data=True) for n in out_names]
        result = client().infer(name, [tensor], outputs=wanted)
        return [result.as_numpy(n) for n in out_names]

    return Predictor(
        model=entry.name,
        format=fmt,
        runtime=url,
        device=f"remote {url} ({name})",
        features=entry.features,
        output_names=entry.output_names,
        run_batch=run_batch,
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
