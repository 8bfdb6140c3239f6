"""The kill rate of a `mutmut run`, per module, and every mutant that survived with its diff.

Usage (what `make mutate` runs after mutmut): python -m tests.mutation_score [--min PERCENT] GLOB...
GLOB selects mutants by name, as `mutmut run` does (e.g. "pipeline.runtime.inputs.*"). Exits 1 when fewer
than PERCENT of the selected mutants were killed. Reads mutmut's results under mutants/.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import sys
from collections import Counter
from pathlib import Path

# A test failed, pytest broke, the tests never finished (mutmut's timeout, or the worker killed by its
# CPU-time limit: SIGXCPU, then SIGKILL, which mutmut 3.8 files as "suspicious"), the type checker caught it.
KILLED = {1, 3, 36, 37, -24, -9}
STATUS = {0: "survived", 5: "no tests", 33: "no tests", 34: "skipped"}


def results(root: Path, globs: list[str]) -> dict[str, int | None]:
    """Exit code of every selected mutant, by name."""
    found: dict[str, int | None] = {}
    for meta in sorted(root.glob("**/*.py.meta")):
        codes = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
        found.update({k: v for k, v in codes.items() if any(fnmatch.fnmatchcase(k, g) for g in globs)})
    return found


def module_of(name: str) -> str:
    """pipeline.serving.oip.x__input__mutmut_3 -> pipeline.serving.oip"""
    return re.sub(r"\.x[_ǁ].*$", "", name)


def diff(name: str) -> str:
    try:
        from mutmut.mutation.diff_apply import get_diff_for_mutant

        lines = get_diff_for_mutant(name).splitlines()
    except Exception as exc:  # noqa: BLE001 - mutmut's internals may move: the name is still useful
        return f"    (no diff: {type(exc).__name__})"
    return "\n".join("    " + line for line in lines if line[:1] in "+-" and line[:3] not in ("+++", "---"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("globs", nargs="+")
    parser.add_argument("--min", type=float, default=90.0, help="the lowest acceptable kill rate, in percent")
    parser.add_argument("--root", type=Path, default=Path("mutants"))
    args = parser.parse_args(argv)
    found = results(args.root, args.globs)
    if not found:
        print(f"no mutants under {args.root} match {' '.join(args.globs)}: run `make mutate`", file=sys.stderr)
        return 2
    by_module: dict[str, Counter] = {}
    for name, code in found.items():
        by_module.setdefault(module_of(name), Counter())[code in KILLED] += 1
    print(f"{'module':<22} {'mutants':>7} {'killed':>7} {'rate':>7}")
    for module, counts in sorted(by_module.items()):
        total = counts[True] + counts[False]
        print(f"{module:<22} {total:>7} {counts[True]:>7} {100 * counts[True] / total:>6.1f}%")
    killed = sum(c[True] for c in by_module.values())
    rate = 100 * killed / len(found)
    print(f"{'all':<22} {len(found):>7} {killed:>7} {rate:>6.1f}%")
    left = sorted((n, c) for n, c in found.items() if c not in KILLED)
    if left:
        print(f"\n{len(left)} not killed (`mutmut show NAME` gives the full diff):")
        for name, code in left:
            print(f"  {name}: {STATUS.get(code, 'not checked' if code is None else 'suspicious')}")
            print(diff(name))
    if rate < args.min:
        print(f"\nkill rate {rate:.1f}% is below {args.min:g}%", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
