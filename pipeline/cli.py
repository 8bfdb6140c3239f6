"""`python -m pipeline {list,summary,train,import,export,verify,triton,bench,triton-serve}`: every stage's entry point.

Every command takes --catalog PATH (repeatable): a Python file defining CATALOG, a list of specs, whose
models join the seed catalog (README, "Your own model"). A catalog runs code: it is loaded only from here.

Exit codes, the same for every command: 0 done; 1 the work itself failed (a parity check, a model that
did not train, a damaged artifact); 2 a usage or input mistake the person can fix (an unknown model or
recipe, a device this machine lacks, an artifacts directory that cannot be used, nothing to export).
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import time
from pathlib import Path

from pipeline.arguments import DEFAULT_ARTIFACTS, build_parser
from pipeline.dtypes import DEFAULT_DTYPE
from pipeline.errors import UserError, printable

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# An OSError with one of these says a path the person gave cannot be written: theirs to fix, not the work's.
USAGE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS}


class UsageError(UserError):
    """Bad command-line input: printed as one line, exit code 2."""


def _writable_dir(path: Path, flag: str = "--artifacts") -> Path:
    """`path` as a directory this process can write, created if missing; a UsageError saying why not."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path}: not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot create this directory ({exc.strerror or exc})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: this directory is not writable; choose another or change its permissions")
    return path


def _command(name: str, args: argparse.Namespace, models: str | None = None) -> str:
    """The command line to suggest: `python -m pipeline NAME`, with --catalog, --models and --artifacts as given."""
    parts = ["python -m pipeline", name]
    for where in getattr(args, "catalog", None) or ():
        parts += ["--catalog", str(where)]
    if models and models != "all":
        parts += ["--models", models]
    if args.artifacts != DEFAULT_ARTIFACTS:
        parts += ["--artifacts", str(args.artifacts)]
    return " ".join(parts)


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


def _dims(t) -> str:
    return f"{t.name}[{','.join(map(str, t.shape))}]" + ("" if t.dtype == DEFAULT_DTYPE else f" {t.dtype}")


def cmd_list(args: argparse.Namespace) -> int:
    from pipeline.catalog import CATALOG
    from pipeline.tables import text_table

    rows = []
    for spec in CATALOG.values():
        model = spec.build()
        params = sum(p.numel() for p in model.parameters())
        ins = ", ".join(_dims(t) for t in spec.inputs)
        outs = ", ".join(_dims(t) for t in spec.outputs)
        rows.append((spec.name, spec.seed, f"{ins} -> {outs}", f"{params:,}", "/".join(spec.recipes)))
    print(text_table(("model", "seed", "inputs -> outputs", "params", "recipes"), rows))
    return EXIT_OK


def cmd_summary(args: argparse.Namespace) -> int:
    from pipeline.catalog import get
    from pipeline.train.summary import layer_table

    print(layer_table(get(args.name), batch=args.batch))
    return EXIT_OK


def _trainable(specs: list, everything: bool) -> list:
    """The specs that have data to train on; one named without it is a UsageError ('all' skips it, saying so)."""
    from pipeline import catalog

    out = []
    for spec in specs:
        if spec.data is not None:
            out.append(spec)
            continue
        where = (catalog.source(spec.name) or {}).get("path", "")
        hint = f"python -m pipeline import --catalog {where} --model {spec.name} --state-dict FILE"
        if not everything:
            raise UsageError(
                f"--catalog {where}: {spec.name} has no data, so it cannot be trained; expected data=... in its "
                f"spec, or import its weights: {hint}"
            )
        print(f"{spec.name}: no data (import-only), not trained; {hint}", flush=True)
    return out


def cmd_train(args: argparse.Namespace) -> int:
    from pipeline.artifacts.fileio import exclusive
    from pipeline.catalog import select
    from pipeline.runtime.devices import resolve_torch_device
    from pipeline.tables import text_table
    from pipeline.train import Diverged, train_in_parallel, train_model

    specs = _trainable(select(args.models), args.models == "all")
    variants = _parse_recipes(args.recipe, [s.name for s in specs])
    unknown = set(variants) - {s.name for s in specs}
    if unknown:
        raise UsageError(f"--recipe names {', '.join(sorted(unknown))}, which --models does not select")
    for spec in specs:  # check every variant before spending time on training
        spec.recipe(variants.get(spec.name))
    device, note = resolve_torch_device(args.device)
    _writable_dir(args.artifacts)
    if note:
        print(note, flush=True)
    rows = []
    failed = []
    start = time.perf_counter()
    parallel = train_in_parallel(specs, device, variants, args.artifacts, args.seed)
    for spec in specs:
        began = time.perf_counter()
        variant = variants.get(spec.name) or spec.default_recipe
        seed_loss = spec.recipe(variant).seed_loss or None
        try:
            if parallel is not None:  # trained already, each in its own process
                hist, seconds = parallel[spec.name]
                if isinstance(hist, BaseException):
                    raise hist
                began = time.perf_counter() - seconds
            else:
                with exclusive(args.artifacts):
                    hist = train_model(spec, args.artifacts, device, args.seed, variant, not args.quiet)
        except Diverged as exc:
            failed.append(spec.name)
            rows.append((spec.name, variant, exc.steps, None, seed_loss, f"{time.perf_counter() - began:.1f}"))
            print(f"error: {exc}", file=sys.stderr, flush=True)
            continue
        loss = hist["loss"]
        rows.append((spec.name, variant, len(loss), loss[-1], seed_loss, f"{time.perf_counter() - began:.1f}"))
        formula = hist["report"].get("formula")
        line = f"{spec.name}: {variant}, {len(loss)} steps on {device}, loss {loss[0]:.4g} -> {loss[-1]:.4g}"
        print(line + (f"  {formula}" if formula else ""), flush=True)
    print(text_table(("model", "recipe", "steps", "final loss", "seed's final loss", "seconds"), rows))
    print(
        f"trained {len(specs) - len(failed)} of {len(specs)} model(s) in {time.perf_counter() - start:.1f} s; "
        f"outputs in {args.artifacts}/"
    )
    return EXIT_FAILED if failed else EXIT_OK


