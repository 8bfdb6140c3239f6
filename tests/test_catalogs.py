"""Catalog files: each kind of bad one is refused in one line naming the file, exit 2, nothing written."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.conftest import run_cli

HEADER = "from torch import nn\nfrom pipeline.spec import model, tensor\nimport torch\n\n"
DATA = "def data(gen):\n    return torch.randn(8, 2, generator=gen), torch.randn(8, 1, generator=gen)\n\n"

BAD = {
    "name already taken": (
        HEADER + DATA + "CATALOG = [model('poly3_sin', lambda: nn.Linear(2, 1), data, [tensor('x', 2)], "
        "[tensor('y', 1)], [[1.0, 2.0]])]\n",
        "'poly3_sin' is already taken",
    ),
    "does not import": ("import definitely_not_a_module_here\n", "does not import (ModuleNotFoundError"),
    "syntax error": ("CATALOG = [\n", "does not import (SyntaxError"),
    "no CATALOG": (HEADER + "MODELS = []\n", "defines no CATALOG; expected CATALOG = [ModelSpec, ...]"),
    "CATALOG of the wrong type": ("CATALOG = {'a': 1}\n", "CATALOG is a dict; expected a list of ModelSpec"),
    "an entry of the wrong type": ("CATALOG = ['poly']\n", "CATALOG[0] is a str; expected a ModelSpec"),
    "outputs that do not match": (
        HEADER + DATA + "CATALOG = [model('mine', lambda: nn.Linear(2, 3), data, [tensor('x', 2)], "
        "[tensor('y', 1)], [[1.0, 2.0]])]\n",
        "returns 1 output(s) of shape [3] after the batch axis; expected the declared outputs y [1]",
    ),
    "inputs that do not match": (
        HEADER + DATA + "CATALOG = [model('mine', lambda: nn.Linear(5, 1), data, [tensor('x', 2)], "
        "[tensor('y', 1)], [[1.0, 2.0]])]\n",
        "does not run on its examples",
    ),
}


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_catalog_is_one_line_exit_2_and_changes_nothing(case, tmp_path):
    source, expected = BAD[case]
    bad = tmp_path / "bad_catalog.py"
    bad.write_text(source, encoding="utf-8")
    artifacts = tmp_path / "artifacts"
    (artifacts / "linear_3x").mkdir(parents=True)
    (artifacts / "linear_3x" / "history.json").write_text("{}", encoding="utf-8")
    before = snapshot(artifacts)
    result = run_cli("train", "--catalog", str(bad), "--models", "linear_3x", "--artifacts", str(artifacts), "--quiet")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith(f"error: --catalog {bad}: "), result.stderr
    assert expected in lines[0]
    assert snapshot(artifacts) == before


def test_every_command_takes_catalog(tmp_path):
    good = tmp_path / "mine.py"
    good.write_text(
        HEADER + DATA + "CATALOG = [model('mine', lambda: nn.Linear(2, 1), data, [tensor('x', 2)], "
        "[tensor('y', 1)], [[1.0, 2.0]], epochs=3)]\n",
        encoding="utf-8",
    )
    listed = run_cli("list", "--catalog", str(good))
    assert listed.returncode == 0 and "mine" in listed.stdout and "poly3_sin" in listed.stdout
    summary = run_cli("summary", "mine", "--catalog", str(good))
    assert summary.returncode == 0 and "Linear" in summary.stdout
    for command in ("train", "import", "export", "verify", "triton", "bench"):
        assert "--catalog PATH" in run_cli(command, "--help").stdout, command
