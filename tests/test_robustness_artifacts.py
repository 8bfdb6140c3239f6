"""Robustness at the loader level: names are not paths, and damaged or hostile artifacts are
refused with one line naming the file while every other model keeps working in the same cache.

Two layers are exercised. A damaged file is first refused by its sha256 (Manifest.verified_path), before
any parser sees it. Then the same file with its sha256 re-recorded in the manifest (an attacker who
writes the manifest too) reaches the parsers, and load_predictor must still refuse it with an
ArtifactError naming the file. The HTTP side of both parts is in test_robustness_app.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import random
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.artifacts import manifest as manifest_module
from pipeline.artifacts.manifest import MANIFEST, ArtifactError, Manifest, ManifestError
from pipeline.formats import FORMATS
from pipeline.formats import get as format_spec
from pipeline.runtime.inputs import InputError
from pipeline.runtime.predictor import PredictorCache, RuntimeUnavailable, load_predictor
from tests.conftest import rerecord

pytestmark = pytest.mark.robustness

VICTIM = "linear_3x"  # the model whose files get damaged
BYSTANDER = "adder_mynet"  # must keep working beside it
# Neither has an int8 file: export finds no weight worth quantizing (test_quantize.py).
SERVED = tuple(f for f in FORMATS if f != "onnx-int8")  # the victim and bystander have no int8 file
DAMAGES = ("truncated", "empty", "random")
HOSTILE_NAMES = [
    "../../etc/passwd",
    "/etc/passwd",
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "..\\..\\etc\\passwd",
    "file:///etc/passwd",
    "linear_3x/../../../etc/passwd",
    "manifest.json",
    "linear_3x/state_dict.pt",
    "linear_3x\x00",
    " linear_3x",
    "LINEAR_3X",
    "",
    ".",
    "..",
    "~root",
    "state_dict",
    "onnx/../onnx",
    "C:\\Windows\\win.ini",
    "\\\\server\\share",
]


# ---- helpers -----------------------------------------------------------------------------------


def read_raw(root: Path) -> dict:
    return json.loads((root / MANIFEST).read_text(encoding="utf-8"))


def write_raw(root: Path, raw: dict) -> None:
    (root / MANIFEST).write_text(json.dumps(raw, indent=2), encoding="utf-8")


def rel_path(root: Path, model: str, artifact_format: str) -> str:
    (art,) = [a for a in read_raw(root)["models"][model]["artifacts"] if a["format"] == artifact_format]
    return art["path"]


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(random.Random(f"{path.name}-6").randbytes(len(data)))


def assert_one_line_naming(exc: BaseException, rel: str) -> None:
    message = str(exc)
    assert rel in message, message
    assert len(message.splitlines()) == 1, message


def expected_outputs(manifest: Manifest, model: str) -> list[dict[str, np.ndarray]]:
    eager = load_predictor(manifest, model, "eager")
    return [eager(example) for example in manifest.model(model).examples]


def assert_serves(cache: PredictorCache, model: str, formats, reference) -> None:
    examples = cache.manifest.model(model).examples
    for fmt in formats:
        predictor = cache.get(model, fmt)
        for example, want in zip(examples, reference, strict=True):
            got = predictor(example)
            spec = format_spec(fmt)  # a derived format (float16) is held to its own declared tolerance
            for name, value in want.items():
                atol = spec.atol + spec.scale * float(np.abs(value).max())
                np.testing.assert_allclose(got[name], value, rtol=spec.rtol, atol=atol)


@pytest.fixture(scope="module")
def references(manifest) -> dict[str, list[dict[str, np.ndarray]]]:
    return {m: expected_outputs(manifest, m) for m in (VICTIM, BYSTANDER)}


# ---- part 3: damaged files, every format -------------------------------------------------------


@pytest.mark.parametrize("fmt", SERVED)
@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("sha_rerecorded", [False, True], ids=["sha-stale", "sha-rerecorded"])
def test_damaged_artifact_is_refused_naming_it_and_the_rest_keeps_working(
    artifacts_copy, references, fmt, how, sha_rerecorded
):
    rel = rel_path(artifacts_copy, VICTIM, FORMATS[fmt].artifact_kind)
    damage(artifacts_copy / rel, how)
    if sha_rerecorded:
        rerecord(artifacts_copy, rel)
    cache = PredictorCache(Manifest.load(artifacts_copy))
    for _ in range(2):  # a failed load is not cached as a working predictor
        with pytest.raises(ArtifactError) as info:
            cache.get(VICTIM, fmt)
        assert_one_line_naming(info.value, rel)
        assert ("could not be loaded" if sha_rerecorded else "does not match its sha256") in str(info.value)
    others = [f for f in SERVED if f != fmt]
    assert_serves(cache, VICTIM, others, references[VICTIM])
    assert_serves(cache, BYSTANDER, SERVED, references[BYSTANDER])


@pytest.mark.parametrize("fmt", SERVED)
def test_missing_artifact_is_refused_naming_it(artifacts_copy, references, fmt):
    rel = rel_path(artifacts_copy, VICTIM, FORMATS[fmt].artifact_kind)
    (artifacts_copy / rel).unlink()
    cache = PredictorCache(Manifest.load(artifacts_copy))
    with pytest.raises(ArtifactError, match="missing") as info:
        cache.get(VICTIM, fmt)
    assert_one_line_naming(info.value, rel)
    assert_serves(cache, BYSTANDER, SERVED, references[BYSTANDER])


def test_onnx_reference_runtime_refuses_damaged_file_too(artifacts_copy):
    rel = rel_path(artifacts_copy, VICTIM, "onnx")
    damage(artifacts_copy / rel, "truncated")
    rerecord(artifacts_copy, rel)
    with pytest.raises(ArtifactError, match="onnx-reference") as info:
        load_predictor(Manifest.load(artifacts_copy), VICTIM, "onnx", runtime="onnx-reference")
    assert_one_line_naming(info.value, rel)


# ---- part 3: hostile files that would run code --------------------------------------------------


class Payload:
    """Unpickling this runs `exec`, which writes the marker file: what a hostile checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('payload ran')",))


