"""Hostile and careless clients against the running demo, over HTTP on loopback: malformed input,
hostile names and paths, damaged artifacts, load, and what the server exposes.

One demo process serves the whole module, started as a person would (no --host) and with Gradio's own
exposure switches set in its environment (GRADIO_SHARE, GRADIO_SERVER_NAME=0.0.0.0), which it must
ignore. Its artifacts are a copy in which `linear_3x` is damaged three ways (a truncated ONNX file, a
random .pt2 with its sha256 re-recorded, a state_dict carrying a pickle payload with its sha256
re-recorded); the seven other models serve the load test.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline import formats
from pipeline.artifacts.manifest import MANIFEST, Manifest
from pipeline.runtime.comparison import compare
from pipeline.runtime.inputs import MAX_TEXT_CHARS
from pipeline.runtime.predictor import load_predictor

from .conftest import rerecord
from .demo_server import APP, ROOT, PredictError, call_predict, free_port

pytestmark = pytest.mark.robustness

DAMAGED = "linear_3x"
UNEXPECTED = "failed unexpectedly"  # the demo's message for an exception that is not the caller's fault
SECRET_MARKERS = [b"root:x:0:0", b"class RequestLimits", b"def build_demo", b"def load_predictor"]
ATOL, RTOL = 1e-5, 1e-4  # the parity tolerances


class Demo:
    def __init__(
        self, url: str, proc: subprocess.Popen, lines: list[str], artifacts: Path, marker: Path, damaged: dict[str, str]
    ) -> None:
        self.url, self.proc, self.lines, self.artifacts = url, proc, lines, artifacts
        self.marker, self.damaged = marker, damaged  # the payload's marker file; format -> damaged file

    @property
    def process(self) -> psutil.Process:
        return psutil.Process(self.proc.pid)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('payload ran')",))


def _damage(root: Path, marker: Path) -> dict[str, str]:
    """Damage DAMAGED's onnx, pt2 and state_dict; returns format -> the manifest path of each."""
    paths = {a["format"]: a["path"] for a in json.loads((root / MANIFEST).read_text())["models"][DAMAGED]["artifacts"]}
    onnx = root / paths["onnx"]
    onnx.write_bytes(onnx.read_bytes()[: onnx.stat().st_size // 2])  # sha256 left stale
    (root / paths["pt2"]).write_bytes(random.Random(6).randbytes(4096))
    rerecord(root, paths["pt2"])
    torch.save({"linear.weight": _Payload(marker), "linear.bias": torch.zeros(1)}, root / paths["state_dict"])
    rerecord(root, paths["state_dict"])
    return {"onnx": paths["onnx"], "pt2": paths["pt2"], "eager": paths["state_dict"]}


def _launch(artifacts: Path, port: int, env: dict[str, str]) -> tuple[subprocess.Popen, list[str]]:
    """`python demo/app.py` on `artifacts`, its output collected line by line, once it says it is serving."""
    proc = subprocess.Popen(
        [sys.executable, str(APP), "--artifacts", str(artifacts), "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    deadline = time.monotonic() + 120
    while not any(line.startswith("demo: serving") for line in lines):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("".join(lines))
        time.sleep(0.1)
    return proc, lines


@pytest.fixture(scope="module")
def damaged_demo(artifacts, tmp_path_factory):
    root = tmp_path_factory.mktemp("robust-demo") / "artifacts"
    shutil.copytree(artifacts, root)
    marker = root.parent / "payload-ran"
    damaged = _damage(root, marker)
    port = free_port()
    env = {
        **os.environ,
        "GRADIO_ANALYTICS_ENABLED": "False",
        "PYTHONUNBUFFERED": "1",
        "GRADIO_SHARE": "True",
        "GRADIO_SERVER_NAME": "0.0.0.0",
    }  # must change nothing
    proc, lines = _launch(root, port, env)
    try:
        yield Demo(f"http://127.0.0.1:{port}", proc, lines, root, marker, damaged)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _raw_get(url: str, path: str) -> tuple[int, bytes]:
    """GET `path` exactly as written (no client-side normalisation of ../ or %2e)."""
    parts = urllib.parse.urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=15) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode("latin-1"))
        data = b""
        while chunk := sock.recv(1 << 16):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _assert_refused_cleanly(exc: PredictError) -> None:
    message = str(exc)
    assert UNEXPECTED not in message, message  # an InputError-style refusal, not a crash
    assert len(message.splitlines()) == 1 and len(message) <= 500, message


# ---- exposure -------------------------------------------------------------------------------------


def test_listens_on_loopback_only_prints_where_and_shares_nothing(damaged_demo):
    served = [line.strip() for line in damaged_demo.lines if line.startswith("demo: serving")]
    assert served == [f"demo: serving {damaged_demo.artifacts} on {damaged_demo.url}/"]
    call_predict(damaged_demo.url, "adder_mynet", "onnx", "cpu", "1 2")  # some traffic first
    connections = damaged_demo.process.net_connections(kind="inet")
    listening = [c for c in connections if c.status == psutil.CONN_LISTEN]
    assert listening and {c.laddr.ip for c in listening} == {"127.0.0.1"}, listening
    remote = {c.raddr.ip for c in connections if c.raddr}
    assert remote <= {"127.0.0.1"}, f"connections to other hosts: {remote}"
    output = "".join(damaged_demo.lines)
    assert "gradio.live" not in output and "share" not in output.lower(), output
    # and no other address of this machine reaches the port
    addresses = {a.address for addrs in psutil.net_if_addrs().values() for a in addrs if a.family == socket.AF_INET}
    port = int(damaged_demo.url.rsplit(":", 1)[1])
    for address in addresses - {"127.0.0.1"}:
        with pytest.raises(OSError):
            socket.create_connection((address, port), timeout=2).close()


def test_host_default_is_loopback_and_only_host_changes_it(monkeypatch):
    sys.path.insert(0, str(ROOT))
    from demo import app

    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    assert app.parse_args([]).host == "127.0.0.1"
    assert app.parse_args(["--host", "0.0.0.0"]).host == "0.0.0.0"
    for source in (APP, APP.parent / "server.py"):
        assert "share=True" not in source.read_text() and ".launch(" not in source.read_text()


# ---- input over HTTP ------------------------------------------------------------------------------

texts = st.one_of(
    st.text(max_size=60),
    st.lists(
        st.sampled_from(
            [
                "1",
                "-2.5",
                "1e3",
                "nan",
                "inf",
                "-Infinity",
                "1e39",
                ",",
                ";",
                " ",
                "\n",
                "[",
                "]",
                "0x1",
                "١",
                "1_0",
                "\u00a0",
                "3e38",
            ]
        ),
        max_size=8,
    ).map("".join),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=3).map(json.dumps),
)
features_values = st.one_of(
    texts,
    st.lists(
        st.one_of(
            st.floats(allow_nan=False, allow_infinity=False),
            st.integers(-(10**30), 10**30),
            st.text(max_size=5),
            st.none(),
            st.booleans(),
        ),
        max_size=3,
    ),
    st.none(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),  # NaN and infinity are not JSON: sent raw further down
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(features=features_values, fmt=st.sampled_from(["onnx", "torchscript"]))
@example(features="3e38 3e38", fmt="onnx")  # finite input, output overflows float32
@example(features="[" + "9" * 5000 + "]", fmt="onnx")
@example(features="[" * 50_000, fmt="onnx")
@example(features=[1e300, 1], fmt="onnx")
def test_http_predict_answers_or_refuses_in_one_line(damaged_demo, features, fmt):
    try:
        result = call_predict(damaged_demo.url, "adder_mynet", fmt, "cpu", features, timeout=30)
    except PredictError as exc:
        _assert_refused_cleanly(exc)
        return
    assert set(result["outputs"]) == {"sum", "hidden"}
    assert all(np.isfinite(result["outputs"]["sum"]))


@pytest.mark.parametrize("features", ["[NaN, 1]", "[Infinity, 1]", "[-Infinity, 1]", "[1e400, 1]", '"1 2"]}{'])
def test_http_predict_refuses_non_json_numbers(damaged_demo, features):
    """Tokens a strict JSON encoder never writes, sent raw: a 4xx or a clean refusal, never a crash."""
    url = damaged_demo.url + "/gradio_api/call/predict"
    body = '{"data": ["adder_mynet", "onnx", "cpu", ' + features + "]}"
    answer = httpx.post(url, content=body.encode(), headers={"content-type": "application/json"}, timeout=30)
    if answer.status_code != 200:
        assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:300])
        return
    event_id = answer.json()["event_id"]
    stream = httpx.get(f"{url}/{event_id}", timeout=30).text
    assert "event: error" in stream and UNEXPECTED not in stream, stream[:500]


