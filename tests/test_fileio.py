"""Atomic writes, hashing, temp-file collection and the writers' lock, without root and without models.

A writer that fails at any point (its own exception, a full disk, a failed fsync or rename) must leave
the previous file byte-identical and no temporary file behind.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from pipeline.artifacts import fileio
from pipeline.artifacts.fileio import (
    TMP_PREFIX,
    Busy,
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    exclusive,
    remove_stale_temps,
    sha256_file,
)
from pipeline.errors import UserError

OLD = b"the previous version, complete\n" * 100
NEW = b"the new version\n" * 1000


@pytest.fixture
def target(tmp_path) -> Path:
    path = tmp_path / "state_dict.pt"
    path.write_bytes(OLD)
    return path


def leftovers(directory: Path) -> list[str]:
    """Every file in `directory` but the target: what a failed write must not leave."""
    return sorted(p.name for p in directory.iterdir() if p.name != "state_dict.pt")


def half_then(exc: BaseException):
    """A writer that writes half of NEW to its temp file, flushes it to disk, then fails with `exc`."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            fh.write(NEW[: len(NEW) // 2])
            fh.flush()
            os.fsync(fh.fileno())
            raise exc

    return write


def test_a_write_replaces_the_file_whole_and_leaves_no_temp(target):
    seen = []

    def write(tmp: Path) -> None:
        seen.append(tmp)
        assert tmp.parent == target.parent and tmp.name.startswith(TMP_PREFIX)
        assert tmp.name.endswith("-state_dict.pt")  # the extension is kept: torch.export.save checks it
        assert target.read_bytes() == OLD  # the old file stays in place while the new one is written
        tmp.write_bytes(NEW)

    assert atomic_write(target, write) == target
    assert target.read_bytes() == NEW
    assert leftovers(target.parent) == [] and not seen[0].exists()


def test_a_write_creates_missing_parent_folders(tmp_path):
    path = tmp_path / "a" / "b" / "history.json"
    atomic_write_bytes(path, b"{}")
    assert path.read_bytes() == b"{}"


@pytest.mark.parametrize(
    "exc",
    [RuntimeError("the exporter crashed"), ValueError("bad tensor"), KeyboardInterrupt(), SystemExit(3)],
    ids=["RuntimeError", "ValueError", "KeyboardInterrupt", "SystemExit"],
)
def test_a_writer_that_fails_halfway_leaves_the_old_file_and_no_temp(target, exc):
    with pytest.raises(type(exc)) as info:
        atomic_write(target, half_then(exc))
    assert info.value is exc  # the writer's own exception, unchanged
    assert target.read_bytes() == OLD
    assert leftovers(target.parent) == []


@pytest.mark.parametrize(
    "exc", [RuntimeError("failed after cleaning up"), OSError(errno.ENOSPC, "No space left on device")], ids=repr
)
def test_a_writer_that_removed_its_temp_file_before_failing_gets_its_own_error(target, exc):
    def write(tmp: Path) -> None:
        tmp.unlink()  # some writers clean up after themselves: nothing is left to remove
        raise exc

    with pytest.raises(type(exc)) as info:
        atomic_write(target, write)
    assert info.value is exc or info.value.__cause__ is exc  # not a FileNotFoundError from the clean-up
    assert target.read_bytes() == OLD and leftovers(target.parent) == []


def test_a_full_disk_names_the_file_being_written(target):
    full = OSError(errno.ENOSPC, "No space left on device")  # what write() raises: it names no file
    with pytest.raises(OSError) as info:
        atomic_write(target, half_then(full))
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert str(info.value) == f"[Errno {errno.ENOSPC}] No space left on device: {str(target)!r}"
    assert info.value.__cause__ is full
    assert target.read_bytes() == OLD and leftovers(target.parent) == []


def test_an_os_error_without_a_message_still_names_the_file(target):
    bare = OSError(errno.EIO, "")
    with pytest.raises(OSError) as info:
        atomic_write(target, half_then(bare))
    assert info.value.errno == errno.EIO and info.value.filename == str(target)
    assert info.value.strerror == str(bare)
    assert target.read_bytes() == OLD and leftovers(target.parent) == []


def test_an_os_error_that_names_its_file_is_passed_on_unchanged(target, tmp_path):
    named = FileNotFoundError(errno.ENOENT, "No such file or directory", str(tmp_path / "weights.bin"))
    with pytest.raises(FileNotFoundError) as info:
        atomic_write(target, half_then(named))
    assert info.value is named
    assert target.read_bytes() == OLD and leftovers(target.parent) == []


