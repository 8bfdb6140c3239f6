"""The export stage: four formats per model, self-described, verified, indexed, replaced atomically."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from pipeline import formats
from pipeline.artifacts.fileio import sha256_file
from pipeline.artifacts.manifest import Manifest
from pipeline.catalog import CATALOG
from pipeline.formats import ARTIFACT_KINDS
from pipeline.runtime.parity import parity_inputs
from pipeline.runtime.predictor import load_predictor

from .conftest import run_cli


def onnx_path(manifest: Manifest, name: str):
    return manifest.path_of(manifest.model(name).artifact("onnx").path)


def eager_outputs(manifest: Manifest) -> dict[str, dict[str, list]]:
    """Each model's eager outputs on its catalog examples, as JSON-ready lists."""
    out = {}
    for name in CATALOG:
        examples = np.asarray(manifest.model(name).examples)
        out[name] = {k: v.tolist() for k, v in load_predictor(manifest, name, "eager").predict(examples).items()}
    return out


def run_isolated(script: str, payload: object) -> None:
    """Run `script` in a fresh interpreter outside the repository, `payload` as JSON on stdin."""
    result = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=300,
        cwd="/",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"ok {len(CATALOG)}"


def test_every_model_has_all_four_formats_with_matching_sha256(manifest, artifacts):
    assert list(manifest.models) == list(CATALOG)
    for entry in manifest.models.values():
        assert set(entry.not_applicable) <= set(formats.DERIVED)  # only a derived format may be left out
        assert sorted(entry.artifacts) == sorted(f for f in ARTIFACT_KINDS if f not in entry.not_applicable)
        for art in entry.artifacts.values():
            path = manifest.path_of(art.path)
            assert path.is_relative_to(artifacts.resolve())
            assert sha256_file(path) == art.sha256
            for extra in art.files:  # an IR's weights beside its graph: each under its own sha256
                assert sha256_file(manifest.path_of(extra.path)) == extra.sha256
            assert path.stat().st_size + sum(f.bytes for f in art.files) == art.bytes  # bytes: every file
        assert entry.raw["parity"]["passed"] is True
        assert manifest.path_of(entry.raw["history"]).is_file() and manifest.path_of(entry.raw["plot"]).is_file()
    raw = manifest.raw
    assert {"torch", "onnx", "onnxruntime"} <= set(raw["versions"]) and raw["created"].endswith("Z")
    lr_study = [p for p in manifest.model("linear_3x").raw["extra"] if p.endswith("lr_study.json")]
    assert lr_study and manifest.path_of(lr_study[0]).is_file()


def test_parity_report_covers_every_model_artifact_runtime_and_output(artifacts):
    report = json.loads((artifacts / "parity.json").read_text())
    assert report["passed"] and report["rule"].startswith("a row passes when")
    for row in report["rows"]:  # each row holds its format's own declared bound
        spec = formats.get(row["format"])
        assert (row["atol"], row["rtol"], row["scale"]) == (spec.atol, spec.rtol, spec.scale), row
        assert row["rule"] == spec.tolerance.describe() and row["min_atol"] is not None, row
    float32 = {(r["atol"], r["rtol"]) for r in report["rows"] if not formats.get(r["format"]).source}
    assert float32 == {(1e-5, 1e-4)}
    seen = {(r["model"], r["format"], r["runtime"], r["output"]) for r in report["rows"]}
    for name, spec in CATALOG.items():
        for fmt, runtime in [
            ("torchscript", "torch"),
            ("pt2", "torch"),
            ("onnx", "onnxruntime"),
            ("onnx", "onnx-reference"),
        ]:
            for out in spec.outputs:
                assert (name, fmt, runtime, out.name) in seen
    assert all(r["passed"] and r["error"] is None for r in report["rows"])
    # Outside two_layer_raw (outputs ~1e4 from unscaled weights) every difference is float32 round-off.
    float32 = [r for r in report["rows"] if r["model"] != "two_layer_raw" and not formats.get(r["format"]).source]
    assert max(r["max_abs"] for r in float32) < 1e-5


