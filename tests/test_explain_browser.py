"""The explanation in a real browser: a compare row outside its rule opens its layer table and |Δ| histogram."""

from __future__ import annotations

import re

import pytest

from tests.demo_server import running_demo
from tests.test_demo_browser import CHROMIUM, CHROMIUM_ARGS
from tests.test_explain import _plant_onnx

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"Debian's Chromium is not installed at {CHROMIUM}"),
]


def test_a_failing_row_opens_its_explanation_at_the_planted_layer(artifacts_copy, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    _plant_onnx(artifacts_copy, "two_layer_net", "linear1.bias", 0.05)
    with running_demo(artifacts_copy) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            page.goto(url + "/")
            page.locator("#model-picker input").click()
            page.get_by_role("option", name=re.compile(r"^two_layer_net\b")).click()
            page.locator("#input-two_layer_net textarea").first.wait_for(state="visible")
            page.locator("#compare-button").click()
            page.locator("#compare-table").wait_for(timeout=90_000)
            onnx_row = page.locator("#compare-table tr", has_text="ONNX · onnxruntime").first.inner_text()
            assert "NO: |Δ|" in onnx_row and "explain it below" in onnx_row, onnx_row
            shown = page.locator("#explanation")
            shown.get_by_text("First layer beyond its rule").wait_for(timeout=90_000)
            assert shown.locator(".first-layer").inner_text() == "First layer beyond its rule: linear1"
            first = shown.locator("tr.first").inner_text().split("\t")
            assert first[0] == "linear1" and float(first[3]) == pytest.approx(0.05, rel=1e-3), first
            assert shown.locator("svg.histogram rect").count() == 20  # the |Δ| histogram is drawn
            page.locator("#explain-panel").first.screenshot(path=str(tmp_path / "explanation.png"))
            # any row on request: the float32 TorchScript file is within its rule at every layer
            page.locator("#explain-row input").click()
            page.get_by_role("option", name="TorchScript · torch", exact=True).click()
            page.locator("#explain-button").click()
            shown.get_by_text("Every layer is within its rule").wait_for(timeout=90_000)
        finally:
            browser.close()
