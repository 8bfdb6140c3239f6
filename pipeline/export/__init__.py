"""The export stage: state_dict -> TorchScript, ONNX and torch.export (.pt2), verified, then indexed.

Each run writes every model's files into a fresh revision folder DIR/<model>/export-<id>/ (a copy of
the training outputs plus the three exports), checks parity through the shared runtime loader, and
only then replaces DIR/manifest.json atomically. Until that rename, the previous manifest and every
file it lists are untouched; revision folders no manifest lists are removed afterwards. A SIGKILL
at any moment therefore leaves a manifest whose files all exist and match their sha256.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import multiprocessing
import os
import platform
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline import catalog, formats, train
from pipeline.artifacts.fileio import (
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    remove_stale_temps,
    sha256_file,
)
from pipeline.artifacts.manifest import MANIFEST, PARITY, SCHEMA, Manifest, ManifestError
from pipeline.artifacts.weights import WeightsError, load_state_dict
from pipeline.errors import UserError, one_line
from pipeline.export.quantize import NotApplicable
from pipeline.export.quantize import summary as quantize_summary
from pipeline.runtime import parity
from pipeline.runtime.loaders import quiet_torchscript
from pipeline.spec import Dim, ModelSpec
from pipeline.train.summary import layer_table

DEFAULT_OPSET = 18
PRODUCER = "seed-pipeline"
REVISION_PREFIX = "export-"
EXAMPLE_BATCH = 3  # the exporters trace with batch 3, so batch 1 and 7 in parity prove the dynamic axis


class ExportError(UserError, RuntimeError):
    """A model that cannot be exported; the message names the model and what to do."""


@dataclass
class ExportContext:
    """What every exporter gets: the spec, the module to trace, an example batch and the metadata."""

    spec: ModelSpec
    module: nn.Module
    example: tuple[torch.Tensor, ...]  # one tensor per input, in input order
    metadata: dict[str, Any]
    opset: int
    written: dict[str, Path] = field(default_factory=dict)  # format -> its file, as written this revision


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


def _trained_files(spec: ModelSpec, artifacts: Path) -> tuple[Path, dict[str, Any]]:
    model_dir = artifacts / spec.name
    state, history_path = model_dir / train.STATE_DICT, model_dir / train.HISTORY
    hint = f"run `python -m pipeline train --models {spec.name} --artifacts {artifacts}` first"
    if not state.is_file() or not history_path.is_file():
        raise ExportError(f"{spec.name} has not been trained (no {state}); {hint}")
    try:
        history = json.loads(history_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise ExportError(f"{spec.name}: {history_path} is unreadable; {hint}") from None
    if history.get("state_dict_sha256") != sha256_file(state):
        raise ExportError(f"{spec.name}: {state} does not match its history (training was interrupted?); {hint}")
    return model_dir, history


def _metadata(spec: ModelSpec, state_sha: str) -> dict[str, Any]:
    return {
        "model": spec.name,
        "description": spec.description,
        "seed_source": spec.seed,
        "input_names": [t.name for t in spec.inputs],
        "input_features": {t.name: list(t.features) for t in spec.inputs},
        "inputs": [t.as_dict() for t in spec.inputs],
        "output_names": [t.name for t in spec.outputs],
        "output_features": {t.name: list(t.features) for t in spec.outputs},
        "outputs": [t.as_dict() for t in spec.outputs],
        "examples": _examples(spec),
        "state_dict_sha256": state_sha,
        "producer": f"{PRODUCER} {producer_version()}",
    }


def _examples(spec: ModelSpec) -> list[Any]:
    """The examples as JSON: a flat row each for a model with one 1-D input, else input name -> nested values."""
    rows = [spec.example_values(e) for e in spec.examples]
    if len(spec.inputs) == 1 and len(spec.inputs[0].shape) == 1:
        return [[float(v) for v in r[spec.inputs[0].name]] for r in rows]
    tensors = spec.example_inputs()
    return [{t.name: tensors[k][i].tolist() for k, t in enumerate(spec.inputs)} for i in range(len(rows))]


# Rows of the task's data parity runs every format on. At 256 rows two_layer_raw's float32 ONNX file missed the
# float32 rule on its own training data (|Δ| 4.3e-05 > 3e-05: 1000-term sums whose result is near 0), which the
# rule, not the file, is too tight for; a larger batch waits on a rule that scales with the terms summed.
TASK_ROWS = 64
TASK_FILE = "task.npz"


def _write_task_data(spec: ModelSpec, rev_dir: Path, artifacts: Path) -> dict[str, Any] | None:
    """Save TASK_ROWS rows of the spec's test_data (else data), inputs and targets, for parity; None without data.

    Saved with the revision (NumPy arrays, read back without pickle) so `verify` checks the values the model
    was trained for without running the catalog. A classifier (`classes` on its first output, or a
    cross_entropy recipe) also gets top-1 agreement and accuracy per format."""
    import numpy as np

    which = "test_data" if spec.test_data is not None else "data" if spec.data is not None else None
    if which is None:
        return None
    generator = torch.manual_seed(0)  # the draw `train` makes: data first, then the held-out data
    drawn = spec.data(generator) if spec.data is not None else None
    x, y = spec.test_data(generator) if spec.test_data is not None else drawn
    xs = train.as_inputs(x)
    arrays = {t.name: v[:TASK_ROWS].detach().cpu().numpy() for t, v in zip(spec.inputs, xs, strict=True)}
    arrays["__targets__"] = y[:TASK_ROWS].detach().cpu().numpy()
    path = rev_dir / TASK_FILE

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    atomic_write(path, save)
    classifier = bool(spec.outputs[0].classes) or any(r.loss == "cross_entropy" for r in spec.recipes.values())
    return {
        "path": path.relative_to(artifacts).as_posix(),
        "sha256": sha256_file(path),
        "rows": int(len(arrays["__targets__"])),
        "from": which,
        "classifier": spec.outputs[0].name if classifier else None,
    }


def _artifact(fmt: str, path: Path, artifacts: Path, companions: tuple[str, ...] = ()) -> dict[str, Any]:
    """The manifest's record of one artifact; `bytes` counts its companion files (e.g. an IR's weights) too."""
    out = {
        "format": fmt,
        "path": path.relative_to(artifacts).as_posix(),
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
    }
    if companions:
        files = [path.with_name(name) for name in companions]
        out["files"] = [
            {"path": f.relative_to(artifacts).as_posix(), "sha256": sha256_file(f), "bytes": f.stat().st_size}
            for f in files
        ]
        out["bytes"] += sum(f["bytes"] for f in out["files"])
    return out


def skipped_formats() -> dict[str, str]:
    """Exported formats whose optional package is not installed -> "skipped: install .[extra]"."""
    out = {}
    for name in formats.EXPORTED:
        why = formats.get(name).missing()
        if why:
            out[name] = why
    return out


def export_model(
    spec: ModelSpec,
    artifacts: Path,
    revision: str,
    opset: int,
    skipped: dict[str, str] | None = None,
    chosen: Sequence[str] = formats.EXPORTED,
) -> dict[str, Any]:
    """Write one model's revision folder with the `chosen` formats and return its manifest entry (without parity).

    `skipped`: formats not to write (their package is missing), with the line that says so.
    """
    skipped = {} if skipped is None else skipped
    model_dir, history = _trained_files(spec, artifacts)
    rev_dir = model_dir / f"{REVISION_PREFIX}{revision}"
    rev_dir.mkdir(parents=True, exist_ok=False)
    copied = {}
    for src in sorted(model_dir.iterdir()):  # the training outputs, frozen beside the exports
        if src.is_file() and not src.name.startswith("."):
            copied[src.name] = rev_dir / src.name
            atomic_write(rev_dir / src.name, lambda tmp, src=src: shutil.copyfile(src, tmp))
    state_path = rev_dir / train.STATE_DICT
    state_sha = sha256_file(state_path)
    if state_sha != history["state_dict_sha256"]:
        raise ExportError(f"{spec.name}: the state_dict changed while it was being copied; run export again")
    ctx = ExportContext(
        spec=spec,
        module=spec.export_form(_trained_module(spec, state_path)).eval(),
        example=spec.example_inputs([spec.examples[i % len(spec.examples)] for i in range(EXAMPLE_BATCH)]),
        metadata=_metadata(spec, state_sha),
        opset=opset,
    )
    task = _write_task_data(spec, rev_dir, artifacts)
    files, not_applicable = _write_formats(ctx, rev_dir, artifacts, skipped, chosen)
    files.insert(0, _artifact(formats.STATE_DICT, state_path, artifacts))
    rel = lambda name: copied[name].relative_to(artifacts).as_posix() if name in copied else None  # noqa: E731
    return {
        "description": spec.description,
        "seed": spec.seed,
        "inputs": [t.as_dict() for t in spec.inputs],
        "outputs": [t.as_dict() for t in spec.outputs],
        "examples": _examples(spec),
        "catalog": catalog.source(spec.name),  # where the spec came from: information, never loaded from
        "artifacts": files,
        "not_applicable": not_applicable,
        "task": task,  # a batch of the task's own data (test_data, else data) that parity checks every format on
        "failed": {},  # derived formats that missed their parity rule: format -> the row's reason (run_export)
        "formats": list(chosen),
        "history": rel(train.HISTORY),
        "plot": rel(train.LOSS_PLOT),
        "extra": [rel(n) for n in sorted(copied) if n not in {train.STATE_DICT, train.HISTORY, train.LOSS_PLOT}],
        **_from_history(history),
        "summary": layer_table(spec),
        "truth": spec.truth,  # an expression of the input names; the demo evaluates it with NumPy
        "activation": spec.activation,
        "seed_figures": spec.seed_figures,
        "revision": revision,
    }


def _trained_module(spec: ModelSpec, state_path: Path) -> torch.nn.Module:
    """`spec`'s module with the trained weights of `state_path`, in eval mode."""
    module = spec.build()
    try:  # weights_only: a hostile file's pickle never runs; a damaged one is this model's error, not a crash
        load_state_dict(module, state_path)
    except Exception as exc:
        # A WeightsError already names the file and what it refused; anything else gets the file named here.
        why = (
            str(exc)
            if isinstance(exc, WeightsError)
            else f"{state_path} is not a loadable state_dict ({one_line(exc)})"
        )
        raise ExportError(f"{spec.name}: {why}; train it again") from exc
    return module.eval()