@pytest.mark.parametrize("name", ["adder_mynet", "two_layer_raw"])  # two outputs; outputs ~1e4
def test_parity_rows_hold_the_differences_measured_independently(artifacts, manifest, name):
    """Each row's max_abs and verdict, recomputed here from the artifacts with NumPy alone."""
    report = json.loads((artifacts / "parity.json").read_text())
    entry = manifest.model(name)
    batches = parity_inputs(manifest, name)
    want = [load_predictor(manifest, name, "eager").outputs(b) for b in batches]
    rows = [r for r in report["rows"] if r["model"] == name]
    assert {r["output"] for r in rows} == set(entry.output_names)
    for fmt, runtime in sorted({(r["format"], r["runtime"]) for r in rows}):
        predictor = load_predictor(manifest, name, fmt, runtime=runtime, device="cpu")
        got = [predictor.outputs(b) for b in batches]
        for output in entry.output_names:
            row = next(r for r in rows if (r["format"], r["runtime"], r["output"]) == (fmt, runtime, output))
            diffs = [np.abs(np.float64(g[output]) - np.float64(w[output])) for w, g in zip(want, got, strict=True)]
            bounds = [
                row["atol"]
                + row["rtol"] * np.abs(np.float64(w[output]))
                + row["scale"] * np.abs(np.float64(w[output])).max()
                for w in want
            ]
            assert row["max_abs"] == pytest.approx(max(d.max() for d in diffs), rel=1e-6, abs=1e-12), row
            assert row["passed"] == all(bool((d <= b).all()) for d, b in zip(diffs, bounds, strict=True)), row


@pytest.mark.parametrize("name", list(CATALOG))
def test_onnx_file_is_self_contained_checked_and_self_described(manifest, name):
    path = onnx_path(manifest, name)
    listed = sorted(Path(a.path).name for a in manifest.model(name).artifacts.values() if a.path.endswith(".onnx"))
    assert sorted(p.name for p in path.parent.glob("*.onnx*")) == listed  # no external .data file
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 18
    spec = CATALOG[name]
    assert [i.name for i in model.graph.input] == ["x"]
    assert [o.name for o in model.graph.output] == [t.name for t in spec.outputs]
    for value in [*model.graph.input, *model.graph.output]:
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert model.producer_name == "seed-pipeline" and spec.description in model.doc_string
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["model"] == name and meta["seed_source"] == spec.seed
    assert json.loads(meta["input_features"]) == {"x": list(spec.inputs[0].features)}
    assert json.loads(meta["output_names"]) == [t.name for t in spec.outputs]
    assert meta["state_dict_sha256"] == manifest.model(name).artifact("state_dict").sha256


def test_onnx_runs_with_numpy_and_onnxruntime_alone(manifest):
    """Another program, with no torch and none of our code, gets the eager outputs."""
    eager = eager_outputs(manifest)
    paths = {name: str(onnx_path(manifest, name)) for name in CATALOG}
    script = textwrap.dedent(
        """
        import json, sys
        import numpy as np, onnxruntime as ort
        paths, eager = json.loads(sys.stdin.read())
        for name, path in paths.items():
            session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            meta = session.get_modelmeta().custom_metadata_map
            features = json.loads(meta["input_features"])["x"]
            outputs = json.loads(meta["output_names"])
            examples = np.asarray(json.loads(meta["examples"]), np.float32)
            assert examples.shape[1] == len(features), name
            got = session.run(outputs, {"x": examples})
            for out, value in zip(outputs, got):
                np.testing.assert_allclose(value, np.asarray(eager[name][out]), rtol=1e-4, atol=1e-5)
        assert "torch" not in sys.modules and "pipeline" not in sys.modules
        print("ok", len(paths))
        """
    )
    run_isolated(script, [paths, eager])


