/*
 * schedule_type.c - one Python type per row of schedule.h's table.
 *
 * Every schedule type (DecaySchedule, CosineSchedule, WarmupSchedule, ...)
 * is built by the same code from its row: the constructor parses positional
 * and keyword arguments by the parameter list, the docstring (with a
 * signature line, so inspect.signature works) and one getter per parameter
 * and derived property are generated, and repr / to_dict / from_dict /
 * equality / hash / pickling are generic.  Callable on an int step or an
 * array of int steps (vectorised in C with the GIL released).
 */
#include "module.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The NumPy C API is used by this file only (its table stays static here). */
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>

typedef struct {
    PyObject_HEAD
    as_sched s;
} ScheduleObject;

#define AS_SCHED(o) (&((ScheduleObject *)(o))->s)

/* The row of `type`, one of our schedule types or a subclass; -1 if none. */
static int
as_sched_kind_of_type(as_state *st, PyTypeObject *type)
{
    for (int k = 0; k < AS_SCHED_NKINDS; k++)
        if (st->sched_types[k] != NULL && PyType_IsSubtype(type, st->sched_types[k]))
            return k;
    return -1;
}

const as_sched *
as_sched_exact(as_state *st, PyObject *obj)
{
    PyTypeObject *tp = Py_TYPE(obj);
    for (int k = 0; k < AS_SCHED_NKINDS; k++)
        if (tp == st->sched_types[k])
            return AS_SCHED(obj);
    return NULL;
}

/* ================================================================== */
/* construction                                                        */
/* ================================================================== */

static PyObject *as_sched_value_object(const as_sched_param *p, as_sched_value v);

/* "rate=0.9, min_multiplier=0.1, times_restart=0" */
static PyObject *
as_sched_format_args(const as_sched_kind *k, const as_sched_value *v)
{
    PyObject *parts = PyList_New(0), *sep = NULL, *res = NULL;
    if (parts == NULL)
        return NULL;
    for (int i = 0; i < as_sched_nparams(k); i++) {
        char num[48];
        if (k->params[i].type == AS_PARAM_INT)
            PyOS_snprintf(num, sizeof num, "%lld", (long long)v[i].i);
        else
            as_repr_double(v[i].f, num, sizeof num);
        PyObject *s = PyUnicode_FromFormat("%s=%s", k->params[i].name, num);
        if (s == NULL || PyList_Append(parts, s) != 0) {
            Py_XDECREF(s);
            goto done;
        }
        Py_DECREF(s);
    }
    sep = PyUnicode_FromString(", ");
    if (sep != NULL)
        res = PyUnicode_Join(sep, parts);
done:
    Py_XDECREF(sep);
    Py_DECREF(parts);
    return res;
}

/* ScheduleError "<Class>: <param> must be <expected>, got <type value><why>". */
static void
as_sched_bad_value(as_state *st, const as_sched_kind *k, int i, PyObject *obj, const char *why)
{
    char expected[128];
    as_param_expected(&k->params[i], expected, sizeof expected);
    PyObject *got = as_describe(obj);
    if (got == NULL)
        return;
    PyErr_Format(st->schedule_error, "%s: %s must be %s, got %U%s", k->class_name,
                 k->params[i].name, expected, got, why);
    Py_DECREF(got);
}

/* Convert one argument to its parameter's C type; -1 with ScheduleError. */
static int
as_sched_parse_value(as_state *st, const as_sched_kind *k, int i, PyObject *obj, as_sched_value *out)
{
    const as_sched_param *p = &k->params[i];
    if (p->type == AS_PARAM_INT) {
        int ok = 0;
        if (!PyBool_Check(obj)) {
            ok = PyLong_Check(obj) ? 1 : PyObject_IsInstance(obj, st->numbers_integral);
            if (ok < 0)
                return -1;
        }
        if (!ok) {
            as_sched_bad_value(st, k, i, obj, "");
            return -1;
        }
        PyObject *idx = PyNumber_Index(obj);
        if (idx == NULL)
            return -1;
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(idx, &overflow);
        Py_DECREF(idx);
        if (v == -1 && PyErr_Occurred())
            return -1;
        if (overflow) {
            as_sched_bad_value(st, k, i, obj, " (outside the int64 range)");
            return -1;
        }
        out->i = (int64_t)v;
        return 0;
    }
    double v;
    int r = as_real_value(st, obj, &v);
    if (r < 0)
        return -1;
    if (r == 0) {
        as_sched_bad_value(st, k, i, obj, " (a real number is expected)");
        return -1;
    }
    out->f = v;
    return 0;
}

