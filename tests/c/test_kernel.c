/* Plain-C unit tests of csrc/kernel.h against a naive double-precision
 * reference written here (built with ASan/UBSan by run_c_tests.sh). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kernel.h"

static int failures = 0;
#define CHECK(cond, ...)                                               \
    do {                                                               \
        if (!(cond)) {                                                 \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);       \
            fprintf(stderr, __VA_ARGS__);                              \
            fprintf(stderr, "\n");                                     \
            failures++;                                                \
        }                                                              \
    } while (0)

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static double urand(void)
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

static void test_conversions(void)
{
    /* exact values and rounding of float16 */
    CHECK(as_f16_to_f32(0x3c00) == 1.0f, "f16 1.0");
    CHECK(as_f16_to_f32(0xc000) == -2.0f, "f16 -2.0");
    CHECK(as_f16_to_f32(0x0001) == ldexpf(1.0f, -24), "f16 smallest subnormal");
    CHECK(as_f32_to_f16(1.0f) == 0x3c00, "to f16 1.0");
    CHECK(as_f32_to_f16(65504.0f) == 0x7bff, "to f16 max");
    CHECK(as_f32_to_f16(1e6f) == 0x7c00, "to f16 overflow -> inf");
    CHECK(as_f32_to_f16(ldexpf(1.0f, -24)) == 0x0001, "to f16 subnormal");
    /* 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even -> 1 */
    CHECK(as_f32_to_f16(1.0f + ldexpf(1.0f, -11)) == 0x3c00, "f16 tie to even");
    CHECK(as_f32_to_f16(1.0f + 3 * ldexpf(1.0f, -11)) == 0x3c02, "f16 tie to even (odd)");
    /* every finite half round-trips */
    for (uint32_t u = 0; u < 0x10000u; u++) {
        uint16_t h = (uint16_t)u;
        if (((h >> 10) & 0x1f) == 0x1f) continue;
        CHECK(as_f32_to_f16(as_f16_to_f32(h)) == h || (h == 0x8000), "f16 round trip %04x", h);
        if (failures > 5) return;
    }
    CHECK(as_f32_to_bf16(1.0f) == 0x3f80, "bf16 1.0");
    CHECK(as_bf16_to_f32(0xc040) == -3.0f, "bf16 -3.0");
    /* 1 + 2^-8 is halfway between bf16 neighbours 1 and 1 + 2^-7: ties to even */
    CHECK(as_f32_to_bf16(1.0f + ldexpf(1.0f, -8)) == 0x3f80, "bf16 tie to even");
    CHECK(isnan(as_bf16_to_f32(as_f32_to_bf16(NAN))), "bf16 nan stays nan");
}

/* h[b, t, :] += s_b * sum_j w[b, j] dir[j, :] with the rms at last[b] */
static void reference(double *h, int64_t B, int64_t T, int64_t D, const float *dirs, int64_t J,
                      const float *w, int64_t wstride, const int64_t *last)
{
    for (int64_t b = 0; b < B; b++) {
        int64_t lt = last ? last[b] : T - 1;
        double acc = 0.0;
        for (int64_t d = 0; d < D; d++)
            acc += h[(b * T + lt) * D + d] * h[(b * T + lt) * D + d];
        double s = sqrt(acc / (double)D + 1e-6);   /* the brief's epsilon, not the header's */
        for (int64_t d = 0; d < D; d++) {
            double delta = 0.0;
            for (int64_t j = 0; j < J; j++)
                delta += (double)w[b * wstride + j] * dirs[j * D + d];
            for (int64_t t = 0; t < T; t++)
                h[(b * T + t) * D + d] += s * delta;
        }
    }
}

static void test_kernel_dtype(as_dtype dt, double tol, int strided)
{
    const int64_t B = 3, T = 5, D = 37, J = 2;
    /* strided: the sequence stride leaves a gap of 3 elements per position,
     * and the batch stride a gap of 11 */
    const int64_t st = strided ? D + 3 : D, sb = strided ? st * T + 11 : st * T;
    size_t esize = dt == AS_F32 ? 4 : 2;
    char *buf = calloc((size_t)(sb * B + 16), esize);
    double *ref = malloc(sizeof(double) * (size_t)(B * T * D));
    float dirs[2 * 37], w[3 * 2], scratch[37];
    int64_t last[3] = {4, 2, 0};
    for (int64_t i = 0; i < J * D; i++) dirs[i] = (float)urand();
    for (int64_t i = 0; i < B * J; i++) w[i] = (float)(urand() * 0.8);
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t d = 0; d < D; d++) {
                float v = (float)(urand() * 3.0);
                as_store(buf, dt, b * sb + t * st + d, v);
                ref[(b * T + t) * D + d] = as_load(buf, dt, b * sb + t * st + d);
            }
    /* the gaps must stay untouched: fill them with a sentinel */
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t d = D; d < st; d++)
                as_store(buf, dt, b * sb + t * st + d, 42.0f);
    as_hidden h = {buf, dt, B, T, D, sb, st};
    CHECK(as_kernel_apply(&h, dirs, J, w, J, NULL, last, scratch) == 0, "kernel refused valid input");
    reference(ref, B, T, D, dirs, J, w, J, last);
    double worst = 0.0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            for (int64_t d = 0; d < D; d++) {
                double got = as_load(buf, dt, b * sb + t * st + d);
                double want = ref[(b * T + t) * D + d];
                double err = fabs(got - want) / (1.0 + fabs(want));
                if (err > worst) worst = err;
            }
            for (int64_t d = D; d < st; d++)
                CHECK(as_load(buf, dt, b * sb + t * st + d) == 42.0f, "gap written");
        }
    CHECK(worst <= tol, "dtype %d strided %d: worst relative error %g > %g", dt, strided, worst, tol);
    int64_t bad[3] = {0, 5, 0};
    CHECK(as_kernel_apply(&h, dirs, J, w, J, NULL, bad, scratch) == -1, "out-of-range last accepted");
    free(buf);
    free(ref);
}

