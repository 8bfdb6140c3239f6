"""The page: its controls, its result area and model panel, and what each of its events does.

`build(svc, entries)` lays the page out inside the caller's gr.Blocks and wires it. Top to bottom a
newcomer meets: the model (opening on one whose answer a person can check in their head), its inputs,
Predict, its examples, then the choice of copy (format and runtime) and device; on the right the
answer. `SCRIPT` (demo/page.js) is the page's own script: it marks an answer stale when the form moves on after it
was asked for (a late answer, a stroke on a drawing), lets typing replace the model's name, and greys
out CUDA where no runtime can use it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from demo import explanation, model_panel, private_temp_dir, views, widgets
from demo.api import attempt
from pipeline import formats
from pipeline.artifacts.manifest import ManifestError, ModelEntry
from pipeline.artifacts.tensors import count_text, width
from pipeline.errors import UserError
from pipeline.runtime.predictor import DEVICES
from pipeline.runtime.targets import cuda_unavailable_reason
from pipeline.serving.service import Service

OPENING = "adder_mynet"  # the first screen's model: its answer (x1 + x2) is one a person checks in their head
PLOT_MAX = 64  # outputs with 2..PLOT_MAX values (class scores aside) are also drawn as a bar chart
INTRO = (
    "# seed-pipeline demo\n"
    "Give a small trained model an input and press **Predict** for its answer. **Compare all formats** checks that "
    "every exported copy of it (ONNX, TorchScript, …) gives the same answer as the original PyTorch model."
)


# ---- what the page says about a model ---------------------------------------------------------------------


def source(entry: ModelEntry) -> str:
    """Where a model comes from: "seed 004 §10.9-10.13" for a seed model, else its catalog file's name."""
    path = str((entry.raw.get("catalog") or {}).get("path") or "")
    if path.endswith(".py"):
        return Path(path).name
    return f"seed {entry.seed}" if entry.seed else (path or "source unknown")


def model_label(entry: ModelEntry) -> str:
    """The model picker's name for `entry`: "adder_mynet · seed 004 §10.9-10.13"."""
    return f"{entry.name} · {source(entry)}"


def model_info(entry: ModelEntry) -> str:
    """One paragraph under the picker: what the model is, what it takes and gives."""
    outs = ", ".join(f"{o['name']} ({count_text(o)})" for o in entry.outputs)
    ins = ", ".join(f"{t['name']} ({count_text(t)} {t.get('dtype', 'float32')})" for t in entry.inputs)
    return f"{entry.description}. Input: {ins}; outputs: {outs}."


def opening(entries: Sequence[ModelEntry]) -> ModelEntry:
    """The model the page opens on: OPENING when the manifest has it, else the first one."""
    return next((e for e in entries if e.name == OPENING), entries[0])


def default_format(served: Sequence[str]) -> str:
    return formats.DEFAULT_FORMAT if formats.DEFAULT_FORMAT in served else served[0]


def bench_p50_us(svc: Service, model: str, fmt: str) -> float | None:
    """The median time per call of `model` in `fmt` (its default runtime, on the CPU) that the last
    `python -m pipeline bench` measured (ARTIFACTS/bench.json), or None when there is no such figure."""
    try:
        rows = json.loads((svc.artifacts / "bench.json").read_text()).get("latency") or []
    except (OSError, ValueError, AttributeError):
        return None
    runtime = formats.get(fmt).default_runtime
    for row in rows:
        if isinstance(row, dict) and (row.get("model"), row.get("format"), row.get("runtime")) == (model, fmt, runtime):
            p50 = row.get("predictor_p50_us")
            if views.short_device(str(row.get("device", ""))) == "CPU" and isinstance(p50, (int, float)):
                return float(p50)
    return None


def note(svc: Service, entry: ModelEntry, fmt: str, missing: str | None = None) -> str:
    """The line under the format picker for `entry` in `fmt` (views.format_note), with the bench's speed."""
    return views.format_note(entry, fmt, missing, bench_p50_us(svc, entry.name, fmt))


