"""Batch optimisation profiles: `--batch min:opt:max` -> per-input (min, opt, max) shapes.

The bundle's manifest declares every input's shape with the dynamic axis by name ("batch"),
so a profile is made by substituting the three batch sizes into each input's shape; nothing
here re-states a shape. The profile is on the graph's INPUT batch: step_guided runs the
conditional and the null-class pass as one batch inside the graph, so its denoiser sees
2 x the profile's batch (the builder tunes its inner layers for 2*opt and sizes activations
for 2*max); what a caller sends, and what a profile says, is always the images' batch.
"""

from __future__ import annotations

from bld_runtime.engine_cache import BatchProfile
from bld_runtime.errors import InvalidRequestError
from bld_runtime.manifest import GraphSpec

BATCH_AXIS = "batch"


def parse_batch(text: str, max_batch: int | None = None) -> BatchProfile:
    """'1:4:16' -> BatchProfile(1, 4, 16); 'N' -> N:N:N. Checked against the bundle's max_batch."""
    parts = text.strip().split(":")
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
        raise InvalidRequestError(
            f"--batch must be MIN:OPT:MAX (three positive integers, e.g. "
            f"1:4:16) or one integer, got {text!r}"
        )
    lo, opt, hi = (int(p) for p in parts)
    if lo < 1:
        raise InvalidRequestError(f"--batch {text}: the smallest batch must be at least 1")
    if not lo <= opt <= hi:
        raise InvalidRequestError(f"--batch {text}: needs min <= opt <= max")
    if max_batch is not None and hi > max_batch:
        raise InvalidRequestError(
            f"--batch {text}: max {hi} is above the bundle's max_batch ({max_batch})"
        )
    return BatchProfile(lo, opt, hi)


def default_profile(max_batch: int) -> BatchProfile:
    """1..max_batch tuned for max_batch: the pipeline sends full chunks of max_batch."""
    return BatchProfile(1, max_batch, max_batch)


def check_profiles(profiles: tuple[BatchProfile, ...]) -> tuple[BatchProfile, ...]:
    if not profiles:
        raise InvalidRequestError("at least one batch profile is needed")
    if len(set(profiles)) != len(profiles):
        raise InvalidRequestError(f"duplicate --batch profiles: {' '.join(map(str, profiles))}")
    return tuple(profiles)


def input_shapes(spec: GraphSpec, profile: BatchProfile) -> dict[str, tuple[tuple[int, ...], ...]]:
    """input name -> (min shape, opt shape, max shape) for one profile."""
    out = {}
    for t in spec.inputs:
        dynamic = [d for d in t.shape if isinstance(d, str)]
        if any(d != BATCH_AXIS for d in dynamic):
            raise InvalidRequestError(
                f"input {t.name!r} has dynamic axes {dynamic}; bld "
                f"profiles only vary {BATCH_AXIS!r}"
            )
        out[t.name] = tuple(
            tuple(b if isinstance(d, str) else d for d in t.shape)
            for b in (profile.min, profile.opt, profile.max)
        )
    return out


def shape_text(shape: tuple[int, ...]) -> str:
    """trtexec's shape notation: 4x16x32."""
    return "x".join(map(str, shape))


__all__ = [
    "BATCH_AXIS",
    "parse_batch",
    "default_profile",
    "check_profiles",
    "input_shapes",
    "shape_text",
]
