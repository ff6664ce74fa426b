/*
 * module.c - autosteer._C: module init and state, the exception types, the
 * helpers every file shares, and the module functions apply_delta,
 * has_exchange_api and schedule_kinds.
 *
 * Multi-phase init; all state lives in the module state (module.h); every
 * type is a heap type.  The module imports nothing from the autosteer
 * package: autosteer/errors.py re-exports the exceptions created here.
 */
#include "module.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernel.h"

/* ================================================================== */
/* shared helpers                                                      */
/* ================================================================== */

as_state *
as_state_of_type(PyTypeObject *tp)
{
    PyObject *mod = PyType_GetModuleByDef(tp, &as_module_def);
    return mod == NULL ? NULL : as_state_of_module(mod);
}

void
as_repr_double(double v, char *buf, size_t n)
{
    char *s = PyOS_double_to_string(v, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (s == NULL) {
        PyErr_Clear();
        PyOS_snprintf(buf, n, "%.17g", v);
        return;
    }
    PyOS_snprintf(buf, n, "%s", s);
    PyMem_Free(s);
}

/* The type name without its module ("float", "ndarray", "Tensor"). */
static const char *
as_short_type_name(PyObject *obj)
{
    const char *name = Py_TYPE(obj)->tp_name;
    const char *dot = strrchr(name, '.');
    return dot != NULL ? dot + 1 : name;
}

PyObject *
as_describe(PyObject *obj)
{
    PyObject *r = PyObject_Repr(obj), *res = NULL;
    if (r == NULL) {
        PyErr_Clear();
        return PyUnicode_FromFormat("%.100s object", Py_TYPE(obj)->tp_name);
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(r);
    if (n > 80) {
        PyObject *cut = PyUnicode_Substring(r, 0, 77);
        if (cut == NULL)
            goto done;
        res = PyUnicode_FromFormat("%s %U...", as_short_type_name(obj), cut);
        Py_DECREF(cut);
    }
    else {
        res = PyUnicode_FromFormat("%s %U", as_short_type_name(obj), r);
    }
done:
    Py_DECREF(r);
    return res;
}

PyObject *
as_kw(PyObject *kwargs, PyObject *key)
{
    if (kwargs == NULL || !PyDict_Check(kwargs))
        return NULL;
    PyObject *v = PyDict_GetItemWithError(kwargs, key);
    if (v == NULL)
        PyErr_Clear();
    return v == Py_None ? NULL : v;
}

int64_t
as_dim(as_state *st, PyObject *x, Py_ssize_t dim)
{
    int64_t out = -1;
    PyObject *shape = PyObject_GetAttr(x, st->s_shape);
    if (shape == NULL) {
        PyErr_Clear();
        return -1;
    }
    if (PyTuple_Check(shape) && PyTuple_GET_SIZE(shape) > dim) {
        out = PyLong_AsLongLong(PyTuple_GET_ITEM(shape, dim));
        if (out == -1 && PyErr_Occurred())
            PyErr_Clear();
    }
    Py_DECREF(shape);
    return out;
}

int
as_attr_true(PyObject *x, PyObject *attr)
{
    PyObject *v = PyObject_GetAttr(x, attr);
    if (v == NULL)
        return -1;
    int r = PyObject_IsTrue(v);
    Py_DECREF(v);
    return r;
}

PyObject *
as_deepcopy(PyObject *obj, PyObject *memo)
{
    PyObject *copy = PyImport_ImportModule("copy"), *res = NULL;
    if (copy == NULL)
        return NULL;
    PyObject *fn = PyObject_GetAttrString(copy, "deepcopy");
    if (fn != NULL) {
        res = PyObject_CallFunctionObjArgs(fn, obj, memo, NULL);
        Py_DECREF(fn);
    }
    Py_DECREF(copy);
    return res;
}

int
as_real_value(as_state *st, PyObject *obj, double *out)
{
    if (PyBool_Check(obj) || PyComplex_Check(obj))
        return 0;
    if (!PyFloat_Check(obj) && !PyLong_Check(obj)) {
        /* NumPy scalars register with numbers.Real (np.bool_ and the complex
         * types do not) */
        int real = PyObject_IsInstance(obj, st->numbers_real);
        if (real <= 0)
            return real;
    }
    double v = PyFloat_AsDouble(obj);
    if (v == -1.0 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError))
            return -1;
        PyErr_Clear();
        v = HUGE_VAL;     /* an int beyond the double range: not finite */
    }
    *out = v;
    return 1;
}

PyObject *
as_refuse_pickle(PyObject *self, PyObject *protocol)
{
    as_state *st = as_state_of_type(Py_TYPE(self));
    if (st == NULL)
        return NULL;
    PyErr_Format(st->steer_state_error,
                 "cannot pickle or copy %s: it is an AutoSteer hook on a steered model. "
                 "Call Steer.reset_all() first, or save model.state_dict() instead "
                 "(copy.deepcopy(model) keeps the steering)",
                 Py_TYPE(self)->tp_name);
    return NULL;
}

