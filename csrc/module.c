/*
 * module.c - autosteer._C assembled: the module definition, its state's
 * init/traverse/clear, the exception types, and the method table (the
 * functions themselves live in apply.c and schedule_type.c).
 *
 * Only this file knows every other file; the type files and apply.c use the
 * shared helpers of common.c, never this file.  Multi-phase init; all state
 * lives in the module state (module.h); every type is a heap type.  The
 * module imports nothing from the autosteer package: autosteer/errors.py
 * re-exports the exceptions created here.
 */
#include "module.h"

#include "kernel.h"

/* ================================================================== */
/* module functions                                                    */
/* ================================================================== */

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
     as_apply_delta_doc},
    {"has_exchange_api", as_has_exchange_api, METH_O, as_has_exchange_api_doc},
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
