"""An image's bits depend only on its seed and conditioning, on the demo model too.

The tiny model's graphs are small enough that onnxruntime might run every batch size through
the same kernels; the demo's (digits preset, here with random weights: the numerics, not the
weights, are what could differ) are big enough for batch-size-dependent GEMM blocking. Batch 1,
16 and 64, and every position inside the batch, must give the same bits and pixels.
"""

from __future__ import annotations

import numpy as np
import pytest

from bld_runtime.pipeline import Pipeline

SEEDS = np.arange(500, 564, dtype=np.uint64)


@pytest.fixture(scope="module")
def demo_pipe(tmp_path_factory):
    from bld_export.export import export_bundle
    from bld_train.checkpoint import init_random_run
    from bld_train.config import preset

    run = tmp_path_factory.mktemp("digits_random")
    init_random_run(run, preset("digits"), seed=3)
    export_bundle(run, run / "bundle")
    return Pipeline.load(run / "bundle")


@pytest.mark.parametrize("guidance", [0.0, 1.5])
def test_batch_size_and_position_do_not_change_the_bits(demo_pipe, guidance):
    classes = np.arange(64) % 11  # every class and the null class
    full = demo_pipe.generate(seeds=SEEDS, classes=classes, guidance=guidance)
    sixteens = [
        demo_pipe.generate(seeds=SEEDS[i : i + 16], classes=classes[i : i + 16], guidance=guidance)
        for i in range(0, 64, 16)
    ]
    np.testing.assert_array_equal(np.concatenate([g.bits for g in sixteens]), full.bits)
    np.testing.assert_array_equal(np.concatenate([g.images for g in sixteens]), full.images)
    for i in range(0, 64, 7):
        one = demo_pipe.generate(
            seeds=SEEDS[i : i + 1], classes=classes[i : i + 1], guidance=guidance
        )
        np.testing.assert_array_equal(one.bits[0], full.bits[i])
        np.testing.assert_array_equal(one.images[0], full.images[i])
    order = np.random.default_rng(0).permutation(64)
    shuffled = demo_pipe.generate(seeds=SEEDS[order], classes=classes[order], guidance=guidance)
    np.testing.assert_array_equal(shuffled.bits, full.bits[order])
    np.testing.assert_array_equal(shuffled.images, full.images[order])