@pytest.mark.parametrize("written", ["1_0", "\u0661\u0660", "\uff11\uff10"])
def test_gradio_routes_read_only_ascii_numbers(damaged_demo, written):
    """'1_0', Arabic-Indic and fullwidth digits are what Python's float() reads as 10; the demo refuses them."""
    for features in (f"{written} 1", [written, "1"]):
        with pytest.raises(PredictError, match="not a number") as info:
            call_predict(damaged_demo.url, "adder_mynet", "onnx", "cpu", features)
        _assert_refused_cleanly(info.value)
        answer = httpx.post(
            damaged_demo.url + "/gradio_api/run/predict", json={"data": ["adder_mynet", "onnx", "cpu", features]}
        )
        assert answer.status_code == 400 and "not a number" in answer.json()["error"], answer.text[:300]


def test_oversized_requests_are_refused_before_parsing(damaged_demo):
    url = damaged_demo.url + "/gradio_api/call/predict"
    big = "1," * (5 * 1024 * 1024)  # 10 MB of text
    start = time.perf_counter()
    answer = httpx.post(url, json={"data": ["adder_mynet", "onnx", "cpu", big]}, timeout=60)
    assert answer.status_code == 413, answer.text[:300]  # the route would have queued it (200)
    assert "limit" in answer.json()["detail"]

    def chunks():  # no Content-Length: the limit is counted while the body streams in
        yield b'{"data": ["adder_mynet", "onnx", "cpu", "'
        for _ in range(10):
            yield b"1," * (512 * 1024)
        yield b'"]}'

    answer = httpx.post(url, content=chunks(), headers={"content-type": "application/json"}, timeout=60)
    assert answer.status_code == 413, answer.text[:300]
    assert time.perf_counter() - start < 30
    # Under the byte limit but over the parser's: refused with the parser's one line.
    with pytest.raises(PredictError, match=f"{MAX_TEXT_CHARS:,} accepted") as info:
        call_predict(damaged_demo.url, "adder_mynet", "onnx", "cpu", "1," * (MAX_TEXT_CHARS // 2 + 10))
    _assert_refused_cleanly(info.value)
    assert call_predict(damaged_demo.url, "adder_mynet", "onnx", "cpu", "1 2")["outputs"]["sum"]  # still serving


# ---- names and paths ------------------------------------------------------------------------------

HOSTILE = [
    "../../etc/passwd",
    "/etc/passwd",
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "manifest.json",
    "adder_mynet/state_dict.pt",
    "file:///etc/passwd",
    "adder_mynet\x00",
    "..\\..\\boot.ini",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_over_http_are_refused(damaged_demo, name):
    for model, fmt, device, expect in [
        (name, "onnx", "cpu", "unknown model"),
        ("adder_mynet", name, "cpu", "unknown format"),
        ("adder_mynet", "onnx", name, "unknown device"),
    ]:
        with pytest.raises(PredictError, match=expect) as info:
            call_predict(damaged_demo.url, model, fmt, device, "1 2")
        _assert_refused_cleanly(info.value)
    quoted = urllib.parse.quote(name, safe="")
    for path in (f"/v2/models/{quoted}", f"/v2/models/{quoted}/ready", f"/v2/models/{name}/config"):
        status, body = _raw_get(damaged_demo.url, path.replace("\x00", "%00"))
        assert status in (400, 404), (path, status, body[:200])
        assert not any(m in body for m in SECRET_MARKERS)


def test_gradio_file_routes_serve_nothing_outside_the_app(damaged_demo):
    listed = Manifest.load(damaged_demo.artifacts)
    state_dict = listed.root / listed.model("adder_mynet").artifact("state_dict").path
    secrets_ = {
        "/etc/passwd": b"root:x:0:0",
        str(damaged_demo.artifacts / MANIFEST): b'"sha256"',
        str(state_dict): state_dict.read_bytes()[:64],
        str(APP): b"def build_demo",
        str(APP.parent / "server.py"): b"class RequestLimits",
        str(ROOT / "pipeline" / "runtime.py"): b"def load_predictor",
    }
    paths = []
    for target in secrets_:
        rel_up = "../" * 12 + target.lstrip("/")
        paths += [
            f"/gradio_api/file={target}",
            f"/file={target}",
            f"/gradio_api/file={rel_up}",
            f"/gradio_api/file={urllib.parse.quote(target, safe='')}",
            f"/static/{rel_up}",
            f"/assets/{rel_up}",
            f"/static/{urllib.parse.quote(rel_up, safe='')}",
            f"/assets/{rel_up.replace('/', '%2f')}",
            f"/gradio_api/file={target.replace('/', '%2f')}",
            f"/{rel_up}",
            f"/gradio_api/{rel_up}",
            f"/gradio_api/proxy=file://{target}",
            f"/gradio_api/file=%2e%2e/{rel_up}",
        ]
    paths += ["/gradio_api/proxy=http://127.0.0.1:1/", "/gradio_api/file=" + str(Path(damaged_demo.artifacts).parent)]
    for path in paths:
        status, body = _raw_get(damaged_demo.url, path)
        leaked = [name for name, marker in secrets_.items() if marker in body]
        assert not leaked, f"GET {path} -> {status} served {leaked}"
        assert status in (400, 403, 404, 405, 422), (path, status, body[:200])


def test_uploads_are_refused_so_nothing_foreign_is_stored_or_served(damaged_demo):
    for route in ("/gradio_api/upload", "/gradio_api/upload/", "/upload"):
        answer = httpx.post(
            damaged_demo.url + route, files={"files": ("x.html", b"<script>alert(1)</script>")}, timeout=15
        )
        assert answer.status_code == 404, (route, answer.status_code, answer.text[:200])


# ---- damaged artifacts --------------------------------------------------------------------------


def test_damaged_artifacts_give_one_line_naming_the_file_and_the_rest_keeps_serving(damaged_demo, manifest):
    for fmt, rel in damaged_demo.damaged.items():
        for _ in range(2):  # and again: a failed load is not cached
            with pytest.raises(PredictError) as info:
                call_predict(damaged_demo.url, DAMAGED, fmt, "cpu", "2")
            _assert_refused_cleanly(info.value)
            assert rel in str(info.value), str(info.value)
    assert not damaged_demo.marker.exists(), "the pickle payload ran inside the demo"
    good = call_predict(damaged_demo.url, DAMAGED, "torchscript", "cpu", "2")["outputs"]["y"]
    assert good == pytest.approx(load_predictor(manifest, DAMAGED, "eager")([2.0])["y"].tolist(), rel=RTOL)
    want = load_predictor(manifest, "adder_mynet", "eager")([10, 11])["sum"]
    for fmt in manifest.model("adder_mynet").served_formats():
        out = call_predict(damaged_demo.url, "adder_mynet", fmt, "cpu", "10 11")["outputs"]["sum"]
        spec = formats.get(fmt)
        assert compare(want, np.asarray(out), spec.tolerance).passed, (fmt, out, want)


# ---- load ------------------------------------------------------------------------------------------

CALLS, CLIENTS, MEMORY_SLACK = 2000, 16, 50 * 1024 * 1024


def test_load_2000_predicts_from_16_clients(damaged_demo, manifest):
    """Half the clients call as curl does (no session: Gradio makes one per call, the memory risk), half
    as gradio_client does (one session each); every answer is checked against the eager model."""
    models = [m for m in manifest.models if m != DAMAGED]
    rng = np.random.default_rng(6)
    cases = []  # (model, fmt, features as sent, expected outputs)
    for model in models:
        entry = manifest.model(model)
        eager = load_predictor(manifest, model, "eager")
        for i in range(3):
            random_row = rng.uniform(-5, 5, len(entry.features)).astype(np.float32)
            values = [float(v) for v in (np.float32(entry.examples[0]) if i == 0 else random_row)]
            sent = json.dumps(values) if i == 2 else ", ".join(f"{v:.9g}" for v in values)
            want = {k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in eager(values).items()}
            for fmt in entry.served_formats():
                # a derived format's rule is declared for the parity inputs; uniform(-5, 5) rows are beyond
                # them (poly3_sin's x**3 in float16), so those take the catalog example only
                if i == 0 or fmt not in formats.DERIVED:
                    cases.append((model, fmt, sent, want))

    def run(args: tuple[int, list]) -> list[str]:
        index, jobs = args
        session = f"robustness-load-{index}" if index % 2 else None
        errors = []
        with httpx.Client(timeout=60) as client:
            for model, fmt, sent, want in jobs:
                try:
                    if session:
                        got = call_predict(damaged_demo.url, model, fmt, "cpu", sent, client=client, session=session)[
                            "outputs"
                        ]
                    else:
                        got = call_predict(damaged_demo.url, model, fmt, "cpu", sent, client=client)["outputs"]
                    spec = formats.get(fmt)  # each format within its own parity rule
                    for name, value in want.items():
                        check = compare(value, np.asarray(got[name]), spec.tolerance)
                        assert check.passed, check.reason
                except Exception as exc:  # noqa: BLE001 - every failure is counted and shown
                    errors.append(f"{model} {fmt}: {type(exc).__name__}: {str(exc)[:200]}")
        return errors

    def spread(n: int) -> list[tuple[int, list]]:
        jobs = [cases[i % len(cases)] for i in range(n)]
        random.Random(n).shuffle(jobs)
        return [(k, jobs[k::CLIENTS]) for k in range(CLIENTS)]

    with ThreadPoolExecutor(CLIENTS) as pool:
        warm = [e for errs in pool.map(run, spread(len(cases) * 2)) for e in errs]  # every case, twice
        assert not warm, warm[:5]
        rss_warm = damaged_demo.process.memory_info().rss
        start = time.perf_counter()
        errors = [e for errs in pool.map(run, spread(CALLS)) for e in errs]
        seconds = time.perf_counter() - start
    rss_after = damaged_demo.process.memory_info().rss
    print(
        f"\n{CALLS} predicts from {CLIENTS} clients over {len(cases)} (model, format, input) cases in "
        f"{seconds:.1f} s ({CALLS / seconds:.0f}/s); RSS {rss_warm / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB"
    )
    assert not errors, f"{len(errors)} errors: {errors[:5]}"
    assert rss_after - rss_warm < MEMORY_SLACK, (rss_warm, rss_after)
    assert damaged_demo.proc.poll() is None


# ---- hostile clients: stalls, memory, status codes, files, slow clients --------------------------

MiB = 2**20
BODY = 16 * MiB  # the /v2 body limit
HOSTILE_BODIES = {  # what, body: each refused by the JSON budget before anything is parsed
    "millions of empty lists": lambda head: head + b"[]," * ((BODY - 200) // 3) + b"[]]}]}",
    "millions of numbers": lambda head: head + b"1," * ((BODY - 200) // 2) + b"1]}]}",
    "lists nested millions deep": lambda head: head + b"[" * ((BODY - 200) // 2) + b"]" * ((BODY - 200) // 2) + b"]}]}",
}
DURING_SLACK, AFTER_SLACK = 256 * MiB, 160 * MiB  # RSS over the warm baseline while in flight, and after


def _new_lines(demo: Demo, since: int) -> str:
    time.sleep(0.2)  # the log reader thread catches up
    return "".join(demo.lines[since:])


def test_hostile_v2_bodies_neither_stall_the_server_nor_grow_its_memory(damaged_demo):
    """Three 16 MiB bodies at once, for each kind: each refused before parsing, while /healthz and a
    predict on each API keep answering (how long they took is printed); RSS stays within a bound."""
    head = b'{"inputs":[{"name":"x","shape":[512,1000],"datatype":"FP32","data":['
    bodies = {what: make(head) for what, make in HOSTILE_BODIES.items()}
    small = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [10, 11]}]}
    infer = damaged_demo.url + "/v2/models/adder_mynet/infer"
    with httpx.Client(timeout=60) as client:
        honest = {
            "healthz": lambda: client.get(damaged_demo.url + "/healthz").json()["ok"],
            "/v2 predict": lambda: client.post(infer, json=small).json()["outputs"][0]["data"],
            "gradio predict": lambda: call_predict(
                damaged_demo.url, "adder_mynet", "onnx", "cpu", "1 2", client=client
            ),
        }
        for call in honest.values():
            call()
        base = damaged_demo.process.memory_info().rss
        peak, slowest, answers = base, dict.fromkeys(honest, 0.0), []
        for what, body in bodies.items():
            with ThreadPoolExecutor(3) as pool:
                url = damaged_demo.url + "/v2/models/two_layer_net/infer"
                hostile = [pool.submit(httpx.post, url, content=body, timeout=120) for _ in range(3)]
                while not all(f.done() for f in hostile):
                    for name, call in honest.items():
                        start = time.perf_counter()
                        assert call(), name
                        slowest[name] = max(slowest[name], time.perf_counter() - start)
                    peak = max(peak, damaged_demo.process.memory_info().rss)
                answers += [(what, f.result()) for f in hostile]
    after = damaged_demo.process.memory_info().rss
    print(
        f"\nthree 16 MiB hostile /v2 bodies x {len(bodies)}: slowest answers while in flight "
        + ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in slowest.items())
        + f"; RSS {base / MiB:.0f} MiB, peak {peak / MiB:.0f}, after {after / MiB:.0f}"
    )
    for what, answer in answers:
        assert answer.status_code == 400, (what, answer.status_code, answer.text[:200])
        assert "at most 512 rows" in answer.text or "takes at most 512 x 1000" in answer.text, answer.text
    assert peak - base < DURING_SLACK and after - base < AFTER_SLACK, (base, peak, after)


UNREAD_JOINS, UNREAD_CALLS, UNREAD_SLACK = 2000, 1000, 32 * MiB


def test_clients_that_never_read_their_results_keep_memory_flat(damaged_demo):
    """2,000 queue/join requests with 300 KB session hashes and 1,000 /call/predict results nobody reads."""
    big_session = "s" * 300_000
    join = {"data": ["two_layer_net", "onnx", "cpu", "1 " * 1000], "fn_index": 0}
    call = {"data": ["two_layer_net", "onnx", "cpu", "1 " * 1000]}
    with httpx.Client(timeout=60) as client:
        call_predict(damaged_demo.url, "two_layer_net", "onnx", "cpu", "1 " * 1000, client=client)
        base = damaged_demo.process.memory_info().rss
        joins = {
            client.post(
                damaged_demo.url + "/gradio_api/queue/join", json={**join, "session_hash": f"{big_session}{i}"}
            ).status_code
            for i in range(UNREAD_JOINS)
        }
        calls = {
            client.post(damaged_demo.url + "/gradio_api/call/predict", json=call).status_code
            for _ in range(UNREAD_CALLS)
        }
        grown = damaged_demo.process.memory_info().rss - base
        start = time.perf_counter()
        honest = call_predict(damaged_demo.url, "adder_mynet", "onnx", "cpu", "10 11", client=client)
        seconds = time.perf_counter() - start
    print(
        f"\n{UNREAD_JOINS} joins with 300 KB session hashes, {UNREAD_CALLS} unread calls: RSS +{grown / MiB:.1f} MiB; "
        f"an honest predict then took {seconds * 1000:.0f} ms"
    )
    assert joins == {400} and calls == {200}
    assert grown < UNREAD_SLACK, grown
    assert abs(honest["outputs"]["sum"][0] - 21) < 1.5


BAD_REQUESTS = [  # (method, path, JSON body or None, headers, words the one-line error holds)
    (
        "POST",
        "/v2/models/adder_mynet/infer",
        {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]},
        {"Inference-Header-Content-Length": "7" * 5000},
        ["Inference-Header-Content-Length"],
    ),
    (
        "POST",
        "/v2/models/adder_mynet/infer",
        {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]},
        {"Inference-Header-Content-Length": "²".encode()},
        ["Inference-Header-Content-Length"],
    ),
    (
        "POST",
        "/gradio_api/queue/join",
        {"data": ["adder_mynet", "onnx", "cpu", "1 2"], "fn_index": 0, "session_hash": ""},
        {},
        ["session_hash", "1 to 64"],
    ),
    ("POST", "/gradio_api/queue/join", {"data": [], "fn_index": 999, "session_hash": "abc"}, {}, ["fn_index 999"]),
    ("POST", "/gradio_api/queue/join", {"data": [], "fn_index": -1, "session_hash": "abc"}, {}, ["fn_index -1"]),
    ("POST", "/gradio_api/queue/join", {"data": [], "fn_index": "0", "session_hash": "abc"}, {}, ["fn_index 0"]),
    ("POST", "/gradio_api/call/nonexistent", {"data": []}, {}, ["not found"]),
    ("POST", "/gradio_api/run/nonexistent", {"data": []}, {}, ["not found"]),
    (
        "POST",
        "/gradio_api/run/predict",
        {"data": ["adder_mynet", "onnx", "cpu", "1 2 3"]},
        {},
        ["adder_mynet expects 2 numbers (x1, x2); got 3"],
    ),
    (
        "POST",
        "/gradio_api/run/predict",
        {"data": ["adder_mynet", "onnx", "cpu"]},
        {},
        ["'data' holds 3 values", "[model, format, device, features]"],
    ),
    ("POST", "/gradio_api/run/predict", {"data": ["nope", "onnx", "cpu", "1 2"]}, {}, ["unknown model 'nope'"]),
    ("POST", "/gradio_api/run/predict", {"data": ["adder_mynet", "tf", "cpu", "1 2"]}, {}, ["unknown format 'tf'"]),
    ("POST", "/gradio_api/run/predict", {"data": ["adder_mynet", "onnx", "tpu", "1 2"]}, {}, ["unknown device 'tpu'"]),
    (
        "POST",
        "/gradio_api/run/predict",
        {"data": ["adder_mynet", "onnx", "cpu", "3e38 3e38"]},
        {},
        ["float32 overflow"],
    ),
    (
        "POST",
        "/gradio_api/run/predict",
        {"data": ["adder_mynet", "onnx", "cpu", "1 2"], "fn_index": 9999},  # no event of the page
        {},
        ["fn_index 9999 names no"],
    ),
    ("POST", "/gradio_api/run/predict", {"nodata": 1}, {}, ["no 'data' list"]),
    ("POST", "/gradio_api/call/predict", {"data": ["adder_mynet", "onnx"]}, {}, ["'data' holds 2 values"]),
    (
        "POST",
        "/gradio_api/call/predict",
        {"data": ["adder_mynet", "onnx", "cpu", "1 2"], "session_hash": "x" * 65},
        {},
        ["session_hash"],
    ),
    ("GET", "/gradio_api/queue/data?session_hash=" + "x" * 300, None, {}, ["session_hash"]),
    ("GET", "/gradio_api/heartbeat/" + "x" * 300, None, {}, ["session_hash"]),
    ("GET", "/gradio_api/call/predict/0123456789abcdef", None, {}, ["no result for event_id"]),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "words"),
    BAD_REQUESTS,
    ids=[f"{r[0]} {r[1][:40]} {i}" for i, r in enumerate(BAD_REQUESTS)],
)
def test_bad_requests_are_4xx_with_one_line_and_no_traceback(damaged_demo, method, path, body, headers, words):
    since = len(damaged_demo.lines)
    content = None if body is None else json.dumps(body).encode()
    answer = httpx.request(
        method,
        damaged_demo.url + path,
        content=content,
        headers={"content-type": "application/json", **headers},
        timeout=30,
    )
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:300])
    error = answer.json()
    assert len(error) == 1 and isinstance(next(iter(error.values())), str), error
    message = next(iter(error.values()))
    assert "\n" not in message and len(message) <= 300, message
    for word in words:
        assert word in message, (word, message)
    assert "Traceback" not in _new_lines(damaged_demo, since)


