/*
 * view.h - the one place where C meets framework tensors: DLPack views.
 *
 * Opens a view of a tensor's memory through DLPack: first through the C
 * exchange table a framework publishes on its tensor type
 * (`__dlpack_c_exchange_api__`, filled without allocating), else through the
 * capsule protocol (`obj.__dlpack__()`).  Also the checks shared by every
 * caller: the kernel's storage type of a view, and whether a view is a
 * [B, T, D] hidden state the kernel may write in place.  Nothing else in the
 * C core knows that torch exists.
 */
#ifndef AUTOSTEER_VIEW_H
#define AUTOSTEER_VIEW_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <string.h>

#include "dlpack.h"
#include "kernel.h"

/* Per-module cache of the exchange table, kept in the module state. */
typedef struct {
    PyObject *type;                    /* strong ref to the type it came from */
    const as_dl_exchange_api *api;     /* NULL: that type has no usable table */
} as_dl_cache;

typedef struct {
    as_dl_tensor t;
    as_dl_managed *legacy;             /* capsule path: released on close */
} as_view;

enum { AS_VIA_AUTO = 0, AS_VIA_CAPSULE = 1 };

static inline const as_dl_exchange_api *
as_view_exchange_api(as_dl_cache *cache, PyObject *obj)
{
    PyObject *tp = (PyObject *)Py_TYPE(obj);
    if (cache->type == tp)
        return cache->api;
    const as_dl_exchange_api *api = NULL;
    PyObject *cap = PyObject_GetAttrString(tp, "__dlpack_c_exchange_api__");
    if (cap == NULL) {
        PyErr_Clear();
    }
    else {
        if (PyCapsule_IsValid(cap, "dlpack_exchange_api")) {
            api = (const as_dl_exchange_api *)PyCapsule_GetPointer(cap, "dlpack_exchange_api");
            if (api != NULL && (api->header.version.major != 1 ||
                                api->dltensor_from_py_object_no_sync == NULL))
                api = NULL;
        }
        Py_DECREF(cap);
        if (PyErr_Occurred())
            PyErr_Clear();
    }
    Py_XSETREF(cache->type, Py_NewRef(tp));
    cache->api = api;
    return api;
}

/* Open a view; returns 0, or -1 with an exception set.  A view that opened
 * must be closed with as_view_close. */
static inline int
as_view_open(as_dl_cache *cache, PyObject *obj, int via, as_view *v)
{
    memset(v, 0, sizeof(*v));
    if (via == AS_VIA_AUTO) {
        const as_dl_exchange_api *api = as_view_exchange_api(cache, obj);
        if (api != NULL) {
            if (api->dltensor_from_py_object_no_sync((void *)obj, &v->t) != 0) {
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_BufferError, "DLPack exchange failed");
                return -1;
            }
            return 0;
        }
    }
    PyObject *cap = PyObject_CallMethod(obj, "__dlpack__", NULL);
    if (cap == NULL)
        return -1;
    as_dl_managed *m = (as_dl_managed *)PyCapsule_GetPointer(cap, "dltensor");
    if (m == NULL) {
        Py_DECREF(cap);
        return -1;
    }
    /* take ownership: the capsule must not free it any more */
    if (PyCapsule_SetName(cap, "used_dltensor") != 0) {
        Py_DECREF(cap);
        return -1;
    }
    Py_DECREF(cap);
    v->legacy = m;
    v->t = m->dl_tensor;
    return 0;
}

/* Idempotent: closing a closed (or zeroed) view does nothing. */
static inline void
as_view_close(as_view *v)
{
    if (v->legacy != NULL && v->legacy->deleter != NULL)
        v->legacy->deleter(v->legacy);
    v->legacy = NULL;
}

static inline void *
as_view_data(const as_view *v)
{
    return (char *)v->t.data + v->t.byte_offset;
}

