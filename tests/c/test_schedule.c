/* Plain-C unit tests of csrc/schedule.h (built with ASan/UBSan by run_c_tests.sh).
 * Every schedule is built through its row of the table (as_sched_find +
 * as_sched_init), as the extension builds it.  Expected values come from the
 * formulas of the brief, written out here. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "schedule.h"

static int failures = 0;

#define CHECK(cond, ...)                                   \
    do {                                                   \
        if (!(cond)) {                                     \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                  \
            fprintf(stderr, "\n");                         \
            failures++;                                    \
        }                                                  \
    } while (0)

static int close_to(double a, double b) { return fabs(a - b) <= 1e-12 * (1.0 + fabs(b)); }

/* Build a schedule of `type` from values given as doubles (ints converted by
 * the row's parameter types); returns the init result, *bad as as_sched_init. */
static const char *
make(as_sched *s, const char *type, int n, const double *vals, int *bad)
{
    const as_sched_kind *k = as_sched_find(type);
    int dummy;
    if (bad == NULL)
        bad = &dummy;
    if (k == NULL) {
        fprintf(stderr, "no kind %s\n", type);
        exit(2);
    }
    as_sched_value v[AS_SCHED_MAX_PARAMS];
    for (int i = 0; i < as_sched_nparams(k); i++) {
        double x = i < n ? vals[i] : k->params[i].default_value;
        if (k->params[i].type == AS_PARAM_INT)
            v[i].i = (int64_t)x;
        else
            v[i].f = x;
    }
    return as_sched_init(s, k, v, bad);
}

static const char *decay(as_sched *s, double rate, double mn, double restarts)
{
    double v[3] = {rate, mn, restarts};
    return make(s, "decay", 3, v, NULL);
}

static const char *cosine(as_sched *s, double period, double mn)
{
    double v[2] = {period, mn};
    return make(s, "cosine", 2, v, NULL);
}

static const char *warmup(as_sched *s, double steps, double start)
{
    double v[2] = {steps, start};
    return make(s, "warmup", 2, v, NULL);
}

static void test_table(void)
{
    CHECK(AS_SCHED_NKINDS == 3, "three kinds, got %d", AS_SCHED_NKINDS);
    for (int k = 0; k < AS_SCHED_NKINDS; k++) {
        const as_sched_kind *row = &AS_SCHED_KINDS[k];
        CHECK(as_sched_find(row->type_name) == row, "find %s", row->type_name);
        CHECK(row->eval != NULL && row->class_name != NULL && row->doc != NULL, "row %d complete", k);
        CHECK(as_sched_nparams(row) >= 1, "row %s has parameters", row->type_name);
        for (int i = 0; i < as_sched_nparams(row); i++) {
            const as_sched_param *p = &row->params[i];
            CHECK(as_sched_param_index(row, p->name) == i, "param index %s", p->name);
            /* defaults and both ends of the search range lie in the domain */
            as_sched_value lo, hi, dflt;
            if (p->type == AS_PARAM_INT) {
                lo.i = (int64_t)p->search_min; hi.i = (int64_t)p->search_max;
                dflt.i = (int64_t)p->default_value;
            }
            else {
                lo.f = p->search_min; hi.f = p->search_max; dflt.f = p->default_value;
            }
            CHECK(p->search_min <= p->search_max, "%s.%s search range ordered", row->type_name, p->name);
            CHECK(as_param_admits(p, lo) && as_param_admits(p, hi), "%s.%s search range in domain",
                  row->type_name, p->name);
            CHECK(p->required || as_param_admits(p, dflt), "%s.%s default in domain", row->type_name, p->name);
        }
    }
    CHECK(as_sched_find("linear") == NULL, "unknown kind found");
    const as_sched_kind *d = as_sched_find("decay");
    CHECK(strcmp(d->class_name, "DecaySchedule") == 0, "decay class name");
    CHECK(d->params[0].search_min == 0.8 && d->params[0].search_max == 0.99, "decay rate search range");
    CHECK(strcmp(d->derived[0].name, "cycle_length") == 0, "decay derives cycle_length");
    const as_sched_kind *c = as_sched_find("cosine");
    CHECK(c->params[0].required && c->params[0].type == AS_PARAM_INT, "cosine period required int");
    CHECK(c->params[0].search_min == 4 && c->params[0].search_max == 32, "cosine period range");
    const as_sched_kind *w = as_sched_find("warmup");
    CHECK(w->params[0].search_min == 1 && w->params[0].search_max == 8, "warmup steps range");
    CHECK(w->params[1].search_min == 0.0 && w->params[1].search_max == 0.5, "warmup start range");

    char buf[96];
    as_param_expected(&c->params[0], buf, sizeof buf);
    CHECK(strcmp(buf, "an integer >= 1") == 0, "expected text '%s'", buf);
    as_param_expected(&c->params[1], buf, sizeof buf);
    CHECK(strcmp(buf, "a finite number in [0, 1]") == 0, "expected text '%s'", buf);
    as_param_expected(&d->params[0], buf, sizeof buf);
    CHECK(strcmp(buf, "a finite number <= 1") == 0, "expected text '%s'", buf);
    as_format_double(0.1, buf, sizeof buf);
    CHECK(strcmp(buf, "0.1") == 0, "shortest form of 0.1: '%s'", buf);
}

