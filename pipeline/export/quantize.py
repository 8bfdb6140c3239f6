"""Derived ONNX formats: int8 weights (dynamic quantization) and float16, made from the exported ONNX file.

Both are onnxruntime's own tools, not graph surgery of ours: `quantize_dynamic` for int8 MatMul/Gemm
weights (activations quantized on the fly), and onnxruntime's float16 converter (its maintained copy
of onnxconverter-common's, which also handles a graph output that feeds another node, as adder_mynet's
`hidden` does) with float32 kept at the inputs and outputs so callers do not change.

Also here: the export summary (size and deviation of each derived file beside the float32 one). Their
speed is measured in pipeline/bench/quantized.py. Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import formats
from pipeline.artifacts.fileio import atomic_write, atomic_write_bytes

# A MatMul/Gemm weight with fewer elements saves under 768 bytes as int8, less than the nodes that
# quantize and dequantize it add, and a per-tensor int8 scale costs small weights the most accuracy
# (poly3_sin's 3 weights: 5.6% of its output range, against 1.3% for two_layer_net's 100,000).
MIN_WEIGHT_ELEMENTS = 256
QUANTIZED_OPS = ("MatMul", "Gemm")


def compared() -> tuple[str, ...]:
    """The formats the summary and `measure` show: each derived format's source, then the derived ones."""
    return (*dict.fromkeys(formats.get(d).source for d in formats.DERIVED), *formats.DERIVED)


class NotApplicable(Exception):
    """A derived format that would gain nothing for this model; the message says why."""


def _source_proto(ctx: Any, name: str) -> Any:
    """The source format's file, as written this revision, without value_info for its initializers.

    torch's exporter records value_info for every initializer. Both converters change initializers in
    place (quantize_dynamic transposes Gemm weights, the float16 converter keeps some float32) without
    updating those entries, and shape inference then fails on the stale shapes or types. The entries
    are redundant: shape inference derives them from the initializers themselves.
    """
    import onnx

    source = formats.get(name).source
    path = ctx.written.get(source)
    if path is None:
        raise RuntimeError(f"{name} is made from the {source} file, which was not written this revision")
    proto = onnx.load(str(path))
    initializers = {i.name for i in proto.graph.initializer}
    kept = [v for v in proto.graph.value_info if v.name not in initializers]
    del proto.graph.value_info[:]
    proto.graph.value_info.extend(kept)
    return proto


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """quantize_dynamic warns on the root logger to suggest pre-processing, which these graphs do not need."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def quantizable_nodes(proto: Any, minimum: int = MIN_WEIGHT_ELEMENTS) -> tuple[list[str], int]:
    """Names quantize_dynamic knows the MatMul/Gemm nodes by whose constant weight has `minimum` elements or
    more, and the largest such weight's size."""
    sizes = {i.name: int(np.prod(i.dims)) for i in proto.graph.initializer}
    chosen, largest = [], 0
    for node in proto.graph.node:
        if node.op_type in QUANTIZED_OPS and len(node.input) > 1 and node.input[1] in sizes:
            largest = max(largest, sizes[node.input[1]])
            if sizes[node.input[1]] >= minimum:
                chosen.append(node.name)
                if node.op_type == "Gemm":  # quantize_dynamic first rewrites a Gemm into a MatMul of this name
                    chosen.append(f"{node.name}_MatMul")
    return chosen, largest


def conv_weights(proto: Any) -> int:
    """How many weight values the graph's Conv nodes hold (constant initializers only)."""
    sizes = {i.name: int(np.prod(i.dims)) for i in proto.graph.initializer}
    return sum(sizes.get(n.input[1], 0) for n in proto.graph.node if n.op_type == "Conv" and len(n.input) > 1)


def export_onnx_int8(ctx: Any, path: Path) -> None:
    """int8 by onnxruntime's quantizer: static QDQ (calibrated on the task's data) for a model with Conv layers,
    dynamic MatMul/Gemm weights for the rest; weights per channel, 7-bit (reduce_range) so no CPU saturates."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    proto = _source_proto(ctx, "onnx-int8")
    for i, node in enumerate(proto.graph.node):  # nodes_to_quantize picks nodes by name
        node.name = node.name or f"node_{i}"
    if conv_weights(proto):
        _quantize_static(ctx, proto, path)
        ctx.calibrated.append("onnx-int8")  # parity holds it to its rule on the data it was calibrated for
        return
    nodes, largest = quantizable_nodes(proto)
    if not nodes:
        raise NotApplicable(
            f"no Conv layer and no MatMul/Gemm weight of {MIN_WEIGHT_ELEMENTS} elements or more (largest: {largest}), "
            "so int8 would save almost nothing"
        )
    with _quiet_root_logger():
        atomic_write(
            path,
            lambda tmp: quantize_dynamic(
                proto,
                tmp,
                nodes_to_quantize=nodes,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=QUANTIZED_OPS,
                per_channel=PER_CHANNEL,
                reduce_range=REDUCE_RANGE,
            ),
        )
    onnx.checker.check_model(str(path), full_check=True)


# On a CPU with AVX2 but no VNNI, onnxruntime multiplies uint8 activations by int8 weights with an instruction
# that adds pairs of products into int16 and saturates (onnxruntime's quantization docs): 8-bit weights there
# gave a user's transformer 0.038 off eager, 7-bit ones 0.0036. 7-bit weights (reduce_range) never saturate, so
# the int8 file gives the same answers on every CPU; per-channel scales win back the accuracy the lost bit costs.
REDUCE_RANGE = True
PER_CHANNEL = True
CALIBRATION_ROWS = 256  # rows of the task's data the static quantizer measures activation ranges on
CALIBRATION_BATCH = 32


def calibration_batches(ctx: Any) -> list[dict[str, np.ndarray]]:
    """Feeds (input name -> array) of the spec's data (else test_data, else its examples), in batches."""
    spec = ctx.spec
    draw = spec.data or spec.test_data
    if draw is not None:
        import torch

        x, _ = draw(torch.Generator().manual_seed(0))
        xs = list(x) if isinstance(x, (tuple, list)) else [x]
        arrays = [t[:CALIBRATION_ROWS].detach().cpu().numpy() for t in xs]
    else:
        arrays = [t.detach().cpu().numpy() for t in spec.example_inputs()]
    names = [t.name for t in spec.inputs]
    rows = len(arrays[0])
    return [
        {n: a[i : i + CALIBRATION_BATCH] for n, a in zip(names, arrays, strict=True)}
        for i in range(0, rows, CALIBRATION_BATCH)
    ]


