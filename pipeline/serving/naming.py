"""How Triton and the Open Inference Protocol name what we serve: models, tensors, platforms, data types.

The repository writer (pipeline/serving/triton.py), the demo's protocol routes (pipeline/serving/oip.py) and the
remote runtime (pipeline/runtime/predictor.py) all read these rules, so what is written, served and asked for
cannot disagree. Format facts (platform, file name, tensor naming) come from pipeline/formats.py.

Model names, one Triton model per manifest model and flavour:

    <model>_<format>          the format's file on its own Triton backend (formats.py names the platform),
                              e.g. adder_mynet_onnx (onnxruntime_onnx), adder_mynet_torchscript (pytorch_libtorch)
    <model>_<format>_python   the same file run by Triton's Python backend: model.py runs it with onnxruntime,
                              for a server that has the Python backend but not the format's own one
                              (the Triton in the nvidia-pytriton wheel), e.g. adder_mynet_onnx_python;
                              every format onnxruntime loads has one

Tensor names: the manifest's (x -> sum, hidden), except for formats whose files carry no tensor
names (TorchScript): Triton's PyTorch backend maps config names to positions by `<name>__<index>`,
index being the position in forward's arguments or in the returned tuple (x__0 -> sum__0, hidden__1).

No torch and no file writing here: the ONNX serving path imports this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pipeline import formats
from pipeline.artifacts.manifest import ManifestError, ModelEntry
from pipeline.artifacts.tensors import dtype
from pipeline.dtypes import DTYPES

VERSION = "1"  # each model has one version directory; a new export rewrites the repository
MAX_BATCH_SIZE = 1024  # the largest batch Triton (and the demo's OIP routes) accept per request
PYTHON_BACKEND = "python"  # Triton's backend that runs a model.py in a stub process
TRITON_PLATFORMS: dict[str, formats.TritonPlatform] = {  # format -> how Triton serves it
    name: formats.get(name).triton
    for name in formats.TRITON_FORMATS  # type: ignore[misc]
}
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass(frozen=True)
class Flavour:
    """A format's file on one Triton backend: the format's own platform, or the Python backend."""

    format: str
    backend: str | None = None  # None: the platform formats.py declares; PYTHON_BACKEND: model.py + onnxruntime

    @property
    def suffix(self) -> str:
        """What follows '<model>_' in the Triton model name."""
        return self.format if self.backend is None else f"{self.format}_{self.backend}"

    def model_name(self, model: str) -> str:
        """The Triton model name of `model` in this flavour: '<model>_onnx', '<model>_onnx_python'."""
        return f"{model}_{self.suffix}"


# The Python-backend flavour runs model.py, which runs the file with onnxruntime: every Triton format
# that onnxruntime loads has one, the default format's first.
PYTHON_FLAVOURS = tuple(
    Flavour(name, PYTHON_BACKEND)
    for name in sorted(TRITON_PLATFORMS, key=lambda name: name != formats.DEFAULT_FORMAT)
    if formats.get(name).loader(formats.ONNXRUNTIME.name) is not None
)
PYTHON_FLAVOUR = PYTHON_FLAVOURS[0]  # the default format's: what a client that names no format gets
FLAVOURS = (*(Flavour(f) for f in TRITON_PLATFORMS), *PYTHON_FLAVOURS)  # what the repository writer emits


def triton_model_name(model: str, fmt: str, backend: str | None = None) -> str:
    """The Triton model name of `model`'s `fmt` artifact: '<model>_onnx', or '<model>_onnx_python' on `backend`."""
    return Flavour(fmt, backend).model_name(model)


def flavours_of(entry: ModelEntry, flavours: tuple[Flavour, ...] = FLAVOURS) -> list[Flavour]:
    """The `flavours` that serve a file `entry` has. A derived format export made no file for (int8 of a
    model without MatMul) or a format of an optional package is left out; a missing primary file is the
    writer's ManifestError."""
    optional = lambda name: formats.get(name).source or formats.get(name).extra  # noqa: E731
    return [
        f
        for f in flavours
        if f.format in entry.artifacts
        or not (
            entry.withheld(f.format)
            or f.format in entry.not_applicable
            or formats.get(f.format).source
            or optional(f.format)
        )
    ]


def served_names(model: str, fmt: str) -> list[str]:
    """The Triton model names that may serve `model`'s `fmt` artifact, the format's own backend first."""
    return [f.model_name(model) for f in FLAVOURS if f.format == fmt]


