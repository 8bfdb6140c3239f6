"""The Open Inference Protocol (KServe v2) routes of the demo process, and the remote runtime.

tritonclient's own HTTP client talks to `python demo/app.py` (one launch for the module): metadata
and readiness of every model under every name it answers to, inference against the eager model,
the protocol's error form for malformed requests, and the remote runtime passing the same parity
check as the local runtimes. Router details (body limits, compression, no manifest) run in-process.
"""

from __future__ import annotations

import gzip
import json
import sys

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from tritonclient import http as httpclient
from tritonclient.utils import InferenceServerException

from demo.server import RequestLimits
from pipeline import formats
from pipeline.formats import TRITON_FORMATS
from pipeline.runtime.comparison import compare
from pipeline.runtime.inputs import InputError
from pipeline.runtime.parity import parity_inputs, verify
from pipeline.runtime.predictor import PredictorCache, RuntimeUnavailable, load_predictor
from pipeline.serving.naming import model_config, tensor_names, triton_model_name
from pipeline.serving.oip import oip_router
from pipeline.serving.oip_protocol import oip_names, triton_formats_of
from pipeline.serving.service import Service

from .demo_server import ROOT, free_port

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="module")
def client(demo):
    with httpclient.InferenceServerClient(demo.split("://", 1)[1]) as c:
        yield c


def names_of(manifest, model, fmt):
    """(input, outputs) names the model answers with under `fmt`'s name (the bare name: the manifest's)."""
    entry = manifest.model(model)
    if fmt is None:
        return entry.input["name"], entry.output_names
    ins, outs = tensor_names(entry, fmt)
    return ins[0], outs


def infer(client, name, input_name, batch, output_names, binary=True, **kwargs):
    tensor = httpclient.InferInput(input_name, list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=binary)
    wanted = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in output_names]
    result = client.infer(name, [tensor], outputs=wanted, **kwargs)
    return [result.as_numpy(n) for n in output_names]


def assert_close(want, got, what, fmt=None):
    """Within `fmt`'s parity rule (a derived format's is its own), the exact formats' by default."""
    spec = formats.get(fmt or formats.DEFAULT_FORMAT)
    for w, g in zip(want, got, strict=True):
        result = compare(w, g, spec.tolerance)
        assert result.passed, f"{what}: {result.reason}"


# ---- the demo process, through tritonclient ------------------------------------------------------


def test_server_is_live_ready_and_describes_itself(client):
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "seed-pipeline" and "binary_tensor_data" in meta["extensions"]


def test_metadata_of_every_model_matches_the_manifest_and_the_triton_repository(client, manifest):
    """Each model under its own name and under the Triton repository's names, with the same tensors
    (names, FP32, [-1, N]) as the config.pbtxt `export --triton` writes for it."""
    assert len(oip_names(manifest)) == sum(1 + len(triton_formats_of(e)) for e in manifest.models.values())
    assert {"onnx", "torchscript"} <= set(triton_formats_of(manifest.model("adder_mynet")))
    for model, entry in manifest.models.items():
        for fmt in (None, *triton_formats_of(entry)):
            name = model if fmt is None else triton_model_name(model, fmt)
            meta = client.get_model_metadata(name)
            config = model_config(entry, fmt or "onnx")
            platform = config.get("platform", config.get("backend"))  # a backend-served format names its backend
            assert meta["name"] == name and meta["versions"] == ["1"] and meta["platform"] == platform
            for key, ckey in (("inputs", "input"), ("outputs", "output")):
                assert [(t["name"], t["datatype"], t["shape"]) for t in meta[key]] == [
                    (t["name"], t["data_type"][5:], [-1, *t["dims"]]) for t in config[ckey]
                ]
            assert client.get_model_config(name)["input"] == config["input"]
        assert client.is_model_ready(triton_model_name(model, "onnx"))