def _write_formats(
    ctx: ExportContext,
    rev_dir: Path,
    artifacts: Path,
    skipped: dict[str, str],
    chosen: Sequence[str] = formats.EXPORTED,
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Each exported format's file, by its exporter, in FORMATS order: (the artifacts written, and the formats
    written for no file with why: derived ones that would gain nothing for this model, and `skipped` ones,
    whose package is not installed)."""
    files, not_applicable = [], {k: v for k, v in skipped.items() if k in chosen}
    for name in chosen:
        fmt = formats.get(name)
        if name in skipped:
            continue
        path = rev_dir / fmt.filename
        try:
            formats.resolve(fmt.exporter)(ctx, path)
        except NotApplicable as exc:
            not_applicable[name] = str(exc)
            continue
        except Exception as exc:
            raise ExportError(f"{ctx.spec.name}: {name} export failed: {type(exc).__name__}: {exc}") from exc
        ctx.written[name] = path
        files.append(_artifact(name, path, artifacts, fmt.companions))
    return files, not_applicable


def _from_history(history: dict[str, Any]) -> dict[str, Any]:
    """What the manifest entry repeats of the training history: recipe, accuracy, device, final loss, report."""
    return {
        "recipe": history.get("recipe"),
        "variant": history.get("variant"),
        "imported": history.get("imported"),
        "accuracy": history.get("accuracy"),
        "trained_on": history.get("device"),
        "final_loss": history["loss"][-1] if history.get("loss") else None,
        "report": history.get("report", {}),
    }


def versions() -> dict[str, str]:
    """Versions of what made and checks the artifacts."""
    import numpy
    import onnx
    import onnxruntime

    out = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__,
        PRODUCER: producer_version(),
    }
    # onnxscript, and each optional format's package that is installed (by its extra's name)
    for package in ("onnxscript", *(f.extra for f in formats.FORMATS.values() if f.extra)):
        try:
            out[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            pass
    return out


def _previous_models(artifacts: Path) -> dict[str, Any]:
    try:
        return dict(Manifest.load(artifacts).raw["models"])
    except ManifestError:
        return {}


def collect_garbage(artifacts: Path, manifest: dict[str, Any]) -> None:
    """Remove revision folders the manifest does not list, and temp files killed writers left."""
    listed = {Path(a["path"]).parts[:2] for m in manifest["models"].values() for a in m["artifacts"]}
    for rev in artifacts.glob(f"*/{REVISION_PREFIX}*"):
        if rev.is_dir() and rev.relative_to(artifacts).parts[:2] not in listed:
            shutil.rmtree(rev, ignore_errors=True)
    remove_stale_temps(artifacts)


def choose_formats(names: str | Sequence[str] | None) -> tuple[str, ...]:
    """The exported formats a `--formats` list names, in export order; an ExportError for one that cannot be made."""
    if names is None:
        return formats.EXPORTED
    wanted = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
    wanted = [n for n in wanted if n]
    for name in wanted:
        if name not in formats.EXPORTED:
            raise ExportError(f"--formats {name}: unknown format; expected some of: {', '.join(formats.EXPORTED)}")
        source = formats.get(name).source
        if source and source not in wanted:
            raise ExportError(f"--formats {name}: made from {source}, which the list leaves out; expected {source} too")
    if not wanted:
        raise ExportError(f"--formats: no format named; expected some of: {', '.join(formats.EXPORTED)}")
    return tuple(n for n in formats.EXPORTED if n in wanted)


def _tolerances(chosen: Sequence[str], atol: float | None, rtol: float | None) -> dict[str, dict[str, float]]:
    """Each exported format's parity rule as this export applies it: what verify and the demo use afterwards."""
    out = {}
    for name in chosen:
        f = formats.get(name)
        out[name] = {"atol": f.atol if atol is None else atol, "rtol": f.rtol if rtol is None else rtol}
        out[name]["scale"] = f.scale
    return out


