"""Robustness at the library level: whatever a person types, the feature parser and the predict path
either predict or raise InputError with one short line; nothing else escapes.

The same properties over HTTP are in test_robustness_app.py.
"""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from pipeline.formats import FORMATS
from pipeline.runtime import inputs
from pipeline.runtime.inputs import MAX_TEXT_CHARS, InputError, expected, parse_features
from pipeline.runtime.predictor import OutputOverflow, PredictorCache

FLOAT32_EDGE = 2.0**128 - 2.0**103  # the cast to float32 makes this and beyond infinity

pytestmark = pytest.mark.robustness

FEATURE_SETS = {
    1: ("x",),
    2: ("x1", "x2"),
    1000: tuple(f"x{i}" for i in range(1000)),
}
MESSAGE_LIMIT = 400  # an error message is one short line, whatever the input's size

# What people write for numbers, and for numbers that are not finite.
NAN_INF = [
    "nan",
    "NaN",
    "NAN",
    "-nan",
    "+nan",
    "nan(0x1)",
    "inf",
    "-inf",
    "+inf",
    "Inf",
    "INF",
    "infinity",
    "-Infinity",
    "+INFINITY",
    "infinite",
    "1e309",
    "-1e309",
    "1e999999",
    "3.5e38",
    "-3.5e38",
    "∞",
    "-∞",
    "NaN%",
    "null",
    "None",
    "undefined",
    "0x7f800000",
    "1.#INF",
    "1.#QNAN",
]
SEPARATORS = [",", ";", " ", "\t", "\n", "\r\n", ",,", " ; ", ",;,", "\u3000", "\u00a0", "\u2028", "，", "|", "/"]

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda f: f"{f:e}"),
    st.floats(width=32).map(lambda f: f"{f:.9g}"),
    st.integers().map(str),
    st.integers(min_value=-(10**400), max_value=10**400).map(str),
    st.from_regex(r"[+-]?[0-9]{0,4}(\.[0-9]{0,4})?([eE][+-]?[0-9]{1,5})?", fullmatch=True),
    st.from_regex(r"[+-]?0[xob][0-9a-fA-F_]{1,6}", fullmatch=True),
    st.sampled_from(NAN_INF),
    st.sampled_from(["1_000", "١٢", "１２", "½", "1e", "e5", ".", "-", "+", "--1", "1..2", "0.0.0"]),
)
separator_lists = st.lists(st.sampled_from(SEPARATORS), min_size=1, max_size=6)
joined = st.tuples(st.lists(numbers, max_size=6), separator_lists).map(
    lambda t: "".join(n + t[1][i % len(t[1])] for i, n in enumerate(t[0]))
)
padded = st.tuples(
    st.sampled_from(["", " ", "\n", ",", ";;", "\t\t"]), joined, st.sampled_from(["", " ", ",", "\n"])
).map("".join)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=5), kids, max_size=3),
    max_leaves=12,
)
json_lists = st.one_of(
    st.lists(json_values, max_size=5).map(lambda v: json.dumps(v, allow_nan=True)),
    st.lists(numbers, max_size=4).map(lambda v: "[" + ",".join(v) + "]"),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=4).map(lambda v: json.dumps(v)),
    st.integers(min_value=4000, max_value=6000).map(lambda n: "[" + "7" * n + "]"),  # past int's 4300 digits
    st.integers(min_value=1, max_value=5000).map(lambda n: "[" * n + "]" * n),
    st.text(max_size=40).map(lambda t: "[" + t),
)
any_text = st.one_of(
    st.text(max_size=300),
    st.text(st.characters(codec="utf-8"), max_size=100),
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=4),  # lone surrogates
    padded,
    json_lists,
)
feature_sets = st.sampled_from(sorted(FEATURE_SETS)).map(FEATURE_SETS.__getitem__)


def assert_one_line(message: str, features) -> None:
    assert message.startswith(expected("m", features)), message
    assert len(message.splitlines()) == 1, repr(message)
    assert len(message) <= MESSAGE_LIMIT, f"{len(message)} characters: {message[:200]}..."


