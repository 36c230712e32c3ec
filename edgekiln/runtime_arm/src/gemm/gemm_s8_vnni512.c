/*
 * int8 GEMM for x86_64 AVX-512 VNNI (Ice Lake / Sapphire Rapids / Zen 4 and later); compile with
 * -mavx512f -mavx512bw -mavx512vl -mavx512vnni.
 *
 * vpdpbusd multiplies 64 unsigned bytes by 64 signed bytes and adds each group of 4 products
 * into one of 16 int32 lanes: 64 MACs in one instruction, without saturation (the lanes wrap
 * modulo 2^32).  Our A (activations) and B (weights) are both signed, so A is made unsigned by
 * flipping its sign bit, u = a ^ 0x80 = a + 128 in [0, 255], and the surplus is taken off at the
 * end with the row sums of B, computed here once per column tile:
 *
 *     Σ_p u[i][p]·b[j][p] = Σ_p a[i][p]·b[j][p] + 128·Σ_p b[j][p]      (exact modulo 2^32)
 *
 * The true result fits int32 (ek_gemm.h: k <= 131071), so the wrapped int32 arithmetic of
 * vpdpbusd and of the subtraction gives it exactly, even when Σ u·b itself leaves int32.
 *
 * Tile 6x4: 24 zmm accumulators + 4 B rows + 1 A row (+ the 0x80 constant) of the 32 registers;
 * per 64-byte k slice 10 loads, 6 xors and 24 vpdpbusd.  The last k % 64 bytes are loaded with
 * a byte mask (AVX-512BW), which never touches memory past k (masked-off bytes do not fault);
 * they read as zero, so u = 128 there meets b = 0 and adds nothing.  Each accumulator holds
 * 16 partial sums of one output; the epilogue reduces a row's 4 accumulators to its 4 outputs
 * with two unpack rounds (within 128-bit blocks) and two fold rounds (across blocks).  Edges as
 * in the AVX2 kernel: the last n % 4 channels reuse the last valid B row (computed, not stored),
 * the last m % 6 rows run a shorter tile.
 *
 * Those dot tiles pay one reduction per output, which dominates when k is small; for k <= 256
 * (with enough rows) the panel path further down packs the weights into k-quads instead and
 * needs no reduction at all (see its comment).
 */
#if defined(__x86_64__)
#if !defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__AVX512VNNI__)
#error "gemm_s8_vnni512.c needs AVX-512 VNNI: compile with -mavx512f -mavx512bw -mavx512vl -mavx512vnni"
#endif
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ek_gemm.h"
#include "gemm_s8_common.h"

#define MR 6
#define NR 4
#define KV 64 /* bytes of k per vector */
#define NV_PANEL 4 /* 16-channel vectors per panel tile */

/* The k slice [p, p+len) of a row, len <= 64, zeros above len (no byte past it is read). */
static inline __m512i load_slice(const int8_t *row, int p, int len) {
    if (len == KV) return _mm512_loadu_si512((const void *)(row + p));
    return _mm512_maskz_loadu_epi8(_cvtu64_mask64(~0ull >> (KV - len)), row + p);
}