def test_the_pages_own_events_on_run_take_only_what_the_page_sends(damaged_demo):
    """Every fn_index with hostile data on /gradio_api/run/predict (where the page's events that skip the
    queue go): a 4xx, or 200 for data the page itself could send; never a 500 or a traceback."""
    since, statuses = len(damaged_demo.lines), set()
    garbage = [[], ["adder_mynet"], ["nope", None], [0], [99], [-1], ["adder_mynet", {"a": 1}], [1, 2, 3]]
    with httpx.Client(timeout=30) as client:
        for fn_index in range(-1, 80):
            for data in garbage:
                body = {"data": data, "fn_index": fn_index, "session_hash": "robustness"}
                statuses.add(client.post(damaged_demo.url + "/gradio_api/run/predict", json=body).status_code)
    assert statuses <= {200, 400}, statuses
    assert "Traceback" not in _new_lines(damaged_demo, since)


FILE_ROUTES = [
    "/gradio_api/upload",
    "/gradio_api/process_recording",
    "/gradio_api/component_server",
    "/gradio_api/stream/x",
    "/gradio_api/vibe-edit",
    "/gradio_api/run-history/connect",
    "/gradio_api/call/v2/predict",
    "/upload",
]


def test_every_route_that_accepts_files_is_closed(damaged_demo):
    for route in FILE_ROUTES:
        video = {"video": ("x.mp4", b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64, "video/mp4")}
        answer = httpx.post(damaged_demo.url + route, files=video, timeout=15)
        assert answer.status_code == 404, (route, answer.status_code, answer.text[:200])


