"""Every declared limit, tested at its edge: one step inside is accepted, one step outside is refused with its
message, at the level that owns the check.

`EDGE_TESTS` maps each limit declared in code to the tests that probe it; `test_every_declared_limit_is_tested`
scans the modules that declare limits, so a new limit without an edge test fails the suite.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from pipeline.errors import Refused

ROOT = Path(__file__).resolve().parents[1]

# Modules whose module-level UPPER_CASE constants named like a limit are limits a client can reach.
LIMIT_MODULES = (
    "demo/server.py",
    "demo/api.py",
    "pipeline/serving/oip.py",
    "pipeline/serving/oip_protocol.py",
    "pipeline/serving/answers.py",
    "pipeline/serving/naming.py",
    "pipeline/runtime/inputs.py",
    "pipeline/runtime/values.py",
    "pipeline/artifacts/weights.py",
)
LIMIT_WORDS = ("MAX", "MIN", "LIMIT", "TTL", "TIMEOUT", "BUDGET", "KEEP_ALIVE", "CAP")
# (module, constant): the tests (file::function) that take it just inside and just outside.
EDGE_TESTS: dict[tuple[str, str], tuple[str, ...]] = {
    ("demo/server.py", "MAX_REQUEST_BYTES"): ("test_limits.py::test_a_request_body_at_its_route_limit",),
    ("demo/server.py", "BODY_LIMITS"): ("test_limits.py::test_a_request_body_at_its_route_limit",),
    ("pipeline/serving/oip.py", "MAX_BODY_BYTES"): ("test_limits.py::test_a_request_body_at_its_route_limit",),
    ("demo/server.py", "MAX_BODIES_BYTES"): ("test_limits.py::test_the_bytes_held_at_once_at_their_budget",),
    ("demo/server.py", "BODY_TIMEOUT_S"): ("test_limits.py::test_a_body_within_and_past_its_deadline",),
    ("demo/server.py", "HEADER_TIMEOUT_S"): ("test_robustness_app.py::test_slow_headers_and_slow_bodies_are_cut_off",),
    ("demo/server.py", "KEEP_ALIVE_S"): ("test_limits.py::test_the_server_settings_are_the_declared_limits",),
    ("demo/server.py", "MAX_HEADER_BYTES"): (
        "test_robustness_app.py::test_headers_at_their_limit_on_the_running_demo",
    ),
    ("demo/server.py", "MAX_CONNECTIONS"): ("test_limits.py::test_the_server_settings_are_the_declared_limits",),
    ("demo/server.py", "MAX_SESSIONS"): ("test_limits.py::test_sessions_at_their_cap",),
    ("demo/server.py", "MAX_QUEUED"): ("test_limits.py::test_the_server_settings_are_the_declared_limits",),
    ("demo/server.py", "MAX_UNREAD_SESSIONS"): ("test_limits.py::test_unread_sessions_at_their_cap",),
    ("demo/api.py", "MAX_UNREAD"): ("test_limits.py::test_unread_results_at_their_cap",),
    ("demo/api.py", "RESULT_TTL_S"): ("test_limits.py::test_a_result_at_its_time_to_live",),
    ("pipeline/serving/naming.py", "MAX_BATCH_SIZE"): ("test_limits.py::test_a_batch_at_the_largest_size",),
    ("pipeline/serving/oip_protocol.py", "MAX_NESTING"): ("test_limits.py::test_nested_data_at_its_depth_limit",),
    ("pipeline/runtime/values.py", "FLOAT32_MAX"): ("test_limits.py::test_values_at_the_edges_of_their_range",),
    ("pipeline/artifacts/weights.py", "STATE_SLACK_BYTES"): ("test_weights.py::test_an_archive_at_its_size_budget",),
    ("pipeline/serving/answers.py", "TRUTH_MAX_CHARS"): (
        "test_limits.py::test_a_truth_expression_at_its_length_limit",
    ),
    ("pipeline/runtime/inputs.py", "MAX_TEXT_CHARS"): ("test_limits.py::test_typed_text_at_its_length_limit",),
    ("demo/server.py", "MAX_PICTURE_SIDE"): ("test_pictures.py::test_a_picture_at_the_side_limit",),
    ("demo/server.py", "MAX_PICTURE_LAYERS"): ("test_pictures.py::test_layers_at_their_limit",),
    ("demo/server.py", "MAX_PICTURE_BYTES"): ("test_pictures.py::test_a_picture_file_at_its_byte_limit",),
    ("demo/server.py", "MAX_UPLOADS"): ("test_pictures.py::test_uploads_at_their_count_and_byte_caps",),
    ("demo/server.py", "MAX_UPLOAD_BYTES"): ("test_pictures.py::test_uploads_at_their_count_and_byte_caps",),
    ("demo/server.py", "UPLOAD_TTL_S"): ("test_pictures.py::test_an_upload_at_its_time_to_live",),
    ("demo/server.py", "MAX_DECODE_PIXELS"): ("test_pictures.py::test_pils_bomb_limit_is_lowered_to_the_declared_one",),
}
# Named like limits, but not limits on what a client sends (each says why).
NOT_LIMITS = {
    ("demo/server.py", "TRIM_AFTER_BYTES"): "when freed heap pages go back to the system, no refusal",
    ("pipeline/serving/oip.py", "SMALL_BODY_BYTES"): "which thread parses a body, no refusal",
    ("pipeline/serving/oip_protocol.py", "JSON_BYTES_PER_VALUE"): "arithmetic behind max_batch_size",
}


def declared_limits() -> set[tuple[str, str]]:
    found = set()
    for rel in LIMIT_MODULES:
        path = ROOT / rel
        if not path.exists():
            continue
        for node in ast.parse(path.read_text()).body:
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AnnAssign)
                else []
            )
            for target in targets:
                name = getattr(target, "id", "")
                if name.isupper() and any(word in name for word in LIMIT_WORDS) or name.endswith("_BYTES"):
                    found.add((rel, name))
    return found


def test_every_declared_limit_is_tested() -> None:
    untested = sorted(declared_limits() - set(EDGE_TESTS) - set(NOT_LIMITS))
    assert not untested, f"limits with no edge test in EDGE_TESTS: {untested}"
    defined = {}
    for path in ROOT.joinpath("tests").glob("test_*.py"):
        tree = ast.parse(path.read_text())
        defined[path.name] = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    missing = [
        t for tests in EDGE_TESTS.values() for t in tests if t.split("::")[1] not in defined.get(t.split("::")[0], ())
    ]
    assert not missing, f"EDGE_TESTS names tests that do not exist: {missing}"
    stale = [key for key in EDGE_TESTS if key not in declared_limits()]
    assert not stale, f"EDGE_TESTS names limits that are no longer declared: {stale}"


def test_the_registry_scan_finds_a_new_limit(tmp_path, monkeypatch) -> None:
    """The scan above is not vacuous: a module that declares a new MAX_ constant shows up."""
    fake = tmp_path / "demo" / "server.py"
    fake.parent.mkdir()
    fake.write_text("MAX_WIDGETS = 3\nOTHER = 1\nUPLOAD_BYTES = 5\n")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    assert declared_limits() == {("demo/server.py", "MAX_WIDGETS"), ("demo/server.py", "UPLOAD_BYTES")}


# ---- request bodies: the middleware that owns them, in process ------------------------------------------


def _limited_app(**kwargs):
    from demo.server import RequestLimits

    seen = []

    async def app(scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen.append(len(body))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    return RequestLimits(app, post_routes=frozenset({"/gradio_api/call/predict"}), **kwargs), seen


def _post(app, path: str, body: bytes, *, chunked: bool = False) -> httpx.Response:
    async def go() -> httpx.Response:
        async def chunks():
            for i in range(0, len(body), 65536):
                yield body[i : i + 65536]

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post(path, content=chunks() if chunked else body)

    return asyncio.run(go())


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(
    ("path", "module", "name", "key"),
    [
        ("/gradio_api/call/predict", "demo.server", "MAX_REQUEST_BYTES", "detail"),
        ("/v2/models/m/infer", "pipeline.serving.oip", "MAX_BODY_BYTES", "error"),
    ],
)
def test_a_request_body_at_its_route_limit(path, module, name, key, chunked) -> None:
    limit = getattr(importlib.import_module(module), name)
    app, seen = _limited_app()
    assert _post(app, path, b"x" * limit, chunked=chunked).status_code == 200
    assert seen == [limit]
    over = _post(app, path, b"x" * (limit + 1), chunked=chunked)
    assert over.status_code == 413
    assert over.json() == {key: f"request body over the limit of {limit:,} bytes"}
    assert seen == [limit]  # the route never saw the refused body


def test_the_bytes_held_at_once_at_their_budget() -> None:
    import inspect

    from demo.server import MAX_BODIES_BYTES, RequestLimits

    assert inspect.signature(RequestLimits).parameters["budget"].default == MAX_BODIES_BYTES
    app, seen = _limited_app(budget=1000)
    app.held = 400  # another request's 400 bytes are held
    assert _post(app, "/gradio_api/call/predict", b"x" * 600).status_code == 200  # 400 + 600 = the budget
    app.held = 401
    busy = _post(app, "/gradio_api/call/predict", b"x" * 600)
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
    assert "busy" in busy.json()["detail"]
    assert seen == [600]


def test_a_body_within_and_past_its_deadline() -> None:
    import inspect

    from demo.server import BODY_TIMEOUT_S, RequestLimits

    assert inspect.signature(RequestLimits).parameters["body_timeout"].default == BODY_TIMEOUT_S
    app, seen = _limited_app(body_timeout=2.0)

    async def send_slowly(pause: float) -> httpx.Response:
        async def chunks():
            yield b"a"
            await asyncio.sleep(pause)
            yield b"b"

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/gradio_api/call/predict", content=chunks())

    assert asyncio.run(send_slowly(0.0)).status_code == 200
    late = asyncio.run(send_slowly(3.0))
    assert late.status_code == 408
    assert late.json() == {"detail": "the request body did not arrive within 2 s"}
    assert seen == [2]


# ---- results waiting to be read: the routes that keep them ------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _routes(monkeypatch):
    from demo import api

    clock = _Clock()
    monkeypatch.setattr(api.time, "monotonic", clock)

    class NoService:
        predict = compare = staticmethod(lambda *a: None)

    return api.ApiRoutes(NoService()), clock


def _read(routes, event_id: str) -> int:
    return asyncio.run(routes.result(event_id)).status_code


def test_unread_results_at_their_cap(monkeypatch) -> None:
    from demo.api import MAX_UNREAD

    routes, _ = _routes(monkeypatch)
    ids = [routes.keep("complete", [i]) for i in range(MAX_UNREAD)]
    assert len(routes.unread) == MAX_UNREAD and ids[0] in routes.unread  # at the cap, nothing dropped
    newest = routes.keep("complete", ["one more"])
    assert len(routes.unread) == MAX_UNREAD  # one over: the oldest goes
    assert _read(routes, ids[0]) == 404
    assert _read(routes, ids[1]) == 200 and _read(routes, newest) == 200


def test_a_result_at_its_time_to_live(monkeypatch) -> None:
    from demo.api import RESULT_TTL_S

    routes, clock = _routes(monkeypatch)
    first, second = routes.keep("complete", [1]), routes.keep("complete", [2])
    clock.now += RESULT_TTL_S  # exactly its time to live: still there
    assert _read(routes, first) == 200
    clock.now += 0.001
    gone = asyncio.run(routes.result(second))
    assert gone.status_code == 404 and "expired" in json.loads(gone.body)["detail"]


def test_unread_sessions_at_their_cap() -> None:
    from demo.gradio_calls import forget_unread_sessions
    from demo.server import MAX_UNREAD_SESSIONS

    class Queue:
        def __init__(self, sessions: int) -> None:
            self.pending_event_ids_session = {f"s{i}": {f"e{i}"} for i in range(sessions)}
            self.pending_messages_per_session = {"s0": []}  # Gradio still holds results for s0 only

    class Page:
        def __init__(self, sessions: int) -> None:
            self._queue = Queue(sessions)

    at = Page(MAX_UNREAD_SESSIONS)
    forget_unread_sessions(at, MAX_UNREAD_SESSIONS)
    assert len(at._queue.pending_event_ids_session) == MAX_UNREAD_SESSIONS  # at the cap: all kept
    over = Page(MAX_UNREAD_SESSIONS + 1)
    forget_unread_sessions(over, MAX_UNREAD_SESSIONS)
    assert list(over._queue.pending_event_ids_session) == ["s0"]  # past it: those without results dropped


# ---- what one request may hold: the protocol and the parsers ----------------------------------------------


def test_a_batch_at_the_largest_size() -> None:
    from pipeline.serving import oip_protocol as protocol
    from pipeline.serving.naming import MAX_BATCH_SIZE

    assert protocol.max_batch_size(1, 10**12) == MAX_BATCH_SIZE  # however large the body, the cap holds
    spec = {"name": "x", "shape": ["batch", 2], "dtype": "float32"}
    tensor = {"shape": [MAX_BATCH_SIZE, 2]}
    assert protocol._shape(tensor, "input x", spec, MAX_BATCH_SIZE, "m") == [MAX_BATCH_SIZE, 2]
    with pytest.raises(Refused) as refused:
        protocol._shape({"shape": [MAX_BATCH_SIZE + 1, 2]}, "input x", spec, MAX_BATCH_SIZE, "m")
    assert refused.value.status == 400
    assert f"batch from 1 to {MAX_BATCH_SIZE}" in refused.value.message


def test_nested_data_at_its_depth_limit() -> None:
    from pipeline.serving import oip_protocol as protocol

    def nested(depth: int):
        data = [1.0]
        for _ in range(depth - 1):
            data = [data]
        return data

    # the outer array plus MAX_NESTING levels of lists inside it
    assert protocol._flat_numbers(nested(protocol.MAX_NESTING + 1), "x", "FP32") == [1.0]
    with pytest.raises(Refused) as refused:
        protocol._flat_numbers(nested(protocol.MAX_NESTING + 2), "x", "FP32")
    assert refused.value.status == 400 and "nested too deeply" in refused.value.message


def test_a_truth_expression_at_its_length_limit() -> None:
    from pipeline.serving.answers import TRUTH_MAX_CHARS, TruthError, truth_value

    expression = "x1 + x2" + " " * (TRUTH_MAX_CHARS - len("x1 + x2"))
    assert len(expression) == TRUTH_MAX_CHARS
    assert truth_value(expression, ["x1", "x2"], [10, 11]) == 21
    with pytest.raises(TruthError, match=f"at most {TRUTH_MAX_CHARS} characters"):
        truth_value(expression + " ", ["x1", "x2"], [10, 11])


def test_typed_text_at_its_length_limit() -> None:
    from pipeline.runtime.inputs import MAX_TEXT_CHARS, InputError, parse_features

    text = "10, 11" + " " * (MAX_TEXT_CHARS - len("10, 11"))
    assert parse_features(text, "adder", ["x1", "x2"]) == [10.0, 11.0]
    with pytest.raises(InputError, match=f"more than the {MAX_TEXT_CHARS:,} accepted"):
        parse_features(text + " ", "adder", ["x1", "x2"])


# ---- value ranges: the predictor owns them for every route, the protocol for its JSON ----------------------


def _predictor(inputs, calls, features=()):
    from pipeline.runtime.predictor import Predictor

    def run_batch(batch):
        calls.append(batch)
        first = batch if not isinstance(batch, dict) else next(iter(batch.values()))
        return [np.zeros((len(first), 1), dtype=np.float32)]

    return Predictor(
        model="m",
        format="onnx",
        runtime="onnxruntime",
        device="cpu",
        features=list(features),
        output_names=["y"],
        run_batch=run_batch,
        declared=["y"],
        inputs=inputs,
    )


def test_values_at_the_edges_of_their_range() -> None:
    from pipeline.runtime.inputs import InputError
    from pipeline.runtime.values import FLOAT32_MAX
    from pipeline.serving import oip_protocol as protocol

    calls: list = []
    ids = _predictor([{"name": "ids", "shape": ["batch", 3], "dtype": "int64", "values": [0, 100]}], calls)
    assert ids.predict([0, 99, 5])["y"].shape == (1,)  # the first and the last id in range reach the model
    for outside in ([0, 100, 5], [-1, 5, 5]):
        with pytest.raises(InputError, match=r"ids value \d is -?\d+, outside \[0, 100\)"):
            ids.predict(outside)
    assert len(calls) == 1  # the refused ones never reached the runtime

    flat = _predictor([{"name": "x", "shape": ["batch", 2], "dtype": "float32"}], calls, ["x1", "x2"])
    top = float(np.finfo(np.float32).max)
    assert flat.predict([top, -top])["y"].shape == (1,)
    with pytest.raises(InputError, match="beyond float32's range"):
        flat.predict([top * 1.0001, 0.0])

    spec = {"name": "x", "shape": [2], "dtype": "float32"}
    at = protocol._from_json({"data": [FLOAT32_MAX, 1.0]}, "input x", [1, 2], spec)
    assert at.dtype == np.float32 and np.isfinite(at).all()
    with pytest.raises(Refused, match="beyond float32's range"):
        protocol._from_json({"data": [FLOAT32_MAX * 1.0001, 1.0]}, "input x", [1, 2], spec)


# ---- what Gradio and uvicorn enforce for us: our settings, applied, and the cap taken at its edge ---------


def test_sessions_at_their_cap(tmp_path) -> None:
    from demo import server
    from demo.app import build_demo
    from pipeline.serving.service import Service

    svc = Service(tmp_path)  # no manifest: the page that says how to make one is enough here
    page = build_demo(svc)
    server.create_app(svc, page)
    holder = page.state_holder
    for i in range(server.MAX_SESSIONS):
        holder[f"s{i}"]
    assert all(f"s{i}" in holder for i in range(server.MAX_SESSIONS))  # at the cap: every session kept
    holder["s0"]  # used again: now the most recent
    holder["one more"]
    assert "s1" not in holder and "s0" in holder and "one more" in holder  # past it: the least recent goes
    assert len(holder.session_data) == server.MAX_SESSIONS


def test_the_server_settings_are_the_declared_limits(tmp_path, monkeypatch) -> None:
    """uvicorn enforces connections and keep-alive, Gradio its queue: with the values declared in demo/server.py."""
    import socket

    import uvicorn

    from demo import server
    from demo.app import build_demo
    from pipeline.serving.service import Service

    svc = Service(tmp_path)
    page = build_demo(svc)
    server.create_app(svc, page)
    assert page._queue.max_size == server.MAX_QUEUED
    seen = {}
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: seen.update(config=self.config))
    monkeypatch.setattr(server.signal, "signal", lambda *a: None)
    with socket.socket() as sock:
        server.serve(object(), sock)
    config = seen["config"]
    assert config.limit_concurrency == server.MAX_CONNECTIONS
    assert config.timeout_keep_alive == server.KEEP_ALIVE_S
    assert config.h11_max_incomplete_event_size == server.MAX_HEADER_BYTES


# ---- the limits a person reads: README's "Security and limits" table states the values the code declares ----

README_ROWS = {  # (module, constant): (the first words of its row in the README's table, how the row writes it)
    ("demo.server", "MAX_REQUEST_BYTES"): ("request body, page and predict routes", "{mib:g} MiB"),
    ("pipeline.serving.oip", "MAX_BODY_BYTES"): ("request body on `/v2`", "{mib:g} MiB"),
    ("demo.server", "MAX_BODIES_BYTES"): ("all request bodies held at once", "{mib:g} MiB"),
    ("demo.server", "MAX_HEADER_BYTES"): ("request line and headers", "{kib:g} KiB"),
    ("demo.server", "HEADER_TIMEOUT_S"): ("request line and headers", "within {value:g} s"),
    ("demo.server", "BODY_TIMEOUT_S"): ("the body, after the headers", "within {value:g} s"),
    ("demo.server", "KEEP_ALIVE_S"): ("an idle keep-alive connection", "{value:g} s"),
    ("demo.server", "MAX_CONNECTIONS"): ("connections and requests at once", "{value:,}"),
    ("demo.server", "MAX_SESSIONS"): ("Gradio sessions kept", "{value:,}"),
    ("demo.server", "MAX_QUEUED"): ("page events waiting in Gradio's queue", "{value:,}"),
    ("demo.api", "MAX_UNREAD"): ("`/call/predict` and `/call/compare` results not yet read", "{value:,}"),
    ("demo.api", "RESULT_TTL_S"): ("`/call/predict` and `/call/compare` results not yet read", "{minutes:g} minutes"),
    ("demo.server", "MAX_PICTURE_SIDE"): ("a picture", "{value}×{value} pixels"),
    ("demo.server", "MAX_PICTURE_BYTES"): ("a picture", "{kib:g} KiB"),
    ("demo.server", "MAX_PICTURE_LAYERS"): ("a picture", "{value} drawing layer"),
    ("demo.server", "MAX_UPLOADS"): ("uploads kept", "{value:,} files"),
    ("demo.server", "MAX_UPLOAD_BYTES"): ("uploads kept", "{mib:g} MiB"),
    ("demo.server", "UPLOAD_TTL_S"): ("uploads kept", "{minutes:g} minutes"),
}


def _readme_rows() -> list[str]:
    text = ROOT.joinpath("README.md").read_text()
    section = text[text.index("## Security and limits") :]
    return [line for line in section.splitlines() if line.startswith("| ")]


@pytest.mark.parametrize(("module", "name"), list(README_ROWS), ids=[n for _, n in README_ROWS])
def test_the_readme_states_each_limit_as_declared(module, name) -> None:
    value = getattr(importlib.import_module(module), name)
    label, form = README_ROWS[(module, name)]
    rendered = form.format(value=value, mib=value / 2**20, kib=value / 2**10, minutes=value / 60)
    rows = [row for row in _readme_rows() if row.removeprefix("| ").startswith(label)]
    assert len(rows) == 1, f"README's limits table has no single row starting {label!r}"
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert rendered in cells[1], f"{module}.{name} = {value!r}, but README's row says {cells[1]!r} (want {rendered!r})"
