"""The digits example in a real browser: the demo started with `--catalog examples/digits.py` on the examples'
artifacts, a held-out digit of scikit-learn's load_digits uploaded as a picture (or drawn with the mouse), Predict,
and the page names the digit. Also the page's own preprocessing of such a picture, without a browser."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import EXAMPLES
from tests.test_demo_browser import CHROMIUM, CHROMIUM_ARGS, LAPTOP, PHONE, pick, shot

from .demo_server import running_demo

pytest.importorskip("sklearn")
DIGITS = EXAMPLES / "digits.py"
SHOTS = Path(__file__).resolve().parents[1].parent / "notes" / "shots"  # kept for a person to look at, when present
SCALE = 20  # an 8x8 digit uploaded as a 160x160 picture, each value a 20x20 block
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"Debian's Chromium is not installed at {CHROMIUM}")


def held_out() -> tuple[np.ndarray, np.ndarray]:
    """The digits example's held-out 8x8 digits (values 0..16) and their labels."""
    from tests.test_examples import load

    x, y = load(DIGITS).test_data(None)
    return x[:, 0].numpy(), y.numpy()


def picture(digit: np.ndarray) -> np.ndarray:
    """An 8x8 digit as a person would upload it: dark ink on white paper, scaled up, RGB bytes."""
    gray = np.kron(255.0 * (1 - digit / 16.0), np.ones((SCALE, SCALE))).round().astype(np.uint8)
    return np.stack([gray] * 3, axis=-1)


def classify(manifest, values) -> int:
    """The digit the ONNX artifact reads in 64 values (8x8)."""
    from pipeline.runtime.predictor import load_predictor

    onnx = load_predictor(manifest, "digits_cnn", "onnx")
    return int(np.argmax(onnx.predict(np.asarray(values, dtype=np.float32).reshape(1, 1, 8, 8))["scores"][0]))


@pytest.fixture(scope="module")
def digits_manifest(built):
    from pipeline.artifacts.manifest import Manifest

    return Manifest.load(built)


def test_an_uploaded_held_out_digit_is_read_as_the_model_reads_the_data_set(digits_manifest):
    from demo.widgets import image_values
    from pipeline.runtime.predictor import load_predictor

    x, y = held_out()
    image = digits_manifest.model("digits_cnn").inputs[0]["image"]
    onnx = load_predictor(digits_manifest, "digits_cnn", "onnx")
    read = lambda batch: np.argmax(onnx.predict(np.asarray(batch, dtype=np.float32))["scores"], axis=1)  # noqa: E731
    direct = read(x[:, None])
    uploaded = read(np.array([image_values(picture(d), image) for d in x]).reshape(-1, 1, 8, 8))
    # The page frames a picture as load_digits frames its digits; a mismatch (a margin the data set lacks)
    # once read fewer than a third of them right.
    assert (direct == y).mean() >= 0.95
    assert (uploaded == y).mean() >= 0.9, f"{(uploaded == y).mean():.1%} of uploads, {(direct == y).mean():.1%} direct"


@pytest.fixture(scope="module")
def digits_demo(built):
    """The demo on the examples' artifacts and a Chromium: (url, browser)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    with running_demo(built, args=("--catalog", str(DIGITS))) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield url, browser
        browser.close()


@pytest.fixture
def digits_page(digits_demo):
    """A fresh page with digits_cnn picked."""
    url, browser = digits_demo
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    page.goto(url + "/")
    page.locator("#model-picker input").click()
    page.get_by_role("option", name=re.compile(r"^digits_cnn\b")).click()
    yield page
    page.close()


@pytest.fixture
def uploaded(built, digits_page, tmp_path):
    """digits_page with a held-out digit the model reads right uploaded as a picture: (page, its label)."""
    from PIL import Image

    from pipeline.artifacts.manifest import Manifest

    x, y = held_out()
    manifest = Manifest.load(built)
    i = next(i for i in range(len(y)) if classify(manifest, x[i]) == y[i] and y[i] != 0)
    path = tmp_path / "digit.png"
    Image.fromarray(picture(x[i])).save(path)
    # The editor takes the picture as its value once it has uploaded it and fetched it back; a Predict before
    # that would send the picture it held before (Gradio's editor).
    fetched = []  # the editor fetches the uploaded file back to show it
    digits_page.on("response", lambda r: fetched.append(r.url) if "/gradio_api/file=" in r.url else None)
    digits_page.locator("#digits_cnn-image canvas").first.wait_for()
    digits_page.locator("#digits_cnn-image input[type=file]").set_input_files(str(path))
    for _ in range(600):
        if fetched:
            break
        digits_page.wait_for_timeout(100)
    return digits_page, str(int(y[i]))


def predicted(page, answer: str = "#prediction .result, #prediction .error") -> str:
    """Presses Predict and waits for `answer` (a selector) on the page: the result area's text."""
    page.locator("#predict-button").click()
    page.locator(answer).first.wait_for(timeout=30_000)
    return page.locator("#prediction").inner_text()