def _publish(entry: dict[str, Any], rows: list[dict[str, Any]]) -> tuple[bool, list[str]]:
    """Whether the model publishes (every float32 format's rows pass), and a warning per derived format withheld:
    its file leaves the entry and `failed` records the first failing row's reason."""
    failing = {r["format"]: r for r in reversed(rows) if not r["passed"]}
    if not rows or any(not formats.get(f).source for f in failing):
        return False, []
    warnings = []
    for fmt, row in failing.items():
        reason = row.get("error") or "failed"
        entry["failed"][fmt] = reason
        entry["artifacts"] = [a for a in entry["artifacts"] if a["format"] != fmt]
        entry["tolerance"].pop(fmt, None)
        warnings.append(f"{fmt} missed its parity rule ({reason}); not published; the float32 formats are")
    return True, warnings


def run_export(
    specs: list[ModelSpec],
    artifacts: Path,
    opset: int = DEFAULT_OPSET,
    device: str = "cpu",
    atol: float | None = None,
    rtol: float | None = None,
    log: Callable[[str], None] = print,
    chosen: Sequence[str] | None = None,
    warn: Callable[[str], None] | None = None,
) -> tuple[parity.ParityReport, list[str]]:
    """Export, verify and publish `specs`; returns the parity report and the per-model errors.

    Parity runs on the CPU and, for `device` auto or cuda[:N], on the GPU too (see pipeline.runtime.targets.plan).
    `atol`/`rtol` override every format's declared tolerance; the manifest records, per model and format,
    the tolerance used. `chosen` names the formats to make (default: all). Models whose float32 formats
    fail to export or to match keep their previous manifest entry, if any; a derived format that misses
    its rule is withheld alone, with one `warn` line (default: `log`).
    """
    if opset < 18:
        raise ExportError(f"--opset {opset}: the torch.export-based ONNX exporter needs opset 18 or newer")
    chosen = choose_formats(chosen)
    warn = warn or log
    artifacts = Path(artifacts)
    revision = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
    entries, errors = _export_each(specs, artifacts, revision, opset, log, chosen, atol, rtol)
    staged = Manifest.from_dict(artifacts, {"models": entries})
    report = parity.verify(staged, list(entries), device, atol, rtol)
    models = _previous_models(artifacts)
    for name, entry in entries.items():
        rows = report.for_model(name)
        published, withheld = _publish(entry, rows)
        entry["parity"] = {"passed": published, "rule": parity.RULE, "rows": rows}
        if published:
            models[name] = entry
            for line in withheld:
                warn(f"{name}: {line}")
        else:
            errors.append(f"{name}: parity failed; its previous artifacts (if any) stay published")
    manifest = _manifest(models, atol, rtol)
    if entries and formats.DERIVED:
        log(quantize_summary(entries))
    atomic_write_json(artifacts / PARITY, {**report.as_dict(), "created": manifest["created"]})
    atomic_write_json(artifacts / MANIFEST, manifest)  # the commit point
    collect_garbage(artifacts, manifest)
    return report, errors


