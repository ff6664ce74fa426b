/*
 * tracker.c - StepTracker: what every steered layer needs to know about the
 * current forward.
 *
 * Registered (with_kwargs=True) as a forward pre-hook on the module that owns
 * the decoder layer list.  At each forward it reads the KV-cache length to
 * derive the generation step (0 at the prefill, k at the k-th decode step),
 * keeps the attention mask so that the layer hooks can find each row's last
 * real token, and notes the data pointer of a caller's inputs_embeds (never
 * written in place).  It also holds the row groups of per-row steering
 * (Steer.rows()): batch row b of a forward of B = m * R rows belongs to group
 * groups[b // m].
 *
 * The keyword names of the forward (cache, mask, input ids and embeddings)
 * and the cache's length method are given by the caller (autosteer/layers.py
 * owns that convention); nothing here knows transformers.  A tracker made by
 * relay() is registered on an enclosing module (a VLM, a PEFT wrapper): it
 * only hands a 2-D mask to its tracker for the owner's next forward.
 *
 * The state is per forward (and, through prefill_len, per generation), not
 * per thread: a forward records its thread, and a layer hook reading the
 * state from another thread, or a decode step continuing a generation that
 * another thread's forward interrupted, raises SteerStateError instead of
 * steering with the other thread's step and mask (one steered model serves
 * one thread at a time; see docs/steering.md).
 */
#include "module.h"

#include <stddef.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    int64_t step;
    int64_t prefill_len;
    int64_t calls;
    unsigned long thread;      /* the thread of the current forward, 0 before any */
    uintptr_t embeds_ptr;      /* data_ptr() of inputs_embeds passed in, or 0 */
    PyObject *relay_to;        /* a relay: the tracker it hands masks to */
    /* the forward convention (str; cache_kwargs a tuple of str) */
    PyObject *cache_kwargs;
    PyObject *cache_length_method;
    PyObject *mask_kwarg;
    PyObject *input_ids_kwarg;
    PyObject *inputs_embeds_kwarg;
    PyObject *mask;            /* the attention mask of this forward, or NULL */
    PyObject *outer_mask;      /* a 2-D mask seen by a relay, or NULL */
    PyObject *last_index_fn;   /* Python fallback: (mask, B, T) -> tensor | None */
    /* cache of the last-token indexes for the current forward */
    int last_valid;            /* 0: not computed; 1: in last_buf; 2: all T - 1 */
    int64_t last_B, last_T;
    int64_t *last_buf;
    int64_t last_cap;
    PyObject *last_tensor;     /* last_index_fn's result for this forward */
    int last_tensor_valid;
    /* row groups: an int64 CPU tensor [R] held by reference */
    PyObject *row_groups;
    as_view rg_view;
    int rg_open;
    int64_t R, rg_max;
    int64_t *rows_buf;         /* expanded to B rows, cached for rows_B */
    int64_t rows_cap, rows_B;
} TrackerObject;

#define AS_TRACKER(o) ((TrackerObject *)(o))

#define AS_TRACKER_THREADS_MSG \
    "two threads ran forwards of one steered model at the same time: the steering state " \
    "(generation step, attention mask) belongs to one forward and one generation, so this " \
    "forward would have been steered with another thread's. Use the model from one thread at " \
    "a time (a lock around generate), or give each thread its own copy " \
    "(Steer(model, tokenizer, copy_model=True))"

static void
as_tracker_drop_rows(TrackerObject *t)
{
    if (t->rg_open)
        as_view_close(&t->rg_view);
    t->rg_open = 0;
    Py_CLEAR(t->row_groups);
    t->R = 0;
    t->rg_max = -1;
    t->rows_B = -1;
}

static int
Tracker_traverse(PyObject *self, visitproc visit, void *arg)
{
    TrackerObject *t = AS_TRACKER(self);
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(t->relay_to);
    Py_VISIT(t->mask);
    Py_VISIT(t->outer_mask);
    Py_VISIT(t->last_index_fn);
    Py_VISIT(t->last_tensor);
    Py_VISIT(t->row_groups);
    return 0;
}