def image(svc: Service, rel: str | None) -> Any:
    """A PNG the manifest lists (loss.png, lr_study.png), as a PIL image; None when there is none."""
    manifest = svc.manifest
    if not rel or manifest is None:
        return None
    try:
        from PIL import Image

        with Image.open(manifest.path_of(rel)) as img:
            return img.convert("RGB")
    except (OSError, ManifestError):
        return None


def chart(entry: ModelEntry, result: dict) -> Any:
    """The outputs with a few values (the hidden layer, not class scores: those are bars already) as one bar
    chart, titled by what it shows."""
    import pandas as pd

    first = entry.output_names[0]
    plotted = [o for o in entry.outputs if 2 <= len(result["outputs"][o["name"]]) <= PLOT_MAX and not o.get("classes")]
    rows = []
    for spec in plotted:
        values = result["outputs"][spec["name"]]
        names = spec["features"] or [f"{spec['name']}[{i}]" for i in range(len(values))]
        for feat, v in zip(names, values, strict=True):
            label = feat if len(plotted) == 1 else f"{spec['name']}:{feat}"
            rows.append({"value name": label, "value": v, "output": spec["name"]})
    if not rows:
        return gr.update(visible=False, value=None)
    titles = [
        f"{o['name']}: its {width(o)} values"
        + (f" (a secondary output; the answer is {first})" if o["name"] != first else "")
        for o in plotted
    ]
    frame = pd.DataFrame(rows)
    return gr.update(visible=True, value=frame, sort=list(frame["value name"]), label=" · ".join(titles))


# ---- the layout ---------------------------------------------------------------------------------------------


@dataclass
class Form:
    """The left column: the model, its inputs, the actions, the examples, the copy and the device."""

    model: Any
    info: Any
    fields: list[Any] = field(default_factory=list)  # every model's input widgets, one after another
    slots: dict[str, tuple[int, int, list]] = field(default_factory=dict)  # model -> (start, stop, layout)
    groups: dict[str, list[Any]] = field(default_factory=dict)  # model -> its groups (inputs, examples)
    examples: list[Any] = field(default_factory=list)
    run: Any = None
    compare: Any = None
    fmt: Any = None
    note: Any = None
    device: Any = None


@dataclass
class Results:
    """The right column: the answer (HTML), the chart of secondary outputs, the raw JSON, and the answer shown."""

    html: Any
    chart: Any
    raw: Any
    shown: Any

    @property
    def outputs(self) -> list[Any]:
        return [self.html, self.chart, self.raw, self.shown]


@dataclass
class Panel:
    """The model panel under both columns: figures, loss curve, seed figure, activation plot, parity."""

    figures: Any
    loss: Any
    caption: Any
    figure: Any
    activation: Any
    parity_md: Any
    parity: Any

    @property
    def outputs(self) -> list[Any]:
        return [self.figures, self.loss, self.caption, self.figure, self.activation, self.parity_md, self.parity]


def _inputs(form: Form, entries: Sequence[ModelEntry], first: ModelEntry) -> None:
    for entry in entries:
        with gr.Group(visible=entry is first, elem_id=f"input-{entry.name}") as group:
            inputs, layout = widgets.input_form(entry)
        form.slots[entry.name] = (len(form.fields), len(form.fields) + len(inputs), layout)
        form.fields.extend(inputs)
        form.groups[entry.name] = [group]


def _examples(form: Form, entries: Sequence[ModelEntry], first: ModelEntry) -> None:
    folder = private_temp_dir() / "examples"  # served by Gradio: its own temp folder, private to this process
    folder.mkdir(exist_ok=True)
    for entry in entries:
        start, stop, layout = form.slots[entry.name]
        with gr.Column(visible=entry is first, min_width=160) as group:
            ex = widgets.examples_for(entry, form.fields[start:stop], layout, folder)
        form.groups[entry.name].append(group)
        if ex is not None:
            form.examples.append(ex)


def _choices(svc: Service, form: Form, first: ModelEntry) -> None:
    served = first.served_formats()
    chosen = default_format(served)
    form.fmt = gr.Radio(
        choices=[(formats.label(f), f) for f in served],
        value=chosen,
        label="Which copy runs it (file · engine)",
        elem_id="format-picker",
    )
    form.note = gr.HTML(note(svc, first, chosen), elem_id="format-note")
    reason = cuda_unavailable_reason()
    form.device = gr.Radio(
        choices=list(DEVICES),
        value="cpu",
        label="Device",
        info=(f"cuda is unavailable: {reason}; auto runs on the CPU" if reason else "auto: CUDA if it loads"),
        elem_id="device-picker",
    )