def test_torchscript_and_pt2_load_with_torch_alone(manifest):
    eager = eager_outputs(manifest)
    paths = {
        name: [str(manifest.path_of(manifest.model(name).artifact(f).path)) for f in ("torchscript", "pt2")]
        for name in CATALOG
    }
    script = textwrap.dedent(
        """
        import json, sys, warnings
        import torch
        warnings.simplefilter("ignore", FutureWarning)
        paths, eager = json.loads(sys.stdin.read())
        for name, (ts_path, pt2_path) in paths.items():
            files = {"metadata.json": ""}
            ts = torch.jit.load(ts_path, _extra_files=files)
            meta = json.loads(files["metadata.json"])
            extra = {"metadata.json": ""}
            program = torch.export.load(pt2_path, extra_files=extra)
            assert json.loads(extra["metadata.json"]) == meta
            x = torch.zeros(5, len(meta["input_features"]["x"]))  # an unseen batch size
            for module in (ts, program.module()):
                out = module(torch.tensor(eager[name]["__x__"], dtype=torch.float32))
                outs = out if isinstance(out, (tuple, list)) else (out,)
                for key, value in zip(meta["output_names"], outs):
                    torch.testing.assert_close(value, torch.tensor(eager[name][key]), rtol=1e-4, atol=1e-5)
                out5 = module(x)
                assert (out5 if isinstance(out5, torch.Tensor) else out5[0]).shape[0] == 5
        assert "pipeline" not in sys.modules
        print("ok", len(paths))
        """
    )
    for name in CATALOG:
        eager[name]["__x__"] = manifest.model(name).examples
    run_isolated(script, [paths, eager])


def test_verify_passes_on_good_artifacts(artifacts_copy):
    result = run_cli("verify", "--models", "adder_mynet,linear_3x", "--artifacts", str(artifacts_copy))
    assert result.returncode == 0, result.stderr
    assert "adder_mynet" in result.stdout and "onnx-reference" in result.stdout
    assert re.search(r"^(\d+)/\1 comparisons pass; a row passes when", result.stdout, re.M), result.stdout


def _perturb_onnx_initializer(manifest: Manifest, name: str, rerecord: bool) -> str:
    path = onnx_path(manifest, name)
    model = onnx.load(str(path))
    init = model.graph.initializer[0]
    values = numpy_helper.to_array(init).copy()
    values.flat[0] += 0.5
    init.CopyFrom(numpy_helper.from_array(values, init.name))
    path.write_bytes(model.SerializeToString())
    if rerecord:  # as a broken exporter would: the manifest vouches for the wrong file
        raw = json.loads((manifest.root / "manifest.json").read_text())
        for art in raw["models"][name]["artifacts"]:
            if art["format"] == "onnx":
                art["sha256"], art["bytes"] = sha256_file(path), path.stat().st_size
        (manifest.root / "manifest.json").write_text(json.dumps(raw))
    return manifest.model(name).artifact("onnx").path


def test_verify_fails_naming_model_and_runtime_when_an_onnx_initializer_is_perturbed(artifacts_copy):
    manifest = Manifest.load(artifacts_copy)
    _perturb_onnx_initializer(manifest, "adder_mynet", rerecord=True)
    result = run_cli("verify", "--artifacts", str(artifacts_copy))
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors and all("adder_mynet onnx" in line for line in errors)
    assert any("onnxruntime" in line for line in errors) and any("onnx-reference" in line for line in errors)
    report = json.loads((artifacts_copy / "parity.json").read_text())
    failed = {(r["model"], r["runtime"]) for r in report["rows"] if not r["passed"]}
    assert failed == {("adder_mynet", "onnxruntime"), ("adder_mynet", "onnx-reference")}


def test_verify_refuses_a_file_that_no_longer_matches_its_sha256(artifacts_copy):
    manifest = Manifest.load(artifacts_copy)
    rel = _perturb_onnx_initializer(manifest, "sigmoid_net", rerecord=False)
    result = run_cli("verify", "--models", "sigmoid_net", "--artifacts", str(artifacts_copy))
    assert result.returncode == 1
    assert f"{rel} does not match its sha256" in result.stderr and "sigmoid_net onnx" in result.stderr


