"""The Gradio demo: one example through any exported artifact, in torch or onnxruntime.

    python demo/app.py [--artifacts DIR] [--host 127.0.0.1] [--port N] [--threads N]

A thin face over `predict(model, fmt, device, features) -> dict`, which is
`pipeline.serving.service.Service.predict`: a plain function that can be called and tested without the UI.
`build_demo(service)` builds the page, and `demo` (the page for ./artifacts, built on first use) is
there as in Gradio's own demos; `create_app(artifacts)` puts the page, the Open Inference Protocol
routes and the request limits into one FastAPI app (demo/server.py) and `main()` serves it.
Nothing here imports torch: the torch runtimes import it on first use.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python demo/app.py` from a checkout that is not pip-installed
    sys.path.insert(0, str(ROOT))

# Importing the package first gives Gradio this process's own temp folder: Gradio reads GRADIO_TEMP_DIR when it
# is imported (demo/__init__.py).
import demo  # noqa: E402, F401

# isort: split
import fastapi  # noqa: E402
import gradio as gr  # noqa: E402

from demo import server, views, widgets  # noqa: E402
from demo.api import attempt  # noqa: E402
from pipeline import formats  # noqa: E402
from pipeline.artifacts.manifest import ManifestError, ModelEntry  # noqa: E402
from pipeline.artifacts.tensors import width  # noqa: E402
from pipeline.errors import UserError  # noqa: E402
from pipeline.runtime.predictor import DEVICES  # noqa: E402
from pipeline.runtime.targets import cuda_unavailable_reason  # noqa: E402
from pipeline.serving.service import Service  # noqa: E402

log = logging.getLogger("demo")

DEFAULT_ARTIFACTS = Path("artifacts")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
PLOT_MAX = 64  # outputs with 2..PLOT_MAX values are also drawn as a bar chart


# ---- the plain function ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def service(artifacts: Path | str = DEFAULT_ARTIFACTS) -> Service:
    """The Service for a directory, created once per process."""
    return Service(Path(artifacts).resolve())


def predict(model: str, fmt: str, device: str, features: str | list, artifacts: Path | str = DEFAULT_ARTIFACTS) -> dict:
    """`Service.predict` on the artifacts in `artifacts` (default ./artifacts), without any UI."""
    return service(artifacts).predict(model, fmt, device, features)


def api_predict(svc: Service) -> Callable[[str, str, str, str | list], dict]:
    """`svc.predict` as the page's public `predict` API: a failure becomes a gr.Error with one line."""

    def predict(model: str, fmt: str, device: str, features: str | list) -> dict:
        answer, why = attempt("prediction", lambda: svc.predict(model, fmt, device, features))
        if why:
            raise gr.Error(why, print_exception=False)
        return answer

    predict.__doc__ = Service.predict.__doc__
    return predict


def api_compare(svc: Service) -> Callable[[str, str, str | list], list[dict]]:
    """`svc.compare` as the page's public `compare` API: a failure becomes a gr.Error with one line."""

    def compare(model: str, device: str, features: str | list) -> list[dict]:
        rows, why = attempt("comparison", lambda: svc.compare(model, device, features))
        if why:
            raise gr.Error(why, print_exception=False)
        return rows

    compare.__doc__ = Service.compare.__doc__
    return compare


# ---- the face -------------------------------------------------------------------------------------


def _source(entry: ModelEntry) -> str:
    """Where a model comes from: its catalog file for a catalog model, else the seed file and section."""
    catalog = entry.raw.get("catalog") or {}
    if catalog.get("path"):
        return Path(catalog["path"]).name
    return f"seed {entry.seed}" if entry.seed else "source unknown"


def _model_label(entry: ModelEntry) -> str:
    return f"{entry.name} · {_source(entry)}"


def _model_info(entry: ModelEntry) -> str:
    outs = ", ".join(f"{o['name']} ({width(o)})" for o in entry.outputs)
    ins = ", ".join(f"{t['name']} ({width(t)} {t.get('dtype', 'float32')})" for t in entry.inputs)
    return f"**{entry.name}** — {_source(entry)}: {entry.description}  \ninput: {ins}; outputs: {outs}"


