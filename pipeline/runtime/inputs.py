"""Turning what a person or a client typed into one example of features. No torch here."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

from pipeline.artifacts.tensors import dtype_of, ranges, shape
from pipeline.errors import UserError

MAX_TEXT_CHARS = 200_000  # far above 1000 features written out in full; refused before parsing
_SPLIT = re.compile(r"[\s,;]+")


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
    values = []
    for i, item in enumerate(items):
        values.append(_number(item, i, features, want))
    return values


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


def _number(item: Any, i: int, features: Sequence[str], want: str) -> float:
    where = f"{features[i]} (position {i + 1})"
    if isinstance(item, bool) or not isinstance(item, (int, float, str)):
        raise InputError(f"{want}; {where} is not a number")
    try:
        value = float(item)
    except (ValueError, OverflowError):
        text = str(item)
        shown = text if len(text) <= 20 else text[:20] + "..."
        raise InputError(f"{want}; {where} is {shown!r}, not a number") from None
    except Exception:
        raise InputError(f"{want}; {where} is not a number") from None
    if not math.isfinite(value):
        raise InputError(f"{want}; {where} is {value}, expected a finite number")
    if abs(value) > 3.0e38:
        raise InputError(f"{want}; {where} is {value:g}, beyond float32's range (about 3.4e38)")
    return value


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
        want = (
            f"{model} expects {tensor['name']}: {per_step} {noun} per {axis}, {low_len} to {high_len} {axis} "
            f"(shape [{shown}])"
        )
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
    values = [
        _number(item, i, names if len(names) == count else [f"value {j + 1}" for j in range(count)], want)
        for i, item in enumerate(items)
    ]
    if not whole:
        return values
    low, high = tensor.get("values") or (-(2**53), 2**53)
    for i, v in enumerate(values):
        if not float(v).is_integer():
            raise InputError(f"{want}; value {i + 1} is {v:g}, not a whole number")
        if not low <= v < high:
            raise InputError(f"{want}; value {i + 1} is {v:g}, outside [{low:g}, {high:g})")
    return [int(v) for v in values]


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