def parse_or_refuse(text, features) -> list[float] | None:
    """The parsed values, or None after checking the InputError; any other exception fails the test."""
    try:
        values = parse_features(text, "m", features)
    except InputError as exc:
        assert_one_line(str(exc), features)
        return None
    assert isinstance(values, list) and len(values) == len(features)
    for v in values:
        assert type(v) is float and math.isfinite(v) and abs(v) < FLOAT32_EDGE, values
    return values


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=any_text, features=feature_sets)
# json.loads raises a plain ValueError (not JSONDecodeError) for an integer of more than 4300 digits
@example(text="[" + "1" * 5000 + "]", features=FEATURE_SETS[1])
@example(text="[" * 100_000, features=FEATURE_SETS[1])
@example(text="1" * 5000, features=FEATURE_SETS[1])
@example(text="\ud800", features=FEATURE_SETS[1])
@example(text="[1e400, -1e400]", features=FEATURE_SETS[2])
# NaN alone in each place: the range check that also refuses Infinity lets NaN through (NaN > x is False)
@example(text="[NaN, 1]", features=FEATURE_SETS[2])
@example(text="1 nan", features=FEATURE_SETS[2])
@example(text="[1, Infinity]", features=FEATURE_SETS[2])
@example(text='["1", "2"]', features=FEATURE_SETS[2])
@example(text="[true, false]", features=FEATURE_SETS[2])
@example(text="1e-400 -0", features=FEATURE_SETS[2])
@example(text="\x00", features=FEATURE_SETS[1])
def test_parser_text_predicts_or_refuses_in_one_line(text, features):
    parse_or_refuse(text, features)


@settings(max_examples=200, deadline=None)
@given(
    items=st.lists(json_values | st.integers(min_value=-(10**400), max_value=10**400), max_size=5),
    features=feature_sets,
)
@example(items=[10**400], features=FEATURE_SETS[1])
@example(items=[True, 1], features=FEATURE_SETS[2])
def test_parser_lists_from_api_clients_predict_or_refuse(items, features):
    parse_or_refuse(items, features)


@given(
    value=st.one_of(
        st.none(), st.integers(), st.floats(), st.binary(max_size=10), st.dictionaries(st.text(), st.integers())
    )
)
@settings(max_examples=50, deadline=None)
def test_parser_other_types_are_refused(value):
    assert parse_or_refuse(value, FEATURE_SETS[2]) is None


@settings(max_examples=200, deadline=None)
# The parser accepts every finite float32 (pipeline/runtime/values.py: one ceiling, finfo max).
@given(
    values=st.lists(
        st.floats(width=32, allow_nan=False).filter(lambda v: abs(v) < FLOAT32_EDGE), min_size=2, max_size=2
    ),
    sep=st.sampled_from(SEPARATORS[:8]),
    style=st.sampled_from(["repr", "e", "g"]),
)
def test_parser_reads_every_finite_float32_back(values, sep, style):
    spell = {"repr": repr, "e": lambda v: f"{v:.9e}", "g": lambda v: f"{v:.9g}"}[style]
    got = parse_or_refuse(sep.join(spell(v) for v in values), FEATURE_SETS[2])
    assert got is not None and np.array_equal(np.float32(got), np.float32(values))


