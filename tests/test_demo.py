"""The Gradio demo (demo/app.py, demo/server.py): its `predict` endpoint over HTTP against the eager
model, the errors a person can act on, and the app that puts the page and the Open Inference Protocol
routes over one Service. One app launch for the module, CPU only."""

from __future__ import annotations

import html
import json
import re
import sys
import time

import numpy as np
import pytest

from pipeline.catalog import CATALOG
from pipeline.formats import FORMATS

from .conftest import assert_matches_eager
from .demo_server import ROOT, PredictError, call_predict

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ATOL, RTOL = 1e-5, 1e-4
# by runtime: what ran on the CPU
EXPECTED_DEVICE = {"onnxruntime": "CPUExecutionProvider", "torch": "cpu", "openvino": "cpu", "executorch": "cpu"}


FRESH: dict = {}  # what the app reported right after start-up, before any torch format was asked for


@pytest.fixture(scope="module")
def demo_url(demo):
    """The module's demo (conftest), after recording what it reported before anything else was asked of it."""
    import httpx

    FRESH["onnx"] = call_predict(demo, "adder_mynet", "onnx", "cpu", "10 11")
    FRESH["health"] = httpx.get(demo + "/healthz").json()
    return demo


@pytest.fixture(scope="module")
def eager_10_11(eager):
    """adder_mynet's eager outputs for 10 and 11 (a sum near 21 and the 8 hidden values), as lists."""
    return {k: v.tolist() for k, v in eager("adder_mynet").predict([10, 11]).items()}


def assert_outputs(got: dict, want: dict) -> None:
    """Every named output of a reply equals the eager model's within the parity tolerance."""
    assert set(got) == set(want)
    for name, expected in want.items():
        np.testing.assert_allclose(np.asarray(got[name]), expected, atol=ATOL, rtol=RTOL, err_msg=name)


def _examples(manifest, model):
    """The catalog example as text (commas and spaces) and a random one as a JSON list."""
    entry = manifest.model(model)
    catalog = [float(v) for v in entry.examples[0]]
    rng = np.random.default_rng(sum(map(ord, model)))
    random = rng.uniform(-3, 3, len(entry.features)).astype(np.float32).tolist()
    return [(", ".join(repr(v) for v in catalog), catalog), (json.dumps(random), random)]


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("model", list(CATALOG))
def test_predict_over_http_matches_eager(demo_url, manifest, eager, model, fmt):
    if fmt not in manifest.model(model).served_formats():  # a derived format that does not apply: said so
        with pytest.raises(PredictError, match=rf"^{model} has no '{fmt}' artifact: not applicable \("):
            call_predict(demo_url, model, fmt, "cpu", _examples(manifest, model)[0][0])
        return
    for sent, values in _examples(manifest, model):
        start = time.perf_counter()
        result = call_predict(demo_url, model, fmt, "cpu", sent)
        round_trip_ms = (time.perf_counter() - start) * 1000
        want = eager(model).predict(values)
        assert result["format"] == fmt
        assert result["runtime"] == FORMATS[fmt].default_runtime
        assert result["device"] == EXPECTED_DEVICE[result["runtime"]]
        # The model call alone, in milliseconds: measured (not 0, nor seconds rounded to 0) and inside
        # the request this client waited for (not microseconds, nor the load time of a first call).
        assert 0 < result["latency_ms"] < round_trip_ms - result["load_ms"]
        assert set(result["outputs"]) == set(want)
        assert_matches_eager(fmt, result["outputs"], want, f"{model}/{fmt}")


