"""A Triton Inference Server model repository built from the manifest.

`python -m pipeline export --triton [DIR]` (or `make triton`) writes, for every model the manifest
lists, one Triton model per flavour (pipeline/serving/naming.py names them) of each file it has:

    DIR/
      README.md                             what was built, from which manifest, which flavour to use when
      <model>_onnx/config.pbtxt             platform onnxruntime_onnx, tensor names as in the ONNX graph
      <model>_onnx/1/model.onnx
      <model>_torchscript/config.pbtxt      platform pytorch_libtorch, tensor names <name>__<index>
      <model>_torchscript/1/model.pt
      <model>_onnx_python/config.pbtxt      backend python, the ONNX tensor names
      <model>_onnx_python/1/model.py        runs model.onnx with onnxruntime (pipeline/serving/triton_python_model.py)
      <model>_onnx_python/1/model.onnx
      <model>_onnx-int8/..., <model>_onnx-int8_python/...   the same for each format derived from the ONNX file

The model files are copies (never links, so the directory can be mounted into a container on its
own) of the artifacts the manifest lists, checked against their sha256. The repository is built in
a sibling temp directory and swapped in with renames, so Triton never sees half of one; an existing
DIR is replaced only if an earlier run of this command wrote it. Platforms and file names come from
pipeline/formats.py; model and tensor names, data types and the ModelConfig from pipeline/serving/naming.py.

No torch here: building a repository exports nothing.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from pipeline import formats
from pipeline.artifacts.fileio import atomic_write, atomic_write_bytes, sha256_file
from pipeline.artifacts.manifest import Manifest, ModelEntry
from pipeline.errors import UserError
from pipeline.serving.naming import (
    FLAVOURS,
    MAX_BATCH_SIZE,
    TRITON_PLATFORMS,
    VERSION,
    Flavour,
    flavours_of,
    model_config,
)

MARKER = "<!-- seed-pipeline triton repository: written by `python -m pipeline export --triton` -->"
README = "README.md"
PYTHON_MODEL = "model.py"  # the Python backend's default model file name
PYTHON_MODEL_SOURCE = Path(__file__).with_name("triton_python_model.py")  # copied, as it is, as model.py


class TritonError(UserError, RuntimeError):
    """A repository that cannot be written; the message says why and what to do."""


def config_pbtxt(config: dict[str, Any], comment: str = "") -> str:
    """`config` (from naming.model_config) in protobuf text format, as Triton reads config.pbtxt."""
    lines = [f"# {line}" for line in comment.splitlines()]
    lines.append(f'name: "{config["name"]}"')
    for key in ("platform", "backend", "default_model_filename"):
        if key in config:
            lines.append(f'{key}: "{config[key]}"')
    lines.append(f"max_batch_size: {config['max_batch_size']}")
    for key in ("input", "output"):
        items = []
        for t in config[key]:
            dims = ", ".join(str(d) for d in t["dims"])
            fields = f'    name: "{t["name"]}"\n    data_type: {t["data_type"]}\n    dims: [ {dims} ]'
            if "reshape" in t:  # a scalar per example
                fields += f"\n    reshape: {{ shape: [ {', '.join(str(d) for d in t['reshape']['shape'])} ] }}"
            items.append("  {\n" + fields + "\n  }")
        lines.append(f"{key} [\n" + ",\n".join(items) + "\n]")
    lines.append("dynamic_batching { }")
    for group in config.get("instance_group", []):
        lines.append(f"instance_group [ {{ count: {group['count']}, kind: {group['kind']} }} ]")
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
    """Copy `entry`'s `fmt` artifact to dest (atomically) and return its sha256, checked twice.

    Companion files (weights kept apart from a graph file) go beside it under dest's stem and their own suffix
    (model.xml -> model.bin), which is where the runtime reading dest looks for them.
    """
    artifact = entry.artifact(fmt)
    manifest.verified_path(artifact)
    pairs = [(artifact.path, artifact.sha256, dest)]
    pairs += [(f.path, f.sha256, dest.with_name(dest.stem + Path(f.path).suffix)) for f in artifact.files]
    for rel, digest, target in pairs:
        src = manifest.path_of(rel)
        atomic_write(target, lambda tmp, src=src: shutil.copyfile(src, tmp))
        if sha256_file(target) != digest:
            raise TritonError(f"{rel} changed while it was being copied; run the command again")
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
        "## Which flavour to serve",
        "",
        "Each model comes in a flavour per file and Triton backend. Load the ones your server has the",
        "backends for (`tritonserver --model-repository=<this directory> --model-control-mode=explicit",
        "--load-model=NAME`). NVIDIA's Triton container has the onnxruntime and PyTorch backends: serve the",
        "native flavours there. The `_python` flavours run the same files with `model.py` and onnxruntime",
        "on Triton's Python backend, batched the same way, with the same tensor names: for a server that",
        "has only that backend, such as the one in the `nvidia-pytriton` wheel that `make triton-serve`",
        "runs; its Python environment needs numpy and onnxruntime.",
        "",
        *(f"- `<model>_{f.suffix}`: {_flavour_text(f)}" for f in FLAVOURS),
        "",
        "| Triton model | platform | inputs | outputs | source artifact (sha256) |",
        "|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join((f"`{row[0]}`", *row[1:])) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _flavour_text(flavour: Flavour) -> str:
    fmt = formats.get(flavour.format)
    if flavour.backend is None:
        triton = TRITON_PLATFORMS[fmt.name]
        return f"the {fmt.label} file, {'backend' if triton.backend else 'platform'} `{triton.platform}`"
    return f"the {fmt.label} file, {flavour.backend} backend (model.py)"


def _describe(tensors: list[dict[str, Any]]) -> str:
    return ", ".join(f"`{t['name']}` {t['data_type'][5:]} {[-1, *t['dims']]}" for t in tensors)


def _write_model(
    manifest: Manifest, entry: ModelEntry, flavour: Flavour, stage: Path, max_batch_size: int
) -> tuple[str, str, str, str, str]:
    """One Triton model directory of `entry` in `stage`; returns its README row."""
    fmt = flavour.format
    config = model_config(entry, fmt, max_batch_size, flavour.backend)
    name, spec = config["name"], TRITON_PLATFORMS[fmt]
    digest = _copy_verified(manifest, entry, fmt, stage / name / VERSION / spec.filename)
    if flavour.backend is not None:
        code = PYTHON_MODEL_SOURCE.read_bytes()
        atomic_write_bytes(stage / name / VERSION / PYTHON_MODEL, code)
    source = f"{entry.artifact(fmt).path}, sha256 {digest[:12]}..."
    runner = f" run by the {flavour.backend} backend" if flavour.backend else ""
    comment = (
        f"{name}: {entry.name}'s {fmt} artifact{runner} ({source})\n"
        "Written by `python -m pipeline export --triton` from the manifest; do not edit."
    )
    atomic_write_bytes(stage / name / "config.pbtxt", config_pbtxt(config, comment).encode())
    return (
        name,
        config.get("platform") or f"{config['backend']} backend",
        _describe(config["input"]),
        _describe(config["output"]),
        f"{entry.artifact(fmt).path} ({digest[:12]}...)",
    )


def build_repository(
    manifest: Manifest,
    out: Path | str,
    models: list[str] | None = None,
    flavours: tuple[Flavour, ...] = FLAVOURS,
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
    rows = []
    try:
        stage.mkdir()
        for model in names:
            entry = manifest.model(model)
            rows += [_write_model(manifest, entry, f, stage, max_batch_size) for f in flavours_of(entry, flavours)]
        atomic_write_bytes(stage / README, _readme(manifest, rows).encode())
        _swap_in(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return [row[0] for row in rows]


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
