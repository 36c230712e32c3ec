/*
 * Float GEMM for aarch64 Advanced SIMD (ek_sgemm_ref's contract); compile with -march=armv8-a.
 *
 * Tile 4 rows x 16 columns = 16 float32x4 accumulators.  Per 4 steps of k: one 4-float load
 * from each A row, 16 four-float loads of B (4 rows of 16), and 64 fmla by lane (each A value
 * multiplies a B vector straight from its lane: no broadcasts), i.e. 256 multiply-adds per 84
 * instructions.  A k % 4 tail multiplies by scalars (fmla by element).  Edges: the last n % 16
 * columns run 4-column tiles, then n % 4 columns one float at a time; the last m % 4 rows (all
 * of a GEMV) run as axpys over the rows of B, which stream B once instead of once per panel.  Every output is one fused multiply-add chain in k order, so
 * results do not depend on the tiling (within 1 ulp per step of the unfused reference).
 */
#if defined(__aarch64__)
#include <arm_neon.h>
#include <stddef.h>

#include "ek_gemm.h"

#define MR 4

/* rows x (4 * nv) outputs at c, nv vectors of 4 columns. */
static inline __attribute__((always_inline)) void tile(int rows, int nv, int k, const float *a, int lda, const float *b,
                                                       int ldb, float *c, int ldc) {
    float32x4_t acc[MR][4];
#pragma GCC unroll 4
    for (int r = 0; r < rows; r++)
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) acc[r][v] = vdupq_n_f32(0.0f);
    int p = 0;
    for (; p + 4 <= k; p += 4) {
        float32x4_t av[MR];
#pragma GCC unroll 4
        for (int r = 0; r < rows; r++) av[r] = vld1q_f32(a + (ptrdiff_t)r * lda + p);
#define EK_SGEMM_STEP(lane)                                                                                   \
    do {                                                                                                      \
        const float *brow = b + (ptrdiff_t)(p + lane) * ldb;                                                  \
        float32x4_t bv[4];                                                                                    \
        _Pragma("GCC unroll 4") for (int v = 0; v < nv; v++) bv[v] = vld1q_f32(brow + 4 * v);                 \
        _Pragma("GCC unroll 4") for (int r = 0; r < rows; r++)                                                \
            _Pragma("GCC unroll 4") for (int v = 0; v < nv; v++)                                              \
                acc[r][v] = vfmaq_laneq_f32(acc[r][v], bv[v], av[r], lane);                                   \
    } while (0)
        EK_SGEMM_STEP(0);
        EK_SGEMM_STEP(1);
        EK_SGEMM_STEP(2);
        EK_SGEMM_STEP(3);
#undef EK_SGEMM_STEP
    }
    for (; p < k; p++) {
        const float *brow = b + (ptrdiff_t)p * ldb;
        float32x4_t bv[4];
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) bv[v] = vld1q_f32(brow + 4 * v);
#pragma GCC unroll 4
        for (int r = 0; r < rows; r++)
#pragma GCC unroll 4
            for (int v = 0; v < nv; v++) acc[r][v] = vfmaq_n_f32(acc[r][v], bv[v], a[(ptrdiff_t)r * lda + p]);
    }
#pragma GCC unroll 4
    for (int r = 0; r < rows; r++)
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) vst1q_f32(c + (ptrdiff_t)r * ldc + 4 * v, acc[r][v]);
}

static void tile_4x16(int k, const float *a, int lda, const float *b, int ldb, float *c, int ldc) {
    tile(4, 4, k, a, lda, b, ldb, c, ldc);
}
static void tile_4x4(int k, const float *a, int lda, const float *b, int ldb, float *c, int ldc) {
    tile(4, 1, k, a, lda, b, ldb, c, ldc);
}

/* One row as axpys over the rows of B (c += a[p] · B[p, :]): B streams through once, the C row
 * stays in L1.  For the last m % 4 rows and GEMVs, where a register tile would walk each
 * 16-column panel of B down k rows apart, once per panel. */
static void axpy_row(int n, int k, const float *arow, const float *b, int ldb, float *crow) {
    for (int j = 0; j < n; j++) crow[j] = 0.0f;
    int p = 0;
    for (; p + 4 <= k; p += 4) { /* four rows of B per pass over C: one C load and store per four */
        const float32x4_t av = vld1q_f32(arow + p);
        const float *b0 = b + (ptrdiff_t)p * ldb, *b1 = b0 + ldb, *b2 = b1 + ldb, *b3 = b2 + ldb;
        int j = 0;
        for (; j + 4 <= n; j += 4) {
            float32x4_t cv = vld1q_f32(crow + j);
            cv = vfmaq_laneq_f32(cv, vld1q_f32(b0 + j), av, 0);
            cv = vfmaq_laneq_f32(cv, vld1q_f32(b1 + j), av, 1);
            cv = vfmaq_laneq_f32(cv, vld1q_f32(b2 + j), av, 2);
            vst1q_f32(crow + j, vfmaq_laneq_f32(cv, vld1q_f32(b3 + j), av, 3));
        }
        for (; j < n; j++)
            crow[j] = __builtin_fmaf(arow[p + 3], b3[j],
                                     __builtin_fmaf(arow[p + 2], b2[j],
                                                    __builtin_fmaf(arow[p + 1], b1[j], __builtin_fmaf(arow[p], b0[j], crow[j]))));
    }
    for (; p < k; p++) {
        const float av = arow[p];
        const float *brow = b + (ptrdiff_t)p * ldb;
        int j = 0;
        for (; j + 4 <= n; j += 4) vst1q_f32(crow + j, vfmaq_n_f32(vld1q_f32(crow + j), vld1q_f32(brow + j), av));
        for (; j < n; j++) crow[j] = __builtin_fmaf(av, brow[j], crow[j]);
    }
}

void ek_sgemm_neon(int m, int n, int k, const float *a, int lda, const float *b, int ldb, float *c, int ldc) {
    if (m <= 0 || n <= 0) return;
    const int m4 = m - m % MR;
    int j = 0;
    for (; j + 16 <= n; j += 16)
        for (int i = 0; i < m4; i += MR) tile_4x16(k, a + (ptrdiff_t)i * lda, lda, b + j, ldb, c + (ptrdiff_t)i * ldc + j, ldc);
    for (; j + 4 <= n; j += 4)
        for (int i = 0; i < m4; i += MR) tile_4x4(k, a + (ptrdiff_t)i * lda, lda, b + j, ldb, c + (ptrdiff_t)i * ldc + j, ldc);
    for (int i = 0; i < m4 && j < n; i++) /* the last n % 4 columns: fused chains, like the tiles */
        for (int jj = j; jj < n; jj++) {
            float acc = 0.0f;
            for (int p = 0; p < k; p++) acc = __builtin_fmaf(a[(ptrdiff_t)i * lda + p], b[(ptrdiff_t)p * ldb + jj], acc);
            c[(ptrdiff_t)i * ldc + jj] = acc;
        }
    for (int i = m4; i < m; i++) axpy_row(n, k, a + (ptrdiff_t)i * lda, b, ldb, c + (ptrdiff_t)i * ldc);
}

#else
typedef int ek_sgemm_neon_not_built; /* not aarch64: an empty unit is not valid C */
#endif
