/*
 * tensor.h - the one place where C meets framework tensors.
 *
 * Opens a view of a tensor's memory through DLPack: first through the C
 * exchange table a framework publishes on its tensor type
 * (`__dlpack_c_exchange_api__`, filled without allocating), else through the
 * capsule protocol (`obj.__dlpack__()`).  Nothing else in the C core knows
 * that torch exists.
 */
#ifndef AUTOSTEER_TENSOR_H
#define AUTOSTEER_TENSOR_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "dlpack.h"

/* Per-module cache of the exchange table, kept in the module state. */
typedef struct {
    PyObject *type;                    /* strong ref to the type it came from */
    const as_dl_exchange_api *api;     /* NULL: that type has no usable table */
} as_dl_cache;

typedef struct {
    as_dl_tensor t;
    as_dl_managed *legacy;             /* capsule path: released on close */
} as_tensor_view;

enum { AS_VIA_AUTO = 0, AS_VIA_CAPSULE = 1 };

static const as_dl_exchange_api *
as_tensor_exchange_api(as_dl_cache *cache, PyObject *obj)
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

/* Open a view; returns 0, or -1 with an exception set. */
static int
as_tensor_open(as_dl_cache *cache, PyObject *obj, int via, as_tensor_view *v)
{
    memset(v, 0, sizeof(*v));
    if (via == AS_VIA_AUTO) {
        const as_dl_exchange_api *api = as_tensor_exchange_api(cache, obj);
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

static void
as_tensor_close(as_tensor_view *v)
{
    if (v->legacy != NULL && v->legacy->deleter != NULL)
        v->legacy->deleter(v->legacy);
    v->legacy = NULL;
}

static inline void *
as_tensor_data(const as_tensor_view *v)
{
    return (char *)v->t.data + v->t.byte_offset;
}

/* Element stride of dimension `i` (compact layout when strides are absent). */
static inline int64_t
as_tensor_stride(const as_tensor_view *v, int i)
{
    if (v->t.strides != NULL)
        return v->t.strides[i];
    int64_t s = 1;
    for (int k = v->t.ndim - 1; k > i; k--)
        s *= v->t.shape[k];
    return s;
}

#endif /* AUTOSTEER_TENSOR_H */
