"""Robustness to interruptions: SIGKILL `train` and `export` at random points, and run them on a full disk.

After every kill, every file the manifest lists exists, matches its sha256 and loads on every format,
and a re-run completes. A full disk gives one `error:` line naming the file, and the artifacts that
were there before are untouched.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import formats
from pipeline.artifacts.fileio import TMP_PREFIX, sha256_file
from pipeline.artifacts.manifest import MANIFEST, PARITY, Manifest
from pipeline.runtime.predictor import load_predictor
from tests.conftest import assert_matches_eager

from .conftest import ROOT, run_cli

pytestmark = pytest.mark.robustness

MODEL = "linear_3x"  # the quickest model to train and export: kills land all through a run
SEED = 6


_LOADED: set[tuple[str, str, str]] = set()  # (model, format, sha256) already loaded and run once


@pytest.fixture(scope="module")
def reference(manifest) -> dict[str, dict[str, np.ndarray]]:
    """Each model's eager outputs on its first catalog example, from the untouched session artifacts."""
    return {name: load_predictor(manifest, name, "eager")(e.examples[0]) for name, e in manifest.models.items()}


def assert_manifest_invariant(root: Path, reference: dict[str, dict[str, np.ndarray]]) -> Manifest:
    """Every file the manifest lists exists, matches its sha256 and loads; every format predicts.

    Killed runs retrain and re-export with the session's seed, so whichever version of a file is
    listed, old or new, every format gives the reference outputs. A file whose bytes (sha256) were
    already loaded and run by an earlier check is not loaded again.
    """
    manifest = Manifest.load(root)
    for name, entry in manifest.models.items():
        for artifact in entry.artifacts.values():
            manifest.verified_path(artifact)
        for key in ("history", "plot"):
            if entry.raw.get(key):
                assert manifest.path_of(entry.raw[key]).is_file(), (name, key)
        for fmt in entry.served_formats():
            key = (name, fmt, entry.artifact(formats.get(fmt).artifact_kind).sha256)
            if key not in _LOADED:
                out = load_predictor(manifest, name, fmt)(entry.examples[0])
                assert list(out) == list(reference[name]), (name, fmt)
                assert_matches_eager(fmt, out, reference[name], f"{name}/{fmt}")
                _LOADED.add(key)
    return manifest