def cmd_import(args: argparse.Namespace) -> int:
    from pipeline.artifacts.fileio import exclusive
    from pipeline.catalog import get
    from pipeline.train import import_weights

    spec = get(args.model)
    if not args.state_dict.is_file():
        raise UsageError(f"--state-dict {args.state_dict}: no such file; expected a state_dict saved with torch.save")
    _writable_dir(args.artifacts)
    with exclusive(args.artifacts):
        hist = import_weights(spec, args.state_dict, args.artifacts)
    extra = f"; held-out accuracy {hist['accuracy']:.4f}" if "accuracy" in hist else ""
    print(
        f"{spec.name}: imported {args.state_dict} (sha256 {hist['imported']['sha256'][:12]}...) into "
        f"{args.artifacts / spec.name}/{extra}; next: `{_command('export', args, spec.name)}`"
    )
    return EXIT_OK


def _parity_device(requested: str) -> str:
    """The device parity adds to the CPU rows: auto (CUDA where each runtime can), cuda[:N] (required), or cpu."""
    from pipeline.runtime.devices import cuda_index

    requested = (requested or "auto").strip().lower()
    if requested == "mps":
        raise UsageError("--device mps: exported artifacts are checked and served on cpu or cuda; use mps to train")
    if requested.startswith("cuda:"):
        cuda_index(requested)  # a GPU index the machine lacks: one line, exit 2
    return requested


def _print_report(report, artifacts: Path) -> None:
    print(report.table())
    print(f"parity report: {artifacts / 'parity.json'}")


def _require_trained(specs: list, args: argparse.Namespace) -> None:
    """Refuse, in one line naming the command to run first, an export where no selected model is trained."""
    from pipeline.train import HISTORY, STATE_DICT

    def trained(name: str) -> bool:
        return (args.artifacts / name / STATE_DICT).is_file() and (args.artifacts / name / HISTORY).is_file()

    if any(trained(spec.name) for spec in specs):
        return  # the untrained ones, if any, fail one by one and the others are exported
    first = f"run `{_command('train', args, args.models)}` first"
    if not args.artifacts.is_dir():
        raise UsageError(
            f"nothing to export: {args.artifacts} is not a directory, so nothing was trained there; {first}"
        )
    if args.models == "all":
        raise UsageError(f"nothing to export: no model in {args.artifacts} has been trained; {first}")
    if len(specs) == 1:
        where = args.artifacts / specs[0].name / STATE_DICT
        raise UsageError(f"nothing to export: {specs[0].name} has not been trained (no {where}); {first}")
    names = ", ".join(spec.name for spec in specs)
    raise UsageError(f"nothing to export: none of {names} has been trained in {args.artifacts}; {first}")


def cmd_export(args: argparse.Namespace) -> int:
    if args.triton is not None:  # the old spelling of `triton [DIR]`
        args.dir = Path(args.triton) if args.triton else None
        return cmd_triton(args)
    from pipeline.artifacts.fileio import exclusive
    from pipeline.catalog import select
    from pipeline.export import choose_formats, run_export

    specs = select(args.models)
    chosen = choose_formats(args.formats)
    warnings: list[str] = []
    device = _parity_device(args.device)
    _require_trained(specs, args)
    _writable_dir(args.artifacts)
    start = time.perf_counter()
    with exclusive(args.artifacts):
        report, errors = run_export(
            specs, args.artifacts, args.opset, device, args.atol, args.rtol, chosen=chosen, warn=warnings.append
        )
    _print_report(report, args.artifacts)
    print(f"export took {time.perf_counter() - start:.1f} s; manifest: {args.artifacts / 'manifest.json'}")
    for line in warnings:  # a derived format withheld: the float32 formats are published, exit 0
        print(f"warning: {line}", file=sys.stderr)
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    return EXIT_FAILED if errors else EXIT_OK


