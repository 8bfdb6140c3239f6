"""Turning what a person or a client typed into one example of features. No torch here."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

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
        if len(text) > MAX_TEXT_CHARS:
            raise InputError(
                f"{want}; got {len(text):,} characters of input, more than the {MAX_TEXT_CHARS:,} accepted"
            )
        stripped = text.strip()
        if not stripped:
            raise InputError(f"{want}; got empty input")
        if stripped.startswith("["):
            try:
                items = json.loads(stripped)
            except (ValueError, RecursionError):  # ValueError: also an integer of more than 4300 digits
                raise InputError(f"{want} as a JSON list; got text that is not valid JSON") from None
            if not isinstance(items, list):
                raise InputError(f"{want} as a JSON list; got another JSON value")
        else:
            items = [t for t in _SPLIT.split(stripped) if t]
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
