"""Which models the benchmarks pick for each role: what the catalog declares, else a rule from the manifest.

A spec's `bench_roles` (pipeline/spec.py, BENCH_ROLES) names the models the goals are about; the seed
catalog declares them. A manifest whose models no loaded catalog gives a role (a user catalog alone,
or artifacts served without their catalog) still benches: each role then falls back to the manifest's
order, as each function says.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipeline import catalog
from pipeline.artifacts.manifest import Manifest


def declared(manifest: Manifest, role: str, among: Sequence[str] | None = None) -> list[str]:
    """The models (of `among`, default the manifest's) whose catalog spec declares `role`, in manifest order."""
    names = list(manifest.models) if among is None else [n for n in manifest.models if n in among]
    return [n for n in names if n in catalog.CATALOG and role in catalog.get(n).bench_roles]


def _width(manifest: Manifest, name: str) -> int:
    """How many values one example of `name` holds, over all its inputs."""
    total = 0
    for spec in manifest.model(name).inputs:
        size = 1
        for dim in spec["shape"][1:]:
            size *= int(dim)
        total += size
    return total


def floor_model(manifest: Manifest, names: Sequence[str]) -> str | None:
    """The model the floor goal and the tuning are judged on: the declared "floor" model among `names`
    that feeds one float32 row, else the first such model of `names`; None when none does."""
    flat = [n for n in names if manifest.model(n).flat]  # the tuning candidates feed one float32 row
    return next(iter(declared(manifest, "floor", flat)), None) or next(iter(flat), None)


def http_models(manifest: Manifest, names: Sequence[str]) -> list[str]:
    """The models the demo's routes (and Triton) are measured on: the declared "http" ones in the manifest,
    else the first of `names`; smallest input first (the cold start asks the first for a prediction)."""
    picked = declared(manifest, "http") or list(names[:1])
    return sorted(picked, key=lambda n: _width(manifest, n))


def quick_models(manifest: Manifest) -> list[str]:
    """What `bench --quick` measures: the "floor" and "http" models, else the manifest's first model."""
    picked = [*declared(manifest, "floor"), *declared(manifest, "http")]
    return list(dict.fromkeys(picked)) or list(manifest.models)[:1]


def wall_models(manifest: Manifest, names: Sequence[str], quick: bool) -> str:
    """The models whose train/export wall time is measured: all of `names`, or with --quick the declared
    "quick" model (it need not be among `names`: it is the cheapest to train), else the last of `names`."""
    if not quick:
        return ",".join(names)
    return next(iter(declared(manifest, "quick")), names[-1])


def roles(manifest: Manifest, names: Sequence[str], quick: bool) -> dict[str, Any]:
    """The model picked for each role in this run, as bench.json records it."""
    return {
        "floor": floor_model(manifest, names),
        "http": http_models(manifest, names),
        "walls": wall_models(manifest, names, quick),
    }
