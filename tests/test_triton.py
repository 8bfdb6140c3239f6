"""The Triton model repository `export --triton` writes (pipeline/serving/triton.py), checked without Triton.

Every config.pbtxt must parse into Triton's own ModelConfig protobuf, and its tensor names, types
and dims must match what the copied model file really has: the ONNX graph for onnxruntime_onnx and
the Python-backend flavour (which runs the same file), the TorchScript forward signature (by the
PyTorch backend's naming convention) for pytorch_libtorch. tests/test_triton_server.py serves it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from pipeline.artifacts.fileio import sha256_file
from pipeline.artifacts.manifest import Manifest
from pipeline.cli import main as cli
from pipeline.serving.naming import MAX_BATCH_SIZE, TRITON_PLATFORMS, flavours_of
from pipeline.serving.triton import MARKER, PYTHON_MODEL_SOURCE, build_repository

ONNX_TYPES = {1: "TYPE_FP32", 10: "TYPE_FP16", 11: "TYPE_FP64", 7: "TYPE_INT64", 6: "TYPE_INT32"}


@pytest.fixture(scope="module")
def repo(manifest, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("triton") / "repo"
    written = build_repository(manifest, out)
    assert written == [f.model_name(m) for m, entry in manifest.models.items() for f in flavours_of(entry)]
    return out


def flavours(manifest):
    """(model, entry, flavour, its directory name) for every Triton model the repository should hold."""
    return [(m, e, f, f.model_name(m)) for m, e in manifest.models.items() for f in flavours_of(e)]


def parse_config(path: Path):
    return text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())


def data_type_name(value: int) -> str:
    return model_config_pb2.DataType.Name(value)


def named_index(name: str) -> int | None:
    """The index Triton's PyTorch backend reads from `<name>__<index>` (text after the first '__')."""
    head, sep, tail = name.partition("__")
    return int(tail) if sep and head and tail.isdigit() else None


def test_layout_copies_exactly_the_manifest_artifacts(repo, manifest):
    dirs = sorted(p.name for p in repo.iterdir() if p.is_dir())
    assert dirs == sorted(name for *_, name in flavours(manifest))
    assert {f.backend for *_, f, _ in flavours(manifest)} == {None, "python"}  # both kinds of flavour
    assert (repo / "README.md").read_text(encoding="utf-8").startswith(MARKER)
    for _, entry, flavour, name in flavours(manifest):
        model_dir = repo / name
        assert sorted(p.name for p in model_dir.iterdir()) == ["1", "config.pbtxt"]
        model_file = TRITON_PLATFORMS[flavour.format].filename
        # a Python-backend flavour: model.py beside a copy of the same file
        want = [model_file] if flavour.backend is None else sorted([model_file, "model.py"])
        assert sorted(p.name for p in (model_dir / "1").iterdir()) == want
        copy = model_dir / "1" / model_file
        assert not copy.is_symlink() and copy.is_file()
        assert sha256_file(copy) == entry.artifact(flavour.format).sha256
        if flavour.backend is not None:
            assert (model_dir / "1" / "model.py").read_bytes() == PYTHON_MODEL_SOURCE.read_bytes()
    assert not list(repo.parent.glob(".tmp-triton-*")), "the staging directory was left behind"


def test_every_config_parses_into_triton_model_config(repo, manifest):
    for _, entry, flavour, name in flavours(manifest):
        spec = TRITON_PLATFORMS[flavour.format]
        config = parse_config(repo / name / "config.pbtxt")
        assert config.name == name  # Triton requires the directory's name
        if flavour.backend is None:
            assert (config.platform, config.backend) == (spec.platform, "")
            assert config.default_model_filename == spec.filename
        else:
            assert (config.platform, config.backend) == ("", "python")
            assert config.parameters["MODEL_FILE"].string_value == spec.filename
            groups = [(g.count, model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind)) for g in config.instance_group]
            assert groups == [(1, "KIND_CPU")]
        assert_batched_like_the_manifest(config, entry)


def assert_batched_like_the_manifest(config, entry):
    assert config.max_batch_size == MAX_BATCH_SIZE
    assert config.HasField("dynamic_batching")
    assert len(config.input) == len(entry.inputs) and len(config.output) == len(entry.outputs)
    for tensors, specs in ((config.input, entry.inputs), (config.output, entry.outputs)):
        for tensor, manifest_spec in zip(tensors, specs, strict=True):
            assert data_type_name(tensor.data_type) == "TYPE_FP32"
            assert list(tensor.dims) == manifest_spec["shape"][1:]  # batch is implied by max_batch_size


def test_onnx_configs_match_the_onnx_graph(repo, manifest):
    import onnx
    import onnxruntime as ort

    onnx_files = [
        (f, name) for *_, f, name in flavours(manifest) if TRITON_PLATFORMS[f.format].platform == "onnxruntime_onnx"
    ]
    assert {f.backend for f, _ in onnx_files} == {None, "python"}
    for flavour, name in onnx_files:
        model_dir = repo / name
        config = parse_config(model_dir / "config.pbtxt")
        graph_file = model_dir / "1" / TRITON_PLATFORMS[flavour.format].filename
        graph = onnx.load(str(graph_file)).graph
        initializers = {i.name for i in graph.initializer}
        graph_inputs = [i for i in graph.input if i.name not in initializers]
        for tensors, values in ((config.input, graph_inputs), (config.output, graph.output)):
            assert [t.name for t in tensors] == [v.name for v in values]
            for tensor, value in zip(tensors, values, strict=True):
                ttype = value.type.tensor_type
                assert ONNX_TYPES[ttype.elem_type] == data_type_name(tensor.data_type)
                dims = ttype.shape.dim
                assert not dims[0].HasField("dim_value"), f"{value.name}: the batch axis must be dynamic"
                assert [d.dim_value for d in dims[1:]] == list(tensor.dims)
        # and the file runs with the names and a batch shape the config gives Triton
        session = ort.InferenceSession(str(graph_file), providers=["CPUExecutionProvider"])
        x = np.zeros((3, *config.input[0].dims), dtype=np.float32)
        outs = session.run([t.name for t in config.output], {config.input[0].name: x})
        assert [o.shape for o in outs] == [(3, *t.dims) for t in config.output]


