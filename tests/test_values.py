"""One value rule per tensor spec: the page's parser, the predictor and the Open Inference Protocol refuse
the same values with the same words (one float32 ceiling, int64 ranges, booleans are not numbers)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from pipeline.artifacts.manifest import Manifest
from pipeline.errors import Refused
from pipeline.runtime.inputs import InputError, parse_tensor
from pipeline.runtime.predictor import Predictor
from pipeline.runtime.values import FLOAT32_MAX, Problem, ValueRule
from pipeline.serving import oip_protocol as p

WORDS = {"name": "words", "shape": ["batch", 3], "dtype": "int64", "values": [0, 50], "features": []}
SIGNALS = {"name": "signals", "shape": ["batch", 2], "dtype": "float32", "features": ["s1", "s2"]}
ABOVE = 2.0**128 - 2.0**103  # half a float32 step beyond its largest: the cast makes it infinity
EDGE = math.nextafter(ABOVE, 0)  # the largest double the cast rounds to float32's largest
BETWEEN = 3.2e38  # above the 3.0e38 one route used to allow, below finfo's 3.4028235e38


@pytest.fixture(scope="module")
def target():
    arts = [{"format": f, "path": f"m/{f}", "sha256": "0" * 64, "bytes": 1} for f in ("onnx", "torchscript")]
    entry = {"inputs": [WORDS, SIGNALS], "outputs": [{**SIGNALS, "name": "y"}], "examples": [], "artifacts": arts}
    manifest = Manifest.from_dict(Path("/nonexistent"), {"models": {"m": entry}})
    return p.resolve_target(manifest, "m", None, "onnx", 16 * 1024 * 1024, 8)


def predictor() -> Predictor:
    return Predictor("m", "fake", "numpy", "cpu", [], ["y"], lambda b: [b["signals"]], inputs=[WORDS, SIGNALS])


def oip(target, words, signals):
    req = {
        "inputs": [
            {"name": "words", "shape": [1, 3], "datatype": "INT64", "data": words},
            {"name": "signals", "shape": [1, 2], "datatype": "FP32", "data": signals},
        ]
    }
    return p.input_batch(req, target, b"")


def refusals(target, words, signals) -> list[str]:
    """What the page's parser, the predictor and the protocol each say to one example."""
    said = []
    for call in (
        lambda: [parse_tensor(words, "m", WORDS), parse_tensor(signals, "m", SIGNALS)],
        lambda: predictor().prepare({"words": words, "signals": signals}),
        lambda: oip(target, words, signals),
    ):
        try:
            call()
            said.append("accepted")
        except (InputError, Refused) as exc:
            said.append(str(exc))
    return said


def test_one_float32_ceiling_everywhere_finfo_max_accepted_the_next_double_refused(target):
    assert refusals(target, [1, 2, 3], [BETWEEN, -FLOAT32_MAX]) == ["accepted"] * 3
    assert refusals(target, [1, 2, 3], [EDGE, -EDGE]) == ["accepted"] * 3  # 3.40282357e38 is float32's largest
    said = refusals(target, [1, 2, 3], [0.5, ABOVE])
    assert all("beyond float32's range" in s for s in said), said


def test_true_sent_to_an_int64_input_is_refused_naming_int64_everywhere(target):
    said = refusals(target, [True, 2, 3], [0.5, 1.0])
    assert all("INT64" in s and "FP32" not in s for s in said), said
    said = refusals(target, [1, 2, 3], [0.5, False])
    assert all("FP32" in s and "INT64" not in s for s in said), said


def test_int64_ranges_and_whole_numbers_are_one_rule(target):
    for words, word in (([1, 2, 50], "outside [0, 50)"), ([1, 2.5, 3], "not a whole number"), ([-1, 0, 0], "outside")):
        said = refusals(target, words, [0.5, 1.0])
        assert all(word in s for s in said), said


def test_the_rule_names_the_first_value_it_refuses():
    rule = ValueRule.of(SIGNALS)
    with pytest.raises(Problem) as info:
        rule.array([[1.0, 2.0], [np.inf, np.nan]])
    assert info.value.index == 2 and info.value.at("value 3") == "value 3 is inf, expected a finite number"
    assert rule.array(np.array([[1, 2]], dtype=np.int64)).dtype == np.float32
    with pytest.raises(Problem, match="holds bool values"):
        rule.array(np.array([[True, False]]))
    ids = ValueRule.of({**WORDS, "values": None})
    assert ids.array([2**53 - 1]).tolist() == [2**53 - 1]
    with pytest.raises(Problem, match="outside"):
        ids.array(np.array([2**60], dtype=np.int64))
