"""The page's API routes (demo/api.py) in this process: every bad call is a 4xx of one line, and no answer
holds a number JSON cannot carry (Infinity, NaN), whatever the models give."""

from __future__ import annotations

import json

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from demo.api import api_router
from pipeline.serving.oip import oip_router
from pipeline.serving.service import Service


@pytest.fixture(scope="module")
def client(artifacts):
    service = Service(artifacts)
    app = FastAPI()
    app.include_router(api_router(service))
    app.include_router(oip_router(service))
    return TestClient(app, raise_server_exceptions=False)


def strict_json(text: str):
    """`text` parsed as JSON proper: Infinity and NaN are refused."""
    return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in {text[:200]}"))


def one_line(message: str) -> str:
    assert isinstance(message, str) and "\n" not in message and len(message) < 400, message
    return message


@pytest.mark.parametrize("features", ["3e38 3e38", "-3e38 -3e38"])
def test_compare_of_inputs_whose_outputs_overflow_is_a_400_on_run_and_an_error_event_on_call(client, features):
    run = client.post("/gradio_api/run/compare", json={"data": ["adder_mynet", "cpu", features]})
    assert run.status_code == 400 and "not finite" in one_line(strict_json(run.text)["error"])
    posted = client.post("/gradio_api/call/compare", json={"data": ["adder_mynet", "cpu", features]})
    assert posted.status_code == 200
    stream = client.get(f"/gradio_api/call/compare/{posted.json()['event_id']}").text
    event, data = stream.split("\n")[:2]
    assert event == "event: error" and "not finite" in one_line(strict_json(data.removeprefix("data: "))["error"])


def test_a_row_whose_artifact_overflows_is_sent_without_infinity(client):
    posted = client.post("/gradio_api/call/compare", json={"data": ["adder_mynet", "cpu", "70000 70000"]})
    stream = client.get(f"/gradio_api/call/compare/{posted.json()['event_id']}").text
    assert stream.startswith("event: complete\n")
    rows = strict_json(stream.split("\n")[1].removeprefix("data: "))[0]
    fp16 = next(r for r in rows if r["format"] == "onnx-fp16")
    assert fp16["outputs"]["sum"] == [None] and "non-finite" in fp16["reason"]
    run = client.post("/gradio_api/run/compare", json={"data": ["adder_mynet", "cpu", "70000 70000"]})
    again = strict_json(run.text)["data"][0]
    assert run.status_code == 200 and [r["outputs"] for r in again] == [r["outputs"] for r in rows]


X = {"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}


@pytest.mark.parametrize(
    ("model", "body", "fragment"),
    [
        ("adder_mynet", {"inputs": [X], "parameters": {"format": ["onnx"]}}, "parameters.format is ['onnx']"),
        ("adder_mynet", {"inputs": [X], "parameters": {"format": {"a": 1}}}, "parameters.format is {'a': 1}"),
        ("adder_mynet", {"inputs": [{**X, "data": [True, 1]}]}, "true, which is not a number (datatype FP32)"),
        ("adder_mynet", {"inputs": [X], "outputs": [{"name": ["sum"]}]}, "unknown output ['sum']"),
        ("adder_mynet", {"inputs": [{**X, "name": ["x"]}]}, "unexpected input ['x']"),
    ],
)
def test_oip_requests_with_parameters_of_the_wrong_type_are_400s(client, model, body, fragment):
    answer = client.post(f"/v2/models/{model}/infer", json=body)
    assert answer.status_code == 400 and fragment in one_line(answer.json()["error"]), answer.text


def test_a_binary_data_size_written_as_a_float_is_a_400(client):
    tensor = {"name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8.0}}
    header = json.dumps({"inputs": [tensor]}).encode()
    answer = client.post(
        "/v2/models/adder_mynet/infer",
        content=header + b"\x00" * 8,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert answer.status_code == 400 and "binary_data_size is 8.0" in one_line(answer.json()["error"])
