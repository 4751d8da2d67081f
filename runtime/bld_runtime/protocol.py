"""The served models' protocol: their names, their inputs and outputs, and the config
parameters that describe the bundle behind them.

Both sides import it: the serving package (bld_serving) writes model configs and answers
requests with these names and types, and the client (`bld_runtime.remote`) speaks them with
`tritonclient`. It holds data only: nothing here imports tritonclient or Triton.

Each image is one request stating all its sampling parameters (seed, class, guidance,
temperature), so the server's dynamic batcher groups concurrent requests, and an image depends
only on its request, on any replica, as locally.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import BldError, ManifestError
from .manifest import ImageSpec, LatentSpec
from .request import RequestRules

MODEL = "bld"  # generate: one response per request
STREAM_MODEL = "bld_stream"  # decoupled: step previews, then the final image (gRPC)


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of the served models.

    Attributes:
        name: The tensor's name.
        dtype: Triton's datatype name (UINT64, INT64, FP32, UINT8, INT32, BOOL).
        optional: Whether a request may leave the input out.
    """

    name: str
    dtype: str
    optional: bool = False


# Per-row scalars travel as dims [1]; mask and known_bits as (L, C); image as (H, W, ch); bits
# packed as bld_runtime.bits.pack_bits writes them. Requests with the same set of inputs are
# what Triton batches together.
SEED = TensorSpec("seed", "UINT64")
CLASS = TensorSpec("class", "INT64")  # the null class (= number of classes): unconditional
GUIDANCE = TensorSpec("guidance", "FP32")
TEMPERATURE = TensorSpec("temperature", "FP32")
MASK = TensorSpec("mask", "UINT8", optional=True)  # inpainting, latent space: 1 = keep
KNOWN_BITS = TensorSpec("known_bits", "UINT8", optional=True)
PREVIEW_EVERY = TensorSpec("preview_every", "INT32", optional=True)  # stream only; 0 = none
INPUTS = (SEED, CLASS, GUIDANCE, TEMPERATURE, MASK, KNOWN_BITS)
STREAM_INPUTS = INPUTS + (PREVIEW_EVERY,)

IMAGE = TensorSpec("image", "UINT8")
BITS = TensorSpec("bits", "UINT8")
STEP = TensorSpec("step", "INT32")  # stream only: the step the response shows (K = final)
FINAL = TensorSpec("final", "BOOL")  # stream only: True on the last response of a request
OUTPUTS = (IMAGE, BITS)
STREAM_OUTPUTS = OUTPUTS + (STEP, FINAL)

# config.pbtxt parameters describing the bundle, so that a client needs no copy of it.
PARAM_IMAGE = "bld_image"  # "HxWxC"
PARAM_LATENT = "bld_latent"  # "HxWxbits"
PARAM_CLASSES = "bld_classes"  # number of classes (the null class is this number)
PARAM_STEPS = "bld_steps"  # K
PARAM_GUIDANCE = "bld_default_guidance"  # the bundle's defaults, which clients send
PARAM_TEMPERATURE = "bld_default_temperature"


class RemoteError(BldError):
    """A Triton server that cannot be reached, or that refused or failed a request."""


@dataclass(frozen=True)
class ServedBundle:
    """What a client needs to know about the bundle behind a served model.

    Attributes:
        image: The images' shape.
        latent: The latent's shape.
        num_classes: The number of classes (the null class is this number).
        num_steps: K.
        max_batch: The model's max_batch_size.
        guidance: The bundle's default guidance.
        temperature: The bundle's default temperature.
    """

    image: ImageSpec
    latent: LatentSpec
    num_classes: int
    num_steps: int
    max_batch: int
    guidance: float
    temperature: float

    @classmethod
    def from_config(cls, config: dict[str, Any], source: str) -> ServedBundle:
        """Read the bld_* parameters of a model config (as JSON).

        Args:
            config: The model's config, as Triton reports it in JSON.
            source: Where the config came from, for the error sentence.

        Returns:
            The served bundle's description.

        Raises:
            RemoteError: The config lacks or garbles the bld_* parameters.
        """
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        try:
            image = ImageSpec(*(int(v) for v in params[PARAM_IMAGE].split("x")))
            latent = LatentSpec(*(int(v) for v in params[PARAM_LATENT].split("x")))
            return cls(
                image,
                latent,
                int(params[PARAM_CLASSES]),
                int(params[PARAM_STEPS]),
                int(config.get("max_batch_size", 0)) or 1,
                float(params[PARAM_GUIDANCE]),
                float(params[PARAM_TEMPERATURE]),
            )
        except (KeyError, ValueError, TypeError, ManifestError):
            raise RemoteError(
                f"{source} does not describe a bld bundle (its config lacks or "
                f"garbles the bld_* parameters that bld-export triton "
                f"writes)"
            ) from None

    @property
    def rules(self) -> RequestRules:
        """What a request to this model is shaped against (`request.RequestRules`)."""
        return RequestRules(
            num_classes=self.num_classes,
            latent_shape=self.latent.shape,
            max_batch=self.max_batch,
            num_steps=self.num_steps,
            guidance=self.guidance,
            temperature=self.temperature,
        )
