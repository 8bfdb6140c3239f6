"""What the page's result area and model panel show, as plain functions of the Service's answers.

Each returns HTML (every value from a user or a manifest escaped once, here) or a small table, so the
page's states can be tested without a browser: before the first Predict, a result, an error, a
comparison of every format, and a result marked stale once its inputs change.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import formats
from pipeline.artifacts.manifest import ModelEntry
from pipeline.artifacts.tensors import width

HEADLINE_VALUES = 4  # an output with more values shows this many, then "…(N more)"
COMPARE_VALUES = 8  # values per output in a comparison row before "…(N more)"
MINUS = "\u2212"  # a real minus sign: "-0.63" reads as a hyphen in proportional fonts

CSS = """
#device-picker label.unavailable { opacity: 0.45; cursor: not-allowed; }
#prediction .headline { font-size: 1.35em; font-weight: 600; margin: 0 0 .4em; overflow-wrap: anywhere; }
#prediction .expected { font-size: 1.1em; margin: 0 0 .6em; }
#prediction .scroll, #model-summary pre, #no-manifest pre { overflow-x: auto; max-width: 100%; }
#prediction table { border-collapse: collapse; font-size: .92em; }
#prediction th { white-space: nowrap; word-break: keep-all; text-align: left; padding: 2px 8px; }
#prediction td { padding: 2px 8px; vertical-align: top; }
#prediction td.values { overflow-wrap: anywhere; min-width: 12em; }
#prediction td code { overflow-wrap: anywhere; }
#prediction tr.outside td { background: rgba(220, 38, 38, .16); }
#prediction tr.outside td.verdict, #prediction .error-reason { color: #b91c1c; font-weight: 600; }
#prediction .error { border: 2px solid #dc2626; border-radius: 6px; padding: .6em .8em; }
#prediction .error-reason { white-space: pre-wrap; overflow-wrap: anywhere; }
#prediction .stale-note { border: 2px dashed #d97706; border-radius: 6px; padding: .4em .8em; font-weight: 600; }
#prediction .stale-body { opacity: .4; filter: grayscale(1); }
#prediction .placeholder { color: var(--body-text-color-subdued); }
#parity th, #parity td { white-space: nowrap; }
.gradio-container { max-width: 100vw !important; overflow-x: hidden; }
"""


def esc(value: Any) -> str:
    """`value` as text safe inside HTML (what a user typed or a manifest says is shown, never run)."""
    return html.escape(str(value), quote=True)


def number(v: float | None) -> str:
    """A value for people: 6 significant digits, a real minus sign."""
    if v is None:
        return "–"
    return f"{v:.6g}".replace("-", MINUS)


def values_text(values: Sequence[float], limit: int) -> str:
    """Up to `limit` values, then "…(N more)"."""
    shown = ", ".join(number(v) for v in values[:limit])
    rest = len(values) - limit
    return f"{shown}, …({rest} more)" if rest > 0 else shown


def headline(outputs: dict[str, list[float]]) -> str:
    """Every output: "sum = 20.37 · hidden = [17.2, 0, 0, 3.88, …(4 more)]"."""
    parts = []
    for name, values in outputs.items():
        shown = number(values[0]) if len(values) == 1 else f"[{values_text(values, HEADLINE_VALUES)}]"
        parts.append(f"{esc(name)} = {shown}")
    return " · ".join(parts)


def expected_line(expected: dict | None) -> str:
    """ "expected 21 (x1 + x2) · model 20.37 · error −0.63", or "" when the task declares no true function."""
    if not expected:
        return ""
    return (
        f'<p class="expected">expected <b>{number(expected["value"])}</b> ({esc(expected["truth"])}) · '
        f"model {number(expected['model'])} · error <b>{number(expected['error'])}</b></p>"
    )


def inputs_text(entry: ModelEntry, values: Sequence[float] | None) -> str:
    """ "x1 = 10, x2 = 11" for small inputs, "1000 numbers (x0 …)" for wide ones."""
    if values is None:
        return ""
    if len(values) != len(entry.features):
        return f"{len(values)} numbers"
    if len(values) <= 4:
        return ", ".join(f"{esc(f)} = {number(v)}" for f, v in zip(entry.features, values, strict=True))
    return f"{len(values)} numbers ({esc(entry.features[0])} = {number(values[0])}, …)"


TOP_CLASSES = 3  # classes shown beside the predicted one


def classes_line(labels: dict[str, dict[str, float]] | None) -> str:
    """For each output of class scores: the predicted class, large, and the top classes with their probabilities."""
    lines = []
    for name, probs in (labels or {}).items():
        top = sorted(probs.items(), key=lambda kv: -kv[1])[:TOP_CLASSES]
        shown = " · ".join(f"{esc(c)} {p:.1%}" for c, p in top)
        lines.append(
            f'<p class="headline predicted-class">{esc(name)}: <b>{esc(top[0][0])}</b></p><p>top classes: {shown}</p>'
        )
    return "".join(lines)


def placeholder(entry: ModelEntry) -> str:
    """The result area before the first Predict: what will appear there."""
    sizes = {o["name"]: width(o) for o in entry.outputs}
    outs = ", ".join(f"{esc(name)} ({n} value{'s' if n != 1 else ''})" for name, n in sizes.items())
    truth = entry.raw.get("truth")
    what = [
        f"<li>the prediction: {outs}</li>",
        f"<li>what it should be, by the task's true function <code>{esc(truth)}</code>, and the error</li>"
        if truth
        else "<li>(no true function is declared for this task, so there is no expected value)</li>",
        "<li>the runtime and device that really ran it, and the latency</li>",
    ]
    return (
        '<div class="placeholder"><p><b>Press Predict</b> (or Enter in an input) for this example. Here will appear:'
        f"</p><ul>{''.join(what)}</ul><p><b>Compare all formats</b> runs the same example through every "
        "artifact and runtime, each against the eager model.</p></div>"
    )


def result(entry: ModelEntry, answer: dict, values: Sequence[float] | None = None) -> str:
    """One prediction: every output, what it should be, what ran it."""
    rows = "".join(
        f'<tr><td>{esc(name)}</td><td class="values">{values_text(vals, len(vals))}</td></tr>'
        for name, vals in answer["outputs"].items()
    )
    loaded = f" · loaded and sha256-checked in {answer['load_ms']:.1f} ms on this call" if answer["load_ms"] else ""
    label = formats.label(answer["format"], answer["runtime"])
    given = inputs_text(entry, values)
    return (
        f'<div class="result">{classes_line(answer.get("labels"))}<p class="headline">{headline(answer["outputs"])}</p>'
        f"{expected_line(answer.get('expected'))}"
        f'<div class="scroll"><table><tr><th>output</th><th>values</th></tr>{rows}</table></div>'
        f"<p>{f'for {given} · ' if given else ''}<b>{esc(label)}</b> · ran on <code>{esc(answer['device'])}</code> "
        f"(asked for {esc(answer['requested_device'])}) · latency {answer['latency_ms']:.3f} ms{loaded}</p></div>"
    )


def error(message: str, action: str = "Predict") -> str:
    """A failed action, its reason in full, in the result area until the next action."""
    return (
        f'<div class="error" role="alert"><p><b>{esc(action)} failed</b> — no answer for this input.</p>'
        f'<p class="error-reason">{esc(message)}</p></div>'
    )


def stale(previous: str | None, entry: ModelEntry | None) -> str:
    """The last answer, marked plainly as belonging to the previous input (or the placeholder)."""
    if not previous:
        return placeholder(entry) if entry else ""
    return (
        '<div class="stale"><p class="stale-note">Stale: the input changed since this answer. '
        "Press Predict for the new input.</p>"
        f'<div class="stale-body" aria-hidden="true">{previous}</div></div>'
    )


# The figures first, the values last: at laptop widths the long value lists scroll, not the verdicts.
COMPARE_HEADERS = (
    "artifact · runtime",
    "ran on",
    "max |Δ| vs eager",
    "|Δ| mean · p99 · min atol",
    "within rule",
    "latency ms",
    "load ms",
    "file size",
    "values",
)


def _size(n: int | None) -> str:
    if n is None:
        return "–"
    return f"{n / 1024:,.1f} KiB" if n >= 1024 else f"{n} B"


def comparison(entry: ModelEntry, rows: Sequence[dict], device: str, values: Sequence[float] | None = None) -> str:
    """Service.compare's rows as one table; a row outside the rule or that did not run stands out."""
    body = []
    for row in rows:
        outside = row["within_rule"] is not True
        if row["within_rule"] is None:
            verdict = (
                f"did not run: {esc(row['reason'])}" if not row["outputs"] else f"not compared: {esc(row['reason'])}"
            )
        elif row["within_rule"]:
            verdict = "yes"
        else:
            verdict = f"NO: {esc(row['reason'])} (explain it below)"
        vals = "<br>".join(f"{esc(n)}: {values_text(v, COMPARE_VALUES)}" for n, v in row["outputs"].items())
        body.append(
            f'<tr class="{"outside" if outside else "within"}"><td>{esc(row["label"])}</td>'
            f"<td><code>{esc(row['device'])}</code></td>"
            f'<td>{_sci(row["max_abs_diff"])}</td><td class="stats">{_stats(row.get("stats"))}</td>'
            f'<td class="verdict">{verdict}</td>'
            f"<td>{_ms(row['latency_ms'], 3)}</td><td>{_ms(row['load_ms'], 1)}</td>"
            f'<td>{_size(row.get("bytes"))}</td><td class="values">{vals or "–"}</td></tr>'
        )
    head = "".join(f"<th>{esc(h)}</th>" for h in COMPARE_HEADERS)
    bad = sum(r["within_rule"] is not True for r in rows)
    verdict = (
        "all within the parity rule"
        if not bad
        else f"<b>{bad} row{'s' if bad != 1 else ''} outside the rule or not run</b>"
    )
    given = inputs_text(entry, values)
    rules = sorted({r["rule"] for r in rows})
    return (
        f'<div class="compare"><p class="headline">{esc(entry.name)}: {len(rows)} artifact × runtime rows '
        f"on {esc(device)} — {verdict}</p>"
        f"<p>{f'for {given}; ' if given else ''}each against the eager model on the CPU. "
        f"Rule: {'; '.join(esc(r) for r in rules)} (each format's own atol and rtol, pipeline/formats.py).</p>"
        f'<div class="scroll"><table id="compare-table"><tr>{head}</tr>{"".join(body)}</table></div></div>'
    )


