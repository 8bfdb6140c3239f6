"""What the page shows beside a model's outputs: the answer the task's true function gives, and class
probabilities. Pure NumPy over the manifest's declarations; no runtime, no web framework.
"""

from __future__ import annotations

import ast
import functools
import logging
from collections.abc import Sequence

import numpy as np

from pipeline.artifacts.manifest import ModelEntry

log = logging.getLogger("pipeline.serving.answers")

TRUTH_FUNCTIONS = {"sin": np.sin, "cos": np.cos, "exp": np.exp, "tanh": np.tanh}
TRUTH_CONSTANTS = {"pi": float(np.pi)}
TRUTH_OPERATORS = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.divide, ast.Pow: np.power}
TRUTH_MAX_CHARS = 200  # the catalog's are a few characters; the manifest is data, so bounded


class TruthError(ValueError):
    """A `truth` expression outside the small arithmetic the catalog may declare."""


def truth_value(expression: str, names: Sequence[str], values: Sequence[float]) -> float:
    """A catalog `truth` expression (e.g. "x1 + x2", "sin(x)") at one example, evaluated with NumPy.

    Only names of the inputs, numbers, pi, + - * / ** and sin cos exp tanh are read, from a parsed
    tree: the expression comes from the manifest, which is data, never run as code.
    """
    if not isinstance(expression, str) or len(expression) > TRUTH_MAX_CHARS:
        raise TruthError(f"truth expression: expected text of at most {TRUTH_MAX_CHARS} characters")
    env = {**TRUTH_CONSTANTS, **dict(zip(names, (float(v) for v in values), strict=True))}

    def ev(node: ast.AST) -> float:
        match node:
            case ast.Constant(value=float() | int() as v) if not isinstance(v, bool):
                return float(v)
            case ast.Name(id=name) if name in env:
                return env[name]
            case ast.UnaryOp(op=ast.USub(), operand=operand):
                return -ev(operand)
            case ast.BinOp(left=left, op=op, right=right) if type(op) in TRUTH_OPERATORS:
                return float(TRUTH_OPERATORS[type(op)](ev(left), ev(right)))
            case ast.Call(func=ast.Name(id=fn), args=[arg], keywords=[]) if fn in TRUTH_FUNCTIONS:
                return float(TRUTH_FUNCTIONS[fn](ev(arg)))
        raise TruthError(f"truth expression {expression!r}: {ast.unparse(node)!r} is not allowed")

    tree = _parsed(expression)
    with np.errstate(all="ignore"):
        return ev(tree.body)


@functools.lru_cache(maxsize=256)
def _parsed(expression: str) -> ast.Expression:
    """The parsed expression, parsed once: every prediction evaluates it, and CPython 3.11's parser is not
    safe to run in several threads at once ("AST constructor recursion depth mismatch" while an export
    thread compiles too), so the request threads should not all parse."""
    try:
        return ast.parse(expression, mode="eval")
    except SyntaxError:
        raise TruthError(f"truth expression {expression!r} does not parse") from None


def expected_answer(entry: ModelEntry, values: Sequence[float], outputs: dict[str, list[float]]) -> dict | None:
    """What the first output should be for `values` by the task's declared true function, and the
    model's error: {"output", "truth", "value", "model", "error"}; None when the task declares none."""
    expression = entry.raw.get("truth")
    if not expression or len(entry.features) != len(values):
        return None
    try:
        value = truth_value(expression, entry.features, values)
    except TruthError as exc:
        log.warning("%s: %s", entry.name, exc)
        return None
    name = entry.output_names[0]
    model = outputs[name][0]
    return {"output": name, "truth": expression, "value": value, "model": model, "error": model - value}


def class_labels(entry: ModelEntry, outputs: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """For each output that declares class names: class -> softmax probability of its scores."""
    labels = {}
    for spec in entry.outputs:
        classes = spec.get("classes") or []
        scores = np.asarray(outputs.get(spec["name"], []), dtype=np.float64)
        if classes and len(classes) == scores.size:
            e = np.exp(scores - scores.max())
            labels[spec["name"]] = {str(c): float(p) for c, p in zip(classes, e / e.sum(), strict=True)}
    return labels
