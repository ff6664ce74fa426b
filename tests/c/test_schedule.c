/* Plain-C unit tests of csrc/schedule.h (built with ASan/UBSan by run_c_tests.sh).
 * Expected values come from the formulas of the brief, written out here. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
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

static void test_decay_plain(void)
{
    as_sched s;
    CHECK(as_sched_init_decay(&s, 0.9, 0.2, 0) == NULL, "valid decay refused");
    for (int64_t k = 0; k < 60; k++) {
        double want = pow(0.9, (double)k);
        if (want < 0.2) want = 0.2;
        CHECK(close_to(as_sched_eval(&s, k), want), "decay step %lld", (long long)k);
    }
    CHECK(as_sched_init_decay(&s, 0.0, 0.5, 0) == NULL, "rate 0 refused");
    CHECK(as_sched_eval(&s, 7) == 1.0, "rate <= 0 must mean 1.0");
    CHECK(as_sched_init_decay(&s, -3.0, 0.0, 0) == NULL, "negative rate refused");
    CHECK(as_sched_eval(&s, 3) == 1.0, "negative rate must mean 1.0");
}

static void test_decay_sawtooth(void)
{
    const double rate = 0.7, mn = 0.3;
    const int64_t restarts = 3;
    as_sched s;
    CHECK(as_sched_init_decay(&s, rate, mn, restarts) == NULL, "valid sawtooth refused");
    int64_t cycle = (int64_t)ceil(log(mn) / log(rate)) + 1;
    CHECK(s.cycle == cycle, "cycle %lld != %lld", (long long)s.cycle, (long long)cycle);
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
    CHECK(as_sched_init_decay(&s, 1.5, 0.0, 0) != NULL, "rate > 1 accepted");
    CHECK(as_sched_init_decay(&s, NAN, 0.0, 0) != NULL, "nan rate accepted");
    CHECK(as_sched_init_decay(&s, 0.9, -0.1, 0) != NULL, "negative min accepted");
    CHECK(as_sched_init_decay(&s, 0.9, 0.1, -1) != NULL, "negative restarts accepted");
    CHECK(as_sched_init_decay(&s, 0.9, 0.0, 2) != NULL, "restarts with min 0 accepted");
    CHECK(as_sched_init_decay(&s, 1.0, 0.5, 2) != NULL, "restarts with rate 1 accepted");
    CHECK(as_sched_init_cosine(&s, 0, 0.1) != NULL, "period 0 accepted");
    CHECK(as_sched_init_cosine(&s, 5, 1.5) != NULL, "cosine min > 1 accepted");
    CHECK(as_sched_init_warmup(&s, -1, 0.0) != NULL, "negative warmup accepted");
    CHECK(as_sched_init_warmup(&s, 4, INFINITY) != NULL, "infinite start accepted");
}

static void test_cosine_warmup(void)
{
    as_sched s;
    CHECK(as_sched_init_cosine(&s, 8, 0.25) == NULL, "valid cosine refused");
    for (int64_t k = 0; k < 20; k++) {
        double want = k >= 8 ? 0.25 : 0.25 + 0.75 * 0.5 * (1.0 + cos(M_PI * (double)k / 8.0));
        CHECK(close_to(as_sched_eval(&s, k), want), "cosine step %lld", (long long)k);
    }
    CHECK(as_sched_eval(&s, 0) == 1.0, "cosine starts at 1");
    CHECK(as_sched_init_warmup(&s, 4, 0.2) == NULL, "valid warmup refused");
    for (int64_t k = 0; k < 10; k++) {
        double want = k >= 4 ? 1.0 : 0.2 + 0.8 * (double)k / 4.0;
        CHECK(close_to(as_sched_eval(&s, k), want), "warmup step %lld", (long long)k);
    }
    CHECK(as_sched_init_warmup(&s, 0, 0.2) == NULL, "zero warmup refused");
    CHECK(as_sched_eval(&s, 0) == 1.0, "zero-step warmup is constant 1");
}

static void test_many(void)
{
    as_sched s;
    as_sched_init_decay(&s, 0.5, 0.1, 1);
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
