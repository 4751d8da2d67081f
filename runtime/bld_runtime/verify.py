"""A bundle checked against itself, without the run it came from (`bld-export verify`).

Loading (Pipeline.load) already checks, for the graphs it runs: each file's sha256, taken on
the bytes the session is made from; the I/O each session reports against the manifest; and the
facts each graph records (bld.graph) against the manifest. `verify_bundle` does that for every
graph of the bundle, both precisions, and then probes the step graphs for what they compute:

- schedule: with the temperature at float32's maximum, every logit divided by it is 0, so
  p0 = 0.5 whatever the denoiser says, and each step's output is a function of the schedule
  constants alone (the posterior for z = 1, or 0.5 at the last step). The graph's outputs must
  equal the contract's for the manifest's schedule and timesteps, step by step.
- classes: the null class (= the manifest's class count) must be accepted and the index after
  it refused, so the graph's class table has exactly count + 1 rows.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from . import contract
from .backends.cpu import CpuBackend
from .errors import BackendError, ManifestError
from .manifest import Bundle, load_bundle

PROBE_TOLERANCE = 1e-5  # float32 evaluation of the same formula in two places


def verify_bundle(
    path: str | os.PathLike[str], log: Callable[[str], None] = lambda line: None
) -> Bundle:
    """Every check above; raises ManifestError / BundleIntegrityError on the first failure."""
    bundle = load_bundle(path)
    bundle.verify_files()
    log(f"{len(bundle.manifest.graphs)} graph files present, sha256 matches the manifest")
    precisions = ["fp32"] + [p for p in ("fp16", "int8") if f"step_{p}" in bundle.manifest.graphs]
    for precision in precisions:
        backend = _ProbeBackend(bundle, precision)  # makes and checks every session of it
        names = ", ".join(g.name for g in backend.graphs.values())
        log(f"{precision}: {names}: I/O and recorded facts match the manifest")
        for kind in ("step", "step_guided"):
            probe_schedule(backend, kind)
            probe_classes(backend, kind)
            log(
                f"{backend.graphs[kind].name}: computes the manifest's schedule "
                f"({bundle.manifest.schedule.name}, T={bundle.manifest.schedule.train_steps}, "
                f"K={bundle.manifest.schedule.sampling_steps}) and "
                f"{bundle.manifest.classes.count} classes + null"
            )
    return bundle


class _ProbeBackend(CpuBackend):
    """The cpu backend without its CPU check: verify probes what the int8 graphs compute (the
    schedule probe zeroes the logits, so no int8 rounding reaches it) on any CPU, where
    sampling in int8 is refused without VNNI or AMX-INT8 (backends/int8.py)."""

    def _prepare(self) -> None:
        pass


def probe_schedule(backend: CpuBackend, kind: str) -> None:
    m = backend.manifest
    K, (L, C) = backend.num_steps, backend.latent
    tables = contract.step_tables(m.schedule.name, m.schedule.train_steps, K)
    guidance = np.zeros(K, np.float32) if kind == "step_guided" else None
    probs = backend.step_probs(
        np.ones((K, L, C), np.float32),
        np.arange(K),
        np.full(K, m.classes.null_class),
        np.full(K, np.finfo(np.float32).max),
        guidance,
    )
    for i in range(K):
        want = (
            0.5
            if tables.is_last[i]
            else float(
                contract.posterior(
                    1.0, 0.5, tables.k_next[i], tables.b_next[i], tables.beta_prod[i]
                )
            )
        )
        got = probs[i]
        if not np.all(np.abs(got - want) <= PROBE_TOLERANCE):
            worst = float(got.reshape(-1)[np.argmax(np.abs(got - want))])
            raise ManifestError(
                f"graph {backend.graphs[kind].name!r} does not compute the manifest's schedule: "
                f"at step {i} it gives {worst:.6g} where {m.schedule.name}, "
                f"T={m.schedule.train_steps}, timesteps {list(m.schedule.timesteps)} give "
                f"{want:.6g}"
            )


def probe_classes(backend: CpuBackend, kind: str) -> None:
    m = backend.manifest
    L, C = backend.latent
    guidance = np.zeros(1, np.float32) if kind == "step_guided" else None

    def call(label: int) -> None:
        backend.step_probs(
            np.zeros((1, L, C), np.float32),
            np.zeros(1),
            np.full(1, label),
            np.ones(1, np.float32),
            guidance,
        )

    call(m.classes.null_class)
    try:
        call(m.classes.null_class + 1)
    except BackendError:
        return
    raise ManifestError(
        f"graph {backend.graphs[kind].name!r} accepts class "
        f"{m.classes.null_class + 1}: it has more classes than the manifest's "
        f"{m.classes.count} (+ the null class)"
    )
