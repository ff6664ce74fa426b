/*
 * weights.c - SteerWeights: the per-forward weights of one layer's vectors.
 *
 * At each forward, once per vector j:
 *     w_j = coeff_j * schedule_j(step)          (0 for a steering_method vector)
 * with the schedule evaluated in C for our exact schedule types and called
 * otherwise; a multiplier that is not a finite real number, or a product
 * outside the finite range of the hidden states' storage type, is an
 * InvalidArgumentError naming the layer and the vector.  Then one row of J
 * weights per group of batch rows:
 *     W[g, j] = membership[g, j] * w_j          (a single row w without groups)
 * into a float32 buffer allocated once.  Both forward paths read W: the C
 * SteerHook (CPU, fused kernel) and the Python torch hook (other devices).
 */
#include "module.h"

#include <float.h>
#include <math.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    int64_t layer_idx;
    int64_t J, G;              /* G: rows of the membership matrix, 0 without one */
    double *coeffs;            /* J */
    float *w;                  /* J: w_j of the current forward */
    PyObject *schedules;       /* tuple of J: None | schedule | callable */
    PyObject *methods;         /* tuple of J: None | steering_method */
    PyObject *index;           /* tuple of J ints: each vector's place in Steer.get_all() */
    PyObject *membership;      /* float32 CPU tensor [G, J] of 0/1, held by reference, or NULL */
    as_view mview;
    int mview_open;
    PyObject *buffer;          /* NumPy float32 [max(G, 1), J]: the rows W */
    Py_buffer buf;
    int buf_held;
    int has_methods;
} WeightsObject;

#define AS_WEIGHTS(o) ((WeightsObject *)(o))

static int
Weights_traverse(PyObject *self, visitproc visit, void *arg)
{
    WeightsObject *w = AS_WEIGHTS(self);
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(w->schedules);
    Py_VISIT(w->methods);
    Py_VISIT(w->index);
    Py_VISIT(w->membership);
    Py_VISIT(w->buffer);
    return 0;
}

static int
Weights_clear(PyObject *self)
{
    WeightsObject *w = AS_WEIGHTS(self);
    if (w->mview_open)
        as_view_close(&w->mview);
    w->mview_open = 0;
    if (w->buf_held)
        PyBuffer_Release(&w->buf);
    w->buf_held = 0;
    Py_CLEAR(w->schedules);
    Py_CLEAR(w->methods);
    Py_CLEAR(w->index);
    Py_CLEAR(w->membership);
    Py_CLEAR(w->buffer);
    return 0;
}

static void
Weights_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    (void)Weights_clear(self);
    PyMem_Free(AS_WEIGHTS(self)->coeffs);
    PyMem_Free(AS_WEIGHTS(self)->w);
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* A tuple of J ints (the vectors' places in get_all()); 0 or -1. */
static int
as_weights_set_index(WeightsObject *w, PyObject *index)
{
    PyObject *t = PySequence_Tuple(index);
    if (t == NULL)
        return -1;
    if (PyTuple_GET_SIZE(t) != w->J) {
        PyErr_Format(PyExc_ValueError, "SteerWeights: index must have %lld entries, got %zd",
                     (long long)w->J, PyTuple_GET_SIZE(t));
        Py_DECREF(t);
        return -1;
    }
    for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(t); j++) {
        if (!PyLong_Check(PyTuple_GET_ITEM(t, j))) {
            PyErr_SetString(PyExc_TypeError, "SteerWeights: index must hold ints");
            Py_DECREF(t);
            return -1;
        }
    }
    Py_XSETREF(w->index, t);
    return 0;
}

/* Take `membership` (CPU float32 [G, J] of 0/1) by reference; 0 or -1. */
static int
as_weights_set_membership(WeightsObject *w, as_state *st, PyObject *membership)
{
    if (as_view_open(&st->dl, membership, AS_VIA_AUTO, &w->mview) != 0)
        return -1;
    w->mview_open = 1;
    if (!as_view_f32_matrix(&w->mview, -1, w->J) || w->mview.t.shape[0] < 1) {
        PyErr_Format(PyExc_ValueError,
                     "SteerWeights: membership must be a contiguous float32 CPU tensor [G, %lld], G >= 1",
                     (long long)w->J);
        return -1;
    }
    w->G = w->mview.t.shape[0];
    const float *m = (const float *)as_view_data(&w->mview);
    for (int64_t i = 0; i < w->G * w->J; i++) {
        if (m[i] != 0.0f && m[i] != 1.0f) {
            char v[40];
            as_repr_double((double)m[i], v, sizeof v);
            PyErr_Format(PyExc_ValueError, "SteerWeights: membership must hold 0 or 1, got %s at [%lld, %lld]",
                         v, (long long)(i / w->J), (long long)(i % w->J));
            return -1;
        }
    }
    w->membership = Py_NewRef(membership);
    return 0;
}

