"""The value rules of a tensor spec, stated once: every route and the predictor check inputs here. No torch.

A tensor spec (a manifest input entry) says a dtype, a shape and, for int64, a range [low, high). The
rules that follow from it:

- float32: every value a finite number within float32's range: no larger in magnitude than finfo max
  (3.4028235e38) once rounded to float32, as the cast rounds it (a larger one would become infinity);
- int64: every value a whole number in [low, high), the declared range, else the whole numbers float64
  (hence JSON) carries exactly, [-2**53, 2**53);
- either: true and false are not numbers (JSON's booleans are a different type, whatever Python says).

Callers word the refusal: the page and the predictor as "MODEL expects ...; <problem>", the Open
Inference Protocol as a 400 "input 'x' of MODEL: <problem>". `Problem` carries the flat position of the
first offending value so each can name it its own way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.artifacts.tensors import dtype, shape
from pipeline.dtypes import DTYPES

FLOAT32_MAX = float(np.finfo(np.float32).max)  # the one float32 ceiling
WHOLE_RANGE = (-(2**53), 2**53)  # an int64 input that declares no range: what float64 holds exactly


class Problem(ValueError):
    """What is wrong with a tensor's values: `text` reads after the value's name ("is nan, expected ...")."""

    def __init__(self, index: int | None, text: str) -> None:
        super().__init__(text)
        self.index, self.text = index, text

    def at(self, label: str) -> str:
        """'LABEL TEXT', e.g. 'value 3 is nan, expected a finite number'."""
        return f"{label} {self.text}"


@dataclass(frozen=True)
class ValueRule:
    """The rules one tensor spec sets for its values."""

    name: str
    dtype: str  # a name in pipeline/dtypes.py: float32 or int64
    dims: tuple[int, ...]  # the shape after the batch axis
    low: float = WHOLE_RANGE[0]
    high: float = WHOLE_RANGE[1]

    @classmethod
    def of(cls, tensor: Mapping[str, Any]) -> ValueRule:
        """The rule of a manifest tensor entry."""
        low, high = tensor.get("values") or WHOLE_RANGE
        return cls(str(tensor["name"]), dtype(tensor), shape(tensor), low, high)

    @property
    def datatype(self) -> str:
        """The Open Inference Protocol's name of the dtype (FP32, INT64): what messages name."""
        return DTYPES[self.dtype].oip

    @property
    def whole(self) -> bool:
        """Whether the values are whole numbers (int64)."""
        return DTYPES[self.dtype].whole

    def scalar(self, item: Any, index: int) -> None:
        """Problem unless `item` (one JSON or Python value) is a number: true and false are not."""
        if isinstance(item, (bool, np.bool_)):
            raise Problem(index, f"is {str(bool(item)).lower()}, not a number (datatype {self.datatype})")
        if not isinstance(item, (int, float, np.integer, np.floating)):
            raise Problem(index, f"is a {type(item).__name__}, not a number (datatype {self.datatype})")

    def scalars(self, items: Sequence[Any]) -> None:
        """`scalar` on each of a flat list, stopping at the first that is not a number."""
        if all(type(v) is float or type(v) is int for v in items):  # the common case, one pass
            return
        for i, item in enumerate(items):
            self.scalar(item, i)

    def check(self, arr: np.ndarray) -> np.ndarray:
        """`arr` (numbers, any numeric dtype) as a C-contiguous array of the rule's dtype, or Problem naming the
        first value that breaks the rule: not finite, beyond float32, not whole, outside the int64 range."""
        if arr.dtype.kind == "b" or arr.dtype.kind not in "iuf":
            raise Problem(None, f"holds {arr.dtype} values; expected numbers (datatype {self.datatype})")
        flat = arr.reshape(-1)
        if arr.dtype.kind == "f":
            bad = ~np.isfinite(flat)
            if bad.any():
                i = int(np.argmax(bad))
                raise Problem(i, f"is {flat[i]}, expected a finite number")
            if self.whole and (flat != np.round(flat)).any():
                i = int(np.argmax(flat != np.round(flat)))
                raise Problem(i, f"is {flat[i]:g}, not a whole number")
        if self.whole and flat.size:
            out = (flat < self.low) | (flat >= self.high)
            if out.any():
                i = int(np.argmax(out))
                raise Problem(i, f"is {flat[i]:g}, outside [{self.low:g}, {self.high:g})")
        with np.errstate(over="ignore"):  # a value beyond float32 becomes infinity here: found just below
            out = np.ascontiguousarray(arr, dtype=DTYPES[self.dtype].numpy)
        if not self.whole and arr.dtype != np.float32 and not math.isfinite(out.sum(dtype=np.float64)):
            i = int(np.argmax(~np.isfinite(out.reshape(-1))))
            raise Problem(i, f"is {flat[i]:.9g}, beyond float32's range (±{FLOAT32_MAX:.8g})")
        return out

    def array(self, values: Any) -> np.ndarray:
        """Python or JSON numbers (nested lists, or an array) as a checked array of the rule's dtype, shape
        as given; Problem for booleans, text, ragged lists and the values `check` refuses."""
        if isinstance(values, np.ndarray):
            return self.check(values)
        if isinstance(values, (bool, np.bool_)):
            self.scalar(values, 0)
        try:
            arr = np.asarray(values, dtype=np.float64)
        except OverflowError:  # an int beyond float64: no number here is that large
            raise Problem(None, f"holds a number beyond float64's range (datatype {self.datatype})") from None
        except (ValueError, TypeError):
            raise Problem(None, f"is not an array of numbers (datatype {self.datatype})") from None
        if _holds_bool(values):
            raise Problem(None, f"holds true or false, not a number (datatype {self.datatype})")
        return self.check(arr)


def _holds_bool(values: Any) -> bool:
    """Whether nested lists hold a boolean (np.asarray made it 1.0 or 0.0 without a word)."""
    stack = [values]
    while stack:
        item = stack.pop()
        if isinstance(item, (list, tuple)):
            if item and all(type(v) is float or type(v) is int for v in item):
                continue
            stack.extend(item)
        elif isinstance(item, (bool, np.bool_)):
            return True
    return False
