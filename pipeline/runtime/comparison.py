"""Comparing one output with the eager reference's: presence, shape and finiteness first, then the
format's tolerance bound, with the error statistics (mean, p99 and max |Δ|, the smallest passing atol,
where the worst value is and the input that produced it) that every parity row, the page and the
Open Inference Protocol's compare answer report. Pure numpy: pipeline.runtime.parity runs the artifacts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pipeline import formats
from pipeline.artifacts.tensors import Batch

Tolerance = formats.Tolerance
INPUT_VALUES = 6  # how many of the worst element's input values a row quotes

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
class Worst:
    """Where the largest |Δ| of an output is, and what produced it."""

    batch: int  # which parity batch (0: the catalog examples, then the random ones)
    row: int  # the example within that batch
    index: int  # the value within that example's output (flat, row-major)
    eager: float
    got: float
    input: str  # the example's input values, abbreviated


@dataclass(frozen=True)
class ErrorStats:
    """|got - eager| over every value of one output of every batch compared."""

    max_abs: float
    mean_abs: float
    p99_abs: float
    max_rel: float
    min_atol: float  # the smallest atol with which it passes, at the format's rtol and scale
    values: int  # how many values were compared
    worst: Worst | None

    def brief(self) -> str:
        """'7.3e-5/2.7e-4 @b3[6][2] · 0': mean and p99 |Δ|, where the max is (batch, row, value), min atol."""
        where = f" @b{self.worst.batch}[{self.worst.row}][{self.worst.index}]" if self.worst else ""
        return f"{_e(self.mean_abs)}/{_e(self.p99_abs)}{where} · {_e(self.min_atol)}"


@dataclass(frozen=True)
class Comparison:
    """One output of one or more batches against the reference."""

    max_abs: float | None
    max_rel: float | None
    failure: str | None = None  # one of the reasons above, None when it holds
    reason: str | None = None  # the failure in one line, with the numbers
    stats: ErrorStats | None = field(default=None, compare=False)

    @property
    def passed(self) -> bool:
        return self.failure is None


def _checked(ref: np.ndarray | None, got: np.ndarray | None) -> tuple[np.ndarray, np.ndarray] | Comparison:
    """Both sides in float64, or the Comparison saying which presence, shape or finiteness check failed."""
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
    return ref64, got64


def _beyond(ref64: np.ndarray, got64: np.ndarray, tol: Tolerance) -> str | None:
    """The tolerance failure's one line, naming the element furthest past its bound, or None when it holds."""
    diff = np.abs(got64 - ref64)
    bound = tol.bound(ref64)
    over = diff - bound
    if not diff.size or over.max() <= 0:
        return None
    i = np.unravel_index(int(np.argmax(over)), diff.shape)
    if tol.scale:
        peak = float(np.abs(ref64).max())
        rule = f"atol + rtol·|ref| + scale·max|ref| = {bound[i]:.2g} (atol {tol.atol:g}, rtol {tol.rtol:g}, "
        rule += f"scale {tol.scale:g}, max|ref| {peak:.2g})"
    else:
        rule = f"atol + rtol·|ref| = {bound[i]:.2g} (atol {tol.atol:g}, rtol {tol.rtol:g})"
    return f"|Δ| {diff[i]:.2g} > {rule}"


def input_text(batch: Batch | None, row: int) -> str:
    """One example of a batch as a short line: 'x=[0.1, -2, …] (1000 values)'."""
    if batch is None:
        return ""
    arrays = batch if isinstance(batch, dict) else {"": batch}
    parts = []
    for name, arr in arrays.items():
        flat = np.asarray(arr)[row].reshape(-1)
        shown = ", ".join(f"{v:.4g}" for v in flat[:INPUT_VALUES].tolist())
        more = f", … ({flat.size} values)" if flat.size > INPUT_VALUES else ""
        parts.append(f"{name + '=' if name else ''}[{shown}{more}]")
    return " ".join(parts)


