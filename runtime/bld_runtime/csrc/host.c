/* bld_runtime._host: the Python runtime's host loop in compiled code.
 *
 * The draws (bld_runtime/draws.py): the host loop (backends/cpu.py) calls one of these per step
 * for the whole batch: the Philox words are made on the fly in bld_draw_host.h's 64-lane SIMD
 * rounds, where numpy makes them in passes over uint64 arrays in memory (the initial pass of all
 * steps' uniforms took 1.2-1.4 ms of a batch-16 generation of the digits model; 0.03-0.04 ms
 * compiled). The GIL is released for large calls only (RELEASE_GIL_ELEMENTS, the pixels too):
 * a batch-16 draw of the demo latent takes 3 us, less than giving the GIL away and taking it
 * back may cost.
 *
 * The pixels (bld_runtime/images.py, from_decoder): the decoder's float NCHW output as uint8
 * NHWC images in one pass (bld_image_host.h), where numpy makes five passes and temporaries.
 *
 * Arrays arrive through the buffer protocol, C-contiguous; their item types (float32, uint64,
 * bool or uint8) and their sizes are checked here, so a wrong array is a ValueError, never a
 * write out of bounds.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "bld_draw_host.h"
#include "bld_image_host.h"

BLD_SIMD_CLONES
static void draw_batch(const float *p, const bld_u64 *seeds, bld_u64 subsequence, Py_ssize_t batch,
                       bld_u64 n, float *bits, const unsigned char *keep, const float *known) {
    for (Py_ssize_t b = 0; b < batch; ++b) {
        bld_u64 at = (bld_u64)b * n;
        bld_draw_image(p + at, seeds[b], subsequence, n, bits + at, keep ? keep + at : NULL,
                       known ? known + at : NULL);
    }
}

static void threshold_batch(const float *p, Py_ssize_t batch, bld_u64 n, float *bits,
                            const unsigned char *keep, const float *known) {
    for (Py_ssize_t b = 0; b < batch; ++b) {
        bld_u64 at = (bld_u64)b * n;
        bld_threshold_image(p + at, n, bits + at, keep ? keep + at : NULL,
                            known ? known + at : NULL);
    }
}

/* Calls over at least this many elements (draws, thresholds, pixels) run without the GIL. */
#define RELEASE_GIL_ELEMENTS (1 << 16)

/* Whether buffer b holds items of one of the struct-module type codes in `codes`, itemsize
   bytes each, in native byte order (numpy writes float32 as "f", uint64 as "L" or "Q", bool
   as "?", uint8 as "B"; a prefix "@", "=" or "<" on this little-endian or native layout). */
static int has_items(const Py_buffer *b, const char *codes, Py_ssize_t itemsize) {
    const char *f = b->format ? b->format : "B";
    if (*f == '@' || *f == '=' || *f == '<') ++f;
    return b->itemsize == itemsize && f[0] && !f[1] && strchr(codes, f[0]) != NULL;
}

/* Whether buffer b starts on a multiple of `alignment` bytes: a C-contiguous view may start
   anywhere (np.frombuffer with an offset), and reading floats from there is undefined in C. */
static int aligned(const Py_buffer *b, size_t alignment) {
    return ((uintptr_t)b->buf % alignment) == 0;
}

/* The buffers of one call: p, bits (writable), keep and known (both or neither). */
typedef struct {
    Py_buffer p, bits, keep, known;
    int masked;
} Buffers;

static void release(Buffers *v) {
    PyBuffer_Release(&v->p);
    PyBuffer_Release(&v->bits);
    if (v->masked) {
        PyBuffer_Release(&v->keep);
        PyBuffer_Release(&v->known);
    }
}

