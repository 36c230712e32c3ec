/*
 * int4 and ternary GEMMs for armv8.6-a with the int8 matrix-multiply extension; compile with
 * -march=armv8.6-a+dotprod+i8mm.
 *
 * The int8 smmla tiling (gemm_s8_i8mm.c) with the weights unpacked in registers: per 16-weight
 * slice each of the 8 weight rows is one 16-byte load of its packed block and 1-2 shifts
 * (gemm_lowbit_unpack_neon.h; int4 kept scaled by 16, one instruction, undone on the int32
 * sums), then the same 64-bit zips pair rows into 2x8 smmla operands.
 * Tile 8x8 = 16 accumulators; per slice 8 + 8 loads, 8-16 shifts, 16 zips, 32 smmla for 1024
 * MACs.  The raw blocks are re-loaded per slice (an L1 hit) rather than held: holding 8 of them
 * would push the tile past the 32 vector registers.  Leftover row pairs run a 2x8 tile, an odd
 * last row (m = 1: a GEMV) a 1x8 sdot tile that keeps its 8 raw blocks in registers.  The
 * partial last K block runs only its live slices (gemm_lowbit_tail.h).
 */
#if defined(__aarch64__)
#if !defined(__ARM_FEATURE_MATMUL_INT8) || !defined(__ARM_FEATURE_DOTPROD)
#error "gemm_lowbit_i8mm.c needs smmla and sdot: compile with -march=armv8.6-a+dotprod+i8mm"
#endif
#include <arm_neon.h>
#include <stddef.h>

#include "ek_gemm.h"
#include "gemm_lowbit_tail.h"
#include "gemm_lowbit_unpack_neon.h"
#include "gemm_s8_common.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-schedule-insns") /* see gemm_s8_i8mm.c: keeps the tile unspilled */
#endif

#define MR 8
#define NR 8

static inline int8x16_t raw_block(const uint8_t *p) { return vreinterpretq_s8_u8(vld1q_u8(p)); }

/* Sums of scaled slices (ek_lowbit_slice_scaled) back to scale 1: exact, they are multiples. */
static inline __attribute__((always_inline)) int32x4_t unscale(int32x4_t v, int bits) {
    return EK_LOWBIT_SCALE_SHIFT(bits) ? vshlq_s32(v, vdupq_n_s32(-EK_LOWBIT_SCALE_SHIFT(bits))) : v;
}

/* acc += one K block of 2*pairs A rows (at ar[r] + p) x 8 weight rows (at br[j] + b_off); a tail
 * block (tail = 1) runs only its live slices. */
static inline __attribute__((always_inline)) void mmla_block(int bits, int pairs, int32x4_t acc[][NR / 2],
                                                             const int8_t *const *ar, int p, int k, int tail,
                                                             const uint8_t *const *br, ptrdiff_t b_off) {
    const int live = tail ? ek_lowbit_live_slices(p, k, 128 / bits) : 8 / bits;
#pragma GCC unroll 4
    for (int s = 0; s < 8 / bits; s++) {
        if (s >= live) break;
        int8x16_t blo[NR / 2], bhi[NR / 2];
#pragma GCC unroll 4
        for (int q = 0; q < NR / 2; q++) {
            const int64x2_t r0 = vreinterpretq_s64_s8(ek_lowbit_slice_scaled(raw_block(br[2 * q] + b_off), bits, s));
            const int64x2_t r1 = vreinterpretq_s64_s8(ek_lowbit_slice_scaled(raw_block(br[2 * q + 1] + b_off), bits, s));
            blo[q] = vreinterpretq_s8_s64(vzip1q_s64(r0, r1));
            bhi[q] = vreinterpretq_s8_s64(vzip2q_s64(r0, r1));
        }
#pragma GCC unroll 4
        for (int r = 0; r < pairs; r++) {
            const int64x2_t a0 = vreinterpretq_s64_s8(ek_lowbit_load_a(ar[2 * r], p + 16 * s, k, tail));
            const int64x2_t a1 = vreinterpretq_s64_s8(ek_lowbit_load_a(ar[2 * r + 1], p + 16 * s, k, tail));
            const int8x16_t alo = vreinterpretq_s8_s64(vzip1q_s64(a0, a1));
            const int8x16_t ahi = vreinterpretq_s8_s64(vzip2q_s64(a0, a1));
#pragma GCC unroll 4
            for (int q = 0; q < NR / 2; q++) {
                acc[r][q] = vmmlaq_s32(acc[r][q], alo, blo[q]);
                acc[r][q] = vmmlaq_s32(acc[r][q], ahi, bhi[q]);
            }
        }
    }
}

