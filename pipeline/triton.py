"""A Triton Inference Server model repository built from the manifest, and the naming it uses.

`python -m pipeline export --triton [DIR]` (or `make triton`) writes, for every model the manifest
lists, two Triton models:

    DIR/
      README.md                          what was built, from which manifest; Triton ignores files here
      <model>_onnx/config.pbtxt          platform onnxruntime_onnx, tensor names as in the ONNX graph
      <model>_onnx/1/model.onnx
      <model>_torchscript/config.pbtxt   platform pytorch_libtorch, tensor names <name>__<index>
      <model>_torchscript/1/model.pt

The files are copies (never links, so the directory can be mounted into a container on its own) of
the artifacts the manifest lists, checked against their sha256. The repository is built in a
sibling temp directory and swapped in with renames, so Triton never sees half of one; an existing
DIR is replaced only if an earlier run of this command wrote it.

TorchScript files carry no tensor names, so Triton's PyTorch backend maps config names to
positions by convention: `<name>__<index>` for outputs (and inputs), where index is the position
in forward's arguments or in the returned tuple. Here <name> is the manifest's tensor name, e.g.
adder_mynet_torchscript takes `x__0` and returns `sum__0` and `hidden__1`. The ONNX entries keep
the manifest names (`x`, `sum`, `hidden`). The demo's Open Inference Protocol routes (pipeline/oip.py)
serve the same two names per model with the same tensor names, so one client works on both.

No torch here: the ONNX serving path imports this module.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.fileio import atomic_write, atomic_write_bytes, sha256_file
from pipeline.manifest import Manifest, ManifestError, ModelEntry

VERSION = "1"  # each model has one version directory; a new export rewrites the repository
MAX_BATCH_SIZE = 1024  # the largest batch Triton (and the demo's OIP routes) accept per request
MARKER = "<!-- seed-pipeline triton repository: written by `python -m pipeline export --triton` -->"
README = "README.md"


@dataclass(frozen=True)
class TritonFormat:
    """How one artifact format is served by Triton."""

    format: str  # the manifest artifact format
    platform: str
    filename: str  # Triton's default model file name for the platform
    positional: bool  # tensor names follow the <name>__<index> convention


TRITON_FORMATS = {
    "onnx": TritonFormat("onnx", "onnxruntime_onnx", "model.onnx", positional=False),
    "torchscript": TritonFormat("torchscript", "pytorch_libtorch", "model.pt", positional=True),
}
DATA_TYPES = {  # manifest dtype -> (ModelConfig data type, Open Inference Protocol datatype)
    "float32": ("TYPE_FP32", "FP32"),
    "float16": ("TYPE_FP16", "FP16"),
    "float64": ("TYPE_FP64", "FP64"),
    "int64": ("TYPE_INT64", "INT64"),
    "int32": ("TYPE_INT32", "INT32"),
}
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


class TritonError(UserError, RuntimeError):
    """A repository that cannot be written; the message says why and what to do."""


def triton_model_name(model: str, fmt: str) -> str:
    """The Triton model name of `model`'s `fmt` artifact: '<model>_onnx' or '<model>_torchscript'."""
    return f"{model}_{fmt}"


def tensor_names(entry: ModelEntry, fmt: str) -> tuple[list[str], list[str]]:
    """(input names, output names) of `entry` as the Triton model for `fmt` names them."""
    ins = [t["name"] for t in entry.inputs]
    outs = [t["name"] for t in entry.outputs]
    if not TRITON_FORMATS[fmt].positional:
        return ins, outs
    # The backend parses everything after the first "__" as the index, so a name that already has
    # one falls back to Triton's generic INPUT__i / OUTPUT__i.
    return (
        [f"{n}__{i}" if "__" not in n else f"INPUT__{i}" for i, n in enumerate(ins)],
        [f"{n}__{i}" if "__" not in n else f"OUTPUT__{i}" for i, n in enumerate(outs)],
    )