@pytest.mark.browser
@needs_chromium
def test_the_first_predict_after_an_upload_names_the_digit(uploaded):
    page, label = uploaded
    text = predicted(page)
    if SHOTS.is_dir():
        page.screenshot(path=str(SHOTS / "digits-fixed.png"), full_page=True)
    assert page.locator("#prediction .classes h2").inner_text() == label, text
    # a catalog model is named by its catalog file, not by a seed
    assert page.locator("#model-picker input").input_value() == "digits_cnn · digits.py"


@pytest.mark.browser
@needs_chromium
def test_digits_opens_on_a_held_out_digit_and_the_first_predict_names_it(digits_page, digits_manifest):
    # The canvas opened empty, so a newcomer's first Predict failed with "draw or upload a picture".
    page = digits_page
    first = digits_manifest.model("digits_cnn").examples[0]
    values = first["image"] if isinstance(first, dict) else first
    text = predicted(page)
    assert page.locator("#prediction .classes h2").inner_text() == str(classify(digits_manifest, values)), text
    assert page.locator("#prediction .pixels .px").count() == 64  # the 8x8 it read, beside the answer


@pytest.mark.browser
@needs_chromium
def test_a_digit_drawn_with_the_mouse_is_classified(digits_page):
    page = digits_page
    editor = page.locator("#digits_cnn-image")
    editor.get_by_role("button", name="Clear canvas", exact=True).click()  # it opens on a held-out digit
    editor.get_by_role("button", name="Brush", exact=True).click()  # the cleared canvas shows its upload prompt
    canvas = editor.locator("canvas").first
    canvas.wait_for()
    box = canvas.bounding_box()
    x0, y0, side = box["x"], box["y"], min(box["width"], box["height"])
    # A "1": one stroke down the middle of the canvas.
    page.mouse.move(x0 + side * 0.5, y0 + side * 0.15)
    page.mouse.down()
    for k in range(1, 11):
        page.mouse.move(x0 + side * 0.5, y0 + side * (0.15 + 0.07 * k), steps=3)
    page.mouse.up()
    text = predicted(page)
    if SHOTS.is_dir():
        page.screenshot(path=str(SHOTS / "digits-drawn.png"), full_page=True)
    top = page.locator("#prediction .bars .name").all_inner_texts()
    assert page.locator("#prediction .classes h2").inner_text().isdigit() and len(top) == 3, text
    assert "1" in top, f"a drawn 1 is not among the top classes: {top}"


@pytest.mark.browser
@needs_chromium
def test_a_held_out_digit_is_one_click_and_answers_with_the_class_and_the_8x8_it_read(digits_demo):
    url, browser = digits_demo
    for viewport, name in ((LAPTOP, "digits-laptop"), (PHONE, "digits-phone")):
        page = browser.new_page(viewport=viewport)
        try:
            page.goto(url + "/")
            pick(page, "digits_cnn")
            page.locator("#digits_cnn-examples").get_by_role("button").first.click()  # loads a held-out digit, runs it
            page.locator("#prediction .result").wait_for(timeout=30_000)
            label = page.locator("#prediction .classes")
            assert re.fullmatch(r"\d", label.locator("h2").first.inner_text().strip()), label.inner_text()
            assert label.locator(".bar").count() == 3  # confidence bars of the top classes
            assert label.get_by_text(re.compile(r"^\d+(\.\d+)?%$")).count() == 3
            assert page.locator("#prediction .pixels .px").count() == 64  # the 8x8 the model read, beside the answer
            shot(page, name)
        finally:
            page.close()


@pytest.mark.browser
@needs_chromium
def test_a_stroke_marks_the_answer_stale_and_an_example_digit_runs(digits_page):
    page = digits_page
    page.locator("#digits_cnn-examples").get_by_role("button").first.click()
    page.locator("#prediction .result").wait_for(timeout=30_000)
    editor = page.locator("#digits_cnn-image")
    canvas = editor.locator("canvas").first
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.6, steps=5)
    page.mouse.up()
    page.locator("#prediction .stale-note").first.wait_for(timeout=10_000)
    examples = page.locator("#digits_cnn-examples")
    examples.get_by_role("button").nth(1).click()  # the second held-out digit: fills the canvas and runs
    page.wait_for_function("!document.querySelector('#prediction .stale-note')", timeout=30_000)
    assert page.locator("#prediction .classes h2").first.inner_text().strip().isdigit()
