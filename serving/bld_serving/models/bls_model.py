"""Triton Python-backend BLS model `bld` of the GPU layout: bld_runtime's loop, graphs on Triton.

Triton ensembles cannot loop, so this model drives the K denoising steps itself with BLS
(business logic scripting). It is bld_runtime's Pipeline on a backend whose graph "sessions"
are the repository's graph models (`bld_step`, `bld_step_guided`, `bld_decoder`:
onnxruntime_onnx or tensorrt_plan), called with BLS inference requests; everything else, the
Philox draws, the last step's threshold and the inpainting mask, is the runtime's CPU loop,
the one implementation of the sampling contract. Per-row scalar inputs travel as [batch, 1]
(the graph models' dims [1], reshaped to [] for the graph). Requests are checked one by one and
batched exactly as in pipeline_model.py, whose execute this reuses.

The graph models' outputs are asked for in CPU memory (`preferred_memory`, Triton >= 23.05's
Python backend): a tensorrt_plan or GPU onnxruntime model answers in GPU memory otherwise, and
`as_numpy()` refuses a GPU tensor. The loop is on the CPU, so Triton copies them for us.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from bld_runtime.backends.base import Backend, Graph, run_guarded
from bld_runtime.backends.cpu import CpuLoop
from bld_runtime.errors import BackendError
from bld_runtime.files import sha256_file
from bld_runtime.manifest import load_bundle
from bld_runtime.pipeline import Pipeline
from pipeline_model import TritonPythonModel as PipelineModel  # copied beside this file

ROLES = ("step", "step_guided", "decoder")  # the graphs served as models (no encoder)


def cpu_memory():
    """The memory the graph models' outputs are asked for: host memory (CPU, id 0)."""
    return pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0)


def graph_request(model: str, inputs, output_names) -> object:
    """The BLS request one graph call sends (outputs in host memory)."""
    return pb_utils.InferenceRequest(
        model_name=model,
        inputs=inputs,
        requested_output_names=list(output_names),
        preferred_memory=cpu_memory(),
    )


class TritonGraph:
    """What the loop needs of an onnxruntime session, `run(output_names, feeds)`, answered by
    one BLS inference request to the graph model `model`."""

    def __init__(self, model: str | None, graph: Graph):
        self.model, self.graph = model, graph

    def run(self, output_names, feeds):
        if self.model is None:
            raise BackendError(f"graph {self.graph.name!r} is not served by this repository")
        inputs = []
        for name in self.graph.inputs:
            value = np.ascontiguousarray(feeds[name])
            if value.ndim == 1:  # a per-row scalar: dims [1] in the graph model's config
                value = value.reshape(-1, 1)
            inputs.append(pb_utils.Tensor(name, value))
        response = graph_request(self.model, inputs, output_names).exec()
        if response.has_error():
            raise BackendError(f"graph model {self.model!r} failed: {response.error().message()}")
        outputs = [pb_utils.get_output_tensor_by_name(response, name) for name in output_names]
        for name, tensor in zip(output_names, outputs, strict=True):
            if not tensor.is_cpu():  # a Triton that ignored the preference: say so, not crash
                raise BackendError(
                    f"graph model {self.model!r} returned {name} in GPU memory although CPU "
                    f"memory was asked for"
                )
        return [tensor.as_numpy() for tensor in outputs]


class BlsLoop(CpuLoop):
    """The CPU loop (draws, threshold, mask) with each step graph call sent to a graph model:
    there is no onnxruntime session here to bind arrays to."""

    def _binding(self, kind):
        return None

    def run_step(self, i):
        graph = self.backend.graphs[self.role]
        self.inputs["step"].fill(i)
        feeds = {name: self.inputs[name] for name in graph.inputs}
        probs = run_guarded(graph, self.backend.session(self.role).run, [graph.output], feeds)
        np.copyto(self.probs, probs[0].reshape(self.probs.shape))


class BlsBackend(Backend):
    """A bld_runtime backend whose sessions are Triton graph models (TritonGraph)."""

    name = "triton-bls"
    precisions = ("fp32", "fp16", "int8")  # the graph models run the repository's graphs

    def __init__(self, bundle, precision: str, models: dict[str, str]):
        self.models = models  # graph kind -> Triton model name; read by _load_session
        super().__init__(bundle, precision)

    def providers(self):
        return []

    def _load_session(self, graph):
        return TritonGraph(self.models.get(graph.kind), graph)

    def _make_loop(self, batch):
        return BlsLoop(self, batch)


class TritonPythonModel(PipelineModel):
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        precision = params.get("bld_precision", "fp32")
        bundle = load_bundle(Path(args["model_repository"]) / args["model_version"] / "bundle")
        models = {role: params[f"bld_model_{role}"] for role in ROLES}
        backend = BlsBackend(bundle, precision, models)
        # The graph models' own files, where Triton reads ONNX ones, must be the bundle's.
        repository = Path(args["model_repository"]).parent
        for role, model in models.items():
            graph, onnx = backend.graphs[role], repository / model / "1" / "model.onnx"
            if onnx.is_file() and sha256_file(onnx) != graph.spec.sha256:
                raise BackendError(
                    f"{onnx} is not the bundle's graph {graph.name!r}: its sha256 differs"
                )
        self.pipe = Pipeline(bundle, backend, precision)
        self.decoupled = False
        self.preview_every = 0
        self._count_refused(args)
        pb_utils.Logger.log_info(
            f"{args['model_name']}: BLS loop over {', '.join(models.values())}"
        )
