"""Parity: every exported artifact, on every runtime at hand, against the eager model.

Follows optimum's validator: compare per named output, check names and shapes before values, run
every check, then report all failures, each with its typed reason. The outputs compared are the ones
the artifact itself declares, by name and count, so a file that lost or gained an output fails.
Which (format, runtime, device) exist and how close each must be is declared in pipeline/formats.py;
the artifacts are loaded through pipeline.runtime.predictor, the same loader the demo serves with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pipeline import formats
from pipeline.artifacts.manifest import Artifact, Manifest
from pipeline.artifacts.tensors import Batch, examples_batch, pack, random_batch, ranges
from pipeline.errors import one_line
from pipeline.runtime.devices import DeviceError
from pipeline.runtime.predictor import NotServed, RuntimeUnavailable, load_predictor
from pipeline.runtime.targets import PLAN_DEVICES, Target, plan

DEFAULT_ATOL = formats.DEFAULT_ATOL
DEFAULT_RTOL = formats.DEFAULT_RTOL
RANDOM_BATCHES = (1, 2, 7)  # 7: an odd size no exporter traced with, which proves the dynamic batch axis
ODD_LENGTH = 37  # a varying axis's length no exporter traced with (random batches also run its shortest, 1)
RULE = (
    "a row passes when the artifact declares the output, its shape equals eager's, every value is finite, "
    "and every |got - eager| <= atol + rtol * |eager| + scale * max|eager| over that output of the batch "
    "(scale is 0 for float32 formats; max rel is shown, not tested)"
)

# Why a row failed, from the first check that did not hold.
MISSING, EXTRA, SHAPE, NON_FINITE, TOLERANCE, ERROR, UNAVAILABLE = (
    "missing output",
    "extra output",
    "shape",
    "non-finite",
    "tolerance",
    "error",
    "unavailable",
)


@dataclass(frozen=True)
class Comparison:
    """One output of one batch against the reference."""

    max_abs: float | None
    max_rel: float | None
    failure: str | None = None  # one of the reasons above, None when it holds
    reason: str | None = None  # the failure in one line, with the numbers

    @property
    def passed(self) -> bool:
        return self.failure is None


def compare(ref: np.ndarray | None, got: np.ndarray | None, atol: float, rtol: float, scale: float = 0.0) -> Comparison:
    """Compare one output with the reference's: presence, shape, finiteness, then the bound.

    The bound is |got - ref| <= atol + rtol*|ref| + scale*max|ref|: `scale` is a derived format's
    declared error relative to the size of the output (int8 rounding scales with the largest value).
    """
    if got is None:
        return Comparison(None, None, MISSING, "missing output: the artifact does not declare it")
    if ref is None:
        return Comparison(None, None, EXTRA, "extra output: the reference has no output of this name")
    ref64 = np.asarray(ref, dtype=np.float64)
    got64 = np.asarray(got, dtype=np.float64)
    if ref64.shape != got64.shape:
        return Comparison(None, None, SHAPE, f"shape {tuple(got64.shape)}, expected {tuple(ref64.shape)}")
    for side, values in (("artifact", got64), ("reference", ref64)):
        bad = ~np.isfinite(values)
        if bad.any():
            return Comparison(None, None, NON_FINITE, f"non-finite value {values[bad][0]} from the {side}")
    diff = np.abs(got64 - ref64)
    rel = diff / np.maximum(np.abs(ref64), np.finfo(np.float32).tiny)
    max_abs, max_rel = float(diff.max(initial=0.0)), float(rel.max(initial=0.0))
    peak = float(np.abs(ref64).max(initial=0.0))
    bound = atol + rtol * np.abs(ref64) + scale * peak
    over = diff - bound
    if diff.size and over.max() > 0:
        i = np.unravel_index(int(np.argmax(over)), diff.shape)
        if scale:
            rule = f"atol + rtol·|ref| + scale·max|ref| = {bound[i]:.2g} (atol {atol:g}, rtol {rtol:g}, "
            rule += f"scale {scale:g}, max|ref| {peak:.2g})"
        else:
            rule = f"atol + rtol·|ref| = {bound[i]:.2g} (atol {atol:g}, rtol {rtol:g})"
        return Comparison(max_abs, max_rel, TOLERANCE, f"|Δ| {diff[i]:.2g} > {rule}")
    return Comparison(max_abs, max_rel)


def merge(a: Comparison | None, b: Comparison) -> Comparison:
    """The worst figures of two batches' comparisons; the first failure's reason."""
    if a is None:
        return b
    worst = lambda x, y: None if x is None and y is None else max(v for v in (x, y) if v is not None)  # noqa: E731
    failure, reason = (a.failure, a.reason) if a.failure else (b.failure, b.reason)
    return Comparison(worst(a.max_abs, b.max_abs), worst(a.max_rel, b.max_rel), failure, reason)


def compare_outputs(
    want: Sequence[dict[str, np.ndarray]],
    got: Sequence[dict[str, np.ndarray]],
    atol: float,
    rtol: float,
    scale: float = 0.0,
) -> dict[str, Comparison]:
    """Per output name (the reference's, then any extra the artifact declares): the merged comparison."""
    results: dict[str, Comparison | None] = {}
    for ref_outs, got_outs in zip(want, got, strict=True):
        names = [*ref_outs, *(n for n in got_outs if n not in ref_outs)]
        for name in names:
            result = compare(ref_outs.get(name), got_outs.get(name), atol, rtol, scale)
            results[name] = merge(results.get(name), result)
    return {name: c for name, c in results.items() if c is not None}


@dataclass
class ParityRow:
    """One (model, artifact, runtime, device, output) comparison."""

    model: str
    format: str
    runtime: str
    device: str
    output: str
    max_abs: float | None
    max_rel: float | None
    passed: bool
    error: str | None = None  # why it failed, in one line
    failure: str | None = None  # the kind of failure (MISSING, EXTRA, SHAPE, NON_FINITE, TOLERANCE, ...)
    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL
    scale: float = 0.0  # the format's term relative to the output's largest |value| (see compare)
    # On the batch of the task's own data (manifest "task"): max |Δ| there, and for a classifier's scores the
    # share of examples whose top class is eager's, and the accuracy against the task's targets beside eager's.
    task_max_abs: float | None = None
    top1_agreement: float | None = None
    accuracy: float | None = None
    eager_accuracy: float | None = None


@dataclass
class ParityReport:
    """All comparisons of one verify run."""

    rows: list[ParityRow]
    atol: float | None = None  # an override of every format's own tolerance, or None
    rtol: float | None = None
    skipped: list[str] = field(default_factory=list)  # runtimes not at hand, with the reason

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(r.passed for r in self.rows)

    def failures(self) -> list[ParityRow]:
        return [r for r in self.rows if not r.passed]

    def for_model(self, model: str) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.rows if r.model == model]

    def as_dict(self) -> dict[str, Any]:
        return {
            "atol": self.atol,
            "rtol": self.rtol,
            "rule": RULE,
            "passed": self.passed,
            "skipped": self.skipped,
            "rows": [asdict(r) for r in self.rows],
        }

    def table(self) -> str:
        """The report as a fixed-width text table, the pass rule under it."""
        from pipeline.tables import text_table

        head = (
            "model",
            "format",
            "runtime",
            "device",
            "output",
            "max abs",
            "max rel",
            "atol",
            "rtol",
            "scale",
            "task data",
            "result",
        )
        rows = [
            (
                r.model,
                r.format,
                r.runtime,
                r.device,
                r.output,
                "-" if r.max_abs is None else f"{r.max_abs:.2e}",
                "-" if r.max_rel is None else f"{r.max_rel:.2e}",
                f"{r.atol:g}",
                f"{r.rtol:g}",
                f"{r.scale:g}",
                _task_text(r),
                "ok" if r.passed else f"FAIL{': ' + r.error if r.error else ''}",
            )
            for r in self.rows
        ]
        lines = [text_table(head, rows)]
        lines += [f"skipped: {s}" for s in self.skipped]
        lines.append(f"{len(self.rows) - len(self.failures())}/{len(self.rows)} comparisons pass; {RULE}")
        return "\n".join(lines)


