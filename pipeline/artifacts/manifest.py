"""The manifest: the one index of exported artifacts. Reading it needs no torch.

Everything downstream (verify, the runtime loader, the demo, the benchmarks) finds artifacts here,
by model and format name, never by building file names. Paths are relative to the artifacts
directory and must stay inside it; every file is checked against its sha256 before it is loaded.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.artifacts.fileio import sha256_file
from pipeline.artifacts.tensors import dtype, width
from pipeline.dtypes import DEFAULT_DTYPE, DTYPES
from pipeline.errors import UserError
from pipeline.formats import ARTIFACT_KINDS, FORMATS

MANIFEST = "manifest.json"
PARITY = "parity.json"
SCHEMA = 1
ALL = "all"  # the --models value that means every model


class ManifestError(UserError, ValueError):
    """A missing, malformed or unsafe manifest, or a name it does not list."""


class ArtifactError(UserError, RuntimeError):
    """An artifact file that is missing or does not match its sha256."""


@dataclass(frozen=True)
class Companion:
    """A file an artifact needs beside its main one (weights kept apart from a graph), under its own sha256."""

    path: str  # relative to the artifacts directory
    sha256: str
    bytes: int


@dataclass(frozen=True)
class Artifact:
    """One exported file as the manifest lists it, with the companion files it needs, if any."""

    format: str
    path: str  # relative to the artifacts directory
    sha256: str
    bytes: int  # every file of the artifact together: the main one and its companions
    files: tuple[Companion, ...] = ()


@dataclass(frozen=True)
class ModelEntry:
    """One model's section of the manifest."""

    name: str
    description: str
    seed: str
    inputs: list[dict[str, Any]]  # [{"name", "shape", "dtype", "features", and "values", "classes", "image"}]
    outputs: list[dict[str, Any]]
    examples: list[list[float]]
    artifacts: dict[str, Artifact]
    raw: dict[str, Any] = field(repr=False, compare=False)
    not_applicable: dict[str, str] = field(default_factory=dict)  # derived format -> why export wrote no file
    failed: dict[str, str] = field(default_factory=dict)  # derived format -> the parity reason it is not served
    chosen: tuple[str, ...] | None = None  # the formats `export --formats` asked for; None: every one

    def withheld(self, fmt: str) -> str | None:
        """Why export published no `fmt` file for this model (not applicable, failed, not asked for), or None."""
        if fmt in self.not_applicable:
            return f"not applicable ({self.not_applicable[fmt]})"
        if fmt in self.failed:
            return f"not served: it missed its parity rule at export ({self.failed[fmt]})"
        spec = FORMATS.get(fmt)
        if self.chosen is not None and spec is not None and spec.exporter and fmt not in self.chosen:
            return f"not exported (export --formats {','.join(self.chosen)})"
        return None

    def tolerance(self, fmt: str) -> tuple[float, float, float]:
        """(atol, rtol, scale) of `fmt`'s parity rule: as export recorded it for this model, else as declared."""
        spec = FORMATS[fmt]
        kept = (self.raw.get("tolerance") or {}).get(fmt) or {}
        return (
            float(kept.get("atol", spec.atol)),
            float(kept.get("rtol", spec.rtol)),
            float(kept.get("scale", spec.scale)),
        )

    @property
    def input(self) -> dict[str, Any]:
        """The model's first input (the only one of every seed model)."""
        return self.inputs[0]

    @property
    def features(self) -> list[str]:
        """The first input's feature names."""
        return list(self.input["features"])

    @property
    def input_names(self) -> list[str]:
        return [t["name"] for t in self.inputs]

    @property
    def values_per_example(self) -> int:
        """How many numbers one example holds, over every input (what a JSON request pays for)."""
        return sum(width(t) for t in self.inputs)

    @property
    def flat(self) -> bool:
        """Whether the model takes one float32 row of features, as every seed model does."""
        t = self.input
        return len(self.inputs) == 1 and len(t["shape"]) == 2 and dtype(t) == DEFAULT_DTYPE

    @property
    def output_names(self) -> list[str]:
        return [o["name"] for o in self.outputs]

    def served_formats(self) -> list[str]:
        """The formats this model can be served in (artifact listed, runtime installed), in formats.py's order."""
        return [
            name
            for name, spec in FORMATS.items()
            if spec.artifact_kind in self.artifacts and spec.missing() is None  # its runtime installed here
        ]

    def artifact(self, fmt: str) -> Artifact:
        """The artifact of format `fmt`, or a ManifestError listing the formats this model has."""
        why = self.withheld(fmt)
        if why and fmt not in self.artifacts:
            raise ManifestError(f"{self.name} has no {fmt!r} artifact: {why}")
        if fmt not in self.artifacts:
            raise ManifestError(f"{self.name} has no {fmt!r} artifact; expected one of: {', '.join(self.artifacts)}")
        return self.artifacts[fmt]


