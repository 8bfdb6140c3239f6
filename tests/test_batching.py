"""Dynamic batching (pipeline/serving/batching.py), readiness after warm-up, and /metrics.

Merged answers are compared row for row with the same rows run alone through the one predict path
(Predictor.run), for every model of the manifest, through the Batcher itself and through the OIP
routes (JSON and binary tensors, mixed batch sizes, many threads at once).
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from pipeline.artifacts.tensors import random_batch
from pipeline.runtime.predictor import OutputOverflow
from pipeline.serving.batching import Batcher, Batching
from pipeline.serving.oip import oip_router
from pipeline.serving.service import Service

THREADS = 8


class HeldFirstCall:
    """A predictor whose first run waits for `release`, so the requests that come meanwhile queue up and are
    merged into the next call, deterministically."""

    def __init__(self, predictor):
        self.predictor, self.release, self.started, self.calls = predictor, threading.Event(), threading.Event(), []

    def run(self, batch):
        self.calls.append(len(batch))
        if len(self.calls) == 1:
            self.started.set()
            assert self.release.wait(30)
        return self.predictor.run(batch)


def run_held(predictor, batches, max_rows=1024):
    """Each of `batches` through one Batcher from its own thread, the first call held until all are queued;
    returns (answers or exceptions in order, rows per runtime call)."""
    held = HeldFirstCall(predictor)
    batcher = Batcher(held, max_rows, 1, Batching())
    results = [None] * len(batches)

    def call(i):
        try:
            results[i] = batcher.run(batches[i])
        except Exception as exc:  # noqa: BLE001 - compared below
            results[i] = exc

    first = threading.Thread(target=call, args=(0,))
    first.start()
    assert held.started.wait(30)
    others = [threading.Thread(target=call, args=(i,)) for i in range(1, len(batches))]
    for t in others:
        t.start()
    while len(batcher._pending) < len(batches) - 1:  # every other request queued behind the held call
        threading.Event().wait(0.001)
    held.release.set()
    for t in [first, *others]:
        t.join(30)
    return results, held.calls


@pytest.fixture(scope="module")
def service(artifacts):
    return Service(artifacts)


def test_merged_rows_equal_rows_run_alone_for_every_model(service, manifest):
    rng = np.random.default_rng(1)
    for model in manifest.models:
        predictor = service.predictor(service.require(), model, "onnx", "cpu")
        batches = [random_batch(manifest.model(model).inputs, n, rng) for n in (1, 3, 1, 5, 2, 1)]
        results, calls = run_held(predictor, batches)
        assert calls == [1, 3 + 1 + 5 + 2 + 1], f"{model}: the queued requests were not merged into one call"
        for batch, got in zip(batches, results, strict=True):
            want = predictor.run(batch)
            for w, g in zip(want, got, strict=True):
                assert g.shape == w.shape
                np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6, err_msg=model)


def test_a_merged_call_stops_at_the_largest_batch(service, manifest):
    predictor = service.predictor(service.require(), "adder_mynet", "onnx", "cpu")
    batches = [np.full((n, 2), float(n), np.float32) for n in (1, 2, 2, 1, 3)]
    results, calls = run_held(predictor, batches, max_rows=4)
    assert calls == [1, 4, 4]
    for batch, got in zip(batches, results, strict=True):
        np.testing.assert_allclose(got[0], predictor.run(batch)[0], rtol=1e-6)


def test_an_overflowing_request_in_a_batch_window_fails_alone(service):
    predictor = service.predictor(service.require(), "linear_3x", "onnx", "cpu")
    good = np.array([[1.0]], np.float32)
    bad = np.array([[3.0e38]], np.float32)  # finite input, output 3x beyond float32
    results, _ = run_held(predictor, [good, good, bad, good])
    assert isinstance(results[2], OutputOverflow)
    assert "not finite" in str(results[2])
    for i in (0, 1, 3):
        np.testing.assert_allclose(results[i][0], predictor.run(good)[0])


@pytest.fixture(scope="module")
def oip_client(artifacts):
    service = Service(artifacts)
    service.batching = Batching(delay_us=2000)  # requests wait for each other: merges under test
    app = FastAPI()
    app.include_router(oip_router(service))
    with TestClient(app) as client:
        yield client, service


def infer_body(name, batch, binary):
    tensor = {"name": name, "datatype": "FP32", "shape": list(batch.shape)}
    if not binary:
        tensor["data"] = batch.ravel().tolist()
        return json.dumps({"inputs": [tensor]}).encode(), {}
    tensor["parameters"] = {"binary_data_size": batch.nbytes}
    header = json.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}}).encode()
    return header + batch.tobytes(), {"Inference-Header-Content-Length": str(len(header))}


def outputs_of(response, entry):
    """name -> array from an inference reply, JSON or binary."""
    length = response.headers.get("Inference-Header-Content-Length")
    body = response.content
    header = json.loads(body[: int(length)] if length else body)
    out, offset = {}, int(length or 0)
    for t in header["outputs"]:
        if "data" in t:
            out[t["name"]] = np.asarray(t["data"], np.float32).reshape(t["shape"])
        else:
            size = t["parameters"]["binary_data_size"]
            out[t["name"]] = np.frombuffer(body[offset : offset + size], "<f4").reshape(t["shape"])
            offset += size
    return [out[n] for n in entry.output_names]


def test_oip_answers_equal_unbatched_ones_from_many_threads(oip_client, manifest):
    client, service = oip_client
    rng = np.random.default_rng(2)
    jobs = []
    for model in manifest.models:
        entry = manifest.model(model)
        for i, n in enumerate((1, 4, 1, 2, 7, 1, 3, 1)):
            jobs.append((model, random_batch(entry.inputs, n, rng), i % 2 == 0))
    bad = ("adder_mynet", np.zeros((2, 3), np.float32), False)  # 3 features for a model taking 2: refused alone
    jobs.insert(len(jobs) // 2, bad)

    def send(job):
        model, batch, binary = job
        body, headers = infer_body(manifest.model(model).input["name"], batch, binary)
        return client.post(f"/v2/models/{model}/infer", content=body, headers=headers)

    with ThreadPoolExecutor(THREADS) as pool:
        replies = list(pool.map(send, jobs))
    for (model, batch, binary), reply in zip(jobs, replies, strict=True):
        if (model, batch.shape) == (bad[0], bad[1].shape):
            assert reply.status_code == 400 and "shape" in reply.json()["error"]
            continue
        assert reply.status_code == 200, reply.text
        predictor = service.predictor(service.require(), model, "onnx", "cpu")
        for want, got in zip(predictor.run(batch), outputs_of(reply, manifest.model(model)), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=f"{model} binary={binary}")


def test_config_shows_the_dynamic_batching_settings(oip_client):
    client, _ = oip_client
    config = client.get("/v2/models/adder_mynet_onnx/config").json()
    assert config["dynamic_batching"] == {"max_queue_delay_microseconds": 2000}
    assert config["max_batch_size"] >= 1


@pytest.fixture
def held_warm_up(artifacts, monkeypatch):
    """The demo app with its warm-up held until the test releases it."""
    import demo.app as demo_app

    release = threading.Event()
    warm = Service.warm

    def held(self, targets):
        assert release.wait(60)
        warm(self, targets)

    monkeypatch.setattr(Service, "warm", held)
    app = demo_app.create_app(artifacts, warm="default")
    with TestClient(app) as client:
        yield client, app, release
    release.set()


def test_ready_only_once_warm_up_has_loaded_every_default_artifact(held_warm_up, manifest):
    client, app, release = held_warm_up
    assert client.get("/v2/health/ready").status_code == 503
    assert "warming up" in client.get("/v2/health/ready").json()["error"]
    assert client.get("/v2/models/adder_mynet/ready").status_code == 503
    health = client.get("/healthz").json()
    assert health["ready"] is False
    assert health["pending"] == [f"{m}/onnx" for m in manifest.models]
    release.set()
    app.state.warming.join(120)
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/models/adder_mynet/ready").json()["ready"] is True
    health = client.get("/healthz").json()
    assert health["ready"] is True and health["pending"] == []
    loaded = app.state.service.require().predictors
    assert all(loaded.cached(m, "onnx", device="cpu") is not None for m in manifest.models)


def scrape(client):
    """{(name, labels as a sorted tuple): value} of every sample /metrics gives."""
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def test_metrics_count_exactly_the_requests_sent(held_warm_up):
    client, app, release = held_warm_up
    release.set()
    app.state.warming.join(120)
    before = scrape(client)
    good, headers = infer_body("x", np.ones((3, 2), np.float32), True)
    for _ in range(5):
        assert client.post("/v2/models/adder_mynet/infer", content=good, headers=headers).status_code == 200
    bad, _ = infer_body("x", np.ones((1, 5), np.float32), False)
    for _ in range(2):
        assert client.post("/v2/models/adder_mynet/infer", content=bad).status_code == 400
    for _ in range(3):
        call = {"data": ["adder_mynet", "onnx", "cpu", "1, 2"]}
        assert client.post("/gradio_api/run/predict", json=call).status_code == 200
    after = scrape(client)
    labels = (("format", "onnx"), ("model", "adder_mynet"))

    def moved(name, extra=()):
        key = (name, tuple(sorted((*labels, *extra))))
        return after.get(key, 0) - before.get(key, 0)

    assert moved("nv_inference_request_success_total") == 5 + 3
    assert moved("nv_inference_request_failure_total", (("reason", "400"),)) == 2
    assert moved("nv_inference_count_total") == 5 * 3 + 3
    assert moved("nv_inference_request_duration_seconds_count") == 10
    assert moved("nv_inference_batch_size_sum") == 5 * 3 + 3
    assert 1 <= moved("nv_inference_exec_count_total") <= 8
    assert after[("nv_inference_loaded_predictors", ())] >= 8