def hostile_state_dict(path: Path, marker: Path) -> None:
    torch.save({"linear.weight": Payload(marker), "linear.bias": torch.zeros(1)}, path)


@pytest.mark.parametrize("sha_rerecorded", [False, True], ids=["sha-stale", "sha-rerecorded"])
def test_state_dict_pickle_payload_never_runs(artifacts_copy, tmp_path, references, sha_rerecorded):
    marker = tmp_path / "marker"
    rel = rel_path(artifacts_copy, VICTIM, "state_dict")
    hostile_state_dict(artifacts_copy / rel, marker)
    if sha_rerecorded:
        rerecord(artifacts_copy, rel)
    cache = PredictorCache(Manifest.load(artifacts_copy))
    with pytest.raises(ArtifactError) as info:
        cache.get(VICTIM, "eager")
    assert_one_line_naming(info.value, rel)
    if sha_rerecorded:  # torch.load(weights_only=True) refused the `exec` global
        assert "UnpicklingError" in str(info.value) and "GLOBAL exec" in str(info.value)
    assert not marker.exists(), "the pickle payload ran"
    assert_serves(cache, BYSTANDER, SERVED, references[BYSTANDER])
    # The control: the very file refused above runs its payload when loaded the unsafe way.
    torch.load(artifacts_copy / rel, weights_only=False)
    assert marker.read_text() == "payload ran"


def test_export_never_runs_a_pickle_payload_in_trained_weights(artifacts_copy, tmp_path):
    """A hostile state_dict in a model's training outputs (history re-pointed at it) is not exported."""
    from pipeline.artifacts.fileio import sha256_file
    from pipeline.catalog import get
    from pipeline.export import run_export

    marker = tmp_path / "marker"
    state, history = artifacts_copy / VICTIM / "state_dict.pt", artifacts_copy / VICTIM / "history.json"
    hostile_state_dict(state, marker)
    hist = json.loads(history.read_text())
    hist["state_dict_sha256"] = sha256_file(state)
    history.write_text(json.dumps(hist))
    before = read_raw(artifacts_copy)["models"]
    _, errors = run_export([get(VICTIM)], artifacts_copy, log=lambda _: None)
    assert not marker.exists(), "the pickle payload ran"
    assert len(errors) == 1 and "UnpicklingError" in errors[0] and "GLOBAL exec" in errors[0], errors
    assert f"{VICTIM}/export-" in errors[0] and "/state_dict.pt" in errors[0]  # the file it refused
    assert read_raw(artifacts_copy)["models"] == before  # the previous artifacts stay published


