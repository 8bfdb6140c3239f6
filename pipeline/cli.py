"""`python -m pipeline {list,summary,train,export,verify,bench}`: one entry point for every stage."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pipeline.errors import UserError

DEFAULT_ARTIFACTS = Path("artifacts")


class UsageError(UserError):
    """Bad command-line input: printed as one line, exit code 2."""


def _parse_recipes(values: list[str], names: list[str]) -> dict[str, str]:
    """--recipe VARIANT (one model selected) or --recipe MODEL=VARIANT, repeatable."""
    chosen: dict[str, str] = {}
    for value in values:
        for item in filter(None, (v.strip() for v in value.split(","))):
            if "=" in item:
                model, variant = item.split("=", 1)
                chosen[model.strip()] = variant.strip()
            elif len(names) == 1:
                chosen[names[0]] = item
            else:
                raise UsageError(f"--recipe {item}: with several models selected, write MODEL={item}")
    return chosen


def cmd_list(args: argparse.Namespace) -> int:
    from pipeline.catalog import CATALOG

    rows = []
    for spec in CATALOG.values():
        model = spec.build()
        params = sum(p.numel() for p in model.parameters())
        ins = ", ".join(f"{t.name}[{t.width}]" for t in spec.inputs)
        outs = ", ".join(f"{t.name}[{t.width}]" for t in spec.outputs)
        rows.append((spec.name, spec.seed, f"{ins} -> {outs}", f"{params:,}", "/".join(spec.recipes)))
    header = ("model", "seed", "inputs -> outputs", "params", "recipes")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from pipeline.catalog import get
    from pipeline.summary import layer_table

    print(layer_table(get(args.name), batch=args.batch))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from pipeline.catalog import select
    from pipeline.devices import resolve_torch_device
    from pipeline.fileio import exclusive
    from pipeline.train import train_model

    specs = select(args.models)
    variants = _parse_recipes(args.recipe, [s.name for s in specs])
    unknown = set(variants) - {s.name for s in specs}
    if unknown:
        raise UsageError(f"--recipe names {', '.join(sorted(unknown))}, which --models does not select")
    for spec in specs:  # check every variant before spending time on training
        spec.recipe(variants.get(spec.name))
    device, note = resolve_torch_device(args.device)
    if note:
        print(note)
    start = time.perf_counter()
    for spec in specs:
        with exclusive(args.artifacts):
            hist = train_model(spec, args.artifacts, device, args.seed, variants.get(spec.name), not args.quiet)
        loss = hist["loss"]
        line = f"{spec.name}: {hist['variant']}, {len(loss)} steps on {device}, loss {loss[0]:.4g} -> {loss[-1]:.4g}"
        print(line + (f"  {hist['report'].get('formula', '')}" if hist["report"].get("formula") else ""))
    print(f"trained {len(specs)} model(s) in {time.perf_counter() - start:.1f} s; outputs in {args.artifacts}/")
    return 0


def _gpu_checks(requested: str) -> bool:
    """Whether to add the CUDA parity checks: asked for, or 'auto' on a machine that has CUDA."""
    from pipeline.devices import resolve_torch_device

    device, _ = resolve_torch_device(requested)
    return device.startswith("cuda")


def _print_report(report, artifacts: Path) -> None:
    print(report.table())
    print(f"parity report: {artifacts / 'parity.json'}")


def cmd_export(args: argparse.Namespace) -> int:
    if args.triton is not None:  # before importing torch: the repository is built without it
        return _export_triton(args)
    from pipeline.catalog import select
    from pipeline.export import run_export
    from pipeline.fileio import exclusive

    specs = select(args.models)
    cuda = _gpu_checks(args.device)
    start = time.perf_counter()
    with exclusive(args.artifacts):
        report, errors = run_export(specs, args.artifacts, args.opset, cuda, args.atol, args.rtol)
    _print_report(report, args.artifacts)
    print(f"export took {time.perf_counter() - start:.1f} s; manifest: {args.artifacts / 'manifest.json'}")
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    return 1 if errors or not report.passed else 0


def _export_triton(args: argparse.Namespace) -> int:
    """`export --triton [DIR]`: a Triton model repository from the manifest as it is (nothing re-exported)."""
    from pipeline.fileio import exclusive
    from pipeline.manifest import ArtifactError, Manifest
    from pipeline.triton import TritonError, build_repository

    out = args.artifacts / "triton" if args.triton == "" else Path(args.triton)
    names = None if args.models == "all" else [n.strip() for n in args.models.split(",") if n.strip()]
    Manifest.load(args.artifacts)  # no manifest: one line, exit 2, before the lock creates the directory
    with exclusive(args.artifacts):  # no export may replace the files while they are copied
        try:
            written = build_repository(Manifest.load(args.artifacts), out, names)
        except ArtifactError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except TritonError as exc:
            raise UsageError(str(exc)) from None
    print(f"Triton model repository: {out}/ ({len(written)} models: {', '.join(written)})")
    print(f"serve it with: tritonserver --model-repository={out.resolve()}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from pipeline.fileio import atomic_write_json
    from pipeline.manifest import PARITY, Manifest
    from pipeline.parity import verify
    from pipeline.runtime import is_remote

    manifest = Manifest.load(args.artifacts)
    names = (
        list(manifest.models)
        if args.models == "all"
        else [manifest.model(n.strip()).name for n in args.models.split(",") if n.strip()]
    )
    for url in args.remote:
        if not is_remote(url):
            raise UsageError(f"--remote {url}: expected a server URL such as http://127.0.0.1:8000")
    report = verify(manifest, names, _gpu_checks(args.device), args.atol, args.rtol, args.remote)
    atomic_write_json(args.artifacts / PARITY, report.as_dict())
    _print_report(report, args.artifacts)
    for row in report.failures():
        print(
            f"error: parity failed for {row.model} {row.format} on {row.runtime} ({row.device}), "
            f"output {row.output}: " + (row.error or f"max abs diff {row.max_abs:.3g}"),
            file=sys.stderr,
        )
    return 0 if report.passed else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from pipeline.bench import BenchError, run_bench

    try:
        run_bench(
            args.artifacts, args.models, args.device, args.quick, not args.skip_http, args.output, threads=args.threads
        )
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _add_tolerances(p: argparse.ArgumentParser) -> None:
    from pipeline.parity import DEFAULT_ATOL, DEFAULT_RTOL

    p.add_argument("--atol", type=float, default=DEFAULT_ATOL, help="absolute tolerance (float32)")
    p.add_argument("--rtol", type=float, default=DEFAULT_RTOL, help="relative tolerance (float32)")


def _add_common(p: argparse.ArgumentParser, device: bool = True) -> None:
    p.add_argument("--models", default="all", help="'all' or comma-separated catalog names")
    p.add_argument("--artifacts", type=Path, default=DEFAULT_ARTIFACTS, help="artifacts directory")
    if device:
        p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="print the catalog")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("summary", help="layer table of one model")
    p.add_argument("name")
    p.add_argument("--batch", type=int, default=1)
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("train", help="train catalog models with their seed recipes")
    _add_common(p)
    p.add_argument("--seed", type=int, default=0, help="random seed for data and initialisation")
    p.add_argument("--recipe", action="append", default=[], help="VARIANT or MODEL=VARIANT (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export", help="export trained models to TorchScript, ONNX and .pt2, verify, index")
    _add_common(p)
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (18 or newer)")
    p.add_argument(
        "--triton",
        nargs="?",
        const="",
        default=None,
        metavar="DIR",
        help="instead of exporting, write a Triton model repository of the manifest's artifacts "
        "to DIR (default ARTIFACTS/triton)",
    )
    _add_tolerances(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("verify", help="re-run the parity check on the artifacts the manifest lists")
    _add_common(p)
    p.add_argument(
        "--remote",
        action="append",
        default=[],
        metavar="URL",
        help="also check the ONNX and TorchScript models an Open Inference Protocol server "
        "(Triton, the demo) serves at URL (repeatable)",
    )
    _add_tolerances(p)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("bench", help="time prediction, HTTP, training and export; write ARTIFACTS/bench.json")
    _add_common(p)
    p.add_argument("--quick", action="store_true", help="short measurements (under two minutes)")
    p.add_argument("--skip-http", action="store_true", help="leave out the demo's HTTP and cold start")
    p.add_argument("--output", type=Path, default=None, help="the JSON's path (default ARTIFACTS/bench.json)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="intra-op threads for the predictors (torch and onnxruntime); default: theirs",
    )
    p.set_defaults(func=cmd_bench)

    from pipeline.triton_server import register_cli  # `triton-serve`: the real Triton server, its own module

    register_cli(sub, DEFAULT_ARTIFACTS)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; expected failures print one line and return a non-zero code."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a read-only or vanished directory: one line naming the file
        where = exc.filename2 if exc.filename2 is not None else exc.filename
        print(f"error: {exc.strerror or exc}" + (f": {where}" if where is not None else ""), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