static int
Tracker_clear(PyObject *self)
{
    TrackerObject *t = AS_TRACKER(self);
    as_tracker_drop_rows(t);
    Py_CLEAR(t->relay_to);
    Py_CLEAR(t->mask);
    Py_CLEAR(t->outer_mask);
    Py_CLEAR(t->last_index_fn);
    Py_CLEAR(t->last_tensor);
    Py_CLEAR(t->cache_kwargs);
    Py_CLEAR(t->cache_length_method);
    Py_CLEAR(t->mask_kwarg);
    Py_CLEAR(t->input_ids_kwarg);
    Py_CLEAR(t->inputs_embeds_kwarg);
    return 0;
}

static void
Tracker_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    (void)Tracker_clear(self);
    PyMem_Free(AS_TRACKER(self)->last_buf);
    PyMem_Free(AS_TRACKER(self)->rows_buf);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *
Tracker_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"cache_kwargs", "cache_length_method", "mask_kwarg", "input_ids_kwarg",
                             "inputs_embeds_kwarg", "last_index_fn", NULL};
    PyObject *cache_kw = NULL, *len_m = NULL, *mask_kw = NULL, *ids_kw = NULL, *emb_kw = NULL;
    PyObject *fn = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$OOOOOO:StepTracker", kwlist, &cache_kw, &len_m,
                                     &mask_kw, &ids_kw, &emb_kw, &fn))
        return NULL;
    const char *missing = cache_kw == NULL ? "cache_kwargs" : len_m == NULL ? "cache_length_method"
                          : mask_kw == NULL ? "mask_kwarg" : ids_kw == NULL ? "input_ids_kwarg"
                          : emb_kw == NULL ? "inputs_embeds_kwarg" : NULL;
    if (missing != NULL) {
        PyErr_Format(PyExc_TypeError, "StepTracker() missing required keyword argument '%s'", missing);
        return NULL;
    }
    if (fn != Py_None && !PyCallable_Check(fn)) {
        PyErr_SetString(PyExc_TypeError, "StepTracker: last_index_fn must be callable or None");
        return NULL;
    }
    TrackerObject *t = NULL;
    PyObject *names = PySequence_Tuple(cache_kw);
    if (names == NULL)
        goto fail;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(names); i++) {
        PyObject *s = as_name_arg(PyTuple_GET_ITEM(names, i), "StepTracker", "cache_kwargs[i]");
        if (s == NULL)
            goto fail;
        Py_DECREF(s);
    }
    t = (TrackerObject *)type->tp_alloc(type, 0);
    if (t == NULL)
        goto fail;
    t->rg_max = -1;
    t->rows_B = -1;
    t->cache_kwargs = names;
    names = NULL;
    if ((t->cache_length_method = as_name_arg(len_m, "StepTracker", "cache_length_method")) == NULL ||
        (t->mask_kwarg = as_name_arg(mask_kw, "StepTracker", "mask_kwarg")) == NULL ||
        (t->input_ids_kwarg = as_name_arg(ids_kw, "StepTracker", "input_ids_kwarg")) == NULL ||
        (t->inputs_embeds_kwarg = as_name_arg(emb_kw, "StepTracker", "inputs_embeds_kwarg")) == NULL)
        goto fail;
    t->last_index_fn = fn == Py_None ? NULL : Py_NewRef(fn);
    return (PyObject *)t;
fail:
    Py_XDECREF(names);
    Py_XDECREF(t);
    return NULL;
}

