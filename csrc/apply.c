/*
 * apply.c - the fused kernel as module functions: apply_delta (run the kernel
 * of kernel.h in place on a CPU tensor, for tests and benchmarks) and
 * has_exchange_api.  module.c lists them in the module's method table.
 */
#include "module.h"

#include <string.h>

#include "kernel.h"

const char as_apply_delta_doc[] = PyDoc_STR(
"apply_delta(hidden, directions, weights, last_index=None, via='auto', rows=None)\n--\n\n"
"Run the fused kernel in place on a CPU tensor hidden[B, T, D] (float32, float16\n"
"or bfloat16; contiguous hidden dimension; not requiring grad).  directions:\n"
"float32 [J, D]; weights: float32 [J] (all rows), [B, J] (one row each) or, with\n"
"rows (int64 [B], values in [0, G)), [G, J] (row b uses weights[rows[b]]);\n"
"last_index: int64 [B] or None for T - 1.  via='capsule' forces the DLPack\n"
"capsule protocol.");

PyObject *
as_apply_delta(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"hidden", "directions", "weights", "last_index", "via", "rows", NULL};
    PyObject *hid, *dirs, *weights, *last = Py_None, *rows = Py_None;
    const char *via_s = "auto";
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO|OsO:apply_delta", kwlist, &hid, &dirs,
                                     &weights, &last, &via_s, &rows))
        return NULL;
    int via;
    if (strcmp(via_s, "auto") == 0)
        via = AS_VIA_AUTO;
    else if (strcmp(via_s, "capsule") == 0)
        via = AS_VIA_CAPSULE;
    else {
        PyErr_Format(PyExc_ValueError, "via must be 'auto' or 'capsule', got '%s'", via_s);
        return NULL;
    }
    as_state *st = as_state_of_module(module);
    as_view vh, vd, vw, vl, vr;
    int oh = 0, od = 0, ow = 0, ol = 0, orr = 0;
    PyObject *res = NULL;
    float *scratch = NULL;
    /* the exchange table exports tensors that require grad too: an in-place
     * write would corrupt autograd, so refuse them as the capsule does */
    int grad = as_attr_true(hid, st->s_requires_grad);
    if (grad < 0)
        PyErr_Clear();
    if (grad > 0) {
        PyErr_SetString(PyExc_ValueError, "hidden must not require grad (detach it first)");
        goto done;
    }
    if (as_view_open(&st->dl, hid, via, &vh) != 0)
        goto done;
    oh = 1;
    if (as_view_open(&st->dl, dirs, via, &vd) != 0)
        goto done;
    od = 1;
    if (as_view_open(&st->dl, weights, via, &vw) != 0)
        goto done;
    ow = 1;
    if (last != Py_None) {
        if (as_view_open(&st->dl, last, via, &vl) != 0)
            goto done;
        ol = 1;
    }
    if (rows != Py_None) {
        if (as_view_open(&st->dl, rows, via, &vr) != 0)
            goto done;
        orr = 1;
    }
    as_dtype dt;
    if (as_view_dtype(&vh, &dt) != 0) {
        PyErr_SetString(PyExc_TypeError, "hidden must be float32, float16 or bfloat16");
        goto done;
    }
    if (vh.t.device.device_type != AS_DL_CPU || vd.t.device.device_type != AS_DL_CPU ||
        vw.t.device.device_type != AS_DL_CPU || (ol && vl.t.device.device_type != AS_DL_CPU) ||
        (orr && vr.t.device.device_type != AS_DL_CPU)) {
        PyErr_SetString(PyExc_ValueError, "apply_delta runs on CPU tensors only");
        goto done;
    }
    as_hidden h;
    if (!as_view_hidden(&vh, &h)) {
        PyErr_SetString(PyExc_ValueError,
                        "hidden must be 3-D [B, T, D] with a contiguous hidden dimension "
                        "and no overlapping elements");
        goto done;
    }
    int64_t B = vh.t.shape[0], T = vh.t.shape[1], D = vh.t.shape[2];
    if (!as_view_f32_matrix(&vd, -1, D)) {
        PyErr_Format(PyExc_ValueError, "directions must be a contiguous float32 [J, %lld] tensor",
                     (long long)D);
        goto done;
    }
    int64_t J = vd.t.shape[0];
    int64_t wstride;
    const int64_t *w_index = NULL;
    if (!as_view_is(&vw, AS_DL_FLOAT, 32)) {
        PyErr_SetString(PyExc_ValueError, "weights must be float32");
        goto done;
    }
    if (orr) {
        if (vr.t.ndim != 1 || vr.t.shape[0] != B || !as_view_is(&vr, AS_DL_INT, 64) ||
            (B > 1 && as_view_stride(&vr, 0) != 1)) {
            PyErr_Format(PyExc_ValueError, "rows must be a contiguous int64 [%lld] tensor",
                         (long long)B);
            goto done;
        }
        if (!as_view_f32_matrix(&vw, -1, J)) {
            PyErr_Format(PyExc_ValueError, "with rows, weights must be a contiguous float32 [G, %lld] tensor",
                         (long long)J);
            goto done;
        }
        w_index = (const int64_t *)as_view_data(&vr);
        for (int64_t b = 0; b < B; b++) {
            if (w_index[b] < 0 || w_index[b] >= vw.t.shape[0]) {
                PyErr_Format(PyExc_IndexError, "rows[%lld] is %lld, outside [0, %lld)", (long long)b,
                             (long long)w_index[b], (long long)vw.t.shape[0]);
                goto done;
            }
        }
        wstride = J;
    }
    else if (vw.t.ndim == 1 && vw.t.shape[0] == J && (J <= 1 || as_view_stride(&vw, 0) == 1))
        wstride = 0;
    else if (as_view_f32_matrix(&vw, B, J))
        wstride = J;
    else {
        PyErr_Format(PyExc_ValueError,
                     "weights must be a contiguous float32 [%lld] or [%lld, %lld] tensor",
                     (long long)J, (long long)B, (long long)J);
        goto done;
    }
    if (ol && (vl.t.ndim != 1 || vl.t.shape[0] != B || !as_view_is(&vl, AS_DL_INT, 64) ||
               (B > 1 && as_view_stride(&vl, 0) != 1))) {
        PyErr_Format(PyExc_ValueError, "last_index must be a contiguous int64 [%lld] tensor",
                     (long long)B);
        goto done;
    }
    scratch = PyMem_Malloc((size_t)D * sizeof(float) + 1);
    if (scratch == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    int krc;
    Py_BEGIN_ALLOW_THREADS
    krc = as_kernel_apply(&h, (const float *)as_view_data(&vd), J,
                          (const float *)as_view_data(&vw), wstride, w_index,
                          ol ? (const int64_t *)as_view_data(&vl) : NULL, scratch);
    Py_END_ALLOW_THREADS
    if (krc == -2) {
        PyErr_SetString(PyExc_ValueError, "the steering delta of a row is not finite in the storage type");
        goto done;
    }
    if (krc != 0) {
        PyErr_Format(PyExc_IndexError, "last_index values must be in [0, %lld)", (long long)T);
        goto done;
    }
    res = Py_NewRef(Py_None);
done:
    PyMem_Free(scratch);
    if (orr) as_view_close(&vr);
    if (ol) as_view_close(&vl);
    if (ow) as_view_close(&vw);
    if (od) as_view_close(&vd);
    if (oh) as_view_close(&vh);
    return res;
}

const char as_has_exchange_api_doc[] = PyDoc_STR(
"has_exchange_api(tensor, /)\n--\n\n"
"True when the tensor's type publishes a usable DLPack C exchange table.");

PyObject *
as_has_exchange_api(PyObject *module, PyObject *obj)
{
    return PyBool_FromLong(as_view_exchange_api(&as_state_of_module(module)->dl, obj) != NULL);
}
