"""The compiled conversion of decoder output to images (bld_runtime._host's `pixels`,
csrc/bld_image_host.h, the C++ runtime's too) gives numpy's pixels (images.from_float after
nchw_to_nhwc, the reference): at every rounding tie of the 256 levels and one float either
side, at the clipping edges, NaN and the infinities, and on any float32 array."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bld_runtime import images

compiled = images._compiled_pixels
needs_compiled = pytest.mark.skipif(compiled is None, reason="bld_runtime._host is not built")


def _reference(x: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():  # numpy warns casting NaN; it gives 0 on the CPUs we build for
        warnings.simplefilter("ignore", RuntimeWarning)
        out = images.from_float(images.nchw_to_nhwc(x))
    out[images.nchw_to_nhwc(np.isnan(x))] = 0
    return out


def _compiled(x: np.ndarray) -> np.ndarray:
    n, c, h, w = x.shape
    out = np.empty((n, h, w, c), np.uint8)
    compiled(np.ascontiguousarray(x), n, c, h * w, out)
    return out


def test_the_installed_runtime_has_the_compiled_pixels():
    assert compiled is not None, "bld_runtime._host was not built: reinstall with a C compiler"


@needs_compiled
def test_every_tie_and_its_neighbours_round_as_numpy():
    """(k + 0.5) / 127.5 - 1 is where round-half-even decides; the float32 nearest to it and
    the floats next to that land on either side of the tie after the float32 arithmetic."""
    ties = ((np.arange(-2, 258) + 0.5) / 127.5 - 1).astype(np.float32)
    values = np.concatenate(
        [
            ties,
            np.nextafter(ties, np.float32(np.inf)),
            np.nextafter(ties, np.float32(-np.inf)),
            np.array([np.nan, np.inf, -np.inf, -1, 1, -1.5, 1.5, 0, -0.0, 3e38, -3e38], np.float32),
        ]
    )
    x = values.reshape(1, 1, 1, -1)
    np.testing.assert_array_equal(_compiled(x), _reference(x))
    assert _compiled(np.array([np.nan], np.float32).reshape(1, 1, 1, 1)).item() == 0


@needs_compiled
@settings(max_examples=200, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 3), st.sampled_from([1, 3]), st.integers(1, 9), st.integers(1, 9)),
        elements=st.floats(width=32, allow_nan=True, allow_infinity=True)
        | st.floats(-1.125, 1.125, width=32),
    )
)
def test_any_array_converts_as_numpy(x):
    np.testing.assert_array_equal(_compiled(x), _reference(x))


@needs_compiled
def test_from_decoder_runs_the_compiled_pass_on_float32_and_numpy_otherwise(monkeypatch):
    x = np.random.default_rng(0).normal(0, 0.8, (4, 3, 8, 5)).astype(np.float32)
    calls = []

    def spy(*args):
        calls.append(args[1:4])
        compiled(*args)

    monkeypatch.setattr(images, "_compiled_pixels", spy)
    got = images.from_decoder(x)
    assert calls == [(4, 3, 40)] and got.dtype == np.uint8 and got.shape == (4, 8, 5, 3)
    np.testing.assert_array_equal(got, _reference(x))
    strided = np.random.default_rng(1).normal(0, 0.8, (4, 3, 8, 10)).astype(np.float32)[..., ::2]
    np.testing.assert_array_equal(images.from_decoder(strided), _reference(strided))
    assert len(calls) == 2
    x16 = x.astype(np.float16)  # not float32: numpy's path, the compiled pass's pixels
    np.testing.assert_array_equal(images.from_decoder(x16), _compiled(x16.astype(np.float32)))
    assert len(calls) == 2
    monkeypatch.setattr(images, "_compiled_pixels", None)  # not built: numpy's path
    np.testing.assert_array_equal(images.from_decoder(x), got)


@needs_compiled
@pytest.mark.parametrize(
    "x, n, channels, hw, out, words",
    [
        (np.zeros(6, np.float64), 1, 1, 6, np.zeros(6, np.uint8), "float32"),
        (np.zeros(6, np.float32), 1, 1, 6, np.zeros(6, np.int8), "uint8"),
        (np.zeros(6, np.float32), 1, 1, 6, np.zeros(5, np.uint8), "sizes"),
        (np.zeros(6, np.float32), 2, 1, 6, np.zeros(12, np.uint8), "sizes"),
        (np.zeros(6, np.float32), 1, 0, 6, np.zeros(6, np.uint8), "channels and hw > 0"),
        (np.zeros(6, np.float32), 1, 1, 0, np.zeros(6, np.uint8), "channels and hw > 0"),
        (np.zeros(6, np.float32), -1, 1, 6, np.zeros(6, np.uint8), "n must be >= 0"),
        (np.frombuffer(bytes(25), np.float32, 6, 1), 1, 1, 6, np.zeros(6, np.uint8), "aligned"),
        (np.zeros(6, np.float32), 1 << 40, 1 << 20, 1 << 20, np.zeros(6, np.uint8), "addressable"),
    ],
)
def test_a_wrong_array_is_a_ValueError_not_a_write_out_of_bounds(x, n, channels, hw, out, words):
    with pytest.raises(ValueError, match=words):
        compiled(x, n, channels, hw, out)


@needs_compiled
def test_a_read_only_output_is_refused():
    out = np.zeros(4, np.uint8)
    out.flags.writeable = False
    with pytest.raises((ValueError, BufferError, TypeError)):
        compiled(np.zeros(4, np.float32), 1, 1, 4, out)
