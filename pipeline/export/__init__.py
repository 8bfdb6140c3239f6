"""The export stage: state_dict -> every format pipeline/formats.py declares, verified, then indexed.

Each run writes every model's files into a fresh revision folder DIR/<model>/export-<id>/ (a copy of
the training outputs plus each format's file, written by the exporter its declaration names: the ones
torch writes itself in torch_formats.py, the others in the modules beside it; the metadata and the
task's data in metadata.py), checks parity through the shared runtime loader, and
only then replaces DIR/manifest.json atomically. Until that rename, the previous manifest and every
file it lists are untouched; revision folders no manifest lists are removed afterwards. A SIGKILL
at any moment therefore leaves a manifest whose files all exist and match their sha256.
"""

from __future__ import annotations

import concurrent.futures
import json
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

from pipeline import catalog, formats, train
from pipeline.artifacts.fileio import (
    atomic_write,
    atomic_write_json,
    remove_stale_temps,
    sha256_file,
)
from pipeline.artifacts.manifest import MANIFEST, PARITY, SCHEMA, Manifest, ManifestError
from pipeline.artifacts.weights import WeightsError, load_state_dict
from pipeline.errors import UserError, one_line
from pipeline.export.metadata import artifact_metadata, examples_json, write_task_data
from pipeline.export.quantize import NotApplicable
from pipeline.export.quantize import summary as quantize_summary
from pipeline.export.torch_formats import (
    DEFAULT_OPSET,
    EXAMPLE_BATCH,
    PRODUCER,
    ExportContext,
    producer_version,
)
from pipeline.runtime import parity
from pipeline.spec import ModelSpec
from pipeline.train.summary import layer_table

REVISION_PREFIX = "export-"


class ExportError(UserError, RuntimeError):
    """A model that cannot be exported; the message names the model and what to do."""


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


@dataclass(frozen=True)
class Revision:
    """One export run's settings, the same for every model it exports (and picklable, for the worker processes)."""

    artifacts: Path
    revision: str  # the revision folder's id: DIR/<model>/export-<revision>/
    opset: int = DEFAULT_OPSET
    skipped: dict[str, str] = field(default_factory=dict)  # formats not to write (package missing) -> the line why
    chosen: tuple[str, ...] = formats.EXPORTED  # the formats to make


def export_model(spec: ModelSpec, run: Revision) -> dict[str, Any]:
    """Write one model's revision folder with the run's chosen formats; its manifest entry (without parity)."""
    artifacts, revision = run.artifacts, run.revision
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
        metadata=artifact_metadata(spec, state_sha),
        opset=run.opset,
    )
    task = write_task_data(spec, rev_dir, artifacts)
    files, not_applicable = _write_formats(ctx, rev_dir, artifacts, run.skipped, run.chosen)
    files.insert(0, _artifact(formats.STATE_DICT, state_path, artifacts))
    rel = lambda name: copied[name].relative_to(artifacts).as_posix() if name in copied else None  # noqa: E731
    return {
        "description": spec.description,
        "seed": spec.seed,
        "inputs": [t.as_dict() for t in spec.inputs],
        "outputs": [t.as_dict() for t in spec.outputs],
        "examples": examples_json(spec),
        "catalog": catalog.source(spec.name),  # where the spec came from: information, never loaded from
        "artifacts": files,
        "not_applicable": not_applicable,
        "task": task,  # a batch of the task's own data (test_data, else data) that parity checks every format on
        "failed": {},  # derived formats that missed their parity rule: format -> the row's reason (run_export)
        "calibrated": sorted(ctx.calibrated),  # formats calibrated on the task's data: parity rules them there
        "formats": list(run.chosen),
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
    entries, errors = _export_each(
        specs, Revision(artifacts, revision, opset, skipped_formats(), chosen), log, atol, rtol
    )
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
    run: Revision,
    log: Callable[[str], None],
    atol: float | None = None,
    rtol: float | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Each model's revision folder and manifest entry (export_model): (entries, one error line per model that
    failed, which the caller prints on stderr once)."""
    entries: dict[str, Any] = {}
    errors: list[str] = []
    for name, why in run.skipped.items():  # one line per format, not per model
        log(f"{name}: {why}")
    results = export_each(specs, run)
    for spec, (exported, seconds) in zip(specs, results, strict=True):
        if isinstance(exported, ExportError):
            errors.append(str(exported))
            continue
        entries[spec.name] = exported
        done = [a["format"] for a in exported["artifacts"] if a["format"] in formats.EXPORTED]
        exported["tolerance"] = _tolerances(done, atol, rtol)
        log(f"{spec.name}: exported {', '.join(done)} in {seconds:.1f} s")
        for name, why in entries[spec.name]["not_applicable"].items():
            if name not in run.skipped:
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


def _export_named(catalogs: list[str], name: str, run: Revision) -> tuple[Any, float]:
    """In a worker process: the catalog as the parent has it, then one model's export (or its ExportError)."""
    catalog.use(catalogs)
    return _export_here(catalog.get(name), run)


def export_each(specs: list[ModelSpec], run: Revision) -> list[tuple[Any, float]]:
    """(manifest entry or ExportError, seconds) per spec, in order. The models are independent, so each is
    exported in its own process (spawned: torch is not safe to fork) when there are CPUs for it; in this
    process when there is one CPU, one model, or a spec the catalog does not hold under its name."""
    workers = export_workers(len(specs))
    if workers == 1 or any(catalog.CATALOG.get(spec.name) is not spec for spec in specs):
        return [_export_here(spec, run) for spec in specs]
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        given = catalog.given()
        futures = [pool.submit(_export_named, given, spec.name, run) for spec in specs]
        return [future.result() for future in futures]


def _export_here(spec: ModelSpec, run: Revision) -> tuple[Any, float]:
    """One model's manifest entry (or its ExportError) and the seconds it took."""
    start = time.perf_counter()
    try:
        return export_model(spec, run), time.perf_counter() - start
    except ExportError as exc:
        return exc, time.perf_counter() - start


def _catalog_order() -> list[str]:
    return list(catalog.CATALOG)
