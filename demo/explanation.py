"""What the page shows when a compare row is explained: the layer table and a histogram of |Δ|.

A plain function of `Service.explain`'s answer (the same explanation `verify --explain` prints), so the
compare view only calls `explanation(...)` and the figure needs no plotting library: the histogram is an
inline SVG, one look telling whether one value or the whole output moved.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import numpy as np

BINS = 20  # histogram bars
WIDTH, HEIGHT, PAD = 420, 150, 28  # the histogram's size in CSS pixels

CSS = """
#explanation table { border-collapse: collapse; font-size: .92em; margin: .3em 0 .6em; }
#explanation th, #explanation td { text-align: left; padding: 2px 8px; white-space: nowrap; }
#explanation tr.beyond td { background: rgba(220, 38, 38, .16); }
#explanation tr.first td { background: rgba(220, 38, 38, .32); font-weight: 600; }
#explanation tr.most td { background: rgba(217, 119, 6, .25); font-weight: 600; }
#explanation .first-layer { font-size: 1.15em; font-weight: 600; margin: .2em 0 .4em; }
#explanation .scroll { overflow-x: auto; max-width: 100%; }
#explanation svg { max-width: 100%; height: auto; }
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(v: float | None) -> str:
    return "–" if v is None else f"{v:.3g}".replace("-", "\u2212")


def _shape(s: Sequence[int] | None) -> str:
    return "–" if s is None else "×".join(str(d) for d in s)


def histogram_svg(diffs: Sequence[float], bound: float | None = None, bins: int = BINS) -> str:
    """An SVG histogram of |Δ| (count per bin), with the rule's bound drawn as a line where it falls inside."""
    values = np.asarray(diffs, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not values.size:
        return "<p>No values to draw.</p>"
    top = float(values.max()) or 1.0
    counts, edges = np.histogram(values, bins=bins, range=(0.0, top))
    tall = int(counts.max()) or 1
    plot_w, plot_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD
    bar_w = plot_w / bins
    bars = "".join(
        f'<rect x="{PAD + i * bar_w:.1f}" y="{PAD + plot_h * (1 - c / tall):.1f}" width="{bar_w - 1:.1f}" '
        f'height="{plot_h * c / tall:.1f}" fill="#2563eb"><title>{c} values in [{_num(edges[i])}, '
        f"{_num(edges[i + 1])}]</title></rect>"
        for i, c in enumerate(counts.tolist())
    )
    rule = ""
    if bound is not None and 0 < bound <= top:
        x = PAD + plot_w * bound / top
        rule = (
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{PAD}" y2="{PAD + plot_h}" stroke="#dc2626" stroke-dasharray="4 3"/>'
            f'<text x="{x + 3:.1f}" y="{PAD + 10}" font-size="10" fill="#dc2626">bound</text>'
        )
    axis = (
        f'<line x1="{PAD}" x2="{PAD + plot_w}" y1="{PAD + plot_h}" y2="{PAD + plot_h}" stroke="currentColor"/>'
        f'<text x="{PAD}" y="{HEIGHT - 8}" font-size="10" fill="currentColor">0</text>'
        f'<text x="{PAD + plot_w}" y="{HEIGHT - 8}" font-size="10" text-anchor="end" fill="currentColor">'
        f"|Δ| {_num(top)}</text>"
        f'<text x="{PAD}" y="{PAD - 8}" font-size="10" fill="currentColor">{tall} values (tallest bar)</text>'
    )
    return (
        f'<svg class="histogram" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="histogram of |Δ| over {values.size} values">{bars}{rule}{axis}</svg>'
    )


def _layer_rows(layers: Sequence[dict], first: str | None) -> str:
    out = []
    for x in layers:
        cls = "first" if x["name"] == first else ("beyond" if x["beyond"] else "")
        mark = "◀ first beyond its rule" if x["name"] == first else ("beyond" if x["beyond"] else "")
        out.append(
            f'<tr class="{cls}"><td><code>{_esc(x["name"])}</code></td><td>{_esc(x["kind"])}</td>'
            f"<td>{_shape(x['shape'])}</td><td>{_num(x['max_abs'])}</td><td>{_num(x['bound'])}</td>"
            f"<td>{_esc(x['note'] or mark)}</td></tr>"
        )
    return "".join(out)


def _node_rows(nodes: Sequence[dict], most: str | None) -> str:
    return "".join(
        f'<tr class="{"most" if n["name"] == most else ""}"><td><code>{_esc(n["name"])}</code></td>'
        f"<td>{_esc(n['kind'])}</td><td>{_shape(n['shape'])}</td><td>{_num(n['max_abs'])}</td>"
        f"<td>{_num(n['loss'])}</td><td>{'◀ loses most' if n['name'] == most else ''}</td></tr>"
        for n in nodes
    )


def explanation(exp: dict[str, Any]) -> str:
    """Service.explain's answer as HTML: which layer is first beyond its rule, the layer table, the
    derived file's node table, and the histogram of |Δ| of the explained output."""
    first = exp.get("first_beyond")
    verdict = f"First layer beyond its rule: <code>{_esc(first)}</code>" if first else "Every layer is within its rule"
    head = "".join(f"<th>{h}</th>" for h in ("layer", "module", "shape", "max |Δ|", "bound", ""))
    parts = [
        f'<div class="explanation"><p class="first-layer">{verdict}</p>',
        f"<p>{_esc(exp['model'])} {_esc(exp['format'])} on {_esc(exp['runtime'])}: parity batch {exp['batch']} "
        f"({exp['batch_size']} examples) through eager and the artifact; rule {_esc(exp['rule'])}; "
        f"{_esc(exp['method'])}.</p>",
        f'<div class="scroll"><table class="layers"><tr>{head}</tr>{_layer_rows(exp["layers"], first)}</table></div>',
    ]
    if exp.get("nodes"):
        most = exp.get("loses_most")
        nhead = "".join(f"<th>{h}</th>" for h in ("value", "nodes", "shape", "max |Δ| vs float32", "rel loss", ""))
        parts.append(
            f"<p>Against the float32 ONNX file, value by value: "
            f"{'the nodes computing <code>' + _esc(most) + '</code> lose the most' if most else ''}.</p>"
            f'<div class="scroll"><table class="nodes"><tr>{nhead}</tr>{_node_rows(exp["nodes"], most)}</table></div>'
        )
    parts.append(
        f"<p>|Δ| of output <code>{_esc(exp['output'])}</code>, {len(exp['diffs'])} values:</p>"
        + histogram_svg(exp["diffs"], exp.get("bound"))
        + "</div>"
    )
    return "".join(parts)
