/*
 * module.h - the internal header of autosteer._C.
 *
 * The module state (every type, exception and cached object of one module
 * instance: no mutable C globals), its accessors, the functions one file of
 * the extension calls in another (named by area: as_sched_*, as_tracker_*,
 * as_weights_*, as_hook_*; DLPack views are the inline as_view_* of view.h)
 * and a few small helpers.  Every translation unit is compiled with
 * -fvisibility=hidden, so none of these names leaves the shared object: only
 * PyInit__C is exported.
 *
 * Files (arrows run one way: module.c -> the type files and apply.c ->
 * common.c; nothing calls into module.c):
 *   module.c         the module assembled: definition, state init/clear, exceptions,
 *                    method table
 *   common.c         the helpers every file shares (declared below)
 *   apply.c          apply_delta and has_exchange_api, the kernel as module functions
 *   schedule_type.c  one Python type per row of schedule.h's table
 *   tracker.c        StepTracker: generation step, mask, row groups per forward
 *   weights.c        SteerWeights: per-forward weights of one layer's vectors
 *   hook.c           SteerHook: the CPU forward pre-hook (fused kernel in place)
 *   schedule.h, kernel.h   pure math, no Python
 *   view.h, dlpack.h       DLPack views of framework tensors
 */
#ifndef AUTOSTEER_MODULE_H
#define AUTOSTEER_MODULE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#include "schedule.h"
#include "view.h"

/* Storage a schedule type points into for its whole life (the type keeps the
 * module, so the module state outlives it). */
typedef struct {
    char tp_name[96];          /* "autosteer.DecaySchedule": CPython 3.11 keeps the pointer */
    PyGetSetDef getset[AS_SCHED_MAX_PARAMS + AS_SCHED_MAX_DERIVED + 1];
} as_sched_type_store;

typedef struct {
    PyTypeObject *sched_types[AS_SCHED_NKINDS];   /* in table order */
    PyTypeObject *tracker_type;
    PyTypeObject *weights_type;
    PyTypeObject *hook_type;
    /* the exceptions C raises; __module__ "autosteer.errors" */
    PyObject *error;                  /* AutoSteerError(Exception) */
    PyObject *invalid_argument_error; /* InvalidArgumentError(AutoSteerError, ValueError) */
    PyObject *schedule_error;         /* ScheduleError(AutoSteerError, ValueError) */
    PyObject *steer_state_error;      /* SteerStateError(AutoSteerError, TypeError) */
    /* numbers.Real and numbers.Integral (NumPy scalars register there) */
    PyObject *numbers_real;
    PyObject *numbers_integral;
    PyObject *numbers_complex;
    /* interned attribute names of the tensor protocol */
    PyObject *s_requires_grad;
    PyObject *s_shape;
    PyObject *s_data_ptr;
    as_dl_cache dl;
    as_sched_type_store sched_store[AS_SCHED_NKINDS];
} as_state;

extern struct PyModuleDef as_module_def;

static inline as_state *
as_state_of_module(PyObject *module)
{
    return (as_state *)PyModule_GetState(module);
}

/* The state of the module that defined `tp` (a type of ours or a subclass).
 * The module definition is the one object the files share by name (as
 * CPython's _sqlite module.h does); its contents stay private to module.c. */
static inline as_state *
as_state_of_type(PyTypeObject *tp)
{
    PyObject *mod = PyType_GetModuleByDef(tp, &as_module_def);
    return mod == NULL ? NULL : as_state_of_module(mod);
}

/* ---- common.c: helpers shared by every file ---- */

/* "float 1.5", "str 'x'": the type name and a repr cut to 80 characters. */
PyObject *as_describe(PyObject *obj);
/* repr() of a double into buf (always terminated). */
void as_repr_double(double v, char *buf, size_t n);
/* kwargs.get(key), borrowed; NULL when absent or None (never an error). */
PyObject *as_kw(PyObject *kwargs, PyObject *key);
/* x.shape[dim], or -1 when x has no such dimension (error cleared). */
int64_t as_dim(as_state *st, PyObject *x, Py_ssize_t dim);
/* bool(x.<attr>) with errors reported as -1. */
int as_attr_true(PyObject *x, PyObject *attr);
/* copy.deepcopy(obj, memo) */
PyObject *as_deepcopy(PyObject *obj, PyObject *memo);
/* A real number (int or float, not bool, not complex; NumPy scalars too) as
 * a double: 1; not a real number: 0; -1 with an exception on error. */