BAD_INPUTS = [
    # (model, format, device, features, fragments the message must contain)
    ("adder_mynet", "onnx", "cpu", "10 11 12", ["adder_mynet expects 2 numbers (x1, x2); got 3"]),
    ("adder_mynet", "onnx", "cpu", "10, eleven", ["adder_mynet expects 2 numbers (x1, x2)", "'eleven'"]),
    ("adder_mynet", "onnx", "cpu", "nan 1", ["adder_mynet expects 2 numbers (x1, x2)", "finite"]),
    ("adder_mynet", "pt2", "cpu", "1 inf", ["adder_mynet expects 2 numbers (x1, x2)", "finite"]),
    ("adder_mynet", "onnx", "cpu", "[1, -Infinity]", ["adder_mynet expects 2 numbers (x1, x2)", "finite"]),
    ("adder_mynet", "onnx", "cpu", "", ["adder_mynet expects 2 numbers (x1, x2); got empty input"]),
    ("adder_mynet", "onnx", "cpu", "   ", ["adder_mynet expects 2 numbers (x1, x2); got empty input"]),
    ("adder_mynet", "onnx", "cpu", "[10, 11", ["adder_mynet expects 2 numbers (x1, x2) as a JSON list"]),
    ("two_layer_net", "onnx", "cpu", "1 2 3", ["two_layer_net expects 1000 numbers", "got 3"]),
    ("linear_3x", "eager", "cpu", [], ["linear_3x expects 1 number (x); got 0"]),
    ("nope", "onnx", "cpu", "1 2", ["unknown model 'nope'; expected one of:", "adder_mynet"]),
    (
        "adder_mynet",
        "tf",
        "cpu",
        "1 2",
        ["unknown format 'tf'; expected one of: " + ", ".join(FORMATS)],
    ),
    ("adder_mynet", "onnx", "tpu", "1 2", ["unknown device 'tpu'; expected one of: cpu, cuda, auto"]),
]


@pytest.mark.parametrize(("model", "fmt", "device", "features", "fragments"), BAD_INPUTS)
def test_bad_input_is_one_line_naming_what_was_expected(demo_url, eager_10_11, model, fmt, device, features, fragments):
    with pytest.raises(PredictError) as err:
        call_predict(demo_url, model, fmt, device, features)
    message = err.value.message
    for fragment in fragments:
        assert fragment in message
    assert "\n" not in message and "Traceback" not in message
    # ... and the app keeps serving.
    ok = call_predict(demo_url, "adder_mynet", "onnx", "cpu", "10 11")
    assert_outputs(ok["outputs"], eager_10_11)


def test_cuda_where_there_is_none_is_refused_with_the_reason(demo_url):
    from pipeline.runtime.devices import cuda_device_count

    if cuda_device_count() > 0:
        pytest.skip("this machine has a CUDA GPU")
    for fmt in ("onnx", "eager"):
        with pytest.raises(PredictError, match=r"device cuda is unavailable: .*no CUDA GPU is visible"):
            call_predict(demo_url, "adder_mynet", fmt, "cuda", "10 11")
    assert call_predict(demo_url, "adder_mynet", "onnx", "auto", "10 11")["device"] == "CPUExecutionProvider"


def test_predictors_are_loaded_once_and_cached(demo_url):
    # ("auto" is a cache key of its own, which no other test here uses)
    first = call_predict(demo_url, "sigmoid_net", "pt2", "auto", "1 1")
    again = call_predict(demo_url, "sigmoid_net", "pt2", "auto", [1, 1])
    assert first["load_ms"] > 0 and again["load_ms"] == 0
    assert first["outputs"] == again["outputs"] and again["device"] == first["device"]


def test_gradio_client_calls_predict(demo_url, eager_10_11, manifest):
    client_served = lambda model: manifest.model(model).served_formats()  # noqa: E731
    from gradio_client import Client

    client = Client(demo_url, verbose=False)
    result = client.predict("adder_mynet", "onnx", "cpu", "10, 11", api_name="/predict")
    assert result["device"] == "CPUExecutionProvider"
    assert_outputs(result["outputs"], eager_10_11)
    assert result["expected"]["value"] == 21.0 and result["expected"]["truth"] == "x1 + x2"
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert sorted(endpoints) == ["/compare", "/predict"]
    rows = client.predict("adder_mynet", "cpu", "10, 11", api_name="/compare")
    served = [FORMATS[f] for f in client_served("adder_mynet")]
    assert [(r["format"], r["runtime"]) for r in rows] == [
        (f.name, ld.runtime.name) for f in served for ld in f.loaders
    ]


def test_compare_api_returns_every_row_as_json(demo_url, manifest):
    import httpx

    url = demo_url + "/gradio_api/call/compare"
    event = httpx.post(url, json={"data": ["adder_mynet", "cpu", "10 11"]}).json()["event_id"]
    stream = httpx.get(f"{url}/{event}", timeout=120).text
    assert "event: complete" in stream, stream
    rows = json.loads(stream.split("data:", 1)[1].strip())[0]
    assert len(rows) == sum(len(FORMATS[f].loaders) for f in manifest.model("adder_mynet").served_formats())
    for row in rows:
        assert row["within_rule"] is True and row["max_abs_diff"] is not None and row["latency_ms"] > 0
    bad = httpx.post(url, json={"data": ["adder_mynet", "cpu", "10"]}).json()["event_id"]
    assert "adder_mynet expects 2 numbers (x1, x2); got 1" in httpx.get(f"{url}/{bad}", timeout=60).text