def _rewrite_zip(path: Path, replace) -> None:
    """Rewrite the zip archive at `path`, passing every member's bytes through replace(name, data)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(buf, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, replace(info.filename, zin.read(info.filename)))
    path.write_bytes(buf.getvalue())


def test_torchscript_pickle_payload_never_runs(artifacts_copy, tmp_path):
    marker = tmp_path / "marker"
    rel = rel_path(artifacts_copy, VICTIM, "torchscript")
    evil = pickle.dumps(Payload(marker), protocol=2)
    pickles = ("/data.pkl", "/constants.pkl")
    _rewrite_zip(artifacts_copy / rel, lambda name, data: evil if name.endswith(pickles) else data)
    rerecord(artifacts_copy, rel)
    _assert_refused_without_running(artifacts_copy, "torchscript", rel, marker)


def _assert_refused_without_running(root: Path, fmt: str, rel: str, marker: Path, match: str | None = None) -> None:
    """Loading VICTIM's `fmt` artifact is one ArtifactError naming `rel`, and the payload never ran."""
    with pytest.raises(ArtifactError, match=match) as info:
        load_predictor(Manifest.load(root), VICTIM, fmt)
    assert_one_line_naming(info.value, rel)
    assert not marker.exists(), f"the pickle payload in the {fmt} file ran"


def _hostile_pt2(root: Path, marker: Path) -> str:
    rel = rel_path(root, VICTIM, "pt2")
    buf = io.BytesIO()
    torch.save((Payload(marker),), buf)
    sample_inputs = "data/sample_inputs/model.pt"
    _rewrite_zip(root / rel, lambda name, data: buf.getvalue() if name.endswith(sample_inputs) else data)
    return rel


def test_pt2_pickle_payload_is_refused_by_its_sha256(artifacts_copy, tmp_path):
    marker = tmp_path / "marker"
    rel = _hostile_pt2(artifacts_copy, marker)
    _assert_refused_without_running(artifacts_copy, "pt2", rel, marker, "does not match its sha256")


def test_pt2_pickle_payload_with_rerecorded_sha_never_runs(artifacts_copy, tmp_path):
    marker = tmp_path / "marker"
    rel = _hostile_pt2(artifacts_copy, marker)
    rerecord(artifacts_copy, rel)
    # The sha256 vouches for the file now, so only the loader's forced weights_only stands in the way.
    _assert_refused_without_running(artifacts_copy, "pt2", rel, marker)


def _onnx_with_external_data(path: Path, location: str) -> None:
    import onnx
    from onnx import TensorProto, helper

    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1])
    weight.data_location = TensorProto.EXTERNAL
    for key, value in {"location": location, "offset": "0", "length": "4"}.items():
        weight.external_data.add(key=key, value=value)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    path.write_bytes(model.SerializeToString())
    assert onnx.load(str(path), load_external_data=False).graph.initializer[0].external_data


@pytest.mark.parametrize("runtime", ["onnxruntime", "onnx-reference"])
@pytest.mark.parametrize("location", ["../../../../../etc/hostname", "/etc/hostname", "../../manifest.json"])
def test_onnx_external_data_outside_its_folder_is_refused(artifacts_copy, runtime, location):
    rel = rel_path(artifacts_copy, VICTIM, "onnx")
    _onnx_with_external_data(artifacts_copy / rel, location)
    rerecord(artifacts_copy, rel)
    with pytest.raises(ArtifactError) as info:
        load_predictor(Manifest.load(artifacts_copy), VICTIM, "onnx", runtime=runtime)
    assert_one_line_naming(info.value, rel)


# ---- part 3: malformed manifests ------------------------------------------------------------------

MALFORMED_JSON = {
    "empty": b"",
    "truncated": None,  # the real manifest cut in half
    "not-utf8": b"\xff\xfe\x00garbage",
    "random-bytes": random.Random(6).randbytes(2048),
    "deep-nesting": b"[" * 200_000,
    "huge-integer": b'{"schema": ' + b"9" * 5000 + b"}",
    "nan": b'{"models": NaN}',
}


