/*
 * Float GEMM for x86_64 AVX2 + FMA (ek_sgemm_ref's contract); compile with -mavx2 -mfma.
 *
 * Tile 4 rows x 16 columns = 8 ymm accumulators; per step of k: two 8-float loads of B, one
 * broadcast per A row, 8 vfmadd231ps (64 multiply-adds per 14 instructions).  Edges: the last
 * n % 16 columns run 8-column tiles, then n % 8 columns one float at a time; the last m % 4 rows
 * (all of a GEMV) run as axpys over the rows of B, which stream B once instead of once per panel.  Every output is one fused multiply-add chain in k order.
 */
#if defined(__x86_64__)
#if !defined(__AVX2__) || !defined(__FMA__)
#error "gemm_f32_avx2.c needs AVX2 and FMA: compile with -mavx2 -mfma"
#endif
#include <immintrin.h>
#include <math.h>
#include <stddef.h>

#include "ek_gemm.h"

#define MR 4

static inline __attribute__((always_inline)) void tile(int rows, int nv, int k, const float *a, int lda, const float *b,
                                                       int ldb, float *c, int ldc) {
    __m256 acc[MR][2];
#pragma GCC unroll 4
    for (int r = 0; r < rows; r++)
#pragma GCC unroll 2
        for (int v = 0; v < nv; v++) acc[r][v] = _mm256_setzero_ps();
    for (int p = 0; p < k; p++) {
        const float *brow = b + (ptrdiff_t)p * ldb;
        __m256 bv[2];
#pragma GCC unroll 2
        for (int v = 0; v < nv; v++) bv[v] = _mm256_loadu_ps(brow + 8 * v);
#pragma GCC unroll 4
        for (int r = 0; r < rows; r++) {
            const __m256 av = _mm256_broadcast_ss(a + (ptrdiff_t)r * lda + p);
#pragma GCC unroll 2
            for (int v = 0; v < nv; v++) acc[r][v] = _mm256_fmadd_ps(av, bv[v], acc[r][v]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < rows; r++)
#pragma GCC unroll 2
        for (int v = 0; v < nv; v++) _mm256_storeu_ps(c + (ptrdiff_t)r * ldc + 8 * v, acc[r][v]);
}

static void tile_4x16(int k, const float *a, int lda, const float *b, int ldb, float *c, int ldc) {
    tile(4, 2, k, a, lda, b, ldb, c, ldc);
}
static void tile_4x8(int k, const float *a, int lda, const float *b, int ldb, float *c, int ldc) {
    tile(4, 1, k, a, lda, b, ldb, c, ldc);
}

/* One row as axpys over the rows of B: B streams through once, the C row stays in L1 (the last
 * m % 4 rows, and GEMVs, where a register tile would walk B's column panels k rows apart). */
static void axpy_row(int n, int k, const float *arow, const float *b, int ldb, float *crow) {
    for (int j = 0; j < n; j++) crow[j] = 0.0f;
    int p = 0;
    for (; p + 4 <= k; p += 4) { /* four rows of B per pass over C: one C load and store per four */
        const __m256 a0 = _mm256_set1_ps(arow[p]), a1 = _mm256_set1_ps(arow[p + 1]);
        const __m256 a2 = _mm256_set1_ps(arow[p + 2]), a3 = _mm256_set1_ps(arow[p + 3]);
        const float *b0 = b + (ptrdiff_t)p * ldb, *b1 = b0 + ldb, *b2 = b1 + ldb, *b3 = b2 + ldb;
        int j = 0;
        for (; j + 8 <= n; j += 8) {
            __m256 cv = _mm256_loadu_ps(crow + j);
            cv = _mm256_fmadd_ps(a0, _mm256_loadu_ps(b0 + j), cv);
            cv = _mm256_fmadd_ps(a1, _mm256_loadu_ps(b1 + j), cv);
            cv = _mm256_fmadd_ps(a2, _mm256_loadu_ps(b2 + j), cv);
            _mm256_storeu_ps(crow + j, _mm256_fmadd_ps(a3, _mm256_loadu_ps(b3 + j), cv));
        }
        for (; j < n; j++)
            crow[j] = fmaf(arow[p + 3], b3[j], fmaf(arow[p + 2], b2[j], fmaf(arow[p + 1], b1[j], fmaf(arow[p], b0[j], crow[j]))));
    }
    for (; p < k; p++) {
        const __m256 av = _mm256_set1_ps(arow[p]);
        const float *brow = b + (ptrdiff_t)p * ldb;
        int j = 0;
        for (; j + 8 <= n; j += 8)
            _mm256_storeu_ps(crow + j, _mm256_fmadd_ps(av, _mm256_loadu_ps(brow + j), _mm256_loadu_ps(crow + j)));
        for (; j < n; j++) crow[j] = fmaf(arow[p], brow[j], crow[j]);
    }
}

void ek_sgemm_avx2(int m, int n, int k, const float *a, int lda, const float *b, int ldb, float *c, int ldc) {
    if (m <= 0 || n <= 0) return;
    const int m4 = m - m % MR;
    int j = 0;
    for (; j + 16 <= n; j += 16)
        for (int i = 0; i < m4; i += MR) tile_4x16(k, a + (ptrdiff_t)i * lda, lda, b + j, ldb, c + (ptrdiff_t)i * ldc + j, ldc);
    for (; j + 8 <= n; j += 8)
        for (int i = 0; i < m4; i += MR) tile_4x8(k, a + (ptrdiff_t)i * lda, lda, b + j, ldb, c + (ptrdiff_t)i * ldc + j, ldc);
    for (int i = 0; i < m4 && j < n; i++) /* the last n % 8 columns: fused chains, like the tiles */
        for (int jj = j; jj < n; jj++) {
            float acc = 0.0f;
            for (int p = 0; p < k; p++) acc = fmaf(a[(ptrdiff_t)i * lda + p], b[(ptrdiff_t)p * ldb + jj], acc);
            c[(ptrdiff_t)i * ldc + jj] = acc;
        }
    for (int i = m4; i < m; i++) axpy_row(n, k, a + (ptrdiff_t)i * lda, b, ldb, c + (ptrdiff_t)i * ldc);
}

#else
typedef int ek_sgemm_avx2_not_built; /* not x86_64: an empty unit is not valid C */
#endif
