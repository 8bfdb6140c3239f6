"""What the demo's server checks in a Gradio call before Gradio parses it, and the two places it bounds
Gradio's own queue. demo/server.py's RequestLimits applies these with the limits it declares.

A queue/join, cancel, reset or page /run body gets a session_hash and event_id of 1 to 64 letters, digits,
'-' or '_', an fn_index of one of the page's events, and 'data' a list of what that event's inputs take;
anything else is Refused (400) in one line, before Gradio would answer a 500 or keep it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import gradio as gr

from demo.api import SESSION_HASH
from pipeline.errors import Refused


def check_session(value: Any, where: str) -> None:
    if value is not None and not (isinstance(value, str) and SESSION_HASH.fullmatch(value)):
        shown = repr(value)
        shown = shown if len(shown) <= 24 else shown[:20] + "..."
        raise Refused(400, f"{where} is {shown}; expected 1 to 64 letters, digits, '-' or '_'")


def parse_call(body: bytes) -> dict:
    try:
        call = json.loads(body)
    except (ValueError, RecursionError):
        raise Refused(400, "the request body is not valid JSON; expected a JSON object") from None
    if not isinstance(call, dict):
        raise Refused(400, "the request body must be a JSON object")
    return call


def check_gradio_call(call: dict, fn_ids: frozenset[int] | dict[int, int], events: str = "event of this page") -> None:
    """Refused (400) for a queue/join, cancel, reset or page /run body that Gradio would fail on with a 500
    or keep too much of: a session_hash or event_id that is empty or long, an fn_index not in `fn_ids`,
    'data' that is not a list."""
    check_session(call.get("session_hash"), "session_hash")
    check_session(call.get("event_id"), "event_id")
    fn_index = call.get("fn_index")
    if fn_index is not None and (type(fn_index) is not int or fn_index not in fn_ids):
        raise Refused(400, f"fn_index {str(fn_index)[:20]} names no {events}")
    if "data" in call and not isinstance(call["data"], list):
        raise Refused(400, "'data' must be a list of the event's inputs")


def holds_file(value: Any) -> bool:
    """Whether a JSON value holds, at any depth, an object Gradio would take for a file (it has a path, url or meta)."""
    stack = [value]
    while stack:  # iterative: the body's nesting is bounded by the JSON parser, not by this
        item = stack.pop()
        if isinstance(item, dict):
            if {"path", "url", "meta"} & set(item):
                return True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


Accepts = tuple[str, Callable[[Any], bool]]  # what an input takes, in words, and the test of a value


def accepts(component: Any) -> Accepts:
    """What the page's own front end sends for an input of an event that skips the queue: a value that
    Gradio's preprocessing takes without failing (and so without a 500 and a traceback)."""
    if isinstance(component, gr.State):
        return "anything (the session's state is used)", lambda value: True
    if isinstance(component, gr.Dropdown):
        choices = [value for _, value in component.choices]
        return f"one of {choices}", lambda value: isinstance(value, (str, int, float)) and value in choices
    if isinstance(component, gr.Dataset):
        count = len(component.samples or [])
        return f"an example's index, 0 to {count - 1}", lambda value: type(value) is int and 0 <= value < count
    return "a number, text or null", lambda value: value is None or isinstance(value, (str, int, float))


def page_event(path: str, body: bytes, skip_queue: dict[int, tuple[Accepts, ...]]) -> bool:
    """Whether a POST to /gradio_api/run/... is one of the page's events that skip the queue (it names an
    fn_index); Refused (400) when that fn_index is not such an event or its data is not what its inputs take."""
    if not path.startswith("/gradio_api/run/") or b'"fn_index"' not in body:
        return False
    try:
        call = parse_call(body)
    except Refused:
        return False  # the API route answers it
    if call.get("fn_index") is None:
        return False
    check_gradio_call(call, skip_queue, "event of this page that skips the queue")
    inputs, data = skip_queue[call["fn_index"]], call.get("data") or []
    if len(data) != len(inputs):
        raise Refused(400, f"'data' holds {len(data)} values; event {call['fn_index']} takes {len(inputs)}")
    for position, (value, (takes, test)) in enumerate(zip(data, inputs, strict=True)):
        if not test(value):
            raise Refused(400, f"input {position + 1} of event {call['fn_index']} must be {takes}"[:300])
    return True


def forget_unread_sessions(page: gr.Blocks, keep: int) -> None:
    """Gradio keeps the results of at most 2,000 sessions nobody reads (an LRU), but the ids of their events
    for ever (about 0.5 KB a session): past `keep` sessions, drop the ids of those whose results it dropped.

    The one place the demo reads Gradio's private state (the page's `_queue` and two of its dicts): Gradio
    (5.x) has no public way to bound them. Read defensively: if they change, nothing is dropped."""
    queue = getattr(page, "_queue", None)
    event_ids = getattr(queue, "pending_event_ids_session", None)
    results = getattr(queue, "pending_messages_per_session", None)
    if not isinstance(event_ids, dict) or results is None or len(event_ids) <= keep:
        return
    for session in [s for s in event_ids if s not in results]:
        event_ids.pop(session, None)


def quiet_queue(page: gr.Blocks, poll_s: float) -> None:
    """Gradio's queue polls for work every millisecond while idle: a thousand timer wake-ups a second on the
    event loop that serves every request (a few percent of a core, and jitter in /v2 latencies). Every
    `poll_s` instead; Gradio's internals, so set only where they are as expected."""
    queue = getattr(page, "_queue", None)
    for name in ("sleep_when_free", "progress_update_sleep_when_free"):
        if isinstance(getattr(queue, name, None), float):
            setattr(queue, name, max(getattr(queue, name), poll_s))