def _form(svc: Service, entries: Sequence[ModelEntry], first: ModelEntry) -> Form:
    form = Form(
        model=gr.Dropdown(
            choices=[(model_label(e), e.name) for e in entries],
            value=first.name,
            label="Model",
            elem_id="model-picker",
        ),
        info=gr.Markdown(model_info(first), elem_id="model-info"),
    )
    _inputs(form, entries, first)
    with gr.Row():
        form.run = gr.Button("Predict", variant="primary", elem_id="predict-button", min_width=120)
        form.compare = gr.Button("Compare all formats", elem_id="compare-button", min_width=120)
    _examples(form, entries, first)
    _choices(svc, form, first)
    return form


def _results(first: ModelEntry) -> Results:
    html = gr.HTML(views.placeholder(first), elem_id="prediction", padding=True)
    bars = gr.BarPlot(
        x="value name", y="value", color="output", visible=False, show_label=True, elem_id="prediction-chart"
    )
    with gr.Accordion("API response (JSON)", open=False):
        raw = gr.JSON(elem_id="prediction-json")
    return Results(html, bars, raw, gr.State(None))  # shown: the answer on screen, to mark stale on change


def panel_values(svc: Service, entry: ModelEntry) -> tuple:
    """The model panel's values for `entry`, in Panel.outputs' order."""
    figure, caption = model_panel.seed_figure(entry)
    frame = model_panel.activation_frame(entry.raw.get("activation"))
    text, rows = model_panel.parity(entry)
    return (
        model_panel.figures_md(entry),
        image(svc, entry.raw.get("plot")),
        gr.update(value=f"**{caption}**" if caption else "", visible=figure is not None),
        gr.update(value=image(svc, figure), visible=figure is not None),
        gr.update(value=frame, visible=frame is not None),
        text,
        gr.update(value=rows),
    )


def _panel(svc: Service, first: ModelEntry) -> Panel:
    values = panel_values(svc, first)
    figure, caption = model_panel.seed_figure(first)
    frame = model_panel.activation_frame(first.raw.get("activation"))
    with gr.Accordion("The model: training, figures and the parity check at export", open=True):
        figures = gr.Markdown(values[0], elem_id="model-summary")
        with gr.Row():
            with gr.Column(min_width=280):
                gr.Markdown("**Training loss**", elem_id="loss-caption")
                loss = gr.Image(values[1], show_label=False, interactive=False, elem_id="loss-curve")
            with gr.Column(min_width=280):
                cap = gr.Markdown(f"**{caption}**", visible=figure is not None, elem_id="seed-figure-caption")
                seed = gr.Image(  # no buttons: they would lie over the figure's top row of titles
                    image(svc, figure),
                    show_label=False,
                    buttons=[],
                    visible=figure is not None,
                    interactive=False,
                    elem_id="seed-figure",
                )
            activation = gr.LinePlot(
                x="x",
                y="value",
                color="function",
                value=frame,
                visible=frame is not None,
                label="Activation (seed 004 §11.3.2 draws sigmoid, ReLU and tanh)",
                elem_id="activation-plot",
                min_width=280,
            )
        parity_md = gr.Markdown(values[5], elem_id="parity-rule")
        parity = gr.Dataframe(
            value=model_panel.parity(first)[1],
            headers=model_panel.PARITY_COLUMNS,
            interactive=False,
            label="Parity at export",
            elem_id="parity",
        )
    return Panel(figures, loss, cap, seed, activation, parity_md, parity)


def build(svc: Service, entries: list[ModelEntry]) -> None:
    """The page for `entries`, laid out inside the current gr.Blocks and wired to `svc`."""
    first = opening(entries)
    gr.Markdown(INTRO, elem_id="intro")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=300):
            form = _form(svc, entries, first)
        with gr.Column(scale=3, min_width=300):
            results = _results(first)
            explain = _explain_components()
    panel = _panel(svc, first)
    _wire_model(svc, entries, form, results, panel)
    _wire_stale(svc, form, results)
    compared = _wire_actions(svc, form, results)
    _wire_explain(svc, explain, form.model, compared, results.raw)