def _stats(stats: dict | None) -> str:
    """Per output: mean and 99th percentile of |Δ| and the smallest atol that would pass (at the row's rtol, scale)."""
    if not stats:
        return "–"
    cells = [
        (esc(name) + ": " if len(stats) > 1 else "")
        + " · ".join(_sci(s[k]) for k in ("mean_abs", "p99_abs", "min_atol"))
        for name, s in stats.items()
        if s.get("mean_abs") is not None
    ]
    return "<br>".join(cells) or "–"


def _sci(v: float | None) -> str:
    return "–" if v is None else f"{v:.2g}".replace("-", MINUS)


def _ms(v: float | None, digits: int) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def no_manifest(folder: Path, why: str | None, default: Path) -> str:
    """What the page says with nothing to serve: why, and the exact commands (with the folder when it is
    not the default), as text in <pre>, escaped once."""
    custom = folder.resolve() != default.resolve()
    make = f"make train export ARTIFACTS={folder}" if custom else "make train export"
    serve = f"python demo/app.py --artifacts {folder}" if custom else "python demo/app.py"
    demo = f"make demo ARTIFACTS={folder}" if custom else "make demo"
    return (
        f"<h2>No artifacts to serve yet</h2><p>{esc(why or 'the manifest lists no models')}</p>"
        f"<p>Create them, then start the demo again:</p><pre><code>{esc(make)}\n{esc(serve)}</code></pre>"
        f"<p>or in one step (it trains and exports first when there is no manifest):</p>"
        f"<pre><code>{esc(demo)}</code></pre>"
    )


# ---- the model panel ------------------------------------------------------------------------------

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


PARITY_COLUMNS = [
    "format",
    "runtime",
    "device",
    "output",
    "max_abs",
    "mean_abs",
    "p99_abs",
    "min_atol",
    "max_rel",
    "atol",
    "rtol",
    "passed",
    "error",
]


def cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.3g}"
    return "" if value is None else str(value)


def parity(entry: ModelEntry) -> tuple[str, list[list[Any]]]:
    parity = entry.raw.get("parity") or {}
    rows = parity.get("rows") or []
    table = [[cell(r.get(c)) for c in PARITY_COLUMNS] for r in rows if isinstance(r, dict)]
    if not parity:
        return "Parity: _not recorded in the manifest_", table
    verdict = "passed" if parity.get("passed") else "**FAILED**"
    passed = sum(r[PARITY_COLUMNS.index("passed")] == "yes" for r in table)
    rule = parity.get("rule") or "every |got - eager| <= atol + rtol * |eager|"
    return (
        f"Parity against the eager model at export: {verdict}, {passed}/{len(table)} rows. "
        f"Rule: {rule}; atol and rtol are each row's format's own.",
        table,
    )
