"""Formats of other runtimes: OpenVINO IR (.xml + .bin) and ExecuTorch (.pte), each from an optional package.

Each is one declaration in pipeline/formats.py, one exporter and one loader; parity, the page, the protocol
routes, Triton and the benchmarks reach them through the declaration (their own tests cover every format).
Here: the files as a user with no code of ours loads them, the companion .bin under the manifest's sha256,
an absent package turned into one "skipped" line, and the names found nowhere else in the code.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pipeline import formats
from pipeline.artifacts.manifest import ArtifactError, Manifest, ManifestError
from pipeline.catalog import CATALOG
from pipeline.runtime.predictor import load_predictor

ROOT = Path(__file__).resolve().parents[1]
NEW = ("openvino", "executorch")  # the formats this file is about, by the names formats.py declares
OWN_FILES = {  # where each format's name may appear in the code: its declaration, its exporter, its loader
    "openvino": {"pipeline/formats.py", "pipeline/export/openvino_ir.py", "pipeline/runtime/openvino_ir.py"},
    "executorch": {"pipeline/formats.py", "pipeline/export/executorch_pte.py", "pipeline/runtime/executorch_pte.py"},
}

pytestmark = pytest.mark.skipif(
    any(formats.get(f).missing() for f in NEW), reason="pip install -e '.[openvino,executorch]' (make setup does)"
)


def batch_and_eager(manifest: Manifest, model: str, rows: int = 7) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A random batch of `rows` (a size no exporter traced with) and the eager model's outputs for it."""
    entry = manifest.model(model)
    x = np.random.default_rng(7).uniform(-2, 2, (rows, len(entry.features))).astype(np.float32)
    return x, load_predictor(manifest, model, "eager").outputs(x)


