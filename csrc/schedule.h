/*
 * schedule.h - coefficient schedules: one table row per kind, and the math
 * (no Python).
 *
 * A schedule maps the generation step (0 at the prefill, k at the k-th decode
 * step) to a multiplier of the steering coefficient.  Everything that is
 * known about a kind lives in its row of AS_SCHED_KINDS below: the type name
 * used in to_dict() ("decay"), the Python class name, the doc, the
 * parameters (name, int or float, default or required, domain, the default
 * search range of the autonomous search, a one-line doc), a cross-parameter
 * check that also fills the derived read-only properties, and the formula.
 * The extension builds one Python type per row (schedule_type.c), exposes the
 * rows as _C.schedule_kinds(), and autosteer/schedules.py builds its public
 * mapping from that.  Adding a kind is one row, its formula, and its test.
 *
 * Header-only so that the extension and the plain-C unit tests compile the
 * very same code.
 */
#ifndef AUTOSTEER_SCHEDULE_H
#define AUTOSTEER_SCHEDULE_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

#define AS_SCHED_MAX_PARAMS 4
#define AS_SCHED_MAX_DERIVED 2

typedef enum { AS_PARAM_INT = 0, AS_PARAM_FLOAT = 1 } as_param_type;

/* An interval of admissible values; an infinite bound means unbounded.
 * Float parameters must also be finite. */
typedef struct {
    double min, max;
    int min_open, max_open;       /* 1: the bound itself is excluded */
} as_domain;

typedef struct {
    const char *name;             /* NULL ends the list */
    as_param_type type;
    int required;                 /* 1: no default (default_value unused) */
    double default_value;
    as_domain domain;
    double search_min, search_max; /* default range of the autonomous search */
    /* where a search range may lie (narrower than the domain where a value of
     * the domain means "no schedule", such as a decay rate <= 0) */
    as_domain search_domain;
    const char *doc;
} as_sched_param;

typedef union {
    double f;                     /* AS_PARAM_FLOAT */
    int64_t i;                    /* AS_PARAM_INT */
} as_sched_value;

/* A read-only property computed from the parameters (by the kind's check). */
typedef struct {
    const char *name;             /* NULL ends the list */
    const char *doc;
} as_sched_derived;

typedef struct as_sched as_sched;

typedef struct {
    const char *type_name;        /* the "type" of to_dict() */
    const char *class_name;       /* the Python class (module "autosteer") */
    const char *doc;
    as_sched_param params[AS_SCHED_MAX_PARAMS + 1];
    as_sched_derived derived[AS_SCHED_MAX_DERIVED + 1];
    /* cross-parameter rules, after every domain held; fills s->derived.
     * NULL, or a static message naming the rule that was violated */
    const char *(*check)(as_sched *s);
    /* the multiplier at step >= 0 */
    double (*eval)(const as_sched *s, int64_t step);
} as_sched_kind;

struct as_sched {
    const as_sched_kind *kind;
    as_sched_value v[AS_SCHED_MAX_PARAMS];   /* in the row's parameter order */
    int64_t derived[AS_SCHED_MAX_DERIVED];
};

/* ------------------------------------------------------------------ */
/* decay: rate**step floored at min, optionally a sawtooth             */
/* ------------------------------------------------------------------ */

enum { AS_DECAY_RATE, AS_DECAY_MIN, AS_DECAY_RESTARTS };
enum { AS_DECAY_CYCLE };

static const char *
as_decay_check(as_sched *s)
{
    double rate = s->v[AS_DECAY_RATE].f, mn = s->v[AS_DECAY_MIN].f;
    int64_t restarts = s->v[AS_DECAY_RESTARTS].i;
    s->derived[AS_DECAY_CYCLE] = 0;
    if (restarts == 0)
        return NULL;
    if (!(rate > 0.0 && rate < 1.0) || !(mn > 0.0 && mn < 1.0))
        return "restarts (times_restart > 0) need 0 < rate < 1 and 0 < min_multiplier < 1";
    /* steps until rate**p first reaches min, plus the step at min itself */
    double c = ceil(log(mn) / log(rate));
    if (!(c >= 1.0) || c > 1e12)
        return "rate and min_multiplier give an unusable cycle length";
    int64_t cycle = (int64_t)c + 1;
    if (restarts > INT64_MAX / cycle)
        return "times_restart is too large (cycle_length * times_restart overflows int64)";
    s->derived[AS_DECAY_CYCLE] = cycle;
    return NULL;
}

