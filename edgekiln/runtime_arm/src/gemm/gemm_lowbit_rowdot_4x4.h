/*
 * The 4x4 "row dot" tiling of gemm_s8_rowdot_4x4.h for packed low-bit weights (aarch64 only):
 * the NEON and dotprod int4 / ternary kernels.
 *
 * A tile keeps 4 A rows x 4 weight rows = 16 int32x4 accumulators.  Per K block (32 int4 or
 * 64 ternary weights = 16 bytes per weight row) it loads the 4 raw weight blocks once, and per
 * pair of 16-weight slices unpacks them in registers (ek_lowbit_slice: 1-2 shifts each, shared
 * by the 4 A rows), loads the 4 x 2 A slices and runs 16 rowdot32.  The partial last block runs
 * only its live slices, the one straddling k loaded without reading past it (gemm_lowbit_tail.h).  Edges as in the int8 tiling: the last
 * n % 4 weight rows reuse the last valid one (not stored), the last m % 4 rows run 1x4 tiles.
 *
 * The includer defines, before including this file:
 *   static inline int32x4_t rowdot32(int32x4_t acc, int8x16_t a0, int8x16_t a1, int8x16_t b0,
 *                                    int8x16_t b1);   acc += a0.b0 + a1.b1, exactly
 *   #define EK_LB_S4_KERNEL, EK_LB_T2_KERNEL  the exported int4 and ternary functions' names
 *   #define EK_LB_SLICE(raw, bits, s)   ek_lowbit_slice, or ek_lowbit_slice_scaled where rowdot32
 *                                       accumulates in int32
 *   #define EK_LB_SHIFT(bits)           0, or EK_LOWBIT_SCALE_SHIFT(bits) with the scaled slices
 *   #define EK_LB_ROW_ATTR              EK_LB_NO_SCHED or nothing, for the 1-row tiles
 */
#include <arm_neon.h>
#include <stddef.h>

#include "ek_gemm.h"
#include "gemm_lowbit_tail.h"
#include "gemm_lowbit_unpack_neon.h"
#include "gemm_s8_common.h"

/* Scheduling only after register allocation keeps the 4x4 tile unspilled (as in
 * gemm_s8_rowdot_4x4.h); whether it helps the 1-row tile depends on the kernel, so the includer
 * picks (EK_LB_ROW_ATTR). */
#if defined(__GNUC__) && !defined(__clang__)
#define EK_LB_NO_SCHED __attribute__((optimize("no-schedule-insns")))
#else
#define EK_LB_NO_SCHED
#endif

#define EK_LB_MR 4
#define EK_LB_NR 4

/* acc += one K block: A rows at ar[r] + p, raw weight blocks at br[j] + b_off.  Slices go in
 * pairs (32 weights), the unit of rowdot32; a tail block (tail = 1) runs only its live slices. */
static inline __attribute__((always_inline)) void lb_block(int bits, int rows, int32x4_t acc[][EK_LB_NR],
                                                           const int8_t *const *ar, int p, int k, int tail,
                                                           const uint8_t *const *br, ptrdiff_t b_off) {
    const int live = tail ? ek_lowbit_live_slices(p, k, 128 / bits) : 8 / bits;
    int8x16_t raw[EK_LB_NR];
#pragma GCC unroll 4
    for (int j = 0; j < EK_LB_NR; j++) raw[j] = vreinterpretq_s8_u8(vld1q_u8(br[j] + b_off));
#pragma GCC unroll 2
    for (int s = 0; s < 8 / bits; s += 2) {
        if (s >= live) break;
        int8x16_t b0[EK_LB_NR], b1[EK_LB_NR];
#pragma GCC unroll 4
        for (int j = 0; j < EK_LB_NR; j++) {
            b0[j] = EK_LB_SLICE(raw[j], bits, s);
            b1[j] = EK_LB_SLICE(raw[j], bits, s + 1);
        }
#pragma GCC unroll 4
        for (int r = 0; r < rows; r++) {
            const int8x16_t a0 = ek_lowbit_load_a(ar[r], p + 16 * s, k, tail);
            const int8x16_t a1 = ek_lowbit_load_a(ar[r], p + 16 * s + 16, k, tail);
#pragma GCC unroll 4
            for (int j = 0; j < EK_LB_NR; j++) acc[r][j] = rowdot32(acc[r][j], a0, a1, b0[j], b1[j]);
        }
    }
}

