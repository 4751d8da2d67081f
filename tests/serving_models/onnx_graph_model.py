"""Test model: one bundle graph served by Triton's Python backend with onnxruntime.

The GPU layout's graph models are `onnxruntime_onnx` or `tensorrt_plan` models, and neither
backend exists in the tritonserver the tests can install (the nvidia-pytriton wheel has the
Python backend only). test_triton.py swaps each graph model for this model, same inputs,
outputs and batching, so that the BLS model `bld` runs its loop against a real server.
Per-row scalars arrive as [batch, 1] (dims [1]) and are reshaped to the graph's [batch], as
the config's `reshape: { shape: [] }` asks of the onnxruntime backend.
"""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.inputs = {i.name: len(i.shape) for i in self.session.get_inputs()}
        self.outputs = [o["name"] for o in config["output"]]

    def execute(self, requests):
        responses = []
        for request in requests:
            feeds = {}
            for name, rank in self.inputs.items():
                value = pb_utils.get_input_tensor_by_name(request, name).as_numpy()
                feeds[name] = value.reshape(len(value)) if rank == 1 else value
            results = self.session.run(self.outputs, feeds)
            responses.append(
                pb_utils.InferenceResponse(
                    [
                        pb_utils.Tensor(n, np.ascontiguousarray(r))
                        for n, r in zip(self.outputs, results, strict=True)
                    ]
                )
            )
        return responses