def tensor_names(entry: ModelEntry, fmt: str) -> tuple[list[str], list[str]]:
    """(input names, output names) of `entry` as the Triton model for `fmt` names them."""
    ins = [t["name"] for t in entry.inputs]
    outs = [t["name"] for t in entry.outputs]
    if not TRITON_PLATFORMS[fmt].positional:
        return ins, outs
    # The backend parses everything after the first "__" as the index, so a name that already has
    # one falls back to Triton's generic INPUT__i / OUTPUT__i.
    return (
        [f"{n}__{i}" if "__" not in n else f"INPUT__{i}" for i, n in enumerate(ins)],
        [f"{n}__{i}" if "__" not in n else f"OUTPUT__{i}" for i, n in enumerate(outs)],
    )


def tensor_dims(spec: dict[str, Any], where: str) -> list[int]:
    """The dims after the batch axis of a manifest tensor spec ["batch", N, ...] ([] for a scalar per example),
    -1 for an axis whose length varies (a name, with its range in the spec's "dims")."""
    shape = spec.get("shape")
    dims = spec.get("dims") if isinstance(spec.get("dims"), dict) else {}
    if (
        not isinstance(shape, list)
        or len(shape) < 1
        or shape[0] != "batch"
        or not all(
            (isinstance(d, int) and not isinstance(d, bool) and d > 0) or (isinstance(d, str) and d in dims)
            for d in shape[1:]
        )
    ):
        name = spec.get("name")
        raise ManifestError(f"{where}: tensor {name!r} has shape {shape!r}; expected ['batch', N]")
    return [-1 if isinstance(d, str) else d for d in shape[1:]]


def data_type(spec: dict[str, Any], where: str) -> tuple[str, str]:
    """(ModelConfig data type, Open Inference Protocol datatype) of a manifest tensor spec."""
    kind = dtype(spec)
    if kind not in DTYPES:
        name = spec.get("name")
        raise ManifestError(f"{where}: tensor {name!r} has dtype {kind!r}, which is not mapped to a Triton type")
    return DTYPES[kind].triton, DTYPES[kind].oip


def value_ranges(entry: ModelEntry, names: list[str]) -> str:
    """'words=0:50;ids=0:10': the declared [low, high) of each int64 input under its Triton name, for model.py."""
    return ";".join(
        f"{n}={t['values'][0]:g}:{t['values'][1]:g}"
        for t, n in zip(entry.inputs, names, strict=True)
        if t.get("dtype") == "int64" and t.get("values")
    )


def model_config(
    entry: ModelEntry, fmt: str, max_batch_size: int = MAX_BATCH_SIZE, backend: str | None = None
) -> dict[str, Any]:
    """The Triton ModelConfig of `entry`'s `fmt` model (on `backend`), as a dict in ModelConfig's JSON form."""
    spec = TRITON_PLATFORMS[fmt]
    name = triton_model_name(entry.name, fmt, backend)
    in_names, out_names = tensor_names(entry, fmt)

    def tensors(specs: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
        out = []
        for s, n in zip(specs, names, strict=True):
            dims = tensor_dims(s, name)
            # A scalar per example: Triton wants dims of one or more, so [1], reshaped to [] (the model's [batch]).
            extra = {} if dims else {"reshape": {"shape": []}}
            out.append({"name": n, "data_type": data_type(s, name)[0], "dims": dims or [1], **extra})
        return out

    config: dict[str, Any] = {"name": name}
    if backend is None:
        config |= {"backend" if spec.backend else "platform": spec.platform, "default_model_filename": spec.filename}
        parameters = dict(spec.parameters)
    else:  # model.py finds the format's file beside itself by this parameter
        config["backend"] = backend
        parameters = {"MODEL_FILE": spec.filename}
        ranges = value_ranges(entry, in_names)
        if ranges:  # model.py refuses ids outside them, as the demo does, instead of onnxruntime's Gather error
            parameters["VALUE_RANGES"] = ranges
    config |= {
        "max_batch_size": max_batch_size,
        "input": tensors(entry.inputs, in_names),
        "output": tensors(entry.outputs, out_names),
        "dynamic_batching": {},  # batch whatever requests are queued, without waiting for more
    }
    if backend is not None:  # one stub process per model: its batches are what dynamic batching makes
        config["instance_group"] = [{"count": 1, "kind": "KIND_CPU"}]
    if parameters:
        config["parameters"] = {k: {"string_value": v} for k, v in parameters.items()}
    for tensor in config["input"] + config["output"]:
        if not _SAFE_NAME.match(tensor["name"]):
            raise ManifestError(f"{name}: tensor name {tensor['name']!r} is not a plain identifier")
    return config
