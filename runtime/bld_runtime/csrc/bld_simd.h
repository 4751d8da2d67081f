/* bld_simd.h: how the host C sources (bld_draw_host.h, bld_image_host.h) get SIMD code for the
 * CPU they run on from one build for the baseline.
 *
 * Their loops are BLD_HOST_INLINE: inlined into each caller, so that each SIMD clone of the
 * caller compiles them for its own instruction set. On x86-64 Linux with GCC, a function marked
 * BLD_SIMD_CLONES is compiled twice, for AVX-512 (x86-64-v4) and for the baseline, and the
 * loader picks the one the CPU runs. Elsewhere both are plain: the baseline's code.
 */
#ifndef BLD_SIMD_H
#define BLD_SIMD_H

#if defined(__GNUC__)
#define BLD_HOST_INLINE static inline __attribute__((always_inline))
#else
#define BLD_HOST_INLINE static inline
#endif

#include <stdlib.h> /* defines __GLIBC__ where the C library is glibc */
#if defined(__x86_64__) && defined(__linux__) && defined(__GLIBC__) && defined(__GNUC__) &&   \
    !defined(__clang__)
/* target_clones needs the loader's ifunc: glibc has it, musl (Alpine) does not. */
#define BLD_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "default")))
#else
#define BLD_SIMD_CLONES
#endif

#endif /* BLD_SIMD_H */
