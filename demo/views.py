"""What the page's result area shows, as plain functions of the Service's answers.

Each returns HTML (every value from a user or a manifest escaped once, here) or a small table, so the
page's states can be tested without a browser: before the first Predict, a result, an error, a
comparison of every format, and a result marked stale once its inputs change.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import formats
from pipeline.artifacts.manifest import ModelEntry
from pipeline.artifacts.tensors import dtype

HEADLINE_VALUES = 4  # an output with more values shows this many, then "…(N more)"
COMPARE_VALUES = 4  # values of the answer per comparison row before "…(N more)"
TOP_CLASSES = 3  # classes drawn as confidence bars
MINUS = "\u2212"  # a real minus sign: "-0.63" reads as a hyphen in proportional fonts
FOCUS = "#1d4ed8"  # the focus outline: 6.7:1 on white

# Every text colour here is at least 4.5:1 on its background (WCAG AA), which tests/test_demo_browser.py checks
# with axe-core: Gradio's subdued grey (the CUDA reason) and white on its orange (Predict) are not.
CSS = f"""
.gradio-container {{ --body-text-color-subdued: #4b5563; --block-info-text-color: #4b5563;
  --button-primary-background-fill: #c2410c; --button-primary-background-fill-hover: #9a3412;
  --button-primary-text-color: #ffffff; --button-primary-text-color-hover: #ffffff;
  max-width: 100vw !important; overflow-x: hidden; }}
.gradio-container button:focus-visible, .gradio-container input:focus-visible,
.gradio-container textarea:focus-visible, .gradio-container summary:focus-visible,
.gradio-container label:has(input[type=radio]:focus-visible) {{ outline: 3px solid {FOCUS} !important;
  outline-offset: 2px; }}
#device-picker label.unavailable {{ color: #374151; cursor: not-allowed; text-decoration: line-through; }}
#intro p {{ margin: 0; }}
#format-note p {{ margin: .2em 0; font-size: .92em; }}
#prediction .answer-row {{ display: flex; flex-wrap: wrap; align-items: baseline; gap: .2em 1.2em; }}
#prediction .headline {{ font-size: 1.6em; font-weight: 700; margin: 0 0 .3em; overflow-wrap: anywhere; }}
#prediction .expected {{ font-size: 1.1em; margin: 0 0 .5em; }}
#prediction .ran {{ font-size: .92em; }}
#prediction .classes {{ min-width: 12em; flex: 1; }}
#prediction .classes h2 {{ font-size: 2.4em; margin: 0; }}
#prediction .bars {{ list-style: none; padding: 0; margin: .2em 0; }}
#prediction .bars li {{ display: grid; grid-template-columns: 2.5em 1fr 4em; gap: .5em; align-items: center; }}
#prediction .bar {{ height: .9em; background: #c2410c; border-radius: 3px; }}
#prediction .pixels {{ display: grid; grid-template-columns: repeat(var(--cols), 1fr); width: 8.5em;
  border: 1px solid #6b7280; }}
