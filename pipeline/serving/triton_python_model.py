"""A Triton Python-backend model that runs one ONNX file with onnxruntime, batched.

The repository writer (pipeline/serving/triton.py) copies this file, as it is, to
<model>_onnx_python/1/model.py beside the model's ONNX file. Triton's Python backend runs it in a
stub process with the Python of the server's environment (.venv-triton: numpy<2 and onnxruntime,
no pipeline package), so it imports nothing from the pipeline: the file it runs (parameter
MODEL_FILE), the tensor names, their data types, the int64 ranges (parameter VALUE_RANGES) and
max_batch_size all come from the model's config.pbtxt, which Triton passes to initialize(). The
pipeline itself never imports this module.

Each request is checked on its own, as the demo checks one (pipeline/runtime/values.py): float inputs
finite, int64 inputs within their declared range, and its outputs finite (a float32 overflow); a
request that fails gets a TritonError naming the input or output, the others in the batch are answered.
"""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

DTYPES = {  # ModelConfig data type -> what onnxruntime is fed
    "TYPE_FP32": np.float32,
    "TYPE_FP16": np.float16,
    "TYPE_FP64": np.float64,
    "TYPE_INT64": np.int64,
    "TYPE_INT32": np.int32,
}


def value_ranges(text):
    """{'words': (0.0, 50.0)} from 'words=0:50;...' (the VALUE_RANGES parameter)."""
    ranges = {}
    for item in filter(None, text.split(";")):
        name, _, span = item.partition("=")
        low, _, high = span.partition(":")
        ranges[name] = (float(low), float(high))
    return ranges


def refusal(message):
    """A TritonError for the client's input: INVALID_ARG (HTTP 400, as the demo answers) where the backend has it."""
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    return pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)


def problem(name, arr, span):
    """Why input `name` cannot run, as the demo words it, or None."""
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr.reshape(-1))
        if bad.any():
            i = int(np.argmax(bad))
            return f"input {name!r}: value {i + 1} is {arr.reshape(-1)[i]}, expected a finite number"
    if span is not None and arr.size:
        flat = arr.reshape(-1)
        out = (flat < span[0]) | (flat >= span[1])
        if out.any():
            i = int(np.argmax(out))
            return f"input {name!r}: value {i + 1} is {flat[i]}, outside [{span[0]:g}, {span[1]:g})"
    return None


class TritonPythonModel:
    """Triton's entry point: initialize once, execute per group of requests, finalize at unload."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.input_names = [t["name"] for t in config["input"]]
        self.input_types = [DTYPES[t["data_type"]] for t in config["input"]]
        self.output_names = [t["name"] for t in config["output"]]
        parameters = config["parameters"]
        filename = parameters["MODEL_FILE"]["string_value"]
        self.ranges = value_ranges(parameters.get("VALUE_RANGES", {}).get("string_value", ""))
        path = Path(args["model_repository"]) / args["model_version"] / filename
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        # One stub per model and a server that runs several models side by side: one thread each, as
        # the demo's predictors use (BENCHMARKS.md: these models are too small to gain from more).
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])

    def feeds(self, request):
        """The request's inputs, each as the dtype its config declares, or the one line refusing them."""
        arrays = []
        for name, dtype in zip(self.input_names, self.input_types, strict=True):
            arr = pb_utils.get_input_tensor_by_name(request, name).as_numpy()
            why = problem(name, arr, self.ranges.get(name))
            if why:
                return None, why
            arrays.append(arr.astype(dtype, copy=False))
        return arrays, None

    def execute(self, requests):
        # Dynamic batching hands the queued requests over together: one session.run serves all that pass.
        responses = [None] * len(requests)
        good, feeds = [], []
        for i, request in enumerate(requests):
            arrays, why = self.feeds(request)
            if why:
                responses[i] = pb_utils.InferenceResponse(output_tensors=[], error=refusal(why))
            else:
                good.append(i)
                feeds.append(arrays)
        if good:
            self.run(requests, good, feeds, responses)
        return responses

    def run(self, requests, good, feeds, responses):
        """One session.run over the requests that passed; each answer (or its error) into `responses`."""
        try:
            batch = {n: np.concatenate([f[k] for f in feeds]) for k, n in enumerate(self.input_names)}
            outs = self.session.run(self.output_names, batch)
        except Exception as exc:  # one line for each client, the server keeps running
            error = pb_utils.TritonError(f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
            for i in good:
                responses[i] = pb_utils.InferenceResponse(output_tensors=[], error=error)
            return
        start = 0
        for i, arrays in zip(good, feeds, strict=True):
            size = len(arrays[0])
            parts = [np.ascontiguousarray(o[start : start + size]) for o in outs]
            start += size
            named = zip(self.output_names, parts, strict=True)
            overflow = next((n for n, o in named if o.dtype.kind == "f" and not np.isfinite(o).all()), None)
            if overflow is not None:
                why = (
                    f"output {overflow!r} is not finite for this input (float32 overflow); "
                    "expected inputs of a smaller magnitude"
                )
                responses[i] = pb_utils.InferenceResponse(output_tensors=[], error=refusal(why))
                continue
            tensors = [pb_utils.Tensor(n, o) for n, o in zip(self.output_names, parts, strict=True)]
            responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)

    def finalize(self):
        self.session = None