def _image(svc: Service, rel: str | None) -> Any:
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


def _chart(entry: ModelEntry, result: dict) -> Any:
    import pandas as pd

    rows = []
    plotted = [o for o in entry.outputs if 2 <= len(result["outputs"][o["name"]]) <= PLOT_MAX]
    for spec in plotted:
        values = result["outputs"][spec["name"]]
        names = spec["features"] or spec.get("classes") or [f"{spec['name']}[{i}]" for i in range(len(values))]
        for feat, v in zip(names, values, strict=True):
            label = feat if len(plotted) == 1 else f"{spec['name']}:{feat}"
            rows.append({"value name": label, "value": v, "output": spec["name"]})
    if not rows:
        return gr.update(visible=False, value=None)
    frame = pd.DataFrame(rows)
    return gr.update(
        visible=True,
        value=frame,
        sort=list(frame["value name"]),
        label=f"{' and '.join(o['name'] for o in plotted)} values",
    )


DISABLE_CUDA_JS = """
() => {
  const reason = %s;
  const disable = () => {
    document.querySelectorAll('#device-picker input[type="radio"]').forEach((input) => {
      if (input.value !== 'cuda' || input.disabled) return;
      input.disabled = true;
      const label = input.closest('label');
      if (label) { label.classList.add('unavailable'); label.title = reason; }
    });
  };
  disable();
  new MutationObserver(disable).observe(document.body, { childList: true, subtree: true });
}
"""


def build_demo(svc: Service) -> gr.Blocks:
    """The page over `svc`. Every event but the public `predict` and `compare` APIs is private to the page."""
    with gr.Blocks(title="seed-pipeline demo") as blocks:
        gr.Markdown(
            "# seed-pipeline: one example through any exported artifact\n"
            "Pick a model, an artifact (which picks the runtime) and a device, enter one example, "
            "and see the prediction, what it should be, what really ran it and how long it took; "
            "or compare every artifact and runtime on the same example."
        )
        # The APIs: typed, plain functions; their inputs and outputs are JSON, no components.
        gr.api(api_predict(svc), api_name="predict", api_description=Service.predict.__doc__)
        gr.api(api_compare(svc), api_name="compare", api_description=Service.compare.__doc__)
        manifest = svc.manifest
        if manifest is None or not manifest.models:
            gr.HTML(views.no_manifest(svc.artifacts, svc.error, DEFAULT_ARTIFACTS), elem_id="no-manifest")
            return blocks
        _build_page(svc, list(manifest.models.values()))
    return blocks


def _model_panel(svc: Service, entry: ModelEntry) -> tuple:
    """The model panel's values for `entry`: figures text, loss curve, seed figure, activation plot, parity."""
    figure, figure_label = views.seed_figure(entry)
    frame = views.activation_frame(entry.raw.get("activation"))
    text, rows = views.parity(entry)
    return (
        views.figures_md(entry),
        _image(svc, entry.raw.get("plot")),
        gr.update(value=_image(svc, figure), label=figure_label, visible=figure is not None),
        gr.update(value=frame, visible=frame is not None),
        text,
        gr.update(value=rows),
    )


