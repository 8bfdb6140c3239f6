"""The spec API: what a catalog file declares about a model, read by every stage.

A catalog file is a Python file that defines `CATALOG`, a list of `ModelSpec`. A spec says what the
module is, what it learns from, how it is trained, what its inputs and outputs are called and shaped,
and where it comes from. No stage branches on a model's name: anything model-specific lives in a spec.
`model(...)` is the short constructor for the common case (README, "Your own model").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline import dtypes
from pipeline.errors import UserError

DTYPES = {name: getattr(torch, d.torch) for name, d in dtypes.DTYPES.items()}  # what a tensor spec may declare
# What a recipe may name; pipeline/train maps each to its torch class (a test keeps the two in step).
LOSSES = ("sse", "mse", "cross_entropy")
OPTIMIZERS = ("sgd", "adam", "rmsprop")
# What the benchmarks (pipeline/bench/) pick a model for, when its spec declares the role:
#   "floor"  the model the fastest-runtime-against-NumPy goal and the tuning settings are judged on;
#   "http"   the models the demo's HTTP routes and the demo-against-Triton comparison are measured on;
#   "quick"  the model whose train/export wall time `bench --quick` measures.
# A `bench --quick` run measures the "floor" and "http" models. Where no catalog declares a role, the
# benchmarks fall back to the manifest's order (see pipeline/bench/roles.py), so any catalog benches.
BENCH_ROLES = ("floor", "http", "quick")


class CatalogError(UserError, ValueError):
    """An unknown model or recipe name, or a spec that cannot be what it declares."""


@dataclass(frozen=True)
class Image:
    """How a picture becomes an image input: resized to (height, width), grayscale, ink mapped to [low, high].

    The demo draws or uploads a picture and applies exactly this; a client sends the tensor itself.
    """

    height: int
    width: int
    low: float = 0.0  # the value of blank paper
    high: float = 1.0  # the value of full ink
    ink: str = "dark"  # "dark": dark strokes on light paper are ink (a drawing); "light": the opposite

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready values, as the manifest keeps them."""
        return {"height": self.height, "width": self.width, "low": self.low, "high": self.high, "ink": self.ink}


