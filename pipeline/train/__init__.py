"""The training stage: fit each catalog model with its recipe (or import its weights) and save what it learned.

Writes, per model, under DIR/<model>/ (each file atomically): state_dict.pt (CPU tensors),
history.json, loss.png, and the files of the model's study if it has one. `import_weights` writes the
same state_dict.pt and history.json from a state_dict someone else trained.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

from pipeline import catalog
from pipeline.artifacts.fileio import atomic_write, atomic_write_json, sha256_file
from pipeline.artifacts.weights import WeightsError, load_state_dict
from pipeline.errors import UserError, one_line
from pipeline.spec import ModelSpec, Recipe
from pipeline.train import plots

STATE_DICT = "state_dict.pt"
HISTORY = "history.json"
LOSS_PLOT = "loss.png"

LOSSES: dict[str, Callable[[], nn.Module]] = {
    "sse": lambda: nn.MSELoss(reduction="sum"),
    "mse": nn.MSELoss,
    "cross_entropy": nn.CrossEntropyLoss,  # targets: int64 class indices; the first output: class scores
}
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "rmsprop": torch.optim.RMSprop,
}


class TrainingError(UserError, RuntimeError):
    """A recipe that cannot run as written."""


class Diverged(RuntimeError):
    """Training ran and its loss ended non-finite: the work failed, so nothing of it is written."""

    def __init__(self, spec: ModelSpec, variant: str, device: str, steps: int) -> None:
        super().__init__(
            f"{spec.name} did not train: its loss is not finite after {steps} steps (the {variant} recipe "
            f"diverged on {device}); nothing was written, earlier training outputs stay"
        )
        self.steps = steps


@dataclass
class Fit:
    """A trained module and what happened on the way."""

    model: nn.Module
    losses: list[float]  # one per optimisation step, measured before that step's update
    tracked: list[float]  # study value after each epoch (empty without a tracker)
    seconds: float
    test: dict[str, float] | None = None  # held-out loss (and accuracy), when the spec has test data


class Progress:
    """Training steps done out of `total`, the unit the history and the summary count.

    On a terminal a tqdm bar; anywhere else (a pipe, a log file) a plain line at every quarter, so
    a log holds no carriage-return frames.
    """

    MARKS = 4  # plain lines per model: 25 %, 50 %, 75 %, 100 %

    def __init__(self, name: str, total: int, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.name, self.total, self.done = name, max(total, 1), 0
        self.stream = stream or sys.stderr
        terminal = enabled and _is_terminal(self.stream)
        self.bar = (
            tqdm(total=self.total, desc=f"{name:<15}", unit="step", file=self.stream, leave=True, dynamic_ncols=True)
            if terminal
            else None
        )
        self.plain = enabled and not terminal
        self.next_mark = 1

    def update(self, steps: int, loss: Callable[[], float], seconds: float) -> None:
        """Count `steps` more; `loss` is called only when a plain line is due (it syncs the device)."""
        self.done += steps
        if self.bar is not None:
            self.bar.update(steps)
        elif self.plain and self.next_mark < self.MARKS and self.done * self.MARKS >= self.next_mark * self.total:
            self._line(loss(), seconds)
            while self.next_mark < self.MARKS and self.done * self.MARKS >= self.next_mark * self.total:
                self.next_mark += 1

    def close(self, loss: float, seconds: float) -> None:
        """The last report: the final loss beside the step count."""
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4g}")
            self.bar.close()
        elif self.plain:
            self._line(loss, seconds)

    def _line(self, loss: float, seconds: float) -> None:
        percent = 100 * self.done // self.total
        print(
            f"{self.name:<15} {self.done}/{self.total} steps ({percent}%)  loss {loss:.4g}  {seconds:.1f} s",
            file=self.stream,
            flush=True,
        )


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def first_output(out: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The output the loss trains: the module's only output, or the first of several."""
    return out[0] if isinstance(out, tuple) else out


