"""The command line's grammar: every `python -m pipeline` command, its options and their defaults.

pipeline/cli.py runs the command this parses (its COMMANDS, by the name parsed into `command`); GRAMMAR here
declares each command, its summary and its options.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.formats import DEFAULT_ATOL, DEFAULT_RTOL, EXPORTED

DEFAULT_ARTIFACTS = Path("artifacts")


class _HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's help ends with its default, except flags (off unless given) and help that says its own."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.nargs == 0 or "(default:" in text or action.default is None or action.required:
            return text
        return super()._get_help_string(action)


def _add_tolerances(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--atol",
        type=float,
        default=None,
        help=f"absolute tolerance for every format (default: each format's own, {DEFAULT_ATOL:g} for float32)",
    )
    p.add_argument(
        "--rtol",
        type=float,
        default=None,
        help=f"relative tolerance for every format (default: each format's own, {DEFAULT_RTOL:g} for float32)",
    )


def _add_catalog(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--catalog",
        action="append",
        default=[],
        metavar="PATH",
        help="a catalog file (Python, defining CATALOG) whose models join the seed catalog; repeatable "
        "(default: the seed catalog only)",
    )


def _add_common(p: argparse.ArgumentParser, device: bool = True, catalog: bool = True) -> None:
    if catalog:
        _add_catalog(p)
    p.add_argument("--models", default="all", help="'all' or comma-separated catalog names")
    p.add_argument("--artifacts", type=Path, default=DEFAULT_ARTIFACTS, help="artifacts directory")
    if device:
        p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")


def _list_options(p: argparse.ArgumentParser) -> None:
    _add_catalog(p)


def _summary_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="a catalog name, as `list` prints")
    p.add_argument("--batch", type=int, default=1, help="batch size of the example input")
    _add_catalog(p)


def _train_options(p: argparse.ArgumentParser) -> None:
    _add_common(p)
    p.add_argument("--seed", type=int, default=0, help="random seed for data and initialisation")
    p.add_argument(
        "--recipe",
        action="append",
        default=[],
        metavar="[MODEL=]VARIANT",
        help="a recipe variant, as `list` prints: VARIANT when one model is selected, MODEL=VARIANT "
        "otherwise; repeatable or comma-separated (default: each model's first recipe)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars or progress lines")


def _import_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="a catalog name, as `list` prints (default: none, required)")
    p.add_argument(
        "--state-dict",
        type=Path,
        required=True,
        help="a state_dict saved with torch.save, read weights only (default: none, required)",
    )
    p.add_argument("--artifacts", type=Path, default=DEFAULT_ARTIFACTS, help="artifacts directory")
    _add_catalog(p)


def _export_options(p: argparse.ArgumentParser) -> None:
    _add_common(p)
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (18 or newer)")
    p.add_argument(
        "--triton",
        nargs="?",
        const="",
        default=None,
        metavar="DIR",
        help="export nothing: build the Triton model repository in DIR, as `python -m pipeline triton [DIR]` "
        "does (default: off; DIR defaults to ARTIFACTS/triton)",
    )
    p.add_argument(
        "--formats",
        default=None,
        metavar="LIST",
        help=f"comma-separated formats to make, a derived one with its source (default: all: {','.join(EXPORTED)})",
    )
    _add_tolerances(p)


def _verify_options(p: argparse.ArgumentParser) -> None:
    _add_common(p)
    p.add_argument(
        "--remote",
        action="append",
        default=[],
        metavar="URL",
        help="also check the ONNX and TorchScript models an Open Inference Protocol server "
        "(Triton, the demo) serves at URL, repeatable (default: none)",
    )
    _add_tolerances(p)
    p.add_argument(
        "--explain",
        metavar="MODEL[:FORMAT]",
        help="check nothing: run one parity batch through eager and the artifact layer by layer and mark the "
        "first layer beyond its rule (default: off; FORMAT defaults to the failing row of parity.json, else the "
        "row furthest past its atol)",
    )
    p.add_argument("--runtime", help="with --explain: the runtime (default: the row's, else the format's first one)")
    p.add_argument("--batch", type=int, help="with --explain: the parity batch, 0 to 3 (default: the worst one)")
    p.add_argument("--output", help="with --explain: the output whose |Δ| is shown (default: the worst one)")


def _triton_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "dir", nargs="?", type=Path, default=None, metavar="DIR", help="where to write it (default: ARTIFACTS/triton)"
    )
    _add_common(p, device=False)


def _bench_options(p: argparse.ArgumentParser) -> None:
    _add_common(p)
    p.add_argument("--quick", action="store_true", help="short measurements (under two minutes)")
    p.add_argument("--skip-http", action="store_true", help="leave out the demo's HTTP and cold start")
    p.add_argument("--output", type=Path, default=None, help="the JSON's path (default: ARTIFACTS/bench.json)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="intra-op threads for the predictors, torch and onnxruntime (default: each runtime's own)",
    )


def _triton_serve_options(p: argparse.ArgumentParser) -> None:
    _add_common(p, device=False, catalog=False)  # it serves the files alone: no catalog code runs
    p.add_argument("--repository", type=Path, default=None, help="model repository (default: ARTIFACTS/triton)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port on 127.0.0.1")
    p.add_argument(
        "--triton-env",
        type=Path,
        default=None,
        help="the environment `make triton-env` made (default: $PIPELINE_TRITON_ENV, else .venv-triton)",
    )


# Each command, its one-line summary, and the function that declares its options, in `--help` order.
GRAMMAR = (
    ("list", "print the catalog", _list_options),
    ("summary", "layer table of one model", _summary_options),
    ("train", "train catalog models with their seed recipes", _train_options),
    ("import", "write pretrained weights as if `train` had produced them (no training)", _import_options),
    ("export", "export trained models to every format (see --formats), verify, index", _export_options),
    ("verify", "re-run the parity check on the artifacts the manifest lists", _verify_options),
    ("triton", "write a Triton model repository of the manifest's artifacts (exports nothing)", _triton_options),
    ("bench", "time prediction, HTTP, training and export; write ARTIFACTS/bench.json", _bench_options),
    ("triton-serve", "serve the models on the real Triton server (Python backend) on 127.0.0.1", _triton_serve_options),
)


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """Every command and its options; the chosen command's name is `command` in what it parses."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline", description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, summary, options in GRAMMAR:
        options(sub.add_parser(name, help=summary, description=summary, formatter_class=_HelpWithDefaults))
    return parser
