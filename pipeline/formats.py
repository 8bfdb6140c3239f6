"""Formats and runtimes, declared once, the way the catalog declares models.

Every stage reads these entries and none names a format itself:
- export writes each exported format's file with its exporter and lists it in the manifest;
- the manifest accepts the artifact kinds declared here;
- the runtime loader finds a format's loader for the runtime asked for;
- parity checks every (format, runtime, device) declared here against the reference;
- the Triton repository writer and the Open Inference Protocol routes serve the formats that
  declare a Triton platform, with its tensor naming;
- the demo and the benchmarks list the formats and their labels.

A new format is one entry in FORMATS, one exporter and, if no existing loader fits, one loader.
Nothing here imports torch or onnxruntime: exporters and loaders are named "module:function" and
imported on first use, so the ONNX serving path never imports torch.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

STATE_DICT = "state_dict"  # the artifact kind of trained weights: what `train` writes and eager loads
CPU, CUDA = "cpu", "cuda"
DEFAULT_ATOL = 1e-5  # absolute part of the parity rule |got - ref| <= atol + rtol * |ref|
DEFAULT_RTOL = 1e-4  # relative part: float32 kernels that sum in another order differ by ~1e-7 relative
INT8_SCALE = 0.05  # int8 weights: measured 0.013-0.019 of max|ref| (the two 1000-100-10 nets), README
FP16_SCALE = 0.005  # float16 weights and compute: measured at most 0.0006 of max|ref| (adder_mynet)
# Reduced precision near zero: a sum whose terms exceed its result keeps float16's absolute error (epsilon
# 9.8e-4 of the terms) however small the outputs are (a user's x1 * x2 model: 2.4e-4 at outputs of 0.027).
REDUCED_ATOL = 1e-3
FP16_RTOL = 1e-3  # float16's own epsilon


@dataclass(frozen=True)
class Tolerance:
    """How close an artifact's output must be to eager's: |got - eager| <= atol + rtol·|eager| + scale·max|eager|.

    `scale` is a derived format's error relative to the size of the output (int8 rounding scales with the
    largest value); it is 0 for float32 formats. The one place the rule is computed and written out.
    """

    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL
    scale: float = 0.0

    RULE = "|got - eager| <= atol + rtol·|eager| + scale·max|eager|"  # the rule in words, with no numbers

    def bound(self, ref: np.ndarray) -> np.ndarray:
        """The largest |got - ref| each element of `ref` allows (float64, the shape of `ref`)."""
        ref = np.abs(np.asarray(ref, dtype=np.float64))
        return self.atol + self.rtol * ref + self.scale * float(ref.max(initial=0.0))

    def holds(self, ref: np.ndarray, got: np.ndarray) -> bool:
        """Whether every element of `got` is within the bound of `ref`."""
        diff = np.abs(np.asarray(got, dtype=np.float64) - np.asarray(ref, dtype=np.float64))
        return bool((diff <= self.bound(ref)).all())

    def min_atol(self, ref: np.ndarray, got: np.ndarray) -> float:
        """The smallest atol with which `got` passes at this rtol and scale (0 when it passes without one)."""
        ref64, got64 = np.asarray(ref, dtype=np.float64), np.asarray(got, dtype=np.float64)
        if not ref64.size:
            return 0.0
        at = Tolerance(0.0, self.rtol, self.scale)
        need = float((np.abs(got64 - ref64) - at.bound(ref64)).max())
        need = max(need, 0.0)
        # (diff - rest) + rest rounds: step to the smallest float that really passes (a few ulps at most)
        passes = lambda a: Tolerance(a, self.rtol, self.scale).holds(ref64, got64)  # noqa: E731
        while not passes(need):
            need = float(np.nextafter(need, np.inf))
        while need > 0 and passes(below := float(np.nextafter(need, 0.0))):
            need = below
        return need

    def describe(self, what: str = "eager") -> str:
        """'|value - eager| <= 1e-05 + 0.0001·|eager|' (and '+ 0.05·max|eager|' where scale is not 0)."""
        text = f"|value - {what}| <= {self.atol:g} + {self.rtol:g}·|{what}|"
        return text + (f" + {self.scale:g}·max|{what}|" if self.scale else "")


@dataclass(frozen=True)
class Runtime:
    """An engine that runs artifacts in this process (a URL is a remote runtime, see pipeline.runtime.predictor)."""

    name: str  # what a person passes as `runtime`
    label: str  # how the demo and reports name it
    devices: tuple[str, ...]  # where it can run: CPU and, with a GPU and the right build, CUDA
    summary: str = ""  # what it is, in one phrase, for people who have never heard of it (the demo shows it)


TORCH = Runtime("torch", "torch", (CPU, CUDA), "PyTorch itself")
ONNXRUNTIME = Runtime("onnxruntime", "onnxruntime", (CPU, CUDA), "ONNX Runtime, the usual engine for serving ONNX")
ONNX_REFERENCE = Runtime(
    "onnx-reference",
    "ONNX reference evaluator",
    (CPU,),
    "the ONNX project's plain NumPy evaluator: slow, a second opinion",
)
# Runtimes of their own formats, each from an optional package (the format's `extra`); CPU builds here.
OPENVINO = Runtime("openvino", "OpenVINO", (CPU,), "Intel's inference engine, for CPUs and Intel GPUs")
EXECUTORCH = Runtime("executorch", "ExecuTorch", (CPU,), "PyTorch's runtime for phones and embedded devices")
RUNTIMES: dict[str, Runtime] = {r.name: r for r in (TORCH, ONNXRUNTIME, ONNX_REFERENCE, OPENVINO, EXECUTORCH)}


@dataclass(frozen=True)
class Loader:
    """One runtime that can load a format, and the function that does it ("module:function")."""

    runtime: Runtime
    function: str  # called as function(entry, path, device, threads) -> (run_batch, device that ran)

    def resolve(self) -> Callable[..., Any]:
        return resolve(self.function)


@dataclass(frozen=True)
class TritonPlatform:
    """How Triton Inference Server serves a format."""

    platform: str  # config.pbtxt `platform`
    filename: str  # Triton's default model file name for that platform
    positional: bool  # tensors are named <name>__<index> (TorchScript files carry no tensor names)
    parameters: tuple[tuple[str, str], ...] = ()  # config.pbtxt `parameters` (key, string_value)
    backend: bool = False  # `platform` names a Triton backend (config `backend:`), not a platform


@dataclass(frozen=True)
class Format:
    """One way a trained model is shipped: its file, who writes it, who can load it, how close it must be."""

    name: str  # what a person passes as `format` / `--format`, and the manifest's artifact kind
    label: str  # how the demo and reports name it
    loaders: tuple[Loader, ...]  # the first is the default runtime
    filename: str | None = None  # the file its exporter writes in a revision folder
    exporter: str | None = None  # "module:function", called as function(ctx, path); None: written by train
    artifact: str | None = None  # the manifest artifact it loads from, when not its own (eager: the state_dict)
    triton: TritonPlatform | None = None  # None: not served by Triton or the OIP routes under its own name
    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL
    scale: float = 0.0  # third term of the parity rule: scale * max|ref| of the output (0: float32 formats)
    source: str | None = None  # a derived format: the format whose file its exporter reads, exported first
    needs_catalog: bool = False  # loading it builds the catalog module (runs Python code of the catalog)
    companions: tuple[str, ...] = ()  # more files its exporter writes beside `filename`, each under the sha256
    requires: tuple[str, ...] = ()  # modules its exporter and loader import, from an optional package
    extra: str | None = None  # the pip extra that installs them: `pip install -e '.[extra]'`
    summary: str = ""  # what it is, in one phrase, for people who have never heard of it (the demo shows it)

    @property
    def artifact_kind(self) -> str:
        """The manifest artifact this format is loaded from."""
        return self.artifact or self.name

    @property
    def runtimes(self) -> tuple[str, ...]:
        return tuple(load.runtime.name for load in self.loaders)

    @property
    def default_runtime(self) -> str:
        return self.loaders[0].runtime.name

    @property
    def tolerance(self) -> Tolerance:
        """This format's parity rule."""
        return Tolerance(self.atol, self.rtol, self.scale)

    def missing(self) -> str | None:
        """ "skipped: install .[extra]" when a module this format requires is not installed, else None.

        find_spec looks without importing, so the demo can leave a format out without loading its runtime.
        """
        for module in self.requires:
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):  # a parent package missing, or a module stubbed out as None
                found = False
            if not found:
                return f"skipped: install .[{self.extra}]"
        return None

    def loader(self, runtime: str) -> Loader | None:
        """The loader for `runtime`, or None when this format does not run there."""
        return next((load for load in self.loaders if load.runtime.name == runtime), None)


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "torchscript",
            "TorchScript",
            (Loader(TORCH, "pipeline.runtime.loaders:load_torchscript"),),
            filename="model.torchscript.pt",
            exporter="pipeline.export.torch_formats:export_torchscript",
            triton=TritonPlatform("pytorch_libtorch", "model.pt", True, (("INFERENCE_MODE", "true"),)),
            summary="a compiled PyTorch program that runs without the model's Python code",
        ),
        Format(
            "onnx",
            "ONNX",
            (
                Loader(ONNXRUNTIME, "pipeline.runtime.loaders:load_onnxruntime"),
                Loader(ONNX_REFERENCE, "pipeline.runtime.loaders:load_onnx_reference"),
            ),
            filename="model.onnx",
            exporter="pipeline.export.torch_formats:export_onnx",
            triton=TritonPlatform("onnxruntime_onnx", "model.onnx", False),
            summary="a portable graph file that many engines and servers read",
        ),
        Format(
            "pt2",
            "torch.export .pt2",
            (Loader(TORCH, "pipeline.runtime.loaders:load_pt2"),),
            filename="model.pt2",
            exporter="pipeline.export.torch_formats:export_pt2",
            summary="PyTorch 2's exported program (torch.export)",
        ),
        # Derived from the ONNX file by onnxruntime's own tools (pipeline/export/quantize.py). Their errors scale
        # with the outputs' magnitude, so each declares a `scale` term, chosen from the deviations measured
        # on every catalog model (README, "Derived formats"). onnx.reference computes float16 MatMul/Gemm
        # with float16 sums in NumPy, not the float32 accumulation onnxruntime uses, so it is not a loader
        # of onnx-fp16: its figure would measure NumPy's summation, not the file.
        Format(
            "onnx-int8",
            "ONNX int8 (dynamic)",
            (
                Loader(ONNXRUNTIME, "pipeline.runtime.loaders:load_onnxruntime"),
                Loader(ONNX_REFERENCE, "pipeline.runtime.loaders:load_onnx_reference"),
            ),
            filename="model.int8.onnx",
            exporter="pipeline.export.quantize:export_onnx_int8",
            source="onnx",
            triton=TritonPlatform("onnxruntime_onnx", "model.onnx", False),
            scale=INT8_SCALE,
            atol=REDUCED_ATOL,
            summary="the ONNX file with its weights stored as 8-bit integers: smaller, a little less exact",
        ),
        Format(
            "onnx-fp16",
            "ONNX float16",
            (Loader(ONNXRUNTIME, "pipeline.runtime.loaders:load_onnxruntime"),),
            filename="model.fp16.onnx",
            exporter="pipeline.export.quantize:export_onnx_fp16",
            source="onnx",
            triton=TritonPlatform("onnxruntime_onnx", "model.onnx", False),
            scale=FP16_SCALE,
            atol=REDUCED_ATOL,
            rtol=FP16_RTOL,
            summary="the ONNX file in 16-bit floats: about half the size, a little less exact",
        ),
        # Formats of other runtimes, each from its optional package (README, "Formats"). OpenVINO IR: converted
        # from the torch.export program, run at f32 inference precision (its CPU default is bf16 on CPUs
        # that have it); .xml (graph) + .bin (weights). Triton's openvino backend serves it; that backend
        # can only ask for bf16 (HINT_BF16), so its precision is the CPU plugin's default.
        Format(
            "openvino",
            "OpenVINO IR",
            (Loader(OPENVINO, "pipeline.runtime.openvino_ir:load_openvino"),),
            filename="model.openvino.xml",
            companions=("model.openvino.bin",),
            exporter="pipeline.export.openvino_ir:export_openvino",
            triton=TritonPlatform("openvino", "model.xml", False, backend=True),
            requires=("openvino",),
            extra="openvino",
            summary="Intel OpenVINO's own files (.xml graph + .bin weights), for OpenVINO and Triton's openvino",
        ),
        # ExecuTorch: the torch.export program lowered to the XNNPACK delegate where its operators allow,
        # the rest left to ExecuTorch's portable kernels; run by ExecuTorch's runtime, batch axis dynamic
        # (bounded: ExecuTorch plans memory ahead).
        Format(
            "executorch",
            "ExecuTorch .pte",
            (Loader(EXECUTORCH, "pipeline.runtime.executorch_pte:load_executorch"),),
            filename="model.pte",
            exporter="pipeline.export.executorch_pte:export_executorch",
            requires=("executorch.exir", "executorch.extension.pybindings._C"),  # the compiler, the runtime
            extra="executorch",
            summary="PyTorch's file for phones and small devices, run by ExecuTorch (XNNPACK kernels)",
        ),
        Format(
            "eager",
            "eager state_dict",
            (Loader(TORCH, "pipeline.runtime.loaders:load_eager"),),
            artifact=STATE_DICT,
            needs_catalog=True,
            summary="the original PyTorch model rebuilt from its trained weights: the reference",
        ),
    )
}

