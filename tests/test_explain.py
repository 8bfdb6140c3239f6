"""`verify --explain`: a divergence planted in one layer of a copied artifact is the layer the explanation marks
first; derived files name their quantized node; nothing published changes."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.artifacts.fileio import sha256_file
from pipeline.artifacts.manifest import Manifest
from pipeline.runtime.explain import ExplainError, explain
from tests.conftest import run_cli
from tests.test_robustness_artifacts import rel_path, rerecord


def _hashes(root):
    return {p.relative_to(root): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _plant_onnx(root, model: str, initializer: str, delta: float) -> None:
    """Add `delta` to one initializer of the model's ONNX file (a copy), its sha256 re-recorded."""
    import onnx
    from onnx import numpy_helper

    rel = rel_path(root, model, "onnx")
    proto = onnx.load(str(root / rel))
    (init,) = [i for i in proto.graph.initializer if i.name == initializer]
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + np.float32(delta), initializer))
    onnx.save(proto, str(root / rel))
    rerecord(root, rel)


def test_a_changed_onnx_initializer_is_the_first_layer_marked_and_no_file_changes(artifacts_copy):
    _plant_onnx(artifacts_copy, "two_layer_net", "linear1.bias", 0.05)
    before = _hashes(artifacts_copy)
    result = run_cli("verify", "--artifacts", str(artifacts_copy), "--explain", "two_layer_net:onnx")
    assert result.returncode == 1, result.stdout + result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert "◀ first beyond" in lines["linear1"]
    assert "first layer beyond its rule: linear1" in result.stdout
    assert float(lines["linear1"].split()[3]) == pytest.approx(0.05, rel=1e-3)  # max |Δ|: the planted 0.05
    assert _hashes(artifacts_copy) == before  # the published files are only read


def test_a_changed_torchscript_submodule_is_the_first_layer_marked(artifacts_copy):
    import torch

    rel = rel_path(artifacts_copy, "two_layer_net", "torchscript")
    scripted = torch.jit.load(str(artifacts_copy / rel))
    with torch.no_grad():
        scripted.linear2.weight[0, 0] += 1.0
    torch.jit.save(scripted, str(artifacts_copy / rel))
    rerecord(artifacts_copy, rel)
    result = explain(Manifest.load(artifacts_copy), "two_layer_net", "torchscript")
    assert result.first == "linear2"
    layers = {layer.name: layer for layer in result.layers}
    assert not layers["linear1"].beyond and layers["linear2"].beyond and layers["(model)"].beyond
    assert "◀ first beyond" in next(line for line in result.table().splitlines() if line.startswith("linear2"))


def test_an_int8_file_names_the_quantized_node_that_loses_most(manifest):
    result = explain(manifest, "two_layer_raw", "onnx-int8")
    assert result.first is None  # int8 is within its own rule
    most = result.loses_most
    assert most is not None and "MatMulInteger" in most.kind and most.loss > 0
    assert {n.name for n in result.nodes} >= {"mm", "y"}  # the float32 file's value names
    assert len(result.diffs) == result.batch_size * 10 and max(result.diffs) > 1e-3


def test_the_pt2_file_is_explained_through_its_submodules(manifest):
    result = explain(manifest, "two_layer_net", "pt2", batch=3)
    assert [x.name for x in result.layers] == ["linear1", "relu", "linear2", "(model)"]
    assert result.first is None and all(x.max_abs == 0.0 for x in result.layers)
    assert (result.batch, result.batch_size) == (3, 7)


def test_bad_requests_are_refused_in_one_line(manifest):
    with pytest.raises(ExplainError, match="expected 0 to 3"):
        explain(manifest, "linear_3x", "onnx", batch=4)
    with pytest.raises(ExplainError, match="unknown output 'z'"):
        explain(manifest, "linear_3x", "onnx", output="z")
    with pytest.raises(ExplainError, match="eager is the reference"):
        explain(manifest, "linear_3x", "eager")


def test_a_layer_the_file_records_no_scope_for_says_so_and_is_not_guessed(artifacts_copy):
    import onnx

    rel = rel_path(artifacts_copy, "two_layer_net", "onnx")
    proto = onnx.load(str(artifacts_copy / rel))
    for node in proto.graph.node:
        if node.op_type == "Relu":
            del node.metadata_props[:]  # as an exporter that records no scope would write it
    onnx.save(proto, str(artifacts_copy / rel))
    rerecord(artifacts_copy, rel)
    layers = {x.name: x for x in explain(Manifest.load(artifacts_copy), "two_layer_net", "onnx").layers}
    assert layers["relu"].note == "no ONNX node records this module's scope" and layers["relu"].max_abs is None
    assert layers["linear1"].note is None and layers["linear2"].note is None and not layers["linear2"].beyond
