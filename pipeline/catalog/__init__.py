"""The catalog: the seed models plus the catalog files a person names with --catalog, by model name.

A catalog file is a Python file (or an importable module) that defines `CATALOG`, a list of
`pipeline.spec.ModelSpec`. Loading one runs its code, so a catalog is only ever loaded from a path
given on the command line, never from a path found in a manifest: the manifest records where each
model came from (path and sha256) as information only. The spec API is re-exported here.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from pipeline.artifacts.manifest import model_names
from pipeline.errors import one_line
from pipeline.spec import (  # noqa: F401 - the public spec API, importable from here too
    DTYPES,
    LOSSES,
    OPTIMIZERS,
    CatalogError,
    Example,
    Image,
    ModelSpec,
    NumpyForward,
    NumpyPrepare,
    Recipe,
    Study,
    TensorSpec,
    model,
    tensor,
    with_recipe,
)

SEED_CATALOG = "pipeline.catalog.seeds"  # loaded by default, checked by the tests rather than at every start

CATALOG: dict[str, ModelSpec] = {}
SOURCES: dict[str, dict[str, str]] = {}  # model name -> {"path", "sha256"} of the catalog it came from
_LOADED: dict[str, list[str]] = {}  # a catalog's resolved path (or module) -> the names it added
_GIVEN: list[str] = []  # the --catalog values, as given, for commands that run another command


class CatalogFileError(CatalogError):
    """A catalog file that cannot be used; the message names the file and what was expected."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _import(where: str) -> tuple[Any, Path | None]:
    """The module at path `where` (or the importable module named `where`) and its file."""
    path = Path(where)
    if path.suffix == ".py" or path.exists():
        if not path.is_file():
            raise CatalogFileError(f"--catalog {where}: no such file; expected a Python file defining CATALOG")
        name = "pipeline_catalog_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
        loader_spec = importlib.util.spec_from_file_location(name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise CatalogFileError(f"--catalog {where}: not importable; expected a Python file ending in .py")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = module  # dataclasses and pickling look their module up here
        try:
            loader_spec.loader.exec_module(module)
        except BaseException as exc:
            sys.modules.pop(name, None)
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise CatalogFileError(
                f"--catalog {where}: does not import ({one_line(exc, 200)}); expected a Python file defining CATALOG"
            ) from None
        return module, path
    try:
        module = importlib.import_module(where)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise CatalogFileError(
            f"--catalog {where}: does not import ({one_line(exc, 200)}); expected a .py file or an importable module"
        ) from None
    file = getattr(module, "__file__", None)
    return module, Path(file) if file else None


def _specs_of(module: Any, where: str) -> list[ModelSpec]:
    if not hasattr(module, "CATALOG"):
        raise CatalogFileError(f"--catalog {where}: defines no CATALOG; expected CATALOG = [ModelSpec, ...]")
    specs = module.CATALOG
    if not isinstance(specs, (list, tuple)):
        raise CatalogFileError(f"--catalog {where}: CATALOG is a {type(specs).__name__}; expected a list of ModelSpec")
    for i, spec in enumerate(specs):
        if not isinstance(spec, ModelSpec):
            raise CatalogFileError(
                f"--catalog {where}: CATALOG[{i}] is a {type(spec).__name__}; expected a ModelSpec "
                "(pipeline.spec.ModelSpec or pipeline.spec.model(...))"
            )
    return list(specs)


def check_outputs(spec: ModelSpec, where: str) -> None:
    """Run a fresh module once on the spec's examples; its outputs must be the declared ones, by count and shape."""
    want = ", ".join(f"{t.name} {list(t.shape)}" for t in spec.outputs)
    try:
        batch = spec.example_inputs()
        module = spec.export_form(spec.build().eval()).eval()
        with torch.no_grad():
            out = module(*batch)
    except Exception as exc:  # noqa: BLE001 - the user's code: any failure is this one line
        raise CatalogFileError(
            f"--catalog {where}: {spec.name}'s module does not run on its examples ({one_line(exc, 200)}); "
            f"expected inputs {', '.join(f'{t.name} {t.dtype} {list(t.shape)}' for t in spec.inputs)}"
        ) from None
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    n = len(batch[0])
    got = [list(o.shape[1:]) if isinstance(o, torch.Tensor) and o.ndim and o.shape[0] == n else None for o in outs]
    if len(outs) != len(spec.outputs) or any(
        g is None or not t.fits(tuple(g)) for g, t in zip(got, spec.outputs, strict=False)
    ):
        shown = ", ".join("not a batch of tensors" if g is None else str(g) for g in got)
        raise CatalogFileError(
            f"--catalog {where}: {spec.name}'s module returns {len(outs)} output(s) of shape {shown} after the "
            f"batch axis; expected the declared outputs {want}"
        )


def check_recipes(spec: ModelSpec, where: str) -> None:
    """Every recipe names a loss and an optimizer that training knows."""
    for recipe in spec.recipes.values():
        for kind, name, valid in (("loss", recipe.loss, LOSSES), ("optimizer", recipe.optimizer, OPTIMIZERS)):
            if name not in valid:
                raise CatalogFileError(
                    f"--catalog {where}: {spec.name}: {kind} {name!r}; expected one of: {', '.join(valid)}"
                )


def _shown(t: torch.Tensor) -> str:
    return f"{list(t.shape)} {str(t.dtype).removeprefix('torch.')}"


def check_data(spec: ModelSpec, where: str) -> None:
    """`data` (and `test_data`) give one tensor per input of the declared shape and dtype, and targets that fit."""
    for field_name in ("data", "test_data"):
        draw = getattr(spec, field_name)
        if draw is None:
            continue
        head = f"--catalog {where}: {spec.name}: {field_name}"
        try:
            got = draw(torch.Generator().manual_seed(0))
        except Exception as exc:  # noqa: BLE001 - the user's code: any failure is this one line
            raise CatalogFileError(f"{head} raises {one_line(exc, 200)}; expected (inputs, targets)") from None
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise CatalogFileError(f"{head} gives a {type(got).__name__}; expected a pair (inputs, targets)")
        x, y = got
        xs = list(x) if isinstance(x, (tuple, list)) else [x]
        names = ", ".join(t.name for t in spec.inputs)
        if len(xs) != len(spec.inputs) or not all(isinstance(t, torch.Tensor) for t in [*xs, y]):
            raise CatalogFileError(
                f"{head} gives {len(xs)} input tensor(s); expected {len(spec.inputs)} ({names}), in the declared order"
                if len(xs) != len(spec.inputs)
                else f"{head} gives something that is not a torch.Tensor; expected tensors ({names}) and targets"
            )
        rows = len(y)
        for t, value in zip(spec.inputs, xs, strict=True):
            if value.dtype != DTYPES[t.dtype] or not value.ndim or not t.fits(tuple(value.shape[1:])):
                raise CatalogFileError(
                    f"{head} gives {t.name} of shape {_shown(value)}; expected [N, {t.shape_text}] {t.dtype}"
                )
            if len(value) != rows:
                raise CatalogFileError(
                    f"{head} gives {len(value)} rows of {t.name} but {rows} targets; expected one each"
                )
        _check_targets(spec, y, head)


def _check_targets(spec: ModelSpec, y: torch.Tensor, head: str) -> None:
    out = spec.outputs[0]
    if any(r.loss == "cross_entropy" for r in spec.recipes.values()):
        if y.dtype != torch.int64 or y.ndim != 1:
            raise CatalogFileError(
                f"{head} gives targets of shape {_shown(y)}; expected [N] int64 (class indices for cross_entropy)"
            )
    elif y.dtype != DTYPES[out.dtype] or not y.ndim or not out.fits(tuple(y.shape[1:])):
        raise CatalogFileError(
            f"{head} gives targets of shape {_shown(y)}; expected [N, {out.shape_text}] {out.dtype} "
            f"(the first output, {out.name})"
        )


def add(where: str | Path, check: bool = True) -> list[str]:
    """Load the catalog at `where` and add its models; nothing is added unless every spec is valid."""
    where = str(where)
    path = Path(where)
    key = str(path.resolve()) if path.suffix == ".py" or path.exists() else where
    if key in _LOADED:
        return _LOADED[key]
    module, file = _import(where)
    specs = _specs_of(module, where)
    seen: set[str] = set()
    for spec in specs:
        if spec.name in CATALOG or spec.name in seen:
            owner = SOURCES.get(spec.name, {}).get("path", where)
            raise CatalogFileError(
                f"--catalog {where}: model name {spec.name!r} is already taken (by {owner}); expected a new name"
            )
        seen.add(spec.name)
        if check:
            check_recipes(spec, where)
            check_data(spec, where)
            check_outputs(spec, where)
    source = {"path": where, "sha256": ""}  # as the person wrote it: information, never loaded from
    if file is not None and file.is_file():
        source["sha256"] = _sha256(file)
    for spec in specs:
        CATALOG[spec.name] = spec
        SOURCES[spec.name] = dict(source)
    _LOADED[key] = [s.name for s in specs]
    return _LOADED[key]


def use(paths: Iterable[str | Path] | None) -> list[str]:
    """Add every catalog in `paths` (the --catalog values, in order); the names they added."""
    names: list[str] = []
    for where in paths or ():
        names += add(where)
        if str(where) not in _GIVEN:
            _GIVEN.append(str(where))
    return names


def given() -> list[str]:
    """The catalog paths given on the command line (by `use`), in order."""
    return list(_GIVEN)


def source(name: str) -> dict[str, str] | None:
    """The catalog `name` came from: {"path", "sha256"}."""
    return SOURCES.get(name)


def get(name: str) -> ModelSpec:
    """The spec called `name`, or a CatalogError listing the valid names."""
    try:
        return CATALOG[name]
    except KeyError:
        raise CatalogError(f"unknown model {name!r}; expected one of: {', '.join(CATALOG)}") from None


def select(names: str | Sequence[str] | None) -> list[ModelSpec]:
    """Specs for 'all', None, a comma-separated string or a list of names, in catalog order."""
    names = model_names(names)
    if names is None:
        return list(CATALOG.values())
    if not names:
        raise CatalogError(f"no model named; expected 'all' or some of: {', '.join(CATALOG)}")
    wanted = {get(n).name for n in names}
    return [spec for spec in CATALOG.values() if spec.name in wanted]


def first() -> str:
    """The first model in the catalog: what a command shows when nobody names one."""
    return next(iter(CATALOG))


add(SEED_CATALOG, check=False)