def test_the_app_serves_no_file_from_the_shared_gradio_folder_and_keeps_its_own_private(
    damaged_demo, artifacts, tmp_path
):
    import tempfile

    from .demo_server import running_demo

    shared = Path(tempfile.gettempdir()) / "gradio"
    shared.mkdir(exist_ok=True)
    planted = shared / f"planted-{os.getpid()}.txt"
    planted.write_text("planted secret")
    try:
        for path in (f"/gradio_api/file={planted}", f"/gradio_api/file={urllib.parse.quote(str(planted))}"):
            status, body = _raw_get(damaged_demo.url, path)
            assert status in (403, 404) and b"planted secret" not in body, (path, status, body[:200])
    finally:
        planted.unlink()
    # A demo's own temp folder: private while it runs, named without its process id (the upload route shows it),
    # gone after it stops. Folders of demos that were killed are removed when the next one starts; a live one's stay.
    import fcntl

    dead, legacy, alive = (tmp_path / f"seed-pipeline-gradio-{n}" for n in ("dead1234", "999999999-ab12", "live5678"))
    for folder in (dead, legacy, alive):
        folder.mkdir()
    (dead / ".owner.lock").touch()
    (alive / ".owner.lock").touch()
    held = os.open(alive / ".owner.lock", os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)  # as its running demo holds it
    env = {"GRADIO_TEMP_DIR": str(tmp_path)}
    try:
        with running_demo(artifacts, env=env) as url:
            pid = next(
                c.pid
                for c in psutil.net_connections("tcp")
                if c.laddr.port == int(url.rsplit(":", 1)[1]) and c.status == psutil.CONN_LISTEN
            )
            (own,) = set(tmp_path.glob("seed-pipeline-gradio-*")) - {alive}
            assert own.stat().st_mode & 0o777 == 0o700 and str(pid) not in own.name
            assert not dead.exists() and not legacy.exists() and alive.exists()
    finally:
        os.close(held)
    assert not own.exists()