def run_alone(code: str, *args: str, isolated_path: Path | None = None) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter that cannot import this project (python -I: no PYTHONPATH, no cwd).

    With `isolated_path`, site-packages is dropped too (-S) and only that folder is importable.
    """
    flags = ["-I", "-S"] if isolated_path else ["-I"]
    head = ""
    if isolated_path:
        head = f"import sys; sys.path = [p for p in sys.path if 'site-packages' not in p] + [{str(isolated_path)!r}]\n"
    return subprocess.run(
        [sys.executable, *flags, "-c", head + textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd="/",
    )


def test_every_catalog_model_has_both_files_and_passes_parity(manifest):
    for model in CATALOG:
        entry = manifest.model(model)
        for fmt in NEW:
            assert fmt in entry.served_formats(), (model, fmt)
            rows = [r for r in entry.raw["parity"]["rows"] if r["format"] == fmt]
            assert rows and all(r["passed"] and r["atol"] == formats.DEFAULT_ATOL and r["scale"] == 0 for r in rows)
            assert {r["runtime"] for r in rows} == set(formats.get(fmt).runtimes)
        art = entry.artifact("openvino")  # the IR's weights beside the graph, both under the sha256
        assert art.path.endswith(".xml") and [Path(f.path).suffix for f in art.files] == [".bin"]
        assert art.bytes == sum(manifest.path_of(p).stat().st_size for p in (art.path, art.files[0].path))


def test_the_ir_runs_with_only_openvino_and_numpy(manifest, tmp_path):
    """As a user with no code of ours: openvino and numpy importable, nothing else (no torch, no pipeline)."""
    import numpy
    import openvino

    only = tmp_path / "site"
    only.mkdir()
    for package in (numpy, openvino):
        folder = Path(package.__file__).parent
        for item in folder.parent.glob(folder.name + "*"):  # the package, and its bundled .libs
            if item.is_dir() and not item.name.endswith(".dist-info"):
                (only / item.name).symlink_to(item)
    model = "adder_mynet"  # two outputs: both come back by the manifest's names
    x, want = batch_and_eager(manifest, model)
    np.save(tmp_path / "x.npy", x)
    xml = manifest.path_of(manifest.model(model).artifact("openvino").path)
    code = """
        import json, sys
        import numpy as np
        import openvino as ov
        core = ov.Core()
        compiled = core.compile_model(core.read_model(sys.argv[1]), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        result = compiled({"x": np.load(sys.argv[2])})
        outs = {o.get_any_name(): result[o].tolist() for o in compiled.outputs}
        shapes = [str(p.get_partial_shape()) for p in compiled.inputs]
        try:
            import torch  # noqa: F401
            torch_importable = True
        except ImportError:
            torch_importable = False
        loaded = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "pipeline", "onnx", "onnxruntime"})
        print(json.dumps({"outs": outs, "shapes": shapes, "torch": torch_importable, "loaded": loaded}))
    """
    done = run_alone(code, str(xml), str(tmp_path / "x.npy"), isolated_path=only)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["torch"] is False and got["loaded"] == []
    assert got["shapes"] == ["[?,2]"]  # the batch axis dynamic, the features fixed
    assert set(got["outs"]) == set(want)
    for name, values in want.items():
        np.testing.assert_allclose(np.asarray(got["outs"][name]), values, atol=1e-5, rtol=1e-4, err_msg=name)


def test_the_pte_runs_with_executorchs_runtime_alone(manifest, tmp_path):
    model = "two_layer_net"
    x, want = batch_and_eager(manifest, model, rows=5)
    np.save(tmp_path / "x.npy", x)
    pte = manifest.path_of(manifest.model(model).artifact("executorch").path)
    code = """
        import json, sys
        import numpy as np
        import torch
        from executorch.runtime import Runtime
        method = Runtime.get().load_program(sys.argv[1]).load_method("forward")
        outs = method.execute([torch.from_numpy(np.load(sys.argv[2]))])
        loaded = sorted({m.split(".")[0] for m in sys.modules} & {"pipeline", "onnx", "onnxruntime"})
        print(json.dumps({"outs": [o.tolist() for o in outs], "loaded": loaded}))
    """
    done = run_alone(code, str(pte), str(tmp_path / "x.npy"))
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["loaded"] == []
    np.testing.assert_allclose(np.asarray(got["outs"][0]), want["y"], atol=1e-5, rtol=1e-4)


def test_a_damaged_companion_file_is_refused(artifacts_copy):
    manifest = Manifest.load(artifacts_copy)
    weights = manifest.model("poly3_sin").artifact("openvino").files[0]
    path = manifest.path_of(weights.path)
    path.write_bytes(path.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ArtifactError, match=r"model\.openvino\.bin does not match its sha256 in the manifest"):
        load_predictor(manifest, "poly3_sin", "openvino")
    path.unlink()
    with pytest.raises(ArtifactError, match=r"model\.openvino\.bin is listed in the manifest but missing"):
        load_predictor(manifest, "poly3_sin", "openvino")


def test_a_companion_outside_the_artifacts_directory_is_refused(artifacts_copy):
    raw = json.loads((artifacts_copy / "manifest.json").read_text())
    art = next(a for a in raw["models"]["poly3_sin"]["artifacts"] if a["format"] == "openvino")
    art["files"][0]["path"] = "../elsewhere.bin"
    with pytest.raises(ManifestError, match=r"outside the artifacts directory"):
        Manifest.from_dict(artifacts_copy, raw)
    art["files"] = "model.bin"
    with pytest.raises(ManifestError, match=r"malformed artifact entry"):
        Manifest.from_dict(artifacts_copy, raw)


STUB = "import sys; sys.modules['openvino'] = None; sys.modules['executorch'] = None\n"  # as if not installed


def test_an_absent_package_is_one_skipped_line_and_export_succeeds(trained, tmp_path):
    root = tmp_path / "artifacts"
    shutil.copytree(trained / "linear_3x", root / "linear_3x")
    code = STUB + "from pipeline.cli import main; sys.exit(main(sys.argv[1:]))"
    args = ["export", "--models", "linear_3x", "--artifacts", str(root), "--device", "cpu"]
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600, cwd=ROOT, env=_env()
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line for line in lines if "skipped" in line] == [
        "openvino: skipped: install .[openvino]",
        "executorch: skipped: install .[executorch]",
    ]
    entry = Manifest.load(root).model("linear_3x")
    assert not set(NEW) & set(entry.artifacts) and not set(NEW) & set(entry.served_formats())
    assert {f: entry.not_applicable.get(f) for f in NEW} == {f: f"skipped: install .[{f}]" for f in NEW}
    assert entry.raw["parity"]["passed"] and not {r["format"] for r in entry.raw["parity"]["rows"]} & set(NEW)
    assert not list((root / "linear_3x").glob("export-*/model.openvino.*"))


def test_where_the_runtime_is_absent_the_page_does_not_offer_the_format(artifacts):
    """A manifest with both files, served where neither package is installed: the formats are not offered,
    parity skips them with the same line, and asking for one anyway says what to install."""
    code = STUB + textwrap.dedent(
        """
        import json
        from pipeline.artifacts.manifest import Manifest
        from pipeline.runtime.parity import targets, verify
        from pipeline.runtime.predictor import RuntimeUnavailable, load_predictor
        from pipeline.serving.oip_protocol import triton_formats_of
        manifest = Manifest.load(sys.argv[1])
        entry = manifest.model("adder_mynet")
        chosen, _ = targets("cpu")
        skipped = verify(manifest, ["linear_3x"]).skipped
        try:
            load_predictor(manifest, "adder_mynet", "openvino")
            refused = None
        except RuntimeUnavailable as exc:
            refused = str(exc)
        print(json.dumps({"page": entry.served_formats(), "protocol": triton_formats_of(entry),
                          "parity": sorted({t.format for t in chosen}), "skipped": skipped, "refused": refused}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(artifacts)], capture_output=True, text=True, timeout=120, cwd=ROOT, env=_env()
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    for where in ("page", "protocol", "parity"):
        assert "onnx" in got[where] and not set(NEW) & set(got[where]), where
    assert got["skipped"] == [f"{f}: install .[{f}]" for f in NEW]  # the table prints "skipped: " before each
    assert got["refused"] == "adder_mynet openvino: skipped: install .[openvino]"
    assert set(NEW) <= set(Manifest.load(artifacts).model("adder_mynet").served_formats())  # here they are


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_each_format_is_named_only_by_its_declaration_exporter_and_loader():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    for fmt, allowed in OWN_FILES.items():
        found = subprocess.run(
            ["git", "grep", "--untracked", "-il", fmt, "--", "pipeline", "demo", "examples"],
            capture_output=True,
            text=True,
            cwd=ROOT,
        ).stdout.split()
        assert set(found) == allowed, fmt


def test_the_pte_batch_bound_is_the_largest_batch_served():
    from pipeline.export.executorch_pte import MAX_BATCH
    from pipeline.serving.naming import MAX_BATCH_SIZE

    assert MAX_BATCH == MAX_BATCH_SIZE


def test_a_batch_beyond_the_pte_bound_runs_in_slices(manifest):
    """The .pte's memory is planned for MAX_BATCH rows; the benchmarks' batch of 4096 still runs, in slices."""
    from pipeline.export.executorch_pte import MAX_BATCH

    x, want = batch_and_eager(manifest, "adder_mynet", rows=2 * MAX_BATCH + 3)
    got = load_predictor(manifest, "adder_mynet", "executorch").predict(x)
    for name, values in want.items():
        np.testing.assert_allclose(got[name], values, atol=1e-5, rtol=1e-4, err_msg=name)
