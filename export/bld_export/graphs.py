"""Every exported submodel, declared once (in the style of TensorRT's demo/Diffusion models.py).

A GraphDecl says what a graph is called, how its torch module is built from a run's models,
its input/output names, dtypes and shapes (with the dynamic "batch" axis: taken from
bld_runtime.manifest.graph_io, the one definition of bundle format v1's graphs), what valid
inputs look like (example and random inputs) and its TensorRT shape profile. Export,
validation, FLOP counting and engine building read these declarations; none of them re-states
a shape.

fp16 variants keep float32 at the boundary: the torch module casts inputs down and outputs up,
so a strongly typed TensorRT network runs the network body in fp16 and nothing else. Inside,
the step graphs keep sigmoid and posterior in fp32 (DenoiserStep) and the fp16 decoder keeps
its GroupNorms in fp32 (Float32GroupNorm); every MatMul and Conv is fp16.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
import torch.nn as nn

from bld_runtime import contract
from bld_runtime.manifest import (
    BATCH,
    FP16_SUFFIX,
    INT8_SUFFIX,
    KINDS,
    ClassesSpec,
    ImageSpec,
    LatentSpec,
    ScheduleSpec,
    graph_facts,
    graph_io,
)


@dataclass(frozen=True)
class Dims:
    """The sizes every declaration is made of: image, latent, classes and sampling steps."""

    channels: int
    height: int
    width: int
    latent_height: int
    latent_width: int
    bits: int  # C
    classes: int  # the null class is index `classes`
    steps: int  # K, sampling steps (the step graphs' `step` input is 0..K-1)

    @property
    def tokens(self) -> int:
        """L = latent height * latent width."""
        return self.latent_height * self.latent_width

    @classmethod
    def from_configs(cls, ae_cfg, prior_cfg) -> Dims:
        return cls(
            channels=ae_cfg.in_channels,
            height=ae_cfg.image_size,
            width=ae_cfg.image_size,
            latent_height=ae_cfg.latent_size,
            latent_width=ae_cfg.latent_size,
            bits=ae_cfg.bits,
            classes=prior_cfg.num_classes,
            steps=prior_cfg.sampling_steps,
        )

    @classmethod
    def from_manifest(cls, manifest) -> Dims:
        image, latent = manifest.image, manifest.latent
        return cls(
            channels=image.channels,
            height=image.height,
            width=image.width,
            latent_height=latent.height,
            latent_width=latent.width,
            bits=latent.bits,
            classes=manifest.classes.count,
            steps=len(manifest.schedule.timesteps),
        )

    def image(self) -> ImageSpec:
        return ImageSpec(height=self.height, width=self.width, channels=self.channels)

    def latent(self) -> LatentSpec:
        return LatentSpec(height=self.latent_height, width=self.latent_width, bits=self.bits)


@dataclass(frozen=True)
class TensorDecl:
    name: str
    dtype: str  # numpy dtype name: "float32" or "int64"
    shape: tuple[str | int, ...]  # "batch" is the dynamic axis, ints are fixed

    @classmethod
    def of(cls, spec) -> TensorDecl:
        """From a bld_runtime.manifest.TensorSpec."""
        return cls(spec.name, spec.dtype, tuple(spec.shape))

    def concrete(self, batch: int) -> tuple[int, ...]:
        return tuple(batch if d == BATCH else d for d in self.shape)


@dataclass(frozen=True)
class Models:
    """The torch models of one run, in eval mode, with their configs."""

    autoencoder: nn.Module
    denoiser: nn.Module
    prior_cfg: object = field(repr=False)

    @classmethod
    def load(cls, run_dir) -> Models:
        from bld_train.checkpoint import load_autoencoder, load_prior

        autoencoder = load_autoencoder(run_dir)
        denoiser, prior_cfg = load_prior(run_dir)
        return cls(autoencoder.eval(), denoiser.eval(), prior_cfg)


@dataclass(frozen=True)
class GraphDecl:
    name: str  # manifest key and file stem, e.g. "step_fp16"
    kind: str  # one of KINDS
    precision: str  # "fp32", "fp16" or "int8" (of the network body)
    inputs: tuple[TensorDecl, ...]
    outputs: tuple[TensorDecl, ...]
    build: Callable[[Models], nn.Module] = field(repr=False, compare=False)
    dims: Dims = field(repr=False)

    @property
    def file(self) -> str:
        return f"{self.name}.onnx"

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def random_inputs(self, batch: int, rng: np.random.Generator, first_row: int = 0) -> dict:
        """Valid random inputs. Step conditions cycle per row (see `step_conditions`)."""
        d = self.dims
        if self.kind == "encoder":
            image = rng.uniform(-1.0, 1.0, (batch, d.channels, d.height, d.width))
            return {"image": image.astype(np.float32)}
        bits = rng.integers(0, 2, (batch, d.tokens, d.bits)).astype(np.float32)
        if self.kind == "decoder":
            return {"bits": bits}
        return {"bits": bits, **self.step_conditions(batch, rng, first_row)}

    def step_conditions(self, batch: int, rng: np.random.Generator, first_row: int = 0) -> dict:
        """step/class_label/temperature[/guidance] for `batch` rows, starting at row `first_row`.

        Rows cycle through the first, middle and last step, the null class and real classes,
        temperatures other than 1 and guidance 0 and 1.5: any 4 consecutive rows cover the
        first, middle and last step, the null class and both guidance values, so two batches
        of 2 (first_row 0 and 2) do too.
        """
        d = self.dims
        rows = np.arange(first_row, first_row + batch)
        steps = np.array([0, d.steps - 1, d.steps // 2])[rows % 3]
        classes = rng.integers(0, d.classes, batch) if d.classes else np.zeros(batch, np.int64)
        classes[rows % 2 == 1] = d.classes  # every other row is unconditional
        out = {
            "step": steps.astype(np.int64),
            "class_label": classes.astype(np.int64),
            "temperature": np.array([0.7, 1.3, 1.0, 0.9])[rows % 4].astype(np.float32),
        }
        if self.kind == "step_guided":
            out["guidance"] = np.array([0.0, 1.5])[(rows // 2) % 2].astype(np.float32)
        return out

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        """Inputs to trace the export with. Batch 2: torch.export specializes sizes 0 and 1."""
        feeds = self.random_inputs(2, np.random.default_rng(0))
        return tuple(torch.from_numpy(feeds[name]) for name in self.input_names)

    def dynamic_shapes(self) -> dict:
        """torch.export's dynamic_shapes: axis 0 of every input is the shared "batch" dim."""
        batch = torch.export.Dim(BATCH, min=1)
        return {t.name: {0: batch} for t in self.inputs}

    def shape_profile(self, max_batch: int, opt_batch: int | None = None) -> dict:
        """TensorRT optimization profile: input name -> (min, opt, max) shapes, batch 1..max."""
        opt = max_batch if opt_batch is None else min(opt_batch, max_batch)
        return {
            t.name: (t.concrete(1), t.concrete(opt), t.concrete(max_batch)) for t in self.inputs
        }


