/*
 * kernel.h - the fused steering kernel as pure math (no Python).
 *
 * For every batch row b of a hidden-state tensor h[B, T, D]:
 *     s_b = sqrt(mean_d(h[b, last_b, d]^2) + AS_RMS_EPS)   (unsteered state)
 *     h[b, t, d] += s_b * sum_j W[r_b, j] * dir[j, d]      for every t
 * where W holds one row of J weights per group of rows and r_b picks the
 * row of batch row b.
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

/* Largest finite value of each storage type: a weight beyond it would turn
 * the steered state into inf. */
static inline double
as_dtype_max(as_dtype dt)
{
    switch (dt) {
    case AS_F16: return 65504.0;
    case AS_BF16: return 3.3895313892515355e38;
    default: return 3.4028234663852886e38;
    }
}

/* The epsilon of every rms in AutoSteer (exported as autosteer._C.RMS_EPS). */
#define AS_RMS_EPS 1e-6

/* On x86-64 Linux with GCC, compile the kernel twice (AVX2 and baseline SSE2)
 * and pick at load time: the half-precision conversions vectorise twice as
 * wide.  Elsewhere one portable build. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(AS_NO_CLONES)
#define AS_KERNEL_CLONES __attribute__((target_clones("avx2", "default"), unused))
#elif defined(__GNUC__)
#define AS_KERNEL_CLONES __attribute__((unused))
#else
#define AS_KERNEL_CLONES
#endif

/* ---- half <-> float, bfloat16 <-> float (round to nearest even) ---- */

static inline float as_bits_to_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t as_f32_to_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

/* Branch-free, so that the row loops vectorise.  half -> float: move the
 * exponent and mantissa into float position and rebias by multiplying with
 * 2^112 (exact, also for subnormal halves); an all-ones half exponent
 * (inf/nan) becomes an all-ones float exponent. */
static inline float
as_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t em = (uint32_t)(h & 0x7fffu) << 13;
    uint32_t bits = as_f32_to_bits(as_bits_to_f32(em) * 5.192296858534828e+33f /* 2^112 */);
    bits |= 0x7f800000u & (0u - (uint32_t)(em >= 0x0f800000u));
    return as_bits_to_f32(bits | sign);
}

/* float -> half, round to nearest even.  Three candidates, one selected:
 *   |f| >= 2^16: inf (or a quiet nan);
 *   |f| < 2^-14: subnormal half, rounded by the FPU when adding 0.5 (whose
 *                ulp, 2^-24, is the half subnormal unit);
 *   otherwise:   rebias the exponent by -112 and round the 13 dropped bits to
 *                even; a carry into the exponent (65520 and up) gives inf. */
static inline uint16_t
as_f32_to_f16(float f)
{
    uint32_t x = as_f32_to_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    uint32_t special = 0x7c00u | (0x200u & (0u - (uint32_t)(ax > 0x7f800000u)));
    uint32_t sub = as_f32_to_bits(as_bits_to_f32(ax) + 0.5f) - 0x3f000000u;
    uint32_t norm = (ax + 0xc8000fffu + ((ax >> 13) & 1u)) >> 13;
    /* selected with masks, not branches */
    uint32_t is_special = 0u - (uint32_t)(ax >= 0x47800000u);
    uint32_t is_sub = (0u - (uint32_t)(ax < 0x38800000u)) & ~is_special;
    uint32_t out = (special & is_special) | (sub & is_sub) | (norm & ~(is_special | is_sub));
    return (uint16_t)(sign | out);
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

/* rms of one row of D elements, in float32 semantics with a double sum;
 * one loop per storage type so that each one vectorises */
static inline float
as_kernel_row_rms(const void *row, as_dtype dt, int64_t D)
{
    double acc = 0.0;
    if (dt == AS_F32) {
        const float *r = (const float *)row;
        for (int64_t d = 0; d < D; d++)
            acc += (double)r[d] * (double)r[d];
    }
    else if (dt == AS_BF16) {
        const uint16_t *r = (const uint16_t *)row;
        for (int64_t d = 0; d < D; d++) {
            double v = (double)as_bf16_to_f32(r[d]);
            acc += v * v;
        }
    }
    else {
        const uint16_t *r = (const uint16_t *)row;
        for (int64_t d = 0; d < D; d++) {
            double v = (double)as_f16_to_f32(r[d]);
            acc += v * v;
        }
    }
    return (float)sqrt(acc / (double)D + AS_RMS_EPS);
}

/* row[d] += delta[d], rounding once to the storage type */
static inline void
as_kernel_add_row(void *row, as_dtype dt, const float *delta, int64_t D)
{
    if (dt == AS_F32) {
        float *r = (float *)row;
        for (int64_t d = 0; d < D; d++)
            r[d] += delta[d];
    }
    else if (dt == AS_BF16) {
        uint16_t *r = (uint16_t *)row;
        for (int64_t d = 0; d < D; d++)
            r[d] = as_f32_to_bf16(as_bf16_to_f32(r[d]) + delta[d]);
    }
    else {
        uint16_t *r = (uint16_t *)row;
        for (int64_t d = 0; d < D; d++)
            r[d] = as_f32_to_f16(as_f16_to_f32(r[d]) + delta[d]);
    }
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
 *   dirs:     J x D float32, row-major contiguous
 *   weights:  rows of J float32, row r at weights + r * w_stride
 *   w_index:  B indices: batch row b uses weights row w_index[b]; NULL: row b
 *             uses weights row b (w_stride 0 gives every batch row row 0)
 *   last:     B indices of each row's last real token, or NULL for T - 1
 *   scratch:  D floats of workspace
 * The caller guarantees that every w_index entry names a weights row.
 * Returns 0, -1 when an index in `last` is outside [0, T), or -2 when a row's
 * delta is not finite in the storage type (its rms is NaN/inf because the
 * input already is, or coeff * rms overflows): rows before it are steered,
 * the caller raises.  The check costs one pass over D per row, not per token.
 */
AS_KERNEL_CLONES static int
as_kernel_apply(const as_hidden *h, const float *dirs, int64_t J,
                const float *weights, int64_t w_stride, const int64_t *w_index,
                const int64_t *last, float *scratch)
{
    const int64_t D = h->D;
    const size_t esize = h->dtype == AS_F32 ? 4 : 2;
    const float limit = (float)as_dtype_max(h->dtype);
    for (int64_t b = 0; b < h->B; b++) {
        int64_t lt = last ? last[b] : h->T - 1;
        if (lt < 0 || lt >= h->T)
            return -1;
        char *rowb = (char *)h->data + (size_t)(b * h->stride_b) * esize;
        const float *w = weights + (w_index ? w_index[b] : b) * w_stride;
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
        int bad = 0;
        for (int64_t d = 0; d < D; d++) {
            scratch[d] *= s;
            bad |= !(fabsf(scratch[d]) <= limit);    /* NaN fails too */
        }
        if (bad)
            return -2;
        for (int64_t t = 0; t < h->T; t++)
            as_kernel_add_row(rowb + (size_t)(t * h->stride_t) * esize, h->dtype, scratch, D);
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
