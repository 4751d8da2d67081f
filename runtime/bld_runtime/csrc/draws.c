/* bld_runtime._draws: the Python runtime's draws in compiled code (bld_runtime/draws.py).
 *
 * The host loop (backends/cpu.py) calls one of these per step for the whole batch: the Philox
 * words are made on the fly in bld_draw_host.h's 64-lane SIMD rounds, where numpy makes them
 * in passes over uint64 arrays in memory (0.9 ms of a 37 ms batch-16 generation of the digits
 * model). The arrays arrive through the buffer protocol, C-contiguous, and bld_runtime.draws
 * checks their dtypes and shapes; here only their byte sizes are checked against each other.
 * The GIL is released while drawing.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "bld_draw_host.h"

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
    if (PyObject_GetBuffer(p, &v->p, PyBUF_C_CONTIGUOUS) < 0) return -1;
    if (PyObject_GetBuffer(bits, &v->bits, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&v->p);
        return -1;
    }
    v->masked = keep != Py_None;
    if (v->masked) {
        if (PyObject_GetBuffer(keep, &v->keep, PyBUF_C_CONTIGUOUS) < 0) {
            PyBuffer_Release(&v->p);
            PyBuffer_Release(&v->bits);
            v->masked = 0;
            return -1;
        }
        if (PyObject_GetBuffer(known, &v->known, PyBUF_C_CONTIGUOUS) < 0) {
            PyBuffer_Release(&v->keep);
            PyBuffer_Release(&v->p);
            PyBuffer_Release(&v->bits);
            v->masked = 0;
            return -1;
        }
    }
    Py_ssize_t floats = elements * (Py_ssize_t)sizeof(float);
    if (v->p.len != floats || v->bits.len != floats ||
        (v->masked && (v->keep.len != elements || v->known.len != floats))) {
        release(v);
        PyErr_SetString(PyExc_ValueError, "buffer sizes do not match batch * n");
        return -1;
    }
    return 0;
}

static PyObject *draw(PyObject *self, PyObject *args) {
    PyObject *p, *seeds_obj, *bits, *keep, *known;
    unsigned long long subsequence;
    Py_ssize_t n;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOKnOOO:draw", &p, &seeds_obj, &subsequence, &n, &bits, &keep,
                          &known))
        return NULL;
    Py_buffer seeds;
    if (n <= 0) {
        PyErr_SetString(PyExc_ValueError, "n must be > 0");
        return NULL;
    }
    if (PyObject_GetBuffer(seeds_obj, &seeds, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    Py_ssize_t batch = seeds.len / (Py_ssize_t)sizeof(bld_u64);
    Buffers v;
    if (seeds.len % (Py_ssize_t)sizeof(bld_u64) || take(&v, p, bits, keep, known, batch * n) < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "seeds must be uint64");
        PyBuffer_Release(&seeds);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    draw_batch((const float *)v.p.buf, (const bld_u64 *)seeds.buf, subsequence, batch,
               (bld_u64)n, (float *)v.bits.buf, v.masked ? (const unsigned char *)v.keep.buf : NULL,
               v.masked ? (const float *)v.known.buf : NULL);
    Py_END_ALLOW_THREADS
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
    if (batch < 0 || n <= 0) {
        PyErr_SetString(PyExc_ValueError, "batch must be >= 0 and n > 0");
        return NULL;
    }
    Buffers v;
    if (take(&v, p, bits, keep, known, batch * n) < 0) return NULL;
    Py_BEGIN_ALLOW_THREADS
    threshold_batch((const float *)v.p.buf, batch, (bld_u64)n, (float *)v.bits.buf,
                    v.masked ? (const unsigned char *)v.keep.buf : NULL,
                    v.masked ? (const float *)v.known.buf : NULL);
    Py_END_ALLOW_THREADS
    release(&v);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"draw", draw, METH_VARARGS,
     "draw(p, seeds, subsequence, n, bits, keep, known): bits = u <= p per image, then the mask."},
    {"threshold", threshold, METH_VARARGS,
     "threshold(p, batch, n, bits, keep, known): bits = p > 0.5, then the mask."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_draws", "The contract's draws in compiled code (bld_runtime.draws).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__draws(void) { return PyModule_Create(&module); }
