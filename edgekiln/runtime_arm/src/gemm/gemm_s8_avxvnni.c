/*
 * int8 GEMM for x86_64 AVX-VNNI (the VEX-encoded vpdpbusd of Alder Lake and later cores that
 * lack AVX-512); compile with -mavx2 -mfma -mavxvnni.
 *
 * The same arithmetic as gemm_s8_vnni512.c on 256-bit registers: vpdpbusd multiplies 32
 * unsigned by 32 signed bytes and adds groups of 4 products into 8 int32 lanes (wrapping), A is
 * made unsigned with u = a ^ 0x80 = a + 128, and 128·Σ_p b[j][p] (computed here per column tile)
 * is subtracted at the end:
 *
 *     Σ_p a[i][p]·b[j][p] = Σ_p u[i][p]·b[j][p] − 128·Σ_p b[j][p]      (exact modulo 2^32)
 *
 * Tile 2x4 as in the AVX2 kernel (16 ymm registers: 8 accumulators, 4 B rows, 1 A row, the 0x80
 * constant), 8 vpdpbusd per 32-byte k slice where AVX2 needs 16 widening loads, multiplies and
 * adds per 16 bytes.  Without byte masks the tail goes in 16- and 8-byte steps and the last
 * k % 8 bytes through ek_gemm_load_tail8 (never a byte past k); the zero bytes above a short
 * slice give u = 128 against b = 0, adding nothing.  Edges as in the AVX2 kernel.
 */
#if defined(__x86_64__)
#if !defined(__AVXVNNI__) || !defined(__AVX2__)
#error "gemm_s8_avxvnni.c needs AVX-VNNI: compile with -mavx2 -mfma -mavxvnni"
#endif
#include <immintrin.h>
#include <stddef.h>

#include "ek_gemm.h"
#include "gemm_s8_common.h"

#define MR 2
#define NR 4

/* The k slice [p, p+len) of a row in the low bytes of a vector, zeros above; len is 32, 16, 8
 * or 1..7 (then p + len = k: the tail). */
static inline __m256i load_slice(const int8_t *row, int p, int len, int k) {
    if (len == 32) return _mm256_loadu_si256((const __m256i *)(row + p));
    __m128i x;
    if (len == 16) x = _mm_loadu_si128((const __m128i *)(row + p));
    else if (len == 8) x = _mm_loadl_epi64((const __m128i *)(row + p));
    else x = _mm_cvtsi64_si128((long long)ek_gemm_load_tail8(row, k, len));
    return _mm256_zextsi128_si256(x);
}

/* [Σ v0, Σ v1, Σ v2, Σ v3]: each vector's 8 lanes summed (wrapping int32). */
static inline __m128i reduce4(__m256i v0, __m256i v1, __m256i v2, __m256i v3) {
    const __m256i s01 = _mm256_add_epi32(_mm256_unpacklo_epi32(v0, v1), _mm256_unpackhi_epi32(v0, v1));
    const __m256i s23 = _mm256_add_epi32(_mm256_unpacklo_epi32(v2, v3), _mm256_unpackhi_epi32(v2, v3));
    const __m256i s = _mm256_add_epi32(_mm256_unpacklo_epi64(s01, s23), _mm256_unpackhi_epi64(s01, s23));
    return _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
}

/* The k slices a kernel walks: 32 bytes while they fit, then one 16, one 8, one 1..7. */
static inline int next_len(int p, int k) {
    const int left = k - p;
    return left >= 32 ? 32 : left >= 16 ? 16 : left >= 8 ? 8 : left;
}

/* 128 · (sum of each of the 4 B rows), the correction the +128 shift of A adds. */
static __m128i b_correction(const int8_t *const *br, int k) {
    const __m256i ones = _mm256_set1_epi8(1);
    __m256i acc[NR];
    for (int j = 0; j < NR; j++) acc[j] = _mm256_setzero_si256();
    for (int p = 0; p < k;) {
        const int len = next_len(p, k);
        for (int j = 0; j < NR; j++) acc[j] = _mm256_dpbusd_avx_epi32(acc[j], ones, load_slice(br[j], p, len, k));
        p += len;
    }
    return _mm_slli_epi32(reduce4(acc[0], acc[1], acc[2], acc[3]), 7);
}

static inline __attribute__((always_inline)) void dot_step(int rows, __m256i acc[][NR],
                                                           const int8_t *const *ar,
                                                           const int8_t *const *br, int p,
                                                           int len, int k) {
    const __m256i flip = _mm256_set1_epi8((char)0x80);
    __m256i bv[NR];
#pragma GCC unroll 4
    for (int j = 0; j < NR; j++) bv[j] = load_slice(br[j], p, len, k);
#pragma GCC unroll 2
    for (int r = 0; r < rows; r++) {
        const __m256i u = _mm256_xor_si256(load_slice(ar[r], p, len, k), flip);
#pragma GCC unroll 4
        for (int j = 0; j < NR; j++) acc[r][j] = _mm256_dpbusd_avx_epi32(acc[r][j], u, bv[j]);
    }
}

static inline __attribute__((always_inline)) void dot_tile(int rows, const int8_t *const *ar,
                                                           const int8_t *const *br, int k,
                                                           __m128i correction, int32_t *c,
                                                           int ldc, int cols) {
    __m256i acc[MR][NR];
#pragma GCC unroll 2
    for (int r = 0; r < rows; r++)
#pragma GCC unroll 4
        for (int j = 0; j < NR; j++) acc[r][j] = _mm256_setzero_si256();

    int p = 0;
    for (; p + 32 <= k; p += 32) dot_step(rows, acc, ar, br, p, 32, k);
    if (p + 16 <= k) {
        dot_step(rows, acc, ar, br, p, 16, k);
        p += 16;
    }
    if (p + 8 <= k) {
        dot_step(rows, acc, ar, br, p, 8, k);
        p += 8;
    }
    if (p < k) dot_step(rows, acc, ar, br, p, k - p, k);

#pragma GCC unroll 2
    for (int r = 0; r < rows; r++) {
        const __m128i sum =
            _mm_sub_epi32(reduce4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]), correction);
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

static void dot_tile_2x4(const int8_t *const *ar, const int8_t *const *br, int k, __m128i corr,
                         int32_t *c, int ldc, int cols) {
    dot_tile(2, ar, br, k, corr, c, ldc, cols);
}

static void dot_tile_1x4(const int8_t *const *ar, const int8_t *const *br, int k, __m128i corr,
                         int32_t *c, int ldc, int cols) {
    dot_tile(1, ar, br, k, corr, c, ldc, cols);
}

void ek_gemm_s8_avxvnni(int m, int n, int k, const int8_t *a, int lda, const int8_t *b, int ldb,
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
            const __m128i corr = b_correction(br, k);
            int i = i0;
            for (; i + MR <= i1; i += MR) {
                const int8_t *ar[MR] = {a + (ptrdiff_t)i * lda, a + (ptrdiff_t)(i + 1) * lda};
                dot_tile_2x4(ar, br, k, corr, c + (ptrdiff_t)i * ldc + j, ldc, cols);
            }
            if (i < i1) {
                const int8_t *ar = a + (ptrdiff_t)i * lda;
                dot_tile_1x4(&ar, br, k, corr, c + (ptrdiff_t)i * ldc + j, ldc, cols);
            }
        }
    }
}

#else
typedef int ek_gemm_s8_avxvnni_not_built; /* not x86_64: an empty unit is not valid C */
#endif
