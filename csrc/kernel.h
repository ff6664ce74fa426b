/*
 * kernel.h - the fused steering kernel as pure math (no Python).
 *
 * For every batch row b of a hidden-state tensor h[B, T, D]:
 *     s_b = sqrt(mean_d(h[b, last_b, d]^2) + 1e-6)        (unsteered state)
 *     h[b, t, d] += s_b * sum_j w[b, j] * dir[j, d]        for every t
 * Storage is float32, float16 or bfloat16; all arithmetic is float32 except
 * the sum of squares, accumulated in double.  Batch and sequence strides are
 * arbitrary; the hidden dimension must be contiguous.
 */
#ifndef AUTOSTEER_KERNEL_H
#define AUTOSTEER_KERNEL_H

#include <math.h>
#include <stdint.h>
#include <string.h>

typedef enum { AS_F32 = 0, AS_F16 = 1, AS_BF16 = 2 } as_dtype;

#define AS_RMS_EPS 1e-6

/* ---- half <-> float, bfloat16 <-> float (round to nearest even) ---- */

static inline float as_bits_to_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t as_f32_to_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

static inline float
as_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0x1f)                               /* inf / nan */
        return as_bits_to_f32(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        if (man == 0)
            return as_bits_to_f32(sign);
        /* subnormal: value = man * 2^-24 */
        float v = (float)man * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    return as_bits_to_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

static inline uint16_t
as_f32_to_f16(float f)
{
    uint32_t x = as_f32_to_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u)                         /* inf / nan */
        return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u));
    if (ax >= 0x477ff000u)                         /* rounds to >= 65520: inf */
        return (uint16_t)(sign | 0x7c00u);
    if (ax < 0x38800000u) {                        /* below 2^-14: subnormal or 0 */
        /* round(|f| * 2^24) with ties to even, done in float exactly */
        float a = as_bits_to_f32(ax);
        float scaled = a * 16777216.0f;            /* exact: power of two */
        float r = nearbyintf(scaled);              /* default mode: ties to even */
        return (uint16_t)(sign | (uint16_t)r);
    }
    uint32_t exp = (ax >> 23) - 112u;
    uint32_t man = ax & 0x7fffffu;
    uint32_t half = (exp << 10) | (man >> 13);
    uint32_t rest = man & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1u)))
        half += 1u;                                /* may carry into the exponent: fine */
    return (uint16_t)(sign | half);
}

static inline float as_bf16_to_f32(uint16_t b) { return as_bits_to_f32((uint32_t)b << 16); }

static inline uint16_t
as_f32_to_bf16(float f)
{
    uint32_t x = as_f32_to_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u)           /* nan: keep it quiet */
        return (uint16_t)((x >> 16) | 0x40u);
    uint32_t lsb = (x >> 16) & 1u;
    x += 0x7fffu + lsb;
    return (uint16_t)(x >> 16);
}

static inline float
as_load(const void *base, as_dtype dt, int64_t i)
{
    switch (dt) {
    case AS_F16: return as_f16_to_f32(((const uint16_t *)base)[i]);
    case AS_BF16: return as_bf16_to_f32(((const uint16_t *)base)[i]);
    default: return ((const float *)base)[i];
    }
}

static inline void
as_store(void *base, as_dtype dt, int64_t i, float v)
{
    switch (dt) {
    case AS_F16: ((uint16_t *)base)[i] = as_f32_to_f16(v); break;
    case AS_BF16: ((uint16_t *)base)[i] = as_f32_to_bf16(v); break;
    default: ((float *)base)[i] = v; break;
    }
}

/* rms of one row of D elements, in float32 semantics with a double sum */
static inline float
as_kernel_row_rms(const void *row, as_dtype dt, int64_t D)
{
    double acc = 0.0;
    for (int64_t d = 0; d < D; d++) {
        double v = (double)as_load(row, dt, d);
        acc += v * v;
    }
    return (float)sqrt(acc / (double)D + AS_RMS_EPS);
}

typedef struct {
    void *data;          /* h[0, 0, 0] */
    as_dtype dtype;
    int64_t B, T, D;
    int64_t stride_b;    /* in elements */
    int64_t stride_t;    /* in elements; the hidden dimension has stride 1 */
} as_hidden;

/*
 * Apply the steering delta in place.
 *   dirs:    J x D float32, row-major contiguous
 *   weights: B x J float32 with row stride `w_stride` (0: one row for all)
 *   last:    B indices of each row's last real token, or NULL for T - 1
 *   scratch: D floats of workspace
 * Returns 0, or -1 when an index in `last` is outside [0, T).
 */
static int
as_kernel_apply(const as_hidden *h, const float *dirs, int64_t J,
                const float *weights, int64_t w_stride, const int64_t *last,
                float *scratch)
{
    const int64_t D = h->D;
    const size_t esize = h->dtype == AS_F32 ? 4 : 2;
    for (int64_t b = 0; b < h->B; b++) {
        int64_t lt = last ? last[b] : h->T - 1;
        if (lt < 0 || lt >= h->T)
            return -1;
        char *rowb = (char *)h->data + (size_t)(b * h->stride_b) * esize;
        const float *w = weights + b * w_stride;
        float s = as_kernel_row_rms(rowb + (size_t)(lt * h->stride_t) * esize, h->dtype, D);
        /* combined direction for this row, scaled by the row's rms */
        for (int64_t d = 0; d < D; d++)
            scratch[d] = 0.0f;
        int any = 0;
        for (int64_t j = 0; j < J; j++) {
            float wj = w[j];
            if (wj == 0.0f)
                continue;
            any = 1;
            const float *dj = dirs + j * D;
            for (int64_t d = 0; d < D; d++)
                scratch[d] += wj * dj[d];
        }
        if (!any)
            continue;
        for (int64_t d = 0; d < D; d++)
            scratch[d] *= s;
        for (int64_t t = 0; t < h->T; t++) {
            char *row = rowb + (size_t)(t * h->stride_t) * esize;
            if (h->dtype == AS_F32) {
                float *r = (float *)row;
                for (int64_t d = 0; d < D; d++)
                    r[d] += scratch[d];
            }
            else {
                for (int64_t d = 0; d < D; d++)
                    as_store(row, h->dtype, d, as_load(row, h->dtype, d) + scratch[d]);
            }
        }
    }
    return 0;
}

/* Index of the last real token among the last T columns of a B x S mask row
 * (any element type, read through `is_set`).  Falls back to T - 1 when the
 * window holds no real token. */
static inline int64_t
as_kernel_last_real(const void *mask_row, int64_t elem_stride, int64_t S, int64_t T,
                    int (*is_set)(const void *, int64_t))
{
    for (int64_t t = T - 1; t >= 0; t--) {
        if (is_set(mask_row, (S - T + t) * elem_stride))
            return t;
    }
    return T - 1;
}

#endif /* AUTOSTEER_KERNEL_H */