def model_names(models: str | Sequence[str] | None) -> list[str] | None:
    """The names a --models value lists ('a, b' or a list), or None for every model ('all' or None)."""
    if models is None or models == ALL or (not isinstance(models, str) and list(models) == [ALL]):
        return None
    if isinstance(models, str):
        return [n.strip() for n in models.split(",") if n.strip()]
    return list(models)


@dataclass(frozen=True)
class Manifest:
    """A loaded, validated manifest bound to its artifacts directory."""

    root: Path
    models: dict[str, ModelEntry]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def load(cls, root: Path | str) -> Manifest:
        """Read and validate DIR/manifest.json; raise ManifestError with one line if it is unusable."""
        root = Path(root)
        path = root / MANIFEST
        if not path.is_file():
            raise ManifestError(
                f"no manifest at {path}: create the artifacts with `make train export` "
                f"(or `python -m pipeline train --artifacts {root} && python -m pipeline export --artifacts {root}`)"
            )
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad UTF-8, bad JSON, huge integers
            raise ManifestError(f"{path} is not valid JSON ({exc}); re-run `make export`") from None
        return cls.from_dict(root, raw, str(path))

    @classmethod
    def from_dict(cls, root: Path, raw: Any, where: str = MANIFEST) -> Manifest:
        """Validate a manifest dict (as written by export) against `root`."""
        if not isinstance(raw, dict) or not isinstance(raw.get("models"), dict):
            raise ManifestError(f"{where} has no 'models' object; re-run `make export`")
        models = {}
        for name, entry in raw["models"].items():
            models[name] = _model_entry(Path(root), name, entry, where)
        return cls(Path(root), models, raw)

    def model(self, name: str) -> ModelEntry:
        """The entry for `name`, or a ManifestError listing the models there are."""
        if not isinstance(name, str) or name not in self.models:
            raise ManifestError(f"unknown model {name!r}; expected one of: {', '.join(self.models)}")
        return self.models[name]

    def select(self, models: str | Sequence[str] | None) -> list[str]:
        """The models of a --models value ('all', 'a,b' or a list; model_names), in manifest order; ManifestError
        naming the models there are for an unknown one or none."""
        names = model_names(models)
        if names is None:
            return list(self.models)
        if not names:
            raise ManifestError(f"no model named; expected 'all' or some of: {', '.join(self.models)}")
        wanted = {self.model(n).name for n in names}
        return [name for name in self.models if name in wanted]

    def path_of(self, rel: str) -> Path:
        """Absolute path of a manifest-relative path, refused if it leaves the artifacts directory."""
        return _inside(self.root, rel, MANIFEST)

    def verified_path(self, artifact: Artifact) -> Path:
        """The artifact's path after checking that it and each companion file exist and match their sha256."""
        for companion in artifact.files:
            self._verified(companion.path, companion.sha256)
        return self._verified(artifact.path, artifact.sha256)

    def _verified(self, rel: str, sha256: str) -> Path:
        path = self.path_of(rel)
        if not path.is_file():
            raise ArtifactError(f"{rel} is listed in the manifest but missing; re-run `make export`")
        digest = sha256_file(path)
        if digest != sha256:
            raise ArtifactError(
                f"{rel} does not match its sha256 in the manifest "
                f"(expected {sha256[:12]}..., got {digest[:12]}...); refusing to load it"
            )
        return path


def _inside(root: Path, rel: Any, where: str) -> Path:
    if not isinstance(rel, str) or not rel or Path(rel).is_absolute() or "\x00" in rel:
        raise ManifestError(f"{where} lists path {rel!r}; expected a path relative to the artifacts directory")
    base = root.resolve()
    path = (base / rel).resolve()
    if not path.is_relative_to(base):
        raise ManifestError(f"{where} lists path {rel!r}, which is outside the artifacts directory {base}")
    return path


def _artifacts(root: Path, items: list[Any], name: str, where: str) -> dict[str, Artifact]:
    """A model's artifact records, each path (and each companion file's) inside the artifacts directory."""
    artifacts = {}
    for item in items:
        try:
            files = tuple(Companion(f["path"], str(f["sha256"]), int(f["bytes"])) for f in item.get("files") or ())
            art = Artifact(str(item["format"]), item["path"], str(item["sha256"]), int(item["bytes"]), files)
        except (KeyError, TypeError, ValueError, OverflowError, AttributeError):
            raise ManifestError(f"{where}: model {name!r} has a malformed artifact entry") from None
        if art.format not in ARTIFACT_KINDS:
            raise ManifestError(f"{where}: model {name!r} lists unknown format {art.format!r}")
        for rel in (art.path, *(f.path for f in files)):
            _inside(root, rel, where)
        artifacts[art.format] = art
    return artifacts


