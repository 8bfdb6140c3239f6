"""The seed catalog: the eight models of the Chinese PyTorch tutorials, a catalog file like any other.

The pipeline loads it by default; a person's own catalog files join it through --catalog (README,
"Your own model"). Everything here is data for the spec API in pipeline/spec.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.catalog import models
from pipeline.spec import ModelSpec, NumpyForward, NumpyPrepare, Recipe, Study, TensorSpec

# ---- data: each returns (x, y) float32 tensors of shape (n, features) and (n, outputs) ----------


def _random_regression(n: int, d_in: int, d_out: int) -> Callable[[torch.Generator], Any]:
    def data(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(n, d_in, generator=gen), torch.randn(n, d_out, generator=gen)

    return data


def _sine(_: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.linspace(-math.pi, math.pi, 2000).unsqueeze(1)
    return x, torch.sin(x)


def _fixed(x: list[list[float]], y: list[list[float]]) -> Callable[[torch.Generator], Any]:
    def data(_: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)

    return data


def _normal_init(model: nn.Module) -> None:
    """Every parameter from N(0, 1), as seed 002's numpy and tensor versions draw a, b, c, d."""
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()


# ---- reports ------------------------------------------------------------------------------------


def _formula(model: nn.Module) -> dict[str, Any]:
    return {"coefficients": model.coefficients(), "formula": model.formula()}


def _predictions(rows: list[list[float]]) -> Callable[[nn.Module], dict[str, Any]]:
    def report(model: nn.Module) -> dict[str, Any]:
        param = next(model.parameters())
        with torch.no_grad():
            out = model(torch.tensor(rows, dtype=torch.float32, device=param.device))
        first = out[0] if isinstance(out, tuple) else out
        return {"predictions": {str(r): round(float(v), 4) for r, v in zip(rows, first.flatten(), strict=True)}}

    return report


def _linear_params(model: nn.Module) -> dict[str, Any]:
    return {"w": float(model.linear.weight.item()), "b": float(model.linear.bias.item())}


# ---- NumPy forward passes: the benchmarks' practical floor, from the same weights ------------------


def _np_mlp(first: str, second: str, activation: str, expose_hidden: bool = False) -> NumpyPrepare:
    """Linear(first) -> relu or sigmoid -> Linear(second); optionally the hidden layer as a second output."""

    def prepare(sd: dict[str, np.ndarray]) -> NumpyForward:
        w1, b1 = np.ascontiguousarray(sd[f"{first}.weight"].T), sd[f"{first}.bias"]
        w2, b2 = np.ascontiguousarray(sd[f"{second}.weight"].T), sd[f"{second}.bias"]
        relu = activation == "relu"

        def forward(x: np.ndarray) -> tuple[np.ndarray, ...]:
            h = x @ w1
            h += b1
            if relu:
                np.maximum(h, 0, out=h)
            else:
                np.negative(h, out=h)
                np.exp(h, out=h)
                h += 1
                np.reciprocal(h, out=h)
            y = h @ w2
            y += b2
            return (y, h) if expose_hidden else (y,)

        return forward

    return prepare


def _np_raw(sd: dict[str, np.ndarray]) -> NumpyForward:
    w1, w2 = sd["w1"], sd["w2"]

    def forward(x: np.ndarray) -> tuple[np.ndarray, ...]:
        h = x @ w1
        np.maximum(h, 0, out=h)
        return (h @ w2,)

    return forward


def _np_poly3(sd: dict[str, np.ndarray]) -> NumpyForward:
    b, c, d = (float(v) for v in sd["linear.weight"].ravel())
    a = float(sd["linear.bias"].ravel()[0])

    def forward(x: np.ndarray) -> tuple[np.ndarray, ...]:
        return (a + x * (b + x * (c + x * d)),)

    return forward


def _np_legendre3(sd: dict[str, np.ndarray]) -> NumpyForward:
    a, b, c, d = (float(sd[k]) for k in "abcd")

    def forward(x: np.ndarray) -> tuple[np.ndarray, ...]:
        t = c + d * x
        return (a + b * (0.5 * (5 * t * t * t - 3 * t)),)

    return forward


def _np_linear1(sd: dict[str, np.ndarray]) -> NumpyForward:
    w, b = float(sd["linear.weight"].ravel()[0]), float(sd["linear.bias"].ravel()[0])

    def forward(x: np.ndarray) -> tuple[np.ndarray, ...]:
        return (x * w + b,)

    return forward


# ---- the given initial weights of seed 004 §11.5 --------------------------------------------------