int as_real_value(as_state *st, PyObject *obj, double *out);
/* The __reduce_ex__ of the hook types: refuses with SteerStateError. */
PyObject *as_refuse_pickle(PyObject *self, PyObject *protocol);
/* Unpack the (module, args[, kwargs]) of a forward pre-hook call. */
int as_hook_args(PyObject *args, PyObject *kwds, const char *who, PyObject **module,
                 PyObject **fargs, PyObject **fkwargs);
/* A str argument of a constructor, as a new interned reference. */
PyObject *as_name_arg(PyObject *obj, const char *who, const char *arg);

/* ---- schedule_type.c ---- */
int as_sched_add_types(PyObject *module, as_state *st);
/* The schedule of an object of one of our exact schedule types, else NULL
 * (a subclass may override __call__). */
const as_sched *as_sched_exact(as_state *st, PyObject *obj);
/* _C.schedule_kinds(): the table as a tuple of plain dicts. */
PyObject *as_sched_kinds(as_state *st);

/* ---- tracker.c ---- */
int as_tracker_add_type(PyObject *module, as_state *st);
/* The step of the current forward; -1 with SteerStateError when called from
 * another thread than the forward's. */
int64_t as_tracker_step(PyObject *tracker);
/* data_ptr() of the inputs_embeds of this forward, or 0 */
uintptr_t as_tracker_embeds_ptr(PyObject *tracker);
/* Each row's last real token for a CPU forward of B rows and T positions:
 * *out NULL (every row ends at T - 1) or B indexes owned by the tracker.
 * Returns -1 only on a real error. */
int as_tracker_last_cpu(PyObject *tracker, as_state *st, int64_t B, int64_t T, const int64_t **out);
/* The group of each of B rows for a layer whose vectors have G groups: B
 * indexes in [0, G) owned by the tracker.  -1 with an AutoSteerError when no
 * rows() are set or they do not fit. */
int as_tracker_rows(PyObject *tracker, as_state *st, int64_t B, int64_t G, int64_t layer_idx,
                    const int64_t **out);

/* ---- weights.c ---- */
int as_weights_add_type(PyObject *module, as_state *st);
/* Fill the weights rows for `step`: w_j = coeff_j * schedule_j(step) (0 for
 * a steering_method vector), checked against `limit` (the largest finite
 * value of the storage type named `storage`), times the membership matrix
 * when there is one.  Sets *nonzero to the number of non-zero w_j.  Returns
 * 0, or -1 with an exception naming the layer and the vector. */
int as_weights_fill(PyObject *weights, as_state *st, int64_t step, double limit,
                    const char *storage, int *nonzero);
int64_t as_weights_count(PyObject *weights);       /* J */
int64_t as_weights_groups(PyObject *weights);      /* G, 0 without membership */
int64_t as_weights_layer(PyObject *weights);
int as_weights_has_methods(PyObject *weights);
const float *as_weights_rows(PyObject *weights);   /* [max(G, 1), J] */
PyObject *as_weights_buffer(PyObject *weights);    /* the rows as a NumPy array, borrowed */

/* ---- hook.c ---- */
int as_hook_add_type(PyObject *module, as_state *st);

/* ---- apply.c: module functions, listed in module.c's method table ---- */
PyObject *as_apply_delta(PyObject *module, PyObject *args, PyObject *kwds);
extern const char as_apply_delta_doc[];
PyObject *as_has_exchange_api(PyObject *module, PyObject *obj);
extern const char as_has_exchange_api_doc[];

#endif /* AUTOSTEER_MODULE_H */
