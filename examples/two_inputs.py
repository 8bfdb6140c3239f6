"""A catalog file: a model with two named inputs of different ranks and dtypes, on data it generates.

`words` are 12 int64 word ids from a vocabulary of 50 (the mean of their embeddings: what
nn.EmbeddingBag(mode="mean") computes on a 2-D input, written as nn.Embedding + mean because the ONNX
exporter turns EmbeddingBag into a Loop over sequences that the float16 converter cannot type);
`signals` are 4 float32 numbers. The label is one of three moods: the count of "happy" words (ids 0-9)
minus "sad" ones (ids 10-19), plus twice the first signal, below -1, between, above 1.

    python -m pipeline train --catalog examples/two_inputs.py --models mood_bag
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.spec import model, tensor

VOCABULARY, WORDS, SIGNALS = 50, 12, 4
MOODS = ("sad", "neutral", "happy")


class MoodBag(nn.Module):
    """The mean embedding of the words, joined with the signals, through a two-layer classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCABULARY, 16)
        self.head = nn.Sequential(nn.Linear(16 + SIGNALS, 32), nn.ReLU(), nn.Linear(32, len(MOODS)))

    def forward(self, words: torch.Tensor, signals: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.embedding(words).mean(dim=1), signals], dim=1))


def _generate(n: int, gen: torch.Generator) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    words = torch.randint(0, VOCABULARY, (n, WORDS), generator=gen)
    signals = torch.randn(n, SIGNALS, generator=gen)
    score = (words < 10).sum(1) - ((words >= 10) & (words < 20)).sum(1) + 2 * signals[:, 0]
    mood = (score > -1).long() + (score > 1).long()
    return (words, signals), mood


def train_data(gen: torch.Generator) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    return _generate(4000, gen)


def test_data(gen: torch.Generator) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    return _generate(1000, gen)


CATALOG = [
    model(
        "mood_bag",
        MoodBag,
        train_data,
        inputs=[
            tensor("words", WORDS, "int64", values=(0, VOCABULARY)),
            tensor("signals", SIGNALS, features=["s1", "s2", "s3", "s4"]),
        ],
        outputs=[tensor("scores", len(MOODS), classes=MOODS)],
        examples=[
            {"words": [1, 2, 3, 4, 5, 30, 31, 32, 33, 34, 35, 36], "signals": [0.5, 0.0, 0.0, 0.0]},
            {"words": [10, 11, 12, 13, 14, 15, 40, 41, 42, 43, 44, 45], "signals": [-0.5, 0.0, 0.0, 0.0]},
        ],
        loss="cross_entropy",
        lr=5e-3,
        epochs=20,
        batch_size=128,
        description="word ids (EmbeddingBag) and four signals -> one of three moods",
        source="examples/two_inputs.py",
        test_data=test_data,
    )
]