int
as_hook_args(PyObject *args, PyObject *kwds, const char *who, PyObject **module,
             PyObject **fargs, PyObject **fkwargs)
{
    *fkwargs = NULL;
    if (kwds != NULL && PyDict_GET_SIZE(kwds) != 0) {
        PyErr_Format(PyExc_TypeError, "%s() takes no keyword arguments", who);
        return -1;
    }
    if (!PyArg_UnpackTuple(args, who, 2, 3, module, fargs, fkwargs))
        return -1;
    if (*fkwargs == Py_None)
        *fkwargs = NULL;
    if (*fkwargs != NULL && !PyDict_Check(*fkwargs)) {
        PyErr_Format(PyExc_TypeError, "%s expects the forward's kwargs as a dict", who);
        return -1;
    }
    return 0;
}

PyObject *
as_name_arg(PyObject *obj, const char *who, const char *arg)
{
    if (!PyUnicode_Check(obj) || PyUnicode_GET_LENGTH(obj) == 0) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be a non-empty str, got %.100s", who, arg,
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    PyObject *s = Py_NewRef(obj);
    PyUnicode_InternInPlace(&s);
    return s;
}

/* ================================================================== */
/* module functions                                                    */
/* ================================================================== */

PyDoc_STRVAR(apply_delta_doc,
"apply_delta(hidden, directions, weights, last_index=None, via='auto', rows=None)\n--\n\n"
"Run the fused kernel in place on a CPU tensor hidden[B, T, D] (float32, float16\n"
"or bfloat16; contiguous hidden dimension; not requiring grad).  directions:\n"
"float32 [J, D]; weights: float32 [J] (all rows), [B, J] (one row each) or, with\n"
"rows (int64 [B], values in [0, G)), [G, J] (row b uses weights[rows[b]]);\n"
"last_index: int64 [B] or None for T - 1.  via='capsule' forces the DLPack\n"
"capsule protocol.");

static PyObject *
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

PyDoc_STRVAR(has_exchange_api_doc,
"has_exchange_api(tensor, /)\n--\n\n"
"True when the tensor's type publishes a usable DLPack C exchange table.");

static PyObject *
as_has_exchange_api(PyObject *module, PyObject *obj)
{
    return PyBool_FromLong(as_view_exchange_api(&as_state_of_module(module)->dl, obj) != NULL);
}

PyDoc_STRVAR(schedule_kinds_doc,
"schedule_kinds($module, /)\n--\n\n"
"The schedule table of csrc/schedule.h as a tuple of plain dicts, one per kind:\n"
"{\"type\", \"class_name\", \"doc\", \"params\": ({\"name\", \"kind\": \"int\" | \"float\",\n"
"\"required\", \"default\" (None when required), \"domain\": {\"min\", \"max\", \"min_open\",\n"
"\"max_open\"} (None: unbounded), \"search_range\": (lo, hi), \"doc\"}, ...),\n"
"\"derived\": ({\"name\", \"doc\"}, ...)}.");

static PyObject *
as_schedule_kinds(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return as_sched_kinds(as_state_of_module(module));
}

static PyMethodDef as_methods[] = {
    {"apply_delta", (PyCFunction)(void (*)(void))as_apply_delta, METH_VARARGS | METH_KEYWORDS,
     apply_delta_doc},
    {"has_exchange_api", as_has_exchange_api, METH_O, has_exchange_api_doc},
    {"schedule_kinds", as_schedule_kinds, METH_NOARGS, schedule_kinds_doc},
    {NULL, NULL, 0, NULL},
};

/* ================================================================== */
/* module init                                                         */
/* ================================================================== */

/* A new exception type of module autosteer.errors; also set on `m`. */
static int
as_add_exception(PyObject *m, PyObject **slot, const char *name, const char *doc, PyObject *bases)
{
    char qualified[96];
    PyOS_snprintf(qualified, sizeof qualified, "autosteer.errors.%s", name);
    *slot = PyErr_NewExceptionWithDoc(qualified, doc, bases, NULL);
    if (*slot == NULL)
        return -1;
    return PyModule_AddObjectRef(m, name, *slot);
}