def _task_text(r: ParityRow) -> str:
    """'|Δ| 1.2e-06, top-1 100.0%, accuracy 97.7% (eager 97.7%)' on the task batch, or '-'."""
    if r.task_max_abs is None:
        return "-"
    text = f"|Δ| {r.task_max_abs:.2g}"
    if r.top1_agreement is not None:
        text += f", top-1 {r.top1_agreement:.1%}, accuracy {r.accuracy:.1%} (eager {r.eager_accuracy:.1%})"
    return text


def parity_inputs(manifest: Manifest, model: str, seed: int = 0) -> list[Batch]:
    """The catalog examples as one batch, then random batches of sizes 1, 2 and 7 (ints in their declared range);
    where an axis varies, those at its shortest length and one more at ODD_LENGTH (the examples give a third)."""
    entry = manifest.model(model)
    rng = np.random.default_rng(seed)
    batches = [examples_batch(entry.inputs, entry.examples)]
    batches += [random_batch(entry.inputs, n, rng) for n in RANDOM_BATCHES]
    if any(ranges(t) for t in entry.inputs):
        batches.append(random_batch(entry.inputs, 3, rng, ODD_LENGTH))
    return batches


@dataclass(frozen=True)
class TaskData:
    """The batch of the task's own data export saved (manifest "task"), with its targets."""

    inputs: Batch
    targets: np.ndarray
    classifier: str | None  # the output of class scores, for a classifier
    source: str  # "test_data" or "data"


