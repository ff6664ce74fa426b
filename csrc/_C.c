/*
 * autosteer._C - the C core of AutoSteer.
 *
 * One translation unit, so every symbol but PyInit__C stays static: the
 * pure-math headers (schedule.h, kernel.h), the tensor bridge (tensor.h, the
 * only code that knows DLPack) and, here, the Python-facing types:
 *   DecaySchedule, CosineSchedule, WarmupSchedule   coefficient schedules
 *   StepTracker   forward pre-hook on the decoder: generation step and mask
 *   SteerHook     forward pre-hook on one decoder layer: applies the delta
 * Multi-phase init, all state in the module state, heap types only.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>

#include "schedule.h"
#include "kernel.h"
#include "tensor.h"

/* ================================================================== */
/* module state                                                        */
/* ================================================================== */

typedef struct {
    PyTypeObject *decay_type;
    PyTypeObject *cosine_type;
    PyTypeObject *warmup_type;
    PyTypeObject *tracker_type;
    PyTypeObject *hook_type;
    PyObject *schedule_error;      /* autosteer.errors.ScheduleError */
    PyObject *s_past_key_values;
    PyObject *s_cache;
    PyObject *s_attention_mask;
    PyObject *s_input_ids;
    PyObject *s_inputs_embeds;
    PyObject *s_hidden_states;
    PyObject *s_get_seq_length;
    PyObject *s_requires_grad;
    PyObject *s_shape;
    PyObject *s_add_;
    PyObject *s_data_ptr;
    as_dl_cache dl;
} as_state;

static struct PyModuleDef as_module_def;

static inline as_state *
as_get_state(PyObject *module)
{
    return (as_state *)PyModule_GetState(module);
}

/* The state of the module that defined `tp` (a type of ours or a subclass). */
static as_state *
as_state_of_type(PyTypeObject *tp)
{
    PyObject *mod = PyType_GetModuleByDef(tp, &as_module_def);
    return mod == NULL ? NULL : as_get_state(mod);
}

/* ================================================================== */
/* small helpers                                                       */
/* ================================================================== */

/* repr() of a double into buf (always terminated). */
static void
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

/* kwargs.get(key), borrowed; NULL when absent or None (never an error). */
static PyObject *
as_kw(PyObject *kwargs, PyObject *key)
{
    if (kwargs == NULL || !PyDict_Check(kwargs))
        return NULL;
    PyObject *v = PyDict_GetItemWithError(kwargs, key);
    if (v == NULL)
        PyErr_Clear();
    return v == Py_None ? NULL : v;
}

/* x.shape[dim], or -1 when x has no such dimension (error cleared). */
static int64_t
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

/* bool(x.<attr>) with errors reported as -1. */
static int
as_attr_true(PyObject *x, PyObject *attr)
{
    PyObject *v = PyObject_GetAttr(x, attr);
    if (v == NULL)
        return -1;
    int r = PyObject_IsTrue(v);
    Py_DECREF(v);
    return r;
}

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

/* ================================================================== */
/* schedules                                                           */
/* ================================================================== */

typedef struct {
    PyObject_HEAD
    as_sched s;
} ScheduleObject;

static int
as_is_schedule(as_state *st, PyObject *o)
{
    /* exact types only: a subclass may override __call__ */
    return Py_IS_TYPE(o, st->decay_type) || Py_IS_TYPE(o, st->cosine_type) ||
           Py_IS_TYPE(o, st->warmup_type);
}

static PyObject *
as_sched_new_checked(PyTypeObject *type, const as_sched *s, const char *err,
                     const char *name, const char *got)
{
    if (err != NULL) {
        as_state *st = as_state_of_type(type);
        if (st != NULL)
            PyErr_Format(st->schedule_error, "%s: %s (got %s)", name, err, got);
        return NULL;
    }
    ScheduleObject *self = (ScheduleObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->s = *s;
    return (PyObject *)self;
}

static PyObject *
DecaySchedule_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"rate", "min_multiplier", "times_restart", NULL};
    double rate = 1.0, min_multiplier = 0.0;
    long long times_restart = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|ddL:DecaySchedule", kwlist, &rate,
                                     &min_multiplier, &times_restart))
        return NULL;
    as_sched s;
    const char *err = as_sched_init_decay(&s, rate, min_multiplier, times_restart);
    char a[40], b[40], got[160];
    as_repr_double(rate, a, sizeof a);
    as_repr_double(min_multiplier, b, sizeof b);
    PyOS_snprintf(got, sizeof got, "rate=%s, min_multiplier=%s, times_restart=%lld", a, b,
                  times_restart);
    return as_sched_new_checked(type, &s, err, "DecaySchedule", got);
}

static PyObject *
CosineSchedule_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"period", "min_multiplier", NULL};
    long long period = 0;
    double min_multiplier = 0.0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "L|d:CosineSchedule", kwlist, &period,
                                     &min_multiplier))
        return NULL;
    as_sched s;
    const char *err = as_sched_init_cosine(&s, period, min_multiplier);
    char b[40], got[120];
    as_repr_double(min_multiplier, b, sizeof b);
    PyOS_snprintf(got, sizeof got, "period=%lld, min_multiplier=%s", period, b);
    return as_sched_new_checked(type, &s, err, "CosineSchedule", got);
}

static PyObject *
WarmupSchedule_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"steps", "start", NULL};
    long long steps = 0;
    double start = 0.0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "L|d:WarmupSchedule", kwlist, &steps, &start))
        return NULL;
    as_sched s;
    const char *err = as_sched_init_warmup(&s, steps, start);
    char b[40], got[120];
    as_repr_double(start, b, sizeof b);
    PyOS_snprintf(got, sizeof got, "steps=%lld, start=%s", steps, b);
    return as_sched_new_checked(type, &s, err, "WarmupSchedule", got);
}

static void
Schedule_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* The constructor arguments as a tuple, in signature order. */
static PyObject *
as_sched_args(const as_sched *s)
{
    switch (s->kind) {
    case AS_SCHED_DECAY:
        return Py_BuildValue("(ddL)", s->x, s->y, (long long)s->n);
    case AS_SCHED_COSINE:
        return Py_BuildValue("(Ld)", (long long)s->n, s->x);
    case AS_SCHED_WARMUP:
        return Py_BuildValue("(Ld)", (long long)s->n, s->x);
    }
    PyErr_SetString(PyExc_SystemError, "unknown schedule kind");
    return NULL;
}

