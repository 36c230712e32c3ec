/*
 * Portable low-bit GEMMs: C[i][j] = sum_p A[i][p] * w_j[p] with w_j read from its packed,
 * K-blocked row (ek_gemm.h: int4 nibbles or ternary 2-bit fields).  The definition the SIMD
 * low-bit kernels are tested against, and the fallback on CPUs without one; it decodes every
 * weight through ek_lowbit_weight, so it reads every layout the compiler writes.
 *
 * |int8 * int4| <= 2^10, so int32 holds the sums exactly far beyond k = 65536.
 */
#include <stddef.h>

#include "ek_gemm.h"

static void gemm_lowbit_ref(int bits, int m, int n, int k, const int8_t *a, int lda, const uint8_t *b,
                            int ldb, int32_t *c, int ldc) {
    for (int j = 0; j < n; j++) {
        const uint8_t *brow = b + (ptrdiff_t)j * ldb;
        for (int i = 0; i < m; i++) {
            const int8_t *arow = a + (ptrdiff_t)i * lda;
            int32_t acc = 0;
            for (int p = 0; p < k; p++) acc += (int32_t)arow[p] * ek_lowbit_weight(brow, bits, p);
            c[(ptrdiff_t)i * ldc + j] = acc;
        }
    }
}

void ek_gemm_s4_ref(int m, int n, int k, const int8_t *a, int lda, const uint8_t *b, int ldb,
                    int32_t *c, int ldc) {
    gemm_lowbit_ref(4, m, n, k, a, lda, b, ldb, c, ldc);
}

void ek_gemm_t2_ref(int m, int n, int k, const int8_t *a, int lda, const uint8_t *b, int ldb,
                    int32_t *c, int ldc) {
    gemm_lowbit_ref(2, m, n, k, a, lda, b, ldb, c, ldc);
}