def start(*args: str, root: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args, "--device", "cpu", "--artifacts", str(root)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def kill_when(proc: subprocess.Popen, trigger: Callable[[], bool], delay: float, timeout: float = 120) -> bool:
    """SIGKILL `proc` `delay` seconds after `trigger()` first holds; False if it had finished by then."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and not trigger():
        assert time.monotonic() < deadline, "the trigger never fired"
        time.sleep(0.002)
    time.sleep(delay)
    alive = proc.poll() is None
    if alive:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return alive and proc.returncode == -signal.SIGKILL


def mtime(path: Path) -> int:
    return path.stat().st_mtime_ns if path.exists() else 0


def changed(path: Path) -> Callable[[], bool]:
    before = mtime(path)
    return lambda: mtime(path) != before


def new_revision(root: Path, model: str) -> Callable[[], bool]:
    before = set(root.glob(f"{model}/export-*"))
    return lambda: bool(set(root.glob(f"{model}/export-*")) - before)


def temp_files(root: Path) -> list[Path]:
    return sorted(root.rglob(TMP_PREFIX + "*"))


def test_export_killed_at_random_points_leaves_a_servable_manifest(artifacts_copy, reference):
    rng = random.Random(SEED)
    root = artifacts_copy
    first = (root / MANIFEST).read_bytes()
    # Where each kill lands: while the revision folder fills (a random moment of the exports), between
    # the parity report and the manifest (the commit point), and just after the commit (garbage collection).
    plan = [
        ("revision folder being written", lambda: new_revision(root, MODEL), rng.uniform(0.0, 1.5)),
        ("parity.json written", lambda: changed(root / PARITY), rng.uniform(0.0, 0.01)),
        ("manifest.json replaced", lambda: changed(root / MANIFEST), 0.0),
    ]
    killed = []
    for where, make_trigger, delay in plan:
        trigger = make_trigger()  # snapshot before the process starts
        proc = start("export", "--models", MODEL, root=root)
        killed.append((where, round(delay, 3), kill_when(proc, trigger, delay)))
        assert_manifest_invariant(root, reference)
    assert sum(k for *_, k in killed) >= len(plan) - 1, killed  # all but at most one died mid-run
    print(f"kills: {killed}; manifest replaced by a killed run: {(root / MANIFEST).read_bytes() != first}")

    rerun = run_cli("export", "--models", MODEL, "--device", "cpu", "--artifacts", str(root))
    assert rerun.returncode == 0, rerun.stderr
    manifest = assert_manifest_invariant(root, reference)
    assert temp_files(root) == []  # killed writers' temp files are collected
    listed = {Path(a.path).parts[:2] for m in manifest.models.values() for a in m.artifacts.values()}
    revisions = {p.relative_to(root).parts for p in root.glob("*/export-*")}
    assert revisions == listed  # and so are revision folders no manifest lists


def test_train_killed_at_random_points_leaves_whole_files_and_reruns(artifacts_copy, reference):
    rng = random.Random(SEED + 1)
    root = artifacts_copy
    model_dir = root / MODEL
    manifest_before = (root / MANIFEST).read_bytes()
    plan = [
        ("from start", lambda: lambda: True, rng.uniform(0.5, 2.0)),
        ("from start", lambda: lambda: True, rng.uniform(2.0, 5.0)),
        ("state_dict written, history not yet", lambda: changed(model_dir / "state_dict.pt"), 0.0),
    ]
    killed = []
    for where, make_trigger, delay in plan:
        trigger = make_trigger()
        proc = start("train", "--models", MODEL, "--quiet", root=root)
        killed.append((where, round(delay, 3), kill_when(proc, trigger, delay)))
        # Whole files only: each one is the old or the new version, never half of one.
        torch.load(model_dir / "state_dict.pt", weights_only=True)
        json.loads((model_dir / "history.json").read_text())
        assert (root / MANIFEST).read_bytes() == manifest_before
        assert_manifest_invariant(root, reference)
    assert sum(k for *_, k in killed) >= len(plan) - 1, killed
    print(f"kills: {killed}")

    rerun = run_cli("train", "--models", MODEL, "--device", "cpu", "--quiet", "--artifacts", str(root))
    assert rerun.returncode == 0, rerun.stderr
    history = json.loads((model_dir / "history.json").read_text())
    assert history["state_dict_sha256"] == sha256_file(model_dir / "state_dict.pt")


# ---- a full disk ------------------------------------------------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 32 MB tmpfs, mounted for the test; skipped where this machine will not mount one."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the full-disk test did not run")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({(result.stderr or result.stdout).strip()}); the full-disk test did not run"
        )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def fill(directory: Path) -> None:
    """Write a filler file until the file system has no byte left."""
    with open(directory / "filler", "wb", buffering=0) as fh:
        for block in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    fh.write(b"\0" * block)
            except OSError:
                pass


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("stage", ["export", "train"])
def test_full_disk_gives_one_line_and_keeps_previous_artifacts(artifacts, small_tmpfs, stage, reference):
    import shutil

    root = small_tmpfs / "artifacts"
    shutil.copytree(artifacts, root)
    before = snapshot(root)
    fill(small_tmpfs)
    quiet = ["--quiet"] if stage == "train" else []
    args = [stage, "--models", MODEL, "--device", "cpu", "--artifacts", str(root), *quiet]
    result = run_cli(*args)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "No space left on device" in errors[0] and str(root) in errors[0], errors[0]
    after = snapshot(root)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing that was there changed
    assert not [k for k in after if k not in before and not k.endswith(".lock")]  # no half files
    assert_manifest_invariant(root, reference)
