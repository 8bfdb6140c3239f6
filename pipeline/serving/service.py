"""What the demo serves, without any web framework: the manifest, the predictor cache and `predict`.

    service = Service("artifacts")
    service.predict("adder_mynet", "onnx", "cpu", "10, 11")   # {"outputs": {"sum": [...], ...}, ...}

The page, its `predict` API and the Open Inference Protocol routes all ask one Service, so a model
loaded for one is loaded for all. The manifest is re-read when `make export` replaces it (one stat
per call): export removes the revision folders the new manifest no longer lists, so serving on from
the old one would fail on files that are gone. Callers ask for `current()` on every request and
never keep what it returns across requests.

Nothing here imports torch: an ONNX prediction never does, the torch runtimes import it on first use.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import formats
from pipeline.artifacts.manifest import MANIFEST, Manifest, ManifestError, ModelEntry
from pipeline.artifacts.tensors import Batch, numpy_dtype, pack, shape
from pipeline.errors import UserError, one_line
from pipeline.runtime.comparison import compare_outputs, stats_dict
from pipeline.runtime.inputs import InputError, parse_features, parse_inputs
from pipeline.runtime.predictor import DEVICES, Predictor, PredictorCache, RuntimeUnavailable, check_finite
from pipeline.runtime.targets import Target, cuda_unavailable_reason, plan
from pipeline.serving.answers import class_labels, expected_answer
from pipeline.serving.batching import Batcher, Batching
from pipeline.serving.metrics import Metrics

log = logging.getLogger("pipeline.serving.service")


@dataclass
class Snapshot:
    """One manifest and the predictors loaded from it, replaced as a whole when the manifest changes."""

    manifest: Manifest
    predictors: PredictorCache
    batchers: dict[tuple[str, str, str], Batcher] = field(default_factory=dict)  # (model, format, device)


def example_batch(entry: ModelEntry, given: Any) -> tuple[Batch, list[float] | None]:
    """One example as a batch of one for `entry`'s inputs, and its values when the model takes a row of floats."""
    if entry.flat:
        values = parse_features(given, entry.name, entry.features)
        return np.asarray([values], dtype=np.float32), values
    parsed = parse_inputs(given, entry.name, entry.inputs)
    arrays = {
        t["name"]: np.asarray([parsed[t["name"]]], dtype=numpy_dtype(t)).reshape(1, *shape(t)) for t in entry.inputs
    }
    return pack(entry.inputs, arrays), None


def finite_or_none(values: Any) -> list[float | None]:
    """Values as a flat list of floats, None where one is not finite (JSON has no Infinity or NaN)."""
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    return [v if math.isfinite(v) else None for v in flat.tolist()]


def json_values(value: Any) -> list[int] | list[float]:
    """One example's output as a flat JSON list: integers stay integers (an int64 class id is 2, not 2.0)."""
    arr = np.asarray(value)
    if arr.dtype.kind in "iub":
        return arr.astype(np.int64).reshape(-1).tolist()
    return finite_or_none(arr)


def compare_targets(entry: ModelEntry, device: str) -> list[Target]:
    """The targets of pipeline.runtime.targets.plan for `device` whose artifact `entry` has: what parity
    checks on that device, plus the reference itself."""
    return [t for t in plan(device).targets if formats.get(t.format).artifact_kind in entry.artifacts]


def _choice(value: Any, default: str = "") -> str:
    """A format or device name as typed (spaces and case do not matter); anything that is not text as its
    repr, for the loader to refuse by name."""
    if not isinstance(value, str):
        return repr(value)
    return value.strip().lower() or default