static inline __attribute__((always_inline)) void mmla_tile(int bits, int pairs, const int8_t *const *ar,
                                                            const uint8_t *const *br, int k, int32_t *c,
                                                            int ldc, int rows, int cols) {
    const int per = 128 / bits;
    int32x4_t acc[MR / 2][NR / 2];
#pragma GCC unroll 4
    for (int r = 0; r < pairs; r++)
#pragma GCC unroll 4
        for (int q = 0; q < NR / 2; q++) acc[r][q] = vdupq_n_s32(0);
    int p = 0;
    ptrdiff_t boff = 0;
    for (; p + per <= k; p += per, boff += EK_LOWBIT_BLOCK_BYTES) mmla_block(bits, pairs, acc, ar, p, k, 0, br, boff);
    if (p < k) mmla_block(bits, pairs, acc, ar, p, k, 1, br, boff);
    /* acc[r][q] = [c(2r,2q) c(2r,2q+1) c(2r+1,2q) c(2r+1,2q+1)]: 64-bit zips regroup by row. */
#pragma GCC unroll 4
    for (int r = 0; r < pairs; r++) {
#pragma GCC unroll 4
        for (int q = 0; q < NR / 2; q++) acc[r][q] = unscale(acc[r][q], bits);
        int32x4_t out[2][2];
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            const int64x2_t lo = vreinterpretq_s64_s32(acc[r][2 * h]);
            const int64x2_t hi = vreinterpretq_s64_s32(acc[r][2 * h + 1]);
            out[0][h] = vreinterpretq_s32_s64(vzip1q_s64(lo, hi));
            out[1][h] = vreinterpretq_s32_s64(vzip2q_s64(lo, hi));
        }
#pragma GCC unroll 2
        for (int t = 0; t < 2; t++) {
            if (2 * r + t >= rows) break;
            int32_t *crow = c + (ptrdiff_t)(2 * r + t) * ldc;
            if (cols == NR) {
                vst1q_s32(crow, out[t][0]);
                vst1q_s32(crow + 4, out[t][1]);
            } else {
                int32_t tmp[NR];
                vst1q_s32(tmp, out[t][0]);
                vst1q_s32(tmp + 4, out[t][1]);
                for (int j = 0; j < cols; j++) crow[j] = tmp[j];
            }
        }
    }
}

/* acc[j] += one K block of one A row x weight row j, the raw blocks held across the slices. */
static inline __attribute__((always_inline)) void sdot_block(int bits, int32x4_t *acc, const int8_t *arow, int p,
                                                             int k, int tail, const uint8_t *const *br,
                                                             ptrdiff_t b_off) {
    const int live = tail ? ek_lowbit_live_slices(p, k, 128 / bits) : 8 / bits;
    int8x16_t raw[NR];
#pragma GCC unroll 8
    for (int j = 0; j < NR; j++) raw[j] = raw_block(br[j] + b_off);
#pragma GCC unroll 4
    for (int s = 0; s < 8 / bits; s++) {
        if (s >= live) break;
        const int8x16_t av = ek_lowbit_load_a(arow, p + 16 * s, k, tail);
#pragma GCC unroll 8
        for (int j = 0; j < NR; j++) acc[j] = vdotq_s32(acc[j], av, ek_lowbit_slice_scaled(raw[j], bits, s));
    }
}

