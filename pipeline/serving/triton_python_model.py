"""A Triton Python-backend model that runs one ONNX file with onnxruntime, batched.

The repository writer (pipeline/serving/triton.py) copies this file, as it is, to
<model>_onnx_python/1/model.py beside the model's ONNX file. Triton's Python backend runs it in a
stub process with the Python of the server's environment (.venv-triton: numpy<2 and onnxruntime,
no pipeline package), so it imports nothing from the pipeline: the file it runs (parameter
MODEL_FILE), the tensor names and max_batch_size all come from the model's config.pbtxt, which
Triton passes to initialize(). The pipeline itself never imports this module.
"""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """Triton's entry point: initialize once, execute per group of requests, finalize at unload."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.input_names = [t["name"] for t in config["input"]]
        self.output_names = [t["name"] for t in config["output"]]
        filename = config["parameters"]["MODEL_FILE"]["string_value"]
        path = Path(args["model_repository"]) / args["model_version"] / filename
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        # One stub per model and a server that runs several models side by side: one thread each, as
        # the demo's predictors use (BENCHMARKS.md: these models are too small to gain from more).
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        # Dynamic batching hands the queued requests over together: one session.run serves all of them.
        try:
            feeds = [
                [pb_utils.get_input_tensor_by_name(r, n).as_numpy().astype(np.float32, copy=False) for r in requests]
                for n in self.input_names
            ]
            sizes = [len(a) for a in feeds[0]]
            outs = self.session.run(
                self.output_names, {n: np.concatenate(f) for n, f in zip(self.input_names, feeds, strict=True)}
            )
        except Exception as exc:  # one line for each client, the server keeps running
            error = pb_utils.TritonError(f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        responses, start = [], 0
        for size in sizes:
            tensors = [
                pb_utils.Tensor(n, np.ascontiguousarray(o[start : start + size]))
                for n, o in zip(self.output_names, outs, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses

    def finalize(self):
        self.session = None