def test_slow_headers_and_slow_bodies_are_cut_off(damaged_demo):
    from demo.server import BODY_TIMEOUT_S, HEADER_TIMEOUT_S

    parts = urllib.parse.urlsplit(damaged_demo.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=HEADER_TIMEOUT_S + 20) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        assert sock.recv(1024) == b""  # closed by the server
    with socket.create_connection((parts.hostname, parts.port), timeout=BODY_TIMEOUT_S + 20) as sock:
        sock.sendall(b"POST /v2/models/adder_mynet/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        answer = b""
        while chunk := sock.recv(4096):  # the server answers, then closes the connection
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within" in answer, answer


def _head_answer(url: str, filler: int) -> bytes:
    """A GET /healthz whose head holds `filler` bytes of one header, its last line sent only after the rest has
    arrived (so the server holds it incomplete, where its limit applies); the first bytes of the answer."""
    parts = urllib.parse.urlsplit(url)
    head = f"GET /healthz HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\nX-Pad: {'a' * filler}\r\n"
    with socket.create_connection((parts.hostname, parts.port), timeout=15) as sock:
        sock.sendall(head.encode("latin-1"))
        time.sleep(0.3)  # the server reads what came so far, with no end of headers in it
        with contextlib.suppress(OSError):
            sock.sendall(b"\r\n")
        data = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(1 << 16):
                data += chunk
    return data[:40]


def test_headers_at_their_limit_on_the_running_demo(damaged_demo):
    from demo.server import MAX_HEADER_BYTES

    url = damaged_demo.url
    overhead = len("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:65535\r\nConnection: close\r\nX-Pad: \r\n")
    assert _head_answer(url, MAX_HEADER_BYTES - overhead - 64).startswith(b"HTTP/1.1 200")
    refused = _head_answer(url, MAX_HEADER_BYTES + 64)
    assert not refused.startswith(b"HTTP/1.1 200"), refused  # 400, or the connection closed unanswered
    assert httpx.get(url + "/healthz", timeout=10).status_code == 200  # and the demo keeps serving


# ---- pictures: the digits example's image editor ------------------------------------------------------------------

PICTURE_SIDE, PICTURE_LAYERS, MAX_UPLOADS, MAX_UPLOAD_BYTES = 280, 1, 256, 32 * MiB  # as README "Security and limits"


class PictureDemo:
    def __init__(self, url: str, proc: subprocess.Popen, lines: list[str], temp: Path) -> None:
        self.url, self.proc, self.lines, self.temp = url, proc, lines, temp
        config = httpx.get(url + "/config", timeout=30).json()
        editor = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "digits_cnn-image")
        # the page's Predict and Compare events: the queued ones whose inputs hold the editor
        self.events = [
            i for i, d in enumerate(config["dependencies"]) if editor in d["inputs"] and d.get("queue", True)
        ]
        self.inputs = config["dependencies"][self.events[0]]["inputs"]  # model, format, device, every model's fields
        self.editor_at = self.inputs.index(editor)

    def data(self, value) -> list:
        """The Predict event's inputs with `value` as digits_cnn's picture."""
        data = ["digits_cnn", "onnx", "cpu"] + [None] * (len(self.inputs) - 3)
        data[self.editor_at] = value
        return data

    @property
    def folder(self) -> Path:
        """The demo's private Gradio temp folder (created inside `temp`)."""
        (own,) = self.temp.glob("seed-pipeline-gradio-*")
        return own

    def join(self, value, fn: int | None = None, timeout: float = 10) -> httpx.Response:
        body = {"data": self.data(value), "fn_index": self.events[0] if fn is None else fn, "session_hash": "pictures1"}
        return httpx.post(self.url + "/gradio_api/queue/join", json=body, timeout=timeout)

    def upload(self, data: bytes, name: str = "composite.png") -> httpx.Response:
        return httpx.post(self.url + "/gradio_api/upload", files={"files": (name, data, "image/png")}, timeout=30)

    def healthy(self) -> bool:
        return httpx.get(self.url + "/healthz", timeout=5).json()["ok"] is True