def test_a_failed_rename_leaves_the_old_file_and_no_temp(target, monkeypatch):
    def refuse(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied", str(src), None, str(dst))

    monkeypatch.setattr(fileio.os, "replace", refuse)
    with pytest.raises(PermissionError):
        atomic_write_bytes(target, NEW)
    assert target.read_bytes() == OLD and leftovers(target.parent) == []


def test_a_failed_fsync_of_the_new_file_leaves_the_old_file_and_no_temp(target, monkeypatch):
    replaced = []
    monkeypatch.setattr(fileio.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    monkeypatch.setattr(fileio.os, "replace", lambda *a: replaced.append(a))
    with pytest.raises(OSError) as info:
        atomic_write_bytes(target, NEW)
    assert info.value.errno == errno.EIO and info.value.filename == str(target)
    assert replaced == []  # never renamed before the data is on disk
    assert target.read_bytes() == OLD and leftovers(target.parent) == []


def test_the_data_then_the_folder_are_synced(target, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        mode = os.fstat(fd).st_mode
        synced.append(("dir" if stat.S_ISDIR(mode) else "file", os.path.exists(target) and target.read_bytes()))
        real_fsync(fd)

    monkeypatch.setattr(fileio.os, "fsync", fsync)
    atomic_write_bytes(target, NEW)
    # the temp file before the rename (target still old), the folder after it (target new): a crash
    # in between keeps one whole version, and after return the rename itself is durable
    assert synced == [("file", OLD), ("dir", NEW)]


def test_a_folder_that_refuses_fsync_does_not_fail_a_complete_write(target, monkeypatch):
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "Invalid argument")  # some file systems refuse it on folders
        real_fsync(fd)

    monkeypatch.setattr(fileio.os, "fsync", fsync)
    atomic_write_bytes(target, NEW)
    assert target.read_bytes() == NEW and leftovers(target.parent) == []


def test_a_folder_that_cannot_be_opened_does_not_fail_a_complete_write(target, monkeypatch):
    real_open = os.open

    def no_dirs(path, flags, *args, **kwargs):
        if Path(path).is_dir():
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(fileio.os, "open", no_dirs)
    atomic_write_bytes(target, NEW)
    assert target.read_bytes() == NEW


def test_the_folder_descriptor_is_closed_even_when_its_fsync_fails(target, monkeypatch):
    opened, closed = [], []
    real_open, real_close, real_fsync = os.open, os.close, os.fsync

    def track_open(path, flags, *args, **kwargs):
        fd = real_open(path, flags, *args, **kwargs)
        opened.append(fd)
        return fd

    def track_close(fd):
        closed.append(fd)
        real_close(fd)

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "Invalid argument")
        real_fsync(fd)

    monkeypatch.setattr(fileio.os, "open", track_open)
    monkeypatch.setattr(fileio.os, "close", track_close)
    monkeypatch.setattr(fileio.os, "fsync", fsync)
    atomic_write_bytes(target, NEW)
    assert opened and set(opened) <= set(closed)


def test_json_is_indented_ends_with_a_newline_and_refuses_nan_before_touching_the_file(target):
    path = target.with_name("history.json")
    atomic_write_json(path, {"loss": [1.5, 0.25], "model": "linear_3x"})
    assert path.read_text(encoding="utf-8") == '{\n  "loss": [\n    1.5,\n    0.25\n  ],\n  "model": "linear_3x"\n}\n'
    assert json.loads(path.read_text(encoding="utf-8")) == {"loss": [1.5, 0.25], "model": "linear_3x"}
    before = path.read_bytes()
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        atomic_write_json(path, {"loss": [float("nan")]})  # JSON has no NaN: a reader would choke on it
    assert path.read_bytes() == before and leftovers(target.parent) == ["history.json"]


def test_json_keeps_text_that_is_not_ascii(tmp_path):
    path = atomic_write_json(tmp_path / "m.json", {"seed": "004 §10.9"})
    assert json.loads(path.read_bytes().decode("utf-8")) == {"seed": "004 §10.9"}


def test_sha256_of_a_file_larger_than_one_read(tmp_path):
    data = os.urandom(3 * (1 << 20) + 17)  # three full 1 MiB blocks and a partial one
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()


def test_hashing_a_large_artifact_reads_it_in_bounded_memory(tmp_path):
    import tracemalloc

    path = tmp_path / "two_layer_net.onnx"
    path.write_bytes(b"\1" * (8 << 20))
    tracemalloc.start()
    try:
        digest = sha256_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert digest == hashlib.sha256(b"\1" * (8 << 20)).hexdigest()
    assert peak < 3 * (1 << 20), peak  # a 1 MiB block at a time (two alive at most), never all 8 MiB


def test_stale_temps_are_removed_at_every_depth_and_nothing_else(tmp_path):
    keep = [tmp_path / "manifest.json", tmp_path / "m" / "export-1" / "model.onnx", tmp_path / "m" / "tmp-notes"]
    stale = [tmp_path / f"{TMP_PREFIX}abc-manifest.json", tmp_path / "m" / "export-1" / f"{TMP_PREFIX}x-model.onnx"]
    for path in keep + stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    folder = tmp_path / "m" / f"{TMP_PREFIX}folder"  # a folder with the prefix is not a killed writer's file
    folder.mkdir()
    remove_stale_temps(tmp_path)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in stale) and folder.is_dir()


def test_stale_temps_in_a_missing_folder_is_nothing_to_do(tmp_path):
    remove_stale_temps(tmp_path / "never-created")
    assert not (tmp_path / "never-created").exists()


def test_one_writer_at_a_time(tmp_path):
    root = tmp_path / "artifacts"
    with exclusive(root):
        assert root.is_dir()
        with pytest.raises(Busy) as info:
            with exclusive(root):
                pass
        assert str(info.value) == f"another train or export is writing to {root}; wait for it to finish"
        assert isinstance(info.value, UserError)
        with exclusive(tmp_path / "elsewhere"):  # another directory is another lock
            pass
    with exclusive(root):  # released on exit
        pass


def test_the_lock_is_released_when_the_writer_fails(tmp_path):
    with pytest.raises(RuntimeError):
        with exclusive(tmp_path):
            raise RuntimeError("export failed")
    with exclusive(tmp_path):
        pass


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_a_written_file_follows_the_umask_as_open_would(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "new" / "model.onnx", NEW)
        atomic_write_json(tmp_path / "manifest.json", {"a": 1})
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "new" / "model.onnx").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "manifest.json").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o777 & ~umask