# ---- the events ---------------------------------------------------------------------------------------------

HIDDEN = gr.update(visible=False, value=None)


def _wire_model(svc: Service, entries: Sequence[ModelEntry], form: Form, results: Results, panel: Panel) -> None:
    """A new model: its inputs, its copies (the one asked for if it has it, else the default, said so), its panel."""
    groups = [g for e in entries for g in form.groups[e.name]]

    def on_model(name: str, asked: str | None):
        entry = svc.entry(name)
        served = entry.served_formats()
        fmt = asked if asked in served else default_format(served)
        missing = asked if asked in formats.FORMATS and asked not in served else None
        return (
            *[gr.update(visible=e.name == entry.name) for e in entries for _ in form.groups[e.name]],
            gr.update(choices=[(formats.label(f), f) for f in served], value=fmt),
            note(svc, entry, fmt, missing),
            model_info(entry),
            *panel_values(svc, entry),
            views.placeholder(entry),
            HIDDEN,
            None,
            None,
        )

    form.model.change(
        on_model,
        inputs=[form.model, form.fmt],
        outputs=[*groups, form.fmt, form.note, form.info, *panel.outputs, *results.outputs],
        api_visibility="private",
    )

    def on_format(name: str, fmt: str) -> str:
        try:
            entry = svc.entry(name)
        except UserError:
            return ""
        return note(svc, entry, fmt) if fmt in entry.served_formats() else ""

    form.fmt.input(on_format, inputs=[form.model, form.fmt], outputs=form.note, api_visibility="private", queue=False)


def _wire_stale(svc: Service, form: Form, results: Results) -> None:
    """Any change of input, copy or device: the answer on screen no longer belongs to the form."""

    def on_input(name: str, previous: str | None):
        try:
            entry = svc.entry(name)
        except UserError:
            entry = None
        return views.stale(previous, entry), gr.update(visible=False), None, previous

    stale = dict(fn=on_input, inputs=[form.model, results.shown], outputs=results.outputs, api_visibility="private")
    for component in (form.fmt, form.device, *form.fields):
        if isinstance(component, gr.ImageEditor):
            # An input or change listener makes the editor send a blob id in place of its picture, and an upload
            # listener that calls the server also fires when Predict itself uploads the canvas, marking the fresh
            # answer stale. The editor needs an upload listener to take an uploaded picture as its value (without
            # one, Predict right after an upload sent the picture it held before), so it gets one that takes and
            # changes nothing (a listener with no backend would answer a request for it with a 500); the page's
            # script marks the answer stale on a stroke, an upload or a clear.
            component.upload(_nothing, queue=False, api_visibility="private")
        else:
            component.input(**stale, queue=False)


def _nothing() -> None:
    """An event that needs a listener and nothing else (the image editor's upload)."""


def form_key(svc: Service, form: Form, name: str, fmt: str | None, device: str, values: Sequence[Any]) -> dict:
    """What the form held when an answer was asked for, as the page's script reads the form back: the model's
    name in the picker, the copy, the device and each field (a picture aside: its strokes are watched)."""
    start, stop, _ = form.slots[name]
    fields = {}
    for component, value in zip(form.fields[start:stop], values[start:stop], strict=True):
        if not isinstance(component, gr.ImageEditor):
            fields[component.elem_id] = value if value is None or isinstance(value, str) else float(value)
    return {"model": model_label(svc.entry(name)), "format": fmt, "device": device, "fields": fields}


