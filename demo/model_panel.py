"""What the page's model panel shows about the model picked: what training produced beside what its seed reports,
its seed's figure, its activation drawn beside the other two, and the export's parity table as a person reads it.
Plain functions of a manifest entry, testable without a browser, as demo/views.py's are of the Service's answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from demo.views import number, short_device
from pipeline import formats
from pipeline.artifacts.manifest import ModelEntry

ACTIVATIONS = {  # seed 004 §11.3.2 draws all three
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "relu": lambda x: np.maximum(x, 0.0),
    "tanh": np.tanh,
}
ACTIVATION_LABELS = {"sigmoid": "sigmoid", "relu": "ReLU", "tanh": "tanh"}


def activation_frame(activation: str | None) -> Any:
    """sigmoid, ReLU and tanh on [-5, 5] as seed 004 §11.3.2 draws them, the model's own named first
    ("ReLU (this model)"); None when the model declares no activation."""
    import pandas as pd

    if activation not in ACTIVATIONS:
        return None
    x = np.linspace(-5.0, 5.0, 101)
    order = [activation, *(a for a in ACTIVATIONS if a != activation)]
    rows = []
    for name in order:
        label = ACTIVATION_LABELS[name] + (" (this model)" if name == activation else "")
        rows += [
            {"x": float(a), "value": float(b), "function": label} for a, b in zip(x, ACTIVATIONS[name](x), strict=True)
        ]
    return pd.DataFrame(rows)


def figures_md(entry: ModelEntry) -> str:
    """What training produced, beside what the seed reports: final loss, fitted formula, predictions."""
    raw = entry.raw
    lines = []
    recipe = raw.get("recipe") or {}
    if recipe:
        lines.append(
            f"Trained with `{raw.get('variant', '')}`: {recipe.get('loss')} loss, {recipe.get('optimizer')} "
            f"lr {recipe.get('lr')}, {recipe.get('epochs')} epochs on {raw.get('trained_on', '?')}. "
            f"Revision `{raw.get('revision', '?')}`."
        )
    loss = raw.get("final_loss")
    seed = raw.get("seed_figures")
    lines.append(
        f"**Final loss** {number(loss) if isinstance(loss, (int, float)) else 'not recorded'}"
        + (f" · **the seed reports** {seed}" if seed else "")
    )
    report = raw.get("report") or {}
    if report.get("formula"):
        lines.append(f"**Fitted formula** `{report['formula']}`")
    if report.get("predictions"):
        preds = ", ".join(f"{k} → {number(v)}" for k, v in report["predictions"].items())
        lines.append(f"**Predictions on the seed's inputs** {preds}")
    plain = {k: v for k, v in report.items() if k not in ("formula", "predictions", "coefficients")}
    if plain:
        lines.append(
            "**Fitted** " + ", ".join(f"{k} = {number(v) if isinstance(v, float) else v}" for k, v in plain.items())
        )
    summary = raw.get("summary")
    lines.append(f"```\n{summary}\n```" if summary else "_no architecture summary in the manifest_")
    return "\n\n".join(lines)


def seed_figure(entry: ModelEntry) -> tuple[str | None, str]:
    """The first figure export copied beside the loss curve (linear_3x's lr_study.png), and its label."""
    extra = [p for p in entry.raw.get("extra") or [] if isinstance(p, str) and p.endswith(".png")]
    if not extra:
        return None, ""
    name = Path(extra[0]).stem
    label = "Learning-rate study (weight and loss per epoch)" if name == "lr_study" else name.replace("_", " ")
    return extra[0], f"{label}, seed {entry.seed}"


# The parity table as a person reads it: the largest difference beside the tolerance it is judged by. The
# relative difference is left out: near zero it is large for a row that passes (int8's 26 beside "yes").
PARITY_COLUMNS = ["copy", "engine", "ran on", "output", "largest difference", "tolerance", "within its rule"]


def cell(value: Any) -> str:
    """A parity table cell: yes/NO, 3 significant digits, "" for nothing."""
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.3g}"
    return "" if value is None else str(value)


def tolerance(row: dict) -> str:
    """A row's rule in short: "1e-05 + 0.0001·|eager|" (+ "0.05·max|eager|" for a reduced-precision format)."""
    try:
        atol, rtol, scale = float(row.get("atol", 0)), float(row.get("rtol", 0)), float(row.get("scale") or 0)
    except (TypeError, ValueError):
        return ""
    return f"{atol:g} + {rtol:g}·|eager|" + (f" + {scale:g}·max|eager|" if scale else "")


def parity(entry: ModelEntry) -> tuple[str, list[list[Any]]]:
    """The export's parity check: one sentence, and one row per (copy, engine, output)."""
    parity = entry.raw.get("parity") or {}
    rows = [r for r in parity.get("rows") or [] if isinstance(r, dict)]
    table = [
        [
            cell(formats.FORMATS[r["format"]].label if r.get("format") in formats.FORMATS else r.get("format")),
            cell(r.get("runtime")),
            short_device(str(r.get("device", ""))),
            cell(r.get("output")),
            cell(r.get("max_abs")),
            tolerance(r),
            cell(r.get("passed")) + (f": {r['error']}" if r.get("error") else ""),
        ]
        for r in rows
    ]
    if not parity:
        return "Parity: _not recorded in the manifest_", table
    verdict = (
        "every copy gave the same answer" if parity.get("passed") else "**some copies did NOT give the same answer**"
    )
    passed = sum(r[-1] == "yes" for r in table)
    return (
        f"**At export**, each copy answered the catalog's examples and random batches beside the original PyTorch "
        f"model (eager): {verdict} ({passed} of {len(table)} rows within their rule). A row is within its rule when "
        "every |value − eager| ≤ its tolerance; reduced-precision copies (int8, float16) are allowed more.",
        table,
    )