static void test_zero_weights_untouched(void)
{
    float h[2 * 3 * 4], copy[24], dirs[4] = {1, 2, 3, 4}, w[1] = {0.0f}, scratch[4];
    for (int i = 0; i < 24; i++) h[i] = copy[i] = (float)urand();
    as_hidden hid = {h, AS_F32, 2, 3, 4, 12, 4};
    CHECK(as_kernel_apply(&hid, dirs, 1, w, 0, NULL, NULL, scratch) == 0, "zero weights refused");
    CHECK(memcmp(h, copy, sizeof h) == 0, "zero weight changed the tensor");
}

/* Per-row weights through w_index: batch row b uses weights row w_index[b],
 * exactly as if that row had been steered alone with those weights. */
static void test_row_groups(void)
{
    const int64_t B = 4, T = 3, D = 5, J = 2, G = 3;
    float h[4 * 3 * 5], alone[4 * 3 * 5], dirs[2 * 5], w[3 * 2], scratch[5];
    int64_t groups[4] = {2, 0, 2, 1};
    for (int64_t i = 0; i < B * T * D; i++) h[i] = alone[i] = (float)urand();
    for (int64_t i = 0; i < J * D; i++) dirs[i] = (float)urand();
    for (int64_t i = 0; i < G * J; i++) w[i] = (float)urand();
    as_hidden hid = {h, AS_F32, B, T, D, T * D, D};
    CHECK(as_kernel_apply(&hid, dirs, J, w, J, groups, NULL, scratch) == 0, "row groups refused");
    for (int64_t b = 0; b < B; b++) {
        as_hidden one = {alone + b * T * D, AS_F32, 1, T, D, T * D, D};
        CHECK(as_kernel_apply(&one, dirs, J, w + groups[b] * J, 0, NULL, NULL, scratch) == 0,
              "single row refused");
    }
    CHECK(memcmp(h, alone, sizeof h) == 0, "per-row weights differ from steering each row alone");
}

/* A row whose delta is not finite in the storage type is refused (-2), never
 * written: a NaN input row, and a float16 row whose rms times the weight
 * exceeds 65504.  Rows before it are steered; the bad row is untouched. */
static void test_non_finite_delta_refused(void)
{
    enum { D = 4 };
    float dirs[D] = {1.0f, -1.0f, 0.5f, 0.0f}, w[1] = {0.5f}, scratch[D + 1];
    float h[2][D] = {{1, 2, 3, 4}, {NAN, 1, 1, 1}};
    float before1[D];
    memcpy(before1, h[1], sizeof before1);
    as_hidden hid = {h, AS_F32, 2, 1, D, D, D};
    CHECK(as_kernel_apply(&hid, dirs, 1, w, 0, NULL, NULL, scratch) == -2, "NaN row accepted");
    CHECK(h[0][0] != 1.0f, "the finite row before it was not steered");
    CHECK(memcmp(h[1], before1, sizeof before1) == 0, "the NaN row was written");

    uint16_t f16[D];
    for (int d = 0; d < D; d++)
        f16[d] = as_f32_to_f16(60000.0f);          /* rms 60000 */
    float big[1] = {2.0f};                        /* delta 60000 * 2 * 1 > 65504 */
    as_hidden hh = {f16, AS_F16, 1, 1, D, D, D};
    CHECK(as_kernel_apply(&hh, dirs, 1, big, 0, NULL, NULL, scratch) == -2, "float16 overflow accepted");
    CHECK(f16[0] == as_f32_to_f16(60000.0f), "the overflowing float16 row was written");
}

int main(void)
{
    CHECK(AS_RMS_EPS == 1e-6, "the rms epsilon of the brief is 1e-6");
    CHECK(as_dtype_max(AS_F16) == 65504.0, "float16 max");
    CHECK((float)as_dtype_max(AS_BF16) == as_bf16_to_f32(0x7f7f), "bfloat16 max");
    CHECK(as_dtype_max(AS_F32) == (double)3.40282346638528859812e+38F, "float32 max");
    test_conversions();
    test_kernel_dtype(AS_F32, 1e-5, 0);
    test_kernel_dtype(AS_F32, 1e-5, 1);
    test_kernel_dtype(AS_F16, 2e-3, 1);
    test_kernel_dtype(AS_BF16, 1.6e-2, 1);
    test_zero_weights_untouched();
    test_row_groups();
    test_non_finite_delta_refused();
    if (failures) {
        fprintf(stderr, "test_kernel: %d failure(s)\n", failures);
        return 1;
    }
    printf("test_kernel: ok\n");
    return 0;
}
