"""Where an artifact parts from eager: one batch through both, layer by layer, and the first layer beyond its rule.

A layer is a submodule as the user's nn.Module names it ("encoder.0.linear"; "(model)" is the whole
module). Eager's values come from forward hooks. The artifact's come from the artifact itself:
- ONNX and its derived files: the node outputs that leave each module's scope, exposed as extra graph
  outputs of an in-memory copy (the published file is only read). The scope is what torch.onnx's
  exporter records on each node (`pkg.torch.onnx.name_scopes`); a derived file's nodes keep the float32
  file's value names, so its layers are found through the float32 file's scopes.
- .pt2: torch.export.unflatten gives the program back its submodules, run with forward hooks.
- TorchScript: a loaded ScriptModule runs its submodules inside its graph, where Python hooks never fire,
  so each submodule is called on the input eager gave that submodule: a layer beyond its rule is wrong
  by itself, not by what it was fed.
For int8 and float16 files a second table compares each value with the float32 ONNX file's and names
the quantized or converted node that loses the most. A layer that cannot be matched says so.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline import formats
from pipeline.artifacts.manifest import Manifest
from pipeline.artifacts.tensors import Batch, feeds, size
from pipeline.errors import UserError
from pipeline.runtime import parity
from pipeline.runtime.predictor import PredictorCache

ROOT = "(model)"  # how the table names the whole module
SCOPES = "pkg.torch.onnx.name_scopes"  # torch.onnx (dynamo) metadata: ['', 'linear1', 'linear'] = module path + op
QUANTIZED_OPS = ("DynamicQuantizeLinear", "MatMulInteger", "QLinearMatMul", "ConvInteger", "QuantizeLinear")


class ExplainError(UserError, ValueError):
    """An explanation that cannot be made as asked (unknown output, batch out of range, ...)."""


@dataclass(frozen=True)
class Layer:
    """One row of an explanation: a layer (or, against the float32 file, a value) and how far it moved."""

    name: str
    kind: str  # the module's class, or the ONNX nodes that compute the value
    shape: tuple[int, ...] | None
    max_abs: float | None
    bound: float | None  # the rule's bound at the value furthest past it (at the largest |Δ| when none is)
    beyond: bool
    note: str | None = None  # why it was not compared
    loss: float | None = None  # derived files: how much relative error this value adds to its inputs'


@dataclass
class Explanation:
    """Layer-by-layer |Δ| of one batch of one artifact, and |Δ| of the output it explains."""

    model: str
    format: str
    runtime: str
    batch: int
    batch_size: int
    output: str
    tolerance: formats.Tolerance
    method: str  # how the artifact's intermediate values were obtained
    layers: list[Layer]
    nodes: list[Layer] = field(default_factory=list)  # derived files: each value against the float32 file
    diffs: list[float] = field(default_factory=list)  # |Δ| of every value of `output` in the batch
    bound: float | None = None  # the tightest bound over `output`'s values (where |eager| is smallest)

    @property
    def first(self) -> str | None:
        """The first layer (in the order eager runs them) beyond its rule."""
        return next((layer.name for layer in self.layers if layer.beyond), None)

    @property
    def loses_most(self) -> Layer | None:
        """Derived files: the value whose nodes add the most error to what they were given."""
        scored = [n for n in self.nodes if n.loss is not None]
        return max(scored, key=lambda n: n.loss) if scored else None

    def as_dict(self) -> dict[str, Any]:
        """The explanation as JSON (the page's API)."""
        from dataclasses import asdict

        most = self.loses_most
        return {
            **{k: getattr(self, k) for k in ("model", "format", "runtime", "batch", "batch_size", "output", "method")},
            "rule": self.tolerance.describe(),
            "first_beyond": self.first,
            "loses_most": None if most is None else most.name,
            "layers": [asdict(x) for x in self.layers],
            "nodes": [asdict(x) for x in self.nodes],
            "diffs": self.diffs,
            "bound": self.bound,
        }

    def table(self) -> str:
        """The explanation as text tables: layers against eager, then (derived files) values against float32."""
        from pipeline.tables import text_table

        lines = [
            f"{self.model} {self.format} on {self.runtime}, parity batch {self.batch} ({self.batch_size} examples), "
            f"output {self.output}; rule {self.tolerance.describe()}",
            f"intermediate values: {self.method}",
            text_table(
                ("layer", "module", "shape", "max |Δ|", "bound", ""), [_cells(x, self.first) for x in self.layers]
            ),
        ]
        lines.append(f"first layer beyond its rule: {self.first}" if self.first else "every layer is within its rule")
        if self.nodes:
            most = self.loses_most
            head = ("value (float32 file)", "nodes", "shape", "max |Δ|", "rel loss", "")
            rows = [
                (
                    n.name,
                    n.kind,
                    _shape(n.shape),
                    _num(n.max_abs),
                    _num(n.loss),
                    "◀ loses most" if n is most else n.note or "",
                )
                for n in self.nodes
            ]
            lines += ["", f"against the float32 ONNX file ({self.format} value by value):", text_table(head, rows)]
            if most is not None:
                lines.append(f"loses the most: {most.kind} (value {most.name}), relative error +{most.loss:.2g}")
        return "\n".join(lines)


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


def _shape(s: tuple[int, ...] | None) -> str:
    return "-" if s is None else "×".join(str(d) for d in s)


def _cells(x: Layer, first: str | None) -> tuple[str, ...]:
    mark = "◀ first beyond" if x.name == first else ("beyond" if x.beyond else "")
    return (x.name, x.kind, _shape(x.shape), _num(x.max_abs), _num(x.bound), x.note or mark)


# ---- the comparison of one layer ---------------------------------------------------------------


def compare_layer(name: str, kind: str, ref: Any, got: Any, tol: formats.Tolerance, note: str | None = None) -> Layer:
    """One layer's values against eager's by `tol`; a missing or reshaped value is a row that says so."""
    if note is not None or got is None or ref is None:
        shape = None if ref is None else tuple(np.shape(ref))
        return Layer(name, kind, shape, None, None, False, note or "not matched in the artifact")
    ref64, got64 = np.asarray(ref, dtype=np.float64), np.asarray(got, dtype=np.float64)
    if ref64.shape != got64.shape:
        return Layer(name, kind, ref64.shape, None, None, False, f"shape {got64.shape} in the artifact")
    if not ref64.size:
        return Layer(name, kind, ref64.shape, 0.0, tol.atol, False)
    diff = np.abs(got64 - ref64)
    diff[~np.isfinite(diff)] = np.inf
    bound = tol.bound(np.where(np.isfinite(ref64), ref64, 0.0))
    at = np.unravel_index(int(np.argmax(diff - bound)), diff.shape)
    return Layer(name, kind, ref64.shape, float(diff.max()), float(bound[at]), bool((diff > bound).any()))


# ---- eager and the torch artifacts ---------------------------------------------------------------


def _arrays(value: Any) -> list[np.ndarray]:
    """A module's output as arrays (a tensor, or the tensors of a tuple/list)."""
    import torch

    if isinstance(value, torch.Tensor):
        return [value.detach().cpu().numpy()]
    if isinstance(value, (tuple, list)):
        return [a for v in value for a in _arrays(v)]
    return []


def capture(module: Any, args: Sequence[Any]) -> dict[str, tuple[str, list[np.ndarray], tuple]]:
    """Every submodule's (class, outputs, inputs) for one call, in the order they finish (the root last)."""
    import torch

    seen: dict[str, tuple[str, list[np.ndarray], tuple]] = {}
    hooks = []
    for path, sub in module.named_modules():

        def hook(mod: Any, inputs: tuple, output: Any, path: str = path) -> None:
            if path not in seen:  # a module called twice: its first call is the one eager order shows
                seen[path] = (type(mod).__name__, _arrays(output), inputs)

        hooks.append(sub.register_forward_hook(hook))
    try:
        with torch.no_grad():
            module(*args)
    finally:
        for h in hooks:
            h.remove()
    return seen


def _torch_args(entry: Any, batch: Batch) -> list[Any]:
    import torch

    return [torch.from_numpy(np.ascontiguousarray(a)) for a in feeds(entry.input_names, batch)]


def _script_layers(scripted: Any, eager: dict[str, tuple]) -> dict[str, list[np.ndarray] | str]:
    """Each TorchScript submodule called on the input eager gave it (hooks never fire inside a ScriptModule)."""
    import torch

    subs = dict(scripted.named_modules())
    out: dict[str, list[np.ndarray] | str] = {}
    for path, (_, _, inputs) in eager.items():
        if path not in subs:
            out[path] = "no submodule of this name in the TorchScript file"
            continue
        try:
            with torch.no_grad():
                out[path] = _arrays(subs[path](*inputs))
        except Exception as exc:  # noqa: BLE001 - a traced submodule may not be callable alone: say so
            out[path] = f"not callable alone in the TorchScript file ({type(exc).__name__})"
    return out


def _pt2_layers(path: str, args: Sequence[Any]) -> dict[str, list[np.ndarray] | str]:
    """The .pt2 program unflattened into its submodules, run with forward hooks."""
    import torch

    from pipeline.runtime.loaders import load_pt2_weights_only

    module = torch.export.unflatten(load_pt2_weights_only(path))
    return {p: outs for p, (_, outs, _) in capture(module, args).items()}


# ---- ONNX ---------------------------------------------------------------------------------------


def node_scope(node: Any) -> tuple[str, ...] | None:
    """The module path torch.onnx recorded for a node, or None when it recorded none."""
    for prop in node.metadata_props:
        if prop.key == SCOPES:
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return None
            return tuple(s for s in scopes[1:-1] if s)  # scopes[0] is the root module, scopes[-1] the op
    return None


def module_values(proto: Any) -> dict[str, list[str]]:
    """Module path -> the values its nodes compute that leave it (used outside it, or graph outputs)."""
    graph_outputs = [o.name for o in proto.graph.output]
    members: dict[str, set[int]] = {}
    for i, node in enumerate(proto.graph.node):
        scope = node_scope(node)
        if scope is None:
            continue
        for depth in range(1, len(scope) + 1):
            members.setdefault(".".join(scope[:depth]), set()).add(i)
    out: dict[str, list[str]] = {"": graph_outputs}
    for path, inside in members.items():
        produced = [v for i in sorted(inside) for v in proto.graph.node[i].output if v]
        used_outside = {v for j, n in enumerate(proto.graph.node) if j not in inside for v in n.input}
        out[path] = [v for v in produced if v in used_outside or v in graph_outputs]
    return out


def onnx_values(path: str, names: Sequence[str], feed: dict[str, np.ndarray], runtime: str) -> dict[str, np.ndarray]:
    """The values `names` of the ONNX file at `path` for `feed`, from an in-memory copy that outputs them."""
    import onnx

    proto = onnx.load(path)
    wanted = [n for n in dict.fromkeys(names) if n]
    if runtime == formats.ONNX_REFERENCE.name:
        from onnx.reference import ReferenceEvaluator

        return dict(zip(wanted, ReferenceEvaluator(proto).run(wanted, feed), strict=True))
    import onnxruntime as ort

    from pipeline.runtime.loaders import session_options

    declared = {o.name for o in proto.graph.output}
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(proto).graph.value_info}
    for name in wanted:
        if name not in declared:
            proto.graph.output.append(inferred.get(name) or onnx.ValueInfoProto(name=name))
    session = ort.InferenceSession(proto.SerializeToString(), session_options(1), providers=["CPUExecutionProvider"])
    return dict(zip(wanted, session.run(wanted, feed), strict=True))