@pytest.fixture(scope="module")
def pictures(built, tmp_path_factory):
    """The demo on the worked examples' artifacts (digits_cnn takes a picture), its Gradio temp folder in a folder
    of this test's own, its output captured."""
    temp = tmp_path_factory.mktemp("picture-temp")
    port = free_port()
    env = {**os.environ, "GRADIO_TEMP_DIR": str(temp), "PYTHONUNBUFFERED": "1"}
    proc, lines = _launch(built, port, env)
    try:
        yield PictureDemo(f"http://127.0.0.1:{port}", proc, lines, temp)
    finally:
        proc.kill()  # SIGKILL: a demo stuck reading /dev/zero ignores SIGTERM
        proc.wait(timeout=15)


def _png(side: int = 64, mode: str = "L", fmt: str = "PNG", seed: int = 0) -> bytes:
    import io

    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (min(side, 64), min(side, 64)), dtype=np.uint8)
    image = (
        Image.fromarray(pixels).resize((side, side)).convert(mode) if side <= 1024 else Image.new(mode, (side, side))
    )
    out = io.BytesIO()
    image.save(out, format=fmt, **({"compression": "group4"} if fmt == "TIFF" else {}))
    return out.getvalue()


def _file(path: str, **extra) -> dict:
    return {"path": path, "meta": {"_type": "gradio.FileData"}, **extra}


