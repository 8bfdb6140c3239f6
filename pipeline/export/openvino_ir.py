"""The OpenVINO IR exporter: the torch.export program converted by openvino.convert_model, saved as .xml + .bin.

Converted from the torch.export program rather than from the ONNX file: both were measured on every catalog
model and both examples (README, "Formats"); the program path has no ONNX opset between the model and the IR
and keeps the batch axis symbolic, as the .pt2 file does. Weights stay float32 (save_model would compress
them to float16 by default). The IR's tensors are named as the manifest names them, which is how Triton's
openvino backend and a user's `infer({"x": ...})` find them; the export metadata rides in the IR's rt_info.
The package is the `openvino` extra: without it, export lists this format as skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pipeline import formats

FORMAT = "openvino"
METADATA_KEY = ("seed_pipeline", "metadata")  # rt_info path of the export metadata (JSON) in the .xml


def convert(ctx: Any) -> Any:
    """The ov.Model of ctx.module: torch.export with a dynamic batch axis, then openvino.convert_model."""
    import openvino as ov

    from pipeline.export.torch_formats import exported_program

    program = exported_program(ctx)
    spec = ctx.spec
    # The inputs' shapes given as [?, *dims], a named axis as its range: converted alone, every axis of the
    # program's inputs comes out dynamic, and Triton's openvino backend checks the config's dims against the IR's.
    shapes = [ov.PartialShape([-1, *(_dimension(ov, d) for d in t.shape)]) for t in spec.inputs]
    model = ov.convert_model(program, input=shapes)
    for port, tensor in zip(model.inputs, spec.inputs, strict=True):
        port.get_tensor().set_names({tensor.name})
    for port, tensor in zip(model.outputs, spec.outputs, strict=True):
        port.get_tensor().set_names({tensor.name})
    model.set_rt_info(json.dumps(ctx.metadata), list(METADATA_KEY))
    return model


def _dimension(ov: Any, d: Any) -> Any:
    """One axis after the batch for ov.PartialShape: its length, or a named axis (pipeline.spec.Dim) as its range."""
    return d if isinstance(d, int) else ov.Dimension(d.min, d.max)


def export_openvino(ctx: Any, path: Path) -> None:
    """Write the IR's .xml at `path` and its .bin beside it (the format's companion), each by rename."""
    import openvino as ov

    model = convert(ctx)
    companions = [path.with_name(name) for name in formats.get(FORMAT).companions]
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-openvino-", dir=path.parent))
    try:
        ov.save_model(model, str(tmp / path.name), compress_to_fp16=False)
        for dest in companions:  # the weights first: an .xml never points at a .bin that is not there yet
            os.replace(tmp / dest.name, dest)
        os.replace(tmp / path.name, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
