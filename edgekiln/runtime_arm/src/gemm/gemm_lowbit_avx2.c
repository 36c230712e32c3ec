/*
 * int4 and ternary GEMMs for x86_64 AVX2 (the host's native path); compile with -mavx2 -mfma.
 *
 * The int8 AVX2 tiling (gemm_s8_avx2.c: 2x4 tile, vpmaddwd on int16 lanes) with the weights
 * unpacked in registers: a packed 16-byte block is sign-extended byte by byte to int16
 * (vpmovsxbw, straight from memory), and each slice's field is moved to the top of the int16
 * and arithmetic-shifted down:  int4 low nibble (x << 12) >> 12, high nibble x >> 4; ternary
 * field s (x << (14 - 2s)) >> 14, the top one x >> 6.  No constants, 1-2 shifts per 16
 * weights shared by both A rows.  The raw block is re-loaded per slice: holding 4 of them
 * would need more than the 16 ymm registers.
 */
#if defined(__x86_64__)
#if !defined(__AVX2__)
#error "gemm_lowbit_avx2.c needs AVX2: compile with -mavx2 -mfma"
#endif
#include <immintrin.h>
#include <stddef.h>

#include "ek_gemm.h"
#include "gemm_lowbit_tail.h"
#include "gemm_s8_common.h"

#define MR 2
#define NR 4

/* Weights [16 s, 16 s + 16) of the packed block at p, as int16 lanes. */
static inline __attribute__((always_inline)) __m256i slice16(const uint8_t *p, int bits, int s) {
    const __m256i x = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)p));
    if (bits == 4) return s == 0 ? _mm256_srai_epi16(_mm256_slli_epi16(x, 12), 12) : _mm256_srai_epi16(x, 4);
    switch (s) {
    case 0: return _mm256_srai_epi16(_mm256_slli_epi16(x, 14), 14);
    case 1: return _mm256_srai_epi16(_mm256_slli_epi16(x, 12), 14);
    case 2: return _mm256_srai_epi16(_mm256_slli_epi16(x, 10), 14);
    default: return _mm256_srai_epi16(x, 6);
    }
}

/* 16 activations at row + p as int16 lanes; past k (tail blocks only) zeros, never loaded. */
static inline __attribute__((always_inline)) __m256i load_a(const int8_t *row, int p, int k, int tail) {
    if (!tail || p + 16 <= k) return _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(row + p)));
    uint64_t half[2];
    ek_lowbit_tail16(row, p, k, half);
    return _mm256_cvtepi8_epi16(_mm_set_epi64x((long long)half[1], (long long)half[0]));
}

/* acc += slice s (16 weights) of one K block: A rows at ar[r] + p, weight blocks at br[j] + b_off. */
static inline __attribute__((always_inline)) void madd_slice(int bits, int s, int rows, __m256i acc[][NR],
                                                             const int8_t *const *ar, int p, int k, int tail,
                                                             const uint8_t *const *br, ptrdiff_t b_off) {
    __m256i bv[NR];
#pragma GCC unroll 4
    for (int j = 0; j < NR; j++) bv[j] = slice16(br[j] + b_off, bits, s);
#pragma GCC unroll 2
    for (int r = 0; r < rows; r++) {
        const __m256i av = load_a(ar[r], p + 16 * s, k, tail);
#pragma GCC unroll 4
        for (int j = 0; j < NR; j++) acc[r][j] = _mm256_add_epi32(acc[r][j], _mm256_madd_epi16(av, bv[j]));
    }
}

/* acc += one K block; a tail block (tail = 1) runs only its live slices.  The slices are spelled
 * out (a loop over them with an early exit would need an unroll pragma that sanitizer builds
 * ignore with a warning). */
static inline __attribute__((always_inline)) void madd_block(int bits, int rows, __m256i acc[][NR],
                                                             const int8_t *const *ar, int p, int k, int tail,
                                                             const uint8_t *const *br, ptrdiff_t b_off) {
    const int live = tail ? ek_lowbit_live_slices(p, k, 128 / bits) : 8 / bits;
    madd_slice(bits, 0, rows, acc, ar, p, k, tail, br, b_off);
    if (live > 1) madd_slice(bits, 1, rows, acc, ar, p, k, tail, br, b_off);
    if (bits == 2 && live > 2) madd_slice(bits, 2, rows, acc, ar, p, k, tail, br, b_off);
    if (bits == 2 && live > 3) madd_slice(bits, 3, rows, acc, ar, p, k, tail, br, b_off);
}