def tensor_dims(spec: dict[str, Any], where: str) -> list[int]:
    """The dims after the batch axis of a manifest tensor spec ["batch", N, ...]."""
    shape = spec.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) < 2
        or shape[0] != "batch"
        or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape[1:])
    ):
        name = spec.get("name")
        raise ManifestError(f"{where}: tensor {name!r} has shape {shape!r}; expected ['batch', N]")
    return list(shape[1:])


def data_type(spec: dict[str, Any], where: str) -> tuple[str, str]:
    """(ModelConfig data type, Open Inference Protocol datatype) of a manifest tensor spec."""
    dtype = spec.get("dtype", "float32")
    if dtype not in DATA_TYPES:
        name = spec.get("name")
        raise ManifestError(f"{where}: tensor {name!r} has dtype {dtype!r}, which is not mapped to a Triton type")
    return DATA_TYPES[dtype]


def model_config(entry: ModelEntry, fmt: str, max_batch_size: int = MAX_BATCH_SIZE) -> dict[str, Any]:
    """The Triton ModelConfig of `entry`'s `fmt` model, as a dict in ModelConfig's JSON form."""
    spec = TRITON_FORMATS[fmt]
    name = triton_model_name(entry.name, fmt)
    in_names, out_names = tensor_names(entry, fmt)

    def tensors(specs: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
        return [
            {"name": n, "data_type": data_type(s, name)[0], "dims": tensor_dims(s, name)}
            for s, n in zip(specs, names, strict=True)
        ]

    config: dict[str, Any] = {
        "name": name,
        "platform": spec.platform,
        "default_model_filename": spec.filename,
        "max_batch_size": max_batch_size,
        "input": tensors(entry.inputs, in_names),
        "output": tensors(entry.outputs, out_names),
        "dynamic_batching": {},  # batch whatever requests are queued, without waiting for more
    }
    if fmt == "torchscript":
        config["parameters"] = {"INFERENCE_MODE": {"string_value": "true"}}
    for tensor in config["input"] + config["output"]:
        if not _SAFE_NAME.match(tensor["name"]):
            raise ManifestError(f"{name}: tensor name {tensor['name']!r} is not a plain identifier")
    return config


def config_pbtxt(config: dict[str, Any], comment: str = "") -> str:
    """`config` (from model_config) in protobuf text format, as Triton reads config.pbtxt."""
    lines = [f"# {line}" for line in comment.splitlines()]
    lines += [
        f'name: "{config["name"]}"',
        f'platform: "{config["platform"]}"',
        f'default_model_filename: "{config["default_model_filename"]}"',
        f"max_batch_size: {config['max_batch_size']}",
    ]
    for key in ("input", "output"):
        items = []
        for t in config[key]:
            dims = ", ".join(str(d) for d in t["dims"])
            fields = f'    name: "{t["name"]}"\n    data_type: {t["data_type"]}\n    dims: [ {dims} ]'
            items.append("  {\n" + fields + "\n  }")
        lines.append(f"{key} [\n" + ",\n".join(items) + "\n]")
    lines.append("dynamic_batching { }")
    for key, value in config.get("parameters", {}).items():
        text = value["string_value"]
        lines.append(f'parameters {{\n  key: "{key}"\n  value: {{ string_value: "{text}" }}\n}}')
    return "\n".join(lines) + "\n"


def _is_ours(directory: Path) -> bool:
    readme = directory / README
    try:
        return readme.is_file() and readme.read_text(encoding="utf-8").startswith(MARKER)
    except (OSError, UnicodeDecodeError):
        return False


def _copy_verified(manifest: Manifest, entry: ModelEntry, fmt: str, dest: Path) -> str:
    """Copy `entry`'s `fmt` artifact to dest (atomically) and return its sha256, checked twice."""
    artifact = entry.artifact(fmt)
    src = manifest.verified_path(artifact)
    atomic_write(dest, lambda tmp: shutil.copyfile(src, tmp))
    if sha256_file(dest) != artifact.sha256:
        raise TritonError(f"{artifact.path} changed while it was being copied; run the command again")
    return artifact.sha256


def _readme(manifest: Manifest, rows: list[tuple[str, str, str, str, str]]) -> str:
    created = manifest.raw.get("created", "?")
    lines = [
        MARKER,
        "",
        "# Triton model repository",
        "",
        f"Built {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} from the manifest created {created}",
        f"({manifest.root.resolve() / 'manifest.json'}). Rebuild it with `make triton`;",
        "do not edit it by hand: the next build replaces this whole directory.",
        "",
        "Serve it with `tritonserver --model-repository=<this directory>`; see the project README.",
        "",
        "| Triton model | platform | inputs | outputs | source artifact (sha256) |",
        "|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join((f"`{row[0]}`", *row[1:])) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _describe(tensors: list[dict[str, Any]]) -> str:
    return ", ".join(f"`{t['name']}` {t['data_type'][5:]} {[-1, *t['dims']]}" for t in tensors)


def build_repository(
    manifest: Manifest,
    out: Path | str,
    models: list[str] | None = None,
    formats: tuple[str, ...] = tuple(TRITON_FORMATS),
    max_batch_size: int = MAX_BATCH_SIZE,
) -> list[str]:
    """Write the Triton model repository for `models` (default: all in the manifest) to `out`.

    Returns the Triton model names written. Raises TritonError (or ManifestError / ArtifactError)
    with one line; on any error the previous repository at `out`, if any, is left as it was.
    """
    out = Path(out)
    names = list(manifest.models) if models is None else [manifest.model(m).name for m in models]
    if not names:
        raise TritonError("the manifest lists no models; run `make train export` first")
    if max_batch_size < 1:
        raise TritonError(f"max_batch_size must be at least 1; got {max_batch_size}")
    if out.exists() and not out.is_dir():
        raise TritonError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not _is_ours(out):
        raise TritonError(
            f"{out} is not empty and was not written by `export --triton`; "
            "refusing to replace it (choose another directory or empty it)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    for leftover in out.parent.glob(".tmp-triton-*"):  # from a build that was killed an hour or more ago
        if leftover.is_dir() and time.time() - leftover.stat().st_mtime > 3600:
            shutil.rmtree(leftover, ignore_errors=True)
    # Staged beside `out`, not in it: Triton treats every subdirectory of a repository as a model.
    stage = out.parent / f".tmp-triton-{uuid.uuid4().hex[:8]}"
    written: list[str] = []
    rows = []
    try:
        stage.mkdir()
        for model in names:
            entry = manifest.model(model)
            for fmt in formats:
                config = model_config(entry, fmt, max_batch_size)
                name, spec = config["name"], TRITON_FORMATS[fmt]
                digest = _copy_verified(manifest, entry, fmt, stage / name / VERSION / spec.filename)
                source = f"{entry.artifact(fmt).path}, sha256 {digest[:12]}..."
                comment = (
                    f"{name}: {entry.name}'s {fmt} artifact ({source})\n"
                    "Written by `python -m pipeline export --triton` from the manifest; do not edit."
                )
                atomic_write_bytes(stage / name / "config.pbtxt", config_pbtxt(config, comment).encode())
                rows.append(
                    (
                        name,
                        spec.platform,
                        _describe(config["input"]),
                        _describe(config["output"]),
                        f"{entry.artifact(fmt).path} ({digest[:12]}...)",
                    )
                )
                written.append(name)
        atomic_write_bytes(stage / README, _readme(manifest, rows).encode())
        _swap_in(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return written


def _swap_in(stage: Path, out: Path) -> None:
    """Replace `out` with `stage` by renames: a crash leaves the old or the new repository (or, between
    the two renames, the old one under a .old- name beside it, which the next run cleans up)."""
    old = out.parent / f".old-triton-{uuid.uuid4().hex[:8]}"
    for leftover in out.parent.glob(".old-triton-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    if out.exists():
        os.replace(out, old)
    try:
        os.replace(stage, out)
    except BaseException:
        if old.exists() and not out.exists():
            os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)
