/*
 * hook.c - SteerHook: the forward pre-hook of one decoder layer on the CPU.
 *
 * At each forward it fills the layer's SteerWeights for the tracker's step,
 * and adds the delta to the layer's input in place with the fused C kernel
 * (kernel.h) when nothing can have saved that input: the tensor is a
 * writable CPU [B, T, D] view without overlapping elements, it does not
 * require grad and grad mode is off, it is not the caller's inputs_embeds,
 * and no vector has a steering_method.  Otherwise it calls the Python
 * fallback once, which computes the same math as torch ops out of place.
 *
 * The direction matrix (float32 [J, D], the layer's single copy of its
 * directions) is held by reference and opened once through DLPack.
 */
#include "module.h"

#include <float.h>
#include <string.h>

#include "kernel.h"

typedef struct {
    PyObject_HEAD
    PyObject *tracker;         /* StepTracker */
    PyObject *weights;         /* SteerWeights */
    PyObject *directions;      /* float32 CPU tensor [J, D], held by reference */
    as_view dview;
    int dview_open;
    const float *dirs;
    int64_t J, D;
    float *scratch;            /* D floats */
    PyObject *fallback;        /* (h, tracker, weights, directions, step) -> new h */
    PyObject *grad_enabled;    /* () -> bool: is autograd recording? */
    PyObject *hidden_kwarg;    /* keyword of the hidden states when not positional */
    int64_t calls;
    int64_t kernel_calls;
} HookObject;

#define AS_HOOK(o) ((HookObject *)(o))

static int
Hook_traverse(PyObject *self, visitproc visit, void *arg)
{
    HookObject *h = AS_HOOK(self);
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(h->tracker);
    Py_VISIT(h->weights);
    Py_VISIT(h->directions);
    Py_VISIT(h->fallback);
    Py_VISIT(h->grad_enabled);
    return 0;
}

static int
Hook_clear(PyObject *self)
{
    HookObject *h = AS_HOOK(self);
    if (h->dview_open)
        as_view_close(&h->dview);
    h->dview_open = 0;
    h->dirs = NULL;
    Py_CLEAR(h->tracker);
    Py_CLEAR(h->weights);
    Py_CLEAR(h->directions);
    Py_CLEAR(h->fallback);
    Py_CLEAR(h->grad_enabled);
    Py_CLEAR(h->hidden_kwarg);
    return 0;
}

static void
Hook_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    (void)Hook_clear(self);
    PyMem_Free(AS_HOOK(self)->scratch);
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* Take (weights, directions) as the hook's vectors, or leave the hook as it
 * was and return -1. */
static int
as_hook_configure(HookObject *hk, as_state *st, PyObject *weights, PyObject *directions)
{
    if (!PyObject_TypeCheck(weights, st->weights_type)) {
        PyErr_Format(PyExc_TypeError, "SteerHook: weights must be a SteerWeights, got %.100s",
                     Py_TYPE(weights)->tp_name);
        return -1;
    }
    as_view v;
    if (as_view_open(&st->dl, directions, AS_VIA_AUTO, &v) != 0)
        return -1;
    int64_t J = as_weights_count(weights);
    if (!as_view_f32_matrix(&v, J, -1) || v.t.shape[1] < 1) {
        as_view_close(&v);
        PyErr_Format(PyExc_ValueError,
                     "SteerHook: directions must be a contiguous float32 CPU tensor [%lld, D]",
                     (long long)J);
        return -1;
    }
    int64_t D = v.t.shape[1];
    float *scratch = PyMem_Malloc((size_t)D * sizeof(float));
    if (scratch == NULL) {
        as_view_close(&v);
        PyErr_NoMemory();
        return -1;
    }
    if (hk->dview_open)
        as_view_close(&hk->dview);
    PyMem_Free(hk->scratch);
    hk->dview = v;
    hk->dview_open = 1;
    hk->dirs = (const float *)as_view_data(&v);
    hk->J = J;
    hk->D = D;
    hk->scratch = scratch;
    Py_XSETREF(hk->weights, Py_NewRef(weights));
    Py_XSETREF(hk->directions, Py_NewRef(directions));
    return 0;
}

