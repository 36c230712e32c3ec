/*
 * The 4x4 "row dot" tiling shared by the NEON and dotprod kernels (aarch64; the NEON one also armv7).
 *
 * Both operands are k-contiguous rows (A: pixels, B: channels), so each output is the dot
 * product of two rows.  A tile keeps 4 A rows x 4 B rows = 16 int32x4 accumulators in
 * registers (16 + 4 + 4 operand registers of the 32), each lane summing a quarter of the k
 * positions; k advances 16 bytes per step, then one 8-byte step, then the last k % 8 bytes via
 * ek_gemm_load_tail8.  Three pairwise adds per row fold the lanes into 4 outputs at the end.
 *
 * Edges: the last n % 4 channels reuse the last valid B row (loads stay inside B; the extra
 * outputs are not stored); the last m % 4 rows run a 1x4 tile, so m = 1 (GEMV) wastes nothing.
 * A is blocked so ~128 KiB of it stays in L2 while the B tiles pass over it.
 *
 * The includer defines, before including this file:
 *   static inline int32x4_t rowdot16(int32x4_t acc, int8x16_t a, int8x16_t b);  acc += a.b
 *   static inline int32x4_t rowdot8(int32x4_t acc, int8x8_t a, int8x8_t b);     acc += a.b
 *   #define EK_ROWDOT_KERNEL  the exported function's name
 * where each lane of acc gets some of the products, exactly (no saturation).
 */
#include <arm_neon.h>
#include <stddef.h>

#include "ek_gemm.h"
#include "gemm_s8_common.h"

/* 16 accumulators + 8 operands + product temporaries fill the 32 vector registers; GCC's
 * pre-allocation scheduler then interleaves so far ahead that the allocator adds ~10 moves per
 * step to the NEON loop.  Scheduling only after allocation keeps it at 8 loads + 64 MACs. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-schedule-insns")
#endif

#define EK_RD_MR 4
#define EK_RD_NR 4

/* [a0+a1, a2+a3, b0+b1, b2+b3]: one addp on aarch64, two vpadd of d halves on armv7. */
static inline int32x4_t ek_rd_paddq_s32(int32x4_t a, int32x4_t b) {
#if defined(__aarch64__)
    return vpaddq_s32(a, b);
#else
    return vcombine_s32(vpadd_s32(vget_low_s32(a), vget_high_s32(a)), vpadd_s32(vget_low_s32(b), vget_high_s32(b)));
#endif
}

static inline __attribute__((always_inline)) void rowdot_tile(int rows, const int8_t *const *ar,
                                                              const int8_t *const *br, int k,
                                                              int32_t *c, int ldc, int cols) {
    int32x4_t acc[EK_RD_MR][EK_RD_NR];
#pragma GCC unroll 4
    for (int r = 0; r < rows; r++)
#pragma GCC unroll 4
        for (int j = 0; j < EK_RD_NR; j++) acc[r][j] = vdupq_n_s32(0);

    int p = 0;
    for (; p + 16 <= k; p += 16) {
        int8x16_t bv[EK_RD_NR];
#pragma GCC unroll 4
        for (int j = 0; j < EK_RD_NR; j++) bv[j] = vld1q_s8(br[j] + p);
#pragma GCC unroll 4
        for (int r = 0; r < rows; r++) {
            const int8x16_t av = vld1q_s8(ar[r] + p);
#pragma GCC unroll 4
            for (int j = 0; j < EK_RD_NR; j++) acc[r][j] = rowdot16(acc[r][j], av, bv[j]);
        }
    }
    /* At most two short steps, so their loads need not be hoisted: 8 bytes, then k % 8. */
    for (int step = 0; step < 2 && p < k; step++) {
        const int len = k - p >= 8 ? 8 : k - p;
        int8x8_t bv[EK_RD_NR];
#pragma GCC unroll 4
        for (int j = 0; j < EK_RD_NR; j++)
            bv[j] = len == 8 ? vld1_s8(br[j] + p) : vcreate_s8(ek_gemm_load_tail8(br[j], k, len));
#pragma GCC unroll 4
        for (int r = 0; r < rows; r++) {
            const int8x8_t av =
                len == 8 ? vld1_s8(ar[r] + p) : vcreate_s8(ek_gemm_load_tail8(ar[r], k, len));
#pragma GCC unroll 4
            for (int j = 0; j < EK_RD_NR; j++) acc[r][j] = rowdot8(acc[r][j], av, bv[j]);
        }
        p += len;
    }

#pragma GCC unroll 4
    for (int r = 0; r < rows; r++) {
        /* vpaddq twice turns the 4 accumulators' 16 lanes into [c0, c1, c2, c3]. */
        const int32x4_t sum = ek_rd_paddq_s32(ek_rd_paddq_s32(acc[r][0], acc[r][1]),
                                              ek_rd_paddq_s32(acc[r][2], acc[r][3]));
        int32_t *crow = c + (ptrdiff_t)r * ldc;
        if (cols == EK_RD_NR) {
            vst1q_s32(crow, sum);
        } else {
            int32_t tmp[EK_RD_NR];
            vst1q_s32(tmp, sum);
            for (int j = 0; j < cols; j++) crow[j] = tmp[j];
        }
    }
}

static void rowdot_tile_4x4(const int8_t *const *ar, const int8_t *const *br, int k, int32_t *c,
                            int ldc, int cols) {
    rowdot_tile(4, ar, br, k, c, ldc, cols);
}

static void rowdot_tile_1x4(const int8_t *const *ar, const int8_t *const *br, int k, int32_t *c,
                            int ldc, int cols) {
    rowdot_tile(1, ar, br, k, c, ldc, cols);
}

void EK_ROWDOT_KERNEL(int m, int n, int k, const int8_t *a, int lda, const int8_t *b, int ldb,
                      int32_t *c, int ldc) {
    if (m <= 0 || n <= 0 || k <= 0) return;
    const int mc = ek_gemm_block_rows(k, EK_RD_MR);
    for (int i0 = 0; i0 < m; i0 += mc) {
        const int i1 = m - i0 > mc ? i0 + mc : m;
        for (int j = 0; j < n; j += EK_RD_NR) {
            const int cols = n - j < EK_RD_NR ? n - j : EK_RD_NR;
            const int8_t *br[EK_RD_NR];
            for (int t = 0; t < EK_RD_NR; t++)
                br[t] = b + (ptrdiff_t)(j + (t < cols ? t : cols - 1)) * ldb;
            int i = i0;
            for (; i + EK_RD_MR <= i1; i += EK_RD_MR) {
                const int8_t *ar[EK_RD_MR];
                for (int t = 0; t < EK_RD_MR; t++) ar[t] = a + (ptrdiff_t)(i + t) * lda;
                rowdot_tile_4x4(ar, br, k, c + (ptrdiff_t)i * ldc + j, ldc, cols);
            }
            for (; i < i1; i++) {
                const int8_t *ar = a + (ptrdiff_t)i * lda;
                rowdot_tile_1x4(&ar, br, k, c + (ptrdiff_t)i * ldc + j, ldc, cols);
            }
        }
    }
}