/* Fill v from the objects; 0 on success, -1 with a Python error set (nothing held). */
static int take(Buffers *v, PyObject *p, PyObject *bits, PyObject *keep, PyObject *known,
                Py_ssize_t elements) {
    memset(v, 0, sizeof *v);
    if ((keep == Py_None) != (known == Py_None)) {
        PyErr_SetString(PyExc_ValueError, "keep and known go together");
        return -1;
    }
    if (PyObject_GetBuffer(p, &v->p, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return -1;
    if (PyObject_GetBuffer(bits, &v->bits, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE | PyBUF_FORMAT) <
        0) {
        PyBuffer_Release(&v->p);
        return -1;
    }
    v->masked = keep != Py_None;
    if (v->masked) {
        if (PyObject_GetBuffer(keep, &v->keep, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
            PyBuffer_Release(&v->p);
            PyBuffer_Release(&v->bits);
            v->masked = 0;
            return -1;
        }
        if (PyObject_GetBuffer(known, &v->known, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
            PyBuffer_Release(&v->keep);
            PyBuffer_Release(&v->p);
            PyBuffer_Release(&v->bits);
            v->masked = 0;
            return -1;
        }
    }
    if (!has_items(&v->p, "f", 4) || !has_items(&v->bits, "f", 4) ||
        (v->masked && (!has_items(&v->keep, "?B", 1) || !has_items(&v->known, "f", 4))) ||
        !aligned(&v->p, sizeof(float)) || !aligned(&v->bits, sizeof(float)) ||
        (v->masked && !aligned(&v->known, sizeof(float)))) {
        release(v);
        PyErr_SetString(PyExc_ValueError,
                        "p, bits and known must be aligned float32 and keep bool or uint8");
        return -1;
    }
    /* elements fits: the caller checked it against PY_SSIZE_T_MAX / 4 */
    Py_ssize_t floats = elements * (Py_ssize_t)sizeof(float);
    if (v->p.len != floats || v->bits.len != floats ||
        (v->masked && (v->keep.len != elements || v->known.len != floats))) {
        release(v);
        PyErr_SetString(PyExc_ValueError, "buffer sizes do not match batch * n");
        return -1;
    }
    return 0;
}

/* batch * n, or -1 with a ValueError where it would not fit a buffer of floats. */
static Py_ssize_t elements_of(Py_ssize_t batch, Py_ssize_t n) {
    if (batch < 0 || n <= 0 || batch > PY_SSIZE_T_MAX / (Py_ssize_t)sizeof(float) / n) {
        PyErr_SetString(PyExc_ValueError, "batch must be >= 0 and n > 0, batch * n addressable");
        return -1;
    }
    return batch * n;
}

/* The subsequence: any Python int in [0, 2^64), else OverflowError or TypeError. */
static int subsequence_of(PyObject *o, unsigned long long *out) {
    if (!PyLong_Check(o)) {
        PyErr_SetString(PyExc_TypeError, "subsequence must be an int");
        return -1;
    }
    *out = PyLong_AsUnsignedLongLong(o);
    return (*out == (unsigned long long)-1 && PyErr_Occurred()) ? -1 : 0;
}

static PyObject *draw(PyObject *self, PyObject *args) {
    PyObject *p, *seeds_obj, *subsequence_obj, *bits, *keep, *known;
    unsigned long long subsequence;
    Py_ssize_t n;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOnOOO:draw", &p, &seeds_obj, &subsequence_obj, &n, &bits,
                          &keep, &known) ||
        subsequence_of(subsequence_obj, &subsequence) < 0)
        return NULL;
    Py_buffer seeds;
    if (PyObject_GetBuffer(seeds_obj, &seeds, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
    if (!has_items(&seeds, "LQ", 8)) {
        PyBuffer_Release(&seeds);
        PyErr_SetString(PyExc_ValueError, "seeds must be uint64");
        return NULL;
    }
    Py_ssize_t batch = seeds.len / 8, elements = elements_of(batch, n);
    Buffers v;
    if (elements < 0 || take(&v, p, bits, keep, known, elements) < 0) {
        PyBuffer_Release(&seeds);
        return NULL;
    }
    const float *pp = v.p.buf, *kn = v.masked ? v.known.buf : NULL;
    const unsigned char *kp = v.masked ? v.keep.buf : NULL;
    if (elements >= RELEASE_GIL_ELEMENTS) {
        Py_BEGIN_ALLOW_THREADS
        draw_batch(pp, seeds.buf, subsequence, batch, (bld_u64)n, v.bits.buf, kp, kn);
        Py_END_ALLOW_THREADS
    } else {
        draw_batch(pp, seeds.buf, subsequence, batch, (bld_u64)n, v.bits.buf, kp, kn);
    }
    release(&v);
    PyBuffer_Release(&seeds);
    Py_RETURN_NONE;
}

static PyObject *threshold(PyObject *self, PyObject *args) {
    PyObject *p, *bits, *keep, *known;
    Py_ssize_t batch, n;
    (void)self;
    if (!PyArg_ParseTuple(args, "OnnOOO:threshold", &p, &batch, &n, &bits, &keep, &known))
        return NULL;
    Py_ssize_t elements = elements_of(batch, n);
    Buffers v;
    if (elements < 0 || take(&v, p, bits, keep, known, elements) < 0) return NULL;
    const float *pp = v.p.buf, *kn = v.masked ? v.known.buf : NULL;
    const unsigned char *kp = v.masked ? v.keep.buf : NULL;
    if (elements >= RELEASE_GIL_ELEMENTS) {
        Py_BEGIN_ALLOW_THREADS
        threshold_batch(pp, batch, (bld_u64)n, v.bits.buf, kp, kn);
        Py_END_ALLOW_THREADS
    } else {
        threshold_batch(pp, batch, (bld_u64)n, v.bits.buf, kp, kn);
    }
    release(&v);
    Py_RETURN_NONE;
}

BLD_SIMD_CLONES
static void pixels_of(const float *x, Py_ssize_t n, Py_ssize_t channels, Py_ssize_t hw,
                      unsigned char *out) {
    bld_images_from_nchw(x, (size_t)n, (size_t)channels, (size_t)hw, out);
}

static PyObject *pixels(PyObject *self, PyObject *args) {
    PyObject *x_obj, *out_obj;
    Py_ssize_t n, channels, hw;
    (void)self;
    if (!PyArg_ParseTuple(args, "OnnnO:pixels", &x_obj, &n, &channels, &hw, &out_obj)) return NULL;
    if (n < 0 || channels <= 0 || hw <= 0 ||
        n > PY_SSIZE_T_MAX / (Py_ssize_t)sizeof(float) / channels / hw) {
        PyErr_SetString(PyExc_ValueError,
                        "n must be >= 0, channels and hw > 0, n * channels * hw addressable");
        return NULL;
    }
    const Py_ssize_t elements = n * channels * hw;
    Py_buffer x, out;
    if (PyObject_GetBuffer(x_obj, &x, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
    if (PyObject_GetBuffer(out_obj, &out, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE | PyBUF_FORMAT) <
        0) {
        PyBuffer_Release(&x);
        return NULL;
    }
    const char *problem = NULL;
    if (!has_items(&x, "f", 4) || !has_items(&out, "B", 1) || !aligned(&x, sizeof(float)))
        problem = "x must be aligned float32 and out uint8";
    else if (x.len != elements * (Py_ssize_t)sizeof(float) || out.len != elements)
        problem = "buffer sizes do not match n * channels * hw";
    if (problem == NULL && elements >= RELEASE_GIL_ELEMENTS) {
        Py_BEGIN_ALLOW_THREADS
        pixels_of(x.buf, n, channels, hw, out.buf);
        Py_END_ALLOW_THREADS
    } else if (problem == NULL) {
        pixels_of(x.buf, n, channels, hw, out.buf);
    }
    PyBuffer_Release(&x);
    PyBuffer_Release(&out);
    if (problem != NULL) {
        PyErr_SetString(PyExc_ValueError, problem);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"draw", draw, METH_VARARGS,
     "draw(p, seeds, subsequence, n, bits, keep, known): bits = u <= p per image, then the mask."},
    {"threshold", threshold, METH_VARARGS,
     "threshold(p, batch, n, bits, keep, known): bits = p > 0.5, then the mask."},
    {"pixels", pixels, METH_VARARGS,
     "pixels(x, n, channels, hw, out): float NCHW -> uint8 NHWC, clip(round((x + 1) * 127.5))."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_host", "The host loop's draws and pixels in compiled code.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__host(void) { return PyModule_Create(&module); }