/* Element stride of dimension `i` (compact layout when strides are absent). */
static inline int64_t
as_view_stride(const as_view *v, int i)
{
    if (v->t.strides != NULL)
        return v->t.strides[i];
    int64_t s = 1;
    for (int k = v->t.ndim - 1; k > i; k--)
        s *= v->t.shape[k];
    return s;
}

static inline int
as_view_is(const as_view *v, int code, int bits)
{
    return v->t.dtype.code == code && v->t.dtype.bits == bits && v->t.dtype.lanes == 1;
}

/* A contiguous CPU float32 matrix of `rows` x `cols` (-1: any). */
static inline int
as_view_f32_matrix(const as_view *v, int64_t rows, int64_t cols)
{
    return v->t.device.device_type == AS_DL_CPU && v->t.ndim == 2 && as_view_is(v, AS_DL_FLOAT, 32) &&
           (rows < 0 || v->t.shape[0] == rows) && (cols < 0 || v->t.shape[1] == cols) &&
           (v->t.shape[1] <= 1 || as_view_stride(v, 1) == 1) &&
           (v->t.shape[0] <= 1 || as_view_stride(v, 0) == v->t.shape[1]);
}

/* The kernel's storage type of a view; 0, or -1 when unsupported. */
static inline int
as_view_dtype(const as_view *v, as_dtype *out)
{
    if (as_view_is(v, AS_DL_FLOAT, 32))
        *out = AS_F32;
    else if (as_view_is(v, AS_DL_FLOAT, 16))
        *out = AS_F16;
    else if (as_view_is(v, AS_DL_BFLOAT, 16))
        *out = AS_BF16;
    else
        return -1;
    return 0;
}

/* Largest finite value of the view's element type (DBL_MAX for float64 and
 * for types that are not floating point). */
static inline double
as_view_storage_max(const as_view *v)
{
    as_dtype dt;
    if (as_view_dtype(v, &dt) == 0)
        return as_dtype_max(dt);
    return DBL_MAX;
}

/* The name of the view's element type for messages ("float16", ...). */
static inline const char *
as_view_storage_name(const as_view *v)
{
    if (as_view_is(v, AS_DL_FLOAT, 32))
        return "float32";
    if (as_view_is(v, AS_DL_FLOAT, 16))
        return "float16";
    if (as_view_is(v, AS_DL_BFLOAT, 16))
        return "bfloat16";
    if (as_view_is(v, AS_DL_FLOAT, 64))
        return "float64";
    return "non-float";
}

/* A [B, T, D] CPU view the kernel can write: hidden dimension contiguous,
 * non-negative strides, no two elements sharing memory.  Fills `h` and
 * returns 1, else 0. */
static inline int
as_view_hidden(const as_view *v, as_hidden *h)
{
    as_dtype dt;
    if (v->t.device.device_type != AS_DL_CPU || v->t.ndim != 3 || as_view_dtype(v, &dt) != 0)
        return 0;
    int64_t B = v->t.shape[0], T = v->t.shape[1], D = v->t.shape[2];
    int64_t sb = as_view_stride(v, 0), st = as_view_stride(v, 1);
    /* every element its own memory: an expanded or overlapping view would be
     * written several times (torch refuses in-place ops on those too) */
    if ((D > 1 && as_view_stride(v, 2) != 1) || sb < 0 || st < 0)
        return 0;
    /* order the two outer dimensions by stride (batch-major or, after a
     * transpose, sequence-major); then rows must not overlap */
    int64_t n_in = T, s_in = st, n_out = B, s_out = sb;
    if (sb < st || (sb == st && B < T)) {
        n_in = B; s_in = sb; n_out = T; s_out = st;
    }
    if ((n_in > 1 && s_in < D) || (n_out > 1 && s_out < (n_in - 1) * s_in + D))
        return 0;
    *h = (as_hidden){as_view_data(v), dt, B, T, D, sb, st};
    return 1;
}

#endif /* AUTOSTEER_VIEW_H */