def test_infer_gives_the_eager_outputs_for_every_model(client, manifest, eager):
    for model in manifest.models:
        batches = parity_inputs(manifest, model)  # the catalog examples, then random batches of 1, 2 and 7
        for fmt in (None, *triton_formats_of(manifest.model(model))):
            name = model if fmt is None else triton_model_name(model, fmt)
            input_name, output_names = names_of(manifest, model, fmt)
            for batch in (batches[0], batches[-1]):
                got = infer(client, name, input_name, batch, output_names)
                assert_close(eager(model).run_batch(batch), got, f"{name} batch {len(batch)}", fmt)
        # JSON tensors (no binary extension) give the same numbers
        input_name, output_names = names_of(manifest, model, None)
        got = infer(client, model, input_name, batches[1], output_names, binary=False)
        assert_close(eager(model).run_batch(batches[1]), got, f"{model} as JSON")


def test_a_request_may_pick_another_artifact_on_the_bare_name(client, manifest, eager):
    batch = parity_inputs(manifest, "adder_mynet")[-1]
    input_name, output_names = names_of(manifest, "adder_mynet", None)
    for fmt in ("torchscript", "pt2", "eager", "onnx"):
        got = infer(client, "adder_mynet", input_name, batch, output_names, parameters={"format": fmt})
        assert_close(eager("adder_mynet").run_batch(batch), got, f"format {fmt}")


