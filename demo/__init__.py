"""The Gradio demo: the page (demo/app.py), its predict routes (demo/api.py) and its server (demo/server.py).

Importing this package gives Gradio a temp folder of this process's own, before Gradio is imported:
Gradio serves files from its temp folder (GRADIO_TEMP_DIR), which by default is /tmp/gradio, shared by
every Gradio app on the machine, so a file anyone placed there would be served. Ours is created
private (mode 0700) inside the folder GRADIO_TEMP_DIR named, if any, else the system's temp folder,
and removed when the process exits. Its name holds no process id (Gradio's upload route answers with the paths
it wrote, so a client sees it): the process holds an exclusive lock on a file inside it for its whole life, and
a folder whose lock can be taken belongs to a process that is gone (killed before it removed its own).
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

TEMP_PREFIX = "seed-pipeline-gradio-"
OWNER_LOCK = ".owner.lock"  # empty; locked (flock) by the process whose folder it is, for as long as it runs
# Gradio keeps a record of the last N events for its monitoring page, session ids included (10,000 by
# default); the demo has no monitoring page.
os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "100")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

_temp_dir: Path | None = None
_owner_lock: int | None = None  # the open, locked OWNER_LOCK of this process's folder


def _owner_gone(path: Path) -> bool:
    """Whether the process that made the temp folder `path` has ended: its lock can be taken (or, for a folder
    named by an earlier version, TEMP_PREFIX + PID + '-', that process no longer exists)."""
    try:
        fd = os.open(path / OWNER_LOCK, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        pid = path.name[len(TEMP_PREFIX) :].split("-", 1)[0]
        if not pid.isdigit():
            return False  # being created right now, or not ours: left alone
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False
        return False
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:  # held: its process is alive
        return False
    finally:
        os.close(fd)


def _remove_stale(parent: Path) -> None:
    """Temp folders of ours whose process is gone (killed before it could remove its own)."""
    for path in parent.glob(f"{TEMP_PREFIX}*"):
        if path.is_symlink() or not path.is_dir() or path.stat().st_uid != os.getuid():
            continue
        if _owner_gone(path):
            shutil.rmtree(path, ignore_errors=True)


def private_temp_dir() -> Path:  # run once, below, when the package is imported
    """This process's own Gradio temp folder (GRADIO_TEMP_DIR), created once, mode 0700, removed at exit."""
    global _temp_dir, _owner_lock
    if _temp_dir is None:
        parent = Path(os.environ.get("GRADIO_TEMP_DIR") or tempfile.gettempdir())
        parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(parent)
        _temp_dir = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=parent))
        _owner_lock = os.open(_temp_dir / OWNER_LOCK, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(_owner_lock, fcntl.LOCK_EX)  # released by the system however the process ends
        os.environ["GRADIO_TEMP_DIR"] = str(_temp_dir)
        atexit.register(shutil.rmtree, _temp_dir, True)
    return _temp_dir


private_temp_dir()