def test_page_and_health(demo_url):
    import httpx

    page = httpx.get(demo_url + "/")
    assert page.status_code == 200 and "<html" in page.text.lower()
    health = httpx.get(demo_url + "/healthz").json()
    assert health["ok"] and "adder_mynet" in health["models"] and health["error"] is None


# ---- the plain function, in this process ------------------------------------------------------------


def test_no_manifest_page_says_how_to_create_the_artifacts(tmp_path):
    from fastapi.testclient import TestClient

    from demo.app import create_app

    app = create_app(tmp_path)
    assert app.state.service.manifest is None
    with TestClient(app) as client:
        config = client.get("/config").text
        assert "make train export" in config and "No artifacts to serve yet" in config
        value = next(
            c["props"]["value"]
            for c in client.get("/config").json()["components"]
            if c["props"].get("elem_id") == "no-manifest"
        )
        shown = html.unescape(re.sub(r"<[^>]+>", "", value))  # the text a browser shows
        assert f"--artifacts {tmp_path}" in shown and f"ARTIFACTS={tmp_path}" in shown  # not the default folder
        assert "&&" in shown and "&amp;" not in shown
        health = client.get("/healthz").json()
        assert not health["ok"] and "make train export" in health["error"]
        answer = client.post("/v2/models/adder_mynet/infer", json={})
        assert answer.status_code == 503 and "make train export" in answer.json()["error"]


def _x(data, shape, name="x"):
    return {"inputs": [{"name": name, "shape": list(shape), "datatype": "FP32", "data": data}]}


def test_the_page_and_the_protocol_share_one_service_and_follow_a_re_export(artifacts_copy):
    """One predictor cache for the page's predict and /v2, and no route keeps serving from the manifest
    the app started with once export has replaced it (its files are gone by then)."""
    from fastapi.testclient import TestClient

    from demo.app import create_app
    from pipeline.export import run_export
    from pipeline.train import train_model

    app = create_app(artifacts_copy)
    svc = app.state.service
    with TestClient(app) as client:
        answer = client.post("/v2/models/linear_3x/infer", json=_x([2.0], (1, 1)))
        assert answer.status_code == 200, answer.text
        assert ("linear_3x", "onnx", None, "cpu") in svc.current().predictors._predictors  # loaded there, once
        # The page's first use of it finds it loaded (one cache): only the request that loaded it reports a load.
        assert svc.predict("linear_3x", "onnx", "cpu", "2")["load_ms"] == 0
        old_path = svc.manifest.model("linear_3x").artifact("onnx").path
        train_model(CATALOG["linear_3x"], artifacts_copy, "cpu", 0, progress=False)
        report, errors = run_export([CATALOG["linear_3x"]], artifacts_copy, log=lambda _: None)
        assert not errors and not (artifacts_copy / old_path).exists()
        for path in ("/v2/models/linear_3x/ready", "/v2/models/linear_3x_torchscript/ready"):
            assert client.get(path).status_code == 200, client.get(path).text
        answer = client.post("/v2/models/linear_3x_torchscript/infer", json=_x([2.0], (1, 1), "x__0"))
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0]["data"][0] == pytest.approx(6.0, abs=0.1)
        assert client.get("/healthz").json()["models"] == list(svc.manifest.models)


def test_start_up_and_onnx_predictions_do_not_import_torch(demo_url):
    assert FRESH["onnx"]["device"] == "CPUExecutionProvider"
    assert FRESH["health"]["ok"] and FRESH["health"]["torch_imported"] is False


def test_main_parses_flags_and_env(monkeypatch):
    from demo.app import parse_args

    monkeypatch.setenv("GRADIO_SERVER_PORT", "7999")
    args = parse_args([])
    assert (args.host, args.port, str(args.artifacts)) == ("127.0.0.1", 7999, "artifacts")
    assert parse_args(["--port", "8001", "--host", "0.0.0.0"]).port == 8001