def fit(
    spec: ModelSpec,
    recipe: Recipe,
    device: str = "cpu",
    seed: int = 0,
    progress: bool = True,
    track: Callable[[nn.Module], float] | None = None,
) -> Fit:
    """Train a fresh `spec` module with `recipe` on `device`; the same seed gives the same run on CPU."""
    if spec.data is None:
        raise TrainingError(f"{spec.name} has no data, so it cannot be trained; import its weights instead")
    # One random stream, drawn in the seeds' order: the data first, then the initial weights.
    generator = torch.manual_seed(seed)
    x, y = spec.data(generator)
    held_out = spec.test_data(generator) if spec.test_data is not None else None
    model = spec.build()
    if recipe.init is not None:
        recipe.init(model)
    model = model.to(device)
    xs, y = tuple(t.to(device) for t in as_inputs(x)), y.to(device)
    if recipe.batch_size:
        loader = DataLoader(
            TensorDataset(*xs, y),
            batch_size=recipe.batch_size,
            shuffle=recipe.shuffle,
            generator=torch.Generator().manual_seed(seed),
        )
        batches: Any = loader
    else:
        batches = ((*xs, y),)
    if recipe.gradients == "manual" and not hasattr(model, "manual_gradients"):
        raise TrainingError(f"{spec.name}: recipe asks for manual gradients, the module has none")
    manual = recipe.gradients == "manual"
    loss_fn = LOSSES[recipe.loss]()
    optimizer = OPTIMIZERS[recipe.optimizer](model.parameters(), lr=recipe.lr)

    losses: list[torch.Tensor] = []  # kept on the device: no host sync per step
    tracked: list[float] = []
    steps_per_epoch = len(loader) if recipe.batch_size else 1
    bar = Progress(spec.name, recipe.epochs * steps_per_epoch, progress)
    start = time.perf_counter()
    model.train()
    for _ in range(recipe.epochs):
        for *xb, yb in batches:
            optimizer.zero_grad(set_to_none=True)
            if manual:
                loss = model.manual_gradients(*xb, yb)
            else:
                loss = loss_fn(first_output(model(*xb)), yb)
                loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        if track is not None:
            tracked.append(track(model))
        bar.update(steps_per_epoch, lambda: float(losses[-1]), time.perf_counter() - start)
    seconds = time.perf_counter() - start
    loss_values = torch.stack(losses).cpu().tolist()
    bar.close(loss_values[-1], seconds)
    model.eval()
    test = evaluate(model, held_out, recipe.loss, device) if held_out is not None else None
    return Fit(model, loss_values, tracked, seconds, test)


def as_inputs(x: Any) -> tuple[torch.Tensor, ...]:
    """A spec's training inputs as a tuple, one tensor per input (a one-input model's data may be a bare tensor)."""
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


@torch.no_grad()
def evaluate(model: nn.Module, data: tuple[Any, torch.Tensor], loss: str, device: str = "cpu") -> dict[str, float]:
    """Loss on held-out data, and accuracy (the share of argmax == target) when the loss is cross_entropy."""
    x, y = data
    model.eval()
    out = first_output(model(*(t.to(device) for t in as_inputs(x))))
    y = y.to(device)
    result = {"examples": len(y), "loss": float(LOSSES[loss]()(out, y))}
    if loss == "cross_entropy":
        result["accuracy"] = float((out.argmax(dim=1) == y).float().mean())
    return result


def cpu_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state_dict with every tensor detached, contiguous and on the CPU (seed 004 §10.14)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def _finite_or_none(values: list[float]) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in values]


def run_study(spec: ModelSpec, recipe: Recipe, device: str, seed: int, out_dir: Path) -> list[Path]:
    """The seed's learning-rate study: each rate from the same fresh init; JSON data and a figure."""
    study = spec.study
    if study is None:
        return []
    runs: dict[str, dict[str, list[float]]] = {}
    for lr in study.lrs:
        result = fit(spec, replace(recipe, lr=lr, epochs=study.epochs), device, seed, False, study.track)
        runs[str(lr)] = {study.track_label: result.tracked, "loss": result.losses}
    data = {
        "model": spec.name,
        "study": study.name,
        "epochs": study.epochs,
        "tracked": study.track_label,
        "runs": {lr: {k: _finite_or_none(v) for k, v in run.items()} for lr, run in runs.items()},
    }
    json_path = atomic_write_json(out_dir / f"{study.name}.json", data)
    png_path = plots.save_lr_study(out_dir / f"{study.name}.png", runs, study.track_label)
    return [json_path, png_path]


def train_workers(count: int, device: str) -> int:
    """Processes to train `count` models in on the CPU: one per model up to the CPUs where there are 4 or more
    (each imports torch, a few CPU seconds); PIPELINE_TRAIN_WORKERS overrides."""
    given = os.environ.get("PIPELINE_TRAIN_WORKERS", "")
    cpus = os.cpu_count() or 1
    workers = int(given) if given.isdigit() and int(given) > 0 else (cpus if cpus >= 4 else 1)
    return max(1, min(count, workers)) if device == "cpu" else 1


def _train_named(catalogs: list[str], name: str, artifacts: str, device: str, seed: int, variant: str | None) -> Any:
    """In a worker process: the catalog as the parent has it, then one model trained (history, or why not)."""
    catalog.use(catalogs)
    torch.set_num_threads(1)  # the other models train beside it, one CPU each
    start = time.perf_counter()
    try:
        hist = train_model(catalog.get(name), Path(artifacts), device, seed, variant, progress=False)
    except Diverged as exc:
        return RuntimeError(str(exc)), exc.steps, time.perf_counter() - start
    return hist, None, time.perf_counter() - start


