"""The input widgets of one model, chosen from what its manifest entry declares, and their values.

A model that takes one row of a few floats gets a number field per feature; a wide row, a text area.
Any other model gets one widget per input: an image to draw or upload for an input that declares an
image (turned into the tensor by the preprocessing it declares), a number per feature for a few named
floats, and a text area for long vectors or integer ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from demo import private_temp_dir
from demo.pictures import picture_editor
from demo.server import PICTURES, UPLOADS
from pipeline.artifacts.manifest import ModelEntry
from pipeline.artifacts.tensors import count_text, dtype, dtype_of, examples_batch, shape, shape_text, width
from pipeline.dtypes import DEFAULT_DTYPE
from pipeline.runtime.inputs import InputError

SMALL_INPUT = 16  # up to this many features: one number field each; wider inputs: one text area
CANVAS = PICTURES.side  # the drawing canvas, in pixels a side: the largest picture the demo takes (demo/server.py)
# The blank border kept around a drawing's ink, as a share of its size. None: load_digits' digits touch the top
# and bottom of their frame; a 15 % border shrank held-out digits uploaded as pictures until 29 % were read right.
INK_MARGIN = 0.0


def short(v: Any) -> str:
    """A float32 value as the fewest digits that read back as the same float32 ("-0.93", not "-0.930000007");
    whole numbers as integers."""
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return np.format_float_positional(np.float32(v), unique=True, trim="-")


def features_text(values: Sequence[Any]) -> str:
    """Numbers for a text area, each as short as reads back exactly in float32."""
    return ", ".join(short(v) for v in values)


def picture_of(values: Any, image: dict[str, Any], scale: int = CANVAS // 8) -> np.ndarray:
    """An example of an image input as a person would draw it: ink mapped back from [low, high] to dark on
    white (or light on black), each value a `scale`-pixel square, RGB bytes."""
    arr = np.asarray(values, dtype=np.float64).reshape(image["height"], image["width"])
    share = np.clip((arr - image["low"]) / ((image["high"] - image["low"]) or 1.0), 0.0, 1.0)
    grey = 255.0 * (1 - share if image.get("ink", "dark") == "dark" else share)
    big = np.kron(grey, np.ones((scale, scale))).round().astype(np.uint8)
    return np.stack([big] * 3, axis=-1)


def image_values(picture: Any, image: dict[str, Any]) -> list[float]:
    """A drawn or uploaded picture as the input the spec declares: grayscale, cropped to its ink, squared and centred
    (the ink filling the frame, as load_digits' digits do), resized to (height, width), ink mapped to [low, high]."""
    from PIL import Image

    if isinstance(picture, dict) and picture.get("refused"):  # the picture was not within the budget (demo/pictures.py)
        raise InputError(picture["refused"])
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


def input_form(entry: ModelEntry) -> tuple[list[Any], list[tuple[str, str, int]]]:
    """The widgets for `entry`, filled with its first example, and their layout [(input name, kind, how many)].

    Kinds: "numbers" (a field per feature), "text" (a text area), "image" (draw or upload)."""
    example = _example_values(entry)
    widgets: list[Any] = []
    layout: list[tuple[str, str, int]] = []
    for t in entry.inputs:
        made, kind = _input_widgets(entry, t, example[t["name"]])
        widgets += made
        layout.append((t["name"], kind, len(made)))
    return widgets, layout


def _input_widgets(entry: ModelEntry, t: dict[str, Any], values: np.ndarray) -> tuple[list[Any], str]:
    """The widgets for one input, filled with `values`, and their kind: an image editor, a field per feature
    (a short row of floats), else one text area."""
    name = t["name"]
    label = f"{name}: " if len(entry.inputs) > 1 else ""
    if t.get("image"):
        img = t["image"]
        # Said above the canvas, not in its label: the editor's toolbar covers all but the label's first words.
        gr.Markdown(
            f"{label}It opens on a held-out example: press Predict, click another below the buttons, or clear the "
            "canvas to draw or upload a picture; the model "
            f"reads it as {img['height']}×{img['width']} (shown beside the answer).",
            elem_classes=["picture-help"],
        )
        folder = private_temp_dir() / "examples"  # where examples_for writes the held-out examples' pictures
        folder.mkdir(exist_ok=True)
        # The first held-out example on the canvas: an empty canvas made a newcomer's first Predict fail.
        first = _picture_file(entry, name, values.ravel().tolist(), folder / f"{entry.name}-{name}-0.png")
        editor = picture_editor(
            UPLOADS,
            value={"background": first, "layers": [], "composite": first},
            label=f"{label}draw or upload; the model reads it as {img['height']}×{img['width']}",
            show_label=False,
            elem_classes=["picture-input"],
            sources=["upload", "clipboard"],
            type="numpy",
            canvas_size=(CANVAS, CANVAS),
            fixed_canvas=True,  # an upload is fitted into the canvas, so the page never sends more than it
            layers=False,  # one drawing layer
            transforms=("crop",),  # no resize: the canvas stays CANVAS a side
            brush=gr.Brush(colors=["#000000"], default_size=22, color_mode="fixed"),
            elem_id=f"{entry.name}-{name}",
        )
        return [editor], "image"
    if dtype(t) == DEFAULT_DTYPE and len(shape(t)) == 1 and t["features"] and width(t) <= SMALL_INPUT:
        with gr.Row():
            fields = [
                gr.Number(
                    label=f"{label}{feat}", value=float(short(values[i])), elem_id=f"{entry.name}-{feat}", min_width=80
                )
                for i, feat in enumerate(t["features"])
            ]
        return fields, "numbers"
    kind = "whole numbers" if dtype_of(t).whole else "numbers"
    bounds = f" from {t['values'][0]} to {t['values'][1] - 1}" if t.get("values") else ""
    text = gr.Textbox(
        value=features_text(values.ravel().tolist()),
        lines=3 if width(t) <= 64 else 6,
        max_lines=12,
        label=f"{label}{count_text(t)} {kind}{bounds} (shape {shape_text(t)}), separated by commas or "
        "spaces, or a JSON list",
        elem_id=f"{entry.name}-{name}" if len(entry.inputs) > 1 else f"{entry.name}-features",
    )
    return [text], "text"


def example_label(entry: ModelEntry, example: Any) -> str:
    """An example named by its values: "x1 = 8, x2 = 9", "1000 numbers: −1, −0.93, −0.86, …"."""
    values = example if isinstance(example, dict) else {entry.inputs[0]["name"]: example}
    parts = []
    for t in entry.inputs:
        flat = np.asarray(values.get(t["name"], []), dtype=np.float64).ravel().tolist()
        feats = t.get("features") or []
        if len(flat) <= 4 and len(feats) == len(flat):
            parts.append(", ".join(f"{f} = {short(np.float32(v))}" for f, v in zip(feats, flat, strict=True)))
        else:
            head = ", ".join(short(np.float32(v)) for v in flat[:3])
            parts.append(f"{t['name']}: {len(flat)} numbers, {head}, …")
    return "; ".join(parts).replace("-", "\u2212")


def examples_for(entry: ModelEntry, widgets: list[Any], layout: list[tuple[str, str, int]], folder: Path) -> Any:
    """`entry`'s catalog examples as rows to click, each named by its values (a picture input: the pictures,
    written to `folder`); None when it has none."""
    if not entry.examples:
        return None
    rows = []
    for n, ex in enumerate(entry.examples):
        values = ex if isinstance(ex, dict) else {entry.inputs[0]["name"]: ex}
        row: list[Any] = []
        for name, kind, _ in layout:
            flat = np.asarray(values[name]).ravel().tolist()
            if kind == "image":
                row.append(_picture_file(entry, name, flat, folder / f"{entry.name}-{name}-{n}.png"))
            else:
                row += [float(short(v)) for v in flat] if kind == "numbers" else [features_text(flat)]
        rows.append(row)
    pictures = any(kind == "image" for _, kind, _ in layout)
    return gr.Examples(
        examples=rows,
        inputs=widgets,
        label="Held-out examples (a click loads and runs one)" if pictures else "Examples (a click fills and runs one)",
        example_labels=None if pictures else [example_label(entry, ex) for ex in entry.examples],
        elem_id=f"{entry.name}-examples",
        api_visibility="private",
    )


def _picture_file(entry: ModelEntry, name: str, values: list[float], path: Path) -> str:
    from PIL import Image

    image = next(t["image"] for t in entry.inputs if t["name"] == name)
    Image.fromarray(picture_of(values, image, scale=12)).save(path)
    return str(path)


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