/* numpy.zeros((rows, J), "float32"), held through the buffer protocol. */
static int
as_weights_alloc_buffer(WeightsObject *w)
{
    int rc = -1;
    PyObject *np = PyImport_ImportModule("numpy"), *zeros = NULL;
    if (np == NULL)
        return -1;
    zeros = PyObject_GetAttrString(np, "zeros");
    if (zeros == NULL)
        goto done;
    w->buffer = PyObject_CallFunction(zeros, "((LL)s)", (long long)(w->G > 0 ? w->G : 1),
                                      (long long)w->J, "float32");
    if (w->buffer == NULL)
        goto done;
    if (PyObject_GetBuffer(w->buffer, &w->buf, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) != 0)
        goto done;
    w->buf_held = 1;
    rc = 0;
done:
    Py_XDECREF(zeros);
    Py_DECREF(np);
    return rc;
}

static PyObject *
Weights_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"layer_idx", "coeffs", "schedules", "methods", "membership", "index", NULL};
    PyObject *layer = NULL, *coeffs = NULL, *schedules = NULL, *methods = NULL;
    PyObject *membership = Py_None, *index = Py_None;
    as_state *st = as_state_of_type(type);
    if (st == NULL)
        return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$OOOOOO:SteerWeights", kwlist, &layer, &coeffs,
                                     &schedules, &methods, &membership, &index))
        return NULL;
    const char *missing = layer == NULL ? "layer_idx" : coeffs == NULL ? "coeffs"
                          : schedules == NULL ? "schedules" : methods == NULL ? "methods" : NULL;
    if (missing != NULL) {
        PyErr_Format(PyExc_TypeError, "SteerWeights() missing required keyword argument '%s'", missing);
        return NULL;
    }
    PyObject *co = NULL, *range = NULL;
    WeightsObject *self = (WeightsObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->layer_idx = PyLong_AsLongLong(layer);
    if (self->layer_idx == -1 && PyErr_Occurred())
        goto fail;
    co = PySequence_Tuple(coeffs);
    if (co == NULL || (self->schedules = PySequence_Tuple(schedules)) == NULL ||
        (self->methods = PySequence_Tuple(methods)) == NULL)
        goto fail;
    self->J = PyTuple_GET_SIZE(co);
    if (self->J == 0 || PyTuple_GET_SIZE(self->schedules) != self->J ||
        PyTuple_GET_SIZE(self->methods) != self->J) {
        PyErr_Format(PyExc_ValueError,
                     "SteerWeights: coeffs, schedules and methods must have the same non-zero length "
                     "(got %lld, %zd, %zd)",
                     (long long)self->J, PyTuple_GET_SIZE(self->schedules), PyTuple_GET_SIZE(self->methods));
        goto fail;
    }
    self->coeffs = PyMem_Malloc((size_t)self->J * sizeof(double));
    self->w = PyMem_Calloc((size_t)self->J, sizeof(float));
    if (self->coeffs == NULL || self->w == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    for (int64_t j = 0; j < self->J; j++) {
        PyObject *s = PyTuple_GET_ITEM(self->schedules, j), *m = PyTuple_GET_ITEM(self->methods, j);
        double c;
        int real = as_real_value(st, PyTuple_GET_ITEM(co, j), &c);
        if (real < 0)
            goto fail;
        if (!real || !isfinite(c) || fabs(c) > FLT_MAX) {
            PyErr_Format(st->invalid_argument_error,
                         "SteerWeights: coefficient %lld must be a real number finite in float32, got %R",
                         (long long)j, PyTuple_GET_ITEM(co, j));
            goto fail;
        }
        self->coeffs[j] = c;
        if (s != Py_None && !PyCallable_Check(s)) {
            PyErr_Format(PyExc_TypeError, "SteerWeights: schedule %lld is not callable", (long long)j);
            goto fail;
        }
        if (m != Py_None) {
            if (!PyCallable_Check(m)) {
                PyErr_Format(PyExc_TypeError, "SteerWeights: steering_method %lld is not callable",
                             (long long)j);
                goto fail;
            }
            self->has_methods = 1;
        }
    }
    if (index == Py_None) {
        range = PyObject_CallFunction((PyObject *)&PyRange_Type, "L", (long long)self->J);
        if (range == NULL || as_weights_set_index(self, range) < 0)
            goto fail;
    }
    else if (as_weights_set_index(self, index) < 0) {
        goto fail;
    }
    if (membership != Py_None && as_weights_set_membership(self, st, membership) < 0)
        goto fail;
    if (as_weights_alloc_buffer(self) < 0)
        goto fail;
    Py_DECREF(co);
    Py_XDECREF(range);
    return (PyObject *)self;
fail:
    Py_XDECREF(co);
    Py_XDECREF(range);
    Py_DECREF(self);
    return NULL;
}

/* ================================================================== */
/* the per-forward computation                                         */
/* ================================================================== */

/* InvalidArgumentError for a schedule callable that returned `r`. */
static void
as_weights_bad_multiplier(WeightsObject *w, as_state *st, int64_t j, int64_t step, PyObject *r)
{
    PyObject *got = as_describe(r);
    if (got == NULL)
        return;
    PyErr_Format(st->invalid_argument_error,
                 "the coeff_schedule of vector %R (layer %lld) returned %U at step %lld: expected a "
                 "finite real number",
                 PyTuple_GET_ITEM(w->index, j), (long long)w->layer_idx, got, (long long)step);
    Py_DECREF(got);
}

int
as_weights_fill(PyObject *self, as_state *st, int64_t step, double limit, const char *storage,
                int *nonzero)
{
    WeightsObject *w = AS_WEIGHTS(self);
    PyObject *step_obj = NULL;
    int rc = -1, nz = 0;
    if (!(limit <= FLT_MAX))
        limit = FLT_MAX;           /* the weights themselves are float32 */
    for (int64_t j = 0; j < w->J; j++) {
        PyObject *s = PyTuple_GET_ITEM(w->schedules, j);
        double m = 1.0;
        if (s != Py_None) {
            const as_sched *sched = as_sched_exact(st, s);
            if (sched != NULL) {
                m = as_sched_eval(sched, step);
            }
            else {
                if (step_obj == NULL && (step_obj = PyLong_FromLongLong((long long)step)) == NULL)
                    goto done;
                PyObject *r = PyObject_CallOneArg(s, step_obj);
                if (r == NULL)
                    goto done;
                int real = as_real_value(st, r, &m);
                if (real < 0)
                    PyErr_Clear();
                if (real <= 0 || !isfinite(m)) {
                    as_weights_bad_multiplier(w, st, j, step, r);
                    Py_DECREF(r);
                    goto done;
                }
                Py_DECREF(r);
            }
        }
        float wj = 0.0f;
        if (PyTuple_GET_ITEM(w->methods, j) == Py_None) {
            double v = w->coeffs[j] * m;
            if (!(fabs(v) <= limit)) {
                char c[40], ms[40], vs[40], ls[40];
                as_repr_double(w->coeffs[j], c, sizeof c);
                as_repr_double(m, ms, sizeof ms);
                as_repr_double(v, vs, sizeof vs);
                as_repr_double(limit, ls, sizeof ls);
                PyErr_Format(st->invalid_argument_error,
                             "vector %R on layer %lld at step %lld: coeff %s * schedule multiplier %s "
                             "= %s is outside the finite range of %s hidden states (|weight| <= %s)",
                             PyTuple_GET_ITEM(w->index, j), (long long)w->layer_idx, (long long)step,
                             c, ms, vs, storage, ls);
                goto done;
            }
            wj = (float)v;
        }
        w->w[j] = wj;
        if (wj != 0.0f)
            nz++;
    }
    float *rows = (float *)w->buf.buf;
    if (w->G == 0) {
        memcpy(rows, w->w, (size_t)w->J * sizeof(float));
    }
    else {
        const float *mem = (const float *)as_view_data(&w->mview);
        for (int64_t g = 0; g < w->G; g++)
            for (int64_t j = 0; j < w->J; j++)
                rows[g * w->J + j] = mem[g * w->J + j] * w->w[j];
    }
    *nonzero = nz;
    rc = 0;
done:
    Py_XDECREF(step_obj);
    return rc;
}

int64_t as_weights_count(PyObject *self) { return AS_WEIGHTS(self)->J; }
int64_t as_weights_groups(PyObject *self) { return AS_WEIGHTS(self)->G; }
int64_t as_weights_layer(PyObject *self) { return AS_WEIGHTS(self)->layer_idx; }
int as_weights_has_methods(PyObject *self) { return AS_WEIGHTS(self)->has_methods; }
const float *as_weights_rows(PyObject *self) { return (const float *)AS_WEIGHTS(self)->buf.buf; }
PyObject *as_weights_buffer(PyObject *self) { return AS_WEIGHTS(self)->buffer; }

/* ================================================================== */
/* methods                                                             */
/* ================================================================== */

static PyObject *
Weights_fill(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    as_state *st = as_state_of_type(Py_TYPE(self));
    if (st == NULL)
        return NULL;
    if (nargs < 1 || nargs > 3) {
        PyErr_Format(PyExc_TypeError, "fill() takes 1 to 3 arguments (step, limit, storage), got %zd",
                     nargs);
        return NULL;
    }
    long long step = PyLong_AsLongLong(args[0]);
    if (step == -1 && PyErr_Occurred())
        return NULL;
    double limit = FLT_MAX;
    if (nargs > 1 && (limit = PyFloat_AsDouble(args[1])) == -1.0 && PyErr_Occurred())
        return NULL;
    const char *storage = "float32";
    if (nargs > 2 && (storage = PyUnicode_AsUTF8(args[2])) == NULL)
        return NULL;
    int nonzero;
    if (as_weights_fill(self, st, (int64_t)step, limit, storage, &nonzero) < 0)
        return NULL;
    return Py_NewRef(AS_WEIGHTS(self)->buffer);
}

static PyObject *
Weights_deepcopy(PyObject *self, PyObject *memo)
{
    WeightsObject *w = AS_WEIGHTS(self);
    PyObject *coeffs = NULL, *scheds = NULL, *methods = NULL, *mem = NULL, *kw = NULL;
    PyObject *empty = NULL, *key = NULL, *res = NULL;
    if ((coeffs = PyTuple_New(w->J)) == NULL)
        goto done;
    for (int64_t j = 0; j < w->J; j++) {
        PyObject *c = PyFloat_FromDouble(w->coeffs[j]);
        if (c == NULL)
            goto done;
        PyTuple_SET_ITEM(coeffs, j, c);
    }
    if ((scheds = as_deepcopy(w->schedules, memo)) == NULL ||
        (methods = as_deepcopy(w->methods, memo)) == NULL ||
        (mem = w->membership ? as_deepcopy(w->membership, memo) : Py_NewRef(Py_None)) == NULL)
        goto done;
    kw = Py_BuildValue("{s:L,s:O,s:O,s:O,s:O,s:O}", "layer_idx", (long long)w->layer_idx, "coeffs",
                       coeffs, "schedules", scheds, "methods", methods, "membership", mem, "index",
                       w->index);
    if (kw == NULL || (empty = PyTuple_New(0)) == NULL)
        goto done;
    res = PyObject_Call((PyObject *)Py_TYPE(self), empty, kw);
    if (res == NULL)
        goto done;
    key = PyLong_FromVoidPtr(self);
    if (key == NULL || PyDict_SetItem(memo, key, res) != 0)
        Py_CLEAR(res);
done:
    Py_XDECREF(coeffs);
    Py_XDECREF(scheds);
    Py_XDECREF(methods);
    Py_XDECREF(mem);
    Py_XDECREF(kw);
    Py_XDECREF(empty);
    Py_XDECREF(key);
    return res;
}

static PyObject *Weights_get_layer(PyObject *self, void *c) { (void)c; return PyLong_FromLongLong((long long)AS_WEIGHTS(self)->layer_idx); }
static PyObject *Weights_get_count(PyObject *self, void *c) { (void)c; return PyLong_FromLongLong((long long)AS_WEIGHTS(self)->J); }
static PyObject *Weights_get_groups(PyObject *self, void *c) { (void)c; return PyLong_FromLongLong((long long)AS_WEIGHTS(self)->G); }
static PyObject *Weights_get_schedules(PyObject *self, void *c) { (void)c; return Py_NewRef(AS_WEIGHTS(self)->schedules); }
static PyObject *Weights_get_methods(PyObject *self, void *c) { (void)c; return Py_NewRef(AS_WEIGHTS(self)->methods); }
static PyObject *Weights_get_index(PyObject *self, void *c) { (void)c; return Py_NewRef(AS_WEIGHTS(self)->index); }
static PyObject *Weights_get_has_methods(PyObject *self, void *c) { (void)c; return PyBool_FromLong(AS_WEIGHTS(self)->has_methods); }
static PyObject *Weights_get_buffer(PyObject *self, void *c) { (void)c; return Py_NewRef(AS_WEIGHTS(self)->buffer); }

static PyObject *
Weights_get_membership(PyObject *self, void *c)
{
    (void)c;
    PyObject *m = AS_WEIGHTS(self)->membership;
    return Py_NewRef(m != NULL ? m : Py_None);
}

static PyObject *
Weights_get_coeffs(PyObject *self, void *c)
{
    (void)c;
    WeightsObject *w = AS_WEIGHTS(self);
    PyObject *t = PyTuple_New(w->J);
    if (t == NULL)
        return NULL;
    for (int64_t j = 0; j < w->J; j++) {
        PyObject *f = PyFloat_FromDouble(w->coeffs[j]);
        if (f == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, j, f);
    }
    return t;
}

static int
Weights_set_index(PyObject *self, PyObject *value, void *c)
{
    (void)c;
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete index");
        return -1;
    }
    return as_weights_set_index(AS_WEIGHTS(self), value);
}

