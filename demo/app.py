"""The Gradio demo: one example through any exported artifact, in torch or onnxruntime.

    python demo/app.py [--artifacts DIR] [--host 127.0.0.1] [--port N]

A thin face over `predict(model, fmt, device, features) -> dict`, a plain function that can be
called and tested without the UI. Artifacts are found through the manifest and loaded by the one
loader (pipeline/runtime.py), lazily and once per (model, format, device), sha256-checked first.
Nothing here imports torch: an ONNX prediction never does, the torch runtimes import it on first use.

`create_app(artifacts)` builds the FastAPI app (Gradio mounted at "/", the shared PredictorCache at
`app.state.predictors`, the manifest at `app.state.manifest`); `main()` serves it with uvicorn.
"""

from __future__ import annotations

import argparse
import functools
import html
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python demo/app.py` from a checkout that is not pip-installed
    sys.path.insert(0, str(ROOT))

import fastapi  # noqa: E402
import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402

from pipeline import formats  # noqa: E402
from pipeline.devices import cuda_device_count  # noqa: E402
from pipeline.inputs import InputError, parse_features  # noqa: E402
from pipeline.manifest import MANIFEST, ArtifactError, Manifest, ManifestError, ModelEntry  # noqa: E402
from pipeline.runtime import ARTIFACT_OF, DEVICES, PREDICT_FORMATS, PredictorCache, RuntimeUnavailable  # noqa: E402

log = logging.getLogger("demo")

DEFAULT_ARTIFACTS = Path("artifacts")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
SMALL_INPUT = 16  # up to this many features: one number field each; wider inputs: one text area
PLOT_MAX = 64  # outputs with 2..PLOT_MAX values are also drawn as a bar chart
FORMAT_LABELS = {f: formats.label(f) for f in formats.FORMATS}  # "ONNX · onnxruntime", ...
FAILURES = (InputError, ManifestError, ArtifactError, RuntimeUnavailable)


# ---- the plain function ---------------------------------------------------------------------------


def cuda_unavailable_reason() -> str | None:
    """Why CUDA cannot be picked here, or None where a CUDA GPU is visible (asked of libcuda, no torch)."""
    if cuda_device_count() > 0:
        return None
    return "no CUDA GPU is visible on this machine"


class DemoService:
    """The manifest, the predictor cache and `predict` for one artifacts directory.

    A missing or unusable manifest is kept as `error` (one line saying how to create the
    artifacts) instead of raised, so the app can still start and show it.
    """

    def __init__(self, artifacts: Path | str, threads: int | None = None) -> None:
        self.artifacts = Path(artifacts)
        self.threads = threads
        self._manifest: Manifest | None = None
        self._predictors: PredictorCache | None = None
        self._signature: tuple[int, int, int] | None = None  # the manifest file the cache was built from
        self._reload_lock = threading.Lock()
        self.error: str | None = None
        self._served: set[tuple[str, str, str]] = set()  # (model, format, device) already answered
        self.refresh()

    @property
    def manifest(self) -> Manifest | None:
        self.refresh()
        return self._manifest

    @property
    def predictors(self) -> PredictorCache | None:
        self.refresh()
        return self._predictors

    def refresh(self) -> None:
        """Follow `make export`: reload the manifest (and start a new cache) when its file changed.

        One stat per call. Export removes the revision folders the new manifest no longer lists, so
        serving on from the old manifest would fail on files that are gone.
        """
        path = self.artifacts / MANIFEST
        try:
            st = path.stat()
            signature = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            signature = None
        if signature == self._signature and (self._manifest is not None or self.error is not None):
            return
        with self._reload_lock:
            if signature == self._signature and (self._manifest is not None or self.error is not None):
                return
            try:
                manifest = Manifest.load(self.artifacts)
            except ManifestError as exc:
                self._manifest, self._predictors, self.error = None, None, str(exc)
            else:
                self._manifest, self.error = manifest, None
                self._predictors = PredictorCache(manifest, threads=self.threads)
                self._served = set()
            if self._signature is not None:
                log.warning("manifest changed on disk: reloaded %s", path)
            self._signature = signature

    def entry(self, model: Any) -> ModelEntry:
        if self.manifest is None:
            raise ManifestError(self.error or f"no manifest in {self.artifacts}")
        return self.manifest.model(model.strip() if isinstance(model, str) else model)

    def predict(self, model: str, fmt: str, device: str, features: str | list) -> dict:
        """One example through `model`'s `fmt` artifact on `device` (cpu, cuda or auto).

        `features`: numbers separated by commas or spaces, or a JSON list (or a Python list).
        Returns {"outputs": {name: [floats]}, "format", "runtime", "device" (what really ran),
        "latency_ms", ...}. Bad input raises gr.Error with one line naming what was expected.
        """
        try:
            return self._predict(model, fmt, device, features)
        except FAILURES as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        except gr.Error:
            raise
        except Exception as exc:  # a bug, not the caller's input: logged in full, one line out
            log.exception("predict(%r, %r, %r) failed", model, fmt, device)
            raise gr.Error(
                f"the prediction failed unexpectedly ({type(exc).__name__}); the server log has the details",
                print_exception=False,
            ) from None

    def _predict(self, model: Any, fmt: Any, device: Any, features: Any) -> dict:
        entry = self.entry(model)
        fmt = fmt.strip().lower() if isinstance(fmt, str) else fmt
        if fmt not in PREDICT_FORMATS:
            raise InputError(f"unknown format {fmt!r}; expected one of: {', '.join(PREDICT_FORMATS)}")
        entry.artifact(ARTIFACT_OF[fmt])  # a ManifestError naming the formats this model has
        device = (device.strip().lower() or "cpu") if isinstance(device, str) else device
        if not isinstance(device, str) or (device not in DEVICES and not device.startswith("cuda:")):
            raise InputError(f"unknown device {device!r}; expected one of: {', '.join(DEVICES)}")
        reason = cuda_unavailable_reason()
        if device.startswith("cuda") and reason:  # refused before loading anything (or importing torch)
            raise RuntimeUnavailable(f"device {device} is unavailable: {reason}; use cpu or auto")
        values = parse_features(features, entry.name, entry.features)
        assert self.predictors is not None
        key = (entry.name, fmt, device)
        first = key not in self._served
        predictor = self.predictors.get(entry.name, fmt, device)  # loaded (sha256 first) once, then cached
        self._served.add(key)
        start = time.perf_counter()
        result = predictor.predict(values)
        latency_ms = (time.perf_counter() - start) * 1000.0
        outputs = {}
        for name, value in result.items():
            flat = np.asarray(value, dtype=np.float64).reshape(-1)
            if not np.isfinite(flat).all():
                raise InputError(
                    f"{entry.name}'s output {name} is not finite for this input (float32 overflow); "
                    "expected inputs of a smaller magnitude"
                )
            outputs[name] = flat.tolist()
        return {
            "model": entry.name,
            "format": predictor.format,
            "runtime": predictor.runtime,
            "device": predictor.device,
            "requested_device": device,
            "outputs": outputs,
            "latency_ms": round(latency_ms, 4),
            "load_ms": round(predictor.load_seconds * 1000.0, 3) if first else 0.0,
        }


@functools.lru_cache(maxsize=8)
def service(artifacts: Path | str = DEFAULT_ARTIFACTS) -> DemoService:
    """The DemoService for a directory, created once per process."""
    return DemoService(Path(artifacts).resolve())


def predict(model: str, fmt: str, device: str, features: str | list, artifacts: Path | str = DEFAULT_ARTIFACTS) -> dict:
    """`DemoService.predict` on the artifacts in `artifacts` (default ./artifacts), without any UI."""
    return service(artifacts).predict(model, fmt, device, features)


# ---- the face -------------------------------------------------------------------------------------


def _fmt_number(v: float) -> str:
    return f"{v:.6g}"


def _features_text(values: Sequence[float]) -> str:
    return ", ".join(format(float(v), ".9g") for v in values)  # .9g: float32 round-trips exactly


def _formats_of(entry: ModelEntry) -> list[str]:
    return [f for f in PREDICT_FORMATS if ARTIFACT_OF[f] in entry.artifacts]


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


def _loss_image(service_: DemoService, entry: ModelEntry) -> Any:
    """The training loss curve export drew (loss.png), as a PIL image; None when there is none."""
    plot = entry.raw.get("plot")
    if not plot or service_.manifest is None:
        return None
    try:
        from PIL import Image

        with Image.open(service_.manifest.path_of(plot)) as img:
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


def build_blocks(svc: DemoService) -> gr.Blocks:
    """The page. Every event but the public `predict` API is private to the page."""
    with gr.Blocks(title="seed-pipeline demo") as blocks:
        gr.Markdown(
            "# seed-pipeline: one example through any exported artifact\n"
            "Pick a model, an artifact (which picks the runtime) and a device, enter one example, "
            "and see the prediction, what really ran it and how long it took."
        )
        # The API: a typed, plain function; its inputs and outputs are JSON, no components.
        gr.api(svc.predict, api_name="predict", api_description=DemoService.predict.__doc__)
        if svc.manifest is None or not svc.manifest.models:
            gr.Markdown(
                f"## No artifacts to serve yet\n\n{_escape(svc.error or 'the manifest lists no models')}\n\n"
                f"Create them with `make train export ARTIFACTS={svc.artifacts}` (or `make demo`, which "
                "trains and exports first), then start `python demo/app.py` again.",
                elem_id="no-manifest",
            )
            return blocks
        _build_page(svc)
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
        queue=False,
    )
    catalog.click(lambda: _features_text(example), outputs=text, api_visibility="private", queue=False)
    if entry.examples:
        gr.Examples(
            examples=[[_features_text(ex)] for ex in entry.examples],
            inputs=[text],
            label=f"{entry.name}: catalog examples",
            example_labels=[f"catalog example {i + 1}" for i in range(len(entry.examples))],
            api_visibility="private",
        )
    return [text], "text"


def _build_page(svc: DemoService) -> None:
    assert svc.manifest is not None
    entries = list(svc.manifest.models.values())
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
            formats = _formats_of(first)
            fmt = gr.Radio(
                choices=[(FORMAT_LABELS[f], f) for f in formats],
                value="onnx" if "onnx" in formats else formats[0],
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
        fmts = _formats_of(entry)
        text, rows = _parity(entry)
        return (
            *[gr.update(visible=e.name == entry.name) for e in entries],
            gr.update(choices=[(FORMAT_LABELS[f], f) for f in fmts]),
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
        queue=False,
    )

    def on_predict(name: str, fmt_: str, device_: str, *values: Any):
        start, stop, kind = slots.get(name, (0, 0, "numbers"))
        given = values[start:stop]
        features = given[0] if kind == "text" else list(given)
        try:
            result = svc.predict(name, fmt_, device_, features)
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


# ---- the app and the server -----------------------------------------------------------------------

# A predict request carries at most MAX_TEXT_CHARS (200,000) characters of input: 1 MiB of JSON is
# plenty. /v2 (the Open Inference Protocol, pipeline/oip.py) keeps its own, larger limit for batches.
MAX_REQUEST_BYTES = 1024 * 1024
# The page has no file inputs: Gradio's upload route would only store (and serve back) strangers' files.
REFUSED_ROUTES = ("/gradio_api/upload", "/upload")
MAX_SESSIONS = 256  # Gradio sessions kept in memory, the least recently used dropped first (see create_app)


class RequestLimits:
    """ASGI middleware: 413 for a request body over `max_bytes`, declared or streamed, before any
    route reads or parses it; 404 for Gradio's upload route."""

    def __init__(self, app: Any, max_bytes: int = MAX_REQUEST_BYTES) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path == "/v2" or path.startswith("/v2/"):
            return await self.app(scope, receive, send)
        if path.rstrip("/") in REFUSED_ROUTES:
            return await _plain_response(send, 404, "not found")
        too_large = f"request body over the limit of {self.max_bytes:,} bytes"
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await _plain_response(send, 413, too_large)
        seen, started = 0, False

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:  # a chunked body with no Content-Length
                raise fastapi.HTTPException(413, too_large)  # FastAPI answers it as it is
            return message

        async def watched_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except fastapi.HTTPException as exc:
            if exc.status_code != 413 or started:
                raise
            await _plain_response(send, 413, too_large)


async def _plain_response(send: Any, status: int, message: str) -> None:
    body = json.dumps({"detail": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app(artifacts: Path, threads: int | None = None) -> fastapi.FastAPI:
    """The FastAPI app: Gradio at "/", `app.state.predictors` (the one PredictorCache, None without a
    manifest), `app.state.manifest` (None without one) and `app.state.service`."""
    svc = DemoService(artifacts, threads=threads)
    if svc.error:
        log.warning("%s", svc.error)
    app = fastapi.FastAPI(title="seed-pipeline demo", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(RequestLimits)  # oversized bodies and uploads are refused before any route sees them
    app.state.service = svc
    app.state.manifest = svc.manifest
    app.state.predictors = svc.predictors
    app.state.artifacts = svc.artifacts

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict:
        """Liveness, the models served, and whether any torch runtime has been loaded yet."""
        return {
            "ok": svc.manifest is not None,
            "models": list(svc.manifest.models) if svc.manifest else [],
            "error": svc.error,
            "torch_imported": "torch" in sys.modules,
        }

    # extra routes (Open Inference Protocol) are included here
    from pipeline.oip import oip_router  # /v2/...: KServe v2 / Triton's HTTP API over the same predictors

    app.include_router(oip_router(lambda: svc.manifest, lambda: svc.predictors))

    blocks = build_blocks(svc)
    # Gradio keeps state for each session, and an API call that names none (curl, httpx) gets a new
    # one: about 130 KB for this page, 10,000 of them by default. Bounded, memory stays flat under load.
    blocks.state_session_capacity = MAX_SESSIONS
    reason = cuda_unavailable_reason()
    return gr.mount_gradio_app(
        app,
        blocks,
        path="/",
        footer_links=["api", "gradio"],
        run_history=False,
        show_error=False,  # only gr.Error messages reach the page; anything else stays in the log
        css=CSS,
        js=DISABLE_CUDA_JS % repr(f"cuda is unavailable: {reason}") if reason else None,
    )


def _port(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 0..65535")
    return port


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
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
    """Serve the demo with uvicorn until interrupted; prints the URL once it answers."""
    import uvicorn

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only for sockets that say so
    # (without it every keep-alive response waits ~40 ms for a delayed ACK)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        print(
            f"demo: cannot listen on {args.host}:{args.port}: {exc.strerror}; pick another --port",
            file=sys.stderr,
        )
        return 2
    port = sock.getsockname()[1]
    shown = f"[{args.host}]" if family == socket.AF_INET6 else args.host
    url = f"http://{shown}:{port}/"

    app = create_app(args.artifacts, threads=args.threads)

    class Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets)
            if self.started:
                print(f"demo: serving {args.artifacts} on {url}", flush=True)

    server = Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled; it has shut down cleanly by now
        pass
    print("demo: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
