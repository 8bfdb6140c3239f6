"""PNG figures of training runs (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pipeline.artifacts.fileio import atomic_write


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _log_scale_helps(values: Sequence[float]) -> bool:
    finite = [v for v in values if v == v and v not in (float("inf"), float("-inf"))]
    return bool(finite) and min(finite) > 0 and max(finite) / min(finite) > 100


def save_loss_curve(path: Path, losses: Sequence[float], title: str, unit: str) -> Path:
    """Loss per step or epoch, on a log axis when it spans more than two decades."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(range(len(losses)), losses)
    if _log_scale_helps(losses):
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel(unit)
    ax.set_ylabel("loss")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path


def save_lr_study(path: Path, runs: dict[str, dict[str, list[float]]], track_label: str) -> Path:
    """The seed's figure: the tracked weight and the loss per epoch, one row per learning rate."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(runs), 2, figsize=(10, 3.2 * len(runs)), dpi=100, squeeze=False)
    for row, (lr, run) in enumerate(runs.items()):
        epochs = range(1, len(run["loss"]) + 1)
        for col, (key, label) in enumerate(((track_label, track_label), ("loss", "loss"))):
            ax = axes[row][col]
            ax.plot(epochs, run[key], marker="o")
            if key == "loss" and _log_scale_helps(run[key]):
                ax.set_yscale("log")
            ax.set_title(f"{label} over epochs, learning rate {lr}")
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.grid(True, alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path
