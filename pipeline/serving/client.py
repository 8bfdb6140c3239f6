"""A client for the demo's Gradio `predict` route, as the README's curl example calls it.

POST /gradio_api/call/predict, then read its event stream until `complete` (the result object) or
`error` (raised as PredictError carrying the app's one-line message). Used by the benchmarks and the
tests; needs only httpx.
"""

from __future__ import annotations

import json
from typing import Any

from pipeline.errors import UserError


class PredictError(UserError):
    """The predict route answered with an error; str() is the message the app sent."""

    def __init__(self, message: str, payload: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.payload = payload


def call_predict(
    client: Any,
    base_url: str,
    model: str,
    fmt: str,
    device: str,
    features: Any,
    *,
    session: str | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """One `predict` call over `client` (an httpx.Client); with `session`, as gradio_client sends it
    (one session_hash per client, so Gradio keeps the session's state instead of building it anew)."""
    url = base_url.rstrip("/") + "/gradio_api/call/predict"
    body: dict[str, Any] = {"data": [model, fmt, device, features]}
    if session is not None:
        body["session_hash"] = session
    extra = {} if timeout is None else {"timeout": timeout}
    answer = client.post(url, json=body, **extra)
    if answer.status_code != 200:
        raise PredictError(f"POST {url} answered {answer.status_code}: {answer.text[:500]}")
    event_id = answer.json()["event_id"]
    event = None
    with client.stream("GET", f"{url}/{event_id}", **extra) as stream:
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                data = json.loads(line.split(":", 1)[1])
                if event == "complete" and isinstance(data, list) and data and isinstance(data[0], dict):
                    return data[0]
                message = data.get("error") if isinstance(data, dict) else data
                raise PredictError(str(message), data)
    raise PredictError(f"the event stream of {event_id} ended without a result")