static PyObject *
Hook_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"tracker", "weights", "directions", "fallback", "grad_enabled",
                             "hidden_states_kwarg", NULL};
    PyObject *tracker = NULL, *weights = NULL, *dirs = NULL, *fallback = NULL, *grad = NULL;
    PyObject *hidden_kw = NULL;
    as_state *st = as_state_of_type(type);
    if (st == NULL)
        return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$OOOOOO:SteerHook", kwlist, &tracker, &weights,
                                     &dirs, &fallback, &grad, &hidden_kw))
        return NULL;
    const char *missing = tracker == NULL ? "tracker" : weights == NULL ? "weights"
                          : dirs == NULL ? "directions" : fallback == NULL ? "fallback"
                          : grad == NULL ? "grad_enabled" : hidden_kw == NULL ? "hidden_states_kwarg"
                          : NULL;
    if (missing != NULL) {
        PyErr_Format(PyExc_TypeError, "SteerHook() missing required keyword argument '%s'", missing);
        return NULL;
    }
    if (!PyObject_TypeCheck(tracker, st->tracker_type)) {
        PyErr_SetString(PyExc_TypeError, "SteerHook: tracker must be a StepTracker");
        return NULL;
    }
    if (!PyCallable_Check(fallback) || !PyCallable_Check(grad)) {
        PyErr_SetString(PyExc_TypeError, "SteerHook: fallback and grad_enabled must be callable");
        return NULL;
    }
    HookObject *self = (HookObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    if ((self->hidden_kwarg = as_name_arg(hidden_kw, "SteerHook", "hidden_states_kwarg")) == NULL ||
        as_hook_configure(self, st, weights, dirs) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    self->tracker = Py_NewRef(tracker);
    self->fallback = Py_NewRef(fallback);
    self->grad_enabled = Py_NewRef(grad);
    return (PyObject *)self;
}

/* Replace the hidden states in (args, kwargs) by `new_h`; returns the
 * (args, kwargs) tuple a forward pre-hook returns. */
static PyObject *
as_hook_replace(HookObject *hk, PyObject *fargs, PyObject *fkwargs, int from_kwargs, PyObject *new_h)
{
    PyObject *args2 = NULL, *kw2 = NULL, *res = NULL;
    if (from_kwargs) {
        args2 = Py_NewRef(fargs);
        kw2 = PyDict_Copy(fkwargs);
        if (kw2 == NULL || PyDict_SetItem(kw2, hk->hidden_kwarg, new_h) != 0)
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

/* May the kernel write `h` in place?  1 yes, 0 no, -1 on error. */
static int
as_hook_may_write(HookObject *hk, as_state *st, PyObject *h, const as_hidden *hid)
{
    if (hid->D != hk->D || as_weights_has_methods(hk->weights) ||
        (uintptr_t)hid->data == as_tracker_embeds_ptr(hk->tracker))
        return 0;
    /* nothing may have saved it for backward */
    int grad = as_attr_true(h, st->s_requires_grad);
    if (grad != 0)
        return grad < 0 ? -1 : 0;
    PyObject *g = PyObject_CallNoArgs(hk->grad_enabled);
    if (g == NULL)
        return -1;
    grad = PyObject_IsTrue(g);
    Py_DECREF(g);
    return grad < 0 ? -1 : !grad;
}

static PyObject *
Hook_call(PyObject *self, PyObject *args, PyObject *kwds)
{
    HookObject *hk = AS_HOOK(self);
    as_state *st = as_state_of_type(Py_TYPE(self));
    if (st == NULL)
        return NULL;
    PyObject *module, *fargs, *fkwargs;
    if (as_hook_args(args, kwds, "SteerHook", &module, &fargs, &fkwargs) < 0)
        return NULL;
    if (!PyTuple_Check(fargs)) {
        PyErr_SetString(PyExc_TypeError, "SteerHook expects the forward's args as a tuple");
        return NULL;
    }
    hk->calls++;
    int from_kwargs = 0;
    PyObject *h = PyTuple_GET_SIZE(fargs) > 0 ? PyTuple_GET_ITEM(fargs, 0) : NULL;
    if (h == NULL) {
        h = as_kw(fkwargs, hk->hidden_kwarg);
        from_kwargs = 1;
    }
    if (h == NULL)
        Py_RETURN_NONE;            /* nothing we know how to steer */

    PyObject *res = NULL, *step_obj = NULL, *new_h = NULL;
    int64_t step = as_tracker_step(hk->tracker);
    if (step < 0)
        return NULL;               /* another thread's forward (SteerStateError) */
    int64_t layer = as_weights_layer(hk->weights);
    as_view v;
    int opened = as_view_open(&st->dl, h, AS_VIA_AUTO, &v) == 0;
    if (!opened)
        PyErr_Clear();   /* the fallback reads it as a tensor */
    as_hidden hid;
    int hidden = opened && as_view_hidden(&v, &hid);
    int nonzero;
    if (as_weights_fill(hk->weights, st, step, opened ? as_view_storage_max(&v) : FLT_MAX,
                        opened ? as_view_storage_name(&v) : "float32", &nonzero) < 0)
        goto done;
    int64_t G = as_weights_groups(hk->weights);
    const int64_t *rows = NULL;
    if (G > 0) {
        int64_t B = opened && v.t.ndim > 0 ? v.t.shape[0] : as_dim(st, h, 0);
        if (as_tracker_rows(hk->tracker, st, B, G, layer, &rows) < 0)
            goto done;
    }
    if (nonzero == 0 && !as_weights_has_methods(hk->weights)) {
        res = Py_NewRef(Py_None);
        goto done;
    }
    if (hidden && hid.T == 0) {
        PyErr_Format(st->invalid_argument_error,
                     "layer %lld got hidden states with 0 positions: give the model at least one token",
                     (long long)layer);
        goto done;
    }
    int inplace = hidden ? as_hook_may_write(hk, st, h, &hid) : 0;
    if (inplace < 0)
        goto done;
    if (inplace) {
        const int64_t *last = NULL;
        if (as_tracker_last_cpu(hk->tracker, st, hid.B, hid.T, &last) != 0)
            goto done;
        /* the GIL stays held: the weights, the scratch row and the tracker's
         * index buffers belong to objects other threads use */
        int krc = as_kernel_apply(&hid, hk->dirs, hk->J, as_weights_rows(hk->weights),
                                  G > 0 ? hk->J : 0, rows, last, hk->scratch);
        hk->kernel_calls++;
        if (krc == -2) {
            PyErr_Format(st->invalid_argument_error,
                         "layer %lld: the steered hidden states are not finite in %s (the layer's input is "
                         "already NaN/inf, or coeff * rms(h) overflows it), so the forward would emit "
                         "garbage; reduce the coefficient(s) of this layer's vectors",
                         (long long)layer, as_view_storage_name(&v));
            goto done;
        }
        if (krc != 0) {
            PyErr_SetString(PyExc_IndexError, "last-token index outside the sequence");
            goto done;
        }
        res = Py_NewRef(Py_None);
        goto done;
    }
    /* the same math as torch ops, out of place (the view is not needed) */
    if (opened)
        as_view_close(&v);
    opened = 0;
    if ((step_obj = PyLong_FromLongLong((long long)step)) == NULL)
        goto done;
    new_h = PyObject_CallFunctionObjArgs(hk->fallback, h, hk->tracker, hk->weights, hk->directions,
                                         step_obj, NULL);
    if (new_h == NULL)
        goto done;
    res = as_hook_replace(hk, fargs, fkwargs, from_kwargs, new_h);
done:
    if (opened)
        as_view_close(&v);
    Py_XDECREF(step_obj);
    Py_XDECREF(new_h);
    return res;
}

/* ================================================================== */
/* methods                                                             */
/* ================================================================== */

static PyObject *
Hook_reconfigure(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    as_state *st = as_state_of_type(Py_TYPE(self));
    if (st == NULL)
        return NULL;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "reconfigure() takes 2 arguments (weights, directions), got %zd",
                     nargs);
        return NULL;
    }
    if (as_hook_configure(AS_HOOK(self), st, args[0], args[1]) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* copy.deepcopy: a hook on the copied model, computing what this one does. */
static PyObject *
Hook_deepcopy(PyObject *self, PyObject *memo)
{
    HookObject *hk = AS_HOOK(self);
    PyObject *tracker = NULL, *weights = NULL, *dirs = NULL, *fallback = NULL, *grad = NULL;
    PyObject *kw = NULL, *empty = NULL, *key = NULL, *res = NULL;
    if ((tracker = as_deepcopy(hk->tracker, memo)) == NULL ||
        (weights = as_deepcopy(hk->weights, memo)) == NULL ||
        (dirs = as_deepcopy(hk->directions, memo)) == NULL ||
        (fallback = as_deepcopy(hk->fallback, memo)) == NULL ||
        (grad = as_deepcopy(hk->grad_enabled, memo)) == NULL)
        goto done;
    kw = Py_BuildValue("{s:O,s:O,s:O,s:O,s:O,s:O}", "tracker", tracker, "weights", weights,
                       "directions", dirs, "fallback", fallback, "grad_enabled", grad,
                       "hidden_states_kwarg", hk->hidden_kwarg);
    if (kw == NULL || (empty = PyTuple_New(0)) == NULL)
        goto done;
    res = PyObject_Call((PyObject *)Py_TYPE(self), empty, kw);
    if (res == NULL)
        goto done;
    key = PyLong_FromVoidPtr(self);
    if (key == NULL || PyDict_SetItem(memo, key, res) != 0)
        Py_CLEAR(res);
done:
    Py_XDECREF(tracker);
    Py_XDECREF(weights);
    Py_XDECREF(dirs);
    Py_XDECREF(fallback);
    Py_XDECREF(grad);
    Py_XDECREF(kw);
    Py_XDECREF(empty);
    Py_XDECREF(key);
    return res;
}

static PyObject *Hook_get_calls(PyObject *self, void *c) { (void)c; return PyLong_FromLongLong((long long)AS_HOOK(self)->calls); }
static PyObject *Hook_get_kernel_calls(PyObject *self, void *c) { (void)c; return PyLong_FromLongLong((long long)AS_HOOK(self)->kernel_calls); }
static PyObject *Hook_get_layer(PyObject *self, void *c) { (void)c; return PyLong_FromLongLong((long long)as_weights_layer(AS_HOOK(self)->weights)); }
static PyObject *Hook_get_tracker(PyObject *self, void *c) { (void)c; return Py_NewRef(AS_HOOK(self)->tracker); }
static PyObject *Hook_get_weights(PyObject *self, void *c) { (void)c; return Py_NewRef(AS_HOOK(self)->weights); }
static PyObject *Hook_get_directions(PyObject *self, void *c) { (void)c; return Py_NewRef(AS_HOOK(self)->directions); }

static PyGetSetDef Hook_getset[] = {
    {"calls", Hook_get_calls, NULL, "number of forwards seen", NULL},
    {"kernel_calls", Hook_get_kernel_calls, NULL, "forwards steered by the C kernel in place", NULL},
    {"layer_idx", Hook_get_layer, NULL, "the steered layer", NULL},
    {"tracker", Hook_get_tracker, NULL, "the StepTracker this hook reads", NULL},
    {"weights", Hook_get_weights, NULL, "the SteerWeights of the layer's vectors", NULL},
    {"directions", Hook_get_directions, NULL, "the direction matrix (held by reference)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef Hook_methods[] = {
    {"reconfigure", (PyCFunction)(void (*)(void))Hook_reconfigure, METH_FASTCALL,
     "reconfigure($self, weights, directions, /)\n--\n\n"
     "Steer with other vectors from the next forward on; on error the hook is unchanged."},
    {"__deepcopy__", Hook_deepcopy, METH_O, NULL},
    {"__reduce_ex__", as_refuse_pickle, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(Hook_doc,
"SteerHook(*, tracker, weights, directions, fallback, grad_enabled, hidden_states_kwarg)\n--\n\n"
"Forward pre-hook (with_kwargs=True) that steers one decoder layer's input on the\n"
"CPU.  At each forward: weights.fill(step) for the tracker's step, then, when the\n"
"input may be written in place (a CPU [B, T, D] view, not requiring grad,\n"
"grad_enabled() false, not the caller's inputs_embeds, no steering_method), the\n"
"fused C kernel adds rms(h[b, last_b]) * W[group(b)] @ directions to every\n"
"position.  Otherwise fallback(h, tracker, weights, directions, step) returns the\n"
"steered input, computed as torch ops.  directions: contiguous float32 CPU\n"
"tensor [J, D], held by reference (no copy).  hidden_states_kwarg: the keyword\n"
"of the hidden states when the layer gets them by keyword.");

static PyType_Slot Hook_slots[] = {
    {Py_tp_new, Hook_new},
    {Py_tp_dealloc, Hook_dealloc},
    {Py_tp_traverse, Hook_traverse},
    {Py_tp_clear, Hook_clear},
    {Py_tp_call, Hook_call},
    {Py_tp_getset, Hook_getset},
    {Py_tp_methods, Hook_methods},
    {Py_tp_doc, (void *)Hook_doc},
    {0, NULL},
};

static PyType_Spec Hook_spec = {
    "autosteer._C.SteerHook", sizeof(HookObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE, Hook_slots};

int
as_hook_add_type(PyObject *m, as_state *st)
{
    st->hook_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &Hook_spec, NULL);
    if (st->hook_type == NULL)
        return -1;
    return PyModule_AddType(m, st->hook_type);
}