def _wire_actions(svc: Service, form: Form, results: Results) -> Any:
    """Predict (the button, Enter in an input, a click on an example) and Compare all formats."""

    def features_of(name: str, values: Sequence[Any]) -> Any:
        start, stop, layout = form.slots[name]
        return widgets.given_values(svc.entry(name), layout, values[start:stop])

    def on_predict(name: str, fmt: str, device: str, *values: Any):
        features, why = attempt("input", lambda: features_of(name, values))
        answer, why = (None, why) if why else attempt("prediction", lambda: svc.predict(name, fmt, device, features))
        if why:  # the reason stays in the result area, in full, until the next action
            return views.error(why), HIDDEN, {"error": why}, None
        entry, key = svc.entry(name), form_key(svc, form, name, fmt, device, values)
        flat = features if isinstance(features, list) else None
        page = views.result(entry, answer, flat, features, key)
        return page, chart(entry, answer), answer, page

    def on_compare(name: str, device: str, *values: Any):
        features, why = attempt("input", lambda: features_of(name, values))
        rows, why = (None, why) if why else attempt("comparison", lambda: svc.compare(name, device, features))
        if why:
            return views.error(why, "Compare"), HIDDEN, {"error": why}, None
        key = form_key(svc, form, name, None, device, values)
        flat = features if isinstance(features, list) else None
        page = views.comparison(svc.entry(name), rows, device, flat, key)
        return page, HIDDEN, rows, page

    common = dict(outputs=results.outputs, api_visibility="private", concurrency_id="predict")
    predict = dict(fn=on_predict, inputs=[form.model, form.fmt, form.device, *form.fields], **common)
    form.run.click(**predict)
    for component in form.fields:  # Enter in an input runs Predict (an image editor has no Enter)
        if hasattr(component, "submit"):
            component.submit(**predict)
    for ex in form.examples:  # a click on an example fills it, then runs it
        ex.load_input_event.then(**predict)
    return form.compare.click(on_compare, inputs=[form.model, form.device, *form.fields], **common)


def _explain_components() -> tuple[Any, Any, Any, Any]:
    """Under a comparison: pick a row and see where it parts from eager (shown at once for a row outside its rule)."""
    with gr.Group(visible=False, elem_id="explain-panel") as panel:
        with gr.Row():
            row = gr.Dropdown(label="Explain a row layer by layer", elem_id="explain-row", scale=3)
            button = gr.Button("Explain", elem_id="explain-button", scale=1, min_width=100)
        shown = gr.HTML(elem_id="explanation")
    return panel, row, button, shown


def _wire_explain(svc: Service, components: tuple, model: Any, compared: Any, raw: Any) -> None:
    """After a comparison, list its rows to explain and explain the first row outside its rule at once."""
    panel, row, button, shown = components

    def explain(name: str, choice: str | None) -> str:
        if not choice:
            return ""
        fmt, _, runtime = choice.partition("|")
        result, why = attempt("explanation", lambda: svc.explain(name, fmt, runtime))
        return views.error(why, "Explain") if why else explanation.explanation(result)

    def on_compared(name: str, rows: Any):
        if not isinstance(rows, list) or not rows:
            return gr.update(visible=False), gr.update(choices=[], value=None), ""
        local = [r for r in rows if r.get("runtime") in formats.RUNTIMES and r.get("format") != formats.REFERENCE[0]]
        choices = [(f"{r['label']}{'' if r['within_rule'] else ' (outside its rule)'}", _key(r)) for r in local]
        outside = next((r for r in local if r["within_rule"] is False), None)
        chosen = _key(outside) if outside else (choices[0][1] if choices else None)
        text = explain(name, chosen) if outside else "Pick a row and press Explain to see it layer by layer."
        return gr.update(visible=bool(choices)), gr.update(choices=choices, value=chosen), text

    compared.then(on_compared, inputs=[model, raw], outputs=[panel, row, shown], api_visibility="private")
    button.click(explain, inputs=[model, row], outputs=shown, api_visibility="private", concurrency_id="predict")
    model.change(lambda: (gr.update(visible=False), ""), outputs=[panel, shown], api_visibility="private")


def _key(row: dict) -> str:
    return f"{row['format']}|{row['runtime']}"


SCRIPT = Path(__file__).with_name("page.js")


def script() -> str:
    """The page's script (demo/page.js), told why CUDA is unavailable here (null: it is available)."""
    reason = cuda_unavailable_reason()
    code = SCRIPT.read_text(encoding="utf-8").split("\n", 3)[3]  # its header comment is for readers of the file
    return code.replace("__CUDA_REASON__", json.dumps(f"cuda is unavailable: {reason}" if reason else None))
