/*
 * The portable sparse micro-kernels (ek_sparse.h): any C99 compiler, every CPU.  The loops
 * over pixels are plain axpys that compilers vectorize at -O2; the SIMD files do the same
 * work with explicit registers and are tested against these.
 */
#include "ek_sparse.h"

void ek_spmm_s16_c(int npad, int B, int nnz, const uint16_t *idx, const int8_t *w, int wstride, const int16_t *x,
                   int64_t ldx, int32_t *acc, int ldacc) {
    for (int b = 0; b < B; b++) {
        int32_t *restrict a = acc + (int64_t)b * ldacc;
        for (int j = 0; j < npad; j++) a[j] = 0;
        for (int t = 0; t < nnz; t++) {
            const int32_t wt = w[(int64_t)t * wstride + b];
            const int16_t *restrict xr = x + idx[t] * ldx;
            for (int j = 0; j < npad; j++) a[j] += wt * xr[j];
        }
    }
}

void ek_spmm_f32_c(int np, int B, int nnz, const uint16_t *idx, const float *w, int wstride, const float *x,
                   int64_t ldx, float *acc, int ldacc) {
    for (int b = 0; b < B; b++) {
        float *restrict a = acc + (int64_t)b * ldacc;
        for (int j = 0; j < np; j++) a[j] = 0.0f;
        for (int t = 0; t < nnz; t++) {
            const float wt = w[(int64_t)t * wstride + b];
            const float *restrict xr = x + idx[t] * ldx;
            for (int j = 0; j < np; j++) a[j] += wt * xr[j];
        }
    }
}
