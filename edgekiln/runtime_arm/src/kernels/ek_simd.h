/*
 * The SIMD variants of the non-GEMM integer kernels, one table per ISA, chosen at run time.
 *
 * Every entry computes exactly what its portable loop in qconv.c / qelementwise.c computes
 * (compiler/integer_kernels.py, the rounding of ek_requant.h): the tests compare both paths
 * with the numpy reference.  The table follows the ISA of the model (`--isa`): "c" keeps the
 * portable loops (so a benchmark can time both in one binary), any aarch64 ISA gets the NEON
 * table (NEON is part of armv8-a), "avx2" the AVX2 one.  The ISA files compile with baseline
 * flags and enable their instructions per function (`target("avx2")`), so the selector never
 * hands out code the CPU cannot run: the GEMM selector only names "avx2" when cpuid says so.
 *
 * Preconditions shared by the entries (the callers check them; all are exact-integer bounds):
 *   - accumulators fit int32 (products are int8 · int8, the callers bound the sums),
 *   - rq->total = 31 + shift in [1, 62] (ek_check_shifts at load), rq->m in [0, 2^31).
 */
#ifndef EK_SIMD_H
#define EK_SIMD_H

#include <stdint.h>

#include "../ek_internal.h"

/* requantize(acc) = clamp(rshift_round(int64(acc) · m, total) + zp, lo, hi) */
typedef struct {
    int32_t m, total, zp, lo, hi;
} ek_rq;

/* QAdd's constants: va = rescale(((a − za) << left), ma, sa), likewise vb, y = rq(va ± vb). */
typedef struct {
    int32_t za, zb, left, ma, ta, mb, tb, subtract; /* ta, tb = 31 + a_shift, 31 + b_shift */
    ek_rq out;
} ek_qadd_consts;

typedef struct {
    const char *name;
    /* One depthwise output row: y[i] = rq(bias + Σ_t w[t] · taps[t][i]) for i < n.  Reads
     * taps[t][0 .. round_up(n, 16)): the caller pads its rows to that length. */
    void (*depthwise_row)(const int8_t *const *taps, const int16_t *w, int ntaps, int64_t n, int32_t bias,
                          const ek_rq *rq, int8_t *y);
    /* QAdd / QMul over n elements of a and b advancing by sa, sb in {0, 1} (0 = one value
     * broadcast); returns how many leading elements it wrote (a multiple of its width), the
     * caller finishes the rest. */
    int64_t (*qadd)(const int8_t *a, int sa, const int8_t *b, int sb, int64_t n, const ek_qadd_consts *k, int8_t *y);
    int64_t (*qmul)(const int8_t *a, int sa, const int8_t *b, int sb, int64_t n, int32_t za, int32_t zb,
                    const ek_rq *rq, int8_t *y);
    /* y[i] = rq(src[i · stride] + add) for i < n: one output channel of a GEMM tile. */
    void (*requantize_column)(const int32_t *src, int64_t stride, int64_t n, int32_t add, const ek_rq *rq, int8_t *y);
    /* y[c] = clamp(rshift_round((acc[c] + add[c]) · m[c], 31 + shift[c]) + zp, lo, hi) for c < n: one
     * pixel's channels, per-channel multipliers; acc[c] + add[c] must fit int32. */
    void (*requantize_channels)(const int32_t *acc, const int32_t *add, const int32_t *m, const int32_t *shift,
                                int64_t n, int32_t zp, int32_t lo, int32_t hi, int8_t *y);
    /* even[k] = src[2k] for k < ceil(n / 2), odd[k] = src[2k + 1] for k < floor(n / 2) (stride-2 rows) */
    void (*deinterleave2)(const int8_t *src, int64_t n, int8_t *even, int8_t *odd);
    /* One pixel of a channels-last depthwise: acc[c] = bias[c] + Σ_t (src[t][c] − zp) · w[t][c] for
     * c < n over the window's ntaps in-bounds taps (|bias| + ntaps·255·128 < 2^31). */
    void (*depthwise_channels)(const int8_t *const *src, const int16_t *const *w, int ntaps, int64_t n, int32_t zp,
                               const int32_t *bias, int32_t *acc);
    /* y[i] = table[x[i] + 128] (256 entries) for i < n; returns how many leading elements it
     * wrote (a multiple of its width), the caller finishes the rest. */
    int64_t (*lookup)(const int8_t *x, int64_t n, const int8_t *table, int8_t *y);
    /* y[i] = clamp(rintf(x[i] / scale) + zp, -128, 127), NaN -> 0; returns as lookup does. */
    int64_t (*quantize)(const float *x, int64_t n, float scale, int32_t zp, int8_t *y);
} ek_simd_kernels;

/* y[i] = table[x[i] + 128] for i < n with the model's ISA (qelementwise.c): QLookupTable, and
 * every int8 -> int8 requantization tabulated at load (QRequantize, QConcat's inputs). */
void ek_lookup_i8(struct ek_model *m, const int8_t *x, int64_t n, const int8_t *table, int8_t *y);

/* The table for the model's current ISA, or NULL for the portable loops. */
const ek_simd_kernels *ek_simd_for(const struct ek_model *m);

/* The entries, per ISA file (each exists only on its architecture). */
#define EK_SIMD_DECLARE(isa)                                                                                  \
    void ek_depthwise_row_##isa(const int8_t *const *taps, const int16_t *w, int ntaps, int64_t n, int32_t bias, \
                                const ek_rq *rq, int8_t *y);                                                  \
    int64_t ek_qadd_##isa(const int8_t *a, int sa, const int8_t *b, int sb, int64_t n, const ek_qadd_consts *k, \
                          int8_t *y);                                                                         \
    int64_t ek_qmul_##isa(const int8_t *a, int sa, const int8_t *b, int sb, int64_t n, int32_t za, int32_t zb,  \
                          const ek_rq *rq, int8_t *y);                                                        \
    void ek_requantize_column_##isa(const int32_t *src, int64_t stride, int64_t n, int32_t add, const ek_rq *rq, \
                                    int8_t *y);                                                               \
    void ek_requantize_channels_##isa(const int32_t *acc, const int32_t *add, const int32_t *m,                \
                                      const int32_t *shift, int64_t n, int32_t zp, int32_t lo, int32_t hi,      \
                                      int8_t *y);                                                               \
    void ek_deinterleave2_##isa(const int8_t *src, int64_t n, int8_t *even, int8_t *odd);                    \
    void ek_depthwise_channels_##isa(const int8_t *const *src, const int16_t *const *w, int ntaps, int64_t n,  \
                                     int32_t zp, const int32_t *bias, int32_t *acc);                           \
    int64_t ek_lookup_##isa(const int8_t *x, int64_t n, const int8_t *table, int8_t *y);                      \
    int64_t ek_quantize_##isa(const float *x, int64_t n, float scale, int32_t zp, int8_t *y);
#if defined(__x86_64__)
EK_SIMD_DECLARE(avx2)
#endif
#if defined(__aarch64__)
EK_SIMD_DECLARE(neon)
#endif

#endif /* EK_SIMD_H */