@pytest.mark.parametrize("case", sorted(MALFORMED_JSON))
def test_malformed_manifest_gives_one_line_naming_it(artifacts_copy, case):
    path = artifacts_copy / MANIFEST
    data = MALFORMED_JSON[case]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2] if data is None else data)
    with pytest.raises(ManifestError) as info:
        Manifest.load(artifacts_copy)
    assert_one_line_naming(info.value, str(path))


def _drop(*keys):
    def mutate(raw):
        target = raw
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]

    return mutate


def _set(value, *keys):
    def mutate(raw):
        target = raw
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return mutate


MISSING_OR_WRONG = {
    "no-models": _drop("models"),
    "models-is-list": _set([], "models"),
    "top-is-list": lambda raw: raw.clear() or raw.update({"models": None}),
    "model-is-number": _set(5, "models", VICTIM),
    "no-inputs": _drop("models", VICTIM, "inputs"),
    "no-outputs": _drop("models", VICTIM, "outputs"),
    "no-artifacts": _drop("models", VICTIM, "artifacts"),
    "no-examples": _drop("models", VICTIM, "examples"),
    "input-without-features": _drop("models", VICTIM, "inputs", 0, "features"),
    "two-inputs": lambda raw: raw["models"][VICTIM]["inputs"].append(raw["models"][VICTIM]["inputs"][0]),
    "artifact-without-sha256": _drop("models", VICTIM, "artifacts", 0, "sha256"),
    "artifact-without-path": _drop("models", VICTIM, "artifacts", 0, "path"),
    "artifact-without-format": _drop("models", VICTIM, "artifacts", 0, "format"),
    "artifact-bytes-not-a-number": _set("many", "models", VICTIM, "artifacts", 0, "bytes"),
    "artifact-bytes-infinite": _set(float("inf"), "models", VICTIM, "artifacts", 0, "bytes"),
    "artifact-is-string": _set("model.onnx", "models", VICTIM, "artifacts", 0),
    "unknown-format": _set("pickle", "models", VICTIM, "artifacts", 0, "format"),
}


@pytest.mark.parametrize("case", sorted(MISSING_OR_WRONG))
def test_manifest_missing_keys_gives_one_line_naming_it(artifacts_copy, case):
    raw = read_raw(artifacts_copy)
    MISSING_OR_WRONG[case](raw)
    (artifacts_copy / MANIFEST).write_text(json.dumps(raw))  # allow_nan: "inf" is written as Infinity
    with pytest.raises(ManifestError) as info:
        Manifest.load(artifacts_copy)
    assert_one_line_naming(info.value, str(artifacts_copy / MANIFEST))


OUTSIDE_PATHS = [
    "../../../../../../etc/passwd",
    "/etc/passwd",
    "linear_3x/../../outside.onnx",
    "..",
    "",
    "a\x00b",
]


@pytest.mark.parametrize("where", ["artifact", "history", "plot"])
@pytest.mark.parametrize("bad", OUTSIDE_PATHS)
def test_manifest_path_outside_the_artifacts_directory_is_refused(artifacts_copy, where, bad):
    raw = read_raw(artifacts_copy)
    if where == "artifact":
        raw["models"][VICTIM]["artifacts"][0]["path"] = bad
    else:
        raw["models"][VICTIM][where] = bad
    write_raw(artifacts_copy, raw)
    with pytest.raises(ManifestError) as info:
        Manifest.load(artifacts_copy)
    assert_one_line_naming(info.value, str(artifacts_copy / MANIFEST))
    assert repr(bad) in str(info.value)


def test_manifest_path_through_a_symlink_out_of_the_directory_is_refused(artifacts_copy, tmp_path):
    secret = tmp_path / "outside" / "secret.onnx"
    secret.parent.mkdir()
    secret.write_bytes(b"not yours")
    (artifacts_copy / VICTIM / "link.onnx").symlink_to(secret)
    (artifacts_copy / VICTIM / "linkdir").symlink_to(secret.parent, target_is_directory=True)
    for rel in (f"{VICTIM}/link.onnx", f"{VICTIM}/linkdir/secret.onnx"):
        raw = read_raw(artifacts_copy)
        art = next(a for a in raw["models"][VICTIM]["artifacts"] if a["format"] == "onnx")
        art.update(path=rel, sha256=hashlib.sha256(b"not yours").hexdigest(), bytes=9)
        write_raw(artifacts_copy, raw)
        with pytest.raises(ManifestError, match="outside the artifacts directory"):
            Manifest.load(artifacts_copy)


