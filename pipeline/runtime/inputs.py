"""Turning what a person or a client typed into one example of features. No torch here."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.artifacts.tensors import dtype_of, ranges, shape
from pipeline.errors import UserError
from pipeline.runtime.values import Problem, ValueRule

MAX_TEXT_CHARS = 200_000  # far above 1000 features written out in full; refused before parsing
_SPLIT = re.compile(r"[\s,;]+")
FLOATS = ValueRule("features", "float32", ())  # a row of float32 features: what every seed model takes
# What a number may be written as: ASCII decimal or scientific notation, or the NaN and infinity the finiteness check
# names. Python's float() also reads '1_0' as 10, any script's digits (Arabic-Indic, fullwidth) and surrounding
# Unicode spaces; none of those is a number a client means.
_NUMBER = re.compile(r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)", re.ASCII | re.I)


class InputError(UserError, ValueError):
    """Input that is not what a model expects; the message is one line naming what was expected."""


def expected(model: str, features: Sequence[str]) -> str:
    """'adder_mynet expects 2 numbers (x1, x2)', shortened for wide inputs."""
    names = ", ".join(features) if len(features) <= 8 else f"{features[0]}, ..., {features[-1]}"
    noun = "number" if len(features) == 1 else "numbers"
    return f"{model} expects {len(features)} {noun} ({names})"


def parse_features(text: Any, model: str, features: Sequence[str]) -> list[float]:
    """Numbers separated by commas, semicolons or spaces, or a JSON list, checked against `features`."""
    want = expected(model, features)
    if isinstance(text, (list, tuple)):
        items: list[Any] = list(text)
    elif isinstance(text, str):
        items = _from_text(text, want)  # a list: its tokens, or the JSON array that "[" opens
    elif text is None:
        raise InputError(f"{want}; got no input")
    else:
        raise InputError(f"{want}; got a {type(text).__name__}")
    if len(items) != len(features):
        raise InputError(f"{want}; got {len(items)}")
    values = [_number(item, i, features, want) for i, item in enumerate(items)]
    return checked(values, FLOATS, want, features)


def _from_text(text: str, want: str) -> Any:
    """What a person typed: its numbers split on commas, semicolons or spaces, or the JSON value of "[...]"."""
    if len(text) > MAX_TEXT_CHARS:
        raise InputError(f"{want}; got {len(text):,} characters of input, more than the {MAX_TEXT_CHARS:,} accepted")
    stripped = text.strip()
    if not stripped:
        raise InputError(f"{want}; got empty input")
    if not stripped.startswith("["):
        return [t for t in _SPLIT.split(stripped) if t]
    try:
        return json.loads(stripped)
    except (ValueError, RecursionError):  # ValueError: also an integer of more than 4300 digits
        raise InputError(f"{want} as a JSON list; got text that is not valid JSON") from None


def _number(item: Any, i: int, features: Sequence[str], want: str, rule: ValueRule = FLOATS) -> float:
    where = f"{features[i]} (position {i + 1})"
    if isinstance(item, bool):
        raise InputError(f"{want}; {where} {_text(rule, item, i)}")
    if not isinstance(item, (int, float, str)):
        raise InputError(f"{want}; {where} is not a number")
    try:
        if isinstance(item, str) and not _NUMBER.fullmatch(item):
            raise ValueError(item)
        value = float(item)
    except (ValueError, OverflowError):
        text = str(item)
        shown = text if len(text) <= 20 else text[:20] + "..."
        raise InputError(f"{want}; {where} is {shown!r}, not a number") from None
    except Exception:
        raise InputError(f"{want}; {where} is not a number") from None
    return value


def _text(rule: ValueRule, item: Any, i: int) -> str:
    """The rule's words for an item that is not a number (true, false), after its position."""
    try:
        rule.scalar(item, i)
    except Problem as problem:
        return problem.text
    return "is not a number"


