/*
 * int8 GEMM for x86_64 AVX2, so the runtime also runs natively on the host; compile with
 * -mavx2 -mfma.
 *
 * A 16-byte k slice is sign-extended to 16 int16 lanes (vpmovsxbw, from memory), and
 * vpmaddwd multiplies int16 pairs and adds adjacent products into int32 lanes.  That is exact
 * for int8 inputs: |2 * (-128)^2| = 2^15, far inside int32.  (vpmaddubsw would be one
 * instruction fewer but multiplies unsigned by signed and saturates to int16, so it is not
 * used.)  2 instructions (madd + add) per 16 MACs per output.
 *
 * Tile 2x4: 8 ymm accumulators + 4 widened B rows + 2 widened A rows + 1 product = 15 of the
 * 16 ymm registers.  k advances 16 bytes, then 8, then the last k % 8 via ek_gemm_load_tail8.
 * At the end two rounds of vphaddd and one 128-bit add fold each row's 4 accumulators into
 * its 4 outputs.  Edges as in the NEON kernel: the last n % 4 channels reuse the last valid B
 * row (not stored), an odd last row runs a 1x4 tile.
 */
#if defined(__x86_64__)
#if !defined(__AVX2__)
#error "gemm_s8_avx2.c needs AVX2: compile with -mavx2 -mfma"
#endif
#include <immintrin.h>
#include <stddef.h>

#include "ek_gemm.h"
#include "gemm_s8_common.h"

#define MR 2
#define NR 4

/* The k slice [p, p+len) of a row sign-extended to int16 lanes (zeros above len). */
static inline __m256i widen(const int8_t *row, int p, int len, int k) {
    if (len == 16) return _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(row + p)));
    if (len == 8) return _mm256_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)(row + p)));
    return _mm256_cvtepi8_epi16(_mm_cvtsi64_si128((long long)ek_gemm_load_tail8(row, k, len)));
}

static inline __attribute__((always_inline)) void madd_step(int rows, __m256i acc[][NR],
                                                            const int8_t *const *ar,
                                                            const int8_t *const *br, int p,
                                                            int len, int k) {
    __m256i bv[NR];
#pragma GCC unroll 4
    for (int j = 0; j < NR; j++) bv[j] = widen(br[j], p, len, k);
#pragma GCC unroll 2
    for (int r = 0; r < rows; r++) {
        const __m256i av = widen(ar[r], p, len, k);
#pragma GCC unroll 4
        for (int j = 0; j < NR; j++)
            acc[r][j] = _mm256_add_epi32(acc[r][j], _mm256_madd_epi16(av, bv[j]));
    }
}

static inline __attribute__((always_inline)) void madd_tile(int rows, const int8_t *const *ar,
                                                            const int8_t *const *br, int k,
                                                            int32_t *c, int ldc, int cols) {
    __m256i acc[MR][NR];
#pragma GCC unroll 2
    for (int r = 0; r < rows; r++)
#pragma GCC unroll 4
        for (int j = 0; j < NR; j++) acc[r][j] = _mm256_setzero_si256();

    int p = 0;
    for (; p + 16 <= k; p += 16) madd_step(rows, acc, ar, br, p, 16, k);
    if (p + 8 <= k) {
        madd_step(rows, acc, ar, br, p, 8, k);
        p += 8;
    }
    if (p < k) madd_step(rows, acc, ar, br, p, k - p, k);

#pragma GCC unroll 2
    for (int r = 0; r < rows; r++) {
        /* Per 128-bit half: hadd(hadd(a0,a1), hadd(a2,a3)) = [sum a0, sum a1, sum a2, sum a3]. */
        const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(acc[r][0], acc[r][1]),
                                            _mm256_hadd_epi32(acc[r][2], acc[r][3]));
        const __m128i sum =
            _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
        int32_t *crow = c + (ptrdiff_t)r * ldc;
        if (cols == NR) {
            _mm_storeu_si128((__m128i *)crow, sum);
        } else {
            int32_t tmp[NR];
            _mm_storeu_si128((__m128i *)tmp, sum);
            for (int j = 0; j < cols; j++) crow[j] = tmp[j];
        }
    }
}

static void madd_tile_2x4(const int8_t *const *ar, const int8_t *const *br, int k, int32_t *c,
                          int ldc, int cols) {
    madd_tile(2, ar, br, k, c, ldc, cols);
}

static void madd_tile_1x4(const int8_t *const *ar, const int8_t *const *br, int k, int32_t *c,
                          int ldc, int cols) {
    madd_tile(1, ar, br, k, c, ldc, cols);
}

void ek_gemm_s8_avx2(int m, int n, int k, const int8_t *a, int lda, const int8_t *b, int ldb,
                     int32_t *c, int ldc) {
    if (m <= 0 || n <= 0 || k <= 0) return;
    const int mc = ek_gemm_block_rows(k, MR);
    for (int i0 = 0; i0 < m; i0 += mc) {
        const int i1 = m - i0 > mc ? i0 + mc : m;
        for (int j = 0; j < n; j += NR) {
            const int cols = n - j < NR ? n - j : NR;
            const int8_t *br[NR];
            for (int t = 0; t < NR; t++)
                br[t] = b + (ptrdiff_t)(j + (t < cols ? t : cols - 1)) * ldb;
            int i = i0;
            for (; i + MR <= i1; i += MR) {
                const int8_t *ar[MR] = {a + (ptrdiff_t)i * lda, a + (ptrdiff_t)(i + 1) * lda};
                madd_tile_2x4(ar, br, k, c + (ptrdiff_t)i * ldc + j, ldc, cols);
            }
            if (i < i1) {
                const int8_t *ar = a + (ptrdiff_t)i * lda;
                madd_tile_1x4(&ar, br, k, c + (ptrdiff_t)i * ldc + j, ldc, cols);
            }
        }
    }
}

#else
typedef int ek_gemm_s8_avx2_not_built; /* not x86_64: an empty unit is not valid C */
#endif