/* Collect positional and keyword arguments by the parameter list; missing
 * optional parameters are left NULL.  -1 with ScheduleError. */
static int
as_sched_collect(as_state *st, const as_sched_kind *k, PyObject *args, PyObject *kwds,
                 PyObject **given)
{
    int n = as_sched_nparams(k);
    Py_ssize_t nargs = PyTuple_GET_SIZE(args);
    if (nargs > n) {
        PyErr_Format(st->schedule_error, "%s() takes at most %d positional arguments, got %zd",
                     k->class_name, n, nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++)
        given[i] = PyTuple_GET_ITEM(args, i);
    if (kwds != NULL) {
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        while (PyDict_Next(kwds, &pos, &key, &value)) {
            const char *name = PyUnicode_Check(key) ? PyUnicode_AsUTF8(key) : NULL;
            if (name == NULL) {
                PyErr_Clear();
                PyErr_Format(st->schedule_error, "%s() keywords must be strings", k->class_name);
                return -1;
            }
            int i = as_sched_param_index(k, name);
            if (i < 0) {
                PyObject *names = PyList_New(0);
                if (names == NULL)
                    return -1;
                for (int j = 0; j < n; j++) {
                    PyObject *s = PyUnicode_FromString(k->params[j].name);
                    if (s == NULL || PyList_Append(names, s) != 0) {
                        Py_XDECREF(s);
                        Py_DECREF(names);
                        return -1;
                    }
                    Py_DECREF(s);
                }
                PyErr_Format(st->schedule_error,
                             "%s() got an unexpected argument %R (its parameters are %R)",
                             k->class_name, key, names);
                Py_DECREF(names);
                return -1;
            }
            if (given[i] != NULL) {
                PyErr_Format(st->schedule_error, "%s() got multiple values for argument '%s'",
                             k->class_name, name);
                return -1;
            }
            given[i] = value;
        }
    }
    for (int i = 0; i < n; i++) {
        if (given[i] == NULL && k->params[i].required) {
            char expected[128];
            as_param_expected(&k->params[i], expected, sizeof expected);
            PyErr_Format(st->schedule_error, "%s() missing required argument '%s' (%s)",
                         k->class_name, k->params[i].name, expected);
            return -1;
        }
    }
    return 0;
}

static PyObject *
Schedule_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    as_state *st = as_state_of_type(type);
    if (st == NULL)
        return NULL;
    int kind = as_sched_kind_of_type(st, type);
    if (kind < 0) {
        PyErr_SetString(PyExc_TypeError, "not a schedule type");
        return NULL;
    }
    const as_sched_kind *k = &AS_SCHED_KINDS[kind];
    PyObject *given[AS_SCHED_MAX_PARAMS] = {NULL};
    as_sched_value values[AS_SCHED_MAX_PARAMS];
    if (as_sched_collect(st, k, args, kwds, given) < 0)
        return NULL;
    for (int i = 0; i < as_sched_nparams(k); i++) {
        if (given[i] == NULL) {
            if (k->params[i].type == AS_PARAM_INT)
                values[i].i = (int64_t)k->params[i].default_value;
            else
                values[i].f = k->params[i].default_value;
        }
        else if (as_sched_parse_value(st, k, i, given[i], &values[i]) < 0) {
            return NULL;
        }
    }
    as_sched s;
    int bad;
    const char *why = as_sched_init(&s, k, values, &bad);
    if (why != NULL) {
        if (bad >= 0) {
            /* a default outside its domain would be a bug of the row itself */
            PyObject *v = given[bad] ? Py_NewRef(given[bad])
                                     : as_sched_value_object(&k->params[bad], values[bad]);
            if (v != NULL)
                as_sched_bad_value(st, k, bad, v, given[bad] ? "" : " (the default)");
            Py_XDECREF(v);
        }
        else {
            PyObject *got = as_sched_format_args(k, values);
            if (got != NULL)
                PyErr_Format(st->schedule_error, "%s: %s (got %U)", k->class_name, why, got);
            Py_XDECREF(got);
        }
        return NULL;
    }
    ScheduleObject *self = (ScheduleObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->s = s;
    return (PyObject *)self;
}

static void
Schedule_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* ================================================================== */
/* evaluation                                                          */
/* ================================================================== */

/* An int step (bool and float refused); -1 with an exception on error. */
static int
as_step_from_object(PyObject *obj, int64_t *out)
{
    if (PyBool_Check(obj) || PyFloat_Check(obj)) {
        PyErr_Format(PyExc_TypeError,
                     "a schedule step must be an int or an array of ints, got %.100s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    PyObject *idx = PyNumber_Index(obj);
    if (idx == NULL)
        return -1;
    long long v = PyLong_AsLongLong(idx);
    Py_DECREF(idx);
    if (v == -1 && PyErr_Occurred())
        return -1;
    *out = (int64_t)v;
    return 0;
}

static PyObject *
as_sched_call_many(PyObject *self, PyObject *arg)
{
    const as_sched *s = AS_SCHED(self);
    PyArrayObject *given = NULL, *steps = NULL, *out = NULL;
    PyObject *res = NULL;
    given = (PyArrayObject *)PyArray_FROM_O(arg);
    if (given == NULL)
        goto done;
    if ((!PyArray_ISINTEGER(given) || PyArray_ISBOOL(given)) && PyArray_SIZE(given) > 0) {
        PyErr_Format(PyExc_TypeError, "schedule steps must be integers, got an array of %S",
                     (PyObject *)PyArray_DESCR(given));
        goto done;
    }
    steps = (PyArrayObject *)PyArray_FROM_OTF((PyObject *)given, NPY_INT64,
                                              NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST);
    if (steps == NULL)
        goto done;
    out = (PyArrayObject *)PyArray_SimpleNew(PyArray_NDIM(steps), PyArray_DIMS(steps), NPY_FLOAT64);
    if (out == NULL)
        goto done;
    int64_t bad;
    npy_intp n = PyArray_SIZE(steps);
    Py_BEGIN_ALLOW_THREADS
    bad = as_sched_eval_many(s, (const int64_t *)PyArray_DATA(steps), (double *)PyArray_DATA(out),
                             (int64_t)n);
    Py_END_ALLOW_THREADS
    if (bad >= 0) {
        as_state *st = as_state_of_type(Py_TYPE(self));
        if (st != NULL)
            PyErr_Format(st->schedule_error, "schedule steps must be >= 0, got %lld at index %lld",
                         (long long)((const int64_t *)PyArray_DATA(steps))[bad], (long long)bad);
        goto done;
    }
    res = Py_NewRef((PyObject *)out);
done:
    Py_XDECREF(given);
    Py_XDECREF(steps);
    Py_XDECREF(out);
    return res;
}

static PyObject *
Schedule_call(PyObject *self, PyObject *args, PyObject *kwds)
{
    PyObject *arg;
    if (kwds != NULL && PyDict_GET_SIZE(kwds) != 0) {
        PyErr_Format(PyExc_TypeError, "%.100s() takes no keyword arguments", Py_TYPE(self)->tp_name);
        return NULL;
    }
    if (!PyArg_UnpackTuple(args, Py_TYPE(self)->tp_name, 1, 1, &arg))
        return NULL;
    if (PyArray_Check(arg) || PyList_Check(arg) || PyTuple_Check(arg))
        return as_sched_call_many(self, arg);
    int64_t step;
    if (as_step_from_object(arg, &step) != 0)
        return NULL;
    if (step < 0) {
        as_state *st = as_state_of_type(Py_TYPE(self));
        if (st != NULL)
            PyErr_Format(st->schedule_error, "a schedule step must be >= 0, got %lld",
                         (long long)step);
        return NULL;
    }
    return PyFloat_FromDouble(as_sched_eval(AS_SCHED(self), step));
}

/* ================================================================== */
/* value semantics: repr, equality, hash, pickling, dicts              */
/* ================================================================== */

static PyObject *
as_sched_value_object(const as_sched_param *p, as_sched_value v)
{
    if (p->type == AS_PARAM_INT)
        return PyLong_FromLongLong((long long)v.i);
    return PyFloat_FromDouble(v.f);
}

/* The constructor arguments as a tuple, in parameter order. */
static PyObject *
as_sched_args(const as_sched *s)
{
    int n = as_sched_nparams(s->kind);
    PyObject *t = PyTuple_New(n);
    if (t == NULL)
        return NULL;
    for (int i = 0; i < n; i++) {
        PyObject *o = as_sched_value_object(&s->kind->params[i], s->v[i]);
        if (o == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, o);
    }
    return t;
}

static PyObject *
Schedule_repr(PyObject *self)
{
    const char *name = Py_TYPE(self)->tp_name;
    const char *dot = strrchr(name, '.');
    name = dot ? dot + 1 : name;
    PyObject *args = as_sched_format_args(AS_SCHED(self)->kind, AS_SCHED(self)->v);
    if (args == NULL)
        return NULL;
    PyObject *res = PyUnicode_FromFormat("%s(%U)", name, args);
    Py_DECREF(args);
    return res;
}

static PyObject *
Schedule_richcompare(PyObject *self, PyObject *other, int op)
{
    if ((op != Py_EQ && op != Py_NE) || Py_TYPE(self) != Py_TYPE(other))
        Py_RETURN_NOTIMPLEMENTED;
    const as_sched *a = AS_SCHED(self), *b = AS_SCHED(other);
    int eq = 1;     /* same type, so the same row */
    for (int i = 0; eq && i < as_sched_nparams(a->kind); i++) {
        if (a->kind->params[i].type == AS_PARAM_INT)
            eq = a->v[i].i == b->v[i].i;
        else
            eq = a->v[i].f == b->v[i].f;
    }
    return PyBool_FromLong(op == Py_EQ ? eq : !eq);
}

static Py_hash_t
Schedule_hash(PyObject *self)
{
    PyObject *args = as_sched_args(AS_SCHED(self));
    if (args == NULL)
        return -1;
    PyObject *key = Py_BuildValue("(sN)", AS_SCHED(self)->kind->type_name, args);
    if (key == NULL)
        return -1;
    Py_hash_t h = PyObject_Hash(key);
    Py_DECREF(key);
    return h;
}

static PyObject *
Schedule_reduce(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *args = as_sched_args(AS_SCHED(self));
    if (args == NULL)
        return NULL;
    return Py_BuildValue("(ON)", (PyObject *)Py_TYPE(self), args);
}

PyDoc_STRVAR(Schedule_to_dict_doc,
"to_dict($self, /)\n--\n\n"
"The schedule as a JSON-ready dict with a \"type\" key; from_dict() rebuilds it.");

static PyObject *
Schedule_to_dict(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    const as_sched *s = AS_SCHED(self);
    PyObject *d = PyDict_New(), *o = NULL;
    if (d == NULL)
        return NULL;
    o = PyUnicode_FromString(s->kind->type_name);
    if (o == NULL || PyDict_SetItemString(d, "type", o) != 0)
        goto fail;
    Py_CLEAR(o);
    for (int i = 0; i < as_sched_nparams(s->kind); i++) {
        o = as_sched_value_object(&s->kind->params[i], s->v[i]);
        if (o == NULL || PyDict_SetItemString(d, s->kind->params[i].name, o) != 0)
            goto fail;
        Py_CLEAR(o);
    }
    return d;
fail:
    Py_XDECREF(o);
    Py_DECREF(d);
    return NULL;
}

PyDoc_STRVAR(Schedule_from_dict_doc,
"from_dict(d, /)\n--\n\n"
"Rebuild a schedule from the dict that to_dict() returned.  The \"type\" must be\n"
"this class's; an unknown key or a missing required parameter is a ScheduleError.");

static PyObject *
Schedule_from_dict(PyObject *cls, PyObject *d)
{
    PyTypeObject *type = (PyTypeObject *)cls;
    as_state *st = as_state_of_type(type);
    if (st == NULL)
        return NULL;
    int kind = as_sched_kind_of_type(st, type);
    if (kind < 0) {
        PyErr_SetString(PyExc_TypeError, "not a schedule type");
        return NULL;
    }
    const as_sched_kind *k = &AS_SCHED_KINDS[kind];
    if (!PyDict_Check(d)) {
        PyObject *got = as_describe(d);
        if (got != NULL)
            PyErr_Format(st->schedule_error, "%s.from_dict() expects a dict, got %U", k->class_name, got);
        Py_XDECREF(got);
        return NULL;
    }
    PyObject *tp = PyDict_GetItemString(d, "type");
    if (tp == NULL || !PyUnicode_Check(tp) || PyUnicode_CompareWithASCIIString(tp, k->type_name) != 0) {
        PyErr_Format(st->schedule_error, "%s.from_dict() expects {\"type\": \"%s\", ...}, got %R",
                     k->class_name, k->type_name, d);
        return NULL;
    }
    PyObject *kw = PyDict_Copy(d), *empty = NULL, *res = NULL;
    if (kw == NULL)
        return NULL;
    if (PyDict_DelItemString(kw, "type") != 0)
        goto done;
    empty = PyTuple_New(0);
    if (empty == NULL)
        goto done;
    res = PyObject_Call(cls, empty, kw);
done:
    Py_XDECREF(empty);
    Py_DECREF(kw);
    return res;
}

/* One getter for every parameter and derived property: the closure is
 * i + 1 for parameter i, -(i + 1) for derived property i. */
static PyObject *
Schedule_get(PyObject *self, void *closure)
{
    const as_sched *s = AS_SCHED(self);
    intptr_t c = (intptr_t)closure;
    if (c > 0)
        return as_sched_value_object(&s->kind->params[c - 1], s->v[c - 1]);
    return PyLong_FromLongLong((long long)s->derived[-c - 1]);
}

static PyMethodDef Schedule_methods[] = {
    {"to_dict", Schedule_to_dict, METH_NOARGS, Schedule_to_dict_doc},
    {"from_dict", Schedule_from_dict, METH_O | METH_CLASS, Schedule_from_dict_doc},
    {"__reduce__", Schedule_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

/* ================================================================== */
/* the types, built from the table                                     */
/* ================================================================== */

/* "DecaySchedule(rate=1.0, min_multiplier=0.0, times_restart=0)\n--\n\n<doc>..." */
static PyObject *
as_sched_docstring(const as_sched_kind *k)
{
    PyObject *parts = PyList_New(0), *empty = NULL, *res = NULL, *s = NULL;
    if (parts == NULL)
        return NULL;
#define AS_PUSH(expr)                                         \
    do {                                                      \
        s = (expr);                                           \
        if (s == NULL || PyList_Append(parts, s) != 0)        \
            goto done;                                        \
        Py_CLEAR(s);                                          \
    } while (0)
    AS_PUSH(PyUnicode_FromFormat("%s(", k->class_name));
    for (int i = 0; i < as_sched_nparams(k); i++) {
        const as_sched_param *p = &k->params[i];
        char num[48] = "";
        if (!p->required) {
            if (p->type == AS_PARAM_INT)
                PyOS_snprintf(num, sizeof num, "=%lld", (long long)p->default_value);
            else {
                num[0] = '=';
                as_repr_double(p->default_value, num + 1, sizeof num - 1);
            }
        }
        AS_PUSH(PyUnicode_FromFormat("%s%s%s", i ? ", " : "", p->name, num));
    }
    AS_PUSH(PyUnicode_FromFormat(")\n--\n\n%s\n\nParameters:\n", k->doc));
    for (int i = 0; i < as_sched_nparams(k); i++) {
        const as_sched_param *p = &k->params[i];
        char expected[128];
        as_param_expected(p, expected, sizeof expected);
        AS_PUSH(PyUnicode_FromFormat("  %s: %s; %s%s\n", p->name, expected, p->doc,
                                     p->required ? " (required)" : ""));
    }
    if (as_sched_nderived(k) > 0) {
        AS_PUSH(PyUnicode_FromString("Read-only properties besides the parameters:\n"));
        for (int i = 0; i < as_sched_nderived(k); i++)
            AS_PUSH(PyUnicode_FromFormat("  %s: %s\n", k->derived[i].name, k->derived[i].doc));
    }
    AS_PUSH(PyUnicode_FromString(
        "\nCallable on an int step (a float) or an array of int steps (a float64 array,\n"
        "computed in C); to_dict() / from_dict(); equal and hashed by value; pickles."));
#undef AS_PUSH
    empty = PyUnicode_FromString("");
    if (empty != NULL)
        res = PyUnicode_Join(empty, parts);
done:
    Py_XDECREF(s);
    Py_XDECREF(empty);
    Py_DECREF(parts);
    return res;
}

static PyTypeObject *
as_sched_make_type(PyObject *m, as_state *st, int kind)
{
    const as_sched_kind *k = &AS_SCHED_KINDS[kind];
    as_sched_type_store *store = &st->sched_store[kind];
    PyOS_snprintf(store->tp_name, sizeof store->tp_name, "autosteer.%s", k->class_name);
    int g = 0;
    for (int i = 0; i < as_sched_nparams(k); i++)
        store->getset[g++] = (PyGetSetDef){k->params[i].name, Schedule_get, NULL, k->params[i].doc,
                                           (void *)(intptr_t)(i + 1)};
    for (int i = 0; i < as_sched_nderived(k); i++)
        store->getset[g++] = (PyGetSetDef){k->derived[i].name, Schedule_get, NULL, k->derived[i].doc,
                                           (void *)(intptr_t)(-(i + 1))};
    store->getset[g] = (PyGetSetDef){NULL, NULL, NULL, NULL, NULL};

    PyObject *doc = as_sched_docstring(k);
    if (doc == NULL)
        return NULL;
    const char *doc_s = PyUnicode_AsUTF8(doc);   /* tp_doc is copied by the type */
    PyTypeObject *tp = NULL;
    if (doc_s != NULL) {
        PyType_Slot slots[] = {
            {Py_tp_new, Schedule_new},
            {Py_tp_dealloc, Schedule_dealloc},
            {Py_tp_call, Schedule_call},
            {Py_tp_repr, Schedule_repr},
            {Py_tp_richcompare, Schedule_richcompare},
            {Py_tp_hash, Schedule_hash},
            {Py_tp_methods, Schedule_methods},
            {Py_tp_getset, store->getset},
            {Py_tp_doc, (void *)doc_s},
            {0, NULL},
        };
        PyType_Spec spec = {store->tp_name, sizeof(ScheduleObject), 0,
                            Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_IMMUTABLETYPE, slots};
        tp = (PyTypeObject *)PyType_FromModuleAndSpec(m, &spec, NULL);
    }
    Py_DECREF(doc);
    return tp;
}

int
as_sched_add_types(PyObject *m, as_state *st)
{
    if (PyArray_ImportNumPyAPI() < 0)
        return -1;
    for (int k = 0; k < AS_SCHED_NKINDS; k++) {
        st->sched_types[k] = as_sched_make_type(m, st, k);
        if (st->sched_types[k] == NULL || PyModule_AddType(m, st->sched_types[k]) < 0)
            return -1;
    }
    return 0;
}

/* ================================================================== */
/* the table as plain Python data                                      */
/* ================================================================== */

/* A domain bound as Python data: None when unbounded, an int for an int
 * parameter. */
static PyObject *
as_bound(double v, int is_int)
{
    if (!isfinite(v))
        return Py_NewRef(Py_None);
    return is_int ? PyLong_FromLongLong((long long)v) : PyFloat_FromDouble(v);
}

static PyObject *
as_domain_info(const as_domain *d, int is_int)
{
    return Py_BuildValue("{s:N,s:N,s:O,s:O}", "min", as_bound(d->min, is_int), "max", as_bound(d->max, is_int),
                         "min_open", d->min_open ? Py_True : Py_False, "max_open", d->max_open ? Py_True : Py_False);
}

static PyObject *
as_sched_param_info(const as_sched_param *p)
{
    int is_int = p->type == AS_PARAM_INT;
    PyObject *dflt = NULL, *domain = NULL, *range = NULL, *sdomain = NULL, *res = NULL;
    if (p->required)
        dflt = Py_NewRef(Py_None);
    else
        dflt = is_int ? PyLong_FromLongLong((long long)p->default_value)
                      : PyFloat_FromDouble(p->default_value);
    if (dflt == NULL)
        goto done;
    domain = as_domain_info(&p->domain, is_int);
    if (domain == NULL)
        goto done;
    sdomain = as_domain_info(&p->search_domain, is_int);
    if (sdomain == NULL)
        goto done;
    if (is_int)
        range = Py_BuildValue("(LL)", (long long)p->search_min, (long long)p->search_max);
    else
        range = Py_BuildValue("(dd)", p->search_min, p->search_max);
    if (range == NULL)
        goto done;
    res = Py_BuildValue("{s:s,s:s,s:O,s:O,s:O,s:O,s:O,s:s}", "name", p->name, "kind",
                        is_int ? "int" : "float", "required", p->required ? Py_True : Py_False,
                        "default", dflt, "domain", domain, "search_range", range, "search_domain", sdomain,
                        "doc", p->doc);
done:
    Py_XDECREF(dflt);
    Py_XDECREF(domain);
    Py_XDECREF(range);
    Py_XDECREF(sdomain);
    return res;
}

PyObject *
as_sched_kinds(as_state *st)
{
    (void)st;
    PyObject *out = PyTuple_New(AS_SCHED_NKINDS);
    if (out == NULL)
        return NULL;
    for (int kind = 0; kind < AS_SCHED_NKINDS; kind++) {
        const as_sched_kind *k = &AS_SCHED_KINDS[kind];
        PyObject *params = PyTuple_New(as_sched_nparams(k));
        PyObject *derived = params ? PyTuple_New(as_sched_nderived(k)) : NULL;
        PyObject *row = NULL;
        if (derived == NULL)
            goto fail_row;
        for (int i = 0; i < as_sched_nparams(k); i++) {
            PyObject *info = as_sched_param_info(&k->params[i]);
            if (info == NULL)
                goto fail_row;
            PyTuple_SET_ITEM(params, i, info);
        }
        for (int i = 0; i < as_sched_nderived(k); i++) {
            PyObject *info = Py_BuildValue("{s:s,s:s}", "name", k->derived[i].name, "doc",
                                           k->derived[i].doc);
            if (info == NULL)
                goto fail_row;
            PyTuple_SET_ITEM(derived, i, info);
        }
        row = Py_BuildValue("{s:s,s:s,s:s,s:O,s:O}", "type", k->type_name, "class_name",
                            k->class_name, "doc", k->doc, "params", params, "derived", derived);
    fail_row:
        Py_XDECREF(params);
        Py_XDECREF(derived);
        if (row == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, kind, row);
    }
    return out;
}
