"""Atomic file writes and hashing. No torch here: the ONNX runtime path imports this module."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import UserError

TMP_PREFIX = ".tmp-"


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call write(tmp) on a temp file beside `path`, fsync it, then rename it over `path`.

    A crash or an exception at any point leaves the old `path` (or no file) and never a half file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temp name keeps the extension: some writers (torch.export.save) check it.
    fd, tmp_name = tempfile.mkstemp(prefix=TMP_PREFIX, suffix="-" + path.name, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        # mkstemp makes the file 0600; the finished file gets the mode open() would give it (0644 under the
        # usual umask 022), so another user, a container or a Triton server running as another uid can read it.
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename is None:  # a failed write() (a full disk, say) names no file: name the one we write
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _umask() -> int:
    """The process's umask: from /proc on Linux (no window where it changes), else by setting it and back."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write `data` to `path` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_json(path: Path, obj: Any) -> Path:
    """Write `obj` as indented JSON to `path` atomically."""
    text = json.dumps(obj, indent=2, allow_nan=False) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def remove_stale_temps(directory: Path) -> None:
    """Delete temp files a killed writer left behind in `directory` and below."""
    if directory.is_dir():
        for tmp in directory.rglob(TMP_PREFIX + "*"):
            if tmp.is_file():
                tmp.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class Busy(UserError, RuntimeError):
    """Another train or export holds the artifacts directory."""


@contextlib.contextmanager
def exclusive(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on `directory` (one writer at a time); fail at once if it is taken."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, as before
        yield
        return
    with open(directory / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(f"another train or export is writing to {directory}; wait for it to finish") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
