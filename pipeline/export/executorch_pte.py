"""The ExecuTorch exporter: the torch.export program lowered with the XNNPACK delegate, saved as one .pte file.

ExecuTorch plans its memory ahead of time, so the dynamic batch axis needs an upper bound: MAX_BATCH, the
largest batch the page and the Open Inference Protocol routes accept (pipeline.serving.naming.MAX_BATCH_SIZE,
kept equal by a test). Operators XNNPACK has no kernel for stay on ExecuTorch's portable kernels.
The package is the `executorch` extra: without it, export lists this format as skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pipeline.artifacts.fileio import atomic_write_bytes

FORMAT = "executorch"
MAX_BATCH = 1024


def lower(ctx: Any) -> bytes:
    """The .pte bytes of ctx.module: torch.export (batch 1..MAX_BATCH), XNNPACK partitions, to_executorch."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from pipeline.export.quantize import NotApplicable

    varying = [d.name for t in ctx.spec.inputs for d in t.dynamic]
    if varying:  # memory is planned ahead for bounded shapes; only the batch axis is declared here
        raise NotApplicable(
            f"the .pte keeps only the batch axis varying; {', '.join(map(repr, varying))} would be fixed to the "
            "traced length; use torchscript or onnx"
        )
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    dims = tuple({0: batch} for _ in ctx.example)
    program = torch.export.export(ctx.module, ctx.example, dynamic_shapes=dims)
    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    return bytes(edge.to_executorch().buffer)


def export_executorch(ctx: Any, path: Path) -> None:
    """Write the .pte file at `path`, atomically."""
    atomic_write_bytes(path, lower(ctx))