def _model_entry(root: Path, name: str, entry: Any, where: str) -> ModelEntry:
    def need(key: str, kind: type) -> Any:
        if not isinstance(entry, dict) or not isinstance(entry.get(key), kind):
            raise ManifestError(f"{where}: model {name!r} has no valid {key!r} ({kind.__name__}); re-run `make export`")
        return entry[key]

    inputs, outputs = need("inputs", list), need("outputs", list)
    for spec in inputs + outputs:
        if (
            not isinstance(spec, dict)
            or not isinstance(spec.get("name"), str)
            or not isinstance(spec.get("features"), list)
            or not isinstance(spec.get("shape"), list)
            or len(spec["shape"]) < (2 if spec in inputs else 1)  # an output may be a scalar per example
            or not all(_axis(d, spec) for d in spec["shape"][1:])
            or dtype(spec) not in DTYPES
        ):
            raise ManifestError(f"{where}: model {name!r} has a malformed input or output spec")
    if not inputs:
        raise ManifestError(f"{where}: model {name!r} has no input")
    for kind, specs in (("input", inputs), ("output", outputs)):
        names = [s["name"] for s in specs]
        if len(set(names)) != len(names):
            raise ManifestError(f"{where}: model {name!r} names two {kind}s alike ({', '.join(names)})")
    artifacts = _artifacts(root, need("artifacts", list), name, where)
    not_applicable = entry.get("not_applicable") or {}
    if not isinstance(not_applicable, dict) or not all(
        fmt in ARTIFACT_KINDS and fmt not in artifacts and isinstance(why, str) for fmt, why in not_applicable.items()
    ):
        raise ManifestError(f"{where}: model {name!r} has a malformed 'not_applicable' (format -> reason)")
    failed, chosen = _withheld(entry, artifacts, name, where)
    task = entry.get("task")
    if task is not None and not (
        isinstance(task, dict) and isinstance(task.get("path"), str) and isinstance(task.get("sha256"), str)
    ):
        raise ManifestError(f"{where}: model {name!r} has a malformed 'task' (path, sha256)")
    for key in ("history", "plot"):
        if entry.get(key) is not None:
            _inside(root, entry[key], where)
    if task is not None:
        _inside(root, task["path"], where)
    return ModelEntry(
        name=name,
        description=str(entry.get("description", "")),
        seed=str(entry.get("seed", "")),
        inputs=inputs,
        outputs=outputs,
        examples=need("examples", list),
        artifacts=artifacts,
        raw=entry,
        not_applicable=dict(not_applicable),
        failed=failed,
        chosen=chosen,
    )


def _withheld(
    entry: dict[str, Any], artifacts: dict[str, Artifact], name: str, where: str
) -> tuple[dict[str, str], tuple[str, ...] | None]:
    """The entry's `failed` formats and `formats` list, and its per-format `tolerance`, validated."""
    failed = entry.get("failed") or {}
    if not isinstance(failed, dict) or not all(
        isinstance(fmt, str) and fmt in FORMATS and fmt not in artifacts and isinstance(why, str)
        for fmt, why in failed.items()
    ):
        raise ManifestError(f"{where}: model {name!r} has a malformed 'failed' (format -> reason)")
    chosen = entry.get("formats")
    if chosen is not None and (
        not isinstance(chosen, list) or not all(isinstance(f, str) and f in FORMATS for f in chosen)
    ):
        raise ManifestError(f"{where}: model {name!r} has a malformed 'formats' (a list of format names)")
    tolerance = entry.get("tolerance") or {}
    if not isinstance(tolerance, dict) or not all(
        isinstance(fmt, str)
        and fmt in FORMATS
        and isinstance(rule, dict)
        and all(k in ("atol", "rtol", "scale") and _number(v) for k, v in rule.items())
        for fmt, rule in tolerance.items()
    ):
        raise ManifestError(f"{where}: model {name!r} has a malformed 'tolerance' (format -> atol, rtol, scale)")
    return dict(failed), None if chosen is None else tuple(chosen)


def _axis(d: Any, spec: dict[str, Any]) -> bool:
    """A size, or the name of a varying axis whose range the spec's "dims" gives as [min, max]."""
    if isinstance(d, str):
        r = (spec.get("dims") or {}).get(d) if isinstance(spec.get("dims"), dict) else None
        return (
            isinstance(r, list)
            and len(r) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in r)
            and 1 <= r[0] <= r[1] < 2**31
        )
    return isinstance(d, int) and not isinstance(d, bool) and 0 < d < 2**31


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