#prediction .px {{ aspect-ratio: 1; }}
#prediction figure {{ margin: 0; }}
#prediction figcaption {{ font-size: .85em; }}
#prediction .scroll, #model-summary pre, #no-manifest pre {{ overflow-x: auto; max-width: 100%; }}
#prediction table {{ border-collapse: collapse; font-size: .92em; width: 100%; }}
#prediction th {{ text-align: left; padding: 3px 8px; border-bottom: 2px solid #6b7280; }}
#prediction td {{ padding: 3px 8px; vertical-align: top; border-bottom: 1px solid #d1d5db; }}
#prediction td.values, #prediction td.answer {{ overflow-wrap: anywhere; }}
#prediction td small {{ display: block; color: #374151; }}
#prediction tr.outside td {{ background: #fde8e8; }}
#prediction tr.outside td.verdict, #prediction .error-reason {{ color: #991b1b; font-weight: 600; }}
#prediction td.ms, #prediction td.size {{ white-space: nowrap; }}
#prediction tr.within td.verdict {{ white-space: nowrap; }}
#prediction td.verdict {{ font-weight: 700; }}
#prediction .error {{ border: 2px solid #dc2626; border-radius: 6px; padding: .6em .8em; }}
#prediction .error-reason {{ white-space: pre-wrap; overflow-wrap: anywhere; }}
#prediction .stale-note {{ border: 2px dashed #b45309; border-radius: 6px; padding: .4em .8em; font-weight: 600; }}
#prediction .stale-body, #prediction .late-body {{ opacity: .45; filter: grayscale(1); }}
#prediction .placeholder {{ color: #374151; }}
#seed-figure-caption p {{ margin: 0; font-weight: 600; }}
#parity th, #parity td {{ white-space: nowrap; }}
@media (max-width: 640px) {{
  #prediction #compare-table thead {{ position: absolute; left: -10000px; }}
  #prediction #compare-table, #prediction #compare-table tbody, #prediction #compare-table tr,
  #prediction #compare-table td {{ display: block; width: auto; }}
  #prediction #compare-table tr {{ border: 1px solid #9ca3af; border-radius: 8px; margin: 0 0 .6em;
    padding: .3em .6em; }}
  #prediction #compare-table td {{ border: none; padding: 1px 0; }}
  #prediction #compare-table td[data-label]::before {{ content: attr(data-label) ": "; font-weight: 600; }}
  #seed-figure .image-container, #loss-curve .image-container {{ overflow-x: auto; }}
  #seed-figure img {{ min-width: 640px; max-width: none; }}
  #seed-figure .image-container button, #seed-figure .image-frame {{ justify-content: flex-start;
    width: max-content; min-width: 100%; }}
}}
"""


def esc(value: Any) -> str:
    """`value` as text safe inside HTML (what a user typed or a manifest says is shown, never run)."""
    return html.escape(str(value), quote=True)


def number(v: float | None, kind: str = "float32") -> str:
    """A value for people: 6 significant digits (an int64 output as a whole number), a real minus sign."""
    if v is None:
        return "–"
    text = str(int(round(v))) if kind == "int64" else f"{v:.6g}"
    return text.replace("-", MINUS)


def values_text(values: Sequence[float], limit: int, kind: str = "float32") -> str:
    """Up to `limit` values, then "…(N more)"."""
    shown = ", ".join(number(v, kind) for v in values[:limit])
    rest = len(values) - limit
    return f"{shown}, …({rest} more)" if rest > 0 else shown


def kinds(entry: ModelEntry) -> dict[str, str]:
    """Output name -> its dtype ("float32", "int64")."""
    return {o["name"]: dtype(o) for o in entry.outputs}


def output_text(values: Sequence[float], kind: str = "float32", limit: int = HEADLINE_VALUES) -> str:
    """One output: "20.3663", or "[17.2, 0, 0, 3.88, …(4 more)]"."""
    return number(values[0], kind) if len(values) == 1 else f"[{values_text(values, limit, kind)}]"


def short_device(device: str) -> str:
    """ "CPU" or "GPU" for what ran it ("CPUExecutionProvider", "cpu", "cuda:0", "onnx.reference…")."""
    return "GPU" if "cuda" in device.lower() else "CPU"


def size_text(n: int | None) -> str:
    """A file size: "6.2 KiB", "812 B"."""
    if n is None:
        return "–"
    if n >= 1024 * 1024:
        return f"{n / 1024 / 1024:,.1f} MiB"
    return f"{n / 1024:,.1f} KiB" if n >= 1024 else f"{n} B"


def expected_line(expected: dict | None) -> str:
    """ "expected 21 (x1 + x2) · error −0.63", or "" when the task declares no true function."""
    if not expected:
        return ""
    return (
        f'<p class="expected">expected <b>{number(expected["value"])}</b> ({esc(expected["truth"])}) · '
        f"error {number(expected['error'])}</p>"
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


def classes_html(probs: dict[str, float]) -> str:
    """The predicted class, large, and the top classes as confidence bars (what gr.Label draws), in the result
    area so that a stale or late answer is marked with the rest of it."""
    top = sorted(probs.items(), key=lambda kv: -kv[1])[:TOP_CLASSES]
    bars = "".join(
        f'<li><span class="name">{esc(c)}</span><span class="bar" style="width: {100 * p:.1f}%"></span>'
        f'<span class="pct">{100 * p:.1f}%</span></li>'
        for c, p in top
    )
    return f'<div class="classes"><h2>{esc(top[0][0])}</h2><ul class="bars" aria-label="top classes">{bars}</ul></div>'


def pixels_html(entry: ModelEntry, given: Any) -> str:
    """The picture the model read (e.g. 8x8), beside the answer: each value a grey square, ink dark."""
    images = [t for t in entry.inputs if t.get("image")]
    if not images or not isinstance(given, dict):
        return ""
    spec = images[0]["image"]
    values = np.asarray(given.get(images[0]["name"], []), dtype=np.float64).ravel()
    if values.size != spec["height"] * spec["width"]:
        return ""
    share = np.clip((values - spec["low"]) / ((spec["high"] - spec["low"]) or 1.0), 0.0, 1.0)
    grey = np.round(255 * (1 - share if spec.get("ink", "dark") == "dark" else share)).astype(int)
    cells = "".join(f'<span class="px" style="background: rgb({g},{g},{g})"></span>' for g in grey)
    return (
        f'<figure><div class="pixels" style="--cols: {spec["width"]}" role="img" '
        f'aria-label="the {spec["height"]}x{spec["width"]} input">{cells}</div>'
        f"<figcaption>what the model read: {spec['height']}×{spec['width']}</figcaption></figure>"
    )


def placeholder(entry: ModelEntry) -> str:
    """The result area before the first Predict: what will appear there."""
    truth = entry.raw.get("truth")
    first = entry.output_names[0]
    should = f", beside what it should be ({esc(truth)})" if truth else ""
    classes = any(o.get("classes") for o in entry.outputs[:1])
    what = f"the predicted class of <b>{esc(first)}</b> with its confidence" if classes else f"<b>{esc(first)}</b>"
    return (
        f'<div class="placeholder"><p><b>Press Predict</b> (or Enter in an input): here appears {what}{should}.</p>'
        "<p><b>Compare all formats</b> checks that every exported copy of the model gives the same answer.</p></div>"
    )


def for_attr(key: dict | None) -> str:
    """The form values an answer belongs to, for the page's script to mark it stale when the form moves on."""
    return f' data-for="{esc(json.dumps(key))}"' if key else ""