@dataclass(frozen=True)
class Dim:
    """An axis after the batch whose length varies, by name, within [min, max]: Dim("steps", 1, 512).

    Every format is exported with it dynamic; the manifest, the OIP metadata (-1) and the Triton configs
    (-1) say so, and every route accepts any length in range. `tensor("x", ("steps", 3))` is Dim("steps").
    """

    name: str
    min: int = 1
    max: int = 4096  # bounds what one request may hold (the demo's and the OIP routes' size limits)

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or self.name == "batch" or not 1 <= self.min <= self.max:
            raise CatalogError(
                f"Dim({self.name!r}, {self.min}, {self.max}): expected a name other than 'batch' and 1 <= min <= max"
            )

    def __str__(self) -> str:
        return f"{self.name}({self.min}..{self.max})"


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output: a tensor of shape (batch, *shape) and dtype float32 or int64.

    `features` names the values of a 1-D tensor (the seed models' rows); `shape` defaults to
    (len(features),). `values` is the range [low, high) of an int64 input (token ids: (0, vocabulary)),
    `classes` names the columns of an output of class scores, `image` says that an input is a picture.
    """

    name: str
    features: tuple[str, ...] = ()
    shape: tuple[int | Dim, ...] = ()  # after the batch axis; a Dim (or its name) is an axis of varying length
    dtype: str = dtypes.DEFAULT_DTYPE
    values: tuple[float, float] | None = None
    classes: tuple[str, ...] = ()
    image: Image | None = None

    def __post_init__(self) -> None:
        if not self.shape and self.features:
            object.__setattr__(self, "shape", (len(self.features),))
        object.__setattr__(self, "shape", tuple(_dim(d, self.name) for d in self.shape))
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "classes", tuple(self.classes))
        if self.dtype not in DTYPES:
            raise CatalogError(f"tensor {self.name!r}: dtype {self.dtype!r}; expected one of: {', '.join(DTYPES)}")
        if any(isinstance(d, int) and d < 1 for d in self.shape):  # () is a scalar per example: an argmax
            raise CatalogError(f"tensor {self.name!r}: shape {self.shape}; expected sizes after the batch axis")

    @property
    def width(self) -> int:
        """How many values one example holds (at most, where an axis varies)."""
        return math.prod(d.max if isinstance(d, Dim) else d for d in self.shape)

    @property
    def dynamic(self) -> tuple[Dim, ...]:
        """The axes whose length varies."""
        return tuple(d for d in self.shape if isinstance(d, Dim))

    @property
    def shape_text(self) -> str:
        """The shape after the batch axis as a person reads it: '2', '1, 8, 8' or 'steps(1..512), 3'."""
        return ", ".join(map(str, self.shape))

    def fits(self, dims: tuple[int, ...]) -> bool:
        """Whether a tensor of shape (batch, *dims) has this spec's shape after the batch axis."""
        return len(dims) == len(self.shape) and all(
            d.min <= n <= d.max if isinstance(d, Dim) else n == d for n, d in zip(dims, self.shape, strict=True)
        )

    @property
    def names(self) -> tuple[str, ...]:
        """The feature names, or the class names, or none."""
        return self.features or self.classes

    def as_dict(self) -> dict[str, Any]:
        """The manifest's entry: name, shape with the batch axis, dtype and what the values mean."""
        out: dict[str, Any] = {
            "name": self.name,
            "shape": ["batch", *(d.name if isinstance(d, Dim) else d for d in self.shape)],
            "dtype": self.dtype,
            "features": list(self.features),
        }
        if self.dynamic:  # each named axis's range
            out["dims"] = {d.name: [d.min, d.max] for d in self.dynamic}
        if self.values is not None:
            out["values"] = list(self.values)
        if self.classes:
            out["classes"] = list(self.classes)
        if self.image is not None:
            out["image"] = self.image.as_dict()
        return out


def _dim(d: Any, tensor_name: str) -> int | Dim:
    if isinstance(d, Dim):
        return d
    if isinstance(d, str):
        return Dim(d)
    if isinstance(d, (int, np.integer)) and not isinstance(d, bool):
        return int(d)
    raise CatalogError(
        f"tensor {tensor_name!r}: axis {d!r}; expected a size (int) or a varying axis (a name, or Dim(name, min, max))"
    )


def tensor(
    name: str,
    shape: int | str | Dim | Sequence[int | str | Dim],
    dtype: str = dtypes.DEFAULT_DTYPE,
    *,
    features: Sequence[str] = (),
    values: tuple[float, float] | None = None,
    classes: Sequence[str] = (),
    image: Image | None = None,
) -> TensorSpec:
    """A TensorSpec from a shape after the batch axis: tensor("ids", 12, "int64", values=(0, 50))."""
    dims = (shape,) if isinstance(shape, (int, str, Dim)) else tuple(shape)
    return TensorSpec(name, tuple(features), dims, dtype, values, tuple(classes), image)


@dataclass(frozen=True)
class Recipe:
    """How a model is trained: the loss, optimizer and schedule."""

    loss: str  # "sse": sum of squared errors; "mse": their mean; "cross_entropy": class indices as targets
    optimizer: str  # "sgd" (plain gradient descent when there is no momentum), "adam" or "rmsprop".
    lr: float
    epochs: int  # passes over the data; a full-batch recipe makes one step per epoch
    batch_size: int | None = None  # None: the whole data set in every step
    shuffle: bool = False  # reshuffle mini-batches every epoch (DataLoader(shuffle=True))
    gradients: str = "autograd"  # "autograd", or "manual": the module's own manual_gradients()
    note: str = ""  # what the source says about this recipe, shown by `list` and kept in history
    seed_loss: str = ""  # the final loss the seeds document or measured (SEED_MODELS.md); "" where they give none
    init: Callable[[nn.Module], None] | None = None  # redraws the fresh module's weights; None keeps them

    def as_dict(self) -> dict[str, Any]:
        """The recipe as JSON-ready values."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["init"] = self.init.__name__.strip("_") if self.init else "module default"
        return out


@dataclass(frozen=True)
class Study:
    """An extra experiment a seed runs on a model: the same recipe at several learning rates."""

    name: str
    lrs: tuple[float, ...]
    epochs: int
    track: Callable[[nn.Module], float]  # the value plotted per epoch beside the loss
    track_label: str


# A NumPy forward pass (batch, features) float32 -> the outputs, and what builds one from a state_dict.
NumpyForward = Callable[[np.ndarray], tuple[np.ndarray, ...]]
NumpyPrepare = Callable[[dict[str, np.ndarray]], NumpyForward]
# Training data: x (one tensor, or a tuple with one per input, in input order) and the first output's targets.
Data = Callable[[torch.Generator], tuple[Any, torch.Tensor]]
# An example: one row of numbers (a model with one 1-D input), or input name -> nested list of values.
Example = Sequence[float] | Mapping[str, Any]


@dataclass(frozen=True)
class ModelSpec:
    """Everything the stages need to know about one model."""

    name: str
    description: str  # one line, shown by `list` and the demo
    seed: str  # where it comes from: a seed file and section, or the catalog file's own words
    build: Callable[[], nn.Module]  # a fresh module with its initialisation
    data: Data | None  # (x, y) for training; None: the model can only be imported (`python -m pipeline import`)
    recipes: dict[str, Recipe]  # variant name -> recipe; the first one is the default
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    examples: tuple[Example, ...]  # single examples for prediction
    # What the exporters trace, given the trained module (e.g. to avoid a Python autograd.Function).
    export_form: Callable[[nn.Module], nn.Module] = field(default=lambda m: m)
    # Figures printed after training and kept in history.json (fitted formula, predictions, ...).
    report: Callable[[nn.Module], dict[str, Any]] | None = None
    study: Study | None = None
    # The benchmarks' floor: given the state_dict as NumPy arrays, a hand-written NumPy forward pass
    # (batch, features) float32 -> the outputs in catalog order, with the weights prepared once.
    numpy_forward: NumpyPrepare | None = None
    # The task's true function, when it has one: an expression of the input feature names for the first
    # output (+ - * / **, numbers, pi, sin cos exp tanh). Export writes it into the manifest and the demo
    # evaluates it with NumPy to show the right answer beside the model's; None: no true function.
    truth: str | None = None
    activation: str | None = None  # the nonlinearity the net uses ("relu", "sigmoid"), drawn by the demo
    seed_figures: str = ""  # what the seed reports for a trained model (final loss, predictions), one line
    # Held-out data, drawn after the training data from the same generator: history.json gets its loss,
    # and its accuracy when the recipe's loss is cross_entropy.
    test_data: Data | None = None
    bench_roles: tuple[str, ...] = ()  # what the benchmarks pick this model for: some of BENCH_ROLES

    def __post_init__(self) -> None:
        object.__setattr__(self, "bench_roles", tuple(self.bench_roles))
        unknown = [r for r in self.bench_roles if r not in BENCH_ROLES]
        if unknown:
            raise CatalogError(
                f"{self.name}: bench_roles {', '.join(map(repr, unknown))}; expected some of: {', '.join(BENCH_ROLES)}"
            )
        scalar = [t.name for t in self.inputs if not t.shape]
        if scalar:
            raise CatalogError(
                f"{self.name}: input {scalar[0]!r} has shape (); expected one or more sizes (scalars are outputs only)"
            )
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "examples", tuple(self.examples))

    @property
    def default_recipe(self) -> str:
        return next(iter(self.recipes))

    def recipe(self, variant: str | None = None) -> Recipe:
        """The named recipe variant, or the default one."""
        variant = variant or self.default_recipe
        if variant not in self.recipes:
            raise CatalogError(f"{self.name} has no recipe {variant!r}; expected one of: {', '.join(self.recipes)}")
        return self.recipes[variant]

    def example_values(self, example: Example) -> dict[str, Any]:
        """One example as input name -> values."""
        if isinstance(example, Mapping):
            return {t.name: example[t.name] for t in self.inputs}
        return {self.inputs[0].name: list(example)}

    def example_inputs(self, rows: Sequence[Example] | None = None) -> tuple[torch.Tensor, ...]:
        """The catalog examples (or given ones) as one batch: a tensor per input, of its dtype and shape."""
        rows = self.examples if rows is None else rows
        values = [self.example_values(r) for r in rows]
        return tuple(
            torch.tensor([v[t.name] for v in values], dtype=DTYPES[t.dtype]).reshape(
                len(values),
                *(-1 if isinstance(d, Dim) else d for d in t.shape),  # the examples' own length
            )
            for t in self.inputs
        )

    def example_batch(self, rows: Sequence[Example] | None = None) -> torch.Tensor:
        """The first input of example_inputs: the whole batch of a one-input model."""
        return self.example_inputs(rows)[0]


def with_recipe(spec: ModelSpec, variant: str) -> ModelSpec:
    """The spec with `variant` as its default recipe."""
    recipe = spec.recipe(variant)
    return replace(spec, recipes={variant: recipe, **spec.recipes})


def model(
    name: str,
    build: Callable[[], nn.Module],
    data: Data | None,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    examples: Sequence[Example],
    *,
    loss: str = "mse",
    optimizer: str = "adam",
    lr: float = 1e-3,
    epochs: int = 10,
    batch_size: int | None = 64,
    description: str = "",
    source: str = "own model",
    test_data: Data | None = None,
    **more: Any,
) -> ModelSpec:
    """A ModelSpec with one recipe built from loss/optimizer/lr/epochs/batch_size: the common case."""
    recipe = Recipe(loss, optimizer, lr, epochs, batch_size=batch_size, shuffle=batch_size is not None)
    return ModelSpec(
        name=name,
        description=description or name,
        seed=source,
        build=build,
        data=data,
        recipes={"default": recipe},
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        examples=tuple(examples),
        test_data=test_data,
        **more,
    )