def _editor(picture: dict | None, layers: list | None = None) -> dict:
    return {"background": picture, "layers": layers or [], "composite": picture}


def _one_line_4xx(answer: httpx.Response) -> str:
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:300])
    message = next(iter(answer.json().values()))
    assert isinstance(message, str) and "\n" not in message and len(message) <= 400, message
    return message


def test_a_picture_path_the_client_names_is_never_opened_and_health_keeps_answering(pictures):
    folder = pictures.folder
    inside = folder / "planted"
    inside.mkdir(exist_ok=True)
    (inside / "passwd").symlink_to("/etc/passwd")  # a symlink placed inside the temp folder
    (inside / "zero").symlink_to("/dev/zero")
    hostile = [
        "/etc/passwd",
        "/proc/self/environ",
        "/dev/zero",
        "/dev/urandom",
        str(folder / ".." / ".." / "etc" / "passwd"),
        str(inside / "passwd"),
        str(inside / "zero"),
        "file:///etc/passwd",
        "http://127.0.0.1:1/x.png",
        "/etc/passwd\x00.png",
        "/" + "a" * 100_000,
        "../../../../etc/passwd",
        str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"),  # a large file (hundreds of MB)
    ]
    with ThreadPoolExecutor(1) as pool:
        for path in hostile:
            # as the picture, as a layer, and as the 'url' of a picture (which Gradio's own check never looks at)
            for value in (_editor(_file(path)), _editor(None, [_file(path)]), _editor(_file("x.png", url=path))):
                pending = pool.submit(pictures.join, value)
                assert pictures.healthy()  # while that request is in flight
                message = _one_line_4xx(pending.result(timeout=15))  # at once: nothing read, nothing hashed
                assert "upload" in message or "picture" in message, message
                assert pictures.healthy()
    # Another input of the event, and the page's /run route, take no file either.
    answer = httpx.post(
        pictures.url + "/gradio_api/queue/join",
        json={
            "data": [_file("/etc/passwd"), *pictures.data(None)[1:]],
            "fn_index": pictures.events[0],
            "session_hash": "p2",
        },
        timeout=10,
    )
    assert "takes no file" in _one_line_4xx(answer)
    run = {"data": pictures.data(_editor(_file("/etc/passwd"))), "fn_index": pictures.events[0]}
    _one_line_4xx(httpx.post(pictures.url + "/gradio_api/run/predict", json=run, timeout=10))
    for route in ("call", "run"):  # the API takes numbers, never a file
        body = {"data": ["digits_cnn", "onnx", "cpu", {"image": _file("/etc/passwd")}]}
        answer = httpx.post(f"{pictures.url}/gradio_api/{route}/predict", json=body, timeout=10)
        assert b"root:x:0:0" not in answer.content
    copied = [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink() and b"root:x:0:0" in p.read_bytes()]
    assert not copied, copied
    status, body = _raw_get(pictures.url, f"/gradio_api/file={inside / 'passwd'}")
    assert b"root:x:0:0" not in body, status
    assert pictures.proc.poll() is None and pictures.healthy()