static void test_decay_plain(void)
{
    as_sched s;
    CHECK(decay(&s, 0.9, 0.2, 0) == NULL, "valid decay refused");
    for (int64_t k = 0; k < 60; k++) {
        double want = pow(0.9, (double)k);
        if (want < 0.2) want = 0.2;
        CHECK(close_to(as_sched_eval(&s, k), want), "decay step %lld", (long long)k);
    }
    CHECK(decay(&s, 0.0, 0.5, 0) == NULL, "rate 0 refused");
    CHECK(as_sched_eval(&s, 7) == 1.0, "rate <= 0 must mean 1.0");
    CHECK(decay(&s, -3.0, 0.0, 0) == NULL, "negative rate refused");
    CHECK(as_sched_eval(&s, 3) == 1.0, "negative rate must mean 1.0");
    CHECK(make(&s, "decay", 0, NULL, NULL) == NULL, "all defaults refused");
    CHECK(as_sched_eval(&s, 5) == 1.0, "default decay is constant 1");
}

static void test_decay_sawtooth(void)
{
    const double rate = 0.7, mn = 0.3;
    const int64_t restarts = 3;
    as_sched s;
    CHECK(decay(&s, rate, mn, (double)restarts) == NULL, "valid sawtooth refused");
    int64_t cycle = (int64_t)ceil(log(mn) / log(rate)) + 1;
    CHECK(s.derived[AS_DECAY_CYCLE] == cycle, "cycle %lld != %lld", (long long)s.derived[AS_DECAY_CYCLE],
          (long long)cycle);
    for (int64_t k = 0; k < cycle * (restarts + 3); k++) {
        int64_t p = k < cycle * restarts ? k % cycle : k - cycle * restarts;
        double want = fmax(pow(rate, (double)p), mn);
        CHECK(close_to(as_sched_eval(&s, k), want), "sawtooth step %lld", (long long)k);
    }
    for (int64_t c = 0; c < restarts; c++) {
        CHECK(as_sched_eval(&s, c * cycle) == 1.0, "cycle %lld starts at 1", (long long)c);
        CHECK(as_sched_eval(&s, c * cycle + cycle - 1) == mn, "cycle %lld ends at min", (long long)c);
    }
    CHECK(as_sched_eval(&s, cycle * restarts + 1000) == mn, "stays at min after the restarts");
}

static void test_domains(void)
{
    as_sched s;
    int bad;
    double v[3] = {1.5, 0.0, 0.0};
    CHECK(make(&s, "decay", 3, v, &bad) != NULL && bad == 0, "rate > 1 accepted (bad %d)", bad);
    CHECK(decay(&s, NAN, 0.0, 0) != NULL, "nan rate accepted");
    CHECK(decay(&s, -INFINITY, 0.0, 0) != NULL, "-inf rate accepted");
    v[0] = 0.9; v[1] = -0.1;
    CHECK(make(&s, "decay", 3, v, &bad) != NULL && bad == 1, "negative min accepted");
    v[1] = 0.1; v[2] = -1;
    CHECK(make(&s, "decay", 3, v, &bad) != NULL && bad == 2, "negative restarts accepted");
    v[1] = 0.0; v[2] = 2;
    CHECK(make(&s, "decay", 3, v, &bad) != NULL && bad == -1, "restarts with min 0 accepted");
    CHECK(decay(&s, 1.0, 0.5, 2) != NULL, "restarts with rate 1 accepted");
    CHECK(decay(&s, 0.5, 0.1, 1844674407370955162.0) != NULL, "cycle * restarts overflow accepted");
    CHECK(cosine(&s, 0, 0.1) != NULL, "period 0 accepted");
    CHECK(cosine(&s, 5, 1.5) != NULL, "cosine min > 1 accepted");
    CHECK(warmup(&s, -1, 0.0) != NULL, "negative warmup accepted");
    CHECK(warmup(&s, 4, INFINITY) != NULL, "infinite start accepted");
}

static void test_cosine_warmup(void)
{
    as_sched s;
    CHECK(cosine(&s, 8, 0.25) == NULL, "valid cosine refused");
    for (int64_t k = 0; k < 20; k++) {
        double want = k >= 8 ? 0.25 : 0.25 + 0.75 * 0.5 * (1.0 + cos(M_PI * (double)k / 8.0));
        CHECK(close_to(as_sched_eval(&s, k), want), "cosine step %lld", (long long)k);
    }
    CHECK(as_sched_eval(&s, 0) == 1.0, "cosine starts at 1");
    CHECK(warmup(&s, 4, 0.2) == NULL, "valid warmup refused");
    for (int64_t k = 0; k < 10; k++) {
        double want = k >= 4 ? 1.0 : 0.2 + 0.8 * (double)k / 4.0;
        CHECK(close_to(as_sched_eval(&s, k), want), "warmup step %lld", (long long)k);
    }
    CHECK(warmup(&s, 0, 0.2) == NULL, "zero warmup refused");
    CHECK(as_sched_eval(&s, 0) == 1.0, "zero-step warmup is constant 1");
}

static void test_many(void)
{
    as_sched s;
    CHECK(decay(&s, 0.5, 0.1, 1) == NULL, "valid sawtooth refused");
    int64_t steps[6] = {0, 1, 2, 3, 4, 5};
    double out[6];
    CHECK(as_sched_eval_many(&s, steps, out, 6) == -1, "valid steps refused");
    for (int i = 0; i < 6; i++)
        CHECK(out[i] == as_sched_eval(&s, steps[i]), "eval_many[%d]", i);
    steps[3] = -2;
    CHECK(as_sched_eval_many(&s, steps, out, 6) == 3, "negative step not reported");
}

int main(void)
{
    test_table();
    test_decay_plain();
    test_decay_sawtooth();
    test_domains();
    test_cosine_warmup();
    test_many();
    if (failures) {
        fprintf(stderr, "test_schedule: %d failure(s)\n", failures);
        return 1;
    }
    printf("test_schedule: ok\n");
    return 0;
}