static inline __attribute__((always_inline)) void lb_tile(int bits, int rows, const int8_t *const *ar,
                                                          const uint8_t *const *br, int k, int32_t *c,
                                                          int ldc, int cols) {
    const int per = 128 / bits;
    int32x4_t acc[EK_LB_MR][EK_LB_NR];
#pragma GCC unroll 4
    for (int r = 0; r < rows; r++)
#pragma GCC unroll 4
        for (int j = 0; j < EK_LB_NR; j++) acc[r][j] = vdupq_n_s32(0);
    int p = 0;
    ptrdiff_t boff = 0;
    for (; p + per <= k; p += per, boff += EK_LOWBIT_BLOCK_BYTES) lb_block(bits, rows, acc, ar, p, k, 0, br, boff);
    if (p < k) lb_block(bits, rows, acc, ar, p, k, 1, br, boff);
#pragma GCC unroll 4
    for (int r = 0; r < rows; r++) {
        int32x4_t sum = vpaddq_s32(vpaddq_s32(acc[r][0], acc[r][1]), vpaddq_s32(acc[r][2], acc[r][3]));
        if (EK_LB_SHIFT(bits)) sum = vshlq_s32(sum, vdupq_n_s32(-EK_LB_SHIFT(bits))); /* exact: multiples */
        int32_t *crow = c + (ptrdiff_t)r * ldc;
        if (cols == EK_LB_NR) {
            vst1q_s32(crow, sum);
        } else {
            int32_t tmp[EK_LB_NR];
            vst1q_s32(tmp, sum);
            for (int j = 0; j < cols; j++) crow[j] = tmp[j];
        }
    }
}

EK_LB_NO_SCHED static void lb_tile_s4_4x4(const int8_t *const *ar, const uint8_t *const *br, int k, int32_t *c, int ldc, int cols) {
    lb_tile(4, 4, ar, br, k, c, ldc, cols);
}
EK_LB_ROW_ATTR static void lb_tile_s4_1x4(const int8_t *const *ar, const uint8_t *const *br, int k, int32_t *c, int ldc, int cols) {
    lb_tile(4, 1, ar, br, k, c, ldc, cols);
}
EK_LB_NO_SCHED static void lb_tile_t2_4x4(const int8_t *const *ar, const uint8_t *const *br, int k, int32_t *c, int ldc, int cols) {
    lb_tile(2, 4, ar, br, k, c, ldc, cols);
}
EK_LB_ROW_ATTR static void lb_tile_t2_1x4(const int8_t *const *ar, const uint8_t *const *br, int k, int32_t *c, int ldc, int cols) {
    lb_tile(2, 1, ar, br, k, c, ldc, cols);
}

typedef void (*lb_tile_fn)(const int8_t *const *, const uint8_t *const *, int, int32_t *, int, int);

static void lb_gemm(lb_tile_fn tile4, lb_tile_fn tile1, int m, int n, int k, const int8_t *a, int lda,
                    const uint8_t *b, int ldb, int32_t *c, int ldc) {
    if (m <= 0 || n <= 0 || k <= 0) return;
    const int mc = ek_gemm_block_rows(k, EK_LB_MR);
    for (int i0 = 0; i0 < m; i0 += mc) {
        const int i1 = m - i0 > mc ? i0 + mc : m;
        for (int j = 0; j < n; j += EK_LB_NR) {
            const int cols = n - j < EK_LB_NR ? n - j : EK_LB_NR;
            const uint8_t *br[EK_LB_NR];
            for (int t = 0; t < EK_LB_NR; t++) br[t] = b + (ptrdiff_t)(j + (t < cols ? t : cols - 1)) * ldb;
            int i = i0;
            for (; i + EK_LB_MR <= i1; i += EK_LB_MR) {
                const int8_t *ar[EK_LB_MR];
                for (int t = 0; t < EK_LB_MR; t++) ar[t] = a + (ptrdiff_t)(i + t) * lda;
                tile4(ar, br, k, c + (ptrdiff_t)i * ldc + j, ldc, cols);
            }
            for (; i < i1; i++) {
                const int8_t *ar = a + (ptrdiff_t)i * lda;
                tile1(&ar, br, k, c + (ptrdiff_t)i * ldc + j, ldc, cols);
            }
        }
    }
}

void EK_LB_S4_KERNEL(int m, int n, int k, const int8_t *a, int lda, const uint8_t *b, int ldb, int32_t *c,
                     int ldc) {
    lb_gemm(lb_tile_s4_4x4, lb_tile_s4_1x4, m, n, k, a, lda, b, ldb, c, ldc);
}

void EK_LB_T2_KERNEL(int m, int n, int k, const int8_t *a, int lda, const uint8_t *b, int ldb, int32_t *c,
                     int ldc) {
    lb_gemm(lb_tile_t2_4x4, lb_tile_t2_1x4, m, n, k, a, lda, b, ldb, c, ldc);
}
