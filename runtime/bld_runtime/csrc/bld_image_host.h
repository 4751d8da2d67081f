/* bld_image_host.h: the decoder's float NCHW output as the user's uint8 NHWC images.
 *
 * The project's convention (bld_runtime/images.py): u8 = clip(round((x + 1) * 127.5), 0, 255),
 * rounding half to even, in float32; NaN gives 0. The one compiled source of it: the C++
 * runtime (runtime/cpp/src/images.cpp) and the Python runtime's compiled host code
 * (bld_runtime/csrc/host.c) both include it. Plain C99; build without fast-math, and with
 * -fno-trapping-math, which changes no value and lets the loop vectorise (setup.py).
 */
#ifndef BLD_IMAGE_HOST_H
#define BLD_IMAGE_HOST_H

#include <stddef.h>

#include "bld_simd.h"

/* The rounding below needs float32 arithmetic as written: no fast-math, no reassociation (it
   would fold the rounding away), NaNs that exist, no excess precision. */
#if defined(__FAST_MATH__) || defined(__ASSOCIATIVE_MATH__) ||                                   \
    (defined(__FINITE_MATH_ONLY__) && __FINITE_MATH_ONLY__)
#error "bld_image_host.h must be built without fast-math, -fassociative-math or -ffinite-math-only"
#endif
#if defined(__FLT_EVAL_METHOD__) && __FLT_EVAL_METHOD__ != 0
#error "bld_image_host.h needs float arithmetic in float (FLT_EVAL_METHOD 0)"
#endif

/* One pixel. Clipping before rounding gives the same result as after (0 and 255 are integers,
   rounding is monotone), and in [0, 255] adding and taking away 1.5 * 2^23 rounds to the
   nearest integer, ties to even, in the default rounding mode: no call to nearbyintf, so the
   loop below vectorises on any x86-64 or AArch64. A NaN fails both comparisons: 0. */
BLD_HOST_INLINE unsigned char bld_pixel_from_float(float x) {
    float s = (x + 1.0f) * 127.5f;
    s = s > 0.0f ? s : 0.0f;
    s = s < 255.0f ? s : 255.0f;
    return (unsigned char)(int)((s + 12582912.0f) - 12582912.0f);
}

/* x: n images of `channels` planes of hw pixels (NCHW) -> out: n images of hw pixels of
   `channels` values each (NHWC). Mark the caller BLD_SIMD_CLONES (bld_simd.h): a batch of 16
   of the digits model's 32x32 images took 7.4 us in SSE2, 1.4 us in the AVX-512 clone (2-core
   AMD EPYC; numpy's five passes, 8-9 us). */
BLD_HOST_INLINE void bld_images_from_nchw(const float *x, size_t n, size_t channels, size_t hw,
                                          unsigned char *out) {
    for (size_t i = 0; i < n; ++i) {
        const float *image = x + i * channels * hw;
        unsigned char *o = out + i * channels * hw;
        if (channels == 1) {
            for (size_t p = 0; p < hw; ++p) o[p] = bld_pixel_from_float(image[p]);
            continue;
        }
        for (size_t c = 0; c < channels; ++c)
            for (size_t p = 0; p < hw; ++p)
                o[p * channels + c] = bld_pixel_from_float(image[c * hw + p]);
    }
}

#endif /* BLD_IMAGE_HOST_H */
