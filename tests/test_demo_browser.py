"""The demo in a real browser: headless Debian Chromium driven by Playwright picks adder_mynet, enters
10 and 11, runs the prediction and reads the sum from the page."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

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


def test_adder_mynet_sum_in_the_page(demo_url, browser, manifest, tmp_path):
    from matplotlib import image as plt_image

    from pipeline.runtime import load_predictor

    want = float(load_predictor(manifest, "adder_mynet", "eager").predict([10, 11])["sum"][0])
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    try:
        page.goto(demo_url + "/")
        page.locator("#model-picker input").click()
        page.get_by_role("option", name=re.compile(r"^adder_mynet\b")).click()
        page.locator("#adder_mynet-x1 input").wait_for(state="visible")
        page.locator("#adder_mynet-x1 input").fill("10")
        page.locator("#adder_mynet-x2 input").fill("11")
        page.locator("#format-picker").get_by_label(re.compile("ONNX")).check()
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