# --- the torch modules that get exported -----------------------------------------------------


class EncoderGraph(nn.Module):
    """image -> per-bit probabilities (B, L, C). Always float32."""

    def __init__(self, autoencoder: nn.Module):
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, image):
        return self.autoencoder.encode_probs(image)


class DecoderGraph(nn.Module):
    """bits -> image in [-1, 1], float32 at the boundary whatever precision the body has."""

    def __init__(self, autoencoder: nn.Module):
        super().__init__()
        self.autoencoder = autoencoder
        self.dtype = autoencoder.last_layer.dtype

    def forward(self, bits):
        image = self.autoencoder.decode(bits.to(self.dtype)).clamp(-1.0, 1.0)
        return image.float()


class Float32GroupNorm(nn.Module):
    """A GroupNorm that runs in float32 inside an fp16 network, with explicit casts both ways.

    One group of a 256x256 feature map holds 262144 values: summed in fp16 they overflow (the
    ONNX reference evaluator does exactly that). As an fp32 island the norm means the same on
    every backend, and a strongly typed TensorRT network keeps it fp32 while convs run fp16.
    """

    def __init__(self, norm: nn.GroupNorm):
        super().__init__()
        self.norm = copy.deepcopy(norm).float()

    def forward(self, x):
        return self.norm(x.float()).to(x.dtype)


