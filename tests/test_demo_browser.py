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
        assert "ONNX · onnxruntime on CPU" in text and " ms" in text
        assert prediction.locator("[title=CPUExecutionProvider]").count() == 1  # the full name on demand
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
    assert re.search(r"hidden\t(−?[\d.]+, ){7}−?[\d.]+", text), text  # every other output, every value


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
    rows = table.locator("tbody tr")
    labels = [f"{FORMATS[f].label} · {load.runtime.label}" for f in served for load in FORMATS[f].loaders]
    assert rows.count() == len(labels)
    for i, label in enumerate(labels):
        cell = lambda name: rows.nth(i).locator(f"td.{name}").inner_text()  # noqa: B023, E731
        assert cell("copy").startswith(label) and cell("verdict") == "✓ yes", rows.nth(i).inner_text()
        assert cell("answer").startswith("sum = 2"), cell("answer")
        float(cell("diff").replace("−", "-")), float(cell("ms").removesuffix(" ms"))  # difference, latency
        assert cell("size").endswith(("KiB", " B")), cell("size")
        spread = rows.nth(i).locator("td.details details").inner_html()
        assert "mean · p99" in spread and "sum: " in spread and "hidden: " in spread, spread  # per output, on demand


def test_clicking_an_example_fills_and_runs_it(adder):
    page = adder()
    page.get_by_role("button", name="x1 = 8, x2 = 9", exact=True).click()
    prediction = page.locator("#prediction")
    prediction.get_by_text("expected 17").wait_for(timeout=30_000)
    assert page.locator("#adder_mynet-x1 input").input_value() == "8"


