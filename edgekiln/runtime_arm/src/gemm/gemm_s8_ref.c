/*
 * Portable int8 GEMM: the definition the SIMD kernels are tested against, and the fallback
 * on CPUs without one.  C[i][j] = sum_p A[i][p] * B[j][p] in int32 (see ek_gemm.h).
 *
 * |int8 * int8| <= 2^14, so int32 holds the sum exactly for k <= 131071.  The compiler may
 * vectorize the inner loop (gcc -O3 does), which speeds the fallback without changing results.
 */
#include <stddef.h>

#include "ek_gemm.h"

void ek_gemm_s8_ref(int m, int n, int k, const int8_t *a, int lda, const int8_t *b, int ldb,
                    int32_t *c, int ldc) {
    for (int i = 0; i < m; i++) {
        const int8_t *arow = a + (ptrdiff_t)i * lda;
        for (int j = 0; j < n; j++) {
            const int8_t *brow = b + (ptrdiff_t)j * ldb;
            int32_t acc = 0;
            for (int p = 0; p < k; p++) acc += (int32_t)arow[p] * (int32_t)brow[p];
            c[(ptrdiff_t)i * ldc + j] = acc;
        }
    }
}