def _build_page(svc: Service, entries: list[ModelEntry]) -> None:
    first = entries[0]
    reason = cuda_unavailable_reason()
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=300):
            model = gr.Dropdown(
                choices=[(_model_label(e), e.name) for e in entries],
                value=first.name,
                label="Model (source)",
                elem_id="model-picker",
            )
            model_info = gr.Markdown(_model_info(first), elem_id="model-info")
            served = first.served_formats()
            fmt = gr.Radio(
                choices=[(formats.label(f), f) for f in served],
                value=formats.DEFAULT_FORMAT if formats.DEFAULT_FORMAT in served else served[0],
                label="Artifact · runtime",
                elem_id="format-picker",
            )
            device = gr.Radio(
                choices=list(DEVICES),
                value="cpu",
                label="Device",
                info=(f"cuda is unavailable: {reason}; auto runs on the CPU" if reason else "auto: CUDA if it loads"),
                elem_id="device-picker",
            )
            groups, fields, slots, examples = [], [], {}, []
            for entry in entries:
                with gr.Group(visible=entry is first, elem_id=f"input-{entry.name}") as group:
                    inputs, layout, ex = widgets.input_form(entry)
                slots[entry.name] = (len(fields), len(fields) + len(inputs), layout)
                fields.extend(inputs)
                groups.append(group)
                if ex is not None:
                    examples.append(ex)
            with gr.Row():
                run = gr.Button("Predict", variant="primary", elem_id="predict-button", min_width=120)
                compare = gr.Button("Compare all formats", elem_id="compare-button", min_width=120)
        with gr.Column(scale=3, min_width=300):
            result_html = gr.HTML(views.placeholder(first), elem_id="prediction", padding=True)
            chart = gr.BarPlot(x="value name", y="value", color="output", visible=False, elem_id="prediction-chart")
            with gr.Accordion("API response (JSON)", open=False):
                raw = gr.JSON(elem_id="prediction-json")
    shown = gr.State(None)  # the answer in the result area, to mark stale when its inputs change
    panel = _model_panel(svc, first)
    with gr.Accordion("Model", open=True):
        figures = gr.Markdown(panel[0], elem_id="model-summary")
        with gr.Row():
            loss = gr.Image(panel[1], label="Training loss", interactive=False, elem_id="loss-curve", min_width=280)
            figure, figure_label = views.seed_figure(first)
            seed_figure = gr.Image(
                _image(svc, figure),
                label=figure_label,
                visible=figure is not None,
                interactive=False,
                elem_id="seed-figure",
                min_width=280,
            )
            frame = views.activation_frame(first.raw.get("activation"))
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
        parity_md = gr.Markdown(panel[4], elem_id="parity-rule")
        parity = gr.Dataframe(
            value=views.parity(first)[1],
            headers=views.PARITY_COLUMNS,
            interactive=False,
            label="Parity",
            elem_id="parity",
        )
    panel_outputs = [figures, loss, seed_figure, activation, parity_md, parity]
    results = [result_html, chart, raw, shown]

    def on_model(name: str):
        entry = svc.entry(name)
        fmts = entry.served_formats()
        return (
            *[gr.update(visible=e.name == entry.name) for e in entries],
            gr.update(choices=[(formats.label(f), f) for f in fmts]),
            _model_info(entry),
            *_model_panel(svc, entry),
            views.placeholder(entry),
            gr.update(visible=False, value=None),
            None,
            None,
        )

    model.change(
        on_model,
        inputs=model,
        outputs=[*groups, fmt, model_info, *panel_outputs, *results],
        api_visibility="private",
    )

    def on_input(name: str, previous: str | None):
        """Any change of input, format or device: the answer on screen no longer belongs to it."""
        try:
            entry = svc.entry(name)
        except UserError:
            entry = None
        return views.stale(previous, entry), gr.update(visible=False), None, previous

    stale = dict(fn=on_input, inputs=[model, shown], outputs=results, api_visibility="private", queue=False)
    for component in (fmt, device, *fields):
        if isinstance(component, gr.ImageEditor):
            # An input or change listener makes the editor send a blob id in place of its picture, and the first
            # Predict after an upload then found none; with neither, Predict uploads what the canvas shows.
            component.upload(**stale)
            component.clear(**stale)
        else:
            component.input(**stale)

    def features_of(name: str, values: Sequence[Any]) -> Any:
        start, stop, layout = slots[name]
        return widgets.given_values(svc.entry(name), layout, values[start:stop])

    hidden = gr.update(visible=False, value=None)

    def on_predict(name: str, fmt_: str, device_: str, *values: Any):
        features, why = attempt("input", lambda: features_of(name, values))
        answer, why = (None, why) if why else attempt("prediction", lambda: svc.predict(name, fmt_, device_, features))
        if why:  # the reason stays in the result area, in full, until the next action
            return views.error(why), hidden, {"error": why}, None
        entry = svc.entry(name)
        page = views.result(entry, answer, features if isinstance(features, list) else None)
        return page, _chart(entry, answer), answer, page

    def on_compare(name: str, device_: str, *values: Any):
        features, why = attempt("input", lambda: features_of(name, values))
        rows, why = (None, why) if why else attempt("comparison", lambda: svc.compare(name, device_, features))
        if why:
            return views.error(why, "Compare"), hidden, {"error": why}, None
        given = features if isinstance(features, list) else None
        page = views.comparison(svc.entry(name), rows, device_, given)
        return page, hidden, rows, page

    predict_args = dict(
        fn=on_predict,
        inputs=[model, fmt, device, *fields],
        outputs=results,
        api_visibility="private",
        concurrency_id="predict",
    )
    run.click(**predict_args)
    for component in fields:  # Enter in an input runs Predict (an image editor has no Enter)
        if hasattr(component, "submit"):
            component.submit(**predict_args)
    for ex in examples:  # a click on an example row fills it, then runs it
        ex.load_input_event.then(**predict_args)
    compare.click(
        on_compare,
        inputs=[model, device, *fields],
        outputs=results,
        api_visibility="private",
        concurrency_id="predict",
    )


