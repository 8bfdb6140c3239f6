"""The Gradio demo: the page (demo/app.py), its predict routes (demo/api.py) and its server (demo/server.py).

Importing this package gives Gradio a temp folder of this process's own, before Gradio is imported:
Gradio serves files from its temp folder (GRADIO_TEMP_DIR), which by default is /tmp/gradio, shared by
every Gradio app on the machine, so a file anyone placed there would be served. Ours is created
private (mode 0700) inside the folder GRADIO_TEMP_DIR named, if any, else the system's temp folder,
and removed when the process exits.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

TEMP_PREFIX = "seed-pipeline-gradio-"
# Gradio keeps a record of the last N events for its monitoring page, session ids included (10,000 by
# default); the demo has no monitoring page.
os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "100")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

_temp_dir: Path | None = None


def _remove_stale(parent: Path) -> None:
    """Temp folders of ours whose process is gone (killed before it could remove its own)."""
    for path in parent.glob(f"{TEMP_PREFIX}*-*"):
        pid = path.name[len(TEMP_PREFIX) :].split("-", 1)[0]
        if not pid.isdigit() or path.stat().st_uid != os.getuid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:  # alive, someone else's
            continue


def private_temp_dir() -> Path:  # run once, below, when the package is imported
    """This process's own Gradio temp folder (GRADIO_TEMP_DIR), created once, mode 0700, removed at exit."""
    global _temp_dir
    if _temp_dir is None:
        parent = Path(os.environ.get("GRADIO_TEMP_DIR") or tempfile.gettempdir())
        parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(parent)
        _temp_dir = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", dir=parent))
        os.environ["GRADIO_TEMP_DIR"] = str(_temp_dir)
        atexit.register(shutil.rmtree, _temp_dir, True)
    return _temp_dir


private_temp_dir()