def test_only_the_outputs_asked_for_come_back(client):
    x = np.array([[10.0, 11.0]], dtype=np.float32)
    tensor = httpclient.InferInput("x__0", [1, 2], "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer("adder_mynet_torchscript", [tensor], outputs=[httpclient.InferRequestedOutput("hidden__1")])
    assert [o["name"] for o in result.get_response()["outputs"]] == ["hidden__1"]
    assert result.as_numpy("hidden__1").shape == (1, 8)
    # with no outputs named, every output comes back (tritonclient then asks for binary data)
    result = client.infer("adder_mynet_torchscript", [tensor])
    assert [o["name"] for o in result.get_response()["outputs"]] == ["sum__0", "hidden__1"]


def test_an_empty_outputs_list_returns_every_output_as_triton_does(demo):
    body = {**_x([10, 11]), "outputs": []}
    answer = httpx.post(f"{demo}/v2/models/adder_mynet/infer", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    assert [(o["name"], o["shape"]) for o in answer.json()["outputs"]] == [("sum", [1, 1]), ("hidden", [1, 8])]


def test_each_model_takes_the_largest_batch_whose_json_fits_the_body_limit(client, manifest):
    """The metadata and config say each model's largest batch: 512 for the 1000-feature models, whose
    1,024 rows would be ~25 MB as JSON, 1,024 for the others."""
    for model, entry in manifest.models.items():
        want = 512 if len(entry.features) == 1000 else 1024
        for name in (model, triton_model_name(model, "onnx"), triton_model_name(model, "torchscript")):
            assert client.get_model_metadata(name)["parameters"]["max_batch_size"] == want, name
            assert client.get_model_config(name)["max_batch_size"] == want, name


def test_a_full_batch_of_the_widest_model_goes_through_tritonclient_as_json(client, eager):
    batch = np.random.default_rng(5).standard_normal((512, 1000)).astype(np.float32)
    got = infer(client, "two_layer_net", "x", batch, ["y"], binary=False)  # JSON tensors both ways
    assert got[0].shape == (512, 10)
    assert_close(eager("two_layer_net").run_batch(batch), got, "512 x 1000 as JSON")
    too_many = httpclient.InferInput("x", [513, 1000], "FP32")
    too_many.set_data_from_numpy(np.zeros((513, 1000), dtype=np.float32), binary_data=True)
    with pytest.raises(InferenceServerException) as info:
        client.infer("two_layer_net", [too_many])
    assert info.value.status() == "400" and "batch from 1 to 512" in info.value.message()


def test_outputs_that_overflow_float32_are_refused_as_json_and_as_binary(client):
    for binary in (False, True):
        tensor = httpclient.InferInput("x", [2, 2], "FP32")
        tensor.set_data_from_numpy(np.array([[1, 2], [3e38, 3e38]], dtype=np.float32), binary_data=binary)
        with pytest.raises(InferenceServerException) as info:
            client.infer(
                "adder_mynet_onnx", [tensor], outputs=[httpclient.InferRequestedOutput("sum", binary_data=binary)]
            )
        assert info.value.status() == "400", info.value
        assert (
            "adder_mynet's output sum is not finite" in info.value.message()
            and "float32 overflow" in info.value.message()
        )


def test_tritonclient_sees_bad_requests_as_errors_with_a_message(client):
    wrong = httpclient.InferInput("x", [1, 3], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(InferenceServerException) as info:
        client.infer("adder_mynet_onnx", [wrong])
    assert info.value.status() == "400" and "expected [batch, 2]" in info.value.message()
    as_double = httpclient.InferInput("x", [1, 2], "FP64")
    as_double.set_data_from_numpy(np.zeros((1, 2), dtype=np.float64))
    with pytest.raises(InferenceServerException) as info:
        client.infer("adder_mynet", [as_double])
    assert info.value.status() == "400" and "FP32" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata("no_such_model")
    assert info.value.status() == "404" and "adder_mynet" in info.value.message()
    assert not client.is_model_ready("no_such_model")


def _x(data, shape=(1, 2), name="x", datatype="FP32", **extra):
    return {"inputs": [{"name": name, "shape": list(shape), "datatype": datatype, "data": data, **extra}]}


MALFORMED = [  # (what, model, body or raw bytes, headers, status, words the message must hold)
    ("wrong shape", "adder_mynet", _x([1, 2, 3], shape=(1, 3)), {}, 400, ["shape [1, 3]", "[batch, 2]"]),
    ("rank 1", "adder_mynet", _x([1, 2], shape=(2,)), {}, 400, ["shape [2]"]),
    ("batch 0", "adder_mynet", _x([], shape=(0, 2)), {}, 400, ["batch from 1"]),
    ("too few values", "adder_mynet", _x([1, 2, 3], shape=(2, 2)), {}, 400, ["3 values", "needs 4"]),
    ("wrong datatype", "adder_mynet", _x([1, 2], datatype="INT32"), {}, 400, ["INT32", "FP32"]),
    ("text in data", "adder_mynet", _x([1, "two"]), {}, 400, ["not a number"]),
    ("a boolean", "adder_mynet", _x([1, True]), {}, 400, ["not a number"]),
    ("beyond float32", "adder_mynet", _x([1, 1e39]), {}, 400, ["float32's range"]),
    (
        "NaN",
        "adder_mynet",
        b'{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[NaN,1]}]}',
        {},
        400,
        ["not valid JSON"],
    ),
    ("wrong input name", "adder_mynet_torchscript", _x([1, 2]), {}, 400, ["'x'", "expected 'x__0'"]),
    ("two inputs", "adder_mynet", {"inputs": [_x([1, 2])["inputs"][0]] * 2}, {}, 400, ["exactly one input"]),
    ("no inputs", "adder_mynet", {"outputs": []}, {}, 400, ["no 'inputs'"]),
    ("not JSON", "adder_mynet", b"{inputs: x", {}, 400, ["not valid JSON"]),
    ("empty body", "adder_mynet", b"", {}, 400, ["empty"]),
    ("a JSON list", "adder_mynet", [1, 2], {}, 400, ["JSON object"]),
    ("unknown output", "adder_mynet", {**_x([1, 2]), "outputs": [{"name": "y"}]}, {}, 400, ["'y'", "sum, hidden"]),
    (
        "classification",
        "adder_mynet",
        {**_x([1, 2]), "outputs": [{"name": "sum", "parameters": {"classification": 2}}]},
        {},
        400,
        ["classification"],
    ),
    (
        "format on a Triton name",
        "adder_mynet_onnx",
        {**_x([1, 2]), "parameters": {"format": "pt2"}},
        {},
        400,
        ["onnx artifact only"],
    ),
    ("unknown format", "adder_mynet", {**_x([1, 2]), "parameters": {"format": "tflite"}}, {}, 400, ["tflite"]),
    (
        "binary size mismatch",
        "adder_mynet",
        json.dumps(_x(None, parameters={"binary_data_size": 8})).encode() + b"\x00" * 4,
        {"Inference-Header-Content-Length": None},
        400,
        ["binary_data_size", "expected 8 bytes"],
    ),
    (
        "bad header length",
        "adder_mynet",
        json.dumps(_x([1, 2])).encode(),
        {"Inference-Header-Content-Length": "99999"},
        400,
        ["Inference-Header-Content-Length"],
    ),
    ("unknown encoding", "adder_mynet", _x([1, 2]), {"Content-Encoding": "br"}, 400, ["Content-Encoding"]),
    ("unknown model", "no_such_model", _x([1, 2]), {}, 404, ["unknown model", "adder_mynet", "_torchscript"]),
    ("unknown suffix", "adder_mynet_pt2", _x([1, 2]), {}, 404, ["unknown model"]),
    ("unknown version", "adder_mynet/versions/2", _x([1, 2]), {}, 404, ["version '2'"]),
    (
        "header length of 5,000 digits",
        "adder_mynet",
        _x([1, 2]),
        {"Inference-Header-Content-Length": "9" * 5000},
        400,
        ["Inference-Header-Content-Length", "expected the JSON header's size"],
    ),
    (
        "header length that is a digit to isdigit() only",
        "adder_mynet",
        _x([1, 2]),
        {"Inference-Header-Content-Length": "²".encode()},
        400,
        ["Inference-Header-Content-Length"],
    ),
    (
        "bytes after the gzip data",
        "adder_mynet",
        gzip.compress(json.dumps(_x([1, 2])).encode()) + b"trailing",
        {"Content-Encoding": "gzip"},
        400,
        ["8 bytes follow the gzip data"],
    ),
    ("outputs that overflow", "adder_mynet", _x([3e38, 3e38]), {}, 400, ["not finite", "float32 overflow"]),
    (
        "millions of empty lists",
        "adder_mynet",
        b'{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[' + b"[]," * 1_000_000 + b"[]]}]}",
        {},
        400,
        ["arrays and objects", "at most 1024 rows"],
    ),
]


@pytest.mark.parametrize(
    ("what", "model", "body", "headers", "status", "words"), MALFORMED, ids=[m[0] for m in MALFORMED]
)
def test_malformed_requests_get_the_protocols_error_form(demo, what, model, body, headers, status, words):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    if headers.get("Inference-Header-Content-Length", "") is None:
        headers = {**headers, "Inference-Header-Content-Length": str(content.index(b"\x00"))}
    answer = httpx.post(f"{demo}/v2/models/{model}/infer", content=content, headers=headers, timeout=30)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    error = answer.json()
    assert list(error) == ["error"] and isinstance(error["error"], str)
    for word in words:
        assert word in error["error"], (what, error["error"])


def test_unknown_routes_and_versions_are_404_in_the_same_form(demo):
    for path in ("/v2/models/adder_mynet/versions/7", "/v2/models/nope/ready", "/v2/repository/index", "/v2/x"):
        answer = httpx.get(demo + path, timeout=30)
        assert answer.status_code == 404 and list(answer.json()) == ["error"], (path, answer.text)
    assert httpx.get(demo + "/v2/models/adder_mynet/versions/1", timeout=30).json()["name"] == "adder_mynet"


# ---- the remote runtime, pointed at the demo process ---------------------------------------------


def test_the_remote_runtime_passes_the_same_parity_check(demo, manifest):
    report = verify(manifest, list(manifest.models), device="cpu", remote=[demo])
    assert report.passed, report.table()
    remote = [r for r in report.rows if r.runtime == demo]
    want = {(m, f) for m, e in manifest.models.items() for f in triton_formats_of(e)}
    assert {(r.model, r.format) for r in remote} == want
    assert all(r.device == f"remote {demo} ({triton_model_name(r.model, r.format)})" for r in remote)


def test_the_remote_runtime_is_a_predictor_like_the_others(demo, manifest, eager):
    predictor = load_predictor(manifest, "adder_mynet", "torchscript", runtime=demo)
    assert (predictor.runtime, predictor.format) == (demo, "torchscript")
    assert predictor.device == f"remote {demo} (adder_mynet_torchscript)"
    one = predictor.predict([10, 11])
    assert sorted(one) == ["hidden", "sum"] and one["hidden"].shape == (8,)
    x = np.array([[10, 11]], dtype=np.float32)
    assert_close(eager("adder_mynet").run_batch(x), [one["sum"][None], one["hidden"][None]], "predict")
    cache = PredictorCache(manifest)
    assert cache.get("linear_3x", "onnx", runtime=demo) is cache.get("linear_3x", "onnx", runtime=demo)


def test_the_remote_runtime_says_what_is_wrong(manifest):
    with pytest.raises(RuntimeUnavailable, match="cannot reach"):
        load_predictor(manifest, "linear_3x", "onnx", runtime=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(InputError, match=", ".join(TRITON_FORMATS)):
        load_predictor(manifest, "linear_3x", "pt2", runtime="http://127.0.0.1:1")
    report = verify(manifest, ["linear_3x"], device="cpu", remote=[f"http://127.0.0.1:{free_port()}"])
    assert not report.passed  # a server asked for by URL is never skipped as "not at hand"
    assert {r.format for r in report.failures()} == set(triton_formats_of(manifest.model("linear_3x")))


def test_verify_remote_from_the_command_line(demo, artifacts_copy, capsys):
    from pipeline.cli import main as cli

    args = ["verify", "--remote", demo, "--models", "adder_mynet", "--device", "cpu", "--artifacts"]
    assert cli([*args, str(artifacts_copy)]) == 0
    out = capsys.readouterr().out
    assert f"remote {demo} (adder_mynet_onnx)" in out and f"remote {demo} (adder_mynet_torchscript)" in out
    assert cli(["verify", "--remote", "ftp://x", "--artifacts", str(artifacts_copy)]) == 2


# ---- the router in-process -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(artifacts):
    """The router behind the server's request limits, with a 4 KiB body limit and batches of at most 8."""
    app = FastAPI()
    app.add_middleware(RequestLimits, limits=(("/v2/", 4096, "error"),))
    app.include_router(oip_router(Service(artifacts), max_body_bytes=4096, max_batch_size=8))
    with TestClient(app) as test_client:
        yield test_client


def test_bodies_over_the_limit_are_refused_before_parsing(small):
    big = json.dumps(_x([1.0] * 2000, shape=(1000, 2))).encode()
    answer = small.post("/v2/models/adder_mynet/infer", content=big)
    assert answer.status_code == 413 and "limit of 4,096 bytes" in answer.json()["error"]
    streamed = small.post("/v2/models/adder_mynet/infer", content=iter([big[:3000], big[3000:6000], big[6000:]]))
    assert streamed.status_code == 413 and "limit of 4,096 bytes" in streamed.json()["error"]  # no Content-Length
    bomb = gzip.compress(b" " * 1_000_000)  # about 1 KB on the wire, 1 MB inflated: stopped at the limit
    assert len(bomb) < 4096
    answer = small.post("/v2/models/adder_mynet/infer", content=bomb, headers={"Content-Encoding": "gzip"})
    assert answer.status_code == 413 and "decompressed" in answer.json()["error"]
    answer = small.post("/v2/models/adder_mynet/infer", content=json.dumps(_x([1.0] * 18, shape=(9, 2))))
    assert answer.status_code == 400 and "batch from 1 to 8" in answer.json()["error"]


def test_compressed_requests_are_accepted(small):
    body = gzip.compress(json.dumps(_x([10, 11])).encode())
    answer = small.post("/v2/models/adder_mynet/infer", content=body, headers={"Content-Encoding": "gzip"})
    assert answer.status_code == 200, answer.text
    assert [o["name"] for o in answer.json()["outputs"]] == ["sum", "hidden"]


def test_without_a_manifest_the_routes_say_so(tmp_path):
    app = FastAPI()
    app.include_router(oip_router(Service(tmp_path)))
    with TestClient(app) as test_client:
        assert test_client.get("/v2/health/live").status_code == 200
        for answer in (test_client.get("/v2/health/ready"), test_client.post("/v2/models/x/infer", json={})):
            assert answer.status_code == 503 and "make train export" in answer.json()["error"]


# ---- a selector is checked by what answered: a damaged copy of the chosen artifact must be what fails ------


def _damage(root, model: str, fmt: str) -> str:
    """Overwrite `model`'s `fmt` file in place (its sha256 in the manifest left as it was); its path."""
    manifest = json.loads((root / "manifest.json").read_text())
    kind = formats.get(fmt).artifact_kind
    path = next(a["path"] for a in manifest["models"][model]["artifacts"] if a["format"] == kind)
    (root / path).write_bytes(b"not the file export wrote")
    return path


@pytest.mark.parametrize("fmt", [f for f in formats.FORMATS if f != formats.DEFAULT_FORMAT])
def test_the_format_parameter_runs_that_artifact_and_no_other(artifacts_copy, manifest, fmt):
    if formats.get(fmt).artifact_kind not in manifest.model("adder_mynet").artifacts:
        pytest.skip(f"adder_mynet has no {fmt} file")
    damaged = _damage(artifacts_copy, "adder_mynet", fmt)
    app = FastAPI()
    app.include_router(oip_router(Service(artifacts_copy)))
    with TestClient(app) as test_client:
        asked = test_client.post("/v2/models/adder_mynet/infer", json={**_x([10, 11]), "parameters": {"format": fmt}})
        assert asked.status_code >= 400, f"format {fmt} answered although its file is damaged: {asked.text[:200]}"
        assert damaged in asked.json()["error"]  # the error is that artifact's, naming its file
        default = test_client.post("/v2/models/adder_mynet/infer", json=_x([10, 11]))
        assert default.status_code == 200, default.text  # the default format's file is intact
        if fmt in TRITON_FORMATS:  # the Triton name pins the format the same way
            name = tensor_names(manifest.model("adder_mynet"), fmt)[0][0]
            pinned = test_client.post(
                f"/v2/models/{triton_model_name('adder_mynet', fmt)}/infer", json=_x([10, 11], name=name)
            )
            assert pinned.status_code >= 400 and damaged in pinned.json()["error"]


@pytest.mark.parametrize("fmt", [f for f in formats.FORMATS if f != formats.DEFAULT_FORMAT])
def test_the_predict_format_runs_that_artifact_and_reports_it(artifacts_copy, manifest, fmt):
    from pipeline.errors import UserError

    if formats.get(fmt).artifact_kind not in manifest.model("adder_mynet").artifacts:
        pytest.skip(f"adder_mynet has no {fmt} file")
    intact = Service(artifacts_copy).predict("adder_mynet", fmt, "cpu", "10 11")
    assert (intact["format"], intact["runtime"]) == (fmt, formats.get(fmt).default_runtime)
    damaged = _damage(artifacts_copy, "adder_mynet", fmt)
    svc = Service(artifacts_copy)
    with pytest.raises(UserError, match=damaged.replace(".", r"\.")):
        svc.predict("adder_mynet", fmt, "cpu", "10 11")
    assert svc.predict("adder_mynet", formats.DEFAULT_FORMAT, "cpu", "10 11")["format"] == formats.DEFAULT_FORMAT


def test_the_remote_runtime_refuses_a_server_missing_an_output_the_manifest_lists(demo, manifest):
    """A server that serves the model without one of its outputs (another export, an edited config) is refused by
    name before any request, as one with other inputs is."""
    import dataclasses

    from pipeline.serving.remote import load_remote_predictor

    entry = manifest.model("adder_mynet")
    extra = {"name": "confidence", "shape": ["batch", 1], "dtype": "float32"}
    wider = dataclasses.replace(entry, outputs=[*entry.outputs, extra])
    with pytest.raises(RuntimeUnavailable, match=r"the manifest expects .*confidence") as refused:
        load_remote_predictor(wider, "onnx", demo)
    assert "\n" not in str(refused.value)
    assert load_remote_predictor(entry, "onnx", demo).predict([10, 11])["sum"].shape == (1,)  # the true entry loads
