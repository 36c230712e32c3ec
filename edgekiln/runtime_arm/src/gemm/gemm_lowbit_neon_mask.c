/*
 * The multiply-free ternary GEMM for armv8-a NEON (as in DeepliteRT / bitnet.cpp); compile with
 * -march=armv8-a.  Kept to measure it against the kernel the runtime uses (ek_gemm_t2_neon:
 * shifts + smull/smlal), not selected by ek_select_gemm_lowbit: benchmarks/lowbit_gemm.py counts
 * both, and this one costs more instructions on every shape (see the numbers there).
 *
 * For w in {-1, 0, +1}:  x·w = (x & nz) ^ neg  +  [w = -1],  where nz / neg are the lanes'
 * masks of w != 0 / w = -1 (~x = -x - 1, and no int8 overflow, unlike -x for x = -128).  Per 16
 * weights and column: the slice's 2-bit fields sign-extended (shl + sshr), nz = cmtst, neg =
 * cmlt #0, and the count of -1s accumulated once per column (sadalp of neg: -1 per lane); per
 * row and column: and + eor + sadalp into int16 lanes = 3 instructions per 16 MACs, against
 * 2.5 for smull/smlal2/smlal/smlal2/sadalp per 32.  int16 lanes gain at most 2·128 per slice,
 * so they are folded into int32 (sadalp) after every 64-weight block.  Tile 4 rows x 2 columns
 * (8 int16 + 8 int32 accumulators); the partial last block runs its live slices only.
 */
#if defined(__aarch64__)
#include <arm_neon.h>
#include <stddef.h>

#include "ek_gemm.h"
#include "gemm_lowbit_unpack_neon.h"

#define MR 4
#define NR 2

static inline __attribute__((always_inline)) void mask_tile(int rows, const int8_t *const *ar, const uint8_t *const *br,
                                                            int k, int32_t *c, int ldc, int cols) {
    int32x4_t acc[MR][NR], negs[NR];
#pragma GCC unroll 4
    for (int r = 0; r < rows; r++)
#pragma GCC unroll 2
        for (int j = 0; j < NR; j++) acc[r][j] = vdupq_n_s32(0);
#pragma GCC unroll 2
    for (int j = 0; j < NR; j++) negs[j] = vdupq_n_s32(0);
    ptrdiff_t boff = 0;
    for (int p = 0; p < k; p += 64, boff += EK_LOWBIT_BLOCK_BYTES) {
        const int tail = p + 64 > k, live = tail ? ek_lowbit_live_slices(p, k, 64) : 4;
        int8x16_t raw[NR];
        int16x8_t part[MR][NR], negpart[NR];
#pragma GCC unroll 2
        for (int j = 0; j < NR; j++) {
            raw[j] = vreinterpretq_s8_u8(vld1q_u8(br[j] + boff));
            negpart[j] = vdupq_n_s16(0);
        }
#pragma GCC unroll 4
        for (int r = 0; r < rows; r++)
#pragma GCC unroll 2
            for (int j = 0; j < NR; j++) part[r][j] = vdupq_n_s16(0);
#pragma GCC unroll 4
        for (int s = 0; s < 4; s++) {
            if (s >= live) break;
            int8x16_t nz[NR], neg[NR];
#pragma GCC unroll 2
            for (int j = 0; j < NR; j++) {
                const int8x16_t w = ek_lowbit_slice(raw[j], 2, s);
                nz[j] = vreinterpretq_s8_u8(vtstq_s8(w, w));
                neg[j] = vreinterpretq_s8_u8(vcltzq_s8(w));
                negpart[j] = vpadalq_s8(negpart[j], neg[j]);
            }
#pragma GCC unroll 4
            for (int r = 0; r < rows; r++) {
                const int8x16_t x = ek_lowbit_load_a(ar[r], p + 16 * s, k, tail);
#pragma GCC unroll 2
                for (int j = 0; j < NR; j++) part[r][j] = vpadalq_s8(part[r][j], veorq_s8(vandq_s8(x, nz[j]), neg[j]));
            }
        }
#pragma GCC unroll 4
        for (int r = 0; r < rows; r++)
#pragma GCC unroll 2
            for (int j = 0; j < NR; j++) acc[r][j] = vpadalq_s16(acc[r][j], part[r][j]);
#pragma GCC unroll 2
        for (int j = 0; j < NR; j++) negs[j] = vpadalq_s16(negs[j], negpart[j]);
    }
    /* sum of (x & nz) ^ neg, minus the accumulated -1 per negative weight */
    const int32_t n0 = vaddvq_s32(negs[0]), n1 = vaddvq_s32(negs[1]);
    for (int r = 0; r < rows; r++) {
        int32_t *crow = c + (ptrdiff_t)r * ldc;
        crow[0] = vaddvq_s32(acc[r][0]) - n0;
        if (cols > 1) crow[1] = vaddvq_s32(acc[r][1]) - n1;
    }
}

static void mask_tile_4x2(const int8_t *const *ar, const uint8_t *const *br, int k, int32_t *c, int ldc, int cols) {
    mask_tile(4, ar, br, k, c, ldc, cols);
}
static void mask_tile_1x2(const int8_t *const *ar, const uint8_t *const *br, int k, int32_t *c, int ldc, int cols) {
    mask_tile(1, ar, br, k, c, ldc, cols);
}

void ek_gemm_t2_neon_mask(int m, int n, int k, const int8_t *a, int lda, const uint8_t *b, int ldb, int32_t *c,
                          int ldc) {
    if (m <= 0 || n <= 0 || k <= 0) return;
    for (int j = 0; j < n; j += NR) {
        const int cols = n - j < NR ? n - j : NR;
        const uint8_t *br[NR] = {b + (ptrdiff_t)j * ldb, b + (ptrdiff_t)(j + (cols > 1)) * ldb};
        int i = 0;
        for (; i + MR <= m; i += MR) {
            const int8_t *ar[MR];
            for (int t = 0; t < MR; t++) ar[t] = a + (ptrdiff_t)(i + t) * lda;
            mask_tile_4x2(ar, br, k, c + (ptrdiff_t)i * ldc + j, ldc, cols);
        }
        for (; i < m; i++) {
            const int8_t *ar = a + (ptrdiff_t)i * lda;
            mask_tile_1x2(&ar, br, k, c + (ptrdiff_t)i * ldc + j, ldc, cols);
        }
    }
}

#else
typedef int ek_gemm_lowbit_neon_mask_not_built; /* not aarch64: an empty unit is not valid C */
#endif