/* The length of this forward's KV cache (0 without one); -1 on error. */
static int
as_tracker_cache_len(TrackerObject *t, PyObject *fkwargs, int64_t *out)
{
    *out = 0;
    PyObject *cache = NULL;
    for (Py_ssize_t i = 0; cache == NULL && i < PyTuple_GET_SIZE(t->cache_kwargs); i++)
        cache = as_kw(fkwargs, PyTuple_GET_ITEM(t->cache_kwargs, i));
    if (cache == NULL)
        return 0;
    PyObject *n = PyObject_CallMethodNoArgs(cache, t->cache_length_method);
    if (n == NULL) {
        /* a legacy tuple cache or an object without the method: no step */
        PyErr_Clear();
        return 0;
    }
    PyObject *idx = PyNumber_Index(n);
    Py_DECREF(n);
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
Tracker_call(PyObject *self, PyObject *args, PyObject *kwds)
{
    TrackerObject *t = AS_TRACKER(self);
    as_state *st = as_state_of_type(Py_TYPE(self));
    if (st == NULL)
        return NULL;
    PyObject *module, *fargs, *fkwargs;
    if (as_hook_args(args, kwds, "StepTracker", &module, &fargs, &fkwargs) < 0)
        return NULL;

    PyObject *mask = as_kw(fkwargs, t->mask_kwarg);
    int mask_2d = mask != NULL && as_dim(st, mask, 1) >= 0 && as_dim(st, mask, 2) < 0;
    if (t->relay_to != NULL) {
        /* an enclosing module: remember its 2-D mask, the owner may only get
         * a dict or a 4-D mask */
        if (mask_2d)
            Py_XSETREF(AS_TRACKER(t->relay_to)->outer_mask, Py_NewRef(mask));
        Py_RETURN_NONE;
    }

    int64_t cache_len;
    if (as_tracker_cache_len(t, fkwargs, &cache_len) < 0)
        return NULL;
    /* the length of this forward's input */
    int64_t T = -1;
    PyObject *x = as_kw(fkwargs, t->input_ids_kwarg);
    PyObject *emb = as_kw(fkwargs, t->inputs_embeds_kwarg);
    PyObject *x_name = t->input_ids_kwarg;
    if (x == NULL) {
        x = emb;
        x_name = t->inputs_embeds_kwarg;
    }
    if (x == NULL && PyTuple_Check(fargs) && PyTuple_GET_SIZE(fargs) > 0) {
        x = PyTuple_GET_ITEM(fargs, 0);
        x_name = NULL;
    }
    if (x != NULL)
        T = as_dim(st, x, 1);
    if (T == 0) {
        if (x_name != NULL)
            PyErr_Format(st->invalid_argument_error,
                         "the steered model got an empty input (%U has 0 positions, shape[1] == 0): "
                         "give it at least one token", x_name);
        else
            PyErr_SetString(st->invalid_argument_error,
                            "the steered model got an empty input (its first argument has 0 positions, "
                            "shape[1] == 0): give it at least one token");
        return NULL;
    }

    /* a decode step must continue this thread's generation: a forward of
     * another thread in between has replaced the prefill it counts from */
    unsigned long me = PyThread_get_thread_ident();
    if (cache_len > 0 && T <= 1 && t->thread != 0 && t->thread != me) {
        PyErr_SetString(st->steer_state_error, AS_TRACKER_THREADS_MSG);
        return NULL;
    }
    t->thread = me;

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

/* ================================================================== */
/* what the layer hooks read                                           */
/* ================================================================== */

int64_t
as_tracker_step(PyObject *self)
{
    TrackerObject *t = AS_TRACKER(self);
    if (t->thread != 0 && t->thread != PyThread_get_thread_ident()) {
        as_state *st = as_state_of_type(Py_TYPE(self));
        if (st != NULL)
            PyErr_SetString(st->steer_state_error, AS_TRACKER_THREADS_MSG);
        return -1;
    }
    return t->step;
}

uintptr_t
as_tracker_embeds_ptr(PyObject *self)
{
    return AS_TRACKER(self)->embeds_ptr;
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

typedef int (*as_mask_reader)(const void *, int64_t);

static as_mask_reader
as_mask_reader_of(const as_view *v)
{
    int code = v->t.dtype.code, bits = v->t.dtype.bits;
    int integer = code == AS_DL_INT || code == AS_DL_UINT;
    if (v->t.dtype.lanes != 1)
        return NULL;
    if (integer && bits == 64)
        return as_mask_i64;
    if (integer && bits == 32)
        return as_mask_i32;
    if ((integer || code == AS_DL_BOOL) && bits == 8)
        return as_mask_u8;
    if (code == AS_DL_FLOAT && bits == 32)
        return as_mask_f32;
    if (code == AS_DL_FLOAT && bits == 64)
        return as_mask_f64;
    if (integer && bits == 16)
        return as_mask_i16;
    if ((code == AS_DL_FLOAT || code == AS_DL_BFLOAT) && bits == 16)
        return as_mask_h16;
    return NULL;
}

/* A mask C cannot read (another device, 4-D, another batch size) counts as
 * no mask. */
int
as_tracker_last_cpu(PyObject *self, as_state *st, int64_t B, int64_t T, const int64_t **out)
{
    TrackerObject *t = AS_TRACKER(self);
    *out = NULL;
    if (t->mask == NULL)
        return 0;
    if (t->last_valid && t->last_B == B && t->last_T == T) {
        *out = t->last_valid == 1 ? t->last_buf : NULL;
        return 0;
    }
    as_view v;
    if (as_view_open(&st->dl, t->mask, AS_VIA_AUTO, &v) != 0) {
        PyErr_Clear();
        return 0;
    }
    int rc = -1;
    int usable = v.t.device.device_type == AS_DL_CPU && v.t.ndim == 2 && v.t.shape[0] == B &&
                 v.t.shape[1] >= T;
    as_mask_reader is_set = usable ? as_mask_reader_of(&v) : NULL;
    t->last_B = B;
    t->last_T = T;
    t->last_valid = 2;            /* unless a row ends before T - 1 */
    if (is_set == NULL) {
        rc = 0;
        goto done;
    }
    if (t->last_cap < B) {
        int64_t *buf = PyMem_Realloc(t->last_buf, (size_t)B * sizeof(int64_t));
        if (buf == NULL) {
            t->last_valid = 0;
            PyErr_NoMemory();
            goto done;
        }
        t->last_buf = buf;
        t->last_cap = B;
    }
    const char *base = (const char *)as_view_data(&v);
    int64_t sb = as_view_stride(&v, 0), ss = as_view_stride(&v, 1);
    size_t esize = v.t.dtype.bits / 8;
    int64_t S = v.t.shape[1];
    for (int64_t b = 0; b < B; b++) {
        const void *row = base + (ptrdiff_t)(b * sb) * (ptrdiff_t)esize;
        int64_t lt = as_kernel_last_real(row, ss, S, T, is_set);
        t->last_buf[b] = lt;
        if (lt != T - 1)
            t->last_valid = 1;
    }
    *out = t->last_valid == 1 ? t->last_buf : NULL;
    rc = 0;
done:
    as_view_close(&v);
    return rc;
}

int
as_tracker_rows(PyObject *self, as_state *st, int64_t B, int64_t G, int64_t layer_idx,
                const int64_t **out)
{
    TrackerObject *t = AS_TRACKER(self);
    *out = NULL;
    if (t->row_groups == NULL) {
        PyErr_Format(st->invalid_argument_error,
                     "layer %lld has vectors added with group=..., but no row groups are set: run "
                     "the forward inside `with steer.rows(groups):` (or steer.applied([...])) so "
                     "that every batch row has a group",
                     (long long)layer_idx);
        return -1;
    }
    if (B <= 0 || B % t->R != 0) {
        PyErr_Format(st->invalid_argument_error,
                     "the forward has %lld batch rows, but rows() gave groups for %lld rows: the "
                     "batch must be a multiple of %lld (rows repeated with repeat_interleave, as "
                     "num_beams and num_return_sequences do)",
                     (long long)B, (long long)t->R, (long long)t->R);
        return -1;
    }
    if (t->rg_max >= G) {
        PyErr_Format(st->invalid_argument_error,
                     "rows() names group %lld, but the steering has groups 0..%lld only "
                     "(layer %lld)",
                     (long long)t->rg_max, (long long)(G - 1), (long long)layer_idx);
        return -1;
    }
    if (t->rows_B != B) {
        if (t->rows_cap < B) {
            int64_t *buf = PyMem_Realloc(t->rows_buf, (size_t)B * sizeof(int64_t));
            if (buf == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            t->rows_buf = buf;
            t->rows_cap = B;
        }
        const int64_t *groups = (const int64_t *)as_view_data(&t->rg_view);
        int64_t m = B / t->R;
        for (int64_t b = 0; b < B; b++)
            t->rows_buf[b] = groups[b / m];
        t->rows_B = B;
    }
    *out = t->rows_buf;
    return 0;
}

/* ================================================================== */
/* methods                                                             */
/* ================================================================== */

static PyObject *
Tracker_reset(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    TrackerObject *t = AS_TRACKER(self);
    t->step = 0;
    t->prefill_len = 0;
    t->thread = 0;
    t->embeds_ptr = 0;
    t->last_valid = 0;
    t->last_tensor_valid = 0;
    Py_CLEAR(t->mask);
    Py_CLEAR(t->outer_mask);
    Py_CLEAR(t->last_tensor);
    Py_RETURN_NONE;
}

static PyObject *
Tracker_set_row_groups(PyObject *self, PyObject *groups)
{
    TrackerObject *t = AS_TRACKER(self);
    as_state *st = as_state_of_type(Py_TYPE(self));
    if (st == NULL)
        return NULL;
    if (groups == Py_None) {
        as_tracker_drop_rows(t);
        Py_RETURN_NONE;
    }
    as_view v;
    if (as_view_open(&st->dl, groups, AS_VIA_AUTO, &v) != 0)
        return NULL;
    int64_t R = v.t.ndim == 1 ? v.t.shape[0] : 0;
    if (v.t.device.device_type != AS_DL_CPU || v.t.ndim != 1 || !as_view_is(&v, AS_DL_INT, 64) ||
        R < 1 || (R > 1 && as_view_stride(&v, 0) != 1)) {
        as_view_close(&v);
        PyErr_SetString(st->invalid_argument_error,
                        "row groups must be a non-empty contiguous int64 CPU tensor [R]");
        return NULL;
    }
    const int64_t *g = (const int64_t *)as_view_data(&v);
    int64_t mx = -1;
    for (int64_t r = 0; r < R; r++) {
        if (g[r] < 0) {
            as_view_close(&v);
            PyErr_Format(st->invalid_argument_error, "row groups must be >= 0, got %lld at row %lld",
                         (long long)g[r], (long long)r);
            return NULL;
        }
        if (g[r] > mx)
            mx = g[r];
    }
    as_tracker_drop_rows(t);
    t->row_groups = Py_NewRef(groups);
    t->rg_view = v;
    t->rg_open = 1;
    t->R = R;
    t->rg_max = mx;
    Py_RETURN_NONE;
}

static PyObject *
Tracker_check_rows(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    as_state *st = as_state_of_type(Py_TYPE(self));
    if (st == NULL)
        return NULL;
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "check_rows() takes 3 arguments (B, G, layer_idx), got %zd", nargs);
        return NULL;
    }
    long long v[3];
    for (int i = 0; i < 3; i++) {
        v[i] = PyLong_AsLongLong(args[i]);
        if (v[i] == -1 && PyErr_Occurred())
            return NULL;
    }
    const int64_t *rows;
    if (as_tracker_rows(self, st, v[0], v[1], v[2], &rows) < 0)
        return NULL;
    return PyLong_FromLongLong(v[0] / AS_TRACKER(self)->R);
}

static PyObject *
Tracker_last_index(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    TrackerObject *t = AS_TRACKER(self);
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "last_index() takes 2 arguments (B, T), got %zd", nargs);
        return NULL;
    }
    if (t->mask == NULL || t->last_index_fn == NULL)
        Py_RETURN_NONE;
    if (!t->last_tensor_valid) {
        PyObject *r = PyObject_CallFunctionObjArgs(t->last_index_fn, t->mask, args[0], args[1], NULL);
        if (r == NULL)
            return NULL;
        Py_XSETREF(t->last_tensor, r);
        t->last_tensor_valid = 1;
    }
    return Py_NewRef(t->last_tensor);
}