def _onnx_feed(proto_path: str, entry: Any, batch: Batch) -> dict[str, np.ndarray]:
    import onnx

    graph = onnx.load(proto_path, load_external_data=False).graph
    return dict(zip([i.name for i in graph.input], feeds(entry.input_names, batch), strict=True))


def _derived_nodes(
    float_path: str, path: str, float_vals: dict[str, np.ndarray], feed: dict[str, np.ndarray], runtime: str
) -> list[Layer]:
    """Every value a derived file shares with its float32 file, against it; each scored by the relative error
    its nodes add to the largest relative error of the shared values they start from."""
    import onnx

    proto = onnx.load(path)
    float_proto = onnx.load(float_path)
    shared_names = {v for n in float_proto.graph.node for v in n.output if v}
    producer = {v: n for n in proto.graph.node for v in n.output if v}
    shared = [v for n in proto.graph.node for v in n.output if v in shared_names]
    derived = onnx_values(path, shared, feed, runtime)
    floats = {**float_vals, **onnx_values(float_path, [v for v in shared if v not in float_vals], feed, runtime)}
    rel: dict[str, float] = {}
    rows = []
    for value in shared:
        nodes, sources = _group(value, producer, set(shared))
        ref, got = np.asarray(floats[value], np.float64), np.asarray(derived[value], np.float64)
        peak = float(np.abs(ref).max(initial=0.0)) or 1.0
        diff = float(np.abs(got - ref).max(initial=0.0)) if ref.shape == got.shape else None
        rel[value] = 0.0 if diff is None else diff / peak
        loss = None if diff is None else rel[value] - max((rel.get(s, 0.0) for s in sources), default=0.0)
        named = [n for n in nodes if n.op_type in QUANTIZED_OPS] or nodes[-1:]
        kind = ", ".join(f"{n.name} ({n.op_type})" for n in named)
        rows.append(Layer(value, kind, tuple(ref.shape), diff, None, False, None, loss))
    return rows


