"""The command line as people use it: defaults in --help, one exit-code rule, logs a file can hold."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace

import pytest
import torch

from pipeline import catalog
from pipeline.cli import main
from pipeline.tables import cell

from .conftest import run_cli

SUBCOMMANDS = ["list", "summary", "train", "import", "export", "verify", "triton", "bench", "triton-serve"]
# An option line of --help: "  --seed SEED    help..." or "  -h, --help"; group 2 is the metavar, if any.
OPTION = re.compile(r"^  (--?[\w-]+)(?: ([^\s,]+))?(?:,|\s{2,}|$)")


def help_entries(text: str) -> dict[str, tuple[str | None, str]]:
    """--help's option entries: option -> (metavar or None, its whole help text on one line)."""
    entries: dict[str, tuple[str | None, str]] = {}
    current = None
    for line in text.splitlines():
        match = OPTION.match(line)
        if match:
            current = match.group(1)
            entries[current] = (match.group(2), line[match.end() :].strip())
        elif current and line.startswith("    "):
            metavar, words = entries[current]
            entries[current] = (metavar, f"{words} {line.strip()}".strip())
        else:
            current = None
    return entries


def command_help(capsys, monkeypatch, *argv: str) -> str:
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def test_the_subcommands_tested_here_are_all_there_are(capsys, monkeypatch):
    usage = re.search(r"\{([\w,-]+)\}", command_help(capsys, monkeypatch))
    assert usage and sorted(usage.group(1).split(",")) == sorted(SUBCOMMANDS)


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_shows_the_default_of_every_option_that_takes_a_value(command, capsys, monkeypatch):
    entries = help_entries(command_help(capsys, monkeypatch, command))
    valued = {option: words for option, (metavar, words) in entries.items() if metavar}
    for option, words in valued.items():
        assert re.search(r"\(default: [^)]+\)", words), f"{command} {option}: no default in {words!r}"
    if command != "list":  # list has no option but --help
        assert valued, entries


def test_help_shows_the_defaults_a_person_asks_about(capsys, monkeypatch):
    train = help_entries(command_help(capsys, monkeypatch, "train"))
    assert "(default: auto)" in train["--device"][1] and "(default: 0)" in train["--seed"][1]
    assert "(default: artifacts)" in train["--artifacts"][1] and "MODEL=VARIANT" in train["--recipe"][1]
    export = help_entries(command_help(capsys, monkeypatch, "export"))
    assert "(default: 18)" in export["--opset"][1]
    assert "1e-05 for float32)" in export["--atol"][1] and "0.0001 for float32)" in export["--rtol"][1]
    assert "(default: ARTIFACTS/triton)" in command_help(capsys, monkeypatch, "triton")


