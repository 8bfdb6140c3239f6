"""The Gradio demo: one example through any exported artifact, in torch or onnxruntime.

    python demo/app.py [--artifacts DIR] [--host 127.0.0.1] [--port N] [--threads N]

A thin face over `predict(model, fmt, device, features) -> dict`, which is
`pipeline.serving.service.Service.predict`: a plain function that can be called and tested without the UI.
`build_demo(service)` builds the page (laid out and wired in demo/page.py), and `demo` (the page for
./artifacts, built on first use) is there as in Gradio's own demos; `create_app(artifacts)` puts the page,
the Open Inference Protocol routes and the request limits into one FastAPI app (demo/server.py) and
`main()` serves it.
Nothing here imports torch: the torch runtimes import it on first use.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import threading
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

from demo import explanation, page, server, views  # noqa: E402
from demo.api import attempt  # noqa: E402
from pipeline import formats  # noqa: E402
from pipeline.serving.service import Service  # noqa: E402

log = logging.getLogger("demo")

DEFAULT_ARTIFACTS = Path("artifacts")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


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


def build_demo(svc: Service) -> gr.Blocks:
    """The page over `svc` (demo/page.py). Every event but the public `predict` and `compare` APIs is private."""
    with gr.Blocks(title="seed-pipeline demo") as blocks:
        # The APIs: typed, plain functions; their inputs and outputs are JSON, no components.
        gr.api(api_predict(svc), api_name="predict", api_description=Service.predict.__doc__)
        gr.api(api_compare(svc), api_name="compare", api_description=Service.compare.__doc__)
        manifest = svc.manifest
        if manifest is None or not manifest.models:
            gr.Markdown(page.INTRO)
            gr.HTML(views.no_manifest(svc.artifacts, svc.error, DEFAULT_ARTIFACTS), elem_id="no-manifest")
            return blocks
        page.build(svc, list(manifest.models.values()))
    return blocks


def warm_targets(svc: Service, spec: str | None) -> list[tuple[str, str]]:
    """(model, format) pairs to load before the demo is ready: `spec` is 'none', 'default' (each model's
    formats.DEFAULT_FORMAT artifact, or its first), or a comma list of FORMAT (every model that has it) and
    MODEL:FORMAT; ValueError naming what is unknown."""
    manifest = svc.manifest
    if manifest is None or spec in ("none", ""):
        return []
    out: list[tuple[str, str]] = []
    for item in (spec or "default").split(","):
        model, _, fmt = item.strip().rpartition(":")
        for name, entry in manifest.models.items():
            served = entry.served_formats()
            if model and model != name:
                continue
            if fmt == "default":
                out.append((name, formats.DEFAULT_FORMAT if formats.DEFAULT_FORMAT in served else served[0]))
            elif fmt in served:
                out.append((name, fmt))
            elif model:
                raise ValueError(f"--warm {item}: {name} has no {fmt!r} artifact; it has {', '.join(served)}")
        if model and model not in manifest.models:
            raise ValueError(f"--warm {item}: no model {model!r}; expected one of {', '.join(manifest.models)}")
    return list(dict.fromkeys(out))


def create_app(
    artifacts: Path | str, threads: int | None = None, *, warm: str | None = "none", batch_delay_us: int = 0
) -> fastapi.FastAPI:
    """The FastAPI app serving `artifacts`: the page at "/", the Open Inference Protocol at /v2, /healthz and
    /metrics, all asking one Service (`app.state.service`). `warm` (see warm_targets) is loaded in a thread
    started here (`app.state.warming`); /v2/health/ready answers ready once it is done."""
    svc = Service(artifacts, threads=threads)
    if svc.error:
        log.warning("%s", svc.error)
    targets = warm_targets(svc, warm)
    svc.pending = list(targets)  # not ready from the first request on, until the thread has loaded them
    warming = threading.Thread(target=svc.warm, args=(targets,), name="warm-up", daemon=True)
    warming.start()
    app = server.create_app(
        svc, build_demo(svc), css=views.CSS + explanation.CSS, js=page.script(), batch_delay_us=batch_delay_us
    )
    app.state.warming = warming
    return app


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
    parser.add_argument(
        "--warm",
        default="default",
        metavar="SPEC",
        help="what to load and warm before the demo is ready: 'default' (each model's default format), 'none', "
        "or a comma list of FORMAT and MODEL:FORMAT",
    )
    parser.add_argument(
        "--batch-delay-us",
        type=int,
        default=server.BATCH_DELAY_US,
        metavar="US",
        help="dynamic batching: how long the first of concurrent requests waits for others to merge with "
        f"(microseconds; {server.BATCH_DELAY_US}: only those already queued)",
    )
    args = parser.parse_args(argv)
    if args.batch_delay_us < 0:
        parser.error(f"--batch-delay-us {args.batch_delay_us}: expected 0 or more")
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
    try:
        app = create_app(args.artifacts, threads=args.threads, warm=args.warm, batch_delay_us=args.batch_delay_us)
    except ValueError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2

    def announce() -> None:  # listening: /healthz says what is still warming, /v2/health/ready says 503 until done
        print(f"demo: serving {args.artifacts} on {url}", flush=True)
        app.state.warming.join()
        failed = app.state.service.warm_errors
        print(f"demo: ready ({len(failed)} of the artifacts to warm failed)" if failed else "demo: ready", flush=True)

    server.serve(app, sock, on_start=lambda: threading.Thread(target=announce, daemon=True).start())
    print("demo: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
