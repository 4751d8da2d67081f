"""Triton Python-backend model running bld_runtime's Pipeline in-process (`bld`, `bld_stream`).

Copied by `bld-export triton` into the repository as model.py of both models; the model's
config says which it is (`bld_stream` is decoupled). Each model instance owns one Pipeline,
loaded at initialize from the bundle copied beside this file (Pipeline.load checks the
manifest and every file's sha256), on the backend the config names.

A batch from Triton's dynamic batcher is a list of client requests. Each request is checked
on its own with the runtime's own rules (Pipeline.check_request, bld_runtime.request) before it
joins the batch: a bad request gets its own error response with the runtime's message, and the
others in that batch are joined (Request.concat) and generated together in one Pipeline.run
call. An image's bits depend only on
its seed, class, guidance and temperature, never on the batch it ran in, so served images
are identical to local ones.

`bld_stream` answers each request with a response per preview (the current bits decoded
after steps k, 2k, ... <= K, k = preview_every, 0 = none), then a final response with the
image and bits; it streams over gRPC.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from bld_runtime import __version__ as bld_version
from bld_runtime import protocol
from bld_runtime.backends import BackendOptions
from bld_runtime.bits import pack_bits
from bld_runtime.errors import InvalidRequestError
from bld_runtime.pipeline import Pipeline
from bld_runtime.request import Request


def _parameter(config: dict, key: str, default: str = "") -> str:
    return config.get("parameters", {}).get(key, {}).get("string_value", default)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(config)
        backend = _parameter(config, "bld_backend", "cpu")
        device = int(args.get("model_instance_device_id", 0)) if backend != "cpu" else 0
        trt_cache = _parameter(config, "bld_trt_cache") or None
        options = BackendOptions(
            intra_op_threads=int(_parameter(config, "bld_threads", "0")),
            device_id=device,
            trt_cache_dir=trt_cache,
        )
        bundle = Path(args["model_repository"]) / args["model_version"] / "bundle"
        # Pipeline.load checks the manifest, reads each graph of the precision once, checks
        # its sha256 and makes its session from those very bytes.
        self.pipe = Pipeline.load(
            bundle,
            backend=backend,
            precision=_parameter(config, "bld_precision", "fp32"),
            options=options,
        )
        self.preview_every = int(_parameter(config, "bld_preview_every", "0"))
        self._count_refused(args)
        pb_utils.Logger.log_info(
            f"{args['model_name']}: bundle {bundle} loaded and verified (bld {bld_version}, "
            f"backend {backend}, numpy {np.__version__}, instance {args['model_instance_name']})"
        )

    def _count_refused(self, args):
        """A Prometheus counter (port 8002) of the requests this model refused: Triton counts
        a request answered with an error response as a success."""
        self._refused_family = pb_utils.MetricFamily(  # must outlive its metric
            name="bld_refused_requests_total",
            description="Requests a bld model refused (bad class, guidance, mask, ...)",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.refused = self._refused_family.Metric(
            labels={"model": args["model_name"], "version": args["model_version"]}
        )

    # --- one client request -> checked per-image arrays ---------------------------------

    def _read(self, request):
        """(checked Request, preview interval) of one client request."""

        def get(spec):
            tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
            return None if tensor is None else tensor.as_numpy()

        def rows(value):
            return None if value is None else value.reshape(len(value))  # (n, 1) -> (n,)

        checked = self.pipe.check_request(
            seeds=rows(get(protocol.SEED)),
            classes=rows(get(protocol.CLASS)),
            guidance=rows(get(protocol.GUIDANCE)),
            temperature=rows(get(protocol.TEMPERATURE)),
            mask=get(protocol.MASK),
            known_bits=get(protocol.KNOWN_BITS),
            chunk=False,
        )
        every = self.preview_every
        if self.decoupled and get(protocol.PREVIEW_EVERY) is not None:
            values = np.unique(get(protocol.PREVIEW_EVERY))
            if len(values) != 1 or values[0] < 0:
                raise InvalidRequestError(
                    f"preview_every must be one integer >= 0 (0 = no "
                    f"previews), got {values.tolist()}"
                )
            every = int(values[0])
        return checked, every

    @staticmethod
    def _error(error: Exception):
        code = (
            pb_utils.TritonError.INVALID_ARG
            if isinstance(error, InvalidRequestError)
            else pb_utils.TritonError.INTERNAL
        )
        return pb_utils.InferenceResponse(
            output_tensors=[], error=pb_utils.TritonError(str(error), code)
        )

    @staticmethod
    def _outputs(images, bits, step=None, final=None):
        tensors = [
            pb_utils.Tensor(protocol.IMAGE.name, np.ascontiguousarray(images)),
            pb_utils.Tensor(protocol.BITS.name, pack_bits(bits)),
        ]
        if step is not None:
            n = len(images)
            tensors += [
                pb_utils.Tensor(protocol.STEP.name, np.full((n, 1), step, np.int32)),
                pb_utils.Tensor(protocol.FINAL.name, np.full((n, 1), final, np.bool_)),
            ]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    # --- execute -------------------------------------------------------------------------

    def execute(self, requests):
        accepted, responses = [], [None] * len(requests)
        senders = [r.get_response_sender() for r in requests] if self.decoupled else None
        for i, request in enumerate(requests):
            try:
                accepted.append((i,) + self._read(request))
            except Exception as e:  # noqa: BLE001 - the request's own error; the others go on
                self.refused.increment(1)
                if self.decoupled:
                    senders[i].send(
                        self._error(e), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
                    )
                else:
                    responses[i] = self._error(e)
        if accepted:
            self._run(accepted, responses, senders)
        return None if self.decoupled else responses

    def _run(self, accepted, responses, senders):
        offsets = np.cumsum([0] + [checked.count for _, checked, _ in accepted])
        K = self.pipe.num_steps

        def preview(step, num_steps, bits):
            wanted = [
                (a, lo, hi)
                for a, (lo, hi) in zip(accepted, itertools.pairwise(offsets), strict=True)
                if a[2] and step % a[2] == 0
            ]
            if wanted:
                rows = np.concatenate([np.arange(lo, hi) for _, lo, hi in wanted])
                current = bits[rows]
                images, at = self.pipe.decode(current, chunk=False), 0
                for (i, _, _), lo, hi in wanted:
                    n = hi - lo
                    senders[i].send(
                        self._outputs(images[at : at + n], current[at : at + n], step, False)
                    )
                    at += n

        try:
            # The checked requests' rows as one request: rows without inpainting get an
            # all-zero mask when others inpaint, which keeps nothing (Request.concat).
            out = self.pipe.run(
                Request.concat([c for _, c, _ in accepted]),
                callback=preview if self.decoupled else None,
            )
        except Exception as e:  # noqa: BLE001 - checked above: the run itself failed, for each
            for i, _, _ in accepted:
                if self.decoupled:
                    senders[i].send(
                        self._error(e), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
                    )
                else:
                    responses[i] = self._error(e)
            return
        for (i, _, _), (lo, hi) in zip(accepted, itertools.pairwise(offsets), strict=True):
            if self.decoupled:
                senders[i].send(
                    self._outputs(out.images[lo:hi], out.bits[lo:hi], K, True),
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
                )
            else:
                responses[i] = self._outputs(out.images[lo:hi], out.bits[lo:hi])

    def finalize(self):
        self.pipe = None