def _export_each(
    specs: list[ModelSpec],
    artifacts: Path,
    revision: str,
    opset: int,
    log: Callable[[str], None],
    chosen: tuple[str, ...] = formats.EXPORTED,
    atol: float | None = None,
    rtol: float | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Each model's revision folder and manifest entry (export_model): (entries, one error line per model that
    failed, which the caller prints on stderr once)."""
    entries: dict[str, Any] = {}
    errors: list[str] = []
    skipped = skipped_formats()
    for name, why in skipped.items():  # one line per format, not per model
        log(f"{name}: {why}")
    results = export_each(specs, artifacts, revision, opset, skipped, chosen)
    for spec, (exported, seconds) in zip(specs, results, strict=True):
        if isinstance(exported, ExportError):
            errors.append(str(exported))
            continue
        entries[spec.name] = exported
        done = [a["format"] for a in exported["artifacts"] if a["format"] in formats.EXPORTED]
        exported["tolerance"] = _tolerances(done, atol, rtol)
        log(f"{spec.name}: exported {', '.join(done)} in {seconds:.1f} s")
        for name, why in entries[spec.name]["not_applicable"].items():
            if name not in skipped:
                log(f"{spec.name}: {name} not applicable: {why}")
    return entries, errors


def _manifest(models: dict[str, Any], atol: float | None, rtol: float | None) -> dict[str, Any]:
    """The manifest to publish: `models` in catalog order (then any others), what made them, the tolerances."""
    order = [s for s in _catalog_order() if s in models] + [m for m in models if m not in _catalog_order()]
    return {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "producer": f"{PRODUCER} {producer_version()}",
        "versions": versions(),
        "platform": {"machine": platform.machine(), "system": platform.system(), "python": sys.version.split()[0]},
        "tolerance": {f: asdict(parity.tolerance(f, atol, rtol)) for f in formats.FORMATS},
        "models": {name: models[name] for name in order},
    }


def export_workers(count: int) -> int:
    """Processes to export `count` models in: one per model up to the CPUs (PIPELINE_EXPORT_WORKERS overrides)."""
    given = os.environ.get("PIPELINE_EXPORT_WORKERS", "")
    cpus = os.cpu_count() or 1
    # Each process imports torch (a few CPU seconds): with fewer than 4 CPUs that outweighs the overlap.
    workers = int(given) if given.isdigit() and int(given) > 0 else (cpus if cpus >= 4 else 1)
    return max(1, min(count, workers))


def _export_named(
    catalogs: list[str],
    name: str,
    artifacts: str,
    revision: str,
    opset: int,
    skipped: dict[str, str],
    chosen: tuple[str, ...],
) -> tuple[Any, float]:
    """In a worker process: the catalog as the parent has it, then one model's export (or its ExportError)."""
    catalog.use(catalogs)
    return _export_here(catalog.get(name), Path(artifacts), revision, opset, skipped, chosen)