static PyGetSetDef Weights_getset[] = {
    {"layer_idx", Weights_get_layer, NULL, "the layer these vectors steer", NULL},
    {"count", Weights_get_count, NULL, "J, the number of vectors", NULL},
    {"groups", Weights_get_groups, NULL, "G, the rows of the membership matrix (0 without one)", NULL},
    {"coeffs", Weights_get_coeffs, NULL, "the coefficients (tuple of J floats)", NULL},
    {"schedules", Weights_get_schedules, NULL, "the schedules (tuple of J: None, a schedule or a callable)", NULL},
    {"methods", Weights_get_methods, NULL, "the steering_method of each vector (tuple of J, None for the formula)", NULL},
    {"has_methods", Weights_get_has_methods, NULL, "True when a vector has a steering_method", NULL},
    {"membership", Weights_get_membership, NULL, "the membership matrix [G, J] or None", NULL},
    {"index", Weights_get_index, Weights_set_index, "each vector's position in Steer.get_all() (for error messages)", NULL},
    {"buffer", Weights_get_buffer, NULL, "the weights rows W (NumPy float32 [max(G, 1), J]) of the last fill", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef Weights_methods[] = {
    {"fill", (PyCFunction)(void (*)(void))Weights_fill, METH_FASTCALL,
     "fill($self, step, limit=3.4028234663852886e+38, storage='float32', /)\n--\n\n"
     "Compute the weights rows W for `step` into the buffer and return it (valid\n"
     "until the next fill).  `limit` is the largest finite value of the hidden\n"
     "states' storage type (named `storage` in errors)."},
    {"__deepcopy__", Weights_deepcopy, METH_O, NULL},
    {"__reduce_ex__", as_refuse_pickle, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(Weights_doc,
"SteerWeights(*, layer_idx, coeffs, schedules, methods, membership=None, index=None)\n--\n\n"
"The per-forward weights of the vectors on one layer: w_j = coeffs[j] *\n"
"schedules[j](step) (0 where methods[j] is a steering_method), then\n"
"W[g, j] = membership[g, j] * w_j for every group g (membership: float32 CPU\n"
"tensor [G, J] of 0/1, held by reference), or the single row w without one.\n"
"index names each vector in errors (its position in Steer.get_all()).");

static PyType_Slot Weights_slots[] = {
    {Py_tp_new, Weights_new},
    {Py_tp_dealloc, Weights_dealloc},
    {Py_tp_traverse, Weights_traverse},
    {Py_tp_clear, Weights_clear},
    {Py_tp_getset, Weights_getset},
    {Py_tp_methods, Weights_methods},
    {Py_tp_doc, (void *)Weights_doc},
    {0, NULL},
};

static PyType_Spec Weights_spec = {
    "autosteer._C.SteerWeights", sizeof(WeightsObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE, Weights_slots};

int
as_weights_add_type(PyObject *m, as_state *st)
{
    st->weights_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &Weights_spec, NULL);
    if (st->weights_type == NULL)
        return -1;
    return PyModule_AddType(m, st->weights_type);
}
