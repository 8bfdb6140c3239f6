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


# ---- each declared limit at its edge (tests/test_limits.py lists them) ----------------------------------------------


def sized(width: int, height: int) -> bytes:
    """A PNG of width x height (blank: a few KB whatever its size)."""
    out = io.BytesIO()
    Image.new("1", (width, height)).save(out, format="PNG")
    return out.getvalue()


def test_a_picture_at_the_side_limit():
    from demo.server import MAX_PICTURE_SIDE

    side = MAX_PICTURE_SIDE
    assert check_header(sized(side, side), PICTURES)[1] == (side, side)
    for width, height in ((side + 1, side), (side, side + 1)):
        with pytest.raises(PictureRefused, match=f"{width}x{height} pixels; at most {side}x{side}"):
            check_header(sized(width, height), PICTURES)


def test_layers_at_their_limit(tmp_path):
    from demo.server import MAX_PICTURE_LAYERS

    uploads = Uploads(PICTURES, tmp_path)
    path = uploaded(uploads, picture())
    assert len(checked_editor_value(editor(path, layers=MAX_PICTURE_LAYERS), uploads)["layers"]) == MAX_PICTURE_LAYERS
    with pytest.raises(PictureRefused, match=f"at most {MAX_PICTURE_LAYERS} layer.*got {MAX_PICTURE_LAYERS + 1}"):
        checked_editor_value(editor(path, layers=MAX_PICTURE_LAYERS + 1), uploads)


def test_a_picture_file_at_its_byte_limit():
    from demo.server import MAX_PICTURE_BYTES

    png = picture()
    at = png + b"\x00" * (MAX_PICTURE_BYTES - len(png))  # bytes after the PNG's end: read, ignored
    assert len(at) == MAX_PICTURE_BYTES and check_header(at, PICTURES)[0] == "PNG"
    with pytest.raises(PictureRefused, match=f"{MAX_PICTURE_BYTES + 1:,} bytes; at most {MAX_PICTURE_BYTES:,}"):
        check_header(at + b"\x00", PICTURES)
    url = "data:image/png;base64,"  # inline: its length is the limit's, before anything is decoded
    with pytest.raises(PictureRefused, match=f"over {MAX_PICTURE_BYTES:,} bytes"):
        checked_editor_value(editor(url + "A" * ((MAX_PICTURE_BYTES + 2) // 3 * 4 + 4)), Uploads(PICTURES))


def test_uploads_at_their_count_and_byte_caps(tmp_path):
    from demo.server import MAX_UPLOAD_BYTES, MAX_UPLOADS

    uploads = Uploads(PictureBudget(280, 1, 512 * 1024, MAX_UPLOADS, 10**12, 60.0), tmp_path / "count")
    uploads.folder.mkdir()
    first = uploaded(uploads, picture(8, seed=0))
    for i in range(1, MAX_UPLOADS):
        uploaded(uploads, picture(8, seed=i))
    assert uploads.disk_usage()[0] == MAX_UPLOADS and Path(first).exists()  # at the cap: all kept
    uploaded(uploads, picture(8, seed=MAX_UPLOADS))
    assert uploads.disk_usage()[0] == MAX_UPLOADS and not Path(first).exists()  # one past: the oldest goes
    one = len(picture(8, seed=0))
    by_bytes = Uploads(PictureBudget(280, 1, 512 * 1024, 10**6, MAX_UPLOAD_BYTES, 60.0), tmp_path / "bytes")
    by_bytes.folder.mkdir()
    with by_bytes.lock:  # as many bytes as the cap allows, less one file
        by_bytes.kept["/elsewhere/held"] = (1e18, MAX_UPLOAD_BYTES - one)
    kept = uploaded(by_bytes, picture(8, seed=0))
    assert by_bytes.disk_usage() == (2, MAX_UPLOAD_BYTES) and Path(kept).exists()  # exactly at the cap
    uploaded(by_bytes, picture(8, seed=1))
    files, size = by_bytes.disk_usage()
    assert size <= MAX_UPLOAD_BYTES and Path(kept).exists() and "/elsewhere/held" not in by_bytes.kept


def test_an_upload_at_its_time_to_live(tmp_path, monkeypatch):
    import demo.pictures
    from demo.server import UPLOAD_TTL_S

    now = [1000.0]
    monkeypatch.setattr(demo.pictures.time, "monotonic", lambda: now[0])
    uploads = Uploads(PICTURES, tmp_path)
    path = uploaded(uploads, picture())
    now[0] += UPLOAD_TTL_S
    uploads.sweep()
    assert Path(path).exists()  # at its time to live: kept
    now[0] += 0.001
    uploads.sweep()
    assert not Path(path).exists()


def test_pils_bomb_limit_is_lowered_to_the_declared_one():
    from demo.server import MAX_DECODE_PIXELS

    assert Image.MAX_IMAGE_PIXELS == MAX_DECODE_PIXELS
    wide = PictureBudget(10**6, 1, 10**9, 1, 10**9, 1.0)  # a budget that would take any size: only PIL's limit
    assert check_header(sized(MAX_DECODE_PIXELS // 1000, 2000), wide)[1] == (MAX_DECODE_PIXELS // 1000, 2000)
    with pytest.raises(PictureRefused, match=f"declares over {2 * MAX_DECODE_PIXELS:,} pixels"):
        check_header(sized(MAX_DECODE_PIXELS // 1000 + 1, 2000), wide)