def _half_with_float32_norms(model: nn.Module) -> nn.Module:
    """An fp16 copy of `model` whose GroupNorms are Float32GroupNorms of the fp32 originals."""
    originals = dict(model.named_modules())
    half = copy.deepcopy(model).half()

    def swap(parent: nn.Module, prefix: str) -> None:
        for name, child in parent.named_children():
            if isinstance(child, nn.GroupNorm):
                setattr(parent, name, Float32GroupNorm(originals[prefix + name]))
            else:
                swap(child, f"{prefix}{name}.")

    swap(half, "")
    return half


def _build_encoder(models: Models) -> nn.Module:
    return EncoderGraph(models.autoencoder).eval()


def _build_decoder(models: Models, fp16: bool) -> nn.Module:
    autoencoder = _half_with_float32_norms(models.autoencoder) if fp16 else models.autoencoder
    return DecoderGraph(autoencoder).eval()


def _build_step(models: Models, guided: bool, fp16: bool) -> nn.Module:
    from bld_train.denoiser import use_fused_attention
    from bld_train.step import DenoiserStep

    # DenoiserStep runs sigmoid and posterior in float32 and casts the logits up itself; the
    # denoiser is converted before wrapping so the schedule tables stay float32. Attention is
    # exported as written out (MatMul + Softmax), never as scaled_dot_product_attention.
    denoiser = copy.deepcopy(models.denoiser).half() if fp16 else models.denoiser
    use_fused_attention(denoiser, False)
    return DenoiserStep(denoiser, guided=guided).eval()


def declare(dims: Dims, fp16: bool = False, int8: bool = False) -> tuple[GraphDecl, ...]:
    """The graphs of a bundle: encoder, decoder, step, step_guided (+ fp16 variants, + int8
    step graphs).

    Their I/O is bundle format v1's (bld_runtime.manifest.graph_io). An int8 graph is not
    exported from torch but quantized from its fp32 graph (quantize.py): its `build` is the fp32
    module, the model it is validated against."""
    builders = {
        "encoder": _build_encoder,
        "decoder": _build_decoder,
        "step": partial(_build_step, guided=False),
        "step_guided": partial(_build_step, guided=True),
    }
    graphs = []
    for half in (False, True) if fp16 else (False,):
        for kind in KINDS:
            if half and kind == "encoder":
                continue  # the encoder always runs in fp32
            inputs, outputs = graph_io(kind, dims.image(), dims.latent())
            build = builders[kind] if kind == "encoder" else partial(builders[kind], fp16=half)
            graphs.append(
                GraphDecl(
                    kind + (FP16_SUFFIX if half else ""),
                    kind,
                    "fp16" if half else "fp32",
                    tuple(map(TensorDecl.of, inputs)),
                    tuple(map(TensorDecl.of, outputs)),
                    build,
                    dims,
                )
            )
    for kind in ("step", "step_guided") if int8 else ():
        inputs, outputs = graph_io(kind, dims.image(), dims.latent())
        graphs.append(
            GraphDecl(
                kind + INT8_SUFFIX,
                kind,
                "int8",
                tuple(map(TensorDecl.of, inputs)),
                tuple(map(TensorDecl.of, outputs)),
                partial(builders[kind], fp16=False),
                dims,
            )
        )
    return tuple(graphs)


def decl_facts(decl: GraphDecl, opset: int, schedule: ScheduleSpec) -> dict:
    """The facts a graph file records about itself (ONNX metadata bld.graph)."""
    d = decl.dims
    return graph_facts(
        decl.name,
        opset,
        d.image(),
        d.latent(),
        ClassesSpec(count=d.classes, null_class=d.classes),
        schedule,
    )


def noised_bits(
    clean: np.ndarray,
    step: np.ndarray,
    schedule: str,
    train_steps: int,
    timesteps,
    rng: np.random.Generator,
) -> np.ndarray:
    """z_t ~ q(z_t | z_0) = Bernoulli(k_t z_0 + b_t) at each row's step: realistic step inputs."""
    k, b = contract.keep_tables(contract.betas(schedule, train_steps))
    t = np.asarray(timesteps)[step]
    p = k[t][:, None, None] * clean + b[t][:, None, None]
    return (rng.random(clean.shape) < p).astype(np.float32)


__all__ = [
    "BATCH",
    "KINDS",
    "Dims",
    "TensorDecl",
    "Models",
    "GraphDecl",
    "EncoderGraph",
    "DecoderGraph",
    "Float32GroupNorm",
    "declare",
    "decl_facts",
    "noised_bits",
]
