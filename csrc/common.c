/*
 * common.c - the helpers every file of autosteer._C shares: describing a
 * value for an error message, reading kwargs, shapes and attributes, real
 * numbers, the forward-hook argument unpacking and the pickle refusal of the
 * hook types.  Declared in module.h; depends on nothing but CPython and the
 * module state's layout, so the type files and module.c call it, never the
 * other way round.
 */
#include "module.h"

#include <math.h>
#include <string.h>

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
                 "cannot pickle or copy.copy %s: it is an AutoSteer hook on a steered model. "
                 "Remove the steering first with reset_all() on the Steer that added it (for "
                 "steering no Steer owns, e.g. on a copy.deepcopy of a steered model: "
                 "Steer(model).reset_all()), or save model.state_dict() instead",
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
