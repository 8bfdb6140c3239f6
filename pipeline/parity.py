"""Parity: every exported artifact, on every runtime at hand, against the eager model.

Follows optimum's validator: compare per named output, run every check, then report all failures.
The artifacts are loaded through pipeline.runtime, the same loader the demo serves with.
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pipeline.manifest import Manifest
from pipeline.runtime import NotServed, Predictor, RuntimeUnavailable, is_remote, load_predictor

DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-4
RANDOM_BATCHES = (1, 2, 7)  # 7: an odd size no exporter traced with, which proves the dynamic batch axis


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
    error: str | None = None


@dataclass
class ParityReport:
    """All comparisons of one verify run."""

    rows: list[ParityRow]
    atol: float
    rtol: float

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(r.passed for r in self.rows)

    def failures(self) -> list[ParityRow]:
        return [r for r in self.rows if not r.passed]

    def for_model(self, model: str) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.rows if r.model == model]

    def as_dict(self) -> dict[str, Any]:
        return {"atol": self.atol, "rtol": self.rtol, "passed": self.passed, "rows": [asdict(r) for r in self.rows]}

    def table(self) -> str:
        """The report as a fixed-width text table."""
        head = ("model", "format", "runtime", "device", "output", "max abs", "max rel", "result")
        rows = [
            (
                r.model,
                r.format,
                r.runtime,
                r.device,
                r.output,
                "-" if r.max_abs is None else f"{r.max_abs:.2e}",
                "-" if r.max_rel is None else f"{r.max_rel:.2e}",
                "ok" if r.passed else f"FAIL{': ' + r.error if r.error else ''}",
            )
            for r in self.rows
        ]
        widths = [max(len(x[i]) for x in [head, *rows]) for i in range(len(head) - 1)]
        lines = []
        for row in [head, *rows]:
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
        lines.append(
            f"{len(self.rows) - len(self.failures())}/{len(self.rows)} comparisons within "
            f"atol {self.atol:g}, rtol {self.rtol:g}"
        )
        return "\n".join(lines)


def candidate_runtimes(cuda: bool, remote: Sequence[str] = ()) -> list[tuple[str, str, str]]:
    """(format, runtime, device) to check; the GPU ones only where CUDA is available.

    Each URL in `remote` adds the ONNX and TorchScript models of that Open Inference Protocol server
    (Triton with the `export --triton` repository, or the demo process) as runtimes.
    """
    combos = [
        ("torchscript", "torch", "cpu"),
        ("pt2", "torch", "cpu"),
        ("onnx", "onnxruntime", "cpu"),
        ("onnx", "onnx-reference", "cpu"),
    ]
    if cuda:
        combos += [("eager", "torch", "cuda"), ("torchscript", "torch", "cuda"), ("onnx", "onnxruntime", "cuda")]
    combos += [(fmt, url, "cpu") for url in remote for fmt in ("onnx", "torchscript")]
    return combos


def parity_inputs(manifest: Manifest, model: str, seed: int = 0) -> list[np.ndarray]:
    """The catalog examples as one batch, then random batches of sizes 1, 2 and 7."""
    entry = manifest.model(model)
    rng = np.random.default_rng(seed)
    width = len(entry.features)
    batches = [np.asarray(entry.examples, dtype=np.float32)]
    batches += [rng.standard_normal((n, width)).astype(np.float32) for n in RANDOM_BATCHES]
    return batches


def compare(ref: np.ndarray, got: np.ndarray, atol: float, rtol: float) -> tuple[float, float, bool]:
    """(max abs diff, max relative diff, within tolerance) of two same-shaped arrays."""
    ref = np.asarray(ref, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    if ref.shape != got.shape:
        return float("inf"), float("inf"), False
    diff = np.abs(got - ref)
    rel = diff / np.maximum(np.abs(ref), np.finfo(np.float32).tiny)
    ok = bool(np.all(np.isfinite(got)) and np.all(diff <= atol + rtol * np.abs(ref)))
    return float(diff.max(initial=0.0)), float(rel.max(initial=0.0)), ok


def check_model(
    manifest: Manifest,
    model: str,
    combos: list[tuple[str, str, str]],
    atol: float,
    rtol: float,
) -> list[ParityRow]:
    """Compare each (format, runtime, device) of `model` with the eager model on the CPU."""
    entry = manifest.model(model)
    rows: list[ParityRow] = []
    batches = parity_inputs(manifest, model)
    try:
        reference = load_predictor(manifest, model, "eager", "torch", "cpu")
        expected = [reference.run_batch(b) for b in batches]
    except Exception as exc:  # noqa: BLE001 - reported as a failed row, never swallowed
        return [ParityRow(model, "eager", "torch", "cpu", "*", None, None, False, _one_line(exc))]
    not_served: dict[str, list[ParityRow]] = {}
    for fmt, runtime, device in combos:
        try:
            predictor: Predictor = load_predictor(manifest, model, fmt, runtime, device)
        except NotServed as exc:  # a server without that format's backend: a failure only if it serves none
            not_served.setdefault(runtime, []).append(
                ParityRow(model, fmt, runtime, device, "*", None, None, False, _one_line(exc))
            )
            continue
        except RuntimeUnavailable as exc:
            if is_remote(runtime):  # a server asked for by URL that cannot serve it: a failure
                rows.append(ParityRow(model, fmt, runtime, device, "*", None, None, False, _one_line(exc)))
            continue  # not at hand on this machine: not a failure
        except Exception as exc:  # noqa: BLE001
            rows.append(ParityRow(model, fmt, runtime, device, "*", None, None, False, _one_line(exc)))
            continue
        worst: dict[str, list[float]] = {name: [0.0, 0.0] for name in entry.output_names}
        ok = {name: True for name in entry.output_names}
        error = None
        try:
            for batch, want in zip(batches, expected):
                got = predictor.run_batch(batch)
                for name, w, g in zip(entry.output_names, want, got):
                    max_abs, max_rel, passed = compare(w, g, atol, rtol)
                    worst[name] = [max(worst[name][0], max_abs), max(worst[name][1], max_rel)]
                    ok[name] = ok[name] and passed
        except Exception as exc:  # noqa: BLE001
            error = _one_line(exc)
        for name in entry.output_names:
            rows.append(
                ParityRow(
                    model,
                    fmt,
                    runtime,
                    predictor.device,
                    name,
                    worst[name][0],
                    worst[name][1],
                    ok[name] and error is None,
                    error,
                )
            )
    for url, missing in not_served.items():
        if not any(r.runtime == url for r in rows):
            rows += missing
    return rows


def verify(
    manifest: Manifest,
    models: list[str],
    cuda: bool,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    remote: Sequence[str] = (),
) -> ParityReport:
    """Run every parity check for `models` and return the full report (it does not stop at the first)."""
    combos = candidate_runtimes(cuda, remote)
    rows: list[ParityRow] = []
    for model in models:
        rows += check_model(manifest, model, combos, atol, rtol)
    return ParityReport(rows, atol, rtol)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if not first:
        first = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return f"{type(exc).__name__}: {first}"[:300]
