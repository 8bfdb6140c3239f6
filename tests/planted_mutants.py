"""Hand-planted behaviour bugs outside the mutation-tested core, and whether the suite catches each.

`make mutate` mutates the pure core (inputs, fileio, manifest, parity's comparison, the OIP codec) by machine.
Outside it, each entry below is a one-line bug a person could plausibly write, in the service, the runtime,
the loaders, export, quantize, train, weights, naming, the Triton model, formats, parity's targets, the demo's
routes, server and page, and the catalog. For each, this script makes a git worktree of HEAD, applies the
bug (the line must appear exactly once, else the entry is stale and the run fails), runs pytest with -x on
the entry's test files (or the whole suite with --full), and records killed (a test failed) or survived.

    python -m tests.planted_mutants              # every mutant, its own test files (minutes each)
    python -m tests.planted_mutants --check      # only that every mutant still applies to HEAD (seconds)
    python -m tests.planted_mutants --only 3,7   # some of them
    python -m tests.planted_mutants --full       # the whole suite (-n 3) against each: the honest figure

Exit 1 when fewer than --min percent (default 90) are killed, or an entry no longer applies.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    what: str  # the bug, as a person would notice it
    path: str
    old: str
    new: str
    tests: tuple[str, ...]  # the test files that should catch it


MUTANTS = (
    Mutant(
        "a token id equal to the vocabulary size reaches the runtime",
        "pipeline/runtime/values.py",
        "(flat >= self.high)",
        "(flat > self.high)",
        ("tests/test_limits.py", "tests/test_values.py"),
    ),
    Mutant(
        "Triton's batched requests get each other's answers",
        "pipeline/serving/triton_python_model.py",
        "        return responses\n",
        "        return responses[::-1]\n",
        ("tests/test_triton_python_model.py",),
    ),
    Mutant(
        "the float16 rule loosened tenfold",
        "pipeline/formats.py",
        "FP16_SCALE = 0.005",
        "FP16_SCALE = 0.05",
        ("tests/test_quantize.py",),
    ),
    Mutant(
        "the OIP format parameter ignored: ONNX always answers",
        "pipeline/serving/oip_protocol.py",
        '    fmt = req.get("parameters", {}).get("format")\n',
        "    fmt = None\n",
        ("tests/test_oip.py",),
    ),
    Mutant(
        "unread /call results kept without a cap",
        "demo/api.py",
        " or len(self.unread) >= MAX_UNREAD)",
        ")",
        ("tests/test_limits.py",),
    ),
    Mutant(
        "the request body limit raised from 1 MiB to 10 MiB",
        "demo/server.py",
        "MAX_REQUEST_BYTES = 1024 * 1024",
        "MAX_REQUEST_BYTES = 10 * 1024 * 1024",
        ("tests/test_limits.py",),
    ),
    Mutant(
        "compare measures every row against eager on the first example, not the input given",
        "pipeline/serving/service.py",
        "self._outputs(loaded, entry.name, ref_format, ref_runtime, ref_device, batch)[0]",
        "self._outputs(loaded, entry.name, ref_format, ref_runtime, ref_device, "
        "example_batch(entry, list(entry.examples[0]))[0])[0]",
        ("tests/test_service.py",),
    ),
    Mutant(
        "int8 quantizes tiny weights too (poly3_sin would lose 5.6% of its range)",
        "pipeline/export/quantize.py",
        "MIN_WEIGHT_ELEMENTS = 256",
        "MIN_WEIGHT_ELEMENTS = 1",
        ("tests/test_quantize.py",),
    ),
    Mutant(
        "an unknown model name is looked up without saying which exist",
        "pipeline/catalog/__init__.py",
        "raise CatalogError(f\"unknown model {name!r}; expected one of: {', '.join(CATALOG)}\") from None",
        'raise CatalogError(f"unknown model {name!r}") from None',
        ("tests/test_cli.py",),
    ),
    Mutant(
        "the Triton config's largest batch off by one",
        "pipeline/serving/triton.py",
        "lines.append(f\"max_batch_size: {config['max_batch_size']}\")",
        "lines.append(f\"max_batch_size: {config['max_batch_size'] - 1}\")",
        ("tests/test_triton.py",),
    ),
    Mutant(
        "a failed training run exits 0",
        "pipeline/cli.py",
        "return EXIT_FAILED if failed else EXIT_OK",
        "return EXIT_OK",
        ("tests/test_cli.py", "tests/test_train.py"),
    ),
    Mutant(
        "parity leaves out the CUDA rows a user asked for with --device cuda",
        "pipeline/runtime/targets.py",
        "            chosen.append(Target(fmt, runtime, gpu, why))\n",
        "            pass\n",
        ("tests/test_targets.py", "tests/test_devices.py"),
    ),
    Mutant(
        "the remote runtime checks no output names against the manifest",
        "pipeline/serving/remote.py",
        "if got_in != want_in or any(got_out.get(n) != d for n, d in want_out.items()):",
        "if got_in != want_in:",
        ("tests/test_oip.py",),
    ),
    Mutant(
        "a state_dict for another architecture is not refused in one line naming its keys",
        "pipeline/artifacts/weights.py",
        "    if problem:\n",
        "    if problem and False:\n",
        ("tests/test_weights.py", "tests/test_robustness_artifacts.py"),
    ),
    Mutant(
        "predict reports the requested runtime, not what ran",
        "pipeline/serving/service.py",
        '            "device": predictor.device,\n',
        '            "device": device,\n',
        ("tests/test_service.py", "tests/test_demo.py"),
    ),
    Mutant(
        "the sha256 check skipped when a predictor loads",
        "pipeline/runtime/predictor.py",
        "    path = manifest.verified_path(artifact)\n",
        "    path = manifest.root / artifact.path\n",
        ("tests/test_robustness_artifacts.py", "tests/test_service.py"),
    ),
    Mutant(
        "hostile input on the page's own event reaches Gradio unchecked",
        "demo/gradio_calls.py",
        "        if not test(value):\n",
        "        if False:\n",
        ("tests/test_robustness_app.py",),
    ),
    Mutant(
        "the output-name check of the predictor never fires",
        "pipeline/runtime/predictor.py",
        "        if self._same_names and len(outs) == self._count:\n",
        "        if True:\n",
        ("tests/test_parity.py", "tests/test_runtime.py"),
    ),
)


def apply(mutant: Mutant, root: Path) -> None:
    """Plant the bug in the tree at `root`; ValueError when its line does not appear exactly once."""
    path = root / mutant.path
    text = path.read_text() if path.exists() else ""
    count = text.count(mutant.old)
    if count != 1:
        raise ValueError(f"{mutant.path}: the line to mutate appears {count} times: {mutant.old.strip()!r}")
    path.write_text(text.replace(mutant.old, mutant.new))


def run(mutant: Mutant, full: bool, timeout: float) -> tuple[str, float]:
    """('killed' | 'survived' | 'timeout', seconds) for one mutant in a fresh worktree of HEAD."""
    work = Path(tempfile.mkdtemp(prefix="planted-")) / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(work), "HEAD"], cwd=ROOT, check=True)
    try:
        try:
            apply(mutant, work)
        except ValueError:  # HEAD moved since the check: this entry no longer applies
            return "stale", 0.0
        tests = [] if full else [t for t in mutant.tests if (work / t).exists()]
        workers = ["-n", "3", "--dist", "loadfile"] if full else ["-p", "no:xdist"]
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-o", "addopts=", *workers, *tests]
        env = {**os.environ, "PYTHONPATH": str(work)}
        start = time.monotonic()
        try:
            result = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "timeout", time.monotonic() - start
        return ("killed" if result.returncode == 1 else "survived" if result.returncode == 0 else "error"), (
            time.monotonic() - start
        )
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(work)], cwd=ROOT, check=False)
        shutil.rmtree(work.parent, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Run the planted mutants against the suite and print a table; exit 1 under --min percent killed."""
    parser = argparse.ArgumentParser(prog="python -m tests.planted_mutants", description=main.__doc__)
    parser.add_argument("--check", action="store_true", help="only check that every mutant applies to HEAD")
    parser.add_argument("--full", action="store_true", help="run the whole suite against each mutant")
    parser.add_argument("--only", default="", help="comma-separated mutant numbers (1-based)")
    parser.add_argument("--min", type=float, default=90.0, help="the kill rate required, percent")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per mutant")
    args = parser.parse_args(argv)
    chosen = [int(n) for n in args.only.split(",") if n] or list(range(1, len(MUTANTS) + 1))
    stale = []
    for n in chosen:
        try:
            apply(MUTANTS[n - 1], _scratch_copy(MUTANTS[n - 1]))
        except ValueError as exc:
            stale.append(f"{n}: {exc}")
    if stale or args.check:
        print("\n".join(stale) or f"all {len(chosen)} mutants apply to HEAD")
        return 1 if stale else 0
    killed = 0
    for n in chosen:
        outcome, seconds = run(MUTANTS[n - 1], args.full, args.timeout)
        killed += outcome == "killed"
        print(f"{n:>2}  {outcome:<8} {seconds:6.0f} s  {MUTANTS[n - 1].path}: {MUTANTS[n - 1].what}", flush=True)
    rate = 100.0 * killed / len(chosen)
    print(f"killed {killed} of {len(chosen)} ({rate:.0f}%)")
    return 0 if rate >= args.min else 1


def _scratch_copy(mutant: Mutant) -> Path:
    """A temporary copy of the one file a mutant touches, for --check (nothing in the checkout changes)."""
    scratch = Path(tempfile.mkdtemp(prefix="planted-check-"))
    source = ROOT / mutant.path
    (scratch / mutant.path).parent.mkdir(parents=True, exist_ok=True)
    if source.exists():
        shutil.copy(source, scratch / mutant.path)
    return scratch


if __name__ == "__main__":
    sys.exit(main())
