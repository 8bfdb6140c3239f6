"""The demo in a real browser: headless Debian Chromium driven by Playwright picks a model, enters an
example, runs Predict or Compare all formats and reads the page: the answer and what it should be, an
error that stays, an answer that goes stale when its input changes, and a page that fits a phone."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline import formats

from .demo_server import running_demo

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"Debian's Chromium is not installed at {CHROMIUM} (apt-get install chromium chromium-driver)",
    ),
]


@pytest.fixture(scope="module")
def demo_url(artifacts):
    with running_demo(artifacts) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def adder(demo_url, browser):
    """Opens pages with adder_mynet picked and (10, 11) entered; closes them after the test."""
    pages = []

    def open_page(viewport=None):
        page = browser.new_page(viewport=viewport or {"width": 1400, "height": 1600})
        pages.append(page)
        page.goto(demo_url + "/")
        page.locator("#model-picker input").click()
        page.get_by_role("option", name=re.compile(r"^adder_mynet\b")).click()
        page.locator("#adder_mynet-x1 input").wait_for(state="visible")
        page.locator("#adder_mynet-x1 input").fill("10")
        page.locator("#adder_mynet-x2 input").fill("11")
        return page

    yield open_page
    for page in pages:
        page.close()


def test_adder_mynet_sum_in_the_page(adder, manifest, tmp_path):
    from matplotlib import image as plt_image

    from pipeline.runtime.predictor import load_predictor

    want = float(load_predictor(manifest, "adder_mynet", "eager").predict([10, 11])["sum"][0])
    page = adder()
    try:
        page.locator("#format-picker").get_by_role("radio", name=formats.label("onnx"), exact=True).check()
        page.locator("#predict-button").click()
        prediction = page.locator("#prediction")
        prediction.get_by_text(re.compile(r"sum = ")).wait_for(timeout=30_000)
        text = prediction.inner_text()
        match = re.search(r"sum = (-?\d+(?:\.\d+)?(?:e[-+]?\d+)?)", text)
        assert match, text
        assert float(match.group(1)) == pytest.approx(want, rel=1e-5), text  # shown to 6 significant digits
        assert "CPUExecutionProvider" in text and "latency" in text
        chart = page.locator("#prediction-chart")
        chart.wait_for(state="visible")
        page.screenshot(path=str(tmp_path / "demo-adder_mynet.png"), full_page=True)  # kept for a person to look at
        # The chart is drawn: its picture holds bars and labels, not one flat background colour.
        shot = tmp_path / "chart.png"
        chart.screenshot(path=str(shot))
        pixels = plt_image.imread(shot)[..., :3].reshape(-1, 3)
        assert len(np.unique((pixels * 255).round().astype(np.uint8), axis=0)) > 20
    finally:
        page.close()


def test_bad_input_shows_the_error_and_the_page_keeps_working(demo_url, browser):
    page = browser.new_page()
    try:
        page.goto(demo_url + "/")
        page.locator("#model-picker input").click()
        page.get_by_role("option", name=re.compile(r"^adder_mynet\b")).click()
        page.locator("#adder_mynet-x2 input").fill("")
        page.locator("#predict-button").click()
        page.get_by_text("adder_mynet expects 2 numbers (x1, x2)").first.wait_for(timeout=30_000)
        page.locator("#adder_mynet-x2 input").fill("2")
        page.locator("#adder_mynet-x1 input").fill("1")
        page.locator("#predict-button").click()
        page.locator("#prediction").get_by_text(re.compile(r"sum = ")).wait_for(timeout=30_000)
    finally:
        page.close()


def _sum(text: str) -> float:
    match = re.search(r"sum = (−?\d+(?:\.\d+)?)", text)
    assert match, text
    return float(match.group(1).replace("−", "-"))


def test_the_answer_shows_what_it_should_be_and_enter_runs_predict(adder):
    page = adder()
    page.locator("#adder_mynet-x2 input").press("Enter")
    prediction = page.locator("#prediction")
    prediction.get_by_text(re.compile(r"expected 21 \(x1 \+ x2\)")).wait_for(timeout=30_000)
    text = prediction.inner_text()
    model = _sum(text)
    error = float(re.search(r"error (−?[\d.]+)", text).group(1).replace("−", "-"))
    assert abs(model - 21) < 1.5 and error == pytest.approx(model - 21, abs=1e-3), text
    assert "hidden = [" in text and "(4 more)" in text  # every output, the rest counted


def _predicted(page):
    """Press Predict, wait for the answer, and return the result area."""
    page.locator("#predict-button").click()
    prediction = page.locator("#prediction")
    prediction.get_by_text(re.compile(r"sum = ")).wait_for(timeout=30_000)
    return prediction


def test_typing_a_new_value_marks_the_old_answer_stale(adder):
    page = adder()
    prediction = _predicted(page)
    page.locator("#adder_mynet-x1 input").fill("12")
    prediction.get_by_text("Stale: the input changed since this answer").wait_for(timeout=10_000)
    page.locator("#predict-button").click()
    page.wait_for_function("!document.querySelector('#prediction .stale')", timeout=30_000)
    assert abs(_sum(prediction.inner_text()) - 23) < 2


def test_a_failed_predict_replaces_the_answer_and_its_reason_stays(adder):
    page = adder()
    prediction = _predicted(page)
    page.locator("#adder_mynet-x1 input").fill("")
    page.locator("#predict-button").click()
    reason = "adder_mynet expects 2 numbers (x1, x2)"
    prediction.get_by_text(reason).wait_for(timeout=30_000)
    time.sleep(12)
    text = prediction.inner_text()
    assert reason in text and "Predict failed" in text and "sum = " not in text, text


def test_compare_all_formats_shows_one_row_per_artifact_and_runtime(adder, manifest):
    from pipeline.formats import FORMATS

    served = manifest.model("adder_mynet").served_formats()
    page = adder()
    page.locator("#compare-button").click()
    table = page.locator("#compare-table")
    table.wait_for(timeout=90_000)
    rows = table.locator("tr").all_inner_texts()[1:]
    labels = [f"{FORMATS[f].label} · {load.runtime.label}" for f in served for load in FORMATS[f].loaders]
    assert len(rows) == len(labels)
    for row, label in zip(rows, labels, strict=True):
        cells = row.split("\t")
        # artifact · runtime, ran on, max |Δ|, |Δ| mean · p99 · min atol, within rule, latency, load, size, values
        assert cells[0] == label and cells[4] == "yes" and "sum: 2" in cells[8], row
        float(cells[2].replace("−", "-")), float(cells[5])  # the difference from eager, the latency
        assert "sum: " in cells[3] and "hidden: " in cells[3] and cells[3].count(" · ") == 4, row  # per output
        assert cells[7].endswith(("KiB", " B")), row


def test_clicking_an_example_fills_and_runs_it(adder):
    page = adder()
    page.get_by_role("button", name="catalog example 2", exact=True).click()  # the example (8, 9)
    prediction = page.locator("#prediction")
    prediction.get_by_text("expected 17").wait_for(timeout=30_000)
    assert page.locator("#adder_mynet-x1 input").input_value() == "8"


def test_linear_3x_shows_the_learning_rate_study(demo_url, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    try:
        page.goto(demo_url + "/")
        page.locator("#model-picker input").click()
        page.get_by_role("option", name=re.compile(r"^linear_3x\b")).click()
        figure = page.locator("#seed-figure")
        figure.get_by_text("Learning-rate study").wait_for(timeout=10_000)
        figure.locator("img").wait_for(timeout=10_000)
        assert figure.locator("img").evaluate("img => img.naturalWidth") > 100
    finally:
        page.close()


def test_the_page_fits_a_phone(adder):
    page = adder({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.locator("#predict-button").click()
    page.locator("#prediction").get_by_text(re.compile(r"sum = ")).wait_for(timeout=30_000)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.locator("#compare-button").click()
    page.locator("#compare-table").wait_for(timeout=90_000)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
