"""The input widgets of one model, chosen from what its manifest entry declares, and their values.

A model that takes one row of a few floats gets a number field per feature; a wide row, a text area.
Any other model gets one widget per input: an image to draw or upload for an input that declares an
image (turned into the tensor by the preprocessing it declares), a number per feature for a few named
floats, and a text area for long vectors or integer ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gradio as gr
import numpy as np

from pipeline.artifacts.manifest import ModelEntry
from pipeline.artifacts.tensors import dtype, dtype_of, examples_batch, shape, width
from pipeline.dtypes import DEFAULT_DTYPE
from pipeline.runtime.inputs import InputError

SMALL_INPUT = 16  # up to this many features: one number field each; wider inputs: one text area
CANVAS = 280  # the drawing canvas, in pixels a side
# The blank border kept around a drawing's ink, as a share of its size. None: load_digits' digits touch the top
# and bottom of their frame; a 15 % border shrank held-out digits uploaded as pictures until 29 % were read right.
INK_MARGIN = 0.0


def features_text(values: Sequence[Any]) -> str:
    """Numbers for a text area: .9g, so float32 round-trips exactly; whole numbers as integers."""
    return ", ".join(str(int(v)) if isinstance(v, (int, np.integer)) else format(float(v), ".9g") for v in values)


def image_values(picture: Any, image: dict[str, Any]) -> list[float]:
    """A drawn or uploaded picture as the input the spec declares: grayscale, cropped to its ink, squared and centred
    (the ink filling the frame, as load_digits' digits do), resized to (height, width), ink mapped to [low, high]."""
    from PIL import Image

    if isinstance(picture, dict):  # the editor's value: the composite of background and strokes
        picture = picture.get("composite") if picture.get("composite") is not None else picture.get("background")
    if picture is None:
        raise InputError(f"draw or upload a picture for the {image['height']}x{image['width']} input")
    arr = np.asarray(picture, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[2] == 4:  # transparent pixels are paper
        alpha = arr[..., 3:] / 255.0
        arr = arr[..., :3] * alpha + 255.0 * (1 - alpha)
    gray = arr.mean(axis=2) if arr.ndim == 3 else arr
    ink = 1.0 - gray / 255.0 if image.get("ink", "dark") == "dark" else gray / 255.0
    rows, cols = np.nonzero(ink > 0.1)
    if rows.size and ink.shape[0] > 2 * image["height"]:  # a large drawing: crop to its ink, square, with margin
        top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        side = int(max(bottom - top, right - left) * (1 + 2 * INK_MARGIN)) + 1
        square = np.zeros((side, side))
        r0, c0 = (side - (bottom - top)) // 2, (side - (right - left)) // 2
        square[r0 : r0 + bottom - top, c0 : c0 + right - left] = ink[top:bottom, left:right]
        ink = square
    small = Image.fromarray((ink * 255).astype(np.uint8)).resize((image["width"], image["height"]), Image.BOX)
    scaled = image["low"] + (np.asarray(small, dtype=np.float64) / 255.0) * (image["high"] - image["low"])
    return scaled.ravel().round(4).tolist()


def _example_values(entry: ModelEntry) -> dict[str, np.ndarray]:
    batch = examples_batch(entry.inputs, entry.examples[:1]) if entry.examples else None
    if batch is None:
        return {t["name"]: np.zeros(shape(t), dtype=np.float32) for t in entry.inputs}
    arrays = batch if isinstance(batch, dict) else {entry.inputs[0]["name"]: batch}
    return {k: v[0] for k, v in arrays.items()}


def input_form(entry: ModelEntry) -> tuple[list[Any], list[tuple[str, str, int]], Any]:
    """The widgets for `entry`, their layout [(input name, kind, how many widgets)], and its example rows or None.

    Kinds: "numbers" (a field per feature), "text" (a text area), "image" (draw or upload)."""
    example = _example_values(entry)
    widgets: list[Any] = []
    layout: list[tuple[str, str, int]] = []
    for t in entry.inputs:
        made, kind = _input_widgets(entry, t, example[t["name"]])
        widgets += made
        layout.append((t["name"], kind, len(made)))
    examples = None
    if entry.examples and all(kind != "image" for _, kind, _ in layout):
        examples = _examples(entry, widgets, layout)
    return widgets, layout, examples


def _input_widgets(entry: ModelEntry, t: dict[str, Any], values: np.ndarray) -> tuple[list[Any], str]:
    """The widgets for one input, filled with `values`, and their kind: an image editor, a field per feature
    (a short row of floats), else one text area."""
    name = t["name"]
    label = f"{name}: " if len(entry.inputs) > 1 else ""
    if t.get("image"):
        img = t["image"]
        editor = gr.ImageEditor(
            label=f"{label}draw (dark on light) or upload a picture; it becomes {img['height']}x{img['width']}",
            sources=["upload", "clipboard"],
            type="numpy",
            canvas_size=(CANVAS, CANVAS),
            brush=gr.Brush(colors=["#000000"], default_size=22, color_mode="fixed"),
            elem_id=f"{entry.name}-{name}",
        )
        return [editor], "image"
    if dtype(t) == DEFAULT_DTYPE and len(shape(t)) == 1 and t["features"] and width(t) <= SMALL_INPUT:
        with gr.Row():
            fields = [
                gr.Number(label=f"{label}{feat}", value=float(values[i]), elem_id=f"{entry.name}-{feat}", min_width=80)
                for i, feat in enumerate(t["features"])
            ]
        return fields, "numbers"
    kind = "whole numbers" if dtype_of(t).whole else "numbers"
    bounds = f" from {t['values'][0]} to {t['values'][1] - 1}" if t.get("values") else ""
    text = gr.Textbox(
        value=features_text(values.ravel().tolist()),
        lines=3 if width(t) <= 64 else 6,
        max_lines=12,
        label=f"{label}{width(t)} {kind}{bounds} (shape {list(shape(t))}), separated by commas or "
        "spaces, or a JSON list",
        elem_id=f"{entry.name}-{name}" if len(entry.inputs) > 1 else f"{entry.name}-features",
    )
    return [text], "text"


def _examples(entry: ModelEntry, widgets: list[Any], layout: list[tuple[str, str, int]]) -> Any:
    """The catalog examples as rows of the widgets' values; a click fills the widgets and runs one."""
    rows = []
    for ex in entry.examples:
        values = ex if isinstance(ex, dict) else {entry.inputs[0]["name"]: ex}
        row: list[Any] = []
        for name, kind, _ in layout:
            flat = np.asarray(values[name]).ravel().tolist()
            row += [float(v) for v in flat] if kind == "numbers" else [features_text(flat)]
        rows.append(row)
    return gr.Examples(
        examples=rows,
        inputs=widgets,
        label=f"{entry.name}: catalog examples (a click fills and runs one)",
        example_labels=[f"catalog example {i + 1}" for i in range(len(rows))],
        api_visibility="private",
    )


def given_values(entry: ModelEntry, layout: list[tuple[str, str, int]], values: Sequence[Any]) -> Any:
    """What the widgets hold, as the service takes it: the text or numbers of a one-input row model,
    else input name -> text, numbers or an image's values."""
    out: dict[str, Any] = {}
    at = 0
    for name, kind, count in layout:
        given = values[at : at + count]
        at += count
        if kind == "image":
            image = next(t["image"] for t in entry.inputs if t["name"] == name)
            out[name] = image_values(given[0], image)
        else:
            out[name] = given[0] if kind == "text" else list(given)
    return out[entry.inputs[0]["name"]] if entry.flat else out
