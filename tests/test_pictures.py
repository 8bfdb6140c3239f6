"""Pictures a client sends (demo/pictures.py), without a server: what may be opened, the budget read from a
picture's header, and the uploads kept. Over HTTP against a running demo: tests/test_robustness_app.py."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from demo.pictures import PictureBudget, PictureRefused, Uploads, check_header, checked_editor_value, read_editor_value
from demo.server import PICTURES

BUDGET = PictureBudget(side=280, layers=1, file_bytes=512 * 1024, uploads=4, upload_bytes=64 * 1024, ttl_s=60.0)


def picture(side: int = 32, mode: str = "L", fmt: str = "PNG", seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode) if side <= 1024 else Image.new(mode, (side, side))
    out = io.BytesIO()
    image.save(out, format=fmt, **({"compression": "group4"} if fmt == "TIFF" else {}))
    return out.getvalue()


@pytest.fixture
def uploads(tmp_path) -> Uploads:
    return Uploads(BUDGET, tmp_path)


def uploaded(uploads: Uploads, data: bytes, name: str = "composite.png") -> str:
    """A file written as Gradio's upload route writes one (a folder per sha256), then admitted."""
    folder = uploads.folder / os.urandom(32).hex()
    folder.mkdir()
    (folder / name).write_bytes(data)
    uploads.admit([str(folder / name)])
    return str(folder / name)


def editor(path: str, layers: int = 0) -> dict:
    file = {"path": path, "meta": {"_type": "gradio.FileData"}}
    return {"background": file, "layers": [file] * layers, "composite": file}


def test_the_demo_budget_is_the_canvas_one_layer_and_the_declared_caps():
    assert (PICTURES.side, PICTURES.layers, PICTURES.file_bytes) == (280, 1, 512 * 1024)
    assert (PICTURES.uploads, PICTURES.upload_bytes, PICTURES.ttl_s) == (256, 32 * 1024 * 1024, 120.0)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (picture(6000, "1"), "at most 280x280"),  # 36 M pixels in about 11 KB: past PIL's lowered limit too
        (picture(6000, "1", "GIF"), "at most 280x280"),
        (picture(1000, "1"), "1000x1000 pixels; at most 280x280"),
        (picture(281), "281x281 pixels"),
        (picture(64, "1", "TIFF"), "expected a picture (PNG, JPEG, WEBP, GIF, BMP); got a file that is not one"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"/>', "got a file that is not one"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "got a file that is not one"),
        (b"\x00" * (512 * 1024 + 1), "524,289 bytes; at most 524,288"),
    ],
)
def test_a_picture_is_refused_by_its_header_in_one_line(data, words):
    with pytest.raises(PictureRefused) as info:
        check_header(data, BUDGET)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_a_picture_within_the_budget_is_read_once_then_removed(uploads):
    path = uploaded(uploads, picture(64, "RGB"))
    value = checked_editor_value(editor(path, layers=1), uploads)
    assert value["composite"]["path"] == path and len(value["layers"]) == 1
    from gradio.components.image_editor import EditorData

    read = read_editor_value(EditorData.model_validate(value), uploads)
    assert read["refused"] is None and read["composite"].shape == (64, 64, 4)
    assert not Path(path).exists() and not Path(path).parent.exists()
    with pytest.raises(PictureRefused, match="upload it again"):
        checked_editor_value(editor(path), uploads)


@pytest.mark.parametrize("kind", ["outside", "symlink", "fifo", "dotdot", "nul", "long", "url"])
def test_only_a_recorded_regular_file_inside_the_folder_is_opened(uploads, tmp_path_factory, kind):
    outside = tmp_path_factory.mktemp("outside") / "secret.png"
    outside.write_bytes(picture())
    inside = uploads.folder / "planted"
    inside.mkdir()
    if kind == "symlink":  # a symlink placed inside the folder, even one recorded as an upload
        (inside / "x.png").symlink_to(outside)
        path = str(inside / "x.png")
    elif kind == "fifo":  # a FIFO would block a reader for ever
        os.mkfifo(inside / "x.png")
        path = str(inside / "x.png")
    else:
        path = {
            "outside": str(outside),
            "dotdot": str(uploads.folder / ".." / outside.parent.name / "secret.png"),
            "nul": str(inside / "x.png\x00"),
            "long": "/" + "a" * 100_000,
            "url": "file://" + str(outside),
        }[kind]
    with uploads.lock:
        uploads.kept[path] = (1e18, 0)  # even recorded (as if the upload route had answered it)
    with pytest.raises(PictureRefused) as info:
        checked_editor_value(editor(path), uploads)
    assert "\n" not in str(info.value)


def test_inline_data_is_checked_by_length_before_decoding_and_stored_as_an_upload(uploads):
    url = "data:image/png;base64," + base64.b64encode(picture(64)).decode()
    value = checked_editor_value({"background": None, "layers": [], "composite": {"url": url}}, uploads)
    stored = Path(value["composite"]["path"])
    assert stored.is_file() and uploads.folder in stored.parents and stored.read_bytes() == picture(64)
    with pytest.raises(PictureRefused, match="holds over 524,288 bytes"):
        checked_editor_value(editor("data:image/png;base64," + "A" * 2_000_000), uploads)
    with pytest.raises(PictureRefused, match="not valid base64"):
        checked_editor_value(editor("data:image/png;base64,@@@@"), uploads)
    with pytest.raises(PictureRefused, match="data:image/...;base64"):
        checked_editor_value(editor("data:text/html,<script>"), uploads)


def test_more_layers_than_the_page_sends_are_refused_by_their_count(uploads):
    path = uploaded(uploads, picture())
    with pytest.raises(PictureRefused, match="at most 1 layer"):
        checked_editor_value(editor(path, layers=2000), uploads)
    with pytest.raises(PictureRefused, match="blob id"):
        checked_editor_value({**editor(path), "id": "x"}, uploads)


def test_uploads_are_capped_by_count_and_bytes_and_expire(tmp_path):
    uploads = Uploads(BUDGET, tmp_path)
    paths = [uploaded(uploads, picture(64, seed=i)) for i in range(10)]  # ~4 KB each
    files, size = uploads.disk_usage()
    assert files == BUDGET.uploads and [Path(p).exists() for p in paths] == [False] * 6 + [True] * 4
    big = [uploaded(uploads, picture(200, seed=20 + i)) for i in range(3)]  # ~40 KB each: past 64 KB together
    files, size = uploads.disk_usage()
    assert size <= BUDGET.upload_bytes and Path(big[-1]).exists() and not Path(big[0]).exists()
    expiring = Uploads(PictureBudget(280, 1, 512 * 1024, 4, 64 * 1024, ttl_s=-1.0), tmp_path)
    kept = uploaded(expiring, picture(seed=99))
    expiring.sweep()
    assert not Path(kept).exists() and expiring.disk_usage() == (0, 0)


def test_an_upload_that_is_not_a_picture_is_removed(uploads):
    folder = uploads.folder / ("f" * 64)
    folder.mkdir()
    (folder / "x.html").write_bytes(b"<html><script>alert(1)</script></html>")
    with pytest.raises(PictureRefused, match="expected a picture"):
        uploads.admit([str(folder / "x.html")])
    assert not (folder / "x.html").exists() and uploads.disk_usage() == (0, 0)