def test_top_level_help_states_the_exit_codes(capsys, monkeypatch):
    text = " ".join(command_help(capsys, monkeypatch).split())
    assert "0 done; 1 the work itself failed" in text and "2 a usage or input mistake" in text


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "--models", "linear_3x", "--device", "cpu", "--artifacts", "{file}/sub"], "cannot create"),
        (["train", "--models", "linear_3x", "--device", "cpu", "--artifacts", "{file}"], "not a directory"),
        (
            ["train", "--models", "no_such_model", "--artifacts", "{tmp}"],
            "unknown model 'no_such_model'; expected one of: " + ", ".join(catalog.CATALOG),
        ),
        (["triton", "--artifacts", "{tmp}/none"], "no manifest"),
        (["verify", "--device", "cpu", "--artifacts", "{tmp}/none"], "no manifest"),
    ],
)
def test_a_mistake_the_person_can_fix_exits_2_with_one_line(argv, expected, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    argv = [a.format(file=afile, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert expected in one_error_line(captured.err)
    assert "error:" not in captured.out
    assert not (tmp_path / "none").exists()  # nothing was created on the way to the error


def test_a_model_that_does_not_train_exits_1_and_the_rest_is_trained(tmp_path, capsys, monkeypatch):
    spec = catalog.get("linear_3x")
    diverging = replace(spec, recipes={"sgd": replace(spec.recipe("sgd"), lr=10.0)})  # y = 3x at lr 10 blows up
    monkeypatch.setitem(catalog.CATALOG, "linear_3x", diverging)
    argv = ["train", "--models", "sigmoid_net,linear_3x", "--device", "cpu", "--artifacts", str(tmp_path), "--quiet"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "linear_3x did not train: its loss is not finite after 200 steps" in one_error_line(captured.err)
    assert "trained 1 of 2 model(s)" in captured.out
    rows = summary_rows(captured.out)
    assert rows["linear_3x"]["final loss"] == "-" and rows["sigmoid_net"]["final loss"] != "-"
    assert (tmp_path / "sigmoid_net" / "history.json").is_file() and not (tmp_path / "linear_3x").exists()


def test_export_into_an_empty_directory_is_one_line_naming_train(tmp_path):
    result = run_cli("export", "--device", "cpu", "--artifacts", str(tmp_path))
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert f"no model in {tmp_path} has been trained" in line
    assert f"run `python -m pipeline train --artifacts {tmp_path}` first" in line
    assert "error" not in result.stdout and not list(tmp_path.iterdir())


def progress_lines(log: str) -> dict[str, list[tuple[int, int]]]:
    """Each model's plain progress lines as (done, total) steps, in order."""
    seen: dict[str, list[tuple[int, int]]] = {}
    for name, done, total in re.findall(r"^(\w+)\s+(\d+)/(\d+) steps \(\d+%\)", log, re.MULTILINE):
        seen.setdefault(name, []).append((int(done), int(total)))
    return seen


def summary_rows(stdout: str) -> dict[str, dict[str, str]]:
    """The end-of-run table as {model: {column: cell}}."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("model") and "steps" in line)
    header = re.split(r"\s{2,}", lines[start].strip())
    rows = {}
    for line in lines[start + 1 :]:
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) != len(header):
            break
        rows[cells[0]] = dict(zip(header, cells, strict=True))
    return rows


def test_a_log_to_a_pipe_has_plain_progress_lines_counting_the_steps_of_the_summary(tmp_path):
    models = ["adder_mynet", "sigmoid_net"]
    result = run_cli("train", "--models", ",".join(models), "--device", "cpu", "--artifacts", str(tmp_path))
    assert result.returncode == 0, result.stderr
    log = result.stdout + result.stderr
    assert "\r" not in log and "\x1b" not in log
    progress, rows = progress_lines(result.stderr), summary_rows(result.stdout)
    assert sorted(rows) == sorted(progress) == sorted(models)
    for name in models:
        history = json.loads((tmp_path / name / "history.json").read_text())
        recipe = catalog.get(name).recipe()
        batches = (
            math.ceil(len(catalog.get(name).data(torch.Generator())[0]) / recipe.batch_size) if recipe.batch_size else 1
        )
        steps = recipe.epochs * batches  # adder_mynet: 50 epochs of 2 mini-batches
        assert len(history["loss"]) == steps
        assert progress[name][-1] == (steps, steps) and 2 <= len(progress[name]) <= 5
        assert all(total == steps for _, total in progress[name])
        assert [done for done, _ in progress[name]] == sorted({done for done, _ in progress[name]})
        row = rows[name]
        assert row["recipe"] == history["variant"] and int(row["steps"]) == steps
        assert row["final loss"] == cell(history["loss"][-1])
        assert row["seed's final loss"] == (recipe.seed_loss or "-")
    assert rows["sigmoid_net"]["seed's final loss"] == "0.00033"  # seed 004 §11.5's figure at epoch 99


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """linear_3x alone, trained and exported: enough for a Triton repository."""
    from pipeline.export import run_export
    from pipeline.train import train_model

    root = tmp_path_factory.mktemp("cli") / "artifacts"
    spec = catalog.get("linear_3x")
    train_model(spec, root, "cpu", 0, progress=False)
    report, errors = run_export([spec], root, log=lambda _: None)
    assert not errors and report.passed
    return root


def test_triton_command_builds_the_repository_and_export_triton_is_the_same(exported, tmp_path, capsys):
    new, old = tmp_path / "new", tmp_path / "old"
    assert main(["triton", str(new), "--artifacts", str(exported)]) == 0
    assert f"Triton model repository: {new}/" in capsys.readouterr().out
    assert main(["export", "--triton", str(old), "--artifacts", str(exported)]) == 0

    def files(root):
        return {
            str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file() and p.name != "README.md"
        }

    dirs = {p.name for p in new.iterdir() if p.is_dir()}
    assert {"linear_3x_onnx", "linear_3x_onnx_python", "linear_3x_torchscript"} <= dirs  # and the derived ones
    assert files(new) == files(old)
    assert main(["triton", "--artifacts", str(exported)]) == 0 and (exported / "triton" / "README.md").is_file()
