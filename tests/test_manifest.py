"""Manifest validation on small hand-made manifests: every refusal is one ManifestError line naming what
is wrong, every accepted manifest reads back as written. Fast: no training, no real artifacts.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pytest

from pipeline import formats
from pipeline.artifacts.manifest import MANIFEST, Artifact, ArtifactError, Manifest, ManifestError
from pipeline.errors import UserError

KINDS = formats.ARTIFACT_KINDS  # what a manifest may list: the trained weights and every exported file
ONNX = formats.DEFAULT_FORMAT


def entry(**changes) -> dict:
    """One valid model section, as export writes it, with `changes` applied."""
    base = {
        "description": "Linear(2,8) -> ReLU -> Linear(8,1)",
        "seed": "004 §10.9",
        "inputs": [{"name": "x", "shape": ["batch", 2], "dtype": "float32", "features": ["x1", "x2"]}],
        "outputs": [
            {"name": "sum", "shape": ["batch", 1], "dtype": "float32", "features": ["sum"]},
            {"name": "hidden", "shape": ["batch", 8], "dtype": "float32", "features": [f"h{i}" for i in range(8)]},
        ],
        "examples": [[10.0, 11.0], [1.5, 2.5]],
        "artifacts": [{"format": k, "path": f"m/export-1/{k}.bin", "sha256": "0" * 64, "bytes": 3} for k in KINDS],
        "history": "m/history.json",
        "plot": "m/loss.png",
    }
    base.update(changes)
    return base


def load(tmp_path: Path, raw) -> Manifest:
    return Manifest.from_dict(tmp_path, raw, "manifest.json")


def refused(tmp_path: Path, raw) -> str:
    with pytest.raises(ManifestError) as info:
        load(tmp_path, raw)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def test_a_valid_manifest_reads_back_as_written(tmp_path):
    raw = {"schema": 1, "models": {"m": entry()}}
    manifest = load(tmp_path, raw)
    assert manifest.root == tmp_path and manifest.raw is raw and list(manifest.models) == ["m"]
    model = manifest.model("m")
    assert model.name == "m" and model.seed == "004 §10.9" and model.description.startswith("Linear(2,8)")
    assert model.input == raw["models"]["m"]["inputs"][0]
    assert model.features == ["x1", "x2"] and model.output_names == ["sum", "hidden"]
    assert model.examples == [[10.0, 11.0], [1.5, 2.5]] and model.raw is raw["models"]["m"]
    assert list(model.artifacts) == list(KINDS)
    assert model.artifact(ONNX) == Artifact(ONNX, f"m/export-1/{ONNX}.bin", "0" * 64, 3)


def test_description_and_seed_may_be_missing(tmp_path):
    raw = entry()
    del raw["description"], raw["seed"], raw["history"], raw["plot"]
    model = load(tmp_path, {"models": {"m": raw}}).model("m")
    assert model.description == "" and model.seed == ""


def test_artifact_fields_are_read_as_their_types(tmp_path):
    raw = entry(artifacts=[{"format": ONNX, "path": "m/model.onnx", "sha256": 12, "bytes": "2048"}])
    art = load(tmp_path, {"models": {"m": raw}}).model("m").artifact(ONNX)
    assert art == Artifact(ONNX, "m/model.onnx", "12", 2048)


def test_unknown_model_and_artifact_name_what_there_is(tmp_path):
    manifest = load(tmp_path, {"models": {"m": entry(), "n": entry(artifacts=[])}})
    with pytest.raises(ManifestError) as info:
        manifest.model("nope")
    assert str(info.value) == "unknown model 'nope'; expected one of: m, n"
    with pytest.raises(ManifestError, match=r"^unknown model \['m'\]; expected one of: m, n$"):
        manifest.model(["m"])
    with pytest.raises(ManifestError) as info:
        manifest.model("m").artifact("tf")
    assert str(info.value) == f"m has no 'tf' artifact; expected one of: {', '.join(KINDS)}"
    with pytest.raises(ManifestError, match="^n has no 'onnx' artifact; expected one of: $"):
        manifest.model("n").artifact("onnx")


def test_manifest_errors_are_user_errors_and_value_errors():
    assert issubclass(ManifestError, UserError) and issubclass(ManifestError, ValueError)
    assert issubclass(ArtifactError, UserError) and issubclass(ArtifactError, RuntimeError)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "manifest.json has no 'models' object; re-run `make export`"),
        ({}, "manifest.json has no 'models' object; re-run `make export`"),
        ({"models": ["m"]}, "manifest.json has no 'models' object; re-run `make export`"),
        ({"models": {"m": "x"}}, "manifest.json: model 'm' has no valid 'inputs' (list); re-run `make export`"),
        *[
            (
                {"models": {"m": entry(**{key: bad})}},
                f"manifest.json: model 'm' has no valid {key!r} (list); re-run `make export`",
            )
            for key in ("inputs", "outputs", "artifacts", "examples")
            for bad in (None, {"a": 1}, "x")
        ],
    ],
)
def test_missing_or_mistyped_sections_are_refused_naming_them(tmp_path, raw, message):
    assert refused(tmp_path, raw) == message


@pytest.mark.parametrize(
    "spec",
    [
        "x",
        {"features": ["a"]},
        {"name": 1, "features": ["a"]},
        {"name": "x"},
        {"name": "x", "features": "a"},
    ],
)
@pytest.mark.parametrize("where", ["inputs", "outputs"])
def test_malformed_tensor_specs_are_refused(tmp_path, where, spec):
    raw = entry()
    raw[where] = [*raw[where], spec]
    message = refused(tmp_path, {"models": {"m": raw}})
    assert message == "manifest.json: model 'm' has a malformed input or output spec"


def test_a_model_has_at_least_one_input(tmp_path):
    raw = entry()
    raw["inputs"] = []
    assert refused(tmp_path, {"models": {"m": raw}}) == "manifest.json: model 'm' has no input"


@pytest.mark.parametrize("where", ["inputs", "outputs"])
def test_two_tensors_of_one_name_are_refused(tmp_path, where):
    raw = entry()
    raw[where] = raw[where] * 2
    kind = where[:-1]
    message = refused(tmp_path, {"models": {"m": raw}})
    assert message.startswith(f"manifest.json: model 'm' names two {kind}s alike (")


def test_no_outputs_is_accepted_as_written(tmp_path):
    assert load(tmp_path, {"models": {"m": entry(outputs=[])}}).model("m").output_names == []


GOOD_ARTIFACT = {"format": ONNX, "path": "m/model.onnx", "sha256": "0" * 64, "bytes": 3}


@pytest.mark.parametrize(
    "changes",
    [
        {"format": None, "drop": "format"},
        {"drop": "path"},
        {"drop": "sha256"},
        {"drop": "bytes"},
        {"bytes": "many"},
        {"bytes": None},
        {"bytes": float("inf")},
        {"bytes": [3]},
    ],
    ids=["no-format", "no-path", "no-sha256", "no-bytes", "bytes-text", "bytes-null", "bytes-inf", "bytes-list"],
)
def test_malformed_artifact_entries_are_refused(tmp_path, changes):
    item = {**GOOD_ARTIFACT, **{k: v for k, v in changes.items() if k != "drop"}}
    item.pop(changes.get("drop"), None)
    message = refused(tmp_path, {"models": {"m": entry(artifacts=[item])}})
    assert message == "manifest.json: model 'm' has a malformed artifact entry"


def test_an_artifact_that_is_not_an_object_is_refused(tmp_path):
    message = refused(tmp_path, {"models": {"m": entry(artifacts=["m/model.onnx"])}})
    assert message == "manifest.json: model 'm' has a malformed artifact entry"


def test_an_unknown_artifact_format_is_refused_naming_it(tmp_path):
    raw = entry(artifacts=[{**GOOD_ARTIFACT, "format": "tensorflow"}])
    assert refused(tmp_path, {"models": {"m": raw}}) == "manifest.json: model 'm' lists unknown format 'tensorflow'"


@pytest.mark.parametrize("bad", ["", "/etc/passwd", "a\x00b", 7, None])
@pytest.mark.parametrize("where", ["artifact", "history", "plot"])
def test_paths_that_are_not_relative_are_refused(tmp_path, where, bad):
    raw = entry(artifacts=[{**GOOD_ARTIFACT, "path": bad}]) if where == "artifact" else entry(**{where: bad})
    if where != "artifact" and bad is None:  # no history or plot is allowed
        load(tmp_path, {"models": {"m": raw}})
        return
    message = refused(tmp_path, {"models": {"m": raw}})
    assert message == f"manifest.json lists path {bad!r}; expected a path relative to the artifacts directory"


@pytest.mark.parametrize("bad", ["..", "../outside.onnx", "m/../../outside.onnx"])
@pytest.mark.parametrize("where", ["artifact", "history", "plot"])
def test_paths_that_leave_the_artifacts_directory_are_refused(tmp_path, where, bad):
    root = tmp_path / "artifacts"
    root.mkdir()
    raw = entry(artifacts=[{**GOOD_ARTIFACT, "path": bad}]) if where == "artifact" else entry(**{where: bad})
    message = refused(root, {"models": {"m": raw}})
    assert message == f"manifest.json lists path {bad!r}, which is outside the artifacts directory {root.resolve()}"


def test_a_path_that_stays_inside_after_dots_is_accepted(tmp_path):
    raw = entry(artifacts=[{**GOOD_ARTIFACT, "path": "m/../m/./model.onnx"}])
    manifest = load(tmp_path, {"models": {"m": raw}})
    assert manifest.path_of("m/../m/./model.onnx") == tmp_path.resolve() / "m" / "model.onnx"


def test_path_of_refuses_what_validation_refuses(tmp_path):
    manifest = load(tmp_path, {"models": {}})
    assert manifest.path_of("a/b.onnx") == tmp_path.resolve() / "a" / "b.onnx"
    with pytest.raises(ManifestError, match="outside the artifacts directory"):
        manifest.path_of("../b.onnx")
    with pytest.raises(ManifestError, match="^manifest.json lists path '/b'; expected a path relative"):
        manifest.path_of("/b")


def test_a_symlink_out_of_the_directory_is_refused(tmp_path):
    root, outside = tmp_path / "artifacts", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "m").symlink_to(outside, target_is_directory=True)
    message = refused(root, {"models": {"m": entry(artifacts=[{**GOOD_ARTIFACT, "path": "m/model.onnx"}])}})
    assert message.endswith(f"which is outside the artifacts directory {root.resolve()}")


# ---- the files a manifest lists ------------------------------------------------------------------


def with_file(tmp_path: Path, data: bytes = b"onnx bytes", sha: str | None = None) -> tuple[Manifest, Artifact]:
    path = tmp_path / "m" / "export-1" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    digest = sha or hashlib.sha256(data).hexdigest()
    item = {"format": ONNX, "path": "m/export-1/model.onnx", "sha256": digest, "bytes": len(data)}
    manifest = load(tmp_path, {"models": {"m": entry(artifacts=[item])}})
    return manifest, manifest.model("m").artifact(ONNX)


def test_a_file_matching_its_sha256_is_given_by_its_absolute_path(tmp_path):
    manifest, art = with_file(tmp_path)
    assert manifest.verified_path(art) == tmp_path.resolve() / "m" / "export-1" / "model.onnx"


def test_a_file_not_matching_its_sha256_is_refused_naming_both_digests(tmp_path):
    manifest, art = with_file(tmp_path, sha="ab" * 32)
    got = hashlib.sha256(b"onnx bytes").hexdigest()
    with pytest.raises(ArtifactError) as info:
        manifest.verified_path(art)
    assert str(info.value) == (
        f"m/export-1/model.onnx does not match its sha256 in the manifest "
        f"(expected {'ab' * 6}..., got {got[:12]}...); refusing to load it"
    )


def test_a_missing_file_is_refused_naming_it(tmp_path):
    manifest, art = with_file(tmp_path)
    (tmp_path / "m" / "export-1" / "model.onnx").unlink()
    with pytest.raises(ArtifactError) as info:
        manifest.verified_path(art)
    assert str(info.value) == "m/export-1/model.onnx is listed in the manifest but missing; re-run `make export`"


def test_a_folder_where_the_file_should_be_is_missing_too(tmp_path):
    manifest, art = with_file(tmp_path)
    path = tmp_path / "m" / "export-1" / "model.onnx"
    path.unlink()
    path.mkdir()
    with pytest.raises(ArtifactError, match="is listed in the manifest but missing"):
        manifest.verified_path(art)


# ---- the file itself -----------------------------------------------------------------------------


def write_manifest(root: Path, content: bytes | dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    data = json.dumps(content).encode() if isinstance(content, dict) else content
    (root / MANIFEST).write_bytes(data)
    return root / MANIFEST


def test_load_reads_the_file_in_the_directory(tmp_path):
    raw = {"schema": 1, "models": {"m": entry()}}
    write_manifest(tmp_path, raw)
    manifest = Manifest.load(str(tmp_path))
    assert manifest.root == tmp_path and manifest.raw == raw and manifest.model("m").features == ["x1", "x2"]


def test_load_names_the_file_in_its_errors(tmp_path):
    path = write_manifest(tmp_path, {"models": {"m": entry(inputs=[])}})
    with pytest.raises(ManifestError) as info:
        Manifest.load(tmp_path)
    assert str(info.value) == f"{path}: model 'm' has no input"


def test_no_manifest_says_how_to_create_one(tmp_path):
    with pytest.raises(ManifestError) as info:
        Manifest.load(tmp_path / "artifacts")
    root = tmp_path / "artifacts"
    assert str(info.value) == (
        f"no manifest at {root / MANIFEST}: create the artifacts with `make train export` "
        f"(or `python -m pipeline train --artifacts {root} && python -m pipeline export --artifacts {root}`)"
    )
    (root / MANIFEST).mkdir(parents=True)  # a folder of that name is no manifest either
    with pytest.raises(ManifestError, match="^no manifest at "):
        Manifest.load(root)


@pytest.mark.parametrize(
    "content",
    [b"{", b"", b"\xff\xfe{}", b"[" * 100_000, b'{"models": ' + b"9" * 5000 + b"}"],
    ids=["truncated", "empty", "not-utf8", "too-deep", "huge-integer"],
)
def test_a_manifest_that_is_not_json_is_one_line_naming_it(tmp_path, content):
    path = write_manifest(tmp_path, content)
    with pytest.raises(ManifestError) as info:
        Manifest.load(tmp_path)
    message = str(info.value)
    assert message.startswith(f"{path} is not valid JSON (") and message.endswith("); re-run `make export`")
    assert "\n" not in message


def test_validation_does_not_change_what_it_was_given(tmp_path):
    raw = {"models": {"m": entry()}}
    before = copy.deepcopy(raw)
    load(tmp_path, raw)
    assert raw == before


SPEC = {"name": "y", "shape": ["batch", 2], "dtype": "float32", "features": ["a", "b"]}


@pytest.mark.parametrize(
    "changes",
    [
        {"shape": None},
        {"shape": "batch, 2"},
        {"shape": ["batch", 0]},
        {"shape": ["batch", 2, 0]},
        {"shape": ["batch", 2**31]},
        {"shape": ["batch", 2.0]},
        {"dtype": 5},
        {"dtype": "float16"},
        {"name": None},
        {"features": None},
    ],
)
def test_a_spec_wrong_in_one_field_is_refused(tmp_path, changes):
    raw = entry()
    raw["outputs"] = [*raw["outputs"], {**SPEC, **changes}]
    assert refused(tmp_path, {"models": {"m": raw}}) == "manifest.json: model 'm' has a malformed input or output spec"


def test_a_spec_without_a_dtype_is_float32_and_the_largest_dimension_is_accepted(tmp_path):
    raw = entry()
    spec = {k: v for k, v in SPEC.items() if k != "dtype"}
    raw["outputs"] = [
        *raw["outputs"],
        {**spec, "shape": ["batch", 2**31 - 1, 1]},
        {**SPEC, "name": "z", "dtype": "int64"},
    ]
    assert load(tmp_path, {"models": {"m": raw}}).model("m").outputs[-2]["shape"] == ["batch", 2**31 - 1, 1]


def test_two_tensors_of_one_name_are_refused_listing_the_names(tmp_path):
    raw = entry()
    raw["inputs"] = raw["inputs"] * 2
    assert refused(tmp_path, {"models": {"m": raw}}) == "manifest.json: model 'm' names two inputs alike (x, x)"


@pytest.mark.parametrize(
    "not_applicable",
    [["onnx-int8"], {"tflite": "no such format"}, {ONNX: "listed as an artifact too"}, {"onnx-int8": 3}],
)
def test_a_malformed_not_applicable_is_refused(tmp_path, not_applicable):
    raw = entry(not_applicable=not_applicable)
    assert refused(tmp_path, {"models": {"m": raw}}) == (
        "manifest.json: model 'm' has a malformed 'not_applicable' (format -> reason)"
    )


def test_a_format_found_not_applicable_reads_back_with_its_reason(tmp_path):
    raw = entry(artifacts=[a for a in entry()["artifacts"] if a["format"] != "onnx-int8"])
    raw["not_applicable"] = {"onnx-int8": "no MatMul"}
    assert load(tmp_path, {"models": {"m": raw}}).model("m").not_applicable == {"onnx-int8": "no MatMul"}