def test_exporting_an_untrained_model_says_to_train_first(tmp_path):
    result = run_cli("export", "--models", "linear_3x", "--artifacts", str(tmp_path), "--device", "cpu")
    assert result.returncode == 2  # nothing to export is the person's to fix: train first
    assert "linear_3x has not been trained" in result.stderr and len(result.stderr.splitlines()) == 1
    assert "python -m pipeline train --models linear_3x" in result.stderr
    assert "Traceback" not in result.stderr


def test_failed_export_leaves_previous_artifacts_and_manifest_intact(artifacts_copy, monkeypatch):
    from pipeline import export, train
    from pipeline.export import torch_formats

    before = (artifacts_copy / "manifest.json").read_bytes()
    old = Manifest.load(artifacts_copy)
    # Retrain two models so their new exports would differ, then make one model's ONNX export fail.
    for name in ("linear_3x", "adder_mynet"):
        train.train_model(CATALOG[name], artifacts_copy, "cpu", seed=5, progress=False)
    real = torch_formats.export_onnx

    def failing(ctx, path):
        if ctx.spec.name == "adder_mynet":
            path.write_bytes(b"half a file")  # a crash mid-write of the final path must not matter either
            raise RuntimeError("injected exporter failure")
        real(ctx, path)

    monkeypatch.setattr(torch_formats, "export_onnx", failing)  # as formats.py names it
    report, errors = export.run_export(
        [CATALOG["linear_3x"], CATALOG["adder_mynet"]], artifacts_copy, log=lambda _: None
    )
    assert errors == ["adder_mynet: onnx export failed: RuntimeError: injected exporter failure"]
    new = Manifest.load(artifacts_copy)
    assert (artifacts_copy / "manifest.json").read_bytes() != before
    # The failed model keeps its previous, verified artifacts; the other one moved on.
    assert new.model("adder_mynet").artifacts == old.model("adder_mynet").artifacts
    assert new.model("linear_3x").artifacts["onnx"] != old.model("linear_3x").artifacts["onnx"]
    for name, entry in new.models.items():
        for fmt in ("onnx", "torchscript", "pt2", "eager"):
            out = load_predictor(new, name, fmt).predict(np.asarray(entry.examples))
            assert all(np.isfinite(v).all() for v in out.values())
    # Nothing the manifest does not list is left behind.
    listed = {new.path_of(a.path).parent for e in new.models.values() for a in e.artifacts.values()}
    assert {p for p in artifacts_copy.glob("*/export-*")} == listed


def test_export_cli_rejects_an_opset_below_18(trained, tmp_path):
    result = run_cli("export", "--models", "linear_3x", "--artifacts", str(trained), "--opset", "17")
    assert result.returncode != 0 and "opset 18 or newer" in result.stderr and "Traceback" not in result.stderr


def _cli(*args: str) -> tuple[int, str, str]:
    """`python -m pipeline ARGS` in this process (a subprocess would import torch again): code, stdout, stderr."""
    import contextlib
    import io

    from pipeline.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def trained_copy(trained, tmp_path) -> Path:
    import shutil

    dest = tmp_path / "artifacts"
    shutil.copytree(trained, dest)
    return dest