def train_in_parallel(
    specs: list[ModelSpec], device: str, variants: dict[str, str], artifacts: Path, seed: int
) -> dict[str, tuple[Any, float]] | None:
    """name -> (history or Diverged, seconds), each model trained in its own (spawned) process, holding the
    artifacts lock meanwhile; None where training in this process is as fast (few CPUs, one model, a GPU,
    or a spec the catalog does not hold under its name). The models are independent: one seed each."""
    workers = train_workers(len(specs), device)
    if workers == 1 or any(catalog.CATALOG.get(s.name) is not s for s in specs):
        return None
    from pipeline.artifacts.fileio import exclusive

    context = multiprocessing.get_context("spawn")
    out: dict[str, tuple[Any, float]] = {}
    with exclusive(artifacts), concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        given = catalog.given()
        futures = {
            s.name: pool.submit(_train_named, given, s.name, str(artifacts), device, seed, variants.get(s.name))
            for s in specs
        }
        for spec in specs:
            hist, steps, seconds = futures[spec.name].result()
            if isinstance(hist, RuntimeError):
                recipe = variants.get(spec.name) or spec.default_recipe
                hist = Diverged(spec, recipe, device, steps)
            out[spec.name] = (hist, seconds)
    return out


def train_model(
    spec: ModelSpec,
    artifacts: Path,
    device: str = "cpu",
    seed: int = 0,
    variant: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train one model and write its state_dict, history, loss plot and study under artifacts/<name>/."""
    variant = variant or spec.default_recipe
    recipe = spec.recipe(variant)
    result = fit(spec, recipe, device, seed, progress)
    if not math.isfinite(result.losses[-1]):
        raise Diverged(spec, variant, device, len(result.losses))
    out_dir = Path(artifacts) / spec.name
    model = result.model
    report = spec.report(model) if spec.report else {}
    history = {
        "model": spec.name,
        "seed_source": spec.seed,
        "variant": variant,
        "recipe": recipe.as_dict(),
        "unit": "step",
        "steps_per_epoch": len(result.losses) // max(recipe.epochs, 1),
        "loss": _finite_or_none(result.losses),
        "device": device,
        "seed": seed,
        "seconds": round(result.seconds, 4),
        "torch": torch.__version__,
        "report": report,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if result.test is not None:
        history["test"] = result.test
        if "accuracy" in result.test:
            history["accuracy"] = result.test["accuracy"]
    extra = run_study(spec, recipe, device, seed, out_dir)
    plots.save_loss_curve(out_dir / LOSS_PLOT, result.losses, f"{spec.name} ({variant}, {device})", "step")
    _write(model, history, out_dir)
    return {
        **history,
        "files": [str(p) for p in [out_dir / STATE_DICT, out_dir / HISTORY, out_dir / LOSS_PLOT, *extra]],
    }


def _write(model: nn.Module, history: dict[str, Any], out_dir: Path) -> None:
    state = cpu_state_dict(model)
    atomic_write(out_dir / STATE_DICT, lambda tmp: torch.save(state, tmp))
    # Ties the history to these exact weights: export refuses a state_dict whose history is stale.
    history["state_dict_sha256"] = sha256_file(out_dir / STATE_DICT)
    # history.json goes last: its presence says the model's training outputs are complete.
    atomic_write_json(out_dir / HISTORY, history)


def import_weights(spec: ModelSpec, weights: Path, artifacts: Path) -> dict[str, Any]:
    """Write `weights` (a state_dict file) as if `train` had produced them; history says imported, from where.

    Everything is checked in memory first (pipeline/artifacts/weights.py, then the held-out figures): a
    refusal leaves the artifacts folder exactly as it was.
    """
    weights = Path(weights)
    model = load_state_dict(spec.build(), weights).eval()  # weights only; every refusal one line
    out_dir = Path(artifacts) / spec.name
    history: dict[str, Any] = {
        "model": spec.name,
        "seed_source": spec.seed,
        "variant": "imported",
        "imported": {"from": str(weights.resolve()), "sha256": sha256_file(weights)},
        "recipe": None,
        "unit": "step",
        "loss": [],
        "device": "cpu",
        "torch": torch.__version__,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        history["report"] = spec.report(model) if spec.report else {}
        if spec.test_data is not None:  # the same held-out data `train` measures, from the same draw
            generator = torch.manual_seed(0)
            if spec.data is not None:
                spec.data(generator)
            loss = next(iter(spec.recipes.values())).loss
            history["test"] = evaluate(model, spec.test_data(generator), loss)
            if "accuracy" in history["test"]:
                history["accuracy"] = history["test"]["accuracy"]
        json.dumps(history, allow_nan=False)  # what history.json will hold: finite figures only
    except (ValueError, RuntimeError, OverflowError) as exc:
        raise WeightsError(
            f"{weights}: its weights give non-finite or failing results ({one_line(exc, 160)})"
        ) from None
    _write(model, history, out_dir)
    stale = out_dir / LOSS_PLOT  # a plot of an earlier training would describe other weights; removed last
    if stale.exists():
        stale.unlink()
    return history
