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
    "an unknown loss": (
        HEADER + DATA + "CATALOG = [model('mine', lambda: nn.Linear(2, 1), data, [tensor('x', 2)], "
        "[tensor('y', 1)], [[1.0, 2.0]], loss='crossentropy')]\n",
        "mine: loss 'crossentropy'; expected one of: sse, mse, cross_entropy",
    ),
    "an unknown optimizer": (
        HEADER + DATA + "CATALOG = [model('mine', lambda: nn.Linear(2, 1), data, [tensor('x', 2)], "
        "[tensor('y', 1)], [[1.0, 2.0]], optimizer='adamw')]\n",
        "mine: optimizer 'adamw'; expected one of: sgd, adam, rmsprop",
    ),
    "data of another shape": (
        HEADER + "def data(gen):\n    return torch.randn(8, 3, 20), torch.randn(8, 1)\n\n"
        "CATALOG = [model('mine', lambda: nn.Linear(2, 1), data, [tensor('x', 2)], [tensor('y', 1)], [[1.0, 2.0]])]\n",
        "mine: data gives x of shape [8, 3, 20] float32; expected [N, 2] float32",
    ),
    "data of another dtype": (
        HEADER + "def data(gen):\n    return torch.ones(8, 2, dtype=torch.int64), torch.randn(8, 1)\n\n"
        "CATALOG = [model('mine', lambda: nn.Linear(2, 1), data, [tensor('x', 2)], [tensor('y', 1)], [[1.0, 2.0]])]\n",
        "mine: data gives x of shape [8, 2] int64; expected [N, 2] float32",
    ),
    "data with too few inputs": (
        HEADER + DATA + "class Two(nn.Module):\n    def forward(self, a, b):\n        return a[:, :1] + b\n\n"
        "CATALOG = [model('mine', Two, data, [tensor('a', 2), tensor('b', 1)], [tensor('y', 1)], "
        "[{'a': [1.0, 2.0], 'b': [3.0]}])]\n",
        "mine: data gives 1 input tensor(s); expected 2 (a, b), in the declared order",
    ),
    "class targets that are not int64": (
        HEADER + DATA + "CATALOG = [model('mine', lambda: nn.Linear(2, 3), data, [tensor('x', 2)], "
        "[tensor('y', 3)], [[1.0, 2.0]], loss='cross_entropy')]\n",
        "mine: data gives targets of shape [8, 1] float32; expected [N] int64 (class indices for cross_entropy)",
    ),
    "test_data of another shape": (
        HEADER + DATA + "def held(gen):\n    return torch.randn(4, 5), torch.randn(4, 1)\n\n"
        "CATALOG = [model('mine', lambda: nn.Linear(2, 1), data, [tensor('x', 2)], [tensor('y', 1)], [[1.0, 2.0]], "
        "test_data=held)]\n",
        "mine: test_data gives x of shape [4, 5] float32; expected [N, 2] float32",
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


IMPORT_ONLY = (
    HEADER + "CATALOG = [model('imported_only', lambda: nn.Linear(2, 1), None, [tensor('x', 2)], [tensor('y', 1)], "
    "[[1.0, 2.0]])]\n"
)


def test_train_of_a_spec_without_data_is_one_line_exit_2_and_writes_nothing(tmp_path):
    mine = tmp_path / "mine.py"
    mine.write_text(IMPORT_ONLY, encoding="utf-8")
    artifacts = tmp_path / "artifacts"
    assert run_cli("list", "--catalog", str(mine)).returncode == 0  # valid: it can be imported
    result = run_cli("train", "--catalog", str(mine), "--models", "imported_only", "--artifacts", str(artifacts))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: --catalog {mine}: imported_only has no data, so it cannot be trained")
    assert "python -m pipeline import" in lines[0]
    assert not artifacts.exists() or not any(artifacts.rglob("*.pt"))


def test_an_import_only_spec_imports_and_exports(tmp_path):
    import torch

    mine = tmp_path / "mine.py"
    mine.write_text(IMPORT_ONLY, encoding="utf-8")
    weights = tmp_path / "w.pt"
    torch.save({"weight": torch.tensor([[1.0, 2.0]]), "bias": torch.tensor([0.5])}, weights)
    artifacts = str(tmp_path / "artifacts")
    cat = ("--catalog", str(mine))
    imported = run_cli(
        "import", *cat, "--model", "imported_only", "--state-dict", str(weights), "--artifacts", artifacts
    )
    assert imported.returncode == 0, imported.stderr
    exported = run_cli("export", *cat, "--models", "imported_only", "--artifacts", artifacts, "--device", "cpu")
    assert exported.returncode == 0, exported.stdout + exported.stderr


def test_the_names_a_catalog_may_use_are_the_ones_training_knows():
    from pipeline import spec, train

    assert tuple(train.LOSSES) == spec.LOSSES and tuple(train.OPTIMIZERS) == spec.OPTIMIZERS
