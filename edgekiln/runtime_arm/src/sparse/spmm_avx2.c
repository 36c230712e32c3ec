/*
 * Sparse micro-kernels for x86_64 AVX2 (host runs; built with baseline flags, the functions
 * carry their own target attribute and are only called when the CPU has AVX2).
 *   int16: two stored blocks at a time.  Interleaving their x rows (unpacklo/hi_epi16) and the
 *          two weights of an output channel into one int32 (w_t | w_t+1 << 16) lets one vpmaddwd
 *          form w_t·x_t + w_t+1·x_t+1 for 8 pixels, exact in int32.  The interleave puts pixels
 *          {0-3, 8-11} in one register and {4-7, 12-15} in the other; vperm2i128 restores the
 *          order on the store.  B = 8 runs as two halves of 4 (16 ymm registers); B <= 2 takes
 *          32 pixels per step when the block is full.
 *   float: 8 pixels per register (32 per step for B = 1, 16 for B = 2), vmulps + vaddps (no
 *          FMA, so sums round as the C kernel's do), a scalar tail for the last np mod 8 pixels.
 */
#if defined(__x86_64__)
#include <immintrin.h>

#include "ek_sparse.h"

#define EK_AVX2 __attribute__((target("avx2")))

/* Adds w0·x0 + w1·x1 for output channels b < B over 16·V pixels (w1 = 0, x1 = 0 for a lone block). */
static inline __attribute__((always_inline)) EK_AVX2 void s16_pair(const int B, const int V, __m256i lo[4][2],
                                                                   __m256i hi[4][2], const int16_t *x0,
                                                                   const int16_t *x1, const int8_t *w0,
                                                                   const int8_t *w1) {
    __m256i l[2], h[2];
    _Pragma("GCC unroll 2")
    for (int v = 0; v < V; v++) {
        const __m256i a = _mm256_loadu_si256((const __m256i *)(x0 + 16 * v));
        const __m256i b = x1 ? _mm256_loadu_si256((const __m256i *)(x1 + 16 * v)) : _mm256_setzero_si256();
        l[v] = _mm256_unpacklo_epi16(a, b);
        h[v] = _mm256_unpackhi_epi16(a, b);
    }
    _Pragma("GCC unroll 8")
    for (int b = 0; b < B; b++) {
        const uint32_t second = w1 ? (uint32_t)(uint16_t)(int16_t)w1[b] << 16 : 0u;
        const __m256i wp = _mm256_set1_epi32((int32_t)((uint32_t)(uint16_t)(int16_t)w0[b] | second));
        _Pragma("GCC unroll 2")
        for (int v = 0; v < V; v++) {
            lo[b][v] = _mm256_add_epi32(lo[b][v], _mm256_madd_epi16(l[v], wp));
            hi[b][v] = _mm256_add_epi32(hi[b][v], _mm256_madd_epi16(h[v], wp));
        }
    }
}

/* B output channels x 16·V pixels per step (V = 2 for B <= 2 on a full 32-pixel block). */
static inline __attribute__((always_inline)) EK_AVX2 void s16_block(const int B, const int V, int npad, int nnz,
                                                                    const uint16_t *idx, const int8_t *w,
                                                                    int wstride, const int16_t *x, int64_t ldx,
                                                                    int32_t *acc, int ldacc) {
    for (int j = 0; j < npad; j += 16 * V) {
        __m256i lo[4][2], hi[4][2];
        _Pragma("GCC unroll 8")
        for (int b = 0; b < B; b++)
            _Pragma("GCC unroll 2")
            for (int v = 0; v < V; v++) lo[b][v] = hi[b][v] = _mm256_setzero_si256();
        const int16_t *xj = x + j;
        const int8_t *wt = w;
        int t = 0;
        for (; t + 1 < nnz; t += 2, wt += 2 * wstride)
            s16_pair(B, V, lo, hi, xj + idx[t] * ldx, xj + idx[t + 1] * ldx, wt, wt + wstride);
        if (t < nnz) s16_pair(B, V, lo, hi, xj + idx[t] * ldx, 0, wt, 0);
        _Pragma("GCC unroll 8")
        for (int b = 0; b < B; b++)
            _Pragma("GCC unroll 2")
            for (int v = 0; v < V; v++) {
                int32_t *out = acc + (int64_t)b * ldacc + j + 16 * v;
                _mm256_storeu_si256((__m256i *)out, _mm256_permute2x128_si256(lo[b][v], hi[b][v], 0x20));
                _mm256_storeu_si256((__m256i *)(out + 8), _mm256_permute2x128_si256(lo[b][v], hi[b][v], 0x31));
            }
    }
}