def task_data(manifest: Manifest, model: str) -> TaskData | None:
    """The model's task batch, sha256-checked and read without pickle; None where export saved none."""
    task = manifest.model(model).raw.get("task")
    if not task:
        return None
    path = manifest.verified_path(Artifact("task", task["path"], task["sha256"], 0))
    with np.load(path, allow_pickle=False) as saved:
        arrays = {k: saved[k] for k in saved.files}
    entry = manifest.model(model)
    inputs = pack(entry.inputs, {t["name"]: arrays[t["name"]] for t in entry.inputs})
    return TaskData(inputs, arrays["__targets__"], task.get("classifier"), str(task.get("from", "")))


def _task_figures(
    rows: list[ParityRow], task: TaskData, got: dict[str, np.ndarray], ref: dict[str, np.ndarray]
) -> None:
    """Fill each row's figures on the task batch: max |Δ|, and top-1 agreement and accuracy for the class scores."""
    for row in rows:
        if row.output in got and row.output in ref and np.shape(got[row.output]) == np.shape(ref[row.output]):
            diff = np.abs(np.asarray(got[row.output], np.float64) - np.asarray(ref[row.output], np.float64))
            row.task_max_abs = float(diff.max(initial=0.0))
            if row.output == task.classifier:
                top, eager_top = np.argmax(got[row.output], axis=-1), np.argmax(ref[row.output], axis=-1)
                row.top1_agreement = float(np.mean(top == eager_top))
                row.accuracy = float(np.mean(top == task.targets))
                row.eager_accuracy = float(np.mean(eager_top == task.targets))


def targets(device: str = formats.CPU, remote: Sequence[str] = ()) -> tuple[list[Target], list[str]]:
    """What verify checks for `device` (pipeline.runtime.targets.plan, the reference left out), and what it skips.

    cpu: the CPU rows. auto: also every CUDA row whose runtime can use a GPU here, the rest skipped.
    cuda or cuda:N: also every CUDA row; one that cannot run is a failed row, never a silent skip.
    Each URL in `remote` adds that Open Inference Protocol server's models of every Triton format.
    """
    try:
        chosen = plan(device, remote)
    except DeviceError:
        raise DeviceError(f"--device {device}: parity runs on cpu and cuda; expected {PLAN_DEVICES}") from None
    reference = Target(*formats.REFERENCE)
    return [t for t in chosen.targets if t != reference], chosen.skipped


def _reference_outputs(manifest: Manifest, model: str, batches: list[Batch]) -> list[dict[str, np.ndarray]]:
    fmt, runtime, device = formats.REFERENCE
    reference = load_predictor(manifest, model, fmt, runtime=runtime, device=device)
    return [reference.outputs(b) for b in batches]