@pytest.mark.parametrize("size", [MAX_TEXT_CHARS + 1, 10 * 1024 * 1024])
def test_oversized_text_is_refused_before_parsing(size, monkeypatch):
    class Boom:
        def __getattr__(self, name):
            raise AssertionError(f"the parser touched {name!r} on an oversized input")

    monkeypatch.setattr(inputs, "_SPLIT", Boom())
    monkeypatch.setattr(inputs, "json", Boom())
    for text in ["1," * (size // 2) + "1"[: size % 2], "[" + "1," * ((size - 1) // 2)]:
        assert len(text) >= size - 1 and len(text) > MAX_TEXT_CHARS
        start = time.perf_counter()
        with pytest.raises(InputError) as info:
            parse_features(text, "m", FEATURE_SETS[2])
        assert time.perf_counter() - start < 1.0
        assert f"{MAX_TEXT_CHARS:,} accepted" in str(info.value)
        assert_one_line(str(info.value), FEATURE_SETS[2])


def test_text_at_the_limit_is_parsed_not_refused_for_size():
    text = ("1 " * (MAX_TEXT_CHARS // 2))[:MAX_TEXT_CHARS]
    with pytest.raises(InputError, match=r"got 100,000|got 100000"):
        parse_features(text, "m", FEATURE_SETS[2])
    # a full 1000-feature input fits
    values = parse_features(" ".join(["0.5"] * 1000), "m", FEATURE_SETS[1000])
    assert values == [0.5] * 1000


# ---- the predict path: parse, then run any format of a real model ----------------------------


@pytest.fixture(scope="module")
def cache(manifest):
    return PredictorCache(manifest)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=any_text,
    model=st.sampled_from(["adder_mynet", "linear_3x", "poly3_sin"]),
    fmt=st.sampled_from(list(FORMATS)),
)
@example(text="3e38 3e38", model="adder_mynet", fmt="onnx")  # finite input, output overflows float32
@example(text="1e38", model="poly3_sin", fmt="pt2")
@example(text="10 11", model="adder_mynet", fmt="torchscript")
def test_predict_path_predicts_or_refuses(cache, manifest, text, model, fmt):
    entry = manifest.model(model)
    assume(fmt in entry.served_formats())  # a derived format that does not apply to this model has no file
    try:
        values = parse_features(text, model, entry.features)
    except InputError as exc:
        assert len(str(exc).splitlines()) == 1 and len(str(exc)) <= MESSAGE_LIMIT
        return
    try:
        out = cache.get(model, fmt)(values)
    except OutputOverflow as exc:  # finite input, outputs beyond float32 (or float16 inside): one line, refused
        assert len(str(exc).splitlines()) == 1 and str(exc).startswith(f"{model}'s output ")
        if not FORMATS[fmt].source:  # a float32 format overflows exactly where the eager model does
            with pytest.raises(OutputOverflow):
                cache.get(model, "eager")(values)
        return
    want = cache.get(model, "eager")(values)  # the trained model itself, in float32 on the CPU
    assert list(out) == entry.output_names
    for spec in entry.outputs:
        got, ref = out[spec["name"]], want[spec["name"]]
        assert got.shape == (len(spec["features"]),) and got.dtype == np.float32
        assert np.isfinite(got).all() and np.isfinite(ref).all(), (text, got, ref)  # predict refuses the rest
        finite = np.isfinite(ref)
        # A derived format (float16, int8) may also be off by its declared share of the output's size.
        size = float(np.abs(ref[finite]).max(initial=0.0))
        scale = max(1.0, size, max(abs(v) for v in values))
        atol = 1e-4 * scale + FORMATS[fmt].scale * size
        np.testing.assert_allclose(got[finite], ref[finite], rtol=1e-4, atol=atol, err_msg=f"{model}/{fmt}")


BAD_ROWS = [
    [],
    [1.0],
    [1.0, 2.0, 3.0],
    [[1.0, 2.0, 3.0]],
    [[[1.0, 2.0]]],
    np.zeros((2, 2, 2)),
    [[1.0, 2.0], [3.0]],
    ["a", "b"],
    [{}, 1.0],
]


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("bad", BAD_ROWS)
def test_predictor_refuses_wrong_shapes(cache, manifest, fmt, bad):
    if fmt not in manifest.model("adder_mynet").served_formats():
        pytest.skip(f"adder_mynet has no {fmt} artifact (not applicable to it)")
    with pytest.raises(InputError, match="adder_mynet expects 2 numbers"):
        cache.get("adder_mynet", fmt)(bad)