def _group(value: str, producer: dict[str, Any], shared: set[str]) -> tuple[list[Any], set[str]]:
    """The nodes that compute `value` from other shared values (or inputs and weights), and those values."""
    nodes, sources, todo, seen = [], set(), [value], set()
    while todo:
        v = todo.pop()
        node = producer.get(v)
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        nodes.append(node)
        for inp in node.input:
            if inp in shared and inp != value:
                sources.add(inp)
            elif inp:
                todo.append(inp)
    return nodes[::-1], sources


def _artifact_layers(
    manifest: Manifest,
    cache: PredictorCache,
    entry: Any,
    fmt: str,
    runtime: str,
    batch: Batch,
    eager: dict[str, tuple],
) -> tuple[dict[str, list[np.ndarray] | str], str, list[Layer]]:
    """The artifact's value for each of eager's layers (or why none), how they were obtained, and for a
    derived file its values against the float32 file."""
    spec = formats.get(fmt)
    path = str(manifest.verified_path(entry.artifact(spec.artifact_kind)))
    if fmt == "torchscript":
        predictor = cache.get(entry.name, fmt, runtime=formats.TORCH.name)
        return _script_layers(predictor.native, eager), "each TorchScript submodule fed eager's input to it", []
    if fmt == "pt2":
        return _pt2_layers(path, _torch_args(entry, batch)), "the .pt2 program unflattened, forward hooks", []
    if not path.endswith(".onnx"):
        raise ExplainError(f"format {fmt}: layer-by-layer explanations cover TorchScript, .pt2 and the ONNX files")
    source = spec.source or fmt
    float_path = str(manifest.verified_path(entry.artifact(source)))
    import onnx

    scopes = module_values(onnx.load(float_path))
    feed = _onnx_feed(path, entry, batch)
    names = [v for p in eager if p in scopes for v in scopes[p]]
    values = onnx_values(path, names, feed, runtime)
    layers: dict[str, list[np.ndarray] | str] = {}
    for p in eager:
        if p not in scopes or not scopes[p]:
            layers[p] = "no ONNX node records this module's scope"
        else:
            layers[p] = [values[v] for v in scopes[p]]
    method = "node outputs of an in-memory copy, matched by torch.onnx's name_scopes"
    nodes = _derived_nodes(float_path, path, {}, feed, runtime) if spec.source else []
    return layers, method, nodes


