"""The Gradio demo: one example through any exported artifact, in torch or onnxruntime.

    python demo/app.py [--artifacts DIR] [--host 127.0.0.1] [--port N] [--threads N]

A thin face over `predict(model, fmt, device, features) -> dict`, which is
`pipeline.service.Service.predict`: a plain function that can be called and tested without the UI.
`build_demo(service)` builds the page, and `demo` (the page for ./artifacts, built on first use) is
there as in Gradio's own demos; `create_app(artifacts)` puts the page, the Open Inference Protocol
routes and the request limits into one FastAPI app (demo/server.py) and `main()` serves it.
Nothing here imports torch: the torch runtimes import it on first use.
"""

from __future__ import annotations

import argparse
import functools
import html
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python demo/app.py` from a checkout that is not pip-installed
    sys.path.insert(0, str(ROOT))

from demo import private_temp_dir  # noqa: E402

private_temp_dir()  # before Gradio is imported: it reads GRADIO_TEMP_DIR then (see demo/__init__.py)

import fastapi  # noqa: E402
import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402

from demo import server  # noqa: E402
from demo.api import Refused, predict_or_refuse  # noqa: E402
from pipeline import formats  # noqa: E402
from pipeline.manifest import ManifestError, ModelEntry  # noqa: E402
from pipeline.runtime import DEVICES  # noqa: E402
from pipeline.service import Service, cuda_unavailable_reason, formats_of  # noqa: E402

log = logging.getLogger("demo")

DEFAULT_ARTIFACTS = Path("artifacts")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
SMALL_INPUT = 16  # up to this many features: one number field each; wider inputs: one text area
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
        try:
            return predict_or_refuse(svc, model, fmt, device, features)
        except Refused as exc:
            raise gr.Error(exc.message, print_exception=False) from None

    predict.__doc__ = Service.predict.__doc__
    return predict


# ---- the face -------------------------------------------------------------------------------------


def _fmt_number(v: float) -> str:
    return f"{v:.6g}"


def _features_text(values: Sequence[float]) -> str:
    return ", ".join(format(float(v), ".9g") for v in values)  # .9g: float32 round-trips exactly


def _model_label(entry: ModelEntry) -> str:
    return f"{entry.name} · seed {entry.seed}" if entry.seed else entry.name


def _model_info(entry: ModelEntry) -> str:
    outs = ", ".join(f"{o['name']} ({len(o['features'])})" for o in entry.outputs)
    n = len(entry.features)
    return (
        f"**{entry.name}** — seed {entry.seed or 'unknown'}: {entry.description}  \n"
        f"input: {n} number{'s' if n != 1 else ''}; outputs: {outs}"
    )


def _summary_md(entry: ModelEntry) -> str:
    raw = entry.raw
    lines = []
    recipe = raw.get("recipe") or {}
    if recipe:
        lines.append(
            f"Trained with `{raw.get('variant', '')}`: {recipe.get('loss')} loss, {recipe.get('optimizer')} "
            f"lr {recipe.get('lr')}, {recipe.get('epochs')} epochs on {raw.get('trained_on', '?')}; "
            f"final loss {raw.get('final_loss', float('nan')):.4g}. Revision `{raw.get('revision', '?')}`."
        )
    summary = raw.get("summary")
    lines.append(f"```\n{summary}\n```" if summary else "_no architecture summary in the manifest_")
    return "\n\n".join(lines)


def _loss_image(svc: Service, entry: ModelEntry) -> Any:
    """The training loss curve export drew (loss.png), as a PIL image; None when there is none."""
    plot = entry.raw.get("plot")
    manifest = svc.manifest
    if not plot or manifest is None:
        return None
    try:
        from PIL import Image

        with Image.open(manifest.path_of(plot)) as img:
            return img.convert("RGB")
    except (OSError, ManifestError):
        return None


PARITY_COLUMNS = ["format", "runtime", "device", "output", "max_abs", "max_rel", "passed", "error"]


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    return "" if value is None else str(value)


def _parity(entry: ModelEntry) -> tuple[str, list[list[Any]]]:
    parity = entry.raw.get("parity") or {}
    rows = parity.get("rows") or []
    table = [[_cell(r.get(c)) for c in PARITY_COLUMNS] for r in rows if isinstance(r, dict)]
    if not parity:
        return "Parity: _not recorded in the manifest_", table
    verdict = "passed" if parity.get("passed") else "**FAILED**"
    return (
        f"Parity against the eager model: {verdict} — {sum(r[6] == 'yes' for r in table)}/{len(table)} rows "
        f"within atol {parity.get('atol')}, rtol {parity.get('rtol')}",
        table,
    )


def _result_md(entry: ModelEntry, result: dict) -> str:
    outs = result["outputs"]
    first = next(iter(outs))
    head = ", ".join(f"{first}[{i}] = {_fmt_number(v)}" for i, v in enumerate(outs[first][:4]))
    if len(outs[first]) == 1:
        head = f"{first} = {_fmt_number(outs[first][0])}"
    rows = "\n".join(f"| {name} | {', '.join(_fmt_number(v) for v in values)} |" for name, values in outs.items())
    loaded = f" (loaded and sha256-checked in {result['load_ms']:.1f} ms on this call)" if result["load_ms"] else ""
    return (
        f"### {head}\n\n| output | values |\n|---|---|\n{rows}\n\n"
        f"**runtime** {result['runtime']} · **ran on** `{result['device']}` "
        f"(asked for {result['requested_device']}) · **latency** {result['latency_ms']:.3f} ms{loaded}"
    )


def _chart(entry: ModelEntry, result: dict) -> Any:
    import pandas as pd

    rows = []
    plotted = [o for o in entry.outputs if 2 <= len(result["outputs"][o["name"]]) <= PLOT_MAX]
    for spec in plotted:
        for feat, v in zip(spec["features"], result["outputs"][spec["name"]]):
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


def _escape(message: str) -> str:
    """gr.Error messages are rendered as HTML in the page: show what was typed, never run it."""
    return html.escape(message, quote=False)


CSS = """
#device-picker label.unavailable { opacity: 0.45; cursor: not-allowed; }
#prediction h3 { margin-top: 0; }
"""

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
    """The page over `svc`. Every event but the public `predict` API is private to the page."""
    with gr.Blocks(title="seed-pipeline demo") as blocks:
        gr.Markdown(
            "# seed-pipeline: one example through any exported artifact\n"
            "Pick a model, an artifact (which picks the runtime) and a device, enter one example, "
            "and see the prediction, what really ran it and how long it took."
        )
        # The API: a typed, plain function; its inputs and outputs are JSON, no components.
        gr.api(api_predict(svc), api_name="predict", api_description=Service.predict.__doc__)
        manifest = svc.manifest
        if manifest is None or not manifest.models:
            gr.Markdown(
                f"## No artifacts to serve yet\n\n{_escape(svc.error or 'the manifest lists no models')}\n\n"
                f"Create them with `make train export ARTIFACTS={svc.artifacts}` (or `make demo`, which "
                "trains and exports first), then start `python demo/app.py` again.",
                elem_id="no-manifest",
            )
            return blocks
        _build_page(svc, list(manifest.models.values()))
    return blocks


def _input_form(entry: ModelEntry) -> tuple[list[Any], str]:
    """The input fields for one model: a number field per feature, or one text area for wide inputs."""
    example = entry.examples[0] if entry.examples else [0.0] * len(entry.features)
    if len(entry.features) <= SMALL_INPUT:
        with gr.Row():
            numbers = [
                gr.Number(label=feat, value=float(example[i]), elem_id=f"{entry.name}-{feat}")
                for i, feat in enumerate(entry.features)
            ]
        if entry.examples:
            gr.Examples(
                examples=[list(map(float, ex)) for ex in entry.examples],
                inputs=numbers,
                label=f"{entry.name}: catalog examples",
                api_visibility="private",
            )
        return numbers, "numbers"
    width = len(entry.features)
    text = gr.Textbox(
        value=_features_text(example),
        lines=6,
        max_lines=12,
        label=f"{width} numbers ({entry.features[0]} … {entry.features[-1]}), "
        "separated by commas or spaces, or a JSON list",
        elem_id=f"{entry.name}-features",
    )
    with gr.Row():
        rand = gr.Button("Random example", size="sm", elem_id=f"{entry.name}-random")
        catalog = gr.Button("Catalog example", size="sm", elem_id=f"{entry.name}-catalog")
    rand.click(
        lambda: _features_text(np.random.default_rng().standard_normal(width).round(4)),
        outputs=text,
        api_visibility="private",
    )
    catalog.click(lambda: _features_text(example), outputs=text, api_visibility="private")
    if entry.examples:
        gr.Examples(
            examples=[[_features_text(ex)] for ex in entry.examples],
            inputs=[text],
            label=f"{entry.name}: catalog examples",
            example_labels=[f"catalog example {i + 1}" for i in range(len(entry.examples))],
            api_visibility="private",
        )
    return [text], "text"


def _build_page(svc: Service, entries: list[ModelEntry]) -> None:
    first = entries[0]
    reason = cuda_unavailable_reason()
    with gr.Row():
        with gr.Column(scale=2):
            model = gr.Dropdown(
                choices=[(_model_label(e), e.name) for e in entries],
                value=first.name,
                label="Model (seed source)",
                elem_id="model-picker",
            )
            model_info = gr.Markdown(_model_info(first), elem_id="model-info")
            served = formats_of(first)
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
            groups, fields, slots = [], [], {}
            for entry in entries:
                with gr.Group(visible=entry is first, elem_id=f"input-{entry.name}") as group:
                    inputs, kind = _input_form(entry)
                slots[entry.name] = (len(fields), len(fields) + len(inputs), kind)
                fields.extend(inputs)
                groups.append(group)
            run = gr.Button("Predict", variant="primary", elem_id="predict-button")
        with gr.Column(scale=3):
            result_md = gr.Markdown("_Press Predict._", elem_id="prediction")
            chart = gr.BarPlot(x="value name", y="value", color="output", visible=False, elem_id="prediction-chart")
            with gr.Accordion("API response (JSON)", open=False):
                raw = gr.JSON(elem_id="prediction-json")
    with gr.Accordion("Model", open=True):
        with gr.Row():
            summary = gr.Markdown(_summary_md(first), elem_id="model-summary")
            loss = gr.Image(_loss_image(svc, first), label="Training loss", interactive=False, elem_id="loss-curve")
        parity_text, parity_rows = _parity(first)
        parity_md = gr.Markdown(parity_text)
        parity = gr.Dataframe(
            value=parity_rows, headers=PARITY_COLUMNS, interactive=False, label="Parity", elem_id="parity"
        )

    def on_model(name: str):
        entry = svc.entry(name)
        fmts = formats_of(entry)
        text, rows = _parity(entry)
        return (
            *[gr.update(visible=e.name == entry.name) for e in entries],
            gr.update(choices=[(formats.label(f), f) for f in fmts]),
            _model_info(entry),
            _summary_md(entry),
            _loss_image(svc, entry),
            text,
            gr.update(value=rows),
            "_Press Predict._",
            gr.update(visible=False, value=None),
            None,
        )

    model.change(
        on_model,
        inputs=model,
        outputs=[*groups, fmt, model_info, summary, loss, parity_md, parity, result_md, chart, raw],
        api_visibility="private",
    )

    answer = api_predict(svc)

    def on_predict(name: str, fmt_: str, device_: str, *values: Any):
        start, stop, kind = slots.get(name, (0, 0, "numbers"))
        given = values[start:stop]
        features = given[0] if kind == "text" else list(given)
        try:
            result = answer(name, fmt_, device_, features)
        except gr.Error as exc:
            raise gr.Error(_escape(exc.message), print_exception=False) from None
        entry = svc.entry(name)
        return _result_md(entry, result), _chart(entry, result), result

    run.click(
        on_predict,
        inputs=[model, fmt, device, *fields],
        outputs=[result_md, chart, raw],
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
    return server.create_app(svc, build_demo(svc), css=CSS, js=js)


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
    app = create_app(args.artifacts, threads=args.threads)
    server.serve(app, sock, on_start=lambda: print(f"demo: serving {args.artifacts} on {url}", flush=True))
    print("demo: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
