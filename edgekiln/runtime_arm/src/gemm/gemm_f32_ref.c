/*
 * Portable float GEMM: C[i][j] = sum_p A[i][p] * B[p][j], A row-major (m x k, row stride lda),
 * B row-major (k x n, row stride ldb: rows of n contiguous floats), C (m x n, ldc), overwritten.
 *
 * The fallback and the definition the SIMD float kernels are compared against.  Each output
 * is one sum in k order; the inner loop is an axpy over j, which the compiler vectorizes
 * without reassociating any sum.
 */
#include <stddef.h>

#include "ek_gemm.h"

void ek_sgemm_ref(int m, int n, int k, const float *a, int lda, const float *b, int ldb, float *c, int ldc) {
    for (int i = 0; i < m; i++) {
        float *restrict crow = c + (ptrdiff_t)i * ldc;
        for (int j = 0; j < n; j++) crow[j] = 0.0f;
        for (int p = 0; p < k; p++) {
            const float av = a[(ptrdiff_t)i * lda + p];
            const float *restrict brow = b + (ptrdiff_t)p * ldb;
            for (int j = 0; j < n; j++) crow[j] += av * brow[j];
        }
    }
}