def error_stats(
    pairs: Sequence[tuple[int, np.ndarray, np.ndarray]], tol: Tolerance, batches: Sequence[Batch] | None = None
) -> ErrorStats:
    """Statistics of |got - ref| over (batch index, ref, got) pairs of one output (at least one pair), in float64."""
    diffs = [np.abs(got - ref) for _, ref, got in pairs]
    flat = np.concatenate([d.ravel() for d in diffs])
    if not flat.size:  # outputs with no values: nothing moved
        return ErrorStats(0.0, 0.0, 0.0, 0.0, 0.0, 0, None)
    tiny = np.finfo(np.float32).tiny  # a zero reference is divided by float32's smallest normal, not by zero
    rel = np.concatenate([(np.abs(got - ref) / np.maximum(np.abs(ref), tiny)).ravel() for _, ref, got in pairs])
    k = int(np.argmax([d.max(initial=0.0) for d in diffs]))
    b, ref, got = pairs[k]
    at = np.unravel_index(int(np.argmax(diffs[k])), diffs[k].shape)
    index = int(np.ravel_multi_index(at[1:], diffs[k].shape[1:])) if len(at) > 1 else 0
    batch = None if batches is None else batches[b]
    worst = Worst(b, int(at[0]), index, float(ref[at]), float(got[at]), input_text(batch, int(at[0])))
    return ErrorStats(
        max_abs=float(flat.max()),
        mean_abs=float(flat.mean()),
        p99_abs=float(np.percentile(flat, 99)),
        max_rel=float(rel.max()),
        min_atol=max(tol.min_atol(ref, got) for _, ref, got in pairs),
        values=int(flat.size),
        worst=worst,
    )


STATS_KEYS = ("max_abs", "max_rel", "mean_abs", "p99_abs", "min_atol", "values", "worst")


def stats_dict(stats: ErrorStats | None) -> dict[str, Any]:
    """The statistics as JSON keys (each None when nothing was compared)."""
    if stats is None:
        return dict.fromkeys(STATS_KEYS)
    return {k: asdict(stats.worst) if k == "worst" and stats.worst else getattr(stats, k) for k in STATS_KEYS}


def compare(ref: np.ndarray | None, got: np.ndarray | None, tol: Tolerance) -> Comparison:
    """Compare one output with the reference's: presence, shape, finiteness, then the bound (`tol`)."""
    return _compare_batches([(0, ref, got)], tol)


def _compare_batches(
    pairs: Sequence[tuple[int, np.ndarray | None, np.ndarray | None]],
    tol: Tolerance,
    batches: Sequence[Batch] | None = None,
) -> Comparison:
    """One output over several batches: the first batch that fails decides the failure; the figures are
    those of every batch that could be compared."""
    failure: Comparison | None = None
    good: list[tuple[int, np.ndarray, np.ndarray]] = []
    for b, ref, got in pairs:
        checked = _checked(ref, got)
        if isinstance(checked, Comparison):
            failure = failure or checked
            continue
        good.append((b, *checked))
        why = _beyond(*checked, tol)
        if why and failure is None:
            failure = Comparison(None, None, TOLERANCE, why)
    if not good:
        return failure  # type: ignore[return-value] - pairs is never empty
    stats = error_stats(good, tol, batches)
    kind, why = (failure.failure, failure.reason) if failure else (None, None)
    return Comparison(stats.max_abs, stats.max_rel, kind, why, stats)


def compare_outputs(
    want: Sequence[dict[str, np.ndarray]],
    got: Sequence[dict[str, np.ndarray]],
    tol: Tolerance,
    batches: Sequence[Batch] | None = None,
    numbers: Sequence[int] | None = None,
) -> dict[str, Comparison]:
    """Per output name (the reference's, then any extra the artifact declares): every batch compared.

    `batches`, the inputs the outputs came from, lets each comparison quote the input of its worst value;
    `numbers` are the compared batches' indices in `batches` (default: 0, 1, ...: all of them, in order).
    """
    pairs: dict[str, list[tuple[int, np.ndarray | None, np.ndarray | None]]] = {}
    numbers = range(len(want)) if numbers is None else numbers
    for b, ref_outs, got_outs in zip(numbers, want, got, strict=True):
        for name in [*ref_outs, *(n for n in got_outs if n not in ref_outs)]:
            pairs.setdefault(name, []).append((b, ref_outs.get(name), got_outs.get(name)))
    return {name: _compare_batches(p, tol, batches) for name, p in pairs.items()}


def _e(v: float) -> str:
    """A figure in two significant digits, '0' for zero (a compact column)."""
    return "0" if v == 0 else f"{v:.1e}".replace("e-0", "e-").replace("e+0", "e+")