def choose_batch(cache: PredictorCache, model: str, fmt: str, runtime: str, batches: list[Batch]) -> tuple[int, str]:
    """The parity batch and output to explain: the first failing output's worst batch, else the largest |Δ|'s."""
    eager = cache.get(model, formats.REFERENCE[0], runtime=formats.REFERENCE[1])
    artifact = cache.get(model, fmt, runtime=runtime)
    want = [eager.outputs(b) for b in batches]
    got = [artifact.outputs(b) for b in batches]
    results = parity.compare_outputs(want, got, parity.tolerance(fmt), batches)
    failing = [(n, c) for n, c in results.items() if not c.passed and c.stats is not None]
    scored = failing or sorted(
        ((n, c) for n, c in results.items() if c.stats is not None), key=lambda nc: -nc[1].stats.max_abs
    )
    if not scored:
        raise ExplainError(f"{model} {fmt}: no output of the artifact could be compared with eager's")
    name, c = scored[0]
    return (c.stats.worst.batch if c.stats.worst else 0), name


def default_target(manifest: Manifest, model: str) -> tuple[str, str | None]:
    """The (format, runtime) to explain when none is named: the first failing row of the last verify
    (parity.json, else the manifest's parity section), else the row with the largest |Δ| past its atol."""
    import json

    from pipeline.artifacts.manifest import PARITY

    rows: list[dict[str, Any]] = []
    try:
        rows = json.loads((manifest.root / PARITY).read_text(encoding="utf-8")).get("rows") or []
    except (OSError, ValueError, AttributeError):
        pass
    rows = [r for r in rows if isinstance(r, dict) and r.get("model") == model]
    rows = rows or list((manifest.model(model).raw.get("parity") or {}).get("rows") or [])
    local = [r for r in rows if r.get("format") in formats.EXPORTED and r.get("runtime") in formats.RUNTIMES]
    failing = [r for r in local if not r.get("passed")]
    if failing:
        return failing[0]["format"], failing[0]["runtime"]
    scored = [r for r in local if isinstance(r.get("max_abs"), (int, float))]
    if not scored:
        return formats.DEFAULT_FORMAT, None
    best = max(scored, key=lambda r: r["max_abs"] / max(float(r.get("atol") or 0.0), 1e-12))
    return best["format"], best["runtime"]


