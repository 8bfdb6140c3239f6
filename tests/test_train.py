"""The training stage as a user meets it: files written, reproducibility, devices and errors."""

from __future__ import annotations

import itertools
import json
from datetime import datetime

import pytest
import torch

from pipeline import catalog
from pipeline.artifacts.fileio import sha256_file
from pipeline.catalog import CATALOG
from pipeline.train import HISTORY, LOSS_PLOT, LOSSES, STATE_DICT, first_output, train_model

from .conftest import run_cli


@pytest.mark.parametrize("name", list(CATALOG))
def test_train_writes_a_loadable_state_dict_history_and_plot(trained, name):
    spec = catalog.get(name)
    model_dir = trained / name
    state = torch.load(model_dir / STATE_DICT, weights_only=True)
    assert all(t.device.type == "cpu" for t in state.values())
    history = json.loads((model_dir / HISTORY).read_text())
    assert history["recipe"]["epochs"] > 0 and history["device"] == "cpu"
    steps = history["recipe"]["epochs"] * history["steps_per_epoch"]
    assert len(history["loss"]) == steps
    assert (model_dir / LOSS_PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert history["state_dict_sha256"] == sha256_file(model_dir / STATE_DICT)
    # The saved weights are the trained ones, not the initial ones nor another model's: they give the
    # figures training reported and, on the training data, a loss far below the first one recorded.
    model = spec.build()
    model.load_state_dict(state)
    model.eval()
    if spec.report:
        assert spec.report(model) == history["report"]
    recipe = spec.recipe(history["variant"])
    x, y = spec.data(torch.manual_seed(history["seed"]))  # the data train drew, in its order
    with torch.no_grad():
        loss = LOSSES[recipe.loss]()(first_output(model(x)), y).item()
    assert loss < history["loss"][0] / 10
    if not recipe.batch_size:  # one full batch a step: the recorded loss is this loss one update earlier
        assert 0.5 * history["loss"][-1] < loss < history["loss"][-1]


def test_history_seconds_is_the_duration_of_each_fit(trained):
    # The session fixture trains the catalog in order: each fit fits between the previous model's
    # finishing time and its own (whole seconds), so a timestamp or milliseconds cannot pass.
    finished = {}
    for name in CATALOG:
        history = json.loads((trained / name / HISTORY).read_text())
        finished[name] = datetime.strptime(history["finished"], "%Y-%m-%dT%H:%M:%SZ")
        assert isinstance(history["seconds"], float) and history["seconds"] > 0
    names = list(CATALOG)
    for before, name in itertools.pairwise(names):
        seconds = json.loads((trained / name / HISTORY).read_text())["seconds"]
        assert seconds <= (finished[name] - finished[before]).total_seconds() + 1, (name, seconds)


def test_state_dict_reproduces_the_trained_model_outputs(tmp_path):
    from pipeline.train import fit

    spec = catalog.get("adder_mynet")
    result = fit(spec, spec.recipe(), "cpu", 3, progress=False)
    train_model(spec, tmp_path, "cpu", 3, progress=False)
    fresh = spec.build()
    fresh.load_state_dict(torch.load(tmp_path / spec.name / STATE_DICT, weights_only=True))
    x = torch.tensor([[10.0, 11.0], [1.5, 2.5]])
    with torch.no_grad():
        for a, b in zip(result.model(x), fresh.eval()(x), strict=True):
            assert torch.equal(a, b)


def test_same_seed_gives_identical_history_on_cpu(tmp_path):
    for name in ("adder_mynet", "two_layer_raw"):
        spec = catalog.get(name)
        first = train_model(spec, tmp_path / "a", "cpu", 7, progress=False)
        second = train_model(spec, tmp_path / "b", "cpu", 7, progress=False)
        other = train_model(spec, tmp_path / "c", "cpu", 8, progress=False)
        assert first["loss"] == second["loss"]
        assert first["loss"] != other["loss"]
        a, b = (torch.load(tmp_path / d / name / STATE_DICT, weights_only=True) for d in "ab")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_cli_trains_selected_models_with_a_recipe_variant(tmp_path):
    result = run_cli(
        "train",
        "--models",
        "poly3_sin,linear_3x",
        "--recipe",
        "poly3_sin=rmsprop",
        "--device",
        "cpu",
        "--artifacts",
        str(tmp_path),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    assert "poly3_sin: rmsprop, 2000 steps on cpu" in result.stdout and "y = " in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["linear_3x", "poly3_sin"]
    assert json.loads((tmp_path / "poly3_sin" / HISTORY).read_text())["recipe"]["optimizer"] == "rmsprop"
    assert (tmp_path / "linear_3x" / "lr_study.png").is_file()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_exits_with_one_clear_line(tmp_path):
    result = run_cli("train", "--models", "linear_3x", "--device", "cuda", "--artifacts", str(tmp_path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "CUDA is not available" in lines[0]
    assert not (tmp_path / "linear_3x").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_auto_device_falls_back_to_cpu_and_says_so(tmp_path):
    result = run_cli("train", "--models", "linear_3x", "--device", "auto", "--artifacts", str(tmp_path), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "using cpu" in result.stdout
    assert json.loads((tmp_path / "linear_3x" / HISTORY).read_text())["device"] == "cpu"


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--models", "no_such_model"], "expected one of: two_layer_net, two_layer_raw, poly3_sin"),
        (
            ["--models", "poly3_sin", "--recipe", "adamw"],
            "poly3_sin has no recipe 'adamw'; expected one of: sgd, rmsprop",
        ),
        (["--models", "linear_3x", "--device", "tpu"], "expected one of auto, cpu, cuda, cuda:N or mps"),
    ],
)
def test_bad_arguments_exit_non_zero_naming_what_was_expected(tmp_path, args, expected):
    result = run_cli("train", *args, "--artifacts", str(tmp_path))
    assert result.returncode == 2
    assert expected in result.stderr and "Traceback" not in result.stderr


def test_list_and_summary_print_the_catalog():
    listing = run_cli("list")
    assert listing.returncode == 0
    for name in CATALOG:
        assert name in listing.stdout
    assert "x[2] -> sum[1], hidden[8]" in listing.stdout
    summary = run_cli("summary", "adder_mynet")
    assert summary.returncode == 0
    assert "input_to_hidden_layer" in summary.stdout and "[1, 8]" in summary.stdout
    assert "Total params: 33" in summary.stdout
    assert "Total params: 101,110" in run_cli("summary", "two_layer_net").stdout