static int
as_add_exceptions(PyObject *m, as_state *st)
{
    int rc = -1;
    PyObject *value_bases = NULL, *type_bases = NULL;
    if (as_add_exception(m, &st->error, "AutoSteerError",
                         "Base class of every error AutoSteer raises on purpose.", NULL) < 0)
        goto done;
    value_bases = PyTuple_Pack(2, st->error, PyExc_ValueError);
    type_bases = PyTuple_Pack(2, st->error, PyExc_TypeError);
    if (value_bases == NULL || type_bases == NULL)
        goto done;
    if (as_add_exception(m, &st->invalid_argument_error, "InvalidArgumentError",
                         "An argument has the wrong value (empty text, non-finite coefficient, ...).",
                         value_bases) < 0 ||
        as_add_exception(m, &st->schedule_error, "ScheduleError",
                         "A coefficient schedule got parameters outside their domain, or a bad "
                         "step or dict.",
                         value_bases) < 0 ||
        as_add_exception(m, &st->steer_state_error, "SteerStateError",
                         "An object that holds steering state cannot do what was asked "
                         "(pickle or copy a hook: call Steer.reset_all() first).",
                         type_bases) < 0)
        goto done;
    rc = 0;
done:
    Py_XDECREF(value_bases);
    Py_XDECREF(type_bases);
    return rc;
}

static int
as_import_numbers(as_state *st)
{
    PyObject *numbers = PyImport_ImportModule("numbers");
    if (numbers == NULL)
        return -1;
    st->numbers_real = PyObject_GetAttrString(numbers, "Real");
    st->numbers_integral = st->numbers_real ? PyObject_GetAttrString(numbers, "Integral") : NULL;
    st->numbers_complex = st->numbers_integral ? PyObject_GetAttrString(numbers, "Complex") : NULL;
    Py_DECREF(numbers);
    return st->numbers_complex == NULL ? -1 : 0;
}

static int
as_intern(PyObject **slot, const char *s)
{
    *slot = PyUnicode_InternFromString(s);
    return *slot == NULL ? -1 : 0;
}

static int
as_exec(PyObject *m)
{
    as_state *st = as_state_of_module(m);
    if (as_add_exceptions(m, st) < 0 || as_import_numbers(st) < 0)
        return -1;
    if (as_intern(&st->s_requires_grad, "requires_grad") < 0 ||
        as_intern(&st->s_shape, "shape") < 0 ||
        as_intern(&st->s_data_ptr, "data_ptr") < 0)
        return -1;
    if (as_sched_add_types(m, st) < 0 || as_tracker_add_type(m, st) < 0 ||
        as_weights_add_type(m, st) < 0 || as_hook_add_type(m, st) < 0)
        return -1;
    PyObject *eps = PyFloat_FromDouble(AS_RMS_EPS);
    if (eps == NULL)
        return -1;
    int rc = PyModule_AddObjectRef(m, "RMS_EPS", eps);
    Py_DECREF(eps);
    return rc;
}

static int
as_traverse(PyObject *m, visitproc visit, void *arg)
{
    as_state *st = as_state_of_module(m);
    for (int k = 0; k < AS_SCHED_NKINDS; k++)
        Py_VISIT(st->sched_types[k]);
    Py_VISIT(st->tracker_type);
    Py_VISIT(st->weights_type);
    Py_VISIT(st->hook_type);
    Py_VISIT(st->error);
    Py_VISIT(st->invalid_argument_error);
    Py_VISIT(st->schedule_error);
    Py_VISIT(st->steer_state_error);
    Py_VISIT(st->numbers_real);
    Py_VISIT(st->numbers_integral);
    Py_VISIT(st->numbers_complex);
    Py_VISIT(st->dl.type);
    return 0;
}

static int
as_clear(PyObject *m)
{
    as_state *st = as_state_of_module(m);
    for (int k = 0; k < AS_SCHED_NKINDS; k++)
        Py_CLEAR(st->sched_types[k]);
    Py_CLEAR(st->tracker_type);
    Py_CLEAR(st->weights_type);
    Py_CLEAR(st->hook_type);
    Py_CLEAR(st->error);
    Py_CLEAR(st->invalid_argument_error);
    Py_CLEAR(st->schedule_error);
    Py_CLEAR(st->steer_state_error);
    Py_CLEAR(st->numbers_real);
    Py_CLEAR(st->numbers_integral);
    Py_CLEAR(st->numbers_complex);
    Py_CLEAR(st->s_requires_grad);
    Py_CLEAR(st->s_shape);
    Py_CLEAR(st->s_data_ptr);
    Py_CLEAR(st->dl.type);
    st->dl.api = NULL;
    return 0;
}

static void
as_free(void *m)
{
    (void)as_clear((PyObject *)m);
}

static PyModuleDef_Slot as_slots[] = {
    {Py_mod_exec, as_exec},
    {0, NULL},
};

PyDoc_STRVAR(as_module_doc,
"AutoSteer's C core: schedules, the fused steering kernel, the step tracker, the\n"
"per-layer weights and the CPU forward hook.  Private: use the autosteer package.");

struct PyModuleDef as_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "autosteer._C",
    .m_doc = as_module_doc,
    .m_size = sizeof(as_state),
    .m_methods = as_methods,
    .m_slots = as_slots,
    .m_traverse = as_traverse,
    .m_clear = as_clear,
    .m_free = as_free,
};

PyMODINIT_FUNC
PyInit__C(void)
{
    return PyModuleDef_Init(&as_module_def);
}
