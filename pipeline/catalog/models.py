"""The seed tutorials' networks as nn.Modules.

Every module takes one float32 tensor of shape (batch, features) and returns one tensor of shape
(batch, outputs), or a tuple of such tensors when the catalog declares several outputs (the first
one is what the loss trains). Each class names the seed it comes from.
"""

from __future__ import annotations

import torch
from torch import nn


class TwoLayerNet(nn.Module):
    """Seed 000, nn version: Linear(1000,100) -> ReLU -> Linear(100,10)."""

    def __init__(self, d_in: int = 1000, hidden: int = 100, d_out: int = 10) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_in, hidden)
        self.relu = nn.ReLU()
        self.linear2 = nn.Linear(hidden, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.relu(self.linear1(x)))


class TwoLayerRaw(nn.Module):
    """Seeds 000 (tensor version) and 001 §1-3: x @ w1 -> clamp(min=0) -> @ w2, no biases.

    w1, w2 ~ N(0, 1), unscaled, as in the seed. `manual_gradients` is the seed's hand-written
    backprop, with the correct ReLU derivative (seed 001 §1 clamps grad_h instead, which is wrong).
    """

    def __init__(self, d_in: int = 1000, hidden: int = 100, d_out: int = 10) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(d_in, hidden))
        self.w2 = nn.Parameter(torch.randn(hidden, d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mm(self.w1).clamp(min=0).mm(self.w2)

    @torch.no_grad()
    def manual_gradients(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Sum-of-squares loss, with d(loss)/d(w) written into each `.grad` without autograd."""
        h = x.mm(self.w1)
        h_relu = h.clamp(min=0)
        y_pred = h_relu.mm(self.w2)
        loss = (y_pred - y).pow(2).sum()
        grad_y_pred = 2.0 * (y_pred - y)
        grad_w2 = h_relu.t().mm(grad_y_pred)
        grad_h = grad_y_pred.mm(self.w2.t())
        grad_h[h < 0] = 0
        grad_w1 = x.t().mm(grad_h)
        self.w1.grad = grad_w1
        self.w2.grad = grad_w2
        return loss


def _powers(x: torch.Tensor) -> torch.Tensor:
    # (batch, 1) -> (batch, 3) holding x, x^2, x^3: the seed's x.unsqueeze(-1).pow(tensor([1, 2, 3])).
    return torch.cat([x, x * x, x * x * x], dim=1)


class Poly3(nn.Module):
    """Seed 002 §1-2, §5-6: y = a + b x + c x^2 + d x^3 as Linear(3, 1) over (x, x^2, x^3)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 1)  # nn.Linear's own init, as seed 002 §5-6; recipes may redraw it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(_powers(x))

    def coefficients(self) -> dict[str, float]:
        """The fitted a, b, c, d."""
        w = self.linear.weight.detach().flatten().tolist()
        return {"a": float(self.linear.bias.item()), "b": w[0], "c": w[1], "d": w[2]}

    def formula(self) -> str:
        """The fit printed as the seed does."""
        k = self.coefficients()
        return f"y = {k['a']:.4f} + {k['b']:.4f} x + {k['c']:.4f} x^2 + {k['d']:.4f} x^3"


class LegendreP3(torch.autograd.Function):
    """Seed 002 §4: P3(t) = 1/2 (5 t^3 - 3 t) with a hand-written backward."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(t)
        return 0.5 * (5 * t**3 - 3 * t)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (t,) = ctx.saved_tensors
        return grad_output * 1.5 * (5 * t**2 - 1)


class Legendre3(nn.Module):
    """Seed 002 §4: y = a + b P3(c + d x), P3 through the custom autograd Function.

    Init a=0, b=-1, c=0, d=0.3, as in the tutorial the seed quotes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.0))
        self.b = nn.Parameter(torch.tensor(-1.0))
        self.c = nn.Parameter(torch.tensor(0.0))
        self.d = nn.Parameter(torch.tensor(0.3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a + self.b * LegendreP3.apply(self.c + self.d * x)

    def coefficients(self) -> dict[str, float]:
        """The fitted a, b, c, d."""
        return {k: float(getattr(self, k).item()) for k in "abcd"}

    def formula(self) -> str:
        """The fit printed as the seed does."""
        k = self.coefficients()
        return f"y = {k['a']:.4f} + {k['b']:.4f} * P3({k['c']:.4f} + {k['d']:.4f} x)"


class Legendre3Inference(nn.Module):
    """Legendre3's forward with P3 written as plain tensor ops, sharing its parameters.

    TorchScript cannot serialize a Python autograd.Function, so the exporters trace this instead;
    the parity check proves it equal to the Function the model was trained with.
    """

    def __init__(self, trained: Legendre3) -> None:
        super().__init__()
        self.a, self.b, self.c, self.d = trained.a, trained.b, trained.c, trained.d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.c + self.d * x
        return self.a + self.b * (0.5 * (5 * t * t * t - 3 * t))


class SimpleNN(nn.Module):
    """Seed 003: Linear(2,10) -> ReLU -> Linear(10,1)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(2, 10)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(10, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.fc1(x)))


class MyNeuralNet(nn.Module):
    """Seed 004 §10.9-10.12: Linear(2,8) -> ReLU -> Linear(8,1), returning (sum, hidden)."""

    def __init__(self) -> None:
        super().__init__()
        self.input_to_hidden_layer = nn.Linear(2, 8)
        self.hidden_layer_activation = nn.ReLU()
        self.hidden_to_output_layer = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.hidden_layer_activation(self.input_to_hidden_layer(x))
        return self.hidden_to_output_layer(hidden), hidden


class SigmoidNet(nn.Module):
    """Seed 004 §11.3-11.5: Linear(2,3) -> Sigmoid -> Linear(3,1)."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(2, 3)
        self.activation = nn.Sigmoid()
        self.output = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.activation(self.hidden(x)))


class Linear1(nn.Module):
    """Seed 004 §11.6: y = w x + b, from w = b = 0."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(1, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)