def cmd_triton(args: argparse.Namespace) -> int:
    """`triton [DIR]`: a Triton model repository from the manifest as it is (nothing re-exported, no torch)."""
    from pipeline.artifacts.fileio import exclusive
    from pipeline.artifacts.manifest import ArtifactError, Manifest, model_names
    from pipeline.serving.triton import TritonError, build_repository

    out = args.artifacts / "triton" if args.dir is None else Path(args.dir)
    names = model_names(args.models)
    Manifest.load(args.artifacts)  # no manifest: one line, exit 2, before the lock creates the directory
    _writable_dir(out.parent, "DIR")
    with exclusive(args.artifacts):  # no export may replace the files while they are copied
        try:
            written = build_repository(Manifest.load(args.artifacts), out, names)
        except ArtifactError as exc:  # a listed file is damaged: the work failed, not the command line
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        except TritonError as exc:
            raise UsageError(str(exc)) from None
    print(f"Triton model repository: {out}/ ({len(written)} models: {', '.join(written)})")
    print(f"serve it with: tritonserver --model-repository={out.resolve()}")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from pipeline.artifacts.fileio import atomic_write_json
    from pipeline.artifacts.manifest import PARITY, Manifest
    from pipeline.runtime.parity import verify
    from pipeline.runtime.predictor import is_remote

    manifest = Manifest.load(args.artifacts)
    if args.explain:
        return _explain(manifest, args)
    names = manifest.select(args.models)
    for url in args.remote:
        if not is_remote(url):
            raise UsageError(f"--remote {url}: expected a server URL such as http://127.0.0.1:8000")
    device = _parity_device(args.device)
    _writable_dir(args.artifacts)  # the report is written there
    report = verify(manifest, names, device, args.atol, args.rtol, args.remote)
    atomic_write_json(args.artifacts / PARITY, report.as_dict())
    _print_report(report, args.artifacts)
    for row in report.failures():
        print(
            f"error: parity failed for {row.model} {row.format} on {row.runtime} ({row.device}), "
            f"output {row.output}: " + (row.error or f"max abs diff {row.max_abs:.3g}"),
            file=sys.stderr,
        )
    return EXIT_OK if report.passed else EXIT_FAILED


def _explain(manifest, args: argparse.Namespace) -> int:
    """`verify --explain MODEL[:FORMAT]`: one parity batch layer by layer; writes nothing."""
    from pipeline.runtime.explain import ExplainError, default_target, explain

    model, _, fmt = args.explain.partition(":")
    model = manifest.model(model.strip()).name
    runtime = args.runtime
    if not fmt.strip():
        fmt, found = default_target(manifest, model)
        runtime = runtime or found
    start = time.perf_counter()
    try:
        result = explain(manifest, model, fmt.strip(), runtime, args.batch, args.output, args.atol, args.rtol)
    except ExplainError as exc:
        raise UsageError(str(exc)) from None
    print(result.table())
    print(f"explained in {time.perf_counter() - start:.1f} s")
    return EXIT_OK if result.first is None else EXIT_FAILED


def cmd_triton_serve(args: argparse.Namespace) -> int:
    """Serve the Python-backend flavours of the models on the real Triton server until Ctrl-C or SIGTERM."""
    from pipeline.serving.triton_server import serve

    serve(args.artifacts, args.models, args.repository, args.port, args.triton_env)
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    from pipeline.bench import BenchError, run_bench

    if args.output is not None:
        _writable_dir(args.output.parent, "--output")
    elif args.artifacts.is_dir():  # a missing one is reported by the manifest's own one line
        _writable_dir(args.artifacts)
    try:
        run_bench(
            args.artifacts, args.models, args.device, args.quick, not args.skip_http, args.output, threads=args.threads
        )
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


COMMANDS = {
    "list": cmd_list,
    "summary": cmd_summary,
    "train": cmd_train,
    "import": cmd_import,
    "export": cmd_export,
    "verify": cmd_verify,
    "triton": cmd_triton,
    "bench": cmd_bench,
    "triton-serve": cmd_triton_serve,
}


def main(argv: list[str] | None = None) -> int:
    """Run one command; expected failures print one line and return a non-zero code."""
    args = build_parser(__doc__).parse_args(argv)  # a malformed command line exits 2 here
    try:
        if getattr(args, "catalog", None):  # triton-serve serves files alone: it takes none
            from pipeline import catalog

            catalog.use(args.catalog)  # before anything is written: a bad catalog changes nothing
        return COMMANDS[args.command](args)
    except UserError as exc:
        print(f"error: {printable(str(exc))}", file=sys.stderr)  # one line, whatever a file or client put in it
        return EXIT_USAGE
    except OSError as exc:  # a full disk, a read-only or vanished directory: one line naming the file
        where = exc.filename2 if exc.filename2 is not None else exc.filename
        print(f"error: {exc.strerror or exc}" + (f": {where}" if where is not None else ""), file=sys.stderr)
        return EXIT_USAGE if exc.errno in USAGE_ERRNOS else EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