def test_a_decompression_bomb_is_refused_by_its_header_with_little_memory(pictures):
    import base64

    process = psutil.Process(pictures.proc.pid)
    before = process.memory_info().rss
    bombs = {
        "PNG": _png(6000, "1"),
        "GIF": _png(6000, "1", "GIF"),
        "TIFF": _png(6000, "1", "TIFF"),
        "PNG 12000": _png(12000, "1"),
    }
    assert len(bombs["PNG"]) < 64 * 1024  # about 11 KB for 36 M pixels
    for name, data in bombs.items():
        refusals = (f"at most {PICTURE_SIDE}x{PICTURE_SIDE}", "not one", "over the limit")  # the last: body > 1 MiB
        message = _one_line_4xx(pictures.upload(data, "bomb.png"))
        assert any(words in message for words in refusals), (name, len(data), message)
        inline = "data:image/png;base64," + base64.b64encode(data).decode()
        for value in (
            _editor(_file(inline)),
            _editor({"path": None, "url": inline, "meta": {"_type": "gradio.FileData"}}),
        ):
            message = _one_line_4xx(pictures.join(value))
            assert any(words in message for words in refusals), (name, len(data), message)
    huge = "data:image/png;base64," + "A" * 900_000  # decoded, 675 KB: over the file limit, refused before decoding
    assert "at most" in _one_line_4xx(pictures.join({"background": None, "layers": [], "composite": _file(huge)}))
    grown = process.memory_info().rss - before
    print(f"\npicture bombs refused: RSS {before / MiB:.0f} MiB -> {(before + grown) / MiB:.0f} MiB")
    assert grown < 64 * MiB
    # Many layers, each ~200 bytes of JSON, are refused by their count before any is looked at.
    good = pictures.upload(_png(PICTURE_SIDE)).json()[0]
    many = _editor(_file(good), [_file(good)] * 2000)
    assert f"at most {PICTURE_LAYERS} layer" in _one_line_4xx(pictures.join(many))
    assert pictures.healthy()


def _completed(pictures: PictureDemo, value, session: str) -> dict:
    """Join the Predict event with `value` as the picture and read its result from the queue's stream."""
    body = {"data": pictures.data(value), "fn_index": pictures.events[0], "session_hash": session}
    assert httpx.post(pictures.url + "/gradio_api/queue/join", json=body, timeout=30).status_code == 200
    url = f"{pictures.url}/gradio_api/queue/data?session_hash={session}"
    with httpx.stream("GET", url, timeout=60) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:") and '"process_completed"' in line:
                return json.loads(line[5:])
    raise AssertionError("the stream ended without a result")


def test_an_uploaded_or_inline_picture_is_read_once_then_removed(pictures):
    import base64

    digit = _png(PICTURE_SIDE, "RGB", seed=3)
    path = pictures.upload(digit).json()[0]
    assert Path(path).is_file() and Path(path).parent.parent == pictures.folder
    assert str(pictures.proc.pid) not in pictures.folder.name  # the reply names no process id
    done = _completed(pictures, _editor(_file(path)), "read1")
    assert done["success"] and "Predict failed" not in json.dumps(done["output"]), json.dumps(done)[:500]
    assert not Path(path).exists()  # removed once read
    message = _one_line_4xx(pictures.join(_editor(_file(path))))  # and not readable a second time
    assert "upload it again" in message
    inline = "data:image/png;base64," + base64.b64encode(digit).decode()
    done = _completed(pictures, _editor(_file(inline)), "read2")
    assert done["success"] and "scores" in json.dumps(done["output"]), json.dumps(done)[:500]


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("x.svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="9" height="9"/></svg>'),
        ("x.html", b"<html><body><script>alert(1)</script></body></html>"),
        ("x.png", b"not a picture at all" * 10),
        ("x.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64),  # a damaged PNG
    ],
)
def test_an_upload_that_is_not_a_picture_is_one_line_and_not_kept(pictures, name, data):
    since = len(pictures.lines)
    answer = pictures.upload(data, name)
    assert "expected a picture" in _one_line_4xx(answer)
    kept = [p for p in pictures.folder.rglob(name) if p.is_file()]
    assert not kept, kept
    assert "Traceback" not in "".join(pictures.lines[since:])


def test_five_hundred_uploads_leave_at_most_the_cap_on_disk(pictures):
    own = {p for p in pictures.folder.rglob("*") if p.is_file()}  # the page's own figures and example digits

    def on_disk() -> tuple[int, int]:
        files = [p for p in pictures.folder.rglob("*.png") if p.is_file() and p not in own]
        return len(files), sum(p.stat().st_size for p in files)

    with httpx.Client(timeout=30) as client:
        for i in range(500):  # 500 different pictures: 200 of ~235 KB (past the bytes cap), then 300 small ones
            data = _png(PICTURE_SIDE if i < 200 else 64, "RGB", seed=1000 + i)
            answer = client.post(pictures.url + "/gradio_api/upload", files={"files": ("composite.png", data)})
            assert answer.status_code == 200, answer.text[:300]
    files, size = on_disk()
    print(f"\n500 uploads: {files} files, {size / MiB:.1f} MiB left on disk")
    assert files <= MAX_UPLOADS and size <= MAX_UPLOAD_BYTES
    assert pictures.healthy()