def create_app(artifacts: Path | str, threads: int | None = None) -> fastapi.FastAPI:
    """The FastAPI app serving `artifacts`: the page at "/", the Open Inference Protocol at /v2 and
    /healthz, all asking one Service (`app.state.service`)."""
    svc = Service(artifacts, threads=threads)
    if svc.error:
        log.warning("%s", svc.error)
    reason = cuda_unavailable_reason()
    js = DISABLE_CUDA_JS % repr(f"cuda is unavailable: {reason}") if reason else None
    return server.create_app(svc, build_demo(svc), css=views.CSS, js=js)


def __getattr__(name: str) -> Any:
    """`demo`: the page for ./artifacts, built on first use, as Gradio's own demos name theirs (main() serves
    it behind the request limits; Gradio's own launcher would serve it without them)."""
    if name == "demo":
        return build_demo(service(DEFAULT_ARTIFACTS))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _port(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 0..65535")
    return port


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line: --artifacts, --host, --port (else GRADIO_SERVER_PORT, else 7860), --threads."""
    env_port = os.environ.get("GRADIO_SERVER_PORT")
    parser = argparse.ArgumentParser(prog="demo/app.py", description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, default=DEFAULT_ARTIFACTS, help="artifacts directory (./artifacts)")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on ({DEFAULT_HOST})")
    parser.add_argument(
        "--catalog",
        action="append",
        default=[],
        metavar="PATH",
        help="a catalog file whose models the eager format needs (ONNX, TorchScript and .pt2 need none); repeatable",
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=None,
        help=f"port (GRADIO_SERVER_PORT, else {DEFAULT_PORT}; 0 picks a free one)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="intra-op threads per runtime (1: single examples gain nothing from more, and never stall "
        "on a busy core; see BENCHMARKS.md)",
    )
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads {args.threads}: expected a positive number")
    if args.port is None:
        try:
            args.port = _port(env_port) if env_port else DEFAULT_PORT
        except (ValueError, argparse.ArgumentTypeError):
            parser.error(f"GRADIO_SERVER_PORT={env_port!r} is not a port number")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the demo until interrupted; prints the URL once it answers."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        sock = server.listen(args.host, args.port)
    except OSError as exc:
        print(f"demo: cannot listen on {args.host}:{args.port}: {exc.strerror}; pick another --port", file=sys.stderr)
        return 2
    url = server.url_of(args.host, sock)
    if args.catalog:  # a catalog runs code: loaded only from the command line, never from the manifest
        from pipeline import catalog
        from pipeline.errors import UserError as CatalogProblem

        try:
            catalog.use(args.catalog)
        except CatalogProblem as exc:
            print(f"demo: {exc}", file=sys.stderr)
            return 2
    app = create_app(args.artifacts, threads=args.threads)
    server.serve(app, sock, on_start=lambda: print(f"demo: serving {args.artifacts} on {url}", flush=True))
    print("demo: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
