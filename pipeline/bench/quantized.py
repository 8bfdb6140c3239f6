"""The derived ONNX formats (int8, float16) beside the float32 file they come from, measured in one run.

Per model: size, p50 latency at batch 1 and 64 on onnxruntime's CPU provider (one thread, the runtime's own
call) and the largest deviation from eager on the parity batches, with the ratios to the source. The
`quantized` section of `python -m pipeline bench`, and on its own:

    python -m pipeline.bench.quantized [ARTIFACTS] [--markdown]
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pipeline import formats
from pipeline.artifacts.manifest import Manifest
from pipeline.bench.timing import Plan, timed_for
from pipeline.export import quantize
from pipeline.runtime import parity
from pipeline.runtime.predictor import load_predictor

QUANT_SECONDS = {False: 0.5, True: 0.05}  # per model, format and batch size


def _p50_ms(call: Any, seconds: float) -> float:
    return statistics.median(timed_for(call, seconds, min_calls=50, warmup=20)) * 1e3


def measure(manifest: Manifest, models: Sequence[str], seconds: float = 0.5) -> list[dict[str, Any]]:
    """Per model and format (the float32 ONNX and its derived ones): size, p50 latency at batch 1 and 64
    on onnxruntime's CPU provider (the runtime's own call) and the largest deviation from eager on the
    parity batches, absolute and as a fraction of the output's largest |value|."""
    out = []
    for model in models:
        entry = manifest.model(model)
        batches = parity.parity_inputs(manifest, model)
        ref_format, ref_runtime, ref_device = formats.REFERENCE
        reference = load_predictor(manifest, model, ref_format, runtime=ref_runtime, device=ref_device)
        expected = [reference.outputs(b) for b in batches]
        rng = np.random.default_rng(1)
        timing = {n: rng.standard_normal((n, len(entry.features))).astype(np.float32) for n in (1, 64)}
        for fmt in quantize.compared():
            if fmt not in entry.artifacts:
                continue
            predictor = load_predictor(
                manifest, model, fmt, runtime=formats.ONNXRUNTIME.name, device=formats.CPU, threads=1
            )
            worst_abs = worst_frac = 0.0
            for batch, want in zip(batches, expected, strict=True):
                got = predictor.outputs(batch)
                for name, ref in want.items():
                    diff = float(np.abs(np.asarray(got[name], np.float64) - ref).max())
                    worst_abs = max(worst_abs, diff)
                    worst_frac = max(worst_frac, diff / max(float(np.abs(ref).max()), 1e-30))
            row = {"model": model, "format": fmt, "bytes": entry.artifacts[fmt].bytes}
            row |= {f"p50_ms_b{n}": _p50_ms(predictor.bare(x), seconds) for n, x in timing.items()}
            out.append(row | {"max_abs": worst_abs, "max_frac": worst_frac})
    return out


def measure_table(rows: Sequence[dict[str, Any]], markdown: bool = False) -> str:
    """`measure`'s rows as one table, each derived format's size and latency also as a multiple of its source's."""
    from pipeline.tables import text_table

    base = {(r["model"], r["format"]): r for r in rows}

    def times(r: dict[str, Any], key: str) -> str:
        src = base.get((r["model"], formats.get(r["format"]).source))
        return f" ({r[key] / src[key]:.2f}x)" if src else ""

    head = ("model", "format", "bytes", "p50 b1 ms", "p50 b64 ms", "max |Δ|", "max |Δ| / max|ref|")
    body = [
        (
            r["model"],
            r["format"],
            f"{r['bytes']:,}{times(r, 'bytes')}",
            f"{r['p50_ms_b1']:.4f}{times(r, 'p50_ms_b1')}",
            f"{r['p50_ms_b64']:.4f}{times(r, 'p50_ms_b64')}",
            f"{r['max_abs']:.2e}",
            f"{r['max_frac']:.2e}",
        )
        for r in rows
    ]
    return text_table(head, body, markdown=markdown)


def bench_quantized(
    manifest: Manifest, models: Sequence[str], plan: Plan, log: Callable[[str], None]
) -> dict[str, Any]:
    """Each derived format beside its source: size, p50 at batch 1 and 64, deviation; and where none was written."""
    flat = [m for m in models if manifest.model(m).flat]  # measure feeds one float32 row
    rows = measure(manifest, flat, QUANT_SECONDS[plan.quick])
    source = {(r["model"], r["format"]): r for r in rows}
    for row in rows:
        src = source.get((row["model"], formats.get(row["format"]).source))
        if src is not None:
            for key in ("bytes", "p50_ms_b1", "p50_ms_b64"):
                row[f"{key}_ratio"] = row[key] / src[key]
        log(
            f"  {row['model']} {row['format']}: {row['bytes']:,} bytes, p50 {row['p50_ms_b1']:.4f} ms (b1) "
            f"{row['p50_ms_b64']:.4f} ms (b64), max |Δ| {row['max_abs']:.2e}"
        )
    not_applicable = {m: dict(manifest.model(m).not_applicable) for m in flat if manifest.model(m).not_applicable}
    return {"rows": rows, "not_applicable": not_applicable}


def main(argv: Sequence[str] | None = None) -> int:
    """python -m pipeline.bench.quantized [ARTIFACTS] [--markdown]: print `measure`'s table for every model."""
    import argparse

    from pipeline.artifacts.manifest import Manifest

    parser = argparse.ArgumentParser(prog="python -m pipeline.bench.quantized", description=main.__doc__)
    parser.add_argument("artifacts", nargs="?", default="artifacts")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--seconds", type=float, default=0.5, help="timing per (model, format, batch)")
    args = parser.parse_args(argv)
    manifest = Manifest.load(args.artifacts)
    print(measure_table(measure(manifest, list(manifest.models), args.seconds), args.markdown))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
