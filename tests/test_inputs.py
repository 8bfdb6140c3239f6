"""The input parser and the predictor's own input checks, at the library level, without any model file.

Each refusal a person can meet (NaN, infinity, too few, too many, empty, not numbers, beyond float32)
is pinned with its exact message; properties then cover everything else a client could send.
Fast: no training, no artifacts, no torch.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipeline.errors import UserError
from pipeline.runtime.inputs import MAX_TEXT_CHARS, InputError, expected, parse_features, parse_inputs, parse_tensor
from pipeline.runtime.predictor import Predictor

F2 = ("x1", "x2")
WANT2 = "m expects 2 numbers (x1, x2)"
FLOAT32_LIMIT = float(np.finfo(np.float32).max)  # the one ceiling every route and the predictor keep


def refusal(text, features=F2) -> str:
    """The one-line message parse_features refuses `text` with (the test fails if it accepts it)."""
    with pytest.raises(InputError) as info:
        parse_features(text, "m", features)
    message = str(info.value)
    assert "\n" not in message and len(message) <= 400, message
    return message


# ---- what is expected --------------------------------------------------------------------------


def test_expected_names_every_feature_up_to_eight_and_shortens_wider_inputs():
    assert expected("linear_3x", ["x"]) == "linear_3x expects 1 number (x)"
    assert expected("m", F2) == WANT2
    eight = [f"x{i}" for i in range(8)]
    assert expected("m", eight) == "m expects 8 numbers (x0, x1, x2, x3, x4, x5, x6, x7)"
    assert expected("m", [*eight, "x8"]) == "m expects 9 numbers (x0, ..., x8)"
    assert (
        expected("two_layer_net", [f"x{i}" for i in range(1000)])
        == "two_layer_net expects 1000 numbers (x0, ..., x999)"
    )


def test_input_error_is_a_user_error_and_a_value_error():
    assert issubclass(InputError, UserError) and issubclass(InputError, ValueError)


# ---- accepted ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("10 11", [10.0, 11.0]),
        ("10,11", [10.0, 11.0]),
        ("10;11", [10.0, 11.0]),
        ("10, 11", [10.0, 11.0]),
        (" \n10 ,; 11\t", [10.0, 11.0]),
        ("1,,2,", [1.0, 2.0]),  # empty pieces between separators are not numbers, and not counted
        ("-1.5e3 +2.25", [-1500.0, 2.25]),
        ("[10, 11]", [10.0, 11.0]),
        ("  [1.5, -2]  ", [1.5, -2.0]),
        ('["1", "2"]', [1.0, 2.0]),  # numbers written as JSON strings
        ([10, 11], [10.0, 11.0]),
        ((10, 11.5), [10.0, 11.5]),
        (["3", 4], [3.0, 4.0]),
        ("3e38 -3e38", [3e38, -3e38]),  # the largest magnitude accepted, both signs
        ("1e-400 -0", [0.0, -0.0]),  # underflow to zero is a finite number
    ],
)
def test_numbers_are_read_in_every_accepted_spelling(text, values):
    got = parse_features(text, "m", F2)
    assert got == values and all(type(v) is float for v in got)


def test_one_feature_and_a_thousand():
    assert parse_features("2.5", "linear_3x", ["x"]) == [2.5]
    wide = [f"x{i}" for i in range(1000)]
    assert parse_features(" ".join(["0.5"] * 1000), "m", wide) == [0.5] * 1000


# ---- refused, each with its message ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # NaN, from text, a JSON list and a Python list
        ("nan 1", f"{WANT2}; x1 (position 1) is nan, expected a finite number"),
        ("1 -NaN", f"{WANT2}; x2 (position 2) is nan, expected a finite number"),
        ("[NaN, 1]", f"{WANT2}; x1 (position 1) is nan, expected a finite number"),
        ([1.0, float("nan")], f"{WANT2}; x2 (position 2) is nan, expected a finite number"),
        # infinity, however it is written
        ("1 inf", f"{WANT2}; x2 (position 2) is inf, expected a finite number"),
        ("-Infinity 1", f"{WANT2}; x1 (position 1) is -inf, expected a finite number"),
        ("[1, -Infinity]", f"{WANT2}; x2 (position 2) is -inf, expected a finite number"),
        ([float("inf"), 1], f"{WANT2}; x1 (position 1) is inf, expected a finite number"),
        ("1e309 1", f"{WANT2}; x1 (position 1) is inf, expected a finite number"),
        # beyond float32 but finite as a Python float: it would become infinity in the model
        ("3.5e38 1", f"{WANT2}; x1 (position 1) is 3.5e+38, beyond float32's range (±3.4028235e+38)"),
        ("1 -3.5e38", f"{WANT2}; x2 (position 2) is -3.5e+38, beyond float32's range (±3.4028235e+38)"),
        ([1, 1e300], f"{WANT2}; x2 (position 2) is 1e+300, beyond float32's range (±3.4028235e+38)"),
        # too few, too many
        ("1", f"{WANT2}; got 1"),
        ("1 2 3", f"{WANT2}; got 3"),
        ("[1, 2, 3]", f"{WANT2}; got 3"),
        ([1], f"{WANT2}; got 1"),
        # empty
        ("", f"{WANT2}; got empty input"),
        (" \t\n ", f"{WANT2}; got empty input"),
        ("[]", f"{WANT2}; got 0"),
        ([], f"{WANT2}; got 0"),
        (",,,", f"{WANT2}; got 0"),
        (None, f"{WANT2}; got no input"),
        # not numbers
        ("1, eleven", f"{WANT2}; x2 (position 2) is 'eleven', not a number"),
        ('"1" 2', f"{WANT2}; x1 (position 1) is '\"1\"', not a number"),
        ("0x10 1", f"{WANT2}; x1 (position 1) is '0x10', not a number"),
        ("x" * 30 + " 1", f"{WANT2}; x1 (position 1) is '{'x' * 20}...', not a number"),
        ("x" * 20 + " 1", f"{WANT2}; x1 (position 1) is '{'x' * 20}', not a number"),  # shown whole up to 20
        ("x" * 21 + " 1", f"{WANT2}; x1 (position 1) is '{'x' * 20}...', not a number"),
        ([10**400, 1], f"{WANT2}; x1 (position 1) is '{'1' + '0' * 19}...', not a number"),
        ([True, 1], f"{WANT2}; x1 (position 1) is true, not a number (datatype FP32)"),
        ([1, False], f"{WANT2}; x2 (position 2) is false, not a number (datatype FP32)"),
        ([1, None], f"{WANT2}; x2 (position 2) is not a number"),
        ([1, [2]], f"{WANT2}; x2 (position 2) is not a number"),
        ("[1, [2]]", f"{WANT2}; x2 (position 2) is not a number"),
        ('[{"a": 1}, 2]', f"{WANT2}; x1 (position 1) is not a number"),
        ('{"x1":1}', f"{WANT2}; got 1"),  # a JSON object is not a list: read as one piece of text
        ("[1, 2", f"{WANT2} as a JSON list; got text that is not valid JSON"),
        ("[" * 100_000, f"{WANT2} as a JSON list; got text that is not valid JSON"),  # too deep to parse
        ("[" + "7" * 5000 + "]", f"{WANT2} as a JSON list; got text that is not valid JSON"),  # over 4300 digits
        # not text and not a list
        (b"1 2", f"{WANT2}; got a bytes"),
        (5, f"{WANT2}; got a int"),
        ({"x1": 1, "x2": 2}, f"{WANT2}; got a dict"),
    ],
)
def test_each_refusal_is_one_line_naming_what_was_expected(text, message):
    assert refusal(text) == message


@pytest.mark.parametrize(
    "written",
    [
        "1_0",  # Python's float() reads it as 10
        "1_000.5",
        "\u0661\u0662",  # Arabic-Indic 12
        "\u06f3",  # Extended Arabic-Indic 3
        "\uff11",  # fullwidth 1
        "\u0967",  # Devanagari 1
        "\u00a01",  # a no-break space before the digit
        "1\u2003",  # an em space after it
        "\uff0d1",  # a fullwidth minus
        "\U0001d7cf",  # mathematical bold 1
    ],
)
def test_only_ascii_decimal_or_scientific_notation_is_a_number(written):
    shown = written if len(written) <= 20 else written[:20] + "..."
    want = f"{WANT2}; x1 (position 1) is {shown!r}, not a number"
    if written.strip() == written:  # text splits on any whitespace, so only a list keeps it beside the digit
        assert refusal(f"{written} 1") == want
    assert refusal([written, 1]) == want  # a string inside a list, as a JSON client sends it
    tensor = {"name": "ids", "shape": [-1, 2], "dtype": "int64"}
    with pytest.raises(InputError, match="not a number"):
        parse_tensor([written, 1], "m", tensor)


@pytest.mark.parametrize("written", ["10", "-1.5", "+.5", "5.", "1e3", "1E-3", "-2.5e+7", "0007"])
def test_ascii_decimal_and_scientific_notation_still_read(written):
    assert parse_features(f"{written} 1", "m", F2) == [float(written), 1.0]


def test_the_float32_limit_is_inclusive_and_symmetric():
    assert parse_features([FLOAT32_LIMIT, -FLOAT32_LIMIT], "m", F2) == [FLOAT32_LIMIT, -FLOAT32_LIMIT]
    assert parse_features([math.nextafter(FLOAT32_LIMIT, math.inf), 0], "m", F2)[0] > FLOAT32_LIMIT  # rounds to it
    above = 2.0**128 - 2.0**103  # half a float32 step beyond its largest: the cast would make it infinity
    assert "beyond float32's range" in refusal([above, 0])
    assert "beyond float32's range" in refusal([0, -above])


def test_a_number_whose_conversion_fails_in_an_unexpected_way_is_still_one_line():
    class Odd(int):
        def __float__(self):
            raise RuntimeError("no float for you")

    assert refusal([Odd(1), 2]) == f"{WANT2}; x1 (position 1) is not a number"


def test_text_over_the_limit_is_refused_by_its_size_and_at_the_limit_is_read():
    message = refusal("1" * (MAX_TEXT_CHARS + 1))
    assert (
        message == f"{WANT2}; got {MAX_TEXT_CHARS + 1:,} characters of input, more than the {MAX_TEXT_CHARS:,} accepted"
    )
    at_limit = "1 " + " " * (MAX_TEXT_CHARS - 3) + "2"
    assert len(at_limit) == MAX_TEXT_CHARS and parse_features(at_limit, "m", F2) == [1.0, 2.0]


# ---- properties --------------------------------------------------------------------------------

finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
written = st.one_of(
    finite32.map(repr),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**60), max_value=10**60).map(str),
    st.sampled_from(["nan", "-inf", "Infinity", "1e39", "-3.5e38", "one", "", "1..2", "0x1f", "1e", "[", "]"]),
)
texts = st.tuples(st.lists(written, max_size=4), st.sampled_from([" ", ",", ";", ", ", "\n"])).map(
    lambda t: t[1].join(t[0])
)
json_texts = st.lists(written, max_size=4).map(lambda v: "[" + ",".join(v) + "]")
items = st.lists(st.one_of(st.floats(), st.integers(), st.booleans(), st.none(), st.text(max_size=8)), max_size=4)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(texts, json_texts, items, st.text(max_size=40)))
@example(text="3e38 3e38")
@example(text="[1e39, 1]")
def test_parse_gives_two_finite_float32_numbers_or_one_line(text):
    try:
        values = parse_features(text, "m", F2)
    except InputError as exc:
        message = str(exc)
        assert message.startswith(WANT2) and "\n" not in message and len(message) <= 400, message
        return
    assert len(values) == 2 and all(type(v) is float for v in values)
    # every accepted value survives the cast to the models' float32 as a finite number
    assert np.isfinite(np.asarray(values, dtype=np.float32)).all(), values


@settings(max_examples=200, deadline=None)
@given(values=st.lists(finite32.filter(lambda v: abs(v) <= FLOAT32_LIMIT), min_size=2, max_size=2))
def test_every_finite_float32_written_out_reads_back_exactly(values):
    assert parse_features(" ".join(repr(v) for v in values), "m", F2) == values
    assert parse_features(repr(values), "m", F2) == values


# ---- the predictor's own checks (Predictor.prepare / predict) -------------------------------------

W = np.array([[1.0, 2.0, 0.0], [1.0, -1.0, 3.0]], dtype=np.float32)  # 2 features -> 3 hidden values


def linear_predictor(model: str = "adder") -> Predictor:
    """A Predictor over a float32 NumPy model: the sum of the features and x @ W, as real models give."""

    def run_batch(x: np.ndarray):
        assert x.dtype == np.float32 and x.ndim == 2 and x.flags["C_CONTIGUOUS"]
        with np.errstate(over="ignore", invalid="ignore"):  # float32 overflow is what a real model gives too
            return [x.sum(axis=1, keepdims=True), x @ W]

    return Predictor(model, "fake", "numpy", "cpu", list(F2), ["sum", "hidden"], run_batch)


def test_prepare_makes_one_example_a_batch_of_one():
    arr, single = linear_predictor().prepare([10, 11])
    assert single is True and arr.shape == (1, 2) and arr.dtype == np.float32 and arr.flags["C_CONTIGUOUS"]
    assert arr.tolist() == [[10.0, 11.0]]


def test_prepare_keeps_a_batch_and_makes_it_contiguous_float32():
    rows = np.asfortranarray(np.arange(6, dtype=np.float64).reshape(3, 2))
    arr, single = linear_predictor().prepare(rows)
    assert single is False and arr.shape == (3, 2) and arr.dtype == np.float32 and arr.flags["C_CONTIGUOUS"]
    assert arr.tolist() == rows.tolist()


def test_predict_names_each_output_one_example_and_a_batch():
    predictor = linear_predictor()
    one = predictor.predict([10, 11])
    assert list(one) == ["sum", "hidden"]
    assert one["sum"].tolist() == [21.0] and one["hidden"].tolist() == [21.0, 9.0, 33.0]
    batch = predictor([[10, 11], [1, 2]])
    assert batch["sum"].tolist() == [[21.0], [3.0]]
    assert batch["hidden"].tolist() == [[21.0, 9.0, 33.0], [3.0, 0.0, 6.0]]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], "adder expects 2 numbers (x1, x2); got 0"),  # empty
        ([1.0], "adder expects 2 numbers (x1, x2); got 1"),  # too few
        ([1.0, 2.0, 3.0], "adder expects 2 numbers (x1, x2); got 3"),  # too many
        ([[1.0, 2.0, 3.0]], "adder expects 2 numbers (x1, x2); got 3"),
        ([[[1.0, 2.0]]], "adder expects 2 numbers (x1, x2); got "),  # rows of rows: any count will do
        (np.zeros((2, 2, 2)), "adder expects 2 numbers (x1, x2); got "),
        ([[1.0, 2.0], [3.0]], "adder expects 2 numbers (x1, x2); got something that is not rows of numbers"),
        (["a", "b"], "adder expects 2 numbers (x1, x2); got something that is not rows of numbers"),
        ([{}, 1.0], "adder expects 2 numbers (x1, x2); got something that is not rows of numbers"),
    ],
)
def test_predictor_refuses_what_is_not_rows_of_the_right_width(rows, message):
    with pytest.raises(InputError) as info:
        linear_predictor().predict(rows)
    assert str(info.value) == message if not message.endswith(" ") else str(info.value).startswith(message)


@pytest.mark.parametrize("row", [[float("nan"), 1.0], [1.0, float("inf")], [1e39, 1.0]], ids=["nan", "inf", "1e39"])
def test_predictor_refuses_values_no_float32_model_can_take(row):
    with pytest.raises(InputError, match=r"adder expects 2 numbers \(x1, x2\)"):
        linear_predictor().predict(row)


@settings(max_examples=200, deadline=None)
@given(text=st.one_of(texts, json_texts))
@example(text="3e38 3e38")  # finite, accepted, and the sum overflows float32
def test_every_accepted_input_yields_finite_outputs_or_a_one_line_refusal(text):
    predictor = linear_predictor()
    try:
        outputs = predictor.predict(parse_features(text, predictor.model, predictor.features))
    except InputError as exc:
        message = str(exc)  # bad input, or finite input whose outputs overflow float32: one line either way
        assert "\n" not in message and (
            message.startswith(("adder expects 2 numbers", "adder's output sum is not finite"))
            or message.startswith("adder's output hidden is not finite")  # the hidden layer may overflow first
        ), message
        return
    assert all(np.isfinite(v).all() for v in outputs.values()), outputs


# ---- any declared input: int64 ids with a range, named features, image-shaped tensors, several inputs ----

WORDS = {"name": "words", "shape": ["batch", 3], "dtype": "int64", "values": [0, 50], "features": []}
SIGNALS = {"name": "signals", "shape": ["batch", 2], "dtype": "float32", "features": ["s1", "s2"]}
IMAGE = {"name": "image", "shape": ["batch", 1, 2, 2], "dtype": "float32", "features": []}
TWO = [WORDS, SIGNALS]


def test_a_tensor_reads_ids_as_ints_and_nested_lists_in_row_major_order():
    ids = parse_tensor("1, 2 49", "m", WORDS)
    assert ids == [1, 2, 49] and all(type(v) is int for v in ids)
    assert parse_tensor("[[1, 2], [3, 4.5]]", "m", IMAGE) == [1.0, 2.0, 3.0, 4.5]
    assert parse_tensor([[0.5], [1]], "m", SIGNALS) == [0.5, 1.0]


@pytest.mark.parametrize(
    ("text", "tensor", "message"),
    [
        ("1 2", WORDS, "m expects words: 3 whole numbers (shape [3]); got 2"),
        ("1 2 3 4", WORDS, "m expects words: 3 whole numbers (shape [3]); got 4"),
        (
            "1 2.5 3",
            WORDS,
            "m expects words: 3 whole numbers (shape [3]); words[1] (position 2) is 2.5, not a whole number",
        ),
        ("1 2 50", WORDS, "m expects words: 3 whole numbers (shape [3]); words[2] (position 3) is 50, outside [0, 50)"),
        ("-1 2 3", WORDS, "m expects words: 3 whole numbers (shape [3]); words[0] (position 1) is -1, outside [0, 50)"),
        ("1 x", SIGNALS, "m expects signals: 2 numbers (shape [2]); s2 (position 2) is 'x', not a number"),
        ("1 2 3 x", IMAGE, "m expects image: 4 numbers (shape [1, 2, 2]); image[3] (position 4) is 'x', not a number"),
        (None, SIGNALS, "m expects signals: 2 numbers (shape [2]); got no input"),
        (5, SIGNALS, "m expects signals: 2 numbers (shape [2]); got a int"),
        ("   ", SIGNALS, "m expects signals: 2 numbers (shape [2]); got empty input"),
        ("[1,", SIGNALS, "m expects signals: 2 numbers (shape [2]) as a JSON list; got text that is not valid JSON"),
        ("[" * 10 + "1" + "]" * 10, IMAGE, "m expects image: 4 numbers (shape [1, 2, 2]); got lists nested too deeply"),
        (
            "[1, NaN]",
            SIGNALS,
            "m expects signals: 2 numbers (shape [2]); s2 (position 2) is nan, expected a finite number",
        ),
    ],
)
def test_a_tensor_refuses_with_one_line_naming_the_input(text, tensor, message):
    with pytest.raises(InputError) as info:
        parse_tensor(text, "m", tensor)
    assert str(info.value) == message


def test_ids_without_a_declared_range_take_any_whole_number_a_double_holds_exactly():
    free = {**WORDS, "values": None}
    assert parse_tensor([2**52, -(2**52), 0], "m", free) == [2**52, -(2**52), 0]
    with pytest.raises(InputError, match=r"words\[0\] \(position 1\) is 9\.0072e\+15, outside"):
        parse_tensor([2**53, 0, 0], "m", free)


def test_several_inputs_by_name_as_a_dict_or_a_json_object():
    want = {"words": [1, 2, 3], "signals": [0.5, -1.0]}
    assert parse_inputs({"signals": "0.5 -1", "words": [1, 2, 3]}, "m", TWO) == want
    assert parse_inputs('{"words": "1 2 3", "signals": [0.5, -1]}', "m", TWO) == want
    assert list(parse_inputs({"signals": "0.5 -1", "words": "1 2 3"}, "m", TWO)) == [
        "words",
        "signals",
    ]  # declared order


def test_one_input_takes_its_text_alone():
    assert parse_inputs("1 2 3", "m", [WORDS]) == {"words": [1, 2, 3]}
    assert parse_inputs({"words": "1 2 3"}, "m", [WORDS]) == {"words": [1, 2, 3]}


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("{", "m expects inputs words, signals as a JSON object; got invalid JSON"),
        ("1 2 3", "m expects inputs words, signals, one value each; got a str"),
        ([1, 2, 3], "m expects inputs words, signals, one value each; got a list"),
        ({"words": "1 2 3", "signals": "1 2", "extra": 1}, "m expects inputs words, signals; got extra"),
        ({"words": "1 2 3"}, "m expects signals: 2 numbers (shape [2]); got no input"),
    ],
)
def test_several_inputs_refuse_with_one_line_naming_them(given, message):
    with pytest.raises(InputError) as info:
        parse_inputs(given, "m", TWO)
    assert str(info.value) == message


def test_the_edges_of_the_any_input_parser():
    assert parse_tensor("0 1 2", "m", WORDS) == [0, 1, 2]  # the range includes its low end
    free = {**WORDS, "values": None}
    with pytest.raises(InputError, match=r"words\[0\] \(position 1\) is -9\.0072e\+15, outside"):
        parse_tensor([-(2**53) - 2, 0, 0], "m", free)
    plain = {"name": "v", "shape": ["batch", 2]}  # no dtype: float32, "numbers"
    assert parse_tensor("1 2", "m", plain) == [1.0, 2.0]
    with pytest.raises(InputError, match=r"^m expects v: 2 numbers \(shape \[2\]\); got 1$"):
        parse_tensor("1", "m", plain)
    odd = {**SIGNALS, "features": ["only one"]}  # names that do not match the count: positions instead
    with pytest.raises(InputError, match=r"; value 2 \(position 2\) is 'x', not a number$"):
        parse_tensor("1 x", "m", odd)
    assert parse_tensor("[" * 9 + "1, 2, 3, 4" + "]" * 9, "m", IMAGE) == [1.0, 2.0, 3.0, 4.0]  # 9 levels: accepted
    with pytest.raises(InputError, match=r"; got a, b$"):
        parse_inputs({"words": "1 2 3", "signals": "1 2", "a": 1, "b": 2}, "m", TWO)


TOKENS = {
    "name": "tokens",
    "shape": ["batch", "length"],
    "dims": {"length": [1, 128]},
    "dtype": "int64",
    "values": [0, 100],
}
STEPS = {"name": "x", "shape": ["batch", "steps", 3], "dims": {"steps": [1, 512]}, "dtype": "float32"}


@pytest.mark.parametrize(
    ("tensor", "text", "message"),
    [
        # A transformer's token ids of any length read "1 whole numbers per length, 1 to 128 length" on the page.
        (TOKENS, " ".join(["5"] * 130), "m expects tokens: 1 to 128 whole numbers (shape [length]); got 130"),
        (TOKENS, "", "m expects tokens: 1 to 128 whole numbers (shape [length]); got empty input"),
        (STEPS, "1 2 3 4", "m expects x: 3 numbers for each of 1 to 512 steps (shape [steps, 3]); got 4"),
    ],
)
def test_a_varying_axis_is_described_as_a_person_counts_it(tensor, text, message):
    with pytest.raises(InputError) as refused:
        parse_tensor(text, "m", tensor)
    assert str(refused.value) == message


def test_a_varying_axis_is_counted_in_the_page_and_the_model_line():
    from pipeline.artifacts.tensors import count_text

    assert count_text(TOKENS) == "1 to 128"
    assert count_text(STEPS) == "3 × (1 to 512)"
    assert count_text({"name": "ids", "shape": ["batch", 12], "dtype": "int64"}) == "12"