def test_linear_3x_shows_the_learning_rate_study(demo_url, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    try:
        page.goto(demo_url + "/")
        page.locator("#model-picker input").click()
        page.get_by_role("option", name=re.compile(r"^linear_3x\b")).click()
        page.locator("#seed-figure-caption").get_by_text("Learning-rate study").wait_for(timeout=30_000)
        page.locator("#seed-figure-caption").scroll_into_view_if_needed()
        figure = page.locator("#seed-figure")
        figure.locator("img").wait_for(timeout=30_000)
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


# ---- the page as a newcomer reads it: a laptop's 1280x900 and a phone's 390x844 -----------------------------

LAPTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
SHOTS = Path(__file__).resolve().parents[1].parent / "notes" / "shots"  # kept for a person to look at, when present
AXE = "axe_playwright_python/axe.min.js"  # axe-core, from the axe-playwright-python package (make setup)


def shot(page, name: str) -> None:
    """A screenshot of what the viewport shows, for a person to look at, when the notes folder exists."""
    if SHOTS.is_dir():
        page.screenshot(path=str(SHOTS / f"{name}.png"))


def first_screen(browser, url: str, viewport: dict):
    """A fresh page as it opens, nothing picked."""
    page = browser.new_page(viewport=viewport)
    page.goto(url + "/")
    page.locator("#predict-button").wait_for()
    return page


def pick(page, model: str) -> None:
    page.locator("#model-picker input").click()
    page.get_by_role("option", name=re.compile(rf"^{model}\b")).click()


def contrast_violations(page) -> list[str]:
    """axe-core's color-contrast rule (WCAG AA: 4.5:1 for text, 3:1 for large text) over the whole page."""
    import importlib.util

    spec = importlib.util.find_spec("axe_playwright_python")
    if spec is None:
        pytest.fail("axe-playwright-python is not installed (make setup installs it): it carries axe-core")
    page.evaluate(Path(spec.origin).with_name("axe.min.js").read_text())
    result = page.evaluate("axe.run(document, {runOnly: ['color-contrast'], resultTypes: ['violations']})")
    return [f"{node['target']}: {node['failureSummary']}" for v in result["violations"] for node in v["nodes"]]


def readme_controls() -> list[str]:
    """The buttons the README's page section names (*Predict*, *Compare all formats*, …)."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("The page:") : text.index("### The `predict` API")]
    return sorted(set(re.findall(r"(?<![*\w])\*([A-Z][^*\n]+)\*(?!\*)", section)))


def test_the_first_screen_opens_on_an_answer_a_person_can_check(demo_url, browser):
    for viewport, name in ((LAPTOP, "first-screen-laptop"), (PHONE, "first-screen-phone")):
        page = first_screen(browser, demo_url, viewport)
        try:
            assert page.locator("#model-picker input").input_value().startswith("adder_mynet · seed 004 §10.9")
            box = page.locator("#predict-button").bounding_box()
            assert box["y"] + box["height"] <= viewport["height"], f"Predict below the fold: {box} in {viewport}"
            page.get_by_role("button", name="x1 = 8, x2 = 9", exact=True).wait_for()  # examples by their values
            shot(page, name)
        finally:
            page.close()
    page = first_screen(browser, demo_url, LAPTOP)
    try:
        buttons = [b.strip() for b in page.get_by_role("button").all_inner_texts()]
        for control in readme_controls():
            assert control in buttons, f"README names *{control}*; the page's buttons: {buttons}"
        pick(page, "two_layer_net")
        text = page.locator("#two_layer_net-features textarea").input_value()
        assert not re.search(r"\d{7}", text), text[:80]  # no float32 noise: -0.93, not -0.930000007
    finally:
        page.close()


def test_keyboard_and_contrast(demo_url, browser):
    page = first_screen(browser, demo_url, LAPTOP)
    try:
        assert contrast_violations(page) == []
        stops = []
        for _ in range(6):  # the model, x1, x2, then Predict
            page.keyboard.press("Tab")
            stops.append(page.evaluate("document.activeElement.id || document.activeElement.tagName"))
            if stops[-1] == "predict-button":
                break
        assert stops[-1] == "predict-button", stops
        radio = page.locator("#format-picker input[type=radio]").first
        radio.focus()
        page.keyboard.press("ArrowRight")  # keyboard focus: focus-visible
        outline = page.evaluate(
            """() => { const l = document.activeElement.closest('label'); const s = getComputedStyle(l);
                 return [s.outlineStyle, parseFloat(s.outlineWidth)]; }"""
        )
        assert outline[0] != "none" and outline[1] >= 2, outline
        picker = page.locator("#model-picker input")
        picker.click()
        page.keyboard.type("lin")
        assert picker.input_value() == "lin"  # typing replaces the name, it does not append to it
        page.keyboard.press("Escape")
    finally:
        page.close()


def test_a_format_the_next_model_lacks_falls_back_to_the_default(demo_url, browser):
    page = first_screen(browser, demo_url, LAPTOP)
    try:
        pick(page, "two_layer_net")
        page.locator("#format-picker").get_by_role("radio", name=formats.label("onnx-int8"), exact=True).check()
        pick(page, "adder_mynet")
        checked = page.locator("#format-picker").get_by_role("radio", name=formats.label("onnx"), exact=True)
        expect_checked = page.wait_for_function(
            "() => document.querySelector('#format-picker input:checked')?.value === 'onnx'", timeout=10_000
        )
        assert expect_checked and checked.is_checked()
        note = page.locator("#format-note")
        note.get_by_text("adder_mynet has no ONNX int8").wait_for(timeout=10_000)
        page.locator("#adder_mynet-x1 input").fill("10")
        prediction = _predicted(page)
        assert "Error" not in page.locator("body").inner_text().split("Predict")[0]
        assert page.locator(".toast-body").count() == 0 and "expected 21" in prediction.inner_text()
    finally:
        page.close()


def test_the_answer_is_the_headline_and_compare_reads_as_a_table(adder):
    page = adder(LAPTOP)
    prediction = _predicted(page)
    headline = prediction.locator(".headline").first.inner_text()
    assert re.fullmatch(r"sum = 2\d(\.\d{1,4})?", headline.strip()), headline  # the sum alone, 6 digits at most
    assert "expected 21" in prediction.locator(".expected").inner_text()
    page.locator("#prediction-chart").get_by_text(
        "hidden: its 8 values (a secondary output; the answer is sum)"
    ).wait_for()
    shot(page, "answer-laptop")
    page.locator("#compare-button").click()
    table = page.locator("#compare-table")
    table.wait_for(timeout=90_000)
    text = page.locator("#prediction").inner_text().lower()
    assert "each exported copy gives the same answer as the original pytorch model" in text
    assert table.locator("th").first.inner_text() == "same answer?"
    rows = table.locator("tbody tr")
    assert rows.count() >= 5
    for i in range(rows.count()):
        row = rows.nth(i)
        assert row.locator("td").first.inner_text().startswith("✓"), row.inner_text()
        assert row.locator("td.device").inner_text() in ("CPU", "GPU"), row.inner_text()
        assert row.get_attribute("data-format") and row.get_attribute("data-runtime")
        row.locator("details summary").first.click()
        assert "|value − eager|" in row.locator("details").first.inner_text()
    # nothing cut or scrolled at 1280 px
    assert table.evaluate("t => t.scrollWidth <= t.parentElement.clientWidth + 1")
    shot(page, "compare-laptop")


def test_the_phone_reads_compare_as_cards_and_figures_whole(adder, browser, demo_url):
    page = adder(PHONE)
    page.locator("#compare-button").click()
    table = page.locator("#compare-table")
    table.wait_for(timeout=90_000)
    row = table.locator("tbody tr").first
    assert row.evaluate("r => getComputedStyle(r).display") in ("block", "grid", "flex")
    verdict = row.locator("td").first.bounding_box()
    assert verdict["x"] >= 0 and verdict["x"] + verdict["width"] <= PHONE["width"]
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    row.scroll_into_view_if_needed()
    shot(page, "compare-phone")
    pick(page, "linear_3x")
    page.locator("#seed-figure-caption").get_by_text("Learning-rate study").wait_for(timeout=30_000)
    page.locator("#seed-figure-caption").scroll_into_view_if_needed()  # Gradio loads pictures as they come into view
    img = page.locator("#seed-figure img")
    img.wait_for(timeout=30_000)
    caption = page.locator("#seed-figure-caption").bounding_box()
    assert caption["y"] + caption["height"] <= img.bounding_box()["y"] + 1  # the title row is not under a label
    assert img.evaluate("i => i.getBoundingClientRect().width >= 0.6 * i.naturalWidth")  # text at a readable size
    assert img.bounding_box()["x"] >= caption["x"] - 1  # scrolled sideways from its left edge, none of it cut
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    option = page.locator("#model-picker input")
    assert "pipeline" not in option.input_value() and "seed 004 §11.6" in option.input_value()
    headers = page.locator("#parity th").all_inner_texts()
    assert "max_rel" not in " ".join(headers) and any("within" in h for h in headers), headers


def test_an_answer_to_an_earlier_request_is_never_shown_as_current(adder):
    page = adder(LAPTOP)
    x1 = page.locator("#adder_mynet-x1 input")
    prediction = page.locator("#prediction")
    held = []  # Predict's request, held until the edit after it has been answered: its answer comes back late
    joins = lambda url: "/gradio_api/queue/join" in url  # noqa: E731
    page.route(joins, lambda route: held.append(route))
    for value in (30, 31, 32, 33, 34):
        x1.fill(str(value))
        page.locator("#predict-button").click()
        for _ in range(500):
            if held:
                break
            page.wait_for_timeout(20)
        assert held, "Predict sent no queue/join request"
        with page.expect_response(lambda response: "/gradio_api/run/" in response.url):
            x1.fill(str(value + 100))  # edited while the answer for `value` is on its way
        held.pop().continue_()
        prediction.get_by_text(f"x1 = {value},").first.wait_for(timeout=30_000)
        # the answer for `value` came back after the form moved on: it must not read as current
        prediction.locator(".stale-note").first.wait_for(timeout=10_000)
    page.unroute(joins)
    page.locator("#predict-button").click()
    prediction.get_by_text("x1 = 134,").first.wait_for(timeout=30_000)
    page.wait_for_function("!document.querySelector('#prediction .stale-note')", timeout=10_000)
