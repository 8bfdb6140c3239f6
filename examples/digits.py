"""A catalog file: a small CNN that reads handwritten digits (scikit-learn's bundled 8x8 digits, no download).

    python -m pipeline train  --catalog examples/digits.py --models digits_cnn
    python -m pipeline export --catalog examples/digits.py --models digits_cnn
    python demo/app.py --catalog examples/digits.py      # draw a digit on the page

The input is one 8x8 grayscale picture with values 0 (paper) to 16 (ink), as load_digits gives it; the
page turns a drawing into exactly that (`Image` below). The output is one score per class, 0 to 9.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline.spec import Image, model, tensor

TRAIN = 1437  # 80 % train, the other 360 are held out: a fixed shuffle (SPLIT_SEED), the same split every run
SPLIT_SEED = 0


class DigitsCNN(nn.Module):
    """Two 3x3 convolutions, a 2x2 max-pool, two linear layers: about 18 thousand parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(image / 16.0))  # 0..16 -> 0..1 inside the model: every format agrees


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(SPLIT_SEED).permutation(len(digits.target))  # writers mixed across the split
    x = torch.tensor(digits.images[order], dtype=torch.float32).unsqueeze(1)  # (1797, 1, 8, 8)
    return x, torch.tensor(digits.target[order], dtype=torch.int64)


def train_data(_: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _digits()
    return x[:TRAIN], y[:TRAIN]


def test_data(_: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _digits()
    return x[TRAIN:], y[TRAIN:]


def _examples() -> list[list]:
    x, _ = test_data(torch.Generator())
    return [x[i].tolist() for i in range(3)]  # three held-out digits


CATALOG = [
    model(
        "digits_cnn",
        DigitsCNN,
        train_data,
        inputs=[tensor("image", (1, 8, 8), image=Image(8, 8, low=0.0, high=16.0, ink="dark"))],
        outputs=[tensor("scores", 10, classes=[str(d) for d in range(10)])],
        examples=_examples(),
        loss="cross_entropy",
        optimizer="adam",
        lr=2e-3,
        epochs=12,
        batch_size=64,
        description="a small CNN reading 8x8 handwritten digits (scikit-learn's load_digits)",
        source="examples/digits.py",
        test_data=test_data,
    )
]