EK_AVX2 void ek_spmm_s16_avx2(int npad, int B, int nnz, const uint16_t *idx, const int8_t *w, int wstride,
                              const int16_t *x, int64_t ldx, int32_t *acc, int ldacc) {
    const int wide = npad % 32 == 0;
    switch (B) {
    case 1:
        if (wide) s16_block(1, 2, npad, nnz, idx, w, wstride, x, ldx, acc, ldacc);
        else s16_block(1, 1, npad, nnz, idx, w, wstride, x, ldx, acc, ldacc);
        break;
    case 2:
        if (wide) s16_block(2, 2, npad, nnz, idx, w, wstride, x, ldx, acc, ldacc);
        else s16_block(2, 1, npad, nnz, idx, w, wstride, x, ldx, acc, ldacc);
        break;
    case 4: s16_block(4, 1, npad, nnz, idx, w, wstride, x, ldx, acc, ldacc); break;
    default:
        s16_block(4, 1, npad, nnz, idx, w, wstride, x, ldx, acc, ldacc);
        s16_block(4, 1, npad, nnz, idx, w + 4, wstride, x, ldx, acc + 4 * (int64_t)ldacc, ldacc);
        break;
    }
}

/* Steps of B output channels x 8·V pixels from pixel j while they fit; returns where they stopped. */
static inline __attribute__((always_inline)) EK_AVX2 int f32_steps(const int B, const int V, int j, int np, int nnz,
                                                                   const uint16_t *idx, const float *w, int wstride,
                                                                   const float *x, int64_t ldx, float *acc,
                                                                   int ldacc) {
    for (; j + 8 * V <= np; j += 8 * V) {
        __m256 a[8][4];
        _Pragma("GCC unroll 8")
        for (int b = 0; b < B; b++)
            _Pragma("GCC unroll 4")
            for (int v = 0; v < V; v++) a[b][v] = _mm256_setzero_ps();
        const float *xj = x + j, *wt = w;
        for (int t = 0; t < nnz; t++, wt += wstride) {
            const float *xr = xj + idx[t] * ldx;
            __m256 xv[4];
            _Pragma("GCC unroll 4")
            for (int v = 0; v < V; v++) xv[v] = _mm256_loadu_ps(xr + 8 * v);
            _Pragma("GCC unroll 8")
            for (int b = 0; b < B; b++) {
                const __m256 wb = _mm256_set1_ps(wt[b]);
                _Pragma("GCC unroll 4")
                for (int v = 0; v < V; v++) a[b][v] = _mm256_add_ps(a[b][v], _mm256_mul_ps(xv[v], wb));
            }
        }
        _Pragma("GCC unroll 8")
        for (int b = 0; b < B; b++)
            _Pragma("GCC unroll 4")
            for (int v = 0; v < V; v++) _mm256_storeu_ps(acc + (int64_t)b * ldacc + j + 8 * v, a[b][v]);
    }
    return j;
}

/* 8·V-pixel steps (V = 4 for B = 1, 2 for B = 2: more work per index and weight load), then
 * 8-pixel ones, then the C kernel for the last np mod 8 pixels. */
static inline __attribute__((always_inline)) EK_AVX2 void f32_block(const int B, const int V, int np, int nnz,
                                                                    const uint16_t *idx, const float *w, int wstride,
                                                                    const float *x, int64_t ldx, float *acc,
                                                                    int ldacc) {
    int j = f32_steps(B, V, 0, np, nnz, idx, w, wstride, x, ldx, acc, ldacc);
    if (V > 1) j = f32_steps(B, 1, j, np, nnz, idx, w, wstride, x, ldx, acc, ldacc);
    if (j < np) ek_spmm_f32_c(np - j, B, nnz, idx, w, wstride, x + j, ldx, acc + j, ldacc);
}

EK_AVX2 void ek_spmm_f32_avx2(int np, int B, int nnz, const uint16_t *idx, const float *w, int wstride,
                              const float *x, int64_t ldx, float *acc, int ldacc) {
    switch (B) {
    case 1: f32_block(1, 4, np, nnz, idx, w, wstride, x, ldx, acc, ldacc); break;
    case 2: f32_block(2, 2, np, nnz, idx, w, wstride, x, ldx, acc, ldacc); break;
    case 4: f32_block(4, 1, np, nnz, idx, w, wstride, x, ldx, acc, ldacc); break;
    default: f32_block(8, 1, np, nnz, idx, w, wstride, x, ldx, acc, ldacc); break;
    }
}
#else
typedef int ek_spmm_avx2_not_built; /* not x86_64: an empty unit is not valid C */
#endif
