"""A server as a runtime: a predictor that runs a model on any Open Inference Protocol server (Triton, KServe,
the demo's /v2 routes) through tritonclient's HTTP client and binary tensors.

`load_predictor(..., runtime=URL)` comes here through `formats.REMOTE_LOADER`, so the runtime stage never
imports the serving stage.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.artifacts.manifest import ModelEntry
from pipeline.artifacts.tensors import dtype_of, feeds, numpy_dtype, shape
from pipeline.formats import TRITON_FORMATS
from pipeline.runtime.inputs import InputError
from pipeline.runtime.predictor import NotServed, Predictor, RuntimeUnavailable
from pipeline.serving.naming import served_names, tensor_names


def load_remote_predictor(entry: ModelEntry, fmt: str, url: str) -> Predictor:
    """A predictor that runs `entry`'s `fmt` model on the Open Inference Protocol server at `url`.

    The server is asked for the Triton model `<model>_<fmt>`, else another flavour serving the same
    file (pipeline/serving/naming.py names them), with its tensor names, through tritonclient's HTTP client
    and binary tensors; the model's metadata is checked against the manifest before the predictor is
    returned. The server keeps its own copy of
    the artifact and picks its own device: no local file is read and `device` does not apply.
    """
    if fmt not in TRITON_FORMATS:
        raise InputError(f"a remote server serves the formats {', '.join(TRITON_FORMATS)}; got {fmt!r}")
    try:
        import tritonclient.http as httpclient
    except ImportError:
        hint = "pip install 'tritonclient[http]'"
        raise RuntimeUnavailable(f"the remote runtime needs tritonclient: {hint}") from None
    start = time.perf_counter()
    address = url.split("://", 1)[1].rstrip("/")
    in_names, out_names = tensor_names(entry, fmt)
    local = threading.local()  # tritonclient's clients are not thread-safe: one per thread

    def client() -> Any:
        if getattr(local, "client", None) is None:
            local.client = httpclient.InferenceServerClient(
                address, ssl=url.startswith("https://"), connection_timeout=10.0, network_timeout=60.0
            )
        return local.client

    name, meta = _served_model(client(), entry, fmt, url)
    _check_metadata(entry, url, name, meta, in_names, out_names)
    served = [t.get("name") for t in meta.get("outputs", [])]  # every output the server declares, in its order
    manifest_name = dict(zip(out_names, entry.output_names, strict=True))

    def run_batch(x: Any) -> Sequence[np.ndarray]:
        tensors = []
        for n, t, a in zip(in_names, entry.inputs, feeds(entry.input_names, x), strict=True):
            tensor = httpclient.InferInput(n, list(a.shape), dtype_of(t).oip)
            tensor.set_data_from_numpy(np.ascontiguousarray(a, dtype=numpy_dtype(t)), binary_data=True)
            tensors.append(tensor)
        result = client().infer(name, tensors)  # no outputs named: all of them, as binary tensors
        return [result.as_numpy(n) for n in served]

    return Predictor(
        model=entry.name,
        format=fmt,
        runtime=url,
        device=f"remote {url} ({name})",
        features=entry.features,
        output_names=entry.output_names,
        run_batch=run_batch,
        declared=[manifest_name.get(n, n) for n in served],
        load_seconds=time.perf_counter() - start,
        inputs=entry.inputs,
    )


def _served_model(client: Any, entry: ModelEntry, fmt: str, url: str) -> tuple[str, dict[str, Any]]:
    """(Triton model name, its metadata): the format's own backend first, then a flavour that runs the same
    file; NotServed when the server has none of them, RuntimeUnavailable when it cannot be reached."""
    from tritonclient.utils import InferenceServerException

    names, refusals = served_names(entry.name, fmt), []
    for name in names:
        try:
            return name, client.get_model_metadata(name)
        except InferenceServerException as exc:
            refusals.append(exc.message())
        except Exception as exc:  # noqa: BLE001 - refused connections, DNS, TLS: one line
            raise RuntimeUnavailable(f"cannot reach {url}: {type(exc).__name__}: {exc}") from None
    raise NotServed(f"{url} does not serve {' or '.join(names)}: {refusals[0]}")


def _check_metadata(
    entry: ModelEntry, url: str, name: str, meta: dict[str, Any], in_names: list[str], out_names: list[str]
) -> None:
    """RuntimeUnavailable unless the server's tensors (names, datatypes, shapes) are the manifest's."""
    got_in = [(t.get("name"), t.get("datatype"), list(t.get("shape", []))) for t in meta.get("inputs", [])]
    got_out = {t.get("name"): t.get("datatype") for t in meta.get("outputs", [])}
    want_in = [(n, dtype_of(t).oip, [-1, *shape(t)]) for n, t in zip(in_names, entry.inputs, strict=True)]
    want_out = {n: dtype_of(t).oip for n, t in zip(out_names, entry.outputs, strict=True)}
    if got_in != want_in or any(got_out.get(n) != d for n, d in want_out.items()):
        raise RuntimeUnavailable(
            f"{url} serves {name} with inputs {got_in} and outputs {sorted(got_out)}; the manifest "
            f"expects {want_in} -> {', '.join(out_names)} (is it serving these artifacts?)"
        )