static PyObject *
Schedule_call(PyObject *self, PyObject *args, PyObject *kwds)
{
    const as_sched *s = &((ScheduleObject *)self)->s;
    PyObject *arg;
    if (kwds != NULL && PyDict_GET_SIZE(kwds) != 0) {
        PyErr_Format(PyExc_TypeError, "%.100s() takes no keyword arguments", Py_TYPE(self)->tp_name);
        return NULL;
    }
    if (!PyArg_UnpackTuple(args, Py_TYPE(self)->tp_name, 1, 1, &arg))
        return NULL;

    if (PyArray_Check(arg) || PyList_Check(arg) || PyTuple_Check(arg)) {
        /* vectorised: an array of integer steps -> float64 array */
        PyArrayObject *given = (PyArrayObject *)PyArray_FROM_O(arg);
        if (given == NULL)
            return NULL;
        if (!PyArray_ISINTEGER(given) && PyArray_SIZE(given) > 0) {
            PyErr_Format(PyExc_TypeError, "schedule steps must be integers, got an array of %S",
                         (PyObject *)PyArray_DESCR(given));
            Py_DECREF(given);
            return NULL;
        }
        PyArrayObject *steps = (PyArrayObject *)PyArray_FROM_OTF(
            (PyObject *)given, NPY_INT64, NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST);
        Py_DECREF(given);
        if (steps == NULL)
            return NULL;
        PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(
            PyArray_NDIM(steps), PyArray_DIMS(steps), NPY_FLOAT64);
        if (out == NULL) {
            Py_DECREF(steps);
            return NULL;
        }
        int64_t bad;
        npy_intp n = PyArray_SIZE(steps);
        Py_BEGIN_ALLOW_THREADS
        bad = as_sched_eval_many(s, (const int64_t *)PyArray_DATA(steps),
                                 (double *)PyArray_DATA(out), (int64_t)n);
        Py_END_ALLOW_THREADS
        if (bad >= 0) {
            as_state *st = as_state_of_type(Py_TYPE(self));
            if (st != NULL)
                PyErr_Format(st->schedule_error, "schedule steps must be >= 0, got %lld at index %lld",
                             (long long)((const int64_t *)PyArray_DATA(steps))[bad], (long long)bad);
            Py_DECREF(steps);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(steps);
        return (PyObject *)out;
    }
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
    return PyFloat_FromDouble(as_sched_eval(s, step));
}

static PyObject *
Schedule_repr(PyObject *self)
{
    const as_sched *s = &((ScheduleObject *)self)->s;
    char a[40], b[40];
    const char *name = Py_TYPE(self)->tp_name;
    const char *dot = strrchr(name, '.');
    name = dot ? dot + 1 : name;
    switch (s->kind) {
    case AS_SCHED_DECAY:
        as_repr_double(s->x, a, sizeof a);
        as_repr_double(s->y, b, sizeof b);
        return PyUnicode_FromFormat("%s(rate=%s, min_multiplier=%s, times_restart=%lld)", name, a,
                                    b, (long long)s->n);
    case AS_SCHED_COSINE:
        as_repr_double(s->x, a, sizeof a);
        return PyUnicode_FromFormat("%s(period=%lld, min_multiplier=%s)", name, (long long)s->n, a);
    case AS_SCHED_WARMUP:
        as_repr_double(s->x, a, sizeof a);
        return PyUnicode_FromFormat("%s(steps=%lld, start=%s)", name, (long long)s->n, a);
    }
    PyErr_SetString(PyExc_SystemError, "unknown schedule kind");
    return NULL;
}

static PyObject *
Schedule_richcompare(PyObject *self, PyObject *other, int op)
{
    if ((op != Py_EQ && op != Py_NE) || Py_TYPE(self) != Py_TYPE(other))
        Py_RETURN_NOTIMPLEMENTED;
    const as_sched *a = &((ScheduleObject *)self)->s;
    const as_sched *b = &((ScheduleObject *)other)->s;
    int eq = a->kind == b->kind && a->x == b->x && a->y == b->y && a->n == b->n;
    return PyBool_FromLong(op == Py_EQ ? eq : !eq);
}

static Py_hash_t
Schedule_hash(PyObject *self)
{
    PyObject *args = as_sched_args(&((ScheduleObject *)self)->s);
    if (args == NULL)
        return -1;
    Py_hash_t h = PyObject_Hash(args);
    Py_DECREF(args);
    if (h != -1)
        h ^= (Py_hash_t)((ScheduleObject *)self)->s.kind;
    return h == -1 ? -2 : h;
}

static PyObject *
Schedule_reduce(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *args = as_sched_args(&((ScheduleObject *)self)->s);
    if (args == NULL)
        return NULL;
    PyObject *res = Py_BuildValue("(ON)", (PyObject *)Py_TYPE(self), args);
    return res;
}

static int
as_dict_set_double(PyObject *d, const char *k, double v)
{
    PyObject *o = PyFloat_FromDouble(v);
    if (o == NULL)
        return -1;
    int r = PyDict_SetItemString(d, k, o);
    Py_DECREF(o);
    return r;
}

static int
as_dict_set_int(PyObject *d, const char *k, int64_t v)
{
    PyObject *o = PyLong_FromLongLong((long long)v);
    if (o == NULL)
        return -1;
    int r = PyDict_SetItemString(d, k, o);
    Py_DECREF(o);
    return r;
}

static int
as_dict_set_str(PyObject *d, const char *k, const char *v)
{
    PyObject *o = PyUnicode_FromString(v);
    if (o == NULL)
        return -1;
    int r = PyDict_SetItemString(d, k, o);
    Py_DECREF(o);
    return r;
}

PyDoc_STRVAR(Schedule_to_dict_doc,
"to_dict($self, /)\n--\n\n"
"The schedule as a JSON-ready dict with a \"type\" key; from_dict() rebuilds it.");

static PyObject *
Schedule_to_dict(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    const as_sched *s = &((ScheduleObject *)self)->s;
    PyObject *d = PyDict_New();
    if (d == NULL)
        return NULL;
    int rc = 0;
    switch (s->kind) {
    case AS_SCHED_DECAY:
        rc = as_dict_set_str(d, "type", "decay") || as_dict_set_double(d, "rate", s->x) ||
             as_dict_set_double(d, "min_multiplier", s->y) ||
             as_dict_set_int(d, "times_restart", s->n);
        break;
    case AS_SCHED_COSINE:
        rc = as_dict_set_str(d, "type", "cosine") || as_dict_set_int(d, "period", s->n) ||
             as_dict_set_double(d, "min_multiplier", s->x);
        break;
    case AS_SCHED_WARMUP:
        rc = as_dict_set_str(d, "type", "warmup") || as_dict_set_int(d, "steps", s->n) ||
             as_dict_set_double(d, "start", s->x);
        break;
    }
    if (rc) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

/* cls.from_dict(d): the "type" must name this class's kind; every other key
 * is passed as a keyword, so unknown keys give the constructor's TypeError. */
PyDoc_STRVAR(Schedule_from_dict_doc,
"from_dict(d, /)\n--\n\n"
"Rebuild a schedule from the dict that to_dict() returned.");

static PyObject *
Schedule_from_dict(PyObject *cls, PyObject *d)
{
    PyTypeObject *type = (PyTypeObject *)cls;
    as_state *st = as_state_of_type(type);
    if (st == NULL)
        return NULL;
    if (!PyDict_Check(d)) {
        PyErr_Format(PyExc_TypeError, "from_dict() expects a dict, got %.100s", Py_TYPE(d)->tp_name);
        return NULL;
    }
    const char *want = PyType_IsSubtype(type, st->decay_type)    ? "decay"
                       : PyType_IsSubtype(type, st->cosine_type) ? "cosine"
                                                                 : "warmup";
    PyObject *kind = PyDict_GetItemString(d, "type");
    if (kind == NULL || !PyUnicode_Check(kind) || PyUnicode_CompareWithASCIIString(kind, want) != 0) {
        PyErr_Format(st->schedule_error, "%.100s.from_dict() expects {\"type\": \"%s\", ...}, got %R",
                     type->tp_name, want, d);
        return NULL;
    }
    PyObject *kw = PyDict_Copy(d);
    if (kw == NULL)
        return NULL;
    if (PyDict_DelItemString(kw, "type") != 0) {
        Py_DECREF(kw);
        return NULL;
    }
    PyObject *empty = PyTuple_New(0);
    if (empty == NULL) {
        Py_DECREF(kw);
        return NULL;
    }
    PyObject *res = PyObject_Call(cls, empty, kw);
    Py_DECREF(empty);
    Py_DECREF(kw);
    return res;
}

static PyObject *Schedule_get_x(PyObject *self, void *c) { (void)c; return PyFloat_FromDouble(((ScheduleObject *)self)->s.x); }
static PyObject *Schedule_get_y(PyObject *self, void *c) { (void)c; return PyFloat_FromDouble(((ScheduleObject *)self)->s.y); }
static PyObject *Schedule_get_n(PyObject *self, void *c) { (void)c; return PyLong_FromLongLong((long long)((ScheduleObject *)self)->s.n); }
static PyObject *Schedule_get_cycle(PyObject *self, void *c) { (void)c; return PyLong_FromLongLong((long long)((ScheduleObject *)self)->s.cycle); }

static PyMethodDef Schedule_methods[] = {
    {"to_dict", Schedule_to_dict, METH_NOARGS, Schedule_to_dict_doc},
    {"from_dict", Schedule_from_dict, METH_O | METH_CLASS, Schedule_from_dict_doc},
    {"__reduce__", Schedule_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Decay_getset[] = {
    {"rate", Schedule_get_x, NULL, "multiplier per step", NULL},
    {"min_multiplier", Schedule_get_y, NULL, "floor of the multiplier", NULL},
    {"times_restart", Schedule_get_n, NULL, "number of sawtooth restarts", NULL},
    {"cycle_length", Schedule_get_cycle, NULL, "steps in one sawtooth cycle (0 without restarts)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyGetSetDef Cosine_getset[] = {
    {"period", Schedule_get_n, NULL, "steps from 1.0 down to min_multiplier", NULL},
    {"min_multiplier", Schedule_get_x, NULL, "value from step `period` on", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyGetSetDef Warmup_getset[] = {
    {"steps", Schedule_get_n, NULL, "steps of the linear ramp", NULL},
    {"start", Schedule_get_x, NULL, "multiplier at step 0", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(Decay_doc,
"DecaySchedule(rate=1.0, min_multiplier=0.0, times_restart=0)\n--\n\n"
"Multiplier rate**step, floored at min_multiplier; rate <= 0 means a constant 1.0.\n"
"With times_restart > 0 (needs 0 < rate < 1 and 0 < min_multiplier < 1) it is a\n"
"sawtooth: each cycle has ceil(log(min)/log(rate)) + 1 steps and ends exactly at\n"
"min_multiplier, then jumps back to 1.0; after times_restart restarts it decays on\n"
"and stays at min_multiplier.  Callable on an int step or an array of steps.");

PyDoc_STRVAR(Cosine_doc,
"CosineSchedule(period, min_multiplier=0.0)\n--\n\n"
"Cosine taper from 1.0 at step 0 to min_multiplier at step `period`, then constant.");

PyDoc_STRVAR(Warmup_doc,
"WarmupSchedule(steps, start=0.0)\n--\n\n"
"Linear ramp from `start` at step 0 to 1.0 at step `steps`, then constant 1.0.");

#define AS_SCHED_SLOTS(NEW, GETSET, DOC)                         \
    {Py_tp_new, NEW},                                            \
    {Py_tp_dealloc, Schedule_dealloc},                           \
    {Py_tp_call, Schedule_call},                                 \
    {Py_tp_repr, Schedule_repr},                                 \
    {Py_tp_richcompare, Schedule_richcompare},                   \
    {Py_tp_hash, Schedule_hash},                                 \
    {Py_tp_methods, Schedule_methods},                           \
    {Py_tp_getset, GETSET},                                      \
    {Py_tp_doc, (void *)DOC},                                    \
    {0, NULL}

static PyType_Slot Decay_slots[] = {AS_SCHED_SLOTS(DecaySchedule_new, Decay_getset, Decay_doc)};
static PyType_Slot Cosine_slots[] = {AS_SCHED_SLOTS(CosineSchedule_new, Cosine_getset, Cosine_doc)};
static PyType_Slot Warmup_slots[] = {AS_SCHED_SLOTS(WarmupSchedule_new, Warmup_getset, Warmup_doc)};

#define AS_SCHED_FLAGS (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_IMMUTABLETYPE)

static PyType_Spec Decay_spec = {"autosteer.DecaySchedule", sizeof(ScheduleObject), 0,
                                 AS_SCHED_FLAGS, Decay_slots};
static PyType_Spec Cosine_spec = {"autosteer.CosineSchedule", sizeof(ScheduleObject), 0,
                                  AS_SCHED_FLAGS, Cosine_slots};
static PyType_Spec Warmup_spec = {"autosteer.WarmupSchedule", sizeof(ScheduleObject), 0,
                                  AS_SCHED_FLAGS, Warmup_slots};

/* The kernel's storage type of a DLPack tensor; 0, or -1 when unsupported. */
static int
as_view_dtype(const as_tensor_view *v, as_dtype *out)
{
    if (v->t.dtype.lanes != 1)
        return -1;
    if (v->t.dtype.code == AS_DL_FLOAT && v->t.dtype.bits == 32)
        *out = AS_F32;
    else if (v->t.dtype.code == AS_DL_FLOAT && v->t.dtype.bits == 16)
        *out = AS_F16;
    else if (v->t.dtype.code == AS_DL_BFLOAT && v->t.dtype.bits == 16)
        *out = AS_BF16;
    else
        return -1;
    return 0;
}

/* A [B, T, D] CPU view the kernel can write: hidden dimension contiguous,
 * non-negative strides.  Fills `h` and returns 1, else 0. */
static int
as_view_hidden(const as_tensor_view *v, as_hidden *h)
{
    as_dtype dt;
    if (v->t.device.device_type != AS_DL_CPU || v->t.ndim != 3 || as_view_dtype(v, &dt) != 0)
        return 0;
    int64_t B = v->t.shape[0], T = v->t.shape[1], D = v->t.shape[2];
    int64_t sb = as_tensor_stride(v, 0), st = as_tensor_stride(v, 1);
    /* every element its own memory: an expanded or overlapping view would be
     * written several times (torch refuses in-place ops on those too) */
    if ((D > 1 && as_tensor_stride(v, 2) != 1) || sb < 0 || st < 0)
        return 0;
    /* order the two outer dimensions by stride (batch-major or, after a
     * transpose, sequence-major); then rows must not overlap */
    int64_t n_in = T, s_in = st, n_out = B, s_out = sb;
    if (sb < st || (sb == st && B < T)) {
        n_in = B; s_in = sb; n_out = T; s_out = st;
    }
    if ((n_in > 1 && s_in < D) || (n_out > 1 && s_out < (n_in - 1) * s_in + D))
        return 0;
    *h = (as_hidden){as_tensor_data(v), dt, B, T, D, sb, st};
    return 1;
}

/* ================================================================== */
/* StepTracker                                                         */
/* ================================================================== */

/*
 * Registered (with_kwargs=True) as a forward pre-hook on the module that owns
 * the decoder layer list.  At each forward it reads the KV-cache length to
 * derive the generation step (0 at the prefill, k at the k-th decode step),
 * and keeps the attention mask so that the layer hooks can find each row's
 * last real token.
 */
typedef struct {
    PyObject_HEAD
    int64_t step;
    int64_t prefill_len;
    int64_t calls;
    uintptr_t embeds_ptr;      /* data_ptr() of inputs_embeds passed in, or 0 */
    uintptr_t owner_id;        /* identity of the module owning the layers (no ref) */
    PyObject *mask;            /* the attention mask of this forward, or NULL */
    PyObject *outer_mask;      /* a 2-D mask seen on an enclosing module, or NULL */
    PyObject *last_index_fn;   /* Python fallback: (mask, B, T) -> tensor | None */
    /* cache of the last-token indexes for the current forward */
    int last_valid;            /* 0: not computed; 1: computed */
    int64_t last_B, last_T;
    int64_t *last_buf;         /* NULL when every row ends at T - 1 */
    int64_t last_cap;
    PyObject *last_tensor;     /* device fallback result (or None) */
    int last_tensor_valid;
} TrackerObject;

static int
Tracker_traverse(PyObject *self, visitproc visit, void *arg)
{
    TrackerObject *t = (TrackerObject *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(t->mask);
    Py_VISIT(t->outer_mask);
    Py_VISIT(t->last_index_fn);
    Py_VISIT(t->last_tensor);
    return 0;
}

static int
Tracker_clear(PyObject *self)
{
    TrackerObject *t = (TrackerObject *)self;
    Py_CLEAR(t->mask);
    Py_CLEAR(t->outer_mask);
    Py_CLEAR(t->last_index_fn);
    Py_CLEAR(t->last_tensor);
    return 0;
}

static void
Tracker_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    (void)Tracker_clear(self);
    PyMem_Free(((TrackerObject *)self)->last_buf);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *
Tracker_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"last_index_fn", "owner", NULL};
    PyObject *fn = Py_None, *owner = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OO:StepTracker", kwlist, &fn, &owner))
        return NULL;
    if (fn != Py_None && !PyCallable_Check(fn)) {
        PyErr_SetString(PyExc_TypeError, "last_index_fn must be callable or None");
        return NULL;
    }
    TrackerObject *t = (TrackerObject *)type->tp_alloc(type, 0);
    if (t == NULL)
        return NULL;
    t->last_index_fn = fn == Py_None ? NULL : Py_NewRef(fn);
    t->owner_id = owner == Py_None ? 0 : (uintptr_t)owner;
    return (PyObject *)t;
}

/* The step: derived from the KV-cache length (see the type comment). */
static PyObject *
Tracker_call(PyObject *self, PyObject *args, PyObject *kwds)
{
    TrackerObject *t = (TrackerObject *)self;
    as_state *st = as_state_of_type(Py_TYPE(self));
    if (st == NULL)
        return NULL;
    PyObject *module, *fargs, *fkwargs = NULL;
    if (kwds != NULL && PyDict_GET_SIZE(kwds) != 0) {
        PyErr_SetString(PyExc_TypeError, "StepTracker() takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_UnpackTuple(args, "StepTracker", 2, 3, &module, &fargs, &fkwargs))
        return NULL;
    if (fkwargs == Py_None)
        fkwargs = NULL;

    PyObject *mask = as_kw(fkwargs, st->s_attention_mask);
    int mask_2d = mask != NULL && as_dim(st, mask, 1) >= 0 && as_dim(st, mask, 2) < 0;
    if (t->owner_id != 0 && (uintptr_t)module != t->owner_id) {
        /* an enclosing module (a VLM, a PEFT wrapper): remember its 2-D mask,
         * the owner may only get a dict or a 4-D mask */
        if (mask_2d)
            Py_XSETREF(t->outer_mask, Py_NewRef(mask));
        Py_RETURN_NONE;
    }

    int64_t cache_len = 0;
    /* transformers < 5.2x calls it past_key_values, newer releases cache */
    PyObject *pkv = as_kw(fkwargs, st->s_past_key_values);
    if (pkv == NULL)
        pkv = as_kw(fkwargs, st->s_cache);
    if (pkv != NULL) {
        PyObject *n = PyObject_CallMethodNoArgs(pkv, st->s_get_seq_length);
        if (n == NULL) {
            /* a legacy tuple cache or an object without the method: no step */
            PyErr_Clear();
        }
        else {
            PyObject *idx = PyNumber_Index(n);
            Py_DECREF(n);
            if (idx == NULL)
                return NULL;
            cache_len = PyLong_AsLongLong(idx);
            Py_DECREF(idx);
            if (cache_len == -1 && PyErr_Occurred())
                return NULL;
        }
    }
    /* the length of this forward's input */
    int64_t T = -1;
    PyObject *x = as_kw(fkwargs, st->s_input_ids);
    PyObject *emb = as_kw(fkwargs, st->s_inputs_embeds);
    if (x == NULL)
        x = emb;
    if (x == NULL && PyTuple_Check(fargs) && PyTuple_GET_SIZE(fargs) > 0)
        x = PyTuple_GET_ITEM(fargs, 0);
    if (x != NULL)
        T = as_dim(st, x, 1);

    /* prefill_len holds where the last prefill ended in the cache */
    if (cache_len <= 0) {
        t->step = 0;
        t->prefill_len = T > 0 ? T : 0;
    }
    else if (T > 1) {
        /* several new tokens on a non-empty cache: a new turn on a reused cache
         * or a prefix cache, so a new prefill (speculative decoding's checks
         * look the same and count as step 0 too) */
        t->step = 0;
        t->prefill_len = cache_len + T;
    }
    else if (t->prefill_len > 0 && cache_len >= t->prefill_len) {
        t->step = cache_len - t->prefill_len + 1;
    }
    else {
        /* a cache this tracker never saw filled: start counting here */
        t->step = 0;
        t->prefill_len = cache_len + (T > 0 ? T : 1);
    }

    t->embeds_ptr = 0;
    if (emb != NULL) {
        PyObject *p = PyObject_CallMethodNoArgs(emb, st->s_data_ptr);
        if (p == NULL)
            return NULL;
        t->embeds_ptr = (uintptr_t)PyLong_AsUnsignedLongLongMask(p);
        Py_DECREF(p);
        if (PyErr_Occurred())
            return NULL;
    }
    if (!mask_2d)
        mask = t->outer_mask;
    Py_XSETREF(t->mask, Py_XNewRef(mask));
    Py_CLEAR(t->outer_mask);
    t->last_valid = 0;
    t->last_tensor_valid = 0;
    Py_CLEAR(t->last_tensor);
    t->calls++;
    Py_RETURN_NONE;
}

static int as_mask_i64(const void *p, int64_t i) { return ((const int64_t *)p)[i] != 0; }
static int as_mask_i32(const void *p, int64_t i) { return ((const int32_t *)p)[i] != 0; }
static int as_mask_u8(const void *p, int64_t i) { return ((const uint8_t *)p)[i] != 0; }
static int as_mask_f32(const void *p, int64_t i) { return ((const float *)p)[i] != 0.0f; }
static int as_mask_f64(const void *p, int64_t i) { return ((const double *)p)[i] != 0.0; }
/* int16, float16 and bfloat16: any bit but the sign set means non-zero for the
 * floats; int16 needs all 16 */
static int as_mask_i16(const void *p, int64_t i) { return ((const uint16_t *)p)[i] != 0; }
static int as_mask_h16(const void *p, int64_t i) { return (((const uint16_t *)p)[i] & 0x7fffu) != 0; }

/*
 * Last real token per row for a CPU forward of B rows and T positions.
 * On success *out is NULL (every row ends at T - 1) or B indexes owned by the
 * tracker.  A mask C cannot read (another device, 4-D, another batch size)
 * counts as no mask.  Returns -1 only on a real error (exception set).
 */
static int
as_tracker_last_cpu(TrackerObject *t, as_state *st, int64_t B, int64_t T, const int64_t **out)
{
    *out = NULL;
    if (t->mask == NULL)
        return 0;
    if (t->last_valid && t->last_B == B && t->last_T == T) {
        *out = t->last_valid == 1 ? t->last_buf : NULL;
        return 0;
    }
    as_tensor_view v;
    if (as_tensor_open(&st->dl, t->mask, AS_VIA_AUTO, &v) != 0) {
        PyErr_Clear();
        return 0;
    }
    int usable = v.t.device.device_type == AS_DL_CPU && v.t.ndim == 2 && v.t.shape[0] == B &&
                 v.t.shape[1] >= T && v.t.dtype.lanes == 1;
    int (*is_set)(const void *, int64_t) = NULL;
    if (usable) {
        if ((v.t.dtype.code == AS_DL_INT || v.t.dtype.code == AS_DL_UINT) && v.t.dtype.bits == 64)
            is_set = as_mask_i64;
        else if ((v.t.dtype.code == AS_DL_INT || v.t.dtype.code == AS_DL_UINT) && v.t.dtype.bits == 32)
            is_set = as_mask_i32;
        else if ((v.t.dtype.code == AS_DL_BOOL || v.t.dtype.code == AS_DL_UINT ||
                  v.t.dtype.code == AS_DL_INT) && v.t.dtype.bits == 8)
            is_set = as_mask_u8;
        else if (v.t.dtype.code == AS_DL_FLOAT && v.t.dtype.bits == 32)
            is_set = as_mask_f32;
        else if (v.t.dtype.code == AS_DL_FLOAT && v.t.dtype.bits == 64)
            is_set = as_mask_f64;
        else if ((v.t.dtype.code == AS_DL_INT || v.t.dtype.code == AS_DL_UINT) && v.t.dtype.bits == 16)
            is_set = as_mask_i16;
        else if ((v.t.dtype.code == AS_DL_FLOAT || v.t.dtype.code == AS_DL_BFLOAT) && v.t.dtype.bits == 16)
            is_set = as_mask_h16;
    }
    if (is_set == NULL) {
        as_tensor_close(&v);
        t->last_valid = 1;
        t->last_B = B;
        t->last_T = T;
        PyMem_Free(t->last_buf);
        t->last_buf = NULL;
        t->last_cap = 0;
        return 0;
    }
    if (t->last_cap < B) {
        int64_t *buf = PyMem_Realloc(t->last_buf, (size_t)B * sizeof(int64_t));
        if (buf == NULL) {
            as_tensor_close(&v);
            PyErr_NoMemory();
            return -1;
        }
        t->last_buf = buf;
        t->last_cap = B;
    }
    const char *base = (const char *)as_tensor_data(&v);
    int64_t sb = as_tensor_stride(&v, 0), ss = as_tensor_stride(&v, 1);
    size_t esize = v.t.dtype.bits / 8;
    int64_t S = v.t.shape[1];
    int all_last = 1;
    for (int64_t b = 0; b < B; b++) {
        const void *row = base + (ptrdiff_t)(b * sb) * (ptrdiff_t)esize;
        int64_t lt = as_kernel_last_real(row, ss, S, T, is_set);
        t->last_buf[b] = lt;
        if (lt != T - 1)
            all_last = 0;
    }
    as_tensor_close(&v);
    t->last_valid = 1;
    t->last_B = B;
    t->last_T = T;
    if (all_last) {
        /* keep the buffer allocated but report "T - 1 everywhere" */
        t->last_valid = 2;
        *out = NULL;
        return 0;
    }
    *out = t->last_buf;
    return 0;
}

/* Device fallback: (mask, B, T) -> LongTensor [B] on the mask's device, or
 * None.  Computed once per forward.  Returns a borrowed reference. */
static PyObject *
as_tracker_last_tensor(TrackerObject *t, int64_t B, int64_t T)
{
    if (t->mask == NULL || t->last_index_fn == NULL)
        return Py_None;
    if (t->last_tensor_valid && t->last_tensor != NULL)
        return t->last_tensor;
    PyObject *r = PyObject_CallFunction(t->last_index_fn, "OLL", t->mask, (long long)B, (long long)T);
    if (r == NULL)
        return NULL;
    Py_XSETREF(t->last_tensor, r);
    t->last_tensor_valid = 1;
    return r;
}

static PyObject *Tracker_get_step(PyObject *self, void *c) { (void)c; return PyLong_FromLongLong((long long)((TrackerObject *)self)->step); }
static PyObject *Tracker_get_calls(PyObject *self, void *c) { (void)c; return PyLong_FromLongLong((long long)((TrackerObject *)self)->calls); }
static PyObject *Tracker_get_prefill(PyObject *self, void *c) { (void)c; return PyLong_FromLongLong((long long)((TrackerObject *)self)->prefill_len); }

static PyObject *
Tracker_reset(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    TrackerObject *t = (TrackerObject *)self;
    t->step = 0;
    t->prefill_len = 0;
    t->embeds_ptr = 0;
    t->last_valid = 0;
    t->last_tensor_valid = 0;
    Py_CLEAR(t->mask);
    Py_CLEAR(t->outer_mask);
    Py_CLEAR(t->last_tensor);
    Py_RETURN_NONE;
}

static PyGetSetDef Tracker_getset[] = {
    {"step", Tracker_get_step, NULL, "generation step of the current forward", NULL},
    {"calls", Tracker_get_calls, NULL, "number of forwards seen", NULL},
    {"prefill_len", Tracker_get_prefill, NULL, "length of the last prefill", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef Tracker_methods[] = {
    {"reset", Tracker_reset, METH_NOARGS, "reset($self, /)\n--\n\nForget the step and the mask."},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(Tracker_doc,
"StepTracker(last_index_fn=None, owner=None)\n--\n\n"
"Forward pre-hook (with_kwargs=True) for the module that owns the decoder layers.\n"
"Derives the generation step from the KV cache's get_seq_length() (keyword\n"
"past_key_values, or cache in newer transformers) and keeps the\n"
"attention mask for the layer hooks.  last_index_fn(mask, B, T) computes each\n"
"row's last real token as a tensor for masks that C does not read (GPU).\n"
"Registered on an enclosing module too (any module but `owner`), it only\n"
"remembers a 2-D mask for the owner's next forward.");

static PyType_Slot Tracker_slots[] = {
    {Py_tp_new, Tracker_new},
    {Py_tp_dealloc, Tracker_dealloc},
    {Py_tp_traverse, Tracker_traverse},
    {Py_tp_clear, Tracker_clear},
    {Py_tp_call, Tracker_call},
    {Py_tp_getset, Tracker_getset},
    {Py_tp_methods, Tracker_methods},
    {Py_tp_doc, (void *)Tracker_doc},
    {0, NULL},
};

static PyType_Spec Tracker_spec = {
    "autosteer._C.StepTracker", sizeof(TrackerObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE, Tracker_slots};

/* ================================================================== */
/* SteerHook                                                           */
/* ================================================================== */

typedef struct {
    PyObject_HEAD
    PyObject *tracker;        /* TrackerObject */
    int64_t layer_idx;
    int64_t J, D;
    float *dirs;              /* J x D float32, C copy for the CPU kernel */
    double *coeffs;           /* J */
    float *weights;           /* J, scratch for the current call */
    float *scratch;           /* D */
    PyObject *schedules;      /* tuple of J: None | schedule | callable */
    PyObject *methods;        /* tuple of J: None | steering_method callable */
    PyObject *dirs_dev;       /* J x D float32 tensor on the model's device */
    PyObject *torch_apply;    /* (h, dirs_dev, weights, last) -> new h */
    PyObject *grad_enabled_fn;/* torch.is_grad_enabled, or NULL: assume it is */
    int64_t calls;
    int64_t kernel_calls;
} HookObject;

static int
Hook_traverse(PyObject *self, visitproc visit, void *arg)
{
    HookObject *h = (HookObject *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(h->tracker);
    Py_VISIT(h->schedules);
    Py_VISIT(h->methods);
    Py_VISIT(h->dirs_dev);
    Py_VISIT(h->torch_apply);
    Py_VISIT(h->grad_enabled_fn);
    return 0;
}

static int
Hook_clear(PyObject *self)
{
    HookObject *h = (HookObject *)self;
    Py_CLEAR(h->tracker);
    Py_CLEAR(h->schedules);
    Py_CLEAR(h->methods);
    Py_CLEAR(h->dirs_dev);
    Py_CLEAR(h->torch_apply);
    Py_CLEAR(h->grad_enabled_fn);
    return 0;
}

static void
Hook_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    HookObject *h = (HookObject *)self;
    PyObject_GC_UnTrack(self);
    (void)Hook_clear(self);
    PyMem_Free(h->dirs);
    PyMem_Free(h->coeffs);
    PyMem_Free(h->weights);
    PyMem_Free(h->scratch);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *
Hook_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"tracker", "layer_idx", "directions", "coeffs", "schedules",
                             "methods", "directions_device", "torch_apply", "grad_enabled", NULL};
    PyObject *tracker, *dirs, *coeffs, *schedules, *methods, *dirs_dev, *torch_apply;
    PyObject *grad_enabled = Py_None;
    long long layer_idx;
    as_state *st = as_state_of_type(type);
    if (st == NULL)
        return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OLOOOOOO|O:SteerHook", kwlist, &tracker,
                                     &layer_idx, &dirs, &coeffs, &schedules, &methods, &dirs_dev,
                                     &torch_apply, &grad_enabled))
        return NULL;
    if (grad_enabled != Py_None && !PyCallable_Check(grad_enabled)) {
        PyErr_SetString(PyExc_TypeError, "grad_enabled must be callable or None");
        return NULL;
    }
    if (!PyObject_TypeCheck(tracker, st->tracker_type)) {
        PyErr_SetString(PyExc_TypeError, "tracker must be a StepTracker");
        return NULL;
    }
    if (!PyCallable_Check(torch_apply)) {
        PyErr_SetString(PyExc_TypeError, "torch_apply must be callable");
        return NULL;
    }
    PyObject *co = NULL, *sc = NULL, *me = NULL;
    HookObject *self = NULL;
    as_tensor_view v;
    int view_open = 0;

    co = PySequence_Tuple(coeffs);
    sc = co ? PySequence_Tuple(schedules) : NULL;
    me = sc ? PySequence_Tuple(methods) : NULL;
    if (me == NULL)
        goto fail;
    Py_ssize_t J = PyTuple_GET_SIZE(co);
    if (PyTuple_GET_SIZE(sc) != J || PyTuple_GET_SIZE(me) != J || J == 0) {
        PyErr_Format(PyExc_ValueError,
                     "coeffs, schedules and methods must have the same non-zero length "
                     "(got %zd, %zd, %zd)", J, PyTuple_GET_SIZE(sc), PyTuple_GET_SIZE(me));
        goto fail;
    }
    for (Py_ssize_t j = 0; j < J; j++) {
        PyObject *s = PyTuple_GET_ITEM(sc, j), *m = PyTuple_GET_ITEM(me, j);
        if (s != Py_None && !PyCallable_Check(s)) {
            PyErr_Format(PyExc_TypeError, "schedule %zd is not callable", j);
            goto fail;
        }
        if (m != Py_None && !PyCallable_Check(m)) {
            PyErr_Format(PyExc_TypeError, "steering_method %zd is not callable", j);
            goto fail;
        }
    }
    if (as_tensor_open(&st->dl, dirs, AS_VIA_AUTO, &v) != 0)
        goto fail;
    view_open = 1;
    if (v.t.device.device_type != AS_DL_CPU || v.t.ndim != 2 || v.t.dtype.code != AS_DL_FLOAT ||
        v.t.dtype.bits != 32 || v.t.shape[0] != J) {
        PyErr_Format(PyExc_ValueError,
                     "directions must be a CPU float32 tensor of shape (%zd, hidden_size)", J);
        goto fail;
    }
    self = (HookObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        goto fail;
    self->J = J;
    self->D = v.t.shape[1];
    self->layer_idx = layer_idx;
    self->dirs = PyMem_Malloc((size_t)(J * self->D) * sizeof(float) + 1);
    self->coeffs = PyMem_Malloc((size_t)J * sizeof(double));
    self->weights = PyMem_Malloc((size_t)J * sizeof(float));
    self->scratch = PyMem_Malloc((size_t)self->D * sizeof(float) + 1);
    if (!self->dirs || !self->coeffs || !self->weights || !self->scratch) {
        PyErr_NoMemory();
        goto fail;
    }
    {
        const char *base = (const char *)as_tensor_data(&v);
        int64_t s0 = as_tensor_stride(&v, 0), s1 = as_tensor_stride(&v, 1);
        for (int64_t j = 0; j < J; j++)
            for (int64_t d = 0; d < self->D; d++)
                self->dirs[j * self->D + d] = ((const float *)base)[j * s0 + d * s1];
    }
    as_tensor_close(&v);
    view_open = 0;
    for (Py_ssize_t j = 0; j < J; j++) {
        double c = PyFloat_AsDouble(PyTuple_GET_ITEM(co, j));
        if (c == -1.0 && PyErr_Occurred())
            goto fail;
        if (!isfinite(c)) {
            PyErr_Format(PyExc_ValueError, "coefficient %zd is not finite", j);
            goto fail;
        }
        self->coeffs[j] = c;
    }
    self->tracker = Py_NewRef(tracker);
    self->schedules = sc;
    self->methods = me;
    sc = me = NULL;
    self->dirs_dev = Py_NewRef(dirs_dev);
    self->torch_apply = Py_NewRef(torch_apply);
    self->grad_enabled_fn = grad_enabled == Py_None ? NULL : Py_NewRef(grad_enabled);
    Py_DECREF(co);
    return (PyObject *)self;

fail:
    if (view_open)
        as_tensor_close(&v);
    Py_XDECREF(co);
    Py_XDECREF(sc);
    Py_XDECREF(me);
    Py_XDECREF(self);
    return NULL;
}

/* weights[j] = coeff_j * schedule_j(step); returns the number of non-zero
 * weights, or -1 on error. */
static int
as_hook_weights(HookObject *h, as_state *st, int64_t step, PyObject **step_obj)
{
    int nonzero = 0;
    for (int64_t j = 0; j < h->J; j++) {
        PyObject *s = PyTuple_GET_ITEM(h->schedules, j);
        double m = 1.0;
        if (s == Py_None) {
            m = 1.0;
        }
        else if (as_is_schedule(st, s)) {
            m = as_sched_eval(&((ScheduleObject *)s)->s, step);
        }
        else {
            if (*step_obj == NULL && (*step_obj = PyLong_FromLongLong((long long)step)) == NULL)
                return -1;
            PyObject *r = PyObject_CallOneArg(s, *step_obj);
            if (r == NULL)
                return -1;
            m = PyFloat_AsDouble(r);
            Py_DECREF(r);
            if (m == -1.0 && PyErr_Occurred())
                return -1;
            if (!isfinite(m)) {
                PyErr_Format(PyExc_ValueError,
                             "coeff_schedule of layer %lld returned a non-finite multiplier at step %lld",
                             (long long)h->layer_idx, (long long)step);
                return -1;
            }
        }
        float w = (float)(h->coeffs[j] * m);
        h->weights[j] = PyTuple_GET_ITEM(h->methods, j) == Py_None ? w : 0.0f;
        if (h->weights[j] != 0.0f)
            nonzero++;
    }
    return nonzero;
}

/* Replace the hidden states in (args, kwargs) by `new_h`; returns the
 * (args, kwargs) tuple a forward pre-hook returns. */
static PyObject *
as_hook_replace(as_state *st, PyObject *fargs, PyObject *fkwargs, int from_kwargs, PyObject *new_h)
{
    PyObject *args2 = NULL, *kw2 = NULL, *res = NULL;
    if (from_kwargs) {
        args2 = Py_NewRef(fargs);
        kw2 = PyDict_Copy(fkwargs);
        if (kw2 == NULL || PyDict_SetItem(kw2, st->s_hidden_states, new_h) != 0)
            goto done;
    }
    else {
        Py_ssize_t n = PyTuple_GET_SIZE(fargs);
        args2 = PyTuple_New(n);
        if (args2 == NULL)
            goto done;
        PyTuple_SET_ITEM(args2, 0, Py_NewRef(new_h));
        for (Py_ssize_t i = 1; i < n; i++)
            PyTuple_SET_ITEM(args2, i, Py_NewRef(PyTuple_GET_ITEM(fargs, i)));
        kw2 = fkwargs ? Py_NewRef(fkwargs) : PyDict_New();
        if (kw2 == NULL)
            goto done;
    }
    res = PyTuple_Pack(2, args2, kw2);
done:
    Py_XDECREF(args2);
    Py_XDECREF(kw2);
    return res;
}

static PyObject *
Hook_call(PyObject *self, PyObject *args, PyObject *kwds)
{
    HookObject *hk = (HookObject *)self;
    TrackerObject *tr = (TrackerObject *)hk->tracker;
    as_state *st = as_state_of_type(Py_TYPE(self));
    if (st == NULL)
        return NULL;
    PyObject *module, *fargs, *fkwargs = NULL;
    if (kwds != NULL && PyDict_GET_SIZE(kwds) != 0) {
        PyErr_SetString(PyExc_TypeError, "SteerHook() takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_UnpackTuple(args, "SteerHook", 2, 3, &module, &fargs, &fkwargs))
        return NULL;
    if (!PyTuple_Check(fargs)) {
        PyErr_SetString(PyExc_TypeError, "SteerHook expects the forward's args as a tuple");
        return NULL;
    }
    if (fkwargs == Py_None)
        fkwargs = NULL;
    hk->calls++;

    int from_kwargs = 0;
    PyObject *h = PyTuple_GET_SIZE(fargs) > 0 ? PyTuple_GET_ITEM(fargs, 0) : NULL;
    if (h == NULL) {
        h = as_kw(fkwargs, st->s_hidden_states);
        from_kwargs = 1;
    }
    if (h == NULL)
        Py_RETURN_NONE;            /* nothing we know how to steer */

    PyObject *step_obj = NULL, *deltas = NULL, *new_h = NULL, *res = NULL;
    int64_t step = tr->step;
    int nonzero = as_hook_weights(hk, st, step, &step_obj);
    if (nonzero < 0)
        goto done;

    /* user-supplied delta formulas see the unsteered input */
    for (int64_t j = 0; j < hk->J; j++) {
        PyObject *m = PyTuple_GET_ITEM(hk->methods, j);
        if (m == Py_None)
            continue;
        if (step_obj == NULL && (step_obj = PyLong_FromLongLong((long long)step)) == NULL)
            goto done;
        if (deltas == NULL && (deltas = PyList_New(0)) == NULL)
            goto done;
        PyObject *d = PyObject_CallFunction(m, "OOL", h, step_obj, (long long)hk->layer_idx);
        if (d == NULL)
            goto done;
        int rc = PyList_Append(deltas, d);
        Py_DECREF(d);
        if (rc != 0)
            goto done;
    }
    if (nonzero == 0 && deltas == NULL) {
        res = Py_NewRef(Py_None);
        goto done;
    }

    /* in place with the C kernel when the tensor lives on the CPU, grad mode
     * is off (nothing can have saved it for backward), no steering_method
     * delta may alias it, and it is not the caller's own inputs_embeds */
    int grad = as_attr_true(h, st->s_requires_grad);
    if (grad < 0)
        goto done;
    if (!grad && deltas == NULL) {
        if (hk->grad_enabled_fn == NULL) {
            grad = 1;
        }
        else {
            PyObject *g = PyObject_CallNoArgs(hk->grad_enabled_fn);
            if (g == NULL)
                goto done;
            grad = PyObject_IsTrue(g);
            Py_DECREF(g);
            if (grad < 0)
                goto done;
        }
    }
    int inplace = 0;
    if (!grad && deltas == NULL) {
        as_tensor_view v;
        if (as_tensor_open(&st->dl, h, AS_VIA_AUTO, &v) != 0) {
            PyErr_Clear();
        }
        else {
            as_hidden hid;
            int ok = as_view_hidden(&v, &hid) && hid.D == hk->D &&
                     (uintptr_t)hid.data != tr->embeds_ptr;
            if (ok && nonzero > 0) {
                const int64_t *last = NULL;
                if (as_tracker_last_cpu(tr, st, hid.B, hid.T, &last) != 0) {
                    as_tensor_close(&v);
                    goto done;
                }
                /* the GIL stays held: the weights, the scratch row and the
                 * tracker's index buffer belong to objects other threads use */
                int krc = as_kernel_apply(&hid, hk->dirs, hk->J, hk->weights, 0, last, hk->scratch);
                hk->kernel_calls++;
                if (krc != 0) {
                    as_tensor_close(&v);
                    PyErr_SetString(PyExc_IndexError, "last-token index outside the sequence");
                    goto done;
                }
            }
            inplace = ok;
            as_tensor_close(&v);
        }
    }
    if (inplace) {
        res = Py_NewRef(Py_None);
        goto done;
    }

    /* the same math as torch ops, out of place, without host synchronisation */
    {
        PyObject *w = PyTuple_New(hk->J);
        if (w == NULL)
            goto done;
        for (int64_t j = 0; j < hk->J; j++) {
            PyObject *f = PyFloat_FromDouble((double)hk->weights[j]);
            if (f == NULL) {
                Py_DECREF(w);
                goto done;
            }
            PyTuple_SET_ITEM(w, j, f);
        }
        int64_t B = as_dim(st, h, 0), T = as_dim(st, h, 1);
        PyObject *last = as_tracker_last_tensor(tr, B, T);
        if (last == NULL) {
            Py_DECREF(w);
            goto done;
        }
        new_h = PyObject_CallFunctionObjArgs(hk->torch_apply, h, hk->dirs_dev, w, last,
                                             deltas ? deltas : Py_None, NULL);
        Py_DECREF(w);
        if (new_h == NULL)
            goto done;
    }
    res = as_hook_replace(st, fargs, fkwargs, from_kwargs, new_h);

done:
    Py_XDECREF(step_obj);
    Py_XDECREF(deltas);
    Py_XDECREF(new_h);
    return res;
}

static PyObject *Hook_get_calls(PyObject *self, void *c) { (void)c; return PyLong_FromLongLong((long long)((HookObject *)self)->calls); }
static PyObject *Hook_get_kernel_calls(PyObject *self, void *c) { (void)c; return PyLong_FromLongLong((long long)((HookObject *)self)->kernel_calls); }
static PyObject *Hook_get_layer(PyObject *self, void *c) { (void)c; return PyLong_FromLongLong((long long)((HookObject *)self)->layer_idx); }
static PyObject *Hook_get_tracker(PyObject *self, void *c) { (void)c; return Py_NewRef(((HookObject *)self)->tracker); }

static PyGetSetDef Hook_getset[] = {
    {"calls", Hook_get_calls, NULL, "number of forwards seen", NULL},
    {"kernel_calls", Hook_get_kernel_calls, NULL, "forwards steered by the C kernel in place", NULL},
    {"layer_idx", Hook_get_layer, NULL, "the steered layer", NULL},
    {"tracker", Hook_get_tracker, NULL, "the StepTracker this hook reads", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(Hook_doc,
"SteerHook(tracker, layer_idx, directions, coeffs, schedules, methods, directions_device, torch_apply, grad_enabled=None)\n--\n\n"
"Forward pre-hook (with_kwargs=True) that steers one decoder layer's input.\n"
"Weights w_j = coeffs[j] * schedules[j](step) are evaluated in C at each forward.\n"
"On the CPU with grad mode off (grad_enabled() false), the fused C kernel adds\n"
"the delta in place;\n"
"elsewhere torch_apply(h, directions_device, weights, last_index, deltas)\n"
"computes the same math out of place as torch ops.");

static PyType_Slot Hook_slots[] = {
    {Py_tp_new, Hook_new},
    {Py_tp_dealloc, Hook_dealloc},
    {Py_tp_traverse, Hook_traverse},
    {Py_tp_clear, Hook_clear},
    {Py_tp_call, Hook_call},
    {Py_tp_getset, Hook_getset},
    {Py_tp_doc, (void *)Hook_doc},
    {0, NULL},
};

static PyType_Spec Hook_spec = {
    "autosteer._C.SteerHook", sizeof(HookObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE, Hook_slots};

/* ================================================================== */
/* module functions                                                    */
/* ================================================================== */

PyDoc_STRVAR(apply_delta_doc,
"apply_delta(hidden, directions, weights, last_index=None, via='auto')\n--\n\n"
"Run the fused kernel in place on a CPU tensor hidden[B, T, D] (float32, float16\n"
"or bfloat16; contiguous hidden dimension).  directions: float32 [J, D];\n"
"weights: float32 [J] (all rows) or [B, J] (per row); last_index: int64 [B] or\n"
"None for T - 1.  via='capsule' forces the DLPack capsule protocol.");

static PyObject *
as_apply_delta(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"hidden", "directions", "weights", "last_index", "via", NULL};
    PyObject *hid, *dirs, *weights, *last = Py_None;
    const char *via_s = "auto";
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO|Os:apply_delta", kwlist, &hid, &dirs,
                                     &weights, &last, &via_s))
        return NULL;
    int via;
    if (strcmp(via_s, "auto") == 0)
        via = AS_VIA_AUTO;
    else if (strcmp(via_s, "capsule") == 0)
        via = AS_VIA_CAPSULE;
    else {
        PyErr_Format(PyExc_ValueError, "via must be 'auto' or 'capsule', got %R",
                     PyTuple_GET_SIZE(args) > 4 ? PyTuple_GET_ITEM(args, 4) : Py_None);
        return NULL;
    }
    as_state *st = as_get_state(module);
    as_tensor_view vh, vd, vw, vl;
    int oh = 0, od = 0, ow = 0, ol = 0;
    PyObject *res = NULL;
    float *scratch = NULL;
    if (as_tensor_open(&st->dl, hid, via, &vh) != 0)
        goto done;
    oh = 1;
    if (as_tensor_open(&st->dl, dirs, via, &vd) != 0)
        goto done;
    od = 1;
    if (as_tensor_open(&st->dl, weights, via, &vw) != 0)
        goto done;
    ow = 1;
    if (last != Py_None) {
        if (as_tensor_open(&st->dl, last, via, &vl) != 0)
            goto done;
        ol = 1;
    }
    as_dtype dt;
    if (as_view_dtype(&vh, &dt) != 0) {
        PyErr_SetString(PyExc_TypeError, "hidden must be float32, float16 or bfloat16");
        goto done;
    }
    if (vh.t.device.device_type != AS_DL_CPU || vd.t.device.device_type != AS_DL_CPU ||
        vw.t.device.device_type != AS_DL_CPU || (ol && vl.t.device.device_type != AS_DL_CPU)) {
        PyErr_SetString(PyExc_ValueError, "apply_delta runs on CPU tensors only");
        goto done;
    }
    as_hidden h;
    if (!as_view_hidden(&vh, &h)) {
        PyErr_SetString(PyExc_ValueError,
                        "hidden must be 3-D [B, T, D] with a contiguous hidden dimension");
        goto done;
    }
    int64_t B = vh.t.shape[0], T = vh.t.shape[1], D = vh.t.shape[2];
    if (vd.t.ndim != 2 || vd.t.dtype.code != AS_DL_FLOAT || vd.t.dtype.bits != 32 ||
        vd.t.shape[1] != D || as_tensor_stride(&vd, 1) != 1 || as_tensor_stride(&vd, 0) != D) {
        PyErr_Format(PyExc_ValueError, "directions must be a contiguous float32 [J, %lld] tensor",
                     (long long)D);
        goto done;
    }
    int64_t J = vd.t.shape[0];
    int64_t wstride;
    if (vw.t.dtype.code != AS_DL_FLOAT || vw.t.dtype.bits != 32) {
        PyErr_SetString(PyExc_ValueError, "weights must be float32");
        goto done;
    }
    if (vw.t.ndim == 1 && vw.t.shape[0] == J && as_tensor_stride(&vw, 0) == 1)
        wstride = 0;
    else if (vw.t.ndim == 2 && vw.t.shape[0] == B && vw.t.shape[1] == J &&
             as_tensor_stride(&vw, 1) == 1 && as_tensor_stride(&vw, 0) == J)
        wstride = J;
    else {
        PyErr_Format(PyExc_ValueError,
                     "weights must be a contiguous float32 [%lld] or [%lld, %lld] tensor",
                     (long long)J, (long long)B, (long long)J);
        goto done;
    }
    if (ol && (vl.t.ndim != 1 || vl.t.shape[0] != B || vl.t.dtype.code != AS_DL_INT ||
               vl.t.dtype.bits != 64 || as_tensor_stride(&vl, 0) != 1)) {
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
    krc = as_kernel_apply(&h, (const float *)as_tensor_data(&vd), J,
                          (const float *)as_tensor_data(&vw), wstride,
                          ol ? (const int64_t *)as_tensor_data(&vl) : NULL, scratch);
    Py_END_ALLOW_THREADS
    if (krc != 0) {
        PyErr_Format(PyExc_IndexError, "last_index values must be in [0, %lld)", (long long)T);
        goto done;
    }
    res = Py_NewRef(Py_None);
done:
    PyMem_Free(scratch);
    if (ol) as_tensor_close(&vl);
    if (ow) as_tensor_close(&vw);
    if (od) as_tensor_close(&vd);
    if (oh) as_tensor_close(&vh);
    return res;
}

PyDoc_STRVAR(has_exchange_api_doc,
"has_exchange_api(tensor, /)\n--\n\n"
"True when the tensor's type publishes a usable DLPack C exchange table.");

static PyObject *
as_has_exchange_api(PyObject *module, PyObject *obj)
{
    return PyBool_FromLong(as_tensor_exchange_api(&as_get_state(module)->dl, obj) != NULL);
}

static PyMethodDef as_methods[] = {
    {"apply_delta", (PyCFunction)(void (*)(void))as_apply_delta, METH_VARARGS | METH_KEYWORDS,
     apply_delta_doc},
    {"has_exchange_api", as_has_exchange_api, METH_O, has_exchange_api_doc},
    {NULL, NULL, 0, NULL},
};

/* ================================================================== */
/* module init                                                         */
/* ================================================================== */

static int
as_add_type(PyObject *m, PyType_Spec *spec, PyTypeObject **slot)
{
    PyObject *tp = PyType_FromModuleAndSpec(m, spec, NULL);
    if (tp == NULL)
        return -1;
    *slot = (PyTypeObject *)tp;
    return PyModule_AddType(m, (PyTypeObject *)tp);
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
    as_state *st = as_get_state(m);
    if (PyArray_ImportNumPyAPI() < 0)
        return -1;
    PyObject *errors = PyImport_ImportModule("autosteer.errors");
    if (errors == NULL)
        return -1;
    st->schedule_error = PyObject_GetAttrString(errors, "ScheduleError");
    Py_DECREF(errors);
    if (st->schedule_error == NULL)
        return -1;
    if (as_add_type(m, &Decay_spec, &st->decay_type) < 0 ||
        as_add_type(m, &Cosine_spec, &st->cosine_type) < 0 ||
        as_add_type(m, &Warmup_spec, &st->warmup_type) < 0 ||
        as_add_type(m, &Tracker_spec, &st->tracker_type) < 0 ||
        as_add_type(m, &Hook_spec, &st->hook_type) < 0)
        return -1;
    if (as_intern(&st->s_past_key_values, "past_key_values") < 0 ||
        as_intern(&st->s_cache, "cache") < 0 ||
        as_intern(&st->s_attention_mask, "attention_mask") < 0 ||
        as_intern(&st->s_input_ids, "input_ids") < 0 ||
        as_intern(&st->s_inputs_embeds, "inputs_embeds") < 0 ||
        as_intern(&st->s_hidden_states, "hidden_states") < 0 ||
        as_intern(&st->s_get_seq_length, "get_seq_length") < 0 ||
        as_intern(&st->s_requires_grad, "requires_grad") < 0 ||
        as_intern(&st->s_shape, "shape") < 0 ||
        as_intern(&st->s_add_, "add_") < 0 ||
        as_intern(&st->s_data_ptr, "data_ptr") < 0)
        return -1;
    return 0;
}

static int
as_traverse(PyObject *m, visitproc visit, void *arg)
{
    as_state *st = as_get_state(m);
    Py_VISIT(st->decay_type);
    Py_VISIT(st->cosine_type);
    Py_VISIT(st->warmup_type);
    Py_VISIT(st->tracker_type);
    Py_VISIT(st->hook_type);
    Py_VISIT(st->schedule_error);
    Py_VISIT(st->dl.type);
    return 0;
}

static int
as_clear(PyObject *m)
{
    as_state *st = as_get_state(m);
    Py_CLEAR(st->decay_type);
    Py_CLEAR(st->cosine_type);
    Py_CLEAR(st->warmup_type);
    Py_CLEAR(st->tracker_type);
    Py_CLEAR(st->hook_type);
    Py_CLEAR(st->schedule_error);
    Py_CLEAR(st->s_past_key_values);
    Py_CLEAR(st->s_cache);
    Py_CLEAR(st->s_attention_mask);
    Py_CLEAR(st->s_input_ids);
    Py_CLEAR(st->s_inputs_embeds);
    Py_CLEAR(st->s_hidden_states);
    Py_CLEAR(st->s_get_seq_length);
    Py_CLEAR(st->s_requires_grad);
    Py_CLEAR(st->s_shape);
    Py_CLEAR(st->s_add_);
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
"AutoSteer's C core: schedules, the fused steering kernel and the forward hooks.\n"
"Private: use the autosteer package.");

static struct PyModuleDef as_module_def = {
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