def _secondary(entry: ModelEntry, answer: dict) -> str:
    """Every output but the headline's, in a table below it."""
    kind = kinds(entry)
    rest = list(answer["outputs"].items())[1:]
    if not rest:
        return ""
    rows = "".join(
        f'<tr><td>{esc(name)}</td><td class="values">{values_text(vals, len(vals), kind.get(name, ""))}</td></tr>'
        for name, vals in rest
    )
    return f'<div class="scroll"><table><tr><th>other output</th><th>values</th></tr>{rows}</table></div>'


def result(
    entry: ModelEntry, answer: dict, values: Sequence[float] | None = None, given: Any = None, key: dict | None = None
) -> str:
    """One prediction, the answer first in the task's terms (a class with its confidence, or a value beside
    the expected one), then the other outputs, then what ran it."""
    first, kind = entry.output_names[0], kinds(entry)
    labels = answer.get("labels") or {}
    if first in labels:
        head = f'<div class="answer-row">{classes_html(labels[first])}{pixels_html(entry, given)}</div>'
    else:
        value = output_text(answer["outputs"][first], kind.get(first, ""))
        head = (
            f'<div class="answer-row"><p class="headline">{esc(first)} = {value}</p>'
            f"{expected_line(answer.get('expected'))}</div>"
        )
    loaded = f" · loaded and sha256-checked in {answer['load_ms']:.1f} ms" if answer["load_ms"] else ""
    label = formats.label(answer["format"], answer["runtime"])
    shown = inputs_text(entry, values)
    device = short_device(answer["device"])
    return (
        f'<div class="result"{for_attr(key)}>{head}{_secondary(entry, answer)}'
        f'<p class="ran">{f"for {shown} · " if shown else ""}<b>{esc(label)}</b> on '
        f'<span title="{esc(answer["device"])}">{device}</span> · {answer["latency_ms"]:.3f} ms{loaded}</p></div>'
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


# ---- the comparison of every copy -------------------------------------------------------------------------

LEAD = (
    "Each exported copy gives the same answer as the original PyTorch model, within the tolerance of its "
    "number format. Here each copy answers this input and is checked against the original."
)


def format_summary(fmt: str, runtime: str | None = None) -> str:
    """What a format and its runtime are, in one line: "a portable graph file …; run by ONNX Runtime …"."""
    spec = formats.get(fmt)
    rt = formats.RUNTIMES.get(runtime or spec.default_runtime)
    return f"{spec.summary}; run by {rt.summary}" if rt and rt.summary else spec.summary


def rule_text(rule: str) -> str:
    """The parity rule as people write it: real minus signs, ≤."""
    return esc(rule).replace(" - ", f" {MINUS} ").replace("&lt;=", "≤")


def row_details(entry: ModelEntry, row: dict) -> str:
    """What a comparison row shows on demand: its rule and every output's values. A row's further explanation
    (how each layer of this copy differs from the original) belongs here too, opened from the same row."""
    values = "<br>".join(f"{esc(n)}: {values_text(v, len(v))}" for n, v in row["outputs"].items())
    reason = f"<br>{esc(row['reason'])}" if row["reason"] else ""
    stats = _stats(row.get("stats"))
    spread = f"<br>|Δ| mean · p99 · smallest atol that passes: {stats}" if stats != "–" else ""
    return (
        f"<details><summary>rule and values</summary>same answer means every {rule_text(row['rule'])} "
        f"(eager: the original PyTorch model){reason}{spread}<br>{values or 'no values'}</details>"
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


def _verdict(row: dict) -> str:
    if row["within_rule"] is None:
        return "✗ did not run" if not row["outputs"] else "? not compared"
    return "✓ yes" if row["within_rule"] else f"✗ NO: {esc(row['reason'])} (explain it below)"


def _answer_cell(entry: ModelEntry, row: dict) -> str:
    first = entry.output_names[0]
    vals = row["outputs"].get(first)
    if not vals:
        return "–"
    return f"{esc(first)} = {output_text(vals, kinds(entry).get(first, ''), COMPARE_VALUES)}"


def _class_of(entry: ModelEntry, row: dict) -> str | None:
    """The class a row's copy predicts, for a classifier; None otherwise."""
    spec = entry.outputs[0]
    vals = row["outputs"].get(spec["name"])
    if not spec.get("classes"):
        return None
    return esc(spec["classes"][int(np.argmax(vals))]) if vals else "–"


def _compare_row(entry: ModelEntry, row: dict) -> str:
    outside = row["within_rule"] is not True
    cls = _class_of(entry, row)
    cells = [
        ("same answer?", "verdict", _verdict(row)),
        (
            None,
            "copy",
            f"<b>{esc(row['label'])}</b><small>{esc(format_summary(row['format'], row['runtime']))}</small>",
        ),
        *([("class", "class", cls)] if cls is not None else []),
        ("answer", "answer", _answer_cell(entry, row)),
        ("ran on", "device", short_device(row["device"])),
        ("largest difference", "diff", _sci(row["max_abs_diff"])),
        ("time per call", "ms", "–" if row["latency_ms"] is None else f"{row['latency_ms']:.3f} ms"),
        ("file size", "size", size_text(row.get("bytes"))),
        (None, "details", row_details(entry, row)),
    ]
    tds = "".join(f'<td class="{c}"{f" data-label={chr(34)}{h}{chr(34)}" if h else ""}>{v}</td>' for h, c, v in cells)
    return (
        f'<tr class="{"outside" if outside else "within"}" data-format="{esc(row["format"])}" '
        f'data-runtime="{esc(row["runtime"])}">{tds}</tr>'
    )


def comparison(
    entry: ModelEntry, rows: Sequence[dict], device: str, values: Sequence[float] | None = None, key: dict | None = None
) -> str:
    """Service.compare's rows as one table, the verdict first; a row outside the rule or that did not run stands
    out; on a phone each row is a card."""
    heads = ["same answer?", "copy (file · engine)", *(["class"] if entry.outputs[0].get("classes") else [])]
    heads += ["answer", "ran on", "largest difference", "time per call", "file size", "details"]
    bad = sum(r["within_rule"] is not True for r in rows)
    verdict = (
        f"All {len(rows)} copies give the same answer."
        if not bad
        else f"{bad} of {len(rows)} cop{'ies' if len(rows) != 1 else 'y'} differ or did not run."
    )
    given = inputs_text(entry, values)
    body = "".join(_compare_row(entry, row) for row in rows)
    return (
        f'<div class="compare"{for_attr(key)}><p class="lead">{LEAD}</p>'
        f'<p class="headline">{verdict}</p>'
        f'<p class="ran">{esc(entry.name)}{f", for {given}" if given else ""}, asked for {esc(device)}.</p>'
        f'<table id="compare-table"><thead><tr>{"".join(f"<th>{esc(h)}</th>" for h in heads)}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def format_note(entry: ModelEntry, fmt: str, missing: str | None = None, p50_us: float | None = None) -> str:
    """One line under the format picker: what the chosen copy is, its file size, how close it came to the
    original at export and (`p50_us`, from the last `python -m pipeline bench`) its median time per call; and,
    when the model has no copy in the format asked for, that the default is shown instead."""
    spec = formats.get(fmt)
    art = entry.artifacts.get(spec.artifact_kind)
    rows = [r for r in (entry.raw.get("parity") or {}).get("rows") or [] if r.get("format") == fmt]
    diffs = [r["max_abs"] for r in rows if isinstance(r.get("max_abs"), (int, float))]
    close = f"; at export its answers were within {_sci(max(diffs))} of the original's" if diffs else ""
    size = f"; file {size_text(art.bytes)}" if art is not None else ""
    speed = f"; {p50_us / 1000:.3g} ms per call (median, last bench)" if p50_us else ""
    line = f"{esc(format_summary(fmt))}{size}{close}{speed}."
    if missing:
        why = entry.not_applicable.get(missing)
        because = f" ({esc(why)})" if why else ""
        line = (
            f"<b>{esc(entry.name)} has no {esc(formats.get(missing).label)}{because}: showing "
            f"{esc(formats.label(fmt))}, the default.</b><br>{line}"
        )
    return f'<p class="format-note">{line}</p>'


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