def export_each(
    specs: list[ModelSpec],
    artifacts: Path,
    revision: str,
    opset: int,
    skipped: dict[str, str] | None = None,
    chosen: Sequence[str] = formats.EXPORTED,
) -> list[tuple[Any, float]]:
    """(manifest entry or ExportError, seconds) per spec, in order. The models are independent, so each is
    exported in its own process (spawned: torch is not safe to fork) when there are CPUs for it; in this
    process when there is one CPU, one model, or a spec the catalog does not hold under its name."""
    workers = export_workers(len(specs))
    if workers == 1 or any(catalog.CATALOG.get(spec.name) is not spec for spec in specs):
        return [_export_here(spec, artifacts, revision, opset, skipped, chosen) for spec in specs]
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        args = (catalog.given(), str(artifacts), revision, opset)
        futures = [
            pool.submit(_export_named, args[0], spec.name, *args[1:], skipped or {}, tuple(chosen)) for spec in specs
        ]
        return [future.result() for future in futures]


def _export_here(
    spec: ModelSpec,
    artifacts: Path,
    revision: str,
    opset: int,
    skipped: dict[str, str] | None = None,
    chosen: Sequence[str] = formats.EXPORTED,
) -> tuple[Any, float]:
    start = time.perf_counter()
    try:
        return export_model(spec, artifacts, revision, opset, skipped, chosen), time.perf_counter() - start
    except ExportError as exc:
        return exc, time.perf_counter() - start


def _catalog_order() -> list[str]:
    return list(catalog.CATALOG)