def test_a_derived_format_that_misses_its_rule_is_withheld_alone_and_export_exits_0(trained_copy, monkeypatch):
    from dataclasses import replace

    from pipeline.runtime.predictor import load_predictor as load

    strict = replace(formats.get("onnx-int8"), atol=1e-9, rtol=0.0, scale=0.0)  # int8 cannot hold this
    monkeypatch.setitem(formats.FORMATS, "onnx-int8", strict)
    code, out, err = _cli("export", "--models", "two_layer_net", "--artifacts", str(trained_copy), "--device", "cpu")
    assert code == 0, out + err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, err
    assert warnings[0].startswith("warning: two_layer_net: onnx-int8 missed its parity rule (|Δ| ")
    assert "not published; the float32 formats are" in warnings[0]
    manifest = Manifest.load(trained_copy)
    entry = manifest.model("two_layer_net")
    assert set(entry.served_formats()) == {
        f for f in formats.FORMATS if f != "onnx-int8" and not formats.get(f).missing()
    } - set(entry.not_applicable)
    assert entry.failed["onnx-int8"].startswith("|Δ| ")  # the parity row's reason
    with pytest.raises(Exception, match="missed its parity rule at export"):
        load(manifest, "two_layer_net", "onnx-int8")
    monkeypatch.undo()
    code, out, err = _cli("verify", "--models", "two_layer_net", "--artifacts", str(trained_copy), "--device", "cpu")
    assert code == 0, out + err
    assert "onnx-int8" not in {r["format"] for r in json.loads((trained_copy / "parity.json").read_text())["rows"]}


def test_a_float32_format_that_misses_its_rule_still_fails_export(trained_copy, monkeypatch):
    from dataclasses import replace

    monkeypatch.setitem(formats.FORMATS, "pt2", replace(formats.get("pt2"), atol=-1.0, rtol=0.0))
    code, out, err = _cli("export", "--models", "linear_3x", "--artifacts", str(trained_copy), "--device", "cpu")
    assert code == 1 and "linear_3x: parity failed" in err


def test_verify_after_export_with_atol_uses_that_atol(trained_copy):
    code, out, err = _cli(
        "export", "--models", "adder_mynet", "--artifacts", str(trained_copy), "--device", "cpu", "--atol", "0.25"
    )
    assert code == 0, out + err
    entry = Manifest.load(trained_copy).model("adder_mynet")
    assert {fmt: t["atol"] for fmt, t in entry.raw["tolerance"].items()} == {
        fmt: 0.25 for fmt in entry.served_formats() if fmt != "eager"
    }
    assert entry.tolerance("onnx") == (0.25, formats.get("onnx").rtol, 0.0)
    code, out, err = _cli("verify", "--models", "adder_mynet", "--artifacts", str(trained_copy), "--device", "cpu")
    assert code == 0, out + err
    rows = json.loads((trained_copy / "parity.json").read_text())["rows"]
    assert rows and {r["atol"] for r in rows} == {0.25}
    code, out, err = _cli(
        "verify", "--models", "adder_mynet", "--artifacts", str(trained_copy), "--device", "cpu", "--atol", "0.5"
    )
    assert {r["atol"] for r in json.loads((trained_copy / "parity.json").read_text())["rows"]} == {0.5}


def test_export_formats_makes_only_the_formats_listed(trained_copy):
    args = ("--models", "two_layer_net", "--artifacts", str(trained_copy), "--device", "cpu")
    code, out, err = _cli("export", *args, "--formats", "onnx,onnx-int8")
    assert code == 0, out + err
    entry = Manifest.load(trained_copy).model("two_layer_net")
    assert set(entry.artifacts) == {"state_dict", "onnx", "onnx-int8"}
    assert {r["format"] for r in json.loads((trained_copy / "parity.json").read_text())["rows"]} == {
        "onnx",
        "onnx-int8",
    }
    code, out, err = _cli("verify", *args)
    assert code == 0, out + err


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("onnx,tflite", "--formats tflite: unknown format; expected some of: torchscript, onnx, pt2"),
        ("onnx-int8", "--formats onnx-int8: made from onnx, which the list leaves out; expected onnx too"),
    ],
)
def test_export_formats_refuses_what_it_cannot_make_in_one_line(trained_copy, value, message):
    code, out, err = _cli("export", "--models", "linear_3x", "--artifacts", str(trained_copy), "--formats", value)
    assert code == 2 and err.count("\n") == 1 and message in err, err