def checked(values: list[float], rule: ValueRule, want: str, labels: Sequence[str]) -> list[float]:
    """`values` (parsed numbers) if they keep `rule` (pipeline/runtime/values.py), else one line naming the first
    that does not by its label."""
    try:
        rule.check(np.asarray(values, dtype=np.float64))
    except Problem as problem:
        i = problem.index or 0
        raise InputError(f"{want}; {problem.at(f'{labels[i]} (position {i + 1})')}") from None
    return values


# ---- any model: one example of each declared input -----------------------------------------------


def _items(text: Any, want: str) -> list[Any]:
    """Text (numbers separated by commas, semicolons or spaces, or a JSON list, nested or not) or a list, flattened."""
    if isinstance(text, str):
        text = _from_text(text, want)
    if text is None:
        raise InputError(f"{want}; got no input")
    if not isinstance(text, (list, tuple)):
        raise InputError(f"{want}; got a {type(text).__name__}")
    flat: list[Any] = []
    stack = [iter(text)]
    while stack:  # iterative: a hostile nesting depth cannot exhaust the stack
        item = next(stack[-1], _END)
        if item is _END:
            stack.pop()
        elif isinstance(item, (list, tuple)):
            if len(stack) > 8:
                raise InputError(f"{want}; got lists nested too deeply")
            stack.append(iter(item))
        else:
            flat.append(item)
    return flat


_END = object()


def parse_tensor(text: Any, model: str, tensor: dict[str, Any]) -> list[Any]:
    """One example of a manifest input: its values in row-major order, checked for count, dtype and range."""
    dims = list(shape(tensor))
    whole = dtype_of(tensor).whole
    noun = "whole numbers" if whole else "numbers"
    varying = ranges(tensor)
    if varying:  # one axis of any length in its range: the count says how long it is
        (axis, low_len, high_len), per_step = next(iter(varying.values())), math.prod(d for d in dims if d > 0)
        shown = ", ".join(axis if d < 0 else str(d) for d in dims)
        count = f"{low_len} to {high_len} {noun}" if per_step == 1 else f"{per_step} {noun} for each of "
        count += "" if per_step == 1 else f"{low_len} to {high_len} {axis}"
        want = f"{model} expects {tensor['name']}: {count} (shape [{shown}])"
        items = _items(text, want)
        if len(items) % per_step or not low_len <= len(items) // per_step <= high_len or len(varying) > 1:
            raise InputError(f"{want}; got {len(items)}")
        count = len(items)
    else:
        count = math.prod(dims)
        want = f"{model} expects {tensor['name']}: {count} {noun} (shape {dims})"
        items = _items(text, want)
        if len(items) != count:
            raise InputError(f"{want}; got {len(items)}")
    names = tuple(tensor.get("features") or ()) or tuple(f"{tensor['name']}[{i}]" for i in range(count))
    labels = names if len(names) == count else [f"value {j + 1}" for j in range(count)]
    rule = ValueRule.of(tensor)
    values = checked([_number(item, i, labels, want, rule) for i, item in enumerate(items)], rule, want, labels)
    return [int(v) for v in values] if rule.whole else values


def parse_inputs(given: Any, model: str, inputs: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """One example of every input: a dict (or a JSON object) of input name -> text or list; a model with one
    input also takes the text or list alone."""
    names = [t["name"] for t in inputs]
    if isinstance(given, str) and given.strip().startswith("{"):
        try:
            given = json.loads(given)
        except (ValueError, RecursionError):
            raise InputError(f"{model} expects inputs {', '.join(names)} as a JSON object; got invalid JSON") from None
    if not isinstance(given, dict):
        if len(inputs) != 1:
            raise InputError(f"{model} expects inputs {', '.join(names)}, one value each; got a {type(given).__name__}")
        given = {names[0]: given}
    unknown = [k for k in given if k not in names]
    if unknown:
        raise InputError(f"{model} expects inputs {', '.join(names)}; got {', '.join(map(str, unknown))}")
    return {t["name"]: parse_tensor(given.get(t["name"]), model, t) for t in inputs}
