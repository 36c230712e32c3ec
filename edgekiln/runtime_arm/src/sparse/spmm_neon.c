/*
 * Sparse micro-kernels for aarch64 Advanced SIMD (baseline armv8-a: every aarch64 CPU, so no
 * extra -march).  32 or 16 pixels per step for B <= 2, 8 for B = 4, 8 (the accumulators then fill
 * the register file); each stored block loads its x values once and feeds all B output
 * channels of the block from registers:
 *   int16: smlal / smlal2 by a scalar weight (x − zp_x fits int16, products int32: exact),
 *          2·B multiply-accumulates per 8-pixel load, 2·B accumulator registers (B <= 8: 16).
 *   float: fmul + fadd (not fmla, so sums round exactly as the portable C kernel's do).
 * The float kernel finishes a pixel count that is not a multiple of 8 with scalar code.
 */
#if defined(__aarch64__)
#include <arm_neon.h>

#include "ek_sparse.h"

/* B output channels x 8·V pixels per step: V = 4 (all 32 pixels of a full block) or 2 for
 * B <= 2, so each index and weight load feeds up to 8 smlal; V = 1 for B = 4, 8.  npad is a
 * multiple of 16 (and 8·V divides it: the caller picks V), so there is no tail. */
static inline __attribute__((always_inline)) void s16_block(const int B, const int V, int npad, int nnz,
                                                            const uint16_t *idx, const int8_t *w, int wstride,
                                                            const int16_t *x, int64_t ldx, int32_t *acc, int ldacc) {
    for (int j = 0; j < npad; j += 8 * V) {
        int32x4_t a[8][8];
        _Pragma("GCC unroll 8")
        for (int b = 0; b < B; b++)
            _Pragma("GCC unroll 8")
            for (int q = 0; q < 2 * V; q++) a[b][q] = vdupq_n_s32(0);
        const int16_t *xj = x + j;
        const int8_t *wt = w;
        for (int t = 0; t < nnz; t++, wt += wstride) {
            const int16_t *xr = xj + idx[t] * ldx;
            int16x8_t xv[4];
            _Pragma("GCC unroll 4")
            for (int v = 0; v < V; v++) xv[v] = vld1q_s16(xr + 8 * v);
            _Pragma("GCC unroll 8")
            for (int b = 0; b < B; b++) {
                const int16_t wb = wt[b];
                _Pragma("GCC unroll 4")
                for (int v = 0; v < V; v++) {
                    a[b][2 * v] = vmlal_n_s16(a[b][2 * v], vget_low_s16(xv[v]), wb);
                    a[b][2 * v + 1] = vmlal_high_n_s16(a[b][2 * v + 1], xv[v], wb);
                }
            }
        }
        _Pragma("GCC unroll 8")
        for (int b = 0; b < B; b++)
            _Pragma("GCC unroll 8")
            for (int q = 0; q < 2 * V; q++) vst1q_s32(acc + (int64_t)b * ldacc + j + 4 * q, a[b][q]);
    }
}

void ek_spmm_s16_neon(int npad, int B, int nnz, const uint16_t *idx, const int8_t *w, int wstride, const int16_t *x,
                      int64_t ldx, int32_t *acc, int ldacc) {
    const int wide = npad % 32 == 0;
    switch (B) {
    case 1:
        if (wide) s16_block(1, 4, npad, nnz, idx, w, wstride, x, ldx, acc, ldacc);
        else s16_block(1, 2, npad, nnz, idx, w, wstride, x, ldx, acc, ldacc);
        break;
    case 2:
        if (wide) s16_block(2, 4, npad, nnz, idx, w, wstride, x, ldx, acc, ldacc);
        else s16_block(2, 2, npad, nnz, idx, w, wstride, x, ldx, acc, ldacc);
        break;
    case 4: s16_block(4, 1, npad, nnz, idx, w, wstride, x, ldx, acc, ldacc); break;
    default: s16_block(8, 1, npad, nnz, idx, w, wstride, x, ldx, acc, ldacc); break;
    }
}

/* Steps of B output channels x 8·V pixels from pixel j while they fit; returns where they stopped. */
static inline __attribute__((always_inline)) int f32_steps(const int B, const int V, int j, int np, int nnz,
                                                           const uint16_t *idx, const float *w, int wstride,
                                                           const float *x, int64_t ldx, float *acc, int ldacc) {
    for (; j + 8 * V <= np; j += 8 * V) {
        float32x4_t a[8][8];
        _Pragma("GCC unroll 8")
        for (int b = 0; b < B; b++)
            _Pragma("GCC unroll 8")
            for (int q = 0; q < 2 * V; q++) a[b][q] = vdupq_n_f32(0.0f);
        const float *xj = x + j;
        const float *wt = w;
        for (int t = 0; t < nnz; t++, wt += wstride) {
            const float *xr = xj + idx[t] * ldx;
            float32x4_t xv[8];
            _Pragma("GCC unroll 8")
            for (int q = 0; q < 2 * V; q++) xv[q] = vld1q_f32(xr + 4 * q);
            _Pragma("GCC unroll 8")
            for (int b = 0; b < B; b++)
                _Pragma("GCC unroll 8")
                for (int q = 0; q < 2 * V; q++) a[b][q] = vaddq_f32(a[b][q], vmulq_n_f32(xv[q], wt[b]));
        }
        _Pragma("GCC unroll 8")
        for (int b = 0; b < B; b++)
            _Pragma("GCC unroll 8")
            for (int q = 0; q < 2 * V; q++) vst1q_f32(acc + (int64_t)b * ldacc + j + 4 * q, a[b][q]);
    }
    return j;
}

/* 8·V-pixel steps (V = 4 for B = 1: 32 pixels, 8 accumulators), then 8-pixel ones, then the
 * C kernel for the last np mod 8 pixels. */
static inline __attribute__((always_inline)) void f32_block(const int B, const int V, int np, int nnz,
                                                            const uint16_t *idx, const float *w, int wstride,
                                                            const float *x, int64_t ldx, float *acc, int ldacc) {
    int j = f32_steps(B, V, 0, np, nnz, idx, w, wstride, x, ldx, acc, ldacc);
    if (V > 1) j = f32_steps(B, 1, j, np, nnz, idx, w, wstride, x, ldx, acc, ldacc);
    if (j < np) ek_spmm_f32_c(np - j, B, nnz, idx, w, wstride, x + j, ldx, acc + j, ldacc);
}

void ek_spmm_f32_neon(int np, int B, int nnz, const uint16_t *idx, const float *w, int wstride, const float *x,
                      int64_t ldx, float *acc, int ldacc) {
    switch (B) {
    case 1: f32_block(1, 4, np, nnz, idx, w, wstride, x, ldx, acc, ldacc); break;
    case 2: f32_block(2, 2, np, nnz, idx, w, wstride, x, ldx, acc, ldacc); break;
    case 4: f32_block(4, 1, np, nnz, idx, w, wstride, x, ldx, acc, ldacc); break;
    default: f32_block(8, 1, np, nnz, idx, w, wstride, x, ldx, acc, ldacc); break;
    }
}
#else
typedef int ek_spmm_neon_not_built; /* not aarch64: an empty unit is not valid C */
#endif