REFERENCE = ("eager", TORCH.name, CPU)  # (format, runtime, device) every other row is compared with
REMOTE_LOADER = "pipeline.serving.remote:load_remote_predictor"  # runtime=URL: a server as a runtime
DEFAULT_FORMAT = "onnx"  # what the demo and the OIP routes serve when nobody asks for a format
EXPORTED = tuple(f.name for f in FORMATS.values() if f.exporter)  # written by `export`, in this order
DERIVED = tuple(f.name for f in FORMATS.values() if f.source)  # made from another format's file by export
ARTIFACT_KINDS = (STATE_DICT, *EXPORTED)  # what a manifest may list
TRITON_FORMATS = tuple(f.name for f in FORMATS.values() if f.triton)  # served by Triton and the OIP routes


class UnknownFormat(ValueError):
    """A format name that is not declared here."""


def get(name: Any) -> Format:
    """The format called `name`, or UnknownFormat listing the ones there are."""
    if not isinstance(name, str) or name not in FORMATS:
        raise UnknownFormat(f"unknown format {name!r}; expected one of: {', '.join(FORMATS)}")
    return FORMATS[name]


def label(fmt: str, runtime: str | None = None) -> str:
    """ "ONNX · onnxruntime": the format's label and the runtime (its default when not given)."""
    spec = get(fmt)
    rt = RUNTIMES.get(runtime or spec.default_runtime)
    return f"{spec.label} · {rt.label if rt else runtime}"


def resolve(dotted: str) -> Callable[..., Any]:
    """The function named by "module:function"."""
    module, _, attr = dotted.partition(":")
    return getattr(importlib.import_module(module), attr)