SIGMOID_NET_INIT = {
    "hidden.weight": [[-0.0053, 0.3793], [-0.5820, -0.5204], [-0.2723, 0.1896]],
    "hidden.bias": [-0.0140, 0.5607, -0.0628],
    "output.weight": [[0.1528, -0.1745, -0.1135]],
    "output.bias": [-0.5516],
}


def _sigmoid_net() -> nn.Module:
    net = models.SigmoidNet()
    net.load_state_dict({k: torch.tensor(v) for k, v in SIGMOID_NET_INIT.items()})
    return net


def _names(prefix: str, n: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(n))


SSE_NOTE = "sum of squared errors; the seed's size_average=False is the old spelling of reduction='sum'"

CATALOG: list[ModelSpec] = [
    ModelSpec(
        name="two_layer_net",
        description="Linear(1000,100) -> ReLU -> Linear(100,10) memorising 64 random examples",
        seed="000 (nn module version)",
        build=models.TwoLayerNet,
        data=_random_regression(64, 1000, 10),
        recipes={"sgd": Recipe("sse", "sgd", 1e-4, 500, note=SSE_NOTE, seed_loss="6e-7 to 1.5e-5")},
        inputs=(TensorSpec("x", _names("x", 1000)),),
        outputs=(TensorSpec("y", _names("y", 10)),),
        examples=(tuple(0.01 * ((7 * i) % 201 - 100) for i in range(1000)),),
        numpy_forward=_np_mlp("linear1", "linear2", "relu"),
        activation="relu",
        seed_figures="loss 6e2–7e2 at step 0, 2–4 at step 99, 6e-7 – 1.5e-5 at step 499",
        bench_roles=("floor", "http"),
    ),
    ModelSpec(
        name="two_layer_raw",
        description="x @ w1 -> clamp(min=0) -> @ w2, no biases, trained by plain gradient descent",
        seed="001 §1-3, 000 (tensor version)",
        build=models.TwoLayerRaw,
        data=_random_regression(100, 1000, 10),
        recipes={
            "manual": Recipe(
                "sse",
                "sgd",
                1e-6,
                20,
                gradients="manual",
                note="hand-written backprop, no autograd",
                seed_loss="6e5 to 1.1e6",
            ),
            "autograd": Recipe(
                "sse", "sgd", 1e-6, 20, note="the same descent with autograd gradients", seed_loss="6e5 to 1.1e6"
            ),
        },
        inputs=(TensorSpec("x", _names("x", 1000)),),
        outputs=(TensorSpec("y", _names("y", 10)),),
        examples=(tuple(0.01 * ((7 * i) % 201 - 100) for i in range(1000)),),
        numpy_forward=_np_raw,
        activation="relu",
        seed_figures="loss 4e7–5.5e7 at epoch 0, rising to 1e8–9e8, then 6e5–1.1e6 at epoch 19",
    ),
    ModelSpec(
        name="poly3_sin",
        description="y = a + b x + c x^2 + d x^3 fitted to sin(x) on [-pi, pi]",
        seed="002 §1-2, §5-6",
        build=models.Poly3,
        data=_sine,
        recipes={
            "sgd": Recipe("sse", "sgd", 1e-6, 2000, note=SSE_NOTE, init=_normal_init, seed_loss="8.9 to 15"),
            "rmsprop": Recipe(
                "sse", "rmsprop", 1e-3, 2000, note="seed 002 §6, nn.Linear's own init", seed_loss="8.92 to 8.94"
            ),
        },
        inputs=(TensorSpec("x", ("x",)),),
        outputs=(TensorSpec("y", ("y",)),),
        examples=((0.0,), (1.0,), (math.pi / 2,), (-2.0,)),
        report=_formula,
        numpy_forward=_np_poly3,
        truth="sin(x)",
        seed_figures="y = −0.0037 + 0.8345x + 0.0006x² − 0.0902x³ (nn); least-squares optimum loss 8.817",
    ),
    ModelSpec(
        name="legendre3_sin",
        description="y = a + b P3(c + d x), P3 a custom autograd Function, fitted to sin(x)",
        seed="002 §4",
        build=models.Legendre3,
        data=_sine,
        recipes={
            "sgd": Recipe("sse", "sgd", 5e-6, 2000, note="custom Function with hand-written backward", seed_loss="8.94")
        },
        inputs=(TensorSpec("x", ("x",)),),
        outputs=(TensorSpec("y", ("y",)),),
        examples=((0.0,), (1.0,), (math.pi / 2,), (-2.0,)),
        export_form=models.Legendre3Inference,
        report=_formula,
        numpy_forward=_np_legendre3,
        truth="sin(x)",
        seed_figures="loss 461.9 at step 0, 8.94 at 1999; a ≈ 0, b ≈ −2.2085, c ≈ 0, d ≈ 0.2555",
    ),
    ModelSpec(
        name="adder_simplenn",
        description="Linear(2,10) -> ReLU -> Linear(10,1) learning the sum of two numbers from 2 examples",
        seed="003",
        build=models.SimpleNN,
        data=_fixed([[1, 2], [3, 4]], [[3], [7]]),
        recipes={
            "adam": Recipe(
                "mse",
                "adam",
                0.01,
                100,
                note="targets of shape (2, 1), not the seed's (1, 2)",
                seed_loss="0.08 to 0.25",
            )
        },
        inputs=(TensorSpec("x", ("x1", "x2")),),
        outputs=(TensorSpec("sum", ("sum",)),),
        examples=((10.0, 11.0), (1.5, 2.5), (1.0, 2.0)),
        report=_predictions([[1, 2], [3, 4], [1.5, 2.5], [10, 11]]),
        numpy_forward=_np_mlp("fc1", "fc2", "relu"),
        truth="x1 + x2",
        activation="relu",
        seed_figures="final loss 0.08–0.25; (1.5, 2.5) → 4.2–4.4, (10, 11) → 17.6–19.5 (2 points extrapolate poorly)",
    ),
    ModelSpec(
        name="adder_mynet",
        description="Linear(2,8) -> ReLU -> Linear(8,1) learning the sum of two numbers, hidden layer exposed",
        seed="004 §10.9-10.13",
        build=models.MyNeuralNet,
        data=_fixed([[1, 2], [3, 4], [5, 6], [7, 8]], [[3], [7], [11], [15]]),
        recipes={"sgd": Recipe("mse", "sgd", 0.001, 50, batch_size=2, shuffle=True, note="Dataset + DataLoader")},
        inputs=(TensorSpec("x", ("x1", "x2")),),
        outputs=(TensorSpec("sum", ("sum",)), TensorSpec("hidden", _names("h", 8))),
        examples=((10.0, 11.0), (8.0, 9.0), (1.5, 2.5)),
        report=_predictions([[8, 9], [10, 11], [1.5, 2.5]]),
        numpy_forward=_np_mlp("input_to_hidden_layer", "hidden_to_output_layer", "relu", True),
        truth="x1 + x2",
        activation="relu",
        seed_figures="(8, 9) → 16.5–17.0, (10, 11) → 20.2–21.0, (1.5, 2.5) → 4.0–4.6",
        bench_roles=("http",),
    ),
    ModelSpec(
        name="sigmoid_net",
        description="Linear(2,3) -> Sigmoid -> Linear(3,1) trained on the one point (1, 1) -> 0",
        seed="004 §11.3-11.5",
        build=_sigmoid_net,
        data=_fixed([[1, 1]], [[0]]),
        recipes={
            "sgd": Recipe("mse", "sgd", 0.01, 100, note="autograd in place of finite differences", seed_loss="0.00033")
        },
        inputs=(TensorSpec("x", ("x1", "x2")),),
        outputs=(TensorSpec("y", ("y",)),),
        examples=((1.0, 1.0), (0.0, 0.0), (2.0, -1.0)),
        report=_predictions([[1, 1]]),
        numpy_forward=_np_mlp("hidden", "output", "sigmoid"),
        activation="sigmoid",
        seed_figures="loss 0.3346 at epoch 0, 0.0102 at 50, 0.00033 at 99",
    ),
    ModelSpec(
        name="linear_3x",
        description="y = w x + b learning y = 3x, with the seed's learning-rate study",
        seed="004 §11.6",
        build=models.Linear1,
        data=_fixed([[1], [2], [3], [4]], [[3], [6], [9], [12]]),
        recipes={"sgd": Recipe("mse", "sgd", 0.1, 200, note="lr 0.1 until it converges (w ~ 3, b ~ 0)")},
        inputs=(TensorSpec("x", ("x",)),),
        outputs=(TensorSpec("y", ("y",)),),
        examples=((5.0,), (1.0,), (-2.5,)),
        report=_linear_params,
        study=Study(
            name="lr_study",
            lrs=(0.01, 0.1, 1.0),
            epochs=10,
            track=lambda m: float(m.linear.weight.item()),
            track_label="weight w",
        ),
        numpy_forward=_np_linear1,
        truth="3 * x",
        seed_figures="lr 0.1 converges to w ≈ 3, b ≈ 0; the study: lr 0.01 w 2.27 after 10 epochs, lr 1 diverges",
        bench_roles=("quick",),
    ),
]