def check_model(
    manifest: Manifest,
    model: str,
    chosen: Sequence[Target],
    atol: float | None = None,
    rtol: float | None = None,
) -> list[ParityRow]:
    """Compare each target of `model` with the reference (eager on the CPU); every target gets its rows.

    A format export withheld from `model` (not applicable, missed its rule, not in --formats; the reason
    in the manifest) has no rows. Each row's tolerance is the one export recorded for that format, unless
    `atol`/`rtol` say otherwise.
    """
    entry = manifest.model(model)
    chosen = [t for t in chosen if not entry.withheld(t.format)]
    batches = parity_inputs(manifest, model)
    try:
        task = task_data(manifest, model)
        if task is not None:  # last: its figures are read from the last batch's outputs
            batches.append(task.inputs)
        expected = _reference_outputs(manifest, model, batches)
    except Exception as exc:  # noqa: BLE001 - reported as a failed row, never swallowed
        fmt, runtime, device = formats.REFERENCE
        return [ParityRow(model, fmt, runtime, device, "*", None, None, False, one_line(exc), ERROR)]
    rows: list[ParityRow] = []
    not_served: dict[str, list[ParityRow]] = {}
    for target in chosen:
        kept_atol, kept_rtol, scale = entry.tolerance(target.format)  # what export used, unless told otherwise
        tol = (kept_atol if atol is None else atol, kept_rtol if rtol is None else rtol, scale)
        try:
            rows += _check_target(manifest, model, target, batches, expected, tol, task)
        except NotServed as exc:  # a server without that format's backend: a failure only if it serves none
            row = ParityRow(model, target.format, target.runtime, target.device, "*", None, None, False, one_line(exc))
            row.failure, (row.atol, row.rtol, row.scale) = UNAVAILABLE, tol
            not_served.setdefault(target.runtime, []).append(row)
    for url, missing in not_served.items():
        if not any(r.runtime == url for r in rows):
            rows += missing
    return rows


def _check_target(
    manifest: Manifest,
    model: str,
    target: Target,
    batches: list[Batch],
    expected: list[dict[str, np.ndarray]],
    tol: tuple[float, float, float],
    task: TaskData | None = None,
) -> list[ParityRow]:
    def failed(why: str, kind: str, device: str = target.device, output: str = "*") -> ParityRow:
        return ParityRow(model, target.format, target.runtime, device, output, None, None, False, why, kind, *tol)

    if target.unavailable:
        return [failed(target.unavailable, UNAVAILABLE)]
    try:
        predictor = load_predictor(manifest, model, target.format, runtime=target.runtime, device=target.device)
    except NotServed:
        raise  # check_model decides, from what else the server serves
    except RuntimeUnavailable as exc:  # asked for (targets() skips what auto cannot run): a failure
        return [failed(one_line(exc), UNAVAILABLE)]
    except Exception as exc:  # noqa: BLE001
        return [failed(one_line(exc), ERROR)]
    try:
        got = [predictor.outputs(b) for b in batches]
    except Exception as exc:  # noqa: BLE001
        return [failed(one_line(exc), ERROR, predictor.device, name) for name in expected[0]]
    rows = []
    # A derived format's rule was set on the examples and random batches; on the task batch its |Δ|, top-1
    # agreement and accuracy are measured and reported beside float32's, not held to that rule (at export the
    # seeds' int8 and float16 files were 1.3-1.5x their scale term there). Float32 formats are held to it.
    ruled = len(batches) - 1 if task is not None and formats.get(target.format).source else len(batches)
    for name, c in compare_outputs(expected[:ruled], got[:ruled], *tol).items():
        row = ParityRow(model, target.format, target.runtime, predictor.device, name, c.max_abs, c.max_rel, c.passed)
        row.error, row.failure, row.atol, row.rtol, row.scale = c.reason, c.failure, *tol
        rows.append(row)
    if task is not None:
        _task_figures(rows, task, got[-1], expected[-1])
    return rows


def verify(
    manifest: Manifest,
    models: list[str],
    device: str = formats.CPU,
    atol: float | None = None,
    rtol: float | None = None,
    remote: Sequence[str] = (),
) -> ParityReport:
    """Run every parity check for `models` and return the full report (it does not stop at the first).

    `atol`/`rtol` override every format's declared atol and rtol; None keeps each format's own. A
    format's `scale` term is always its declared one.
    """
    chosen, skipped = targets(device, remote)
    rows: list[ParityRow] = []
    for model in models:
        rows += check_model(manifest, model, chosen, atol, rtol)
    return ParityReport(rows, atol, rtol, skipped)