/* A tracker for an enclosing module that hands its 2-D mask to this one. */
static PyObject *
as_tracker_make(PyObject *self, PyObject *relay_to, PyObject *memo)
{
    TrackerObject *t = AS_TRACKER(self);
    PyObject *kw = NULL, *res = NULL, *fn = NULL;
    fn = t->last_index_fn ? (memo ? as_deepcopy(t->last_index_fn, memo) : Py_NewRef(t->last_index_fn))
                          : Py_NewRef(Py_None);
    if (fn == NULL)
        goto done;
    kw = Py_BuildValue("{s:O,s:O,s:O,s:O,s:O,s:O}", "cache_kwargs", t->cache_kwargs,
                       "cache_length_method", t->cache_length_method, "mask_kwarg", t->mask_kwarg,
                       "input_ids_kwarg", t->input_ids_kwarg, "inputs_embeds_kwarg",
                       t->inputs_embeds_kwarg, "last_index_fn", fn);
    if (kw == NULL)
        goto done;
    PyObject *empty = PyTuple_New(0);
    if (empty == NULL)
        goto done;
    res = PyObject_Call((PyObject *)Py_TYPE(self), empty, kw);
    Py_DECREF(empty);
    if (res != NULL && relay_to != NULL)
        AS_TRACKER(res)->relay_to = Py_NewRef(relay_to);
done:
    Py_XDECREF(fn);
    Py_XDECREF(kw);
    return res;
}

