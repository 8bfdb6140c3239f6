"""The three formats torch writes itself: TorchScript, ONNX (the torch.export-based exporter) and torch.export's
.pt2, each with the model's metadata inside; and the export context and program every exporter reads.

pipeline/formats.py names each format's exporter ("module:function"); the other formats' exporters are in the
modules beside this one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.artifacts.fileio import atomic_write, atomic_write_bytes
from pipeline.export.quantize import NotApplicable
from pipeline.runtime.loaders import quiet_torchscript
from pipeline.spec import Dim, ModelSpec

DEFAULT_OPSET = 18
PRODUCER = "seed-pipeline"
EXAMPLE_BATCH = 3  # the exporters trace with batch 3, so batch 1 and 7 in parity prove the dynamic axis


@dataclass
class ExportContext:
    """What every exporter gets: the spec, the module to trace, an example batch and the metadata."""

    spec: ModelSpec
    module: nn.Module
    example: tuple[torch.Tensor, ...]  # one tensor per input, in input order
    metadata: dict[str, Any]
    opset: int
    written: dict[str, Path] = field(default_factory=dict)  # format -> its file, as written this revision
    calibrated: list[str] = field(default_factory=list)  # formats whose file was calibrated on the task's data


def producer_version() -> str:
    try:
        return importlib_metadata.version(PRODUCER)
    except importlib_metadata.PackageNotFoundError:
        return "0+unknown"


def export_torchscript(ctx: ExportContext, path: Path) -> None:
    """torch.jit.script of the export form (traced where it cannot be scripted), with metadata.json inside."""
    with quiet_torchscript():
        try:
            scripted = torch.jit.script(ctx.module)
        except Exception:  # noqa: BLE001 - Python a user's module uses that TorchScript cannot compile
            scripted = torch.jit.trace(ctx.module, ctx.example, check_trace=False)
        extra = {"metadata.json": json.dumps(ctx.metadata)}
        atomic_write(path, lambda tmp: torch.jit.save(scripted, str(tmp), _extra_files=extra))


def _batch_dims(ctx: ExportContext) -> tuple[dict[int, Any], ...]:
    """The dynamic axes of every input, for torch.export: the batch, shared by all, and each named Dim (one
    torch.export.Dim per name, so two inputs that name the same axis must agree on its length)."""
    batch = torch.export.Dim("batch", min=1)
    named: dict[str, Any] = {}
    out = []
    for t in ctx.spec.inputs:
        axes: dict[int, Any] = {0: batch}
        for i, d in enumerate(t.shape, start=1):
            if isinstance(d, Dim):
                # torch.export treats a length of 1 as a constant unless told otherwise: ranges start at 2 there,
                # and 1 is proven by parity (the exported program and ONNX graph hold for it, see README).
                named.setdefault(d.name, torch.export.Dim(d.name, min=d.min, max=d.max))
                axes[i] = named[d.name]
        out.append(axes)
    return tuple(out)


def _axis_names(proto: Any, spec: ModelSpec) -> None:
    """Name the ONNX graph's dynamic axes as the spec does: "batch" first, then each Dim's name."""
    for value_info, t in zip(proto.graph.input, spec.inputs, strict=True):
        dims = value_info.type.tensor_type.shape.dim
        for i, d in enumerate(t.shape, start=1):
            if isinstance(d, Dim) and i < len(dims) and not dims[i].HasField("dim_value"):
                dims[i].dim_param = d.name


def export_onnx(ctx: ExportContext, path: Path) -> None:
    """torch.onnx.export (torch.export-based), weights embedded, self-described, checked in full."""
    import onnx

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    spec = ctx.spec
    program = torch.onnx.export(
        ctx.module,
        ctx.example,
        None,
        input_names=[t.name for t in spec.inputs],
        output_names=[t.name for t in spec.outputs],
        dynamic_shapes=_batch_dims(ctx),
        opset_version=ctx.opset,
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    proto = program.model_proto
    proto.producer_name = PRODUCER
    proto.producer_version = producer_version()
    proto.doc_string = f"{spec.name}: {spec.description}. From seed {spec.seed}."
    proto.graph.doc_string = proto.doc_string
    del proto.metadata_props[:]
    for key, value in ctx.metadata.items():
        entry = proto.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value)
    for value_info in [*proto.graph.input, *proto.graph.output]:  # the batch axis is called "batch"
        dim = value_info.type.tensor_type.shape.dim[0]
        if not dim.HasField("dim_value"):
            dim.dim_param = "batch"
    _axis_names(proto, spec)
    data = proto.SerializeToString()
    onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    atomic_write_bytes(path, data)


def export_pt2(ctx: ExportContext, path: Path) -> None:
    """torch.export.export with a dynamic batch axis (and the spec's named axes), saved with metadata.json."""
    program = exported_program(ctx)
    extra = {"metadata.json": json.dumps(ctx.metadata)}
    atomic_write(path, lambda tmp: torch.export.save(program, str(tmp), extra_files=extra))


def exported_program(ctx: ExportContext) -> Any:
    """The torch.export program every format made from one reads (.pt2 and the others), or NotApplicable when the
    module's code fixes a named axis the spec declares varying."""
    try:
        return torch.export.export(ctx.module, ctx.example, dynamic_shapes=_batch_dims(ctx))
    except Exception as exc:  # noqa: BLE001 - only a named axis the program fixed is this format's limit
        varying = [d.name for t in ctx.spec.inputs for d in t.dynamic]
        if not varying or "specialized it to be a constant" not in str(exc):
            raise
        raise NotApplicable(
            f"torch.export cannot keep {', '.join(map(repr, varying))} varying: the module's code fixes it to the "
            "traced length (nn.GRU and nn.LSTM unroll their time steps there); use torchscript or onnx"
        ) from None
