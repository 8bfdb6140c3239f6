"""A catalog file: a GRU that reads a sequence of any length and says which way it drifts.

    python -m pipeline train  --catalog examples/sequence.py --models drift_gru
    python -m pipeline export --catalog examples/sequence.py --models drift_gru

Each step holds 3 numbers. The label is one of three drifts, from the mean of the first number over the
steps: below -0.25 "down", above 0.25 "up", else "flat". The input's second axis is named `steps` and may
be 1 to 512 long (`Dim`): every format is exported with that axis dynamic, and parity runs lengths 1, 20
(the examples') and 37 (one no exporter traced with). Training draws 20 steps per sequence. The model has
two outputs: the class scores, and `label`, the predicted class as an int64 scalar per example (shape
`[batch]` on the wire).
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.spec import Dim, model, tensor

FEATURES, HIDDEN, STEPS = 3, 16, 20
DRIFTS = ("down", "flat", "up")


class DriftGRU(nn.Module):
    """One GRU layer over the steps, its last hidden state through a linear layer to three scores."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(FEATURES, HIDDEN, batch_first=True)
        self.head = nn.Linear(HIDDEN, len(DRIFTS))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, hidden = self.gru(x)
        scores = self.head(hidden[-1])
        return scores, scores.argmax(dim=1)


def _generate(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    drift = (torch.randint(0, 3, (n, 1, 1), generator=gen) - 1).float() * 0.6  # -0.6, 0, 0.6
    x = torch.randn(n, STEPS, FEATURES, generator=gen) * 0.8
    x[:, :, :1] += drift
    mean = x[:, :, 0].mean(dim=1)
    return x, (mean > -0.25).long() + (mean > 0.25).long()


def train_data(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return _generate(3000, gen)


def test_data(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return _generate(500, gen)


def _examples() -> list[list]:
    x, _ = _generate(3, torch.Generator().manual_seed(7))
    return [[[round(v, 4) for v in step] for step in seq] for seq in x.tolist()]


CATALOG = [
    model(
        "drift_gru",
        DriftGRU,
        train_data,
        inputs=[tensor("x", (Dim("steps", 1, 512), FEATURES))],
        outputs=[tensor("scores", len(DRIFTS), classes=DRIFTS), tensor("label", (), "int64", classes=DRIFTS)],
        examples=_examples(),
        loss="cross_entropy",
        lr=1e-2,
        epochs=8,
        batch_size=100,
        description="a GRU over a sequence of any length (1 to 512 steps of 3 numbers) -> down, flat or up",
        source="examples/sequence.py",
        test_data=test_data,
    )
]
