"""What the page says, without a browser (demo/views.py, demo/widgets.py, demo/page.py): numbers as a person
reads them, the answer first in the task's terms, a format the model lacks named with the default shown
instead, and a parity table that does not read as a contradiction."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np

from demo import model_panel, page, views, widgets


def test_numbers_read_as_people_write_them():
    assert widgets.features_text(np.asarray([-0.93, 0.1, 3.0], dtype=np.float32)) == "-0.93, 0.1, 3"
    assert widgets.short(np.float32(1 / 3)) == "0.33333334"  # every digit float32 needs, no more
    assert views.number(-0.63371) == "−0.63371" and views.number(1234567.8) == "1.23457e+06"
    assert views.number(6.9999, "int64") == "7" and views.values_text([1.0, 2.0, 3.0], 2, "int64") == "1, 2, …(1 more)"


def test_examples_are_named_by_their_values(manifest):
    adder = manifest.model("adder_mynet")
    assert [widgets.example_label(adder, ex) for ex in adder.examples] == [
        "x1 = 10, x2 = 11",
        "x1 = 8, x2 = 9",
        "x1 = 1.5, x2 = 2.5",
    ]
    wide = widgets.example_label(manifest.model("two_layer_net"), manifest.model("two_layer_net").examples[0])
    assert wide == "x: 1000 numbers, −1, −0.93, −0.86, …"


def test_a_seed_model_is_named_by_its_seed_file_and_section(manifest):
    assert page.model_label(manifest.model("adder_mynet")) == "adder_mynet · seed 004 §10.9-10.13"
    assert all("pipeline" not in page.model_label(e) for e in manifest.models.values())
    assert page.opening(list(manifest.models.values())).name == "adder_mynet"


def test_a_regression_answer_is_its_value_beside_the_expected_one(manifest):
    adder = manifest.model("adder_mynet")
    answer = {
        "format": "onnx",
        "runtime": "onnxruntime",
        "device": "CPUExecutionProvider",
        "outputs": {"sum": [20.36631234], "hidden": [17.2, 0.0, 0.0, 3.88, 0.0, 0.0, 0.0, 0.0]},
        "expected": {"output": "sum", "truth": "x1 + x2", "value": 21.0, "model": 20.36631234, "error": -0.63368766},
        "latency_ms": 0.2,
        "load_ms": 0.0,
    }
    key = {"model": "adder_mynet · seed 004 §10.9-10.13", "format": "onnx", "device": "cpu", "fields": {}}
    text = views.result(adder, answer, [10.0, 11.0], None, key)
    assert '<p class="headline">sum = 20.3663</p>' in text  # the sum alone is the headline, 6 digits
    assert "expected <b>21</b> (x1 + x2) · error −0.633688" in text
    assert "<td>hidden</td>" in text and "ran on" not in text and 'title="CPUExecutionProvider">CPU<' in text
    assert json.loads(re.search(r'data-for="([^"]*)"', text).group(1).replace("&quot;", '"')) == key


def test_a_classifier_answer_is_its_class_with_confidence_bars_and_int64_outputs_are_whole(manifest):
    adder = manifest.model("adder_mynet")
    classifier = dataclasses.replace(
        adder,
        outputs=[
            {"name": "mood", "shape": [1, 3], "dtype": "float32", "features": [], "classes": ["sad", "calm", "happy"]},
            {"name": "count", "shape": [1, 2], "dtype": "int64", "features": []},
        ],
    )
    answer = {
        "format": "onnx",
        "runtime": "onnxruntime",
        "device": "cpu",
        "outputs": {"mood": [0.1, 0.2, 2.0], "count": [3.0, 12.0]},
        "labels": {"mood": {"sad": 0.1, "calm": 0.15, "happy": 0.75}},
        "latency_ms": 0.2,
        "load_ms": 0.0,
    }
    text = views.result(classifier, answer)
    assert "<h2>happy</h2>" in text and text.count('class="bar"') == 3 and "75.0%" in text
    assert '<td class="values">3, 12</td>' in text  # int64 as integers


def test_a_format_the_model_lacks_says_the_default_is_shown(manifest):
    adder = manifest.model("adder_mynet")
    note = views.format_note(adder, "onnx", missing="onnx-int8")
    assert "adder_mynet has no ONNX int8 (dynamic)" in note and "showing ONNX · onnxruntime, the default" in note
    assert re.search(r"file \d+\.\d KiB; at export its answers were within", note), note


def test_the_parity_table_shows_the_tolerance_not_a_relative_error(manifest):
    text, rows = model_panel.parity(manifest.model("two_layer_net"))
    assert "max_rel" not in model_panel.PARITY_COLUMNS and "tolerance" in model_panel.PARITY_COLUMNS
    int8 = [r for r in rows if r[0] == "ONNX int8 (dynamic)"]
    assert int8 and all("max|eager|" in r[5] and r[6] == "yes" for r in int8), int8
    assert "every copy gave the same answer" in text


def test_the_format_line_carries_the_last_bench_speed(manifest, tmp_path):
    from types import SimpleNamespace

    rows = [
        {"model": "adder_mynet", "format": "onnx", "runtime": "onnxruntime", "device": "CPUExecutionProvider"},
        {"model": "adder_mynet", "format": "onnx", "runtime": "onnx-reference", "device": "cpu"},
    ]
    rows[0]["predictor_p50_us"], rows[1]["predictor_p50_us"] = 41.5, 900.0
    (tmp_path / "bench.json").write_text(json.dumps({"latency": rows}))
    svc = SimpleNamespace(artifacts=tmp_path)
    assert page.bench_p50_us(svc, "adder_mynet", "onnx") == 41.5  # the default runtime's figure
    assert page.bench_p50_us(svc, "adder_mynet", "pt2") is None
    assert "0.0415 ms per call (median, last bench)" in page.note(svc, manifest.model("adder_mynet"), "onnx")
    assert page.bench_p50_us(SimpleNamespace(artifacts=tmp_path / "none"), "adder_mynet", "onnx") is None