def _quantize_static(ctx: Any, proto: Any, path: Path) -> None:
    """Static QDQ quantization: int8 weights per channel and uint8 activations whose ranges are measured on the
    task's own data (calibration_batches), for every Conv, MatMul and Gemm."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self, batches: list[dict[str, np.ndarray]]) -> None:
            self.batches = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    reader = Reader(calibration_batches(ctx))
    outputs = {o.name for o in proto.graph.output}
    # The layer that gives an output stays float32: quantizing the logits themselves cost the digits CNN 1.5 of
    # 20 (7.5 %, over its rule) on held-out digits; its weights are a small share of the file.
    last = [n.name for n in proto.graph.node if n.op_type in ("Conv", *QUANTIZED_OPS) and set(n.output) & outputs]
    with _quiet_root_logger():
        atomic_write(
            path,
            lambda tmp: quantize_static(
                proto,
                tmp,
                reader,
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=("Conv", *QUANTIZED_OPS),
                nodes_to_exclude=last,
                per_channel=PER_CHANNEL,
                reduce_range=REDUCE_RANGE,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            ),
        )
    quantized = onnx.load(str(path))
    opset = next((o.version for o in quantized.opset_import if o.domain in ("", "ai.onnx")), QDQ_OPSET)
    if opset < QDQ_OPSET:  # onnx.reference implements DequantizeLinear from opset 19 on; the operator is the same
        from onnx import version_converter

        quantized = version_converter.convert_version(quantized, QDQ_OPSET)
        atomic_write_bytes(path, quantized.SerializeToString())
    onnx.checker.check_model(str(path), full_check=True)


QDQ_OPSET = 19


def export_onnx_fp16(ctx: Any, path: Path) -> None:
    """The ONNX file with float16 weights and compute, float32 inputs and outputs (onnxruntime's converter)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    proto = convert_float_to_float16(_source_proto(ctx, "onnx-fp16"), keep_io_types=True)
    # The converter appends the input Casts after the nodes that read them; onnxruntime sorts a graph
    # itself, but the ONNX standard (and onnx.checker, onnx.reference) wants nodes in topological order.
    OnnxModel.graph_topological_sort(proto.graph)
    data = proto.SerializeToString()
    onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    atomic_write_bytes(path, data)


# ---- what each derived format gains and costs -------------------------------------------------


def _deviation(rows: Sequence[dict[str, Any]], fmt: str) -> float | None:
    """The largest max |Δ| of `fmt`'s onnxruntime CPU rows (None when it has none)."""
    values = [
        r["max_abs"]
        for r in rows
        if r["format"] == fmt and r["runtime"] == formats.ONNXRUNTIME.name and r["max_abs"] is not None
    ]
    return max(values) if values else None


def summary_rows(entries: dict[str, dict[str, Any]]) -> list[tuple[str, ...]]:
    """Per model: each derived format's size beside its source's and its deviation from eager, or why none."""
    out = []
    for model, entry in entries.items():
        sizes = {a["format"]: a["bytes"] for a in entry["artifacts"]}
        rows = entry.get("parity", {}).get("rows", [])
        for name in compared():
            if name in entry.get("not_applicable", {}):
                out.append((model, name, "-", "-", "-", f"not applicable: {entry['not_applicable'][name]}"))
            elif name in entry.get("failed", {}):
                out.append((model, name, "-", "-", "-", f"not published, missed its rule: {entry['failed'][name]}"))
            elif name in sizes:
                dev = _deviation(rows, name)
                source = formats.get(name).source
                ratio = f"{sizes[name] / sizes[source]:.2f}x" if source in sizes else ""
                out.append((model, name, f"{sizes[name]:,}", ratio, "-" if dev is None else f"{dev:.2e}", ""))
    return out


def summary(entries: dict[str, dict[str, Any]]) -> str:
    """The export summary's table of derived formats (see summary_rows)."""
    from pipeline.tables import text_table

    head = ("model", "format", "bytes", "x source", "max |Δ| (onnxruntime)", "")
    return text_table(head, summary_rows(entries))
