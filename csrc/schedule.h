/*
 * schedule.h - coefficient schedules as pure math (no Python).
 *
 * A schedule maps the generation step (0 at the prefill, k at the k-th decode
 * step) to a multiplier of the steering coefficient.  Header-only so that the
 * extension and the plain-C unit tests compile the very same code.
 */
#ifndef AUTOSTEER_SCHEDULE_H
#define AUTOSTEER_SCHEDULE_H

#include <math.h>
#include <stdint.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

typedef enum {
    AS_SCHED_DECAY = 1,
    AS_SCHED_COSINE = 2,
    AS_SCHED_WARMUP = 3
} as_sched_kind;

typedef struct {
    as_sched_kind kind;
    double x;        /* decay: rate;           cosine: min;   warmup: start */
    double y;        /* decay: min_multiplier; unused otherwise             */
    int64_t n;       /* decay: times_restart;  cosine: period; warmup: steps */
    int64_t cycle;   /* decay with restarts: steps in one sawtooth cycle    */
} as_sched;

static int as_sched_finite_unit(double v) { return isfinite(v) && v >= 0.0 && v <= 1.0; }

/* Each initialiser returns NULL on success, or a static message naming the
 * domain that was violated. */
static const char *
as_sched_init_decay(as_sched *s, double rate, double min_multiplier, int64_t times_restart)
{
    if (!isfinite(rate) || rate > 1.0)
        return "rate must be a finite number <= 1 (rate <= 0 turns decay off)";
    if (!as_sched_finite_unit(min_multiplier))
        return "min_multiplier must be a finite number in [0, 1]";
    if (times_restart < 0)
        return "times_restart must be >= 0";
    s->kind = AS_SCHED_DECAY;
    s->x = rate;
    s->y = min_multiplier;
    s->n = times_restart;
    s->cycle = 0;
    if (times_restart > 0) {
        if (!(rate > 0.0 && rate < 1.0) || !(min_multiplier > 0.0 && min_multiplier < 1.0))
            return "times_restart > 0 needs 0 < rate < 1 and 0 < min_multiplier < 1";
        /* steps until rate**p first reaches min, plus the step at min itself */
        double c = ceil(log(min_multiplier) / log(rate));
        if (!(c >= 1.0) || c > 1e12)
            return "rate and min_multiplier give an unusable cycle length";
        s->cycle = (int64_t)c + 1;
        if (times_restart > INT64_MAX / s->cycle)
            return "times_restart is too large (cycle_length * times_restart overflows)";
    }
    return NULL;
}

static const char *
as_sched_init_cosine(as_sched *s, int64_t period, double min_multiplier)
{
    if (period < 1)
        return "period must be an integer >= 1";
    if (!as_sched_finite_unit(min_multiplier))
        return "min_multiplier must be a finite number in [0, 1]";
    s->kind = AS_SCHED_COSINE;
    s->x = min_multiplier;
    s->y = 0.0;
    s->n = period;
    s->cycle = 0;
    return NULL;
}

static const char *
as_sched_init_warmup(as_sched *s, int64_t steps, double start)
{
    if (steps < 0)
        return "steps must be an integer >= 0";
    if (!as_sched_finite_unit(start))
        return "start must be a finite number in [0, 1]";
    s->kind = AS_SCHED_WARMUP;
    s->x = start;
    s->y = 0.0;
    s->n = steps;
    s->cycle = 0;
    return NULL;
}

/* The multiplier at `step` (callers guarantee step >= 0). */
static double
as_sched_eval(const as_sched *s, int64_t step)
{
    switch (s->kind) {
    case AS_SCHED_DECAY: {
        if (s->x <= 0.0)
            return 1.0;
        int64_t p = step;
        if (s->n > 0) {
            /* sawtooth: restart `n` times, then decay on and stay at min */
            int64_t restart_span = s->cycle * s->n;
            p = step < restart_span ? step % s->cycle : step - restart_span;
        }
        double v = pow(s->x, (double)p);
        return v > s->y ? v : s->y;
    }
    case AS_SCHED_COSINE: {
        if (step >= s->n)
            return s->x;
        double c = 0.5 * (1.0 + cos(M_PI * (double)step / (double)s->n));
        return s->x + (1.0 - s->x) * c;
    }
    case AS_SCHED_WARMUP: {
        if (step >= s->n)
            return 1.0;
        return s->x + (1.0 - s->x) * (double)step / (double)s->n;
    }
    }
    return 1.0;
}

/* Vectorised form: out[i] = eval(steps[i]); returns the index of the first
 * negative step, or -1 when all were valid.  Touches no Python object, so the
 * caller may release the GIL around it. */
static int64_t
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