static inline __attribute__((always_inline)) void madd_tile(int bits, int rows, const int8_t *const *ar,
                                                            const uint8_t *const *br, int k, int32_t *c, int ldc,
                                                            int cols) {
    const int per = 128 / bits;
    __m256i acc[MR][NR];
#pragma GCC unroll 2
    for (int r = 0; r < rows; r++)
#pragma GCC unroll 4
        for (int j = 0; j < NR; j++) acc[r][j] = _mm256_setzero_si256();
    int p = 0;
    ptrdiff_t boff = 0;
    for (; p + per <= k; p += per, boff += EK_LOWBIT_BLOCK_BYTES) madd_block(bits, rows, acc, ar, p, k, 0, br, boff);
    if (p < k) madd_block(bits, rows, acc, ar, p, k, 1, br, boff);
#pragma GCC unroll 2
    for (int r = 0; r < rows; r++) {
        const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(acc[r][0], acc[r][1]),
                                            _mm256_hadd_epi32(acc[r][2], acc[r][3]));
        const __m128i sum = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
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

#define LOWBIT_TILES(name, bits)                                                                                      \
    static void name##_2x4(const int8_t *const *ar, const uint8_t *const *br, int k, int32_t *c, int ldc, int cols) { \
        madd_tile(bits, 2, ar, br, k, c, ldc, cols);                                                                  \
    }                                                                                                                 \
    static void name##_1x4(const int8_t *const *ar, const uint8_t *const *br, int k, int32_t *c, int ldc, int cols) { \
        madd_tile(bits, 1, ar, br, k, c, ldc, cols);                                                                  \
    }
LOWBIT_TILES(s4, 4)
LOWBIT_TILES(t2, 2)

typedef void (*tile_fn)(const int8_t *const *, const uint8_t *const *, int, int32_t *, int, int);

static void lowbit_gemm(tile_fn tile2, tile_fn tile1, int m, int n, int k, const int8_t *a, int lda,
                        const uint8_t *b, int ldb, int32_t *c, int ldc) {
    if (m <= 0 || n <= 0 || k <= 0) return;
    const int mc = ek_gemm_block_rows(k, MR);
    for (int i0 = 0; i0 < m; i0 += mc) {
        const int i1 = m - i0 > mc ? i0 + mc : m;
        for (int j = 0; j < n; j += NR) {
            const int cols = n - j < NR ? n - j : NR;
            const uint8_t *br[NR];
            for (int t = 0; t < NR; t++) br[t] = b + (ptrdiff_t)(j + (t < cols ? t : cols - 1)) * ldb;
            int i = i0;
            for (; i + MR <= i1; i += MR) {
                const int8_t *ar[MR] = {a + (ptrdiff_t)i * lda, a + (ptrdiff_t)(i + 1) * lda};
                tile2(ar, br, k, c + (ptrdiff_t)i * ldc + j, ldc, cols);
            }
            if (i < i1) {
                const int8_t *ar = a + (ptrdiff_t)i * lda;
                tile1(&ar, br, k, c + (ptrdiff_t)i * ldc + j, ldc, cols);
            }
        }
    }
}

void ek_gemm_s4_avx2(int m, int n, int k, const int8_t *a, int lda, const uint8_t *b, int ldb, int32_t *c,
                     int ldc) {
    lowbit_gemm(s4_2x4, s4_1x4, m, n, k, a, lda, b, ldb, c, ldc);
}

void ek_gemm_t2_avx2(int m, int n, int k, const int8_t *a, int lda, const uint8_t *b, int ldb, int32_t *c,
                     int ldc) {
    lowbit_gemm(t2_2x4, t2_1x4, m, n, k, a, lda, b, ldb, c, ldc);
}

#else
typedef int ek_gemm_lowbit_avx2_not_built; /* not x86_64: an empty unit is not valid C */
#endif