class Service:
    """The manifest, the predictor cache and `predict` for one artifacts directory.

    A missing or unusable manifest is kept as `error` (one line saying how to create the artifacts)
    instead of raised, so a server can still start and show it.
    """

    def __init__(self, artifacts: Path | str, threads: int | None = None) -> None:
        self.artifacts = Path(artifacts)
        self.threads = threads  # intra-op threads per runtime; None: the runtime's default
        self.error: str | None = None
        self._loaded: Snapshot | None = None
        self._signature: tuple[int, int, int] | None = None  # the manifest file `_loaded` was read from
        self._read = False
        self._lock = threading.Lock()
        self.batching = Batching()  # the server sets its limits' (demo/server.py)
        self.metrics = Metrics(loaded=lambda: len(self._loaded.predictors) if self._loaded else 0)
        self.pending: list[tuple[str, str]] = []  # (model, format) still to load and warm before being ready
        self.warm_errors: dict[str, str] = {}  # "model/format" -> why it did not load
        self.current()

    def current(self) -> Snapshot | None:
        """The manifest and predictors to serve this request with, re-read if the manifest file changed;
        None (and `error` saying why) while there is no usable manifest."""
        path = self.artifacts / MANIFEST
        try:
            st = path.stat()
            signature = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            signature = None
        if self._read and signature == self._signature:
            return self._loaded
        with self._lock:
            if self._read and signature == self._signature:
                return self._loaded
            try:
                manifest = Manifest.load(self.artifacts)
            except ManifestError as exc:
                self._loaded, self.error = None, str(exc)
            else:
                self._loaded, self.error = Snapshot(manifest, PredictorCache(manifest, threads=self.threads)), None
            if self._read:
                log.warning("manifest changed on disk: reloaded %s", path)
            self._signature, self._read = signature, True
            return self._loaded

    @property
    def manifest(self) -> Manifest | None:
        """The current manifest, or None while there is none (see `error`)."""
        loaded = self.current()
        return loaded.manifest if loaded else None

    def require(self) -> Snapshot:
        """The current manifest and predictors, or ManifestError saying how to create them."""
        loaded = self.current()
        if loaded is None:
            raise ManifestError(self.error or f"no manifest in {self.artifacts}")
        return loaded

    def entry(self, model: Any) -> ModelEntry:
        """The current manifest's entry for `model`, or ManifestError listing the models there are."""
        return self.require().manifest.model(model.strip() if isinstance(model, str) else model)

    def predictor(self, loaded: Snapshot, model: str, fmt: Any, device: Any) -> Predictor:
        """`model`'s `fmt` predictor on `device` (see `load`)."""
        return self.load(loaded, model, fmt, device)[0]

    def load(self, loaded: Snapshot, model: str, fmt: Any, device: Any) -> tuple[Predictor, bool]:
        """`model`'s `fmt` predictor on `device` from `loaded`'s cache, loaded (sha256 first) on first use,
        and whether this call loaded it.

        CUDA where no GPU is visible is refused here, before anything is loaded or torch imported; the
        loader refuses unknown formats and devices and the manifest artifacts a model lacks.
        """
        device = _choice(device, formats.CPU)
        reason = cuda_unavailable_reason()
        if device.startswith(formats.CUDA) and reason:
            raise RuntimeUnavailable(f"device {device} is unavailable: {reason}; use cpu or auto")
        return loaded.predictors.fetch(model, _choice(fmt), device=device)

    def batcher(self, loaded: Snapshot, predictor: Predictor, device: str) -> Batcher:
        """The queue that merges concurrent requests for `predictor` (serving/batching.py)."""
        key = (predictor.model, predictor.format, device)
        batcher = loaded.batchers.get(key)
        if batcher is None:
            with self._lock:
                batcher = loaded.batchers.get(key)
                if batcher is None:
                    entry = loaded.manifest.model(predictor.model)
                    observe = self.metrics.observer(predictor.model, predictor.format)
                    width = entry.values_per_example
                    batcher = Batcher(predictor, self.batching.max_rows(entry), width, self.batching, observe)
                    loaded.batchers[key] = batcher
        return batcher

    def warm(self, targets: Sequence[tuple[str, str]]) -> None:
        """Load (sha256 first) and warm each (model, format) on the CPU; `ready()` is False until all are done.
        One that fails is logged and kept in `warm_errors`; the others still load."""
        self.pending = list(targets)
        for model, fmt in targets:
            try:
                self.predictor(self.require(), model, fmt, formats.CPU)
            except Exception as exc:  # noqa: BLE001 - a file that fails its check is reported, not fatal
                self.warm_errors[f"{model}/{fmt}"] = one_line(exc)
                log.warning("warm-up of %s %s failed: %s", model, fmt, one_line(exc))
            self.pending = [t for t in self.pending if t != (model, fmt)]

    def ready(self) -> bool:
        """Whether the manifest is loaded and every artifact asked to be warmed is loaded, checked and warmed."""
        return self.current() is not None and not self.pending

    def predict(self, model: str, fmt: str, device: str, features: str | list | dict) -> dict:
        """One example through `model`'s `fmt` artifact on `device` (cpu, cuda or auto).

        `features`: numbers separated by commas or spaces, or a JSON list (or a Python list); for a model
        with several inputs (or one that is not a row of floats), a dict or JSON object of input name ->
        such values. Returns {"outputs": {name: [floats]}, "labels" (for outputs that declare classes:
        {output: {class: probability}}), "format", "runtime", "device" (what really ran), "latency_ms",
        "load_ms", ...}. Bad input raises a UserError with one line naming what was expected.
        """
        loaded = self.require()
        entry = loaded.manifest.model(model.strip() if isinstance(model, str) else model)
        device = _choice(device, formats.CPU)
        predictor, loaded_here = self.load(loaded, entry.name, fmt, device)
        received = time.perf_counter()
        try:
            batch, values = example_batch(entry, features)
            start = time.perf_counter()
            result = self.batcher(loaded, predictor, device).run(batch)  # Predictor.run, merged with others
        except Exception as exc:
            status = 400 if isinstance(exc, UserError) else 500
            self.metrics.answered(entry.name, predictor.format, status, time.perf_counter() - received)
            raise
        latency_ms = (time.perf_counter() - start) * 1000.0
        self.metrics.answered(entry.name, predictor.format, 200, time.perf_counter() - received)
        outputs = {name: json_values(out[0]) for name, out in zip(entry.output_names, result, strict=True)}
        return {
            "model": entry.name,
            "format": predictor.format,
            "runtime": predictor.runtime,
            "device": predictor.device,
            "requested_device": device,
            "outputs": outputs,
            "labels": class_labels(entry, outputs),
            "expected": expected_answer(entry, values, outputs) if values is not None else None,
            "latency_ms": round(latency_ms, 4),
            "load_ms": round(predictor.load_seconds * 1000.0, 3) if loaded_here else 0.0,
        }

    def compare(self, model: str, device: str, features: str | list) -> list[dict]:
        """One example through every artifact × runtime of `model` at hand for `device` (cpu, cuda or auto),
        each against the eager model on the CPU by its format's parity rule (pipeline.runtime.comparison).

        Returns one dict per row: "format", "runtime", "label", "device" (what really ran it, or the device
        asked for when it did not load), "outputs" {name: [floats]}, "max_abs_diff" (largest |value - eager|),
        "within_rule" (bool, None when not compared), "rule", "reason" (why it is outside the rule or did not
        run, one line, else None), "latency_ms", "load_ms", "bytes" (the artifact file's size).
        An artifact that fails to load is a row with its
        reason, never an exception; bad input raises a UserError with one line.
        """
        loaded = self.require()
        entry = loaded.manifest.model(model.strip() if isinstance(model, str) else model)
        device = _choice(device, formats.CPU)
        if device not in DEVICES and not device.startswith(f"{formats.CUDA}:"):
            raise InputError(f"unknown device {device!r}; expected one of: {', '.join(DEVICES)} or cuda:N")
        batch = example_batch(entry, features)[0]
        ref_format, ref_runtime, ref_device = formats.REFERENCE
        try:
            reference, ref_reason = (
                self._outputs(loaded, entry.name, ref_format, ref_runtime, ref_device, batch)[0],
                None,
            )
        except Exception as exc:  # noqa: BLE001 - every row then says why it was not compared
            reference, ref_reason = None, f"eager reference unavailable: {one_line(exc)}"
        if reference is not None:  # the input itself is too large for float32: refused as predict refuses it
            check_finite(entry.name, list(reference), list(reference.values()))
        return [
            self._compare_row(loaded, entry.name, target, batch, reference, ref_reason)
            for target in compare_targets(entry, device)
        ]

    def _outputs(
        self, loaded: Snapshot, model: str, fmt: str, runtime: str, device: str, batch: np.ndarray
    ) -> tuple[dict[str, np.ndarray], Predictor, float]:
        predictor = loaded.predictors.get(model, fmt, runtime=runtime, device=device)
        start = time.perf_counter()
        outputs = predictor.outputs(batch)
        return outputs, predictor, (time.perf_counter() - start) * 1000.0

    def _compare_row(
        self,
        loaded: Snapshot,
        model: str,
        target: Target,
        batch: np.ndarray,
        reference: dict[str, np.ndarray] | None,
        ref_reason: str | None,
    ) -> dict:
        fmt, runtime, device, unavailable = target.format, target.runtime, target.device, target.unavailable
        spec = formats.get(fmt)
        atol, rtol, scale = loaded.manifest.model(model).tolerance(fmt)  # the rule export used for this model
        tolerance = formats.Tolerance(atol, rtol, scale)
        row: dict[str, Any] = {
            "format": fmt,
            "runtime": runtime,
            "label": formats.label(fmt, runtime),
            "device": device,
            "outputs": {},
            "max_abs_diff": None,
            "within_rule": None,
            "rule": tolerance.describe(),
            "stats": None,
            "bytes": loaded.manifest.model(model).artifact(spec.artifact_kind).bytes,
            "reason": unavailable,
            "latency_ms": None,
            "load_ms": None,
        }
        if unavailable:
            return row
        try:
            got, predictor, latency_ms = self._outputs(loaded, model, fmt, runtime, device, batch)
        except Exception as exc:  # noqa: BLE001 - a row with its one-line reason, never a crash of the table
            row["reason"] = one_line(exc)
            return row
        row["device"] = predictor.device
        row["outputs"] = {name: json_values(v[0]) for name, v in got.items()}  # JSON has no Infinity
        row["latency_ms"] = round(latency_ms, 4)
        row["load_ms"] = round(predictor.load_seconds * 1000.0, 3)
        if reference is None:
            row["reason"] = ref_reason
            return row
        checks = compare_outputs([reference], [got], tolerance, [batch])
        diffs = [c.max_abs for c in checks.values() if c.max_abs is not None]
        row["max_abs_diff"] = max(diffs) if diffs else None
        row["within_rule"] = all(c.passed for c in checks.values())
        row["reason"] = next((c.reason for c in checks.values() if not c.passed), None)
        row["stats"] = {name: stats_dict(c.stats) for name, c in checks.items()}
        return row

    def explain(self, model: str, fmt: str, runtime: str | None = None) -> dict:
        """`verify --explain MODEL:FORMAT` for one compare row: the worst parity batch through eager and the
        artifact layer by layer (pipeline.runtime.explain), as JSON; nothing is written."""
        from pipeline.runtime.explain import explain

        loaded = self.require()
        entry = loaded.manifest.model(model.strip() if isinstance(model, str) else model)
        return explain(loaded.manifest, entry.name, _choice(fmt), runtime or None).as_dict()

    def run_batch(self, predictor: Predictor, batch: np.ndarray) -> list[np.ndarray]:
        """`predictor`'s outputs for a float32 (batch, features) array, refused if any is not finite."""
        return list(predictor.run(batch))