static PyObject *
Tracker_relay(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    TrackerObject *t = AS_TRACKER(self);
    return as_tracker_make(self, t->relay_to != NULL ? t->relay_to : self, NULL);
}

/* copy.deepcopy: the copy follows the same convention and holds a copy of
 * the row groups; the relay of a copied model relays to the copied tracker. */
static PyObject *
Tracker_deepcopy(PyObject *self, PyObject *memo)
{
    TrackerObject *t = AS_TRACKER(self);
    PyObject *res = NULL, *key = NULL, *target = NULL, *groups = NULL;
    if (!PyDict_Check(memo)) {
        PyErr_SetString(PyExc_TypeError, "__deepcopy__ expects the memo dict");
        return NULL;
    }
    if (t->relay_to != NULL && (target = as_deepcopy(t->relay_to, memo)) == NULL)
        goto done;
    res = as_tracker_make(self, target, memo);
    if (res == NULL)
        goto done;
    key = PyLong_FromVoidPtr(self);
    if (key == NULL || PyDict_SetItem(memo, key, res) != 0) {
        Py_CLEAR(res);
        goto done;
    }
    TrackerObject *c = AS_TRACKER(res);
    c->step = t->step;
    c->prefill_len = t->prefill_len;
    c->calls = t->calls;
    if (t->row_groups != NULL) {
        PyObject *r = NULL;
        groups = as_deepcopy(t->row_groups, memo);
        if (groups != NULL)
            r = Tracker_set_row_groups(res, groups);
        if (r == NULL) {
            Py_CLEAR(res);
            goto done;
        }
        Py_DECREF(r);
    }
done:
    Py_XDECREF(key);
    Py_XDECREF(target);
    Py_XDECREF(groups);
    return res;
}

