"""The format table (pipeline/formats.py): what each stage reads from it, and how it refuses a name it lacks.
No artifacts: every declared exporter and loader is resolved, none is run."""

from __future__ import annotations

import pytest

from pipeline import formats


def test_an_unknown_format_is_refused_listing_the_ones_there_are():
    for bad in ("tf", "", None, ["onnx"]):
        with pytest.raises(formats.UnknownFormat, match=r"unknown format .*; expected one of: torchscript, onnx, pt2"):
            formats.get(bad)


def test_every_exporter_and_loader_named_in_the_table_exists():
    for spec in formats.FORMATS.values():
        if spec.exporter:
            assert callable(formats.resolve(spec.exporter)), spec.name
        for load in spec.loaders:
            assert callable(load.resolve()), (spec.name, load.runtime.name)
            assert spec.loader(load.runtime.name) is load
        assert spec.loader("no-such-runtime") is None
    assert callable(formats.resolve(formats.REMOTE_LOADER))


def test_the_lists_every_stage_reads_are_derived_from_the_table():
    assert formats.EXPORTED == ("torchscript", "onnx", "pt2", "onnx-int8", "onnx-fp16")
    assert formats.ARTIFACT_KINDS == (formats.STATE_DICT, *formats.EXPORTED)
    assert formats.TRITON_FORMATS == ("torchscript", "onnx", "onnx-int8", "onnx-fp16")
    assert formats.get("eager").artifact_kind == formats.STATE_DICT and formats.get("onnx").artifact_kind == "onnx"
    fmt, runtime, device = formats.REFERENCE
    assert formats.get(fmt).loader(runtime) is not None and device == formats.CPU


def test_labels_name_the_format_and_the_runtime():
    assert formats.label("onnx") == "ONNX · onnxruntime"  # the format's first runtime by default
    assert formats.label("onnx", "onnx-reference") == "ONNX · ONNX reference evaluator"
    assert formats.label("onnx", "http://127.0.0.1:8000") == "ONNX · http://127.0.0.1:8000"  # a server as a runtime


def test_derived_formats_follow_their_source_and_are_served_by_triton():
    for name in ("onnx-int8", "onnx-fp16"):
        spec = formats.get(name)
        assert spec.source == "onnx" and 0 < spec.scale < 0.1
        assert formats.EXPORTED.index(spec.source) < formats.EXPORTED.index(name)
        assert name in formats.TRITON_FORMATS and spec.triton.platform == "onnxruntime_onnx"
        assert spec.default_runtime == "onnxruntime"
    assert (
        "onnx-reference" in formats.get("onnx-int8").runtimes
        and "onnx-reference" not in formats.get("onnx-fp16").runtimes
    )