static double
as_decay_eval(const as_sched *s, int64_t step)
{
    double rate = s->v[AS_DECAY_RATE].f, mn = s->v[AS_DECAY_MIN].f;
    int64_t restarts = s->v[AS_DECAY_RESTARTS].i, cycle = s->derived[AS_DECAY_CYCLE];
    if (rate <= 0.0)
        return 1.0;
    int64_t p = step;
    if (restarts > 0) {
        /* sawtooth: restart `restarts` times, then decay on and stay at min */
        int64_t span = cycle * restarts;
        p = step < span ? step % cycle : step - span;
    }
    double v = pow(rate, (double)p);
    return v > mn ? v : mn;
}

/* ------------------------------------------------------------------ */
/* cosine: 1.0 at step 0 down to min at step `period`                  */
/* ------------------------------------------------------------------ */

enum { AS_COSINE_PERIOD, AS_COSINE_MIN };

static double
as_cosine_eval(const as_sched *s, int64_t step)
{
    int64_t period = s->v[AS_COSINE_PERIOD].i;
    double mn = s->v[AS_COSINE_MIN].f;
    if (step >= period)
        return mn;
    double c = 0.5 * (1.0 + cos(M_PI * (double)step / (double)period));
    return mn + (1.0 - mn) * c;
}

/* ------------------------------------------------------------------ */
/* warmup: linear ramp from start to 1.0 over `steps`                  */
/* ------------------------------------------------------------------ */

enum { AS_WARMUP_STEPS, AS_WARMUP_START };

static double
as_warmup_eval(const as_sched *s, int64_t step)
{
    int64_t steps = s->v[AS_WARMUP_STEPS].i;
    double start = s->v[AS_WARMUP_START].f;
    if (step >= steps)
        return 1.0;
    return start + (1.0 - start) * (double)step / (double)steps;
}

/* ------------------------------------------------------------------ */
/* the table                                                           */
/* ------------------------------------------------------------------ */

#define AS_UNIT {0.0, 1.0, 0, 0}                  /* [0, 1] */
#define AS_AT_LEAST(lo) {(lo), INFINITY, 0, 0}    /* [lo, inf) */

static const as_sched_kind AS_SCHED_KINDS[] = {
    {
        .type_name = "decay",
        .class_name = "DecaySchedule",
        .doc = "Multiplier rate**step, floored at min_multiplier; rate <= 0 means a constant 1.0.\n"
               "With times_restart > 0 (needs 0 < rate < 1 and 0 < min_multiplier < 1) it is a\n"
               "sawtooth: each cycle has ceil(log(min)/log(rate)) + 1 steps and ends exactly at\n"
               "min_multiplier, then jumps back to 1.0; after times_restart restarts it decays on\n"
               "and stays at min_multiplier.",
        .params = {
            {"rate", AS_PARAM_FLOAT, 0, 1.0, {-INFINITY, 1.0, 0, 0}, 0.8, 0.99, {0.0, 1.0, 1, 0},
             "multiplier per step (rate <= 0 turns decay off)"},
            {"min_multiplier", AS_PARAM_FLOAT, 0, 0.0, AS_UNIT, 0.0, 0.5, AS_UNIT,
             "floor of the multiplier"},
            {"times_restart", AS_PARAM_INT, 0, 0.0, AS_AT_LEAST(0.0), 0.0, 0.0, AS_AT_LEAST(0.0),
             "number of sawtooth restarts"},
        },
        .derived = {
            {"cycle_length", "steps in one sawtooth cycle (0 without restarts)"},
        },
        .check = as_decay_check,
        .eval = as_decay_eval,
    },
    {
        .type_name = "cosine",
        .class_name = "CosineSchedule",
        .doc = "Cosine taper from 1.0 at step 0 to min_multiplier at step `period`, then constant.",
        .params = {
            {"period", AS_PARAM_INT, 1, 0.0, AS_AT_LEAST(1.0), 4.0, 32.0, AS_AT_LEAST(1.0),
             "steps from 1.0 down to min_multiplier"},
            {"min_multiplier", AS_PARAM_FLOAT, 0, 0.0, AS_UNIT, 0.0, 0.5, AS_UNIT,
             "value from step `period` on"},
        },
        .check = NULL,
        .eval = as_cosine_eval,
    },
    {
        .type_name = "warmup",
        .class_name = "WarmupSchedule",
        .doc = "Linear ramp from `start` at step 0 to 1.0 at step `steps`, then constant 1.0.",
        .params = {
            {"steps", AS_PARAM_INT, 1, 0.0, AS_AT_LEAST(0.0), 1.0, 8.0, AS_AT_LEAST(1.0),
             "steps of the linear ramp"},
            {"start", AS_PARAM_FLOAT, 0, 0.0, AS_UNIT, 0.0, 0.5, AS_UNIT,
             "multiplier at step 0"},
        },
        .check = NULL,
        .eval = as_warmup_eval,
    },
};