/* [Σ v0, Σ v1, Σ v2, Σ v3]: each vector's 16 lanes summed (wrapping int32). */
static inline __m128i reduce4(__m512i v0, __m512i v1, __m512i v2, __m512i v3) {
    /* per 128-bit block: interleave and add pairs, then quads, leaving [v0, v1, v2, v3] sums */
    const __m512i s01 = _mm512_add_epi32(_mm512_unpacklo_epi32(v0, v1), _mm512_unpackhi_epi32(v0, v1));
    const __m512i s23 = _mm512_add_epi32(_mm512_unpacklo_epi32(v2, v3), _mm512_unpackhi_epi32(v2, v3));
    const __m512i s = _mm512_add_epi32(_mm512_unpacklo_epi64(s01, s23), _mm512_unpackhi_epi64(s01, s23));
    /* then the four blocks */
    const __m256i h = _mm256_add_epi32(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64(s, 1));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

/* 128 · (sum of each of the 4 B rows), the correction the +128 shift of A adds. */
static __m128i b_correction(const int8_t *const *br, int k) {
    const __m512i ones = _mm512_set1_epi8(1);
    __m512i acc[NR];
    for (int j = 0; j < NR; j++) acc[j] = _mm512_setzero_si512();
    for (int p = 0; p < k; p += KV) {
        const int len = k - p < KV ? k - p : KV;
        for (int j = 0; j < NR; j++) acc[j] = _mm512_dpbusd_epi32(acc[j], ones, load_slice(br[j], p, len));
    }
    return _mm_slli_epi32(reduce4(acc[0], acc[1], acc[2], acc[3]), 7);
}

static inline __attribute__((always_inline)) void dot_step(int rows, __m512i acc[][NR],
                                                           const int8_t *const *ar,
                                                           const int8_t *const *br, int p, int len) {
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    __m512i bv[NR];
#pragma GCC unroll 4
    for (int j = 0; j < NR; j++) bv[j] = load_slice(br[j], p, len);
#pragma GCC unroll 6
    for (int r = 0; r < rows; r++) {
        const __m512i u = _mm512_xor_si512(load_slice(ar[r], p, len), flip);
#pragma GCC unroll 4
        for (int j = 0; j < NR; j++) acc[r][j] = _mm512_dpbusd_epi32(acc[r][j], u, bv[j]);
    }
}

static inline __attribute__((always_inline)) void dot_tile(int rows, const int8_t *const *ar,
                                                           const int8_t *const *br, int k,
                                                           __m128i correction, int32_t *c,
                                                           int ldc, int cols) {
    __m512i acc[MR][NR];
#pragma GCC unroll 6
    for (int r = 0; r < rows; r++)
#pragma GCC unroll 4
        for (int j = 0; j < NR; j++) acc[r][j] = _mm512_setzero_si512();

    int p = 0;
    for (; p + KV <= k; p += KV) dot_step(rows, acc, ar, br, p, KV);
    if (p < k) dot_step(rows, acc, ar, br, p, k - p);

#pragma GCC unroll 6
    for (int r = 0; r < rows; r++) {
        const __m128i sum =
            _mm_sub_epi32(reduce4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]), correction);
        int32_t *crow = c + (ptrdiff_t)r * ldc;
        if (cols == NR)
            _mm_storeu_si128((__m128i *)crow, sum);
        else
            _mm_mask_storeu_epi32(crow, (__mmask8)((1u << cols) - 1), sum);
    }
}

/* One function per tile height, so each has its register allocation fixed at compile time. */
#define TILE(R)                                                                                   \
    static void dot_tile_##R(const int8_t *const *ar, const int8_t *const *br, int k,             \
                             __m128i corr, int32_t *c, int ldc, int cols) {                       \
        dot_tile(R, ar, br, k, corr, c, ldc, cols);                                               \
    }
TILE(1)
TILE(2)
TILE(3)
TILE(4)
TILE(5)
TILE(6)

typedef void (*tile_fn)(const int8_t *const *, const int8_t *const *, int, __m128i, int32_t *, int, int);
static const tile_fn tiles[MR + 1] = {0, dot_tile_1, dot_tile_2, dot_tile_3, dot_tile_4, dot_tile_5, dot_tile_6};

/*
 * Panel path, for k <= PANEL_K and m >= PANEL_MIN_ROWS (the small-k GEMMs of 1x1 convolutions and
 * fused blocks, where the dot tiles above spend more on their final reductions than on the
 * products): up to 64 weight rows are packed per call into a k-quad panel, [quad][channel][4]
 * with u = b ^ 0x80 (one vpgatherdd per quad and 16 channels), and each A row's 4-byte quad is
 * broadcast as the signed operand, so an accumulator holds 16 channels of one output row and is
 * stored as is.  The +128 now sits on B, so the correction is per row:
 *
 *     Σ_p a[i][p]·b[j][p] = Σ_p a[i][p]·u[j][p] − 128·Σ_p a[i][p]
 *
 * with Σ_p a[i][p] from vpsadbw on a ^ 0x80 (Σ (a + 128) − 128·k).  Tile 6 rows x 4 vectors of
 * 16 channels: 24 accumulators; per quad 4 panel loads, 6 broadcasts, 24 vpdpbusd.  The last
 * quad of a row with k % 4 != 0 is read with a byte mask (nothing past k).
 */