def test_torchscript_configs_follow_the_pytorch_backend_naming_convention(repo, manifest):
    """Triton maps config names to TorchScript positions: inputs by forward argument name or
    `<name>__<index>`, outputs only by `<name>__<index>`; mixed names fall back to config order."""
    import torch

    for model, entry in manifest.models.items():
        model_dir = repo / f"{model}_torchscript"
        config = parse_config(model_dir / "config.pbtxt")
        module = torch.jit.load(str(model_dir / "1" / "model.pt"), map_location="cpu")
        schema = module.forward.schema
        args = [a for a in schema.arguments if a.name != "self"]
        assert len(args) == len(config.input)
        assert all(str(a.type) == "Tensor" for a in args)
        for position, (tensor, arg) in enumerate(zip(config.input, args, strict=True)):
            assert named_index(tensor.name) == position, tensor.name
            assert tensor.name == f"{arg.name}__{position}"  # readable: the forward argument's own name
        returns = schema.returns[0].type
        n_out = len(returns.elements()) if isinstance(returns, torch.TupleType) else 1
        assert n_out == len(config.output)
        for position, (tensor, spec) in enumerate(zip(config.output, entry.outputs, strict=True)):
            assert named_index(tensor.name) == position, tensor.name
            assert tensor.name == f"{spec['name']}__{position}"
        # the module's real outputs have the shapes the config promises, in that order
        with torch.inference_mode():
            out = module(torch.zeros((5, *config.input[0].dims)))
        outs = out if isinstance(out, tuple) else (out,)
        assert [tuple(o.shape) for o in outs] == [(5, *t.dims) for t in config.output]


def test_torchscript_parameters_are_backend_parameters(repo, manifest):
    model = next(iter(manifest.models))
    config = parse_config(repo / f"{model}_torchscript" / "config.pbtxt")
    assert config.parameters["INFERENCE_MODE"].string_value == "true"


def test_cli_builds_replaces_and_refuses(artifacts_copy, tmp_path, capsys):
    manifest_before = (artifacts_copy / "manifest.json").read_bytes()
    art = str(artifacts_copy)
    assert cli(["export", "--triton", "--artifacts", art]) == 0  # DIR defaults to ARTIFACTS/triton
    repo = artifacts_copy / "triton"
    assert "Triton model repository" in capsys.readouterr().out and (repo / "README.md").is_file()
    assert (artifacts_copy / "manifest.json").read_bytes() == manifest_before  # nothing was re-exported
    (repo / "stale_onnx").mkdir()
    # a second run replaces the whole repository (the stray model is gone) and honours --models
    assert cli(["export", "--triton", str(repo), "--models", "linear_3x", "--artifacts", art]) == 0
    dirs = sorted(p.name for p in repo.iterdir() if p.is_dir())
    assert dirs == sorted(
        f.model_name("linear_3x") for f in flavours_of(Manifest.load(artifacts_copy).model("linear_3x"))
    )
    assert {"linear_3x_onnx", "linear_3x_onnx_python", "linear_3x_torchscript"} <= set(dirs)
    # a directory it did not write is never replaced
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    capsys.readouterr()
    assert cli(["export", "--triton", str(foreign), "--artifacts", art]) == 2
    assert "refusing to replace" in capsys.readouterr().err
    assert [p.name for p in foreign.iterdir()] == ["keep.txt"]


def test_a_damaged_artifact_fails_and_keeps_the_previous_repository(artifacts_copy, tmp_path, capsys):
    from pipeline.artifacts.manifest import ArtifactError, Manifest

    manifest = Manifest.load(artifacts_copy)
    out = tmp_path / "repo"
    build_repository(manifest, out, ["adder_mynet"])
    before = {p.relative_to(out): sha256_file(p) for p in out.rglob("*") if p.is_file()}
    onnx_path = manifest.path_of(manifest.model("linear_3x").artifact("onnx").path)
    onnx_path.write_bytes(onnx_path.read_bytes()[:-8] + b"tampered")
    with pytest.raises(ArtifactError, match="sha256"):
        build_repository(manifest, out)
    after = {p.relative_to(out): sha256_file(p) for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert not list(tmp_path.glob(".tmp-triton-*")) and not list(tmp_path.glob(".old-triton-*"))
    capsys.readouterr()
    assert cli(["export", "--triton", str(out), "--artifacts", str(artifacts_copy)]) == 1
    err = capsys.readouterr().err
    assert "sha256" in err and err.count("\n") == 1


def test_missing_manifest_is_one_line(tmp_path, capsys):
    assert cli(["export", "--triton", "--artifacts", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no manifest") and err.count("\n") == 1


def test_the_repository_can_be_moved(repo, tmp_path):
    """Copies, not links: the directory stands alone, as a container's volume mount needs."""
    moved = tmp_path / "elsewhere"
    shutil.copytree(repo, moved, symlinks=True)
    assert not [p for p in moved.rglob("*") if p.is_symlink()]
