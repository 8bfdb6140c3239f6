"""The one base class of failures a user can act on, the one HTTP refusal, and the one way an exception
becomes one line.

No imports from the package: every module may use it.
"""

from __future__ import annotations

import traceback
from typing import Any

_UNPICKLER = "WeightsUnpickler error:"  # torch's refusal of a pickle: the part after it names what was refused


class UserError(Exception):
    """Bad input, a missing prerequisite or an unusable file: the CLI prints the message as one line."""


class Refused(Exception):
    """A request answered with an error, not a result: the HTTP `status` (4xx the caller's input, 5xx a
    failure of ours) and one line naming what was expected. The OIP routes answer {"error": message}."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def reject_constant(name: str) -> Any:
    """json.loads' parse_constant: NaN, Infinity and -Infinity are not JSON numbers, so a request holding one
    is refused as invalid JSON (ValueError) instead of becoming a float."""
    raise ValueError(f"{name} is not a JSON number")


def one_line(exc: BaseException, limit: int = 300) -> str:
    """`Type: message` on one line (whitespace folded), for reports and one-line errors."""
    detail = " ".join(str(exc).split())
    if detail.startswith("Weights only load failed") and _UNPICKLER in detail:  # torch's paragraph of advice
        detail = detail[detail.index(_UNPICKLER) :]
    if not detail:
        detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return f"{type(exc).__name__}: {detail}"[:limit]
