"""Shared fixtures: one trained-and-exported artifacts directory per test session.

Tests that damage or rewrite artifacts must work on `artifacts_copy`, never on `artifacts`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
EXAMPLE_CATALOGS = ["--catalog", str(EXAMPLES / "digits.py"), "--catalog", str(EXAMPLES / "two_inputs.py")]
EXAMPLE_MODELS = "digits_cnn,mood_bag"
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def pytest_collection_modifyitems(config, items):
    """Under mutation testing (mutmut sets MUTANT_UNDER_TEST), run only the tests that train nothing.

    Every fixture that trains (artifacts, artifacts_copy, the session manifest) needs `trained`, and a
    test's fixturenames hold all it needs, so this also keeps a module's own fixture named `manifest`.
    """
    if "MUTANT_UNDER_TEST" not in os.environ:
        return
    slow = [item for item in items if "trained" in getattr(item, "fixturenames", ())]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if item not in slow]


def assert_matches_eager(fmt: str, got: dict, want: dict, what: str = "") -> None:
    """`got` (named outputs of format `fmt`) is within that format's declared parity rule of eager's `want`."""
    import numpy as np

    from pipeline import formats
    from pipeline.runtime.comparison import compare_outputs

    spec = formats.get(fmt)
    as_arrays = lambda outs: {k: np.asarray(v, dtype=np.float64) for k, v in outs.items()}  # noqa: E731
    results = compare_outputs([as_arrays(want)], [as_arrays(got)], spec.tolerance)
    bad = {name: c.reason for name, c in results.items() if not c.passed}
    assert not bad, f"{what or fmt}: {bad}"


def served(manifest, model: str) -> list[str]:
    """The formats `model` has artifacts for (a derived format may not apply to it)."""
    return manifest.model(model).served_formats()


def run_cli(*args: str, cwd: Path = ROOT, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m pipeline ARGS` in a subprocess, output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Path:
    """A directory where every catalog model has been trained on the CPU (seed 0), not exported."""
    from pipeline.catalog import CATALOG
    from pipeline.train import train_model

    root = tmp_path_factory.mktemp("trained")
    for spec in CATALOG.values():
        train_model(spec, root, "cpu", 0, progress=False)
    return root


@pytest.fixture(scope="session")
def artifacts(trained, tmp_path_factory) -> Path:
    """A read-only (by convention) directory with every model trained, exported and verified."""
    from pipeline.catalog import CATALOG
    from pipeline.export import run_export

    root = tmp_path_factory.mktemp("artifacts") / "artifacts"
    shutil.copytree(trained, root)
    report, errors = run_export(list(CATALOG.values()), root, log=lambda _: None)
    assert not errors and report.passed, (errors, report.table())
    return root


@pytest.fixture
def artifacts_copy(artifacts, tmp_path) -> Path:
    """A private copy of `artifacts` that a test may damage."""
    dest = tmp_path / "artifacts"
    shutil.copytree(artifacts, dest)
    return dest


@pytest.fixture(scope="session")
def manifest(artifacts):
    from pipeline.artifacts.manifest import Manifest

    return Manifest.load(artifacts)


@pytest.fixture(scope="session")
def eager(manifest):
    """model -> its eager predictor (the reference every format is compared with), each loaded once."""
    from pipeline.runtime.predictor import PredictorCache

    cache = PredictorCache(manifest)
    return lambda model: cache.get(model, "eager")


@pytest.fixture(scope="module")
def demo(artifacts):
    """The base URL of a demo process serving the session's artifacts, one per test module."""
    from tests.demo_server import running_demo

    with running_demo(artifacts) as url:
        yield url


def rerecord(root: Path, rel: str) -> None:
    """Write the current sha256 and size of the file at `rel` into root's manifest, as someone who controls
    the manifest would: the loaders must still refuse what the file holds."""
    import hashlib
    import json

    raw = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    data = (root / rel).read_bytes()
    hits = 0
    for entry in raw["models"].values():
        for art in entry["artifacts"]:
            if art["path"] == rel:
                art["sha256"], art["bytes"] = hashlib.sha256(data).hexdigest(), len(data)
                hits += 1
    assert hits == 1, rel
    (root / "manifest.json").write_text(json.dumps(raw, indent=2), encoding="utf-8")


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Path:
    """A directory where the worked examples (examples/*.py) are trained and exported on the CPU by the CLI."""
    root = tmp_path_factory.mktemp("examples") / "artifacts"
    for command in ("train", "export"):
        extra = ["--quiet"] if command == "train" else []
        args = [*EXAMPLE_CATALOGS, "--models", EXAMPLE_MODELS, "--artifacts", str(root), "--device", "cpu", *extra]
        result = run_cli(command, *args)
        assert result.returncode == 0, result.stdout + result.stderr
    return root