#define PANEL_K 256
#define PANEL_N 64
#define PANEL_MIN_ROWS 8
#define PMR 6

/* Rows [j, j + cols) of B as a quad panel: bp[q·256 + 4·jj + t] = b[j + jj][4q + t] ^ 0x80, zeros past
 * k and past cols. */
static void pack_panel(const int8_t *b, int ldb, int cols, int k, uint8_t *bp) {
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    const int full = k / 4;
    for (int v = 0; v < PANEL_N / 16; v++) {
        const int jj0 = 16 * v, here = cols - jj0 < 16 ? (cols - jj0 > 0 ? cols - jj0 : 0) : 16;
        const __mmask16 live = (__mmask16)((1u << here) - 1);
        const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                               _mm512_set1_epi32(ldb));
        const int8_t *base = b + (ptrdiff_t)jj0 * ldb;
        for (int q = 0; q < full; q++) {
            const __m512i w = _mm512_mask_i32gather_epi32(_mm512_set1_epi8((char)0x80), live, idx, base + 4 * q, 1);
            _mm512_storeu_si512((void *)(bp + (ptrdiff_t)q * 4 * PANEL_N + 64 * v), _mm512_xor_si512(w, flip));
        }
        if (full * 4 < k) { /* the last quad byte by byte: nothing past k is read */
            uint8_t *dst = bp + (ptrdiff_t)full * 4 * PANEL_N + 64 * v;
            for (int jj = 0; jj < 16; jj++)
                for (int t = 0; t < 4; t++)
                    dst[4 * jj + t] = jj < here && 4 * full + t < k ? (uint8_t)(base[(ptrdiff_t)jj * ldb + 4 * full + t] ^ 0x80) : 0;
        }
    }
}

/* 128 · Σ_p a[p] of one row, k <= PANEL_K (wrapping int32). */
static int32_t row_correction(const int8_t *a, int k) {
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    __m512i sums = _mm512_setzero_si512();
    for (int p = 0; p < k; p += KV) {
        const int len = k - p < KV ? k - p : KV;
        /* masked-off bytes load as 0 and flip to 128: counted below as part of 128·64 per chunk */
        sums = _mm512_add_epi64(sums, _mm512_sad_epu8(_mm512_xor_si512(load_slice(a, p, len), flip), _mm512_setzero_si512()));
    }
    const int64_t biased = _mm512_reduce_add_epi64(sums) - 128 * (int64_t)((k + KV - 1) / KV * KV);
    return (int32_t)((uint32_t)biased << 7);
}

static inline __attribute__((always_inline)) void panel_tile(int rows, int nz, const int8_t *a, int lda, int k,
                                                             const uint8_t *bp, int32_t *c, int ldc, int cols) {
    __m512i acc[PMR][NV_PANEL];
#pragma GCC unroll 6
    for (int r = 0; r < rows; r++)
#pragma GCC unroll 4
        for (int v = 0; v < nz; v++) acc[r][v] = _mm512_setzero_si512();
    const int full = k / 4;
    for (int q = 0; q <= full; q++) {
        if (q == full && 4 * full == k) break;
        const uint8_t *bq = bp + (ptrdiff_t)q * 4 * PANEL_N;
        __m512i bv[NV_PANEL];
#pragma GCC unroll 4
        for (int v = 0; v < nz; v++) bv[v] = _mm512_loadu_si512((const void *)(bq + 64 * v));
#pragma GCC unroll 6
        for (int r = 0; r < rows; r++) {
            const int8_t *arow = a + (ptrdiff_t)r * lda + 4 * q;
            int32_t w;
            if (q < full) memcpy(&w, arow, 4);
            else w = _mm_cvtsi128_si32(_mm_maskz_loadu_epi8((__mmask16)((1u << (k - 4 * full)) - 1), arow));
            const __m512i bw = _mm512_set1_epi32(w);
#pragma GCC unroll 4
            for (int v = 0; v < nz; v++) acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], bv[v], bw);
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < rows; r++) {
        const __m512i fix = _mm512_set1_epi32(row_correction(a + (ptrdiff_t)r * lda, k));
        int32_t *crow = c + (ptrdiff_t)r * ldc;
#pragma GCC unroll 4
        for (int v = 0; v < nz; v++) {
            const int left = cols - 16 * v;
            const __mmask16 keep = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
            _mm512_mask_storeu_epi32(crow + 16 * v, keep, _mm512_sub_epi32(acc[r][v], fix));
        }
    }
}

