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
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import formats
from pipeline.devices import cuda_device_count
from pipeline.inputs import InputError, parse_features
from pipeline.manifest import MANIFEST, Manifest, ManifestError, ModelEntry
from pipeline.runtime import Predictor, PredictorCache, RuntimeUnavailable

log = logging.getLogger("pipeline.service")


class OutputOverflow(InputError):
    """Finite inputs whose outputs are not finite in float32: the caller's inputs are too large."""


@dataclass
class Loaded:
    """One manifest and the predictors loaded from it, replaced as a whole when the manifest changes."""

    manifest: Manifest
    predictors: PredictorCache
    served: set[tuple[str, str, str]] = field(default_factory=set)  # (model, format, device) answered once


def cuda_unavailable_reason() -> str | None:
    """Why CUDA cannot be picked here, or None where a CUDA GPU is visible (asked of libcuda, no torch)."""
    if cuda_device_count() > 0:
        return None
    return "no CUDA GPU is visible on this machine"


def formats_of(entry: ModelEntry) -> list[str]:
    """The formats `entry` can be served in, in the order formats.FORMATS declares them."""
    return [name for name, spec in formats.FORMATS.items() if spec.artifact_kind in entry.artifacts]


def check_finite(model: str, names: Sequence[str], outputs: Sequence[np.ndarray]) -> None:
    """OutputOverflow naming the first output that holds an infinity or NaN (float32 overflow)."""
    for name, value in zip(names, outputs, strict=True):
        if not np.isfinite(value).all():
            raise OutputOverflow(
                f"{model}'s output {name} is not finite for this input (float32 overflow); "
                "expected inputs of a smaller magnitude"
            )


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
        self._loaded: Loaded | None = None
        self._signature: tuple[int, int, int] | None = None  # the manifest file `_loaded` was read from
        self._read = False
        self._lock = threading.Lock()
        self.current()

    def current(self) -> Loaded | None:
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
                self._loaded, self.error = Loaded(manifest, PredictorCache(manifest, threads=self.threads)), None
            if self._read:
                log.warning("manifest changed on disk: reloaded %s", path)
            self._signature, self._read = signature, True
            return self._loaded

    @property
    def manifest(self) -> Manifest | None:
        """The current manifest, or None while there is none (see `error`)."""
        loaded = self.current()
        return loaded.manifest if loaded else None

    def require(self) -> Loaded:
        """The current manifest and predictors, or ManifestError saying how to create them."""
        loaded = self.current()
        if loaded is None:
            raise ManifestError(self.error or f"no manifest in {self.artifacts}")
        return loaded

    def entry(self, model: Any) -> ModelEntry:
        """The current manifest's entry for `model`, or ManifestError listing the models there are."""
        return self.require().manifest.model(model.strip() if isinstance(model, str) else model)

    def predictor(self, loaded: Loaded, model: str, fmt: Any, device: Any) -> Predictor:
        """`model`'s `fmt` predictor on `device` from `loaded`'s cache, loaded (sha256 first) on first use.

        CUDA where no GPU is visible is refused here, before anything is loaded or torch imported; the
        loader refuses unknown formats and devices and the manifest artifacts a model lacks.
        """
        device = _choice(device, formats.CPU)
        reason = cuda_unavailable_reason()
        if device.startswith(formats.CUDA) and reason:
            raise RuntimeUnavailable(f"device {device} is unavailable: {reason}; use cpu or auto")
        return loaded.predictors.get(model, _choice(fmt), device)

    def predict(self, model: str, fmt: str, device: str, features: str | list) -> dict:
        """One example through `model`'s `fmt` artifact on `device` (cpu, cuda or auto).

        `features`: numbers separated by commas or spaces, or a JSON list (or a Python list).
        Returns {"outputs": {name: [floats]}, "format", "runtime", "device" (what really ran),
        "latency_ms", "load_ms", ...}. Bad input raises a UserError with one line naming what was expected.
        """
        loaded = self.require()
        entry = loaded.manifest.model(model.strip() if isinstance(model, str) else model)
        device = _choice(device, formats.CPU)
        predictor = self.predictor(loaded, entry.name, fmt, device)
        values = parse_features(features, entry.name, entry.features)
        start = time.perf_counter()
        result = predictor.run_batch(np.asarray([values], dtype=np.float32))
        latency_ms = (time.perf_counter() - start) * 1000.0
        check_finite(entry.name, entry.output_names, result)
        key = (entry.name, predictor.format, device)
        first = key not in loaded.served
        loaded.served.add(key)
        return {
            "model": entry.name,
            "format": predictor.format,
            "runtime": predictor.runtime,
            "device": predictor.device,
            "requested_device": device,
            "outputs": {
                name: np.asarray(out[0], dtype=np.float64).reshape(-1).tolist()
                for name, out in zip(entry.output_names, result, strict=True)
            },
            "latency_ms": round(latency_ms, 4),
            "load_ms": round(predictor.load_seconds * 1000.0, 3) if first else 0.0,
        }

    def run_batch(self, predictor: Predictor, batch: np.ndarray) -> list[np.ndarray]:
        """`predictor`'s outputs for a float32 (batch, features) array, refused if any is not finite."""
        outputs = list(predictor.run_batch(batch))
        check_finite(predictor.model, predictor.output_names, outputs)
        return outputs