#undef AS_UNIT
#undef AS_AT_LEAST

#define AS_SCHED_NKINDS ((int)(sizeof(AS_SCHED_KINDS) / sizeof(AS_SCHED_KINDS[0])))

/* ------------------------------------------------------------------ */
/* generic operations on a row                                         */
/* ------------------------------------------------------------------ */

static inline int
as_sched_nparams(const as_sched_kind *k)
{
    int n = 0;
    while (n < AS_SCHED_MAX_PARAMS && k->params[n].name != NULL)
        n++;
    return n;
}

static inline int
as_sched_nderived(const as_sched_kind *k)
{
    int n = 0;
    while (n < AS_SCHED_MAX_DERIVED && k->derived[n].name != NULL)
        n++;
    return n;
}

/* The row whose type name is `type_name`, or NULL. */
static inline const as_sched_kind *
as_sched_find(const char *type_name)
{
    for (int k = 0; k < AS_SCHED_NKINDS; k++)
        if (strcmp(AS_SCHED_KINDS[k].type_name, type_name) == 0)
            return &AS_SCHED_KINDS[k];
    return NULL;
}

/* Index of the parameter called `name`, or -1. */
static inline int
as_sched_param_index(const as_sched_kind *k, const char *name)
{
    for (int i = 0; i < as_sched_nparams(k); i++)
        if (strcmp(k->params[i].name, name) == 0)
            return i;
    return -1;
}

static inline int
as_domain_contains(const as_domain *d, double x)
{
    if (x != x)
        return 0;
    if (d->min_open ? !(x > d->min) : !(x >= d->min))
        return 0;
    if (d->max_open ? !(x < d->max) : !(x <= d->max))
        return 0;
    return 1;
}

static inline int
as_param_admits(const as_sched_param *p, as_sched_value v)
{
    if (p->type == AS_PARAM_FLOAT)
        return isfinite(v.f) && as_domain_contains(&p->domain, v.f);
    return as_domain_contains(&p->domain, (double)v.i);
}

/* The shortest "%g" form of x that reads back exactly ("1", "0.5", "inf"). */
static inline void
as_format_double(double x, char *buf, size_t n)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, x);
        if (strtod(buf, NULL) == x)
            return;
    }
}

/* What a parameter accepts, in words ("an integer >= 1", "a finite number in
 * [0, 1]"), for error messages and docs.  Always terminated. */
static inline void
as_param_expected(const as_sched_param *p, char *buf, size_t n)
{
    const as_domain *d = &p->domain;
    const char *what = p->type == AS_PARAM_INT ? "an integer" : "a finite number";
    char a[32], b[32];
    as_format_double(d->min, a, sizeof a);
    as_format_double(d->max, b, sizeof b);
    int lo = isfinite(d->min), hi = isfinite(d->max);
    if (lo && hi)
        snprintf(buf, n, "%s in %c%s, %s%c", what, d->min_open ? '(' : '[', a, b,
                 d->max_open ? ')' : ']');
    else if (lo)
        snprintf(buf, n, "%s %s %s", what, d->min_open ? ">" : ">=", a);
    else if (hi)
        snprintf(buf, n, "%s %s %s", what, d->max_open ? "<" : "<=", b);
    else
        snprintf(buf, n, "%s", what);
}

/*
 * Build a schedule of kind `k` from its parameter values (in row order, each
 * already of its C type).  Returns NULL on success.  Otherwise returns why,
 * with *bad the index of the parameter outside its domain, or -1 when a
 * cross-parameter rule of the kind failed.
 */
static inline const char *
as_sched_init(as_sched *s, const as_sched_kind *k, const as_sched_value *values, int *bad)
{
    memset(s, 0, sizeof(*s));
    s->kind = k;
    *bad = -1;
    for (int i = 0; i < as_sched_nparams(k); i++) {
        if (!as_param_admits(&k->params[i], values[i])) {
            *bad = i;
            return "outside its domain";
        }
        s->v[i] = values[i];
    }
    return k->check != NULL ? k->check(s) : NULL;
}

/* The multiplier at `step` (callers guarantee step >= 0). */
static inline double
as_sched_eval(const as_sched *s, int64_t step)
{
    return s->kind->eval(s, step);
}

/* Vectorised form: out[i] = eval(steps[i]); returns the index of the first
 * negative step, or -1 when all were valid.  Touches no Python object, so the
 * caller may release the GIL around it. */
static inline int64_t
as_sched_eval_many(const as_sched *s, const int64_t *steps, double *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        if (steps[i] < 0)
            return i;
        out[i] = as_sched_eval(s, steps[i]);
    }
    return -1;
}

#endif /* AUTOSTEER_SCHEDULE_H */
