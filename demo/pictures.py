"""Pictures a client sends to the demo: where they may come from, how large they may be, and their decoding.

The image editor uploads what its canvas shows (background, drawing layer, composite) through Gradio's upload
route, then names those files in its event. Gradio would open any path a client names (and copy it into the
folder it serves), so the demo checks every picture before Gradio sees the event (`checked_editor_value`, called
by demo/server.py): a picture is either a file uploaded to this process's private temp folder and recorded by
`Uploads`, or inline data (a base64 `data:image/...` URL), and in both cases a PNG, JPEG, WebP, GIF or BMP whose
header says it fits the budget. Nothing is decoded before that; `read_editor_value` decodes only the composite (in
Gradio's worker thread, not on the event loop) and removes the uploads its event named once read.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import stat
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from pipeline.runtime.inputs import InputError

FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")  # what PIL may decode for a client; TIFF, SVG and the rest are refused
EDITOR_KEYS = frozenset({"background", "layers", "composite", "id"})
FILE_KEYS = frozenset({"path", "url", "size", "orig_name", "mime_type", "is_stream", "meta"})
MAX_PATH_CHARS = 1024  # far longer than any path the upload route returns
DATA_URL = "data:image/"


@dataclass(frozen=True)
class PictureBudget:
    """What a client may send as pictures (the values are declared in demo/server.py with the other limits)."""

    side: int  # each picture at most side x side pixels: the page's canvas
    layers: int  # the editor's drawing layers in one event
    file_bytes: int  # one picture file, uploaded or inline
    uploads: int  # uploaded files kept at once; the oldest are removed past it
    upload_bytes: int  # their bytes together
    ttl_s: float  # seconds an upload is kept when no event reads it


class PictureRefused(InputError):
    """A picture the demo will not open or decode; the message is one line."""


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:36] + "..."


def check_header(data: bytes, budget: PictureBudget) -> tuple[str, tuple[int, int]]:
    """(format, (width, height)) from a picture's header, without decoding its pixels; PictureRefused when it is
    not one of FORMATS or is larger than the budget."""
    from PIL import Image, UnidentifiedImageError

    if len(data) > budget.file_bytes:
        raise PictureRefused(f"a picture file is {len(data):,} bytes; at most {budget.file_bytes:,} are accepted")
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as img:  # lazy: reads the header only
            fmt, size = img.format, img.size
    except Image.DecompressionBombError:  # PIL's own limit (demo/server.py lowers it): far past the budget
        raise PictureRefused(
            f"a picture declares over {Image.MAX_IMAGE_PIXELS * 2:,} pixels; at most {budget.side}x{budget.side} "
            "(the drawing canvas) accepted"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        raise PictureRefused(f"expected a picture ({', '.join(FORMATS)}); got a file that is not one") from None
    width, height = size
    if not (0 < width <= budget.side and 0 < height <= budget.side):
        raise PictureRefused(
            f"a picture is {width}x{height} pixels; at most {budget.side}x{budget.side} (the drawing canvas) accepted"
        )
    return fmt, size


def decode(data: bytes, budget: PictureBudget) -> np.ndarray:
    """The pixels of a picture checked by `check_header`, as an RGBA array."""
    from PIL import Image

    check_header(data, budget)
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as img:
            return np.asarray(img.convert("RGBA"))
    except Exception as exc:  # a damaged file can fail in PIL in many ways; each is the client's picture
        raise PictureRefused(f"the picture could not be decoded ({type(exc).__name__})") from None


class Uploads:
    """The files clients uploaded through Gradio's upload route, by the path it answered: each removed once an
    event reads it, after `budget.ttl_s`, or when more than `budget.uploads` files or `budget.upload_bytes`
    bytes are kept (the oldest first). Only these files, inside `folder`, are opened as pictures."""

    def __init__(self, budget: PictureBudget, folder: Path | None = None) -> None:
        self.budget, self._folder = budget, folder
        self.kept: OrderedDict[str, tuple[float, int]] = OrderedDict()  # path -> (expiry, bytes), oldest first
        self.lock = threading.Lock()  # the event loop admits, Gradio's worker threads discard

    @property
    def folder(self) -> Path:
        """This process's private temp folder, where Gradio writes uploads."""
        if self._folder is None:
            from demo import private_temp_dir

            self._folder = private_temp_dir()
        return self._folder

    def _inside(self, path: str) -> Path:
        """`path` as the real file it names, inside the folder, no symlink anywhere; else PictureRefused."""
        if not isinstance(path, str) or not path or len(path) > MAX_PATH_CHARS or "\x00" in path:
            raise PictureRefused(f"a picture path must be one this demo's upload route returned; got {_shown(path)}")
        given, folder = Path(path), self.folder
        real, real_folder = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
        for base in (folder, real_folder):  # the folder as Gradio names it; below it, no symlink and no '..'
            if given.is_absolute() and base in given.parents and real == real_folder / given.relative_to(base):
                return real
        raise PictureRefused(f"a picture path must be one this demo's upload route returned; got {_shown(path)}")
        return real

    def read(self, path: str) -> bytes:
        """The bytes of an upload this demo recorded: a regular file in the folder, no larger than the budget."""
        with self.lock:
            known = path in self.kept if isinstance(path, str) else False
        if not known:
            raise PictureRefused(
                f"{_shown(path)} is not a picture uploaded to this demo (or it was already read, or expired); "
                "upload it again or send it inline as a data:image/... URL"
            )
        real = self._inside(path)
        try:  # O_NOFOLLOW and O_NONBLOCK: neither a symlink nor a FIFO or device can stall or redirect the read
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            raise PictureRefused(f"{_shown(path)} is no longer held; upload the picture again") from None
        with os.fdopen(fd, "rb") as file:
            info = os.fstat(file.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise PictureRefused(f"{_shown(path)} is not a regular file")
            if info.st_size > self.budget.file_bytes:
                raise PictureRefused(f"a picture file is {info.st_size:,} bytes; at most {self.budget.file_bytes:,}")
            return file.read(self.budget.file_bytes + 1)

    def admit(self, paths: Any) -> None:
        """Record what Gradio's upload route answered, once each file is a picture within the budget; otherwise
        remove them all and raise PictureRefused."""
        if not isinstance(paths, list) or not 1 <= len(paths) <= self.budget.layers + 2:
            self._remove_all(paths if isinstance(paths, list) else [])
            raise PictureRefused(f"upload 1 to {self.budget.layers + 2} pictures at a time")
        now = time.monotonic()
        with self.lock:
            for path in paths:
                if isinstance(path, str):
                    self.kept[path] = (now + self.budget.ttl_s, 0)  # recorded first, so a refusal removes them all
                    self.kept.move_to_end(path)
        try:
            for path in paths:
                data = self.read(path)
                check_header(data, self.budget)
                with self.lock:
                    self.kept[path] = (now + self.budget.ttl_s, len(data))
        except PictureRefused:
            self._remove_all(paths)
            raise
        self.sweep()

    def store(self, data: bytes) -> str:
        """Inline picture bytes (checked) written into the folder as an upload; its path."""
        fmt, _ = check_header(data, self.budget)
        directory = self.folder / hashlib.sha256(data).hexdigest()
        directory.mkdir(mode=0o700, exist_ok=True)
        path = directory / f"inline.{fmt.lower()}"
        staging = directory / f".inline-{os.getpid()}-{threading.get_ident()}"
        staging.write_bytes(data)
        os.replace(staging, path)  # atomic: a concurrent reader never sees half a file
        with self.lock:
            self.kept[str(path)] = (time.monotonic() + self.budget.ttl_s, len(data))
            self.kept.move_to_end(str(path))
        self.sweep()
        return str(path)

    def sweep(self, room: int = 0) -> None:
        """Remove expired uploads, then the oldest while over the budget's count (less `room`) or bytes."""
        now = time.monotonic()
        with self.lock:
            gone = [p for p, (expiry, _) in self.kept.items() if expiry < now]
            total = sum(size for p, (_, size) in self.kept.items() if p not in gone)
            for path in self.kept:
                if path in gone:
                    continue
                if len(self.kept) - len(gone) + room <= self.budget.uploads and total <= self.budget.upload_bytes:
                    break
                gone.append(path)
                total -= self.kept[path][1]
        self._remove_all(gone)

    def discard(self, path: str) -> None:
        """Remove one upload (read, expired or evicted) and its folder when that is left empty."""
        with self.lock:
            self.kept.pop(path, None)
        try:
            real = self._inside(path)
        except PictureRefused:
            return
        real.unlink(missing_ok=True)
        try:
            real.parent.rmdir()  # Gradio puts each upload in a folder named by its sha256
        except OSError:
            pass

    def _remove_all(self, paths: list[Any]) -> None:
        for path in paths:
            if isinstance(path, str):
                self.discard(path)

    def disk_usage(self) -> tuple[int, int]:
        """(files, bytes) of the uploads kept now."""
        with self.lock:
            return len(self.kept), sum(size for _, size in self.kept.values())


def _inline(url: str, uploads: Uploads) -> str:
    """A data:image/...;base64,... URL stored as an upload, its length checked before anything is decoded."""
    head, _, payload = url.partition(",")
    if not head.startswith(DATA_URL) or not head.endswith(";base64"):
        raise PictureRefused("inline pictures must be data:image/...;base64,... URLs")
    budget = uploads.budget
    if len(payload) > (budget.file_bytes + 2) // 3 * 4:
        raise PictureRefused(f"an inline picture holds over {budget.file_bytes:,} bytes; at most that is accepted")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise PictureRefused("an inline picture is not valid base64") from None
    return uploads.store(data)


def checked_file(value: Any, uploads: Uploads) -> dict[str, Any]:
    """A FileData the editor sent, as one Gradio may open: an upload this demo recorded (its header within the
    budget) or inline data stored as one; PictureRefused for anything else, before any file is opened by name."""
    if not isinstance(value, dict) or not set(value) <= FILE_KEYS:
        raise PictureRefused(f"a picture must be an uploaded file or a data:image URL; got {_shown(value)}")
    if value.get("is_stream"):
        raise PictureRefused("a picture cannot be a stream")
    url, path = value.get("url"), value.get("path")
    if isinstance(path, str) and path.startswith("data:"):
        path = _inline(path, uploads)
    elif isinstance(url, str) and url.startswith("data:"):
        path = _inline(url, uploads)
    else:
        check_header(uploads.read(path), uploads.budget)
    return {"path": path, "orig_name": Path(path).name, "meta": {"_type": "gradio.FileData"}}


def checked_editor_value(value: Any, uploads: Uploads) -> dict[str, Any] | None:
    """The image editor's value {"background", "layers", "composite"} with every picture checked by `checked_file`
    and at most the budget's layers; PictureRefused otherwise. Runs in a worker thread (it reads file headers)."""
    if value is None:
        return None
    if not isinstance(value, dict) or not set(value) <= EDITOR_KEYS:
        raise PictureRefused(f"the picture input takes {{background, layers, composite}}; got {_shown(value)}")
    if value.get("id") is not None:
        raise PictureRefused("the picture input does not take a blob id; send the pictures themselves")
    layers = value.get("layers") or []
    if not isinstance(layers, list) or len(layers) > uploads.budget.layers:
        count = len(layers) if isinstance(layers, list) else _shown(layers)
        raise PictureRefused(f"the picture input takes at most {uploads.budget.layers} layer(s); got {count}")
    out: dict[str, Any] = {"layers": [checked_file(layer, uploads) for layer in layers]}
    for key in ("background", "composite"):
        out[key] = None if value.get(key) is None else checked_file(value[key], uploads)
    return out


def read_editor_value(payload: Any, uploads: Uploads) -> dict[str, Any] | None:
    """The editor's value as the page's function takes it: {"composite": the picture as an RGBA array (or None),
    "refused": why it was not read, in one line (or None)}. Only the composite (else the background) is decoded;
    the uploads the event named are removed once read."""
    if payload is None:
        return None
    files = [f for f in (payload.background, payload.composite, *payload.layers) if f is not None]
    shown = payload.composite or payload.background
    try:
        picture = None if shown is None else decode(uploads.read(shown.path), uploads.budget)
        return {"background": None, "layers": [], "composite": picture, "refused": None}
    except PictureRefused as exc:
        return {"background": None, "layers": [], "composite": None, "refused": str(exc)}
    finally:
        for file in files:
            uploads.discard(file.path)


def picture_editor(uploads: Uploads, **kwargs: Any) -> gr.ImageEditor:
    """Gradio's image editor whose value is read by `read_editor_value` (in Gradio's worker thread). Not a subclass:
    Gradio writes a .pyi file beside the module of every Component subclass."""
    editor = gr.ImageEditor(**kwargs)
    editor.preprocess = lambda payload: read_editor_value(payload, uploads)  # type: ignore[method-assign]
    return editor