typedef void (*panel_fn)(const int8_t *, int, int, const uint8_t *, int32_t *, int, int);
#define PTILE(R, Z)                                                                                          \
    static void panel_tile_##R##x##Z(const int8_t *a, int lda, int k, const uint8_t *bp, int32_t *c, int ldc, \
                                     int cols) {                                                             \
        panel_tile(R, Z, a, lda, k, bp, c, ldc, cols);                                                       \
    }
#define PTILES(R) PTILE(R, 1) PTILE(R, 2) PTILE(R, 3) PTILE(R, 4)
PTILES(1)
PTILES(2)
PTILES(3)
PTILES(4)
PTILES(5)
PTILES(6)
#define PROW(R) {panel_tile_##R##x1, panel_tile_##R##x2, panel_tile_##R##x3, panel_tile_##R##x4}
static const panel_fn panel_tiles[PMR][NV_PANEL] = {PROW(1), PROW(2), PROW(3), PROW(4), PROW(5), PROW(6)};

static void gemm_panels(int m, int n, int k, const int8_t *a, int lda, const int8_t *b, int ldb, int32_t *c, int ldc) {
    uint8_t bp[PANEL_K / 4 * 4 * PANEL_N] __attribute__((aligned(64)));
    for (int j = 0; j < n; j += PANEL_N) {
        const int cols = n - j < PANEL_N ? n - j : PANEL_N, nz = (cols + 15) / 16;
        pack_panel(b + (ptrdiff_t)j * ldb, ldb, cols, k, bp);
        for (int i = 0; i < m; i += PMR) {
            const int rows = m - i < PMR ? m - i : PMR;
            panel_tiles[rows - 1][nz - 1](a + (ptrdiff_t)i * lda, lda, k, bp, c + (ptrdiff_t)i * ldc + j, ldc, cols);
        }
    }
}

void ek_gemm_s8_vnni512(int m, int n, int k, const int8_t *a, int lda, const int8_t *b, int ldb,
                        int32_t *c, int ldc) {
    if (m <= 0 || n <= 0 || k <= 0) return;
    if (k <= PANEL_K && m >= PANEL_MIN_ROWS && ldb <= INT32_MAX / 16) { /* the gather's int32 offsets */
        gemm_panels(m, n, k, a, lda, b, ldb, c, ldc);
        return;
    }
    const int mc = ek_gemm_block_rows(k, MR);
    for (int i0 = 0; i0 < m; i0 += mc) {
        const int i1 = m - i0 > mc ? i0 + mc : m;
        for (int j = 0; j < n; j += NR) {
            const int cols = n - j < NR ? n - j : NR;
            const int8_t *br[NR];
            for (int t = 0; t < NR; t++)
                br[t] = b + (ptrdiff_t)(j + (t < cols ? t : cols - 1)) * ldb;
            const __m128i corr = b_correction(br, k);
            for (int i = i0; i < i1; i += MR) {
                const int rows = i1 - i < MR ? i1 - i : MR;
                const int8_t *ar[MR];
                for (int r = 0; r < MR; r++) ar[r] = a + (ptrdiff_t)(i + (r < rows ? r : 0)) * lda;
                tiles[rows](ar, br, k, corr, c + (ptrdiff_t)i * ldc + j, ldc, cols);
            }
        }
    }
}

#else
typedef int ek_gemm_s8_vnni512_not_built; /* not x86_64: an empty unit is not valid C */
#endif