def explain(
    manifest: Manifest,
    model: str,
    fmt: str,
    runtime: str | None = None,
    batch: int | None = None,
    output: str | None = None,
    atol: float | None = None,
    rtol: float | None = None,
) -> Explanation:
    """One parity batch of `model` through eager and through its `fmt` artifact, layer by layer.

    `batch` (an index into the parity batches) and `output` default to the first failing output's worst
    batch, or the output with the largest |Δ| when every one passes. Nothing is written.
    """
    entry = manifest.model(model)
    spec = formats.get(fmt)
    if fmt == formats.REFERENCE[0]:
        raise ExplainError("eager is the reference; explain one of: " + ", ".join(f for f in formats.EXPORTED))
    runtime = runtime or spec.default_runtime
    if spec.loader(runtime) is None:
        raise ExplainError(f"format {fmt} runs on {', '.join(spec.runtimes)}; got runtime {runtime!r}")
    batches = parity.parity_inputs(manifest, model)
    cache = PredictorCache(manifest)
    chosen, worst_output = choose_batch(cache, model, fmt, runtime, batches)
    if batch is not None and not 0 <= batch < len(batches):
        raise ExplainError(f"--batch {batch}: expected 0 to {len(batches) - 1} (the parity batches)")
    index = chosen if batch is None else batch
    output = output or worst_output
    if output not in entry.output_names:
        raise ExplainError(f"unknown output {output!r}; expected one of: {', '.join(entry.output_names)}")
    x = batches[index]
    tol = parity.tolerance(fmt, atol, rtol)
    reference = cache.get(model, formats.REFERENCE[0], runtime=formats.REFERENCE[1])
    module = reference.native
    eager = capture(module, _torch_args(entry, x))
    got, method, nodes = _artifact_layers(manifest, cache, entry, fmt, runtime, x, eager)
    layers = []
    for path, (kind, outs, _) in eager.items():
        theirs = got.get(path)
        note = theirs if isinstance(theirs, str) else None
        if note is None and theirs is not None and len(theirs) != len(outs):
            note = f"{len(theirs)} values leave this scope in the artifact, eager's module returns {len(outs)}"
        pairs = (
            list(zip(outs, theirs, strict=True)) if note is None and theirs is not None else [(o, None) for o in outs]
        )
        for k, (ref, val) in enumerate(pairs):
            name = (path or ROOT) + (f"[{k}]" if len(outs) > 1 else "")
            layers.append(compare_layer(name, kind, ref, val, tol, note))
    artifact = cache.get(model, fmt, runtime=runtime).outputs(x)
    expected = reference.outputs(x)
    ref = np.asarray(expected[output], np.float64)
    diffs = np.abs(np.asarray(artifact[output], np.float64) - ref).reshape(-1)
    tightest = float(tol.bound(ref).min()) if ref.size else None
    return Explanation(
        model, fmt, runtime, index, size(x), output, tol, method, layers, nodes, diffs.tolist(), tightest
    )
