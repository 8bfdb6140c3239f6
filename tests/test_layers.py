"""The package's layout is its architecture: stages in folders, data flowing one way through them.

Read from the source (no import runs), so `make lint` checks it in a second:
- no stage imports a stage above it, at module level or inside a function;
- the serving side (the demo, pipeline/serving, and what they import at module level) never imports torch
  at module level, so a demo serving ONNX files starts without it.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Highest first. Stages on one line are siblings: neither may import the other. A stage may import any below it.
LAYERS: list[tuple[str, ...]] = [
    ("demo",),
    ("pipeline.__main__",),
    ("pipeline.cli",),
    ("pipeline.arguments",),
    ("pipeline.bench",),
    ("pipeline.serving",),
    ("pipeline.export",),
    ("pipeline.train", "pipeline.runtime"),
    ("pipeline.catalog",),
    ("pipeline.artifacts",),
    ("pipeline.formats", "pipeline.spec", "pipeline.tables"),
    ("pipeline.dtypes",),
    ("pipeline.errors",),
]
SERVING_SIDE = ("demo", "pipeline.serving")
TORCH_FREE_EXCEPT = {"pipeline.serving.triton_python_model"}  # runs inside Triton, not in our process


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


def modules() -> dict[str, Path]:
    files = [*ROOT.joinpath("pipeline").rglob("*.py"), *ROOT.joinpath("demo").rglob("*.py")]
    return {module_name(p): p for p in files}


@cache
def imports(path: Path) -> tuple[tuple[str, bool], ...]:
    """(imported module, at module level) for every import statement in the file."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body} | {
        id(n) for node in tree.body if isinstance(node, ast.Try | ast.If) for n in ast.walk(node)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, id(node) in top))
            found += [(f"{node.module}.{a.name}", id(node) in top) for a in node.names]
    return tuple(found)


def layer_of(module: str) -> int | None:
    for index, stages in enumerate(LAYERS):
        if any(module == s or module.startswith(s + ".") for s in stages):
            return index
    return None


def stage_of(module: str) -> str | None:
    return next((s for stages in LAYERS for s in stages if module == s or module.startswith(s + ".")), None)


def test_every_module_belongs_to_a_declared_stage() -> None:
    unplaced = [m for m in modules() if m != "pipeline" and layer_of(m) is None]
    assert not unplaced, f"modules in no stage of LAYERS: {unplaced}"


def test_no_stage_imports_a_stage_above_it_or_a_sibling() -> None:
    wrong = []
    for name, path in modules().items():
        here = layer_of(name)
        for target, _ in imports(path):
            there = layer_of(target)
            if here is None or there is None or stage_of(target) == stage_of(name):
                continue
            if there < here or (there == here and stage_of(target) != stage_of(name)):
                wrong.append(f"{name} imports {target}")
    assert not wrong, "imports running back up the stages:\n" + "\n".join(sorted(set(wrong)))


def test_the_serving_side_never_imports_torch_at_module_level() -> None:
    table = modules()

    def closure(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            name = todo.pop()
            if name in seen or name not in table:
                continue
            seen.add(name)
            todo += [t for t, top in imports(table[name]) if top and t in table]
            todo += [p for p in _parents(name) if p in table]
        return seen

    offenders = []
    for name in table:
        if not name.startswith(SERVING_SIDE) or name in TORCH_FREE_EXCEPT:
            continue
        for dep in closure(name):
            if any(top and (t == "torch" or t.startswith("torch.")) for t, top in imports(table[dep])):
                offenders.append(f"{name} -> {dep}")
    assert not offenders, "torch imported at module level on the serving side:\n" + "\n".join(sorted(offenders))


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def test_the_rules_catch_a_planted_violation(tmp_path: Path, monkeypatch) -> None:
    """The checks above can fail: an upward import and a torch import on the serving side are both found."""
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\nfrom pipeline.serving import oip\n\ndef f():\n    from pipeline.cli import main\n")
    found = imports(bad)
    assert ("torch", True) in found and ("pipeline.serving", True) in found
    assert ("pipeline.cli.main", False) in found
    assert layer_of("pipeline.cli.main") < layer_of("pipeline.artifacts.manifest")