@pytest.mark.parametrize(
    "bad", ["..%2F..%2Fetc%2Fpasswd", "%2e%2e/%2e%2e/etc/passwd", "file:///etc/passwd", "..\\..\\etc\\passwd"]
)
def test_encoded_manifest_paths_are_never_decoded(artifacts_copy, bad):
    """Such a path is a strange name inside the directory, which does not exist: never /etc/passwd."""
    raw = read_raw(artifacts_copy)
    art = next(a for a in raw["models"][VICTIM]["artifacts"] if a["format"] == "onnx")
    art["path"] = bad
    write_raw(artifacts_copy, raw)
    manifest = Manifest.load(artifacts_copy)
    assert manifest.path_of(bad).is_relative_to(artifacts_copy.resolve())
    with pytest.raises(ArtifactError, match="missing"):
        load_predictor(manifest, VICTIM, "onnx")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_manifest_entries_load_or_give_manifest_error(manifest, data):
    """Any JSON value in any field of a model entry: a ManifestError, never another exception."""
    raw = json.loads(json.dumps(manifest.raw))
    entry = raw["models"][VICTIM]
    junk = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3),
        max_leaves=6,
    )
    key = data.draw(st.sampled_from(sorted(entry)))
    if data.draw(st.booleans()) and isinstance(entry[key], list) and entry[key]:
        index = data.draw(st.integers(0, len(entry[key]) - 1))
        item = entry[key][index]
        if isinstance(item, dict) and item:
            item[data.draw(st.sampled_from(sorted(item)))] = data.draw(junk)
        else:
            entry[key][index] = data.draw(junk)
    else:
        entry[key] = data.draw(junk)
    try:
        Manifest.from_dict(manifest.root, raw)
    except ManifestError as exc:
        assert len(str(exc).splitlines()) == 1


# ---- part 2: names are looked up, never joined into a path ---------------------------------------


@pytest.fixture
def path_calls(monkeypatch):
    """Every manifest-relative path the loader resolves, to prove names never reach a path."""
    calls: list = []
    real = manifest_module._inside

    def spy(root, rel, where):
        calls.append(rel)
        return real(root, rel, where)

    monkeypatch.setattr(manifest_module, "_inside", spy)
    return calls


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_model_format_and_device_names_are_refused(manifest, path_calls, name):
    with pytest.raises(ManifestError, match="unknown model"):
        load_predictor(manifest, name, "onnx")
    for fmt_or_device in ({"fmt": name}, {"device": name}):
        args = {"fmt": "onnx", "device": "cpu", **fmt_or_device}
        with pytest.raises((InputError, RuntimeUnavailable)):
            load_predictor(manifest, VICTIM, args["fmt"], device=args["device"])
    assert path_calls == []  # nothing was resolved: every name was refused before any path existed


def test_names_of_existing_files_are_not_models(manifest, path_calls):
    listed = [a.path for m in manifest.models.values() for a in m.artifacts.values()]
    absolute = [str(manifest.root / p) for p in listed[:6]]
    for name in [*listed[:6], *absolute, MANIFEST, str(manifest.root / MANIFEST), "/etc/passwd"]:
        with pytest.raises(ManifestError, match="unknown model"):
            load_predictor(manifest, name, "onnx")
        with pytest.raises(InputError, match="unknown format"):
            load_predictor(manifest, VICTIM, name)
    assert path_calls == []


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    model=st.one_of(
        st.text(max_size=40),
        st.sampled_from(HOSTILE_NAMES),
        st.none(),
        st.integers(),
        st.lists(st.text(max_size=3), max_size=2),
    ),
    fmt=st.one_of(st.sampled_from(tuple(FORMATS)), st.text(max_size=20), st.none()),
    device=st.one_of(st.sampled_from(["cpu", "cuda", "cuda:7", "auto"]), st.text(max_size=20), st.none()),
)
def test_fuzzed_names_only_load_what_the_manifest_lists(manifest, model, fmt, device):
    try:
        load_predictor(manifest, model, fmt, device=device)
    except (ManifestError, InputError, RuntimeUnavailable) as exc:
        assert len(str(exc).splitlines()) == 1
        return
    assert model in manifest.models and fmt in tuple(FORMATS)