/* One A row against 8 weight rows with sdot (m = 1: a GEMV). */
static inline __attribute__((always_inline)) void sdot_tile_1x8(int bits, const int8_t *arow, const uint8_t *const *br,
                                                                int k, int32_t *c, int cols) {
    const int per = 128 / bits;
    int32x4_t acc[NR];
#pragma GCC unroll 8
    for (int j = 0; j < NR; j++) acc[j] = vdupq_n_s32(0);
    int p = 0;
    ptrdiff_t boff = 0;
    for (; p + per <= k; p += per, boff += EK_LOWBIT_BLOCK_BYTES) sdot_block(bits, acc, arow, p, k, 0, br, boff);
    if (p < k) sdot_block(bits, acc, arow, p, k, 1, br, boff);
    const int32x4_t s0 = unscale(vpaddq_s32(vpaddq_s32(acc[0], acc[1]), vpaddq_s32(acc[2], acc[3])), bits);
    const int32x4_t s1 = unscale(vpaddq_s32(vpaddq_s32(acc[4], acc[5]), vpaddq_s32(acc[6], acc[7])), bits);
    if (cols == NR) {
        vst1q_s32(c, s0);
        vst1q_s32(c + 4, s1);
    } else {
        int32_t tmp[NR];
        vst1q_s32(tmp, s0);
        vst1q_s32(tmp + 4, s1);
        for (int j = 0; j < cols; j++) c[j] = tmp[j];
    }
}

#define LOWBIT_TILES(name, bits)                                                                                      \
    static void name##_8x8(const int8_t *const *ar, const uint8_t *const *br, int k, int32_t *c, int ldc, int cols) { \
        mmla_tile(bits, 4, ar, br, k, c, ldc, 8, cols);                                                               \
    }                                                                                                                 \
    static void name##_2x8(const int8_t *const *ar, const uint8_t *const *br, int k, int32_t *c, int ldc, int cols) { \
        mmla_tile(bits, 1, ar, br, k, c, ldc, 2, cols);                                                               \
    }                                                                                                                 \
    static void name##_1x8(const int8_t *ar, const uint8_t *const *br, int k, int32_t *c, int cols) {                 \
        sdot_tile_1x8(bits, ar, br, k, c, cols);                                                                      \
    }
LOWBIT_TILES(s4, 4)
LOWBIT_TILES(t2, 2)

typedef void (*mmla_fn)(const int8_t *const *, const uint8_t *const *, int, int32_t *, int, int);
typedef void (*sdot_fn)(const int8_t *, const uint8_t *const *, int, int32_t *, int);

static void lowbit_gemm(mmla_fn tile8, mmla_fn tile2, sdot_fn tile1, int m, int n, int k, const int8_t *a,
                        int lda, const uint8_t *b, int ldb, int32_t *c, int ldc) {
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
                const int8_t *ar[MR];
                for (int t = 0; t < MR; t++) ar[t] = a + (ptrdiff_t)(i + t) * lda;
                tile8(ar, br, k, c + (ptrdiff_t)i * ldc + j, ldc, cols);
            }
            for (; i + 2 <= i1; i += 2) {
                const int8_t *ar[2] = {a + (ptrdiff_t)i * lda, a + (ptrdiff_t)(i + 1) * lda};
                tile2(ar, br, k, c + (ptrdiff_t)i * ldc + j, ldc, cols);
            }
            if (i < i1) tile1(a + (ptrdiff_t)i * lda, br, k, c + (ptrdiff_t)i * ldc + j, cols);
        }
    }
}

void ek_gemm_s4_i8mm(int m, int n, int k, const int8_t *a, int lda, const uint8_t *b, int ldb, int32_t *c,
                     int ldc) {
    lowbit_gemm(s4_8x8, s4_2x8, s4_1x8, m, n, k, a, lda, b, ldb, c, ldc);
}

void ek_gemm_t2_i8mm(int m, int n, int k, const int8_t *a, int lda, const uint8_t *b, int ldb, int32_t *c,
                     int ldc) {
    lowbit_gemm(t2_8x8, t2_2x8, t2_1x8, m, n, k, a, lda, b, ldb, c, ldc);
}

#else
typedef int ek_gemm_lowbit_i8mm_not_built; /* not aarch64: an empty unit is not valid C */
#endif
