"""The interface every backend implements, and what they share.

A backend owns onnxruntime sessions for one bundle's graphs and, per batch size, a `Loop`:
the preallocated state of one batch going through the K denoising steps. The pipeline drives
the loop (`start`, then `run_step` + `advance` K times, then `read_bits`); the backend decides
where the bits and probabilities live (host numpy arrays for "cpu", device memory for "cuda")
and how the contract's draws are made there. Nothing in a loop allocates after `bind`.
"""
from __future__ import annotations

import operator
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..errors import BackendUnavailableError, InvalidRequestError, ManifestError

STEP_INPUTS = ("bits", "step", "class_label", "temperature")
GUIDED_STEP_INPUTS = STEP_INPUTS + ("guidance",)
GRAPH_IO = {  # role -> (input names, output name), as bundle format v1 defines them
    "encoder": (("image",), "probs"),
    "decoder": (("bits",), "image"),
    "step": (STEP_INPUTS, "probs"),
    "step_guided": (GUIDED_STEP_INPUTS, "probs"),
}
OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


@dataclass(frozen=True)
class BackendOptions:
    """Session and device settings. 0 threads means onnxruntime's default (one per core)."""

    intra_op_threads: int = 0
    inter_op_threads: int = 0
    graph_optimization: str = "all"  # disable | basic | extended | all
    device_id: int = 0  # CUDA device, for the GPU backends
    trt_cache_dir: str | None = None  # where TensorRT keeps built engines ("tensorrt-ep")
    trt_fp16: bool = False  # let TensorRT pick fp16 kernels ("tensorrt-ep")
    # Park onnxruntime's intra-op threads when a graph call ends instead of letting them spin.
    # Between step calls the loop samples on the calling thread, and after the loop the decoder
    # runs in another session: threads still spinning take the cores from both. Demo model,
    # 2 cores, p50 of back-to-back generations: batch 1 9-12 ms -> 5 ms, batch 16 75-88 ms ->
    # 40-42 ms. The price: every call wakes its threads, so a lone batch-1 request after the
    # machine idled is slower (9 ms spinning, 13-16 ms parked); set False for such traffic.
    stop_spinning: bool = True

    def __post_init__(self):
        for name in ("intra_op_threads", "inter_op_threads", "device_id"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidRequestError(f"{name} must be an integer >= 0, got {value!r}")
        if self.graph_optimization not in OPTIMIZATION_LEVELS:
            raise InvalidRequestError(
                f"graph_optimization must be one of {', '.join(OPTIMIZATION_LEVELS)}, "
                f"got {self.graph_optimization!r}")
        for name in ("trt_fp16", "stop_spinning"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidRequestError(f"{name} must be True or False, "
                                          f"got {getattr(self, name)!r}")

    def session_options(self) -> ort.SessionOptions:
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.intra_op_threads
        so.inter_op_num_threads = self.inter_op_threads
        so.graph_optimization_level = OPTIMIZATION_LEVELS[self.graph_optimization]
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3  # errors only: ORT's warnings are not the user's business
        if self.stop_spinning:
            so.add_session_config_entry("session.force_spinning_stop", "1")
        return so


@dataclass(frozen=True)
class GraphSet:
    """What a backend needs from a bundle: graph files by role (precision already chosen),
    the latent shape (L, C) and the number of denoising steps K."""

    paths: dict[str, Path]
    latent: tuple[int, int]
    num_steps: int


class Loop(ABC):
    """One batch size's preallocated state for the K-step loop.

    The pipeline calls `start` once per batch, then for i = 0..K-1 `run_step(i)` (the step graph
    on the current bits) and `advance(i)` (the contract's draw, or the threshold at i = K-1,
    then the inpainting mask). Bits are uint8 0/1 on the host side of the interface.
    """

    batch: int

    @abstractmethod
    def start(self, seeds: np.ndarray, classes: np.ndarray, temperature: np.ndarray,
              guidance: np.ndarray, guided: bool, mask: np.ndarray | None,
              known: np.ndarray | None) -> None:
        """Load one batch's request and draw the initial state (Philox subsequence 0, p = 0.5),
        masked. Arrays have exactly `batch` rows; mask/known are (batch, L, C) 0/1 or None."""

    @abstractmethod
    def run_step(self, i: int) -> None:
        """Run the step graph for step i on the current bits; the probabilities stay inside."""

    @abstractmethod
    def advance(self, i: int) -> None:
        """Replace the bits: draw from the probabilities with subsequence i + 1 for i < K - 1,
        threshold p > 0.5 at i = K - 1; then write the known bits back where the mask is 1."""

    @abstractmethod
    def set_bits(self, bits: np.ndarray) -> None:
        """Overwrite the current state (teacher forcing in parity tests)."""

    @abstractmethod
    def read_bits(self, out: np.ndarray) -> np.ndarray:
        """Copy the current bits into `out` (uint8, (batch, L, C)) and return it."""

    @abstractmethod
    def read_probs(self, out: np.ndarray) -> np.ndarray:
        """Copy the last step's probabilities into `out` (float32, (batch, L, C))."""

    @abstractmethod
    def bits_view(self) -> np.ndarray:
        """The current bits as a host uint8 array, valid until the next call (for previews)."""


class Backend(ABC):
    """onnxruntime sessions for one bundle plus a cache of loops per batch size."""

    name: str = ""
    max_cached_loops = 4  # a full chunk and a remainder are the common case

    def __init__(self, graphs: GraphSet, options: BackendOptions | None = None):
        self.graphs = graphs
        self.options = options or BackendOptions()
        self._sessions: dict[str, ort.InferenceSession] = {}
        self._loops: dict[int, Loop] = {}

    # --- sessions ------------------------------------------------------------------------

    @abstractmethod
    def providers(self) -> list:
        """The execution providers (with options) of this backend's sessions."""

    def session(self, role: str) -> ort.InferenceSession:
        """The session of a graph role, created on first use and checked against format v1."""
        if role not in self._sessions:
            if role not in self.graphs.paths:
                raise ManifestError(f"this bundle has no {role!r} graph")
            path = self.graphs.paths[role]
            try:
                sess = ort.InferenceSession(str(path), sess_options=self.options.session_options(),
                                            providers=self.providers())
            except Exception as e:  # onnxruntime raises its own types for bad files and EPs
                raise ManifestError(f"onnxruntime cannot load {path.name}: {e}") from None
            self._check_io(role, sess)
            self._check_providers(sess)
            self._sessions[role] = sess
        return self._sessions[role]

    def _check_io(self, role, sess):
        inputs, output = GRAPH_IO[role]
        have_in = {i.name for i in sess.get_inputs()}
        have_out = {o.name for o in sess.get_outputs()}
        if have_in != set(inputs) or output not in have_out:
            raise ManifestError(
                f"graph {role!r} has inputs {sorted(have_in)} and outputs {sorted(have_out)}; "
                f"bundle format v1 needs inputs {list(inputs)} and output {output!r}")

    def _check_providers(self, sess):
        """onnxruntime silently falls back to the CPU when a provider cannot start: refuse."""
        wanted = [p[0] if isinstance(p, tuple) else p for p in self.providers()]
        if wanted[0] not in sess.get_providers():
            raise BackendUnavailableError(
                f"backend {self.name!r}: onnxruntime could not start {wanted[0]} (it fell back to "
                f"{', '.join(sess.get_providers())}); check the CUDA/TensorRT installation")

    # --- the loop ------------------------------------------------------------------------

    def bind(self, batch: int) -> Loop:
        """The loop for `batch` images, preallocated on first use and reused afterwards."""
        batch = operator.index(batch)
        if batch < 1:
            raise InvalidRequestError(f"batch size must be at least 1, got {batch}")
        if batch not in self._loops:
            if len(self._loops) >= self.max_cached_loops:
                self._loops.pop(next(iter(self._loops)))  # the oldest
            self._loops[batch] = self._make_loop(batch)
        return self._loops[batch]

    @abstractmethod
    def _make_loop(self, batch: int) -> Loop: ...

    # --- encoder and decoder: once per request, not per step, so plain run() is enough ----

    def encode(self, images: np.ndarray) -> np.ndarray:
        """float32 NCHW images in [-1, 1] -> float32 (B, L, C) bit probabilities."""
        return self._run("encoder", image=np.ascontiguousarray(images, np.float32))

    def decode(self, bits: np.ndarray) -> np.ndarray:
        """(B, L, C) 0/1 bits -> float32 NCHW images, roughly in [-1, 1]."""
        return self._run("decoder", bits=np.ascontiguousarray(bits, np.float32))

    def step_probs(self, bits, step, classes, temperature, guidance=None) -> np.ndarray:
        """One step graph call on given arrays (outside the loop: for tests and tools)."""
        feeds = {"bits": np.ascontiguousarray(bits, np.float32),
                 "step": np.ascontiguousarray(step, np.int64),
                 "class_label": np.ascontiguousarray(classes, np.int64),
                 "temperature": np.ascontiguousarray(temperature, np.float32)}
        if guidance is None:
            return self._run("step", **feeds)
        return self._run("step_guided", guidance=np.ascontiguousarray(guidance, np.float32),
                         **feeds)

    def _run(self, role: str, **feeds) -> np.ndarray:
        _, output = GRAPH_IO[role]
        return self.session(role).run([output], feeds)[0]


def available_providers() -> list[str]:
    return list(ort.get_available_providers())


def require_provider(backend: str, provider: str, hint: str) -> None:
    if provider not in ort.get_available_providers():
        raise BackendUnavailableError(
            f"backend {backend!r} needs onnxruntime's {provider} ({hint}); this onnxruntime "
            f"{ort.__version__} has {', '.join(available_providers())}")
