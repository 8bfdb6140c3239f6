"""Training and device timing.

training: seconds per optimisation step in our trainer against a bare loop in the seed's style,
and the wall time of `python -m pipeline train` and `export` into a scratch directory.
device_timing: seed 004 §10.8's (1x6400)·(6400x5000) product with torch (CPU, and CUDA where torch
can use it) and NumPy.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from pipeline import catalog, formats
from pipeline.bench.timing import BenchError, Plan
from pipeline.runtime.devices import cuda_status
from pipeline.serving.launch import ROOT

Log = Callable[[str], None]


def synchronize(device: str) -> None:
    """Wait for the device's queued work, so a timer stops when the work is done (a no-op on the CPU)."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    elif device == "mps":
        torch.mps.synchronize()


class _MyDataset:
    """Seed 004 §10.10's MyDataset, as the seed writes it (indexable pairs for a DataLoader), with x a tuple
    of one tensor per input."""

    def __init__(self, x: Any, y: Any) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, ix: int) -> tuple[Any, Any]:
        return tuple(t[ix] for t in self.x), self.y[ix]


def seed_style_fit(spec: Any, recipe: Any, device: str, seed: int = 0) -> int:
    """The seeds' own training loop for `spec` and `recipe`, written out with none of our trainer's code:
    data, model, loss, optimizer, then zero_grad / forward / loss / backward / step and
    `loss_history.append(loss_value.item())` (seed 004 §10.9-10.10). Returns the number of steps."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader

    torch.manual_seed(seed)
    x, y = spec.data(torch.Generator().manual_seed(seed))
    model = spec.build()
    init = getattr(recipe, "init", None)
    if init is not None:
        init(model)
    model = model.to(device)
    xs = tuple(x) if isinstance(x, (tuple, list)) else (x,)  # one tensor per input
    xs, y = tuple(t.to(device) for t in xs), y.to(device)
    if recipe.loss == "cross_entropy":
        loss_func: Any = nn.CrossEntropyLoss()
    else:
        loss_func = nn.MSELoss(reduction="sum" if recipe.loss == "sse" else "mean")
    optimizers = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop}
    opt = optimizers[recipe.optimizer](model.parameters(), lr=recipe.lr)
    if recipe.batch_size:
        data: Any = DataLoader(_MyDataset(xs, y), batch_size=recipe.batch_size, shuffle=recipe.shuffle)
    else:
        data = [(xs, y)]
    manual = recipe.gradients == "manual"
    loss_history = []
    for _ in range(recipe.epochs):
        for xb, yb in data:
            opt.zero_grad()
            if manual:
                loss_value = model.manual_gradients(*xb, yb)
            else:
                out = model(*xb)
                loss_value = loss_func(out[0] if isinstance(out, tuple) else out, yb)
                loss_value.backward()
            opt.step()
            loss_history.append(loss_value.item())
    return len(loss_history)


def bench_training(models: Sequence[str], device: str, plan: Plan, log: Log) -> list[dict[str, Any]]:
    """Per model: our trainer's `fit` against `seed_style_fit`, whole calls timed the same way (setup,
    loop and collecting the losses; on CUDA up to a synchronize), interleaved, median per step."""

    from pipeline import catalog
    from pipeline.train import fit

    def sync() -> None:
        synchronize(device)

    steps: dict[str, int] = {}

    def timed(name: str, call: Callable[[], int]) -> float:
        sync()
        start = time.perf_counter()
        steps[name] = call()
        sync()
        return (time.perf_counter() - start) / steps[name]

    rows = []
    for model in models:
        spec = catalog.get(model)
        recipe = spec.recipe()
        if plan.train_max_epochs:
            recipe = replace(recipe, epochs=min(recipe.epochs, plan.train_max_epochs))
        warm = replace(recipe, epochs=min(recipe.epochs, 5))

        def ours(r: Any = recipe, sp: Any = spec) -> int:
            return len(fit(sp, r, device, 0, progress=False).losses)

        def bare(r: Any = recipe, sp: Any = spec) -> int:
            return seed_style_fit(sp, r, device)

        ours(warm)
        bare(warm)
        mine, theirs = [], []
        for i in range(plan.train_repeats):
            for name, call in (("ours", ours), ("bare", bare)) if i % 2 == 0 else (("bare", bare), ("ours", ours)):
                (mine if name == "ours" else theirs).append(timed(name, call))
        row = {
            "model": model,
            "recipe": spec.default_recipe,
            "device": device,
            "steps": steps["bare"],
            "repeats": plan.train_repeats,
            "trainer_step_us": float(np.median(mine)) * 1e6,
            "bare_step_us": float(np.median(theirs)) * 1e6,
        }
        row["trainer_over_bare"] = row["trainer_step_us"] / row["bare_step_us"]
        if steps["ours"] != steps["bare"]:
            raise BenchError(f"{model}: the trainer made {steps['ours']} steps, the seed-style loop {steps['bare']}")
        rows.append(row)
        log(
            f"  training {model}: trainer {row['trainer_step_us']:.1f} us/step, "
            f"seed-style {row['bare_step_us']:.1f} us/step"
        )
    return rows


def bench_walls(models: str, device: str, log: Log) -> dict[str, Any]:
    """Wall time of `python -m pipeline train` and `export` (what `make train` / `make export` run)."""
    out: dict[str, Any] = {"models": models, "device": device}
    with tempfile.TemporaryDirectory(prefix="bench-walls-") as tmp:
        for stage, extra in (("train", ["--quiet"]), ("export", [])):
            cmd = [sys.executable, "-m", "pipeline", stage, "--models", models, "--device", device, "--artifacts", tmp]
            for where in catalog.given():  # the catalogs this run was given, as it was given them
                cmd += ["--catalog", where]
            start = time.perf_counter()
            proc = subprocess.run([*cmd, *extra], cwd=ROOT, capture_output=True, text=True, timeout=1800)
            seconds = time.perf_counter() - start
            if proc.returncode != 0:
                raise BenchError(f"`{' '.join(cmd[1:])}` failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
            out[f"{stage}_s"] = seconds
            log(f"  wall: python -m pipeline {stage} --models {models}: {seconds:.1f} s")
    return out


def bench_device_timing(plan: Plan, log: Log) -> list[dict[str, Any]]:
    """(1x6400)·(6400x5000) as the seed times it: torch on CPU, on CUDA where torch can use it, and NumPy."""
    import torch

    rows = []

    def record(backend: str, dtype: str, call: Callable[[], Any]) -> None:
        for _ in range(2):
            call()
        times = []
        for _ in range(plan.matmul_repeats):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        p50, low = float(np.median(times)) * 1e3, min(times) * 1e3
        rows.append({"backend": backend, "dtype": dtype, "repeats": plan.matmul_repeats, "p50_ms": p50, "min_ms": low})
        log(f"  x @ y (1x6400 . 6400x5000) {backend} {dtype}: {p50:.2f} ms")

    x, y = torch.rand(1, 6400), torch.rand(6400, 5000)  # as the seed writes it
    record(f"torch cpu ({torch.get_num_threads()} threads)", "float32", lambda: x @ y)
    if cuda_status(formats.TORCH.name)[0]:
        xc, yc = x.to("cuda"), y.to("cuda")

        def on_gpu() -> None:
            xc @ yc
            synchronize("cuda")

        record(f"torch cuda ({torch.cuda.get_device_name(0)})", "float32", on_gpu)
    xn, yn = np.random.random((1, 6400)), np.random.random((6400, 5000))  # float64, as the seed draws them
    record("numpy", "float64", lambda: np.matmul(xn, yn))
    xf, yf = xn.astype(np.float32), yn.astype(np.float32)
    record("numpy", "float32", lambda: np.matmul(xf, yf))
    return rows