static PyObject *
Tracker_get_step(PyObject *self, void *c)
{
    (void)c;
    int64_t step = as_tracker_step(self);
    return step < 0 ? NULL : PyLong_FromLongLong((long long)step);
}
static PyObject *Tracker_get_calls(PyObject *self, void *c) { (void)c; return PyLong_FromLongLong((long long)AS_TRACKER(self)->calls); }
static PyObject *Tracker_get_prefill(PyObject *self, void *c) { (void)c; return PyLong_FromLongLong((long long)AS_TRACKER(self)->prefill_len); }

static PyObject *
Tracker_get_mask(PyObject *self, void *c)
{
    (void)c;
    PyObject *m = AS_TRACKER(self)->mask;
    return Py_NewRef(m != NULL ? m : Py_None);
}

static PyObject *
Tracker_get_row_groups(PyObject *self, void *c)
{
    (void)c;
    PyObject *g = AS_TRACKER(self)->row_groups;
    return Py_NewRef(g != NULL ? g : Py_None);
}

static PyObject *
Tracker_get_relay_to(PyObject *self, void *c)
{
    (void)c;
    PyObject *r = AS_TRACKER(self)->relay_to;
    return Py_NewRef(r != NULL ? r : Py_None);
}

static PyGetSetDef Tracker_getset[] = {
    {"step", Tracker_get_step, NULL, "generation step of the current forward", NULL},
    {"calls", Tracker_get_calls, NULL, "number of forwards seen", NULL},
    {"prefill_len", Tracker_get_prefill, NULL, "length of the last prefill", NULL},
    {"mask", Tracker_get_mask, NULL, "the 2-D attention mask of the current forward, or None", NULL},
    {"row_groups", Tracker_get_row_groups, NULL, "the row groups (int64 CPU tensor [R]) or None", NULL},
    {"relay_to", Tracker_get_relay_to, NULL, "for a relay, the tracker it hands masks to; else None", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef Tracker_methods[] = {
    {"reset", Tracker_reset, METH_NOARGS,
     "reset($self, /)\n--\n\nForget the step and the mask (the row groups stay)."},
    {"set_row_groups", Tracker_set_row_groups, METH_O,
     "set_row_groups($self, groups, /)\n--\n\n"
     "Per-row steering: groups is an int64 CPU tensor [R] (held by reference) or None.\n"
     "Batch row b of a forward of B = m * R rows belongs to group groups[b // m]."},
    {"check_rows", (PyCFunction)(void (*)(void))Tracker_check_rows, METH_FASTCALL,
     "check_rows($self, B, G, layer_idx, /)\n--\n\n"
     "Check that the row groups fit a forward of B rows and G groups; returns m = B // R.\n"
     "Raises InvalidArgumentError when no rows are set or they do not fit."},
    {"last_index", (PyCFunction)(void (*)(void))Tracker_last_index, METH_FASTCALL,
     "last_index($self, B, T, /)\n--\n\n"
     "last_index_fn(mask, B, T) for this forward (computed once), or None without a mask."},
    {"relay", Tracker_relay, METH_NOARGS,
     "relay($self, /)\n--\n\n"
     "A tracker for an enclosing module: it hands a 2-D mask to this one for the\n"
     "owner's next forward and does nothing else."},
    {"__deepcopy__", Tracker_deepcopy, METH_O, NULL},
    {"__reduce_ex__", as_refuse_pickle, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(Tracker_doc,
"StepTracker(*, cache_kwargs, cache_length_method, mask_kwarg, input_ids_kwarg, inputs_embeds_kwarg, last_index_fn=None)\n--\n\n"
"Forward pre-hook (with_kwargs=True) for the module that owns the decoder layers.\n"
"Derives the generation step from the KV cache found under the first of\n"
"cache_kwargs (its cache_length_method() is the cache length), keeps the 2-D\n"
"attention mask (keyword mask_kwarg) for the layer hooks, notes the data\n"
"pointer of inputs_embeds (never written in place), refuses an empty input,\n"
"and holds the row groups of per-row steering.  last_index_fn(mask, B, T)\n"
"computes each row's last real token as a tensor where C does not read the\n"
"mask (another device).  relay() makes the hook for an enclosing module.");

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

int
as_tracker_add_type(PyObject *m, as_state *st)
{
    st->tracker_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &Tracker_spec, NULL);
    if (st->tracker_type == NULL)
        return -1;
    return PyModule_AddType(m, st->tracker_type);
}
