/*
 * int8 GEMM for armv8.6-a with the int8 matrix-multiply extension (Cortex-X2/A710 and later);
 * compile with -march=armv8.6-a+dotprod+i8mm (gcc implies +dotprod, clang < 16 needs it spelled
 * out; sdot runs an odd last row).
 *
 * smmla multiplies a 2x8 int8 matrix (one register: two 8-byte rows) by an 8x2 one (two 8-byte
 * rows of B, i.e. two channels) into a 2x2 int32 block: 32 exact MACs per instruction, twice
 * sdot.  Our A and B rows are already k-contiguous, so no run-time packing: a 16-byte step
 * loads 16 bytes of each of two rows and zips their 64-bit halves into two 2x8 operands.
 *
 * Tile 8x8 = 4 row pairs x 4 channel pairs = 16 accumulators (+ 8 B operands + A operands of
 * the 32 registers); per 16 bytes of k: 16 loads + 16 zips + 32 smmla for 1024 MACs.  Then one
 * 8-byte step and the k % 8 tail (ek_gemm_load_tail8).  Edges: the last n % 8 channels reuse
 * the last valid B row (outputs not stored); leftover row pairs run a 2x8 tile; an odd last row
 * runs a 1x8 sdot tile, since smmla would waste half its products on it (m = 1 is a GEMV).
 *
 * ek_gemm_s8_i8mm_paired: the same tiles on constant weights the compiler stored pre-paired for
 * this kernel (EK_PACK_I8_PAIRS8, ek_gemm.h): each B operand is one 16-byte load, the 16 B zips
 * per 16-byte step disappear; the odd-row sdot tile multiplies each pair chunk by A's 8-byte
 * slice duplicated in both halves.
 */
#if defined(__aarch64__)
#if !defined(__ARM_FEATURE_MATMUL_INT8) || !defined(__ARM_FEATURE_DOTPROD)
#error "gemm_s8_i8mm.c needs smmla and sdot: compile with -march=armv8.6-a+dotprod+i8mm"
#endif
#include <arm_neon.h>
#include <stddef.h>

#include "ek_gemm.h"
#include "gemm_s8_common.h"

/* 16 accumulators + 8 B operands + A operands fill the 32 vector registers; GCC's
 * pre-allocation scheduler hoists all 16 loads and then spills accumulators to the stack
 * inside the loop.  Scheduling only after allocation keeps it at 16 loads, 16 zips, 32 smmla. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-schedule-insns")
#endif

#define MR 8
#define NR 8

/* Two 8-byte row slices [p, p+len) as one 2x8 operand; len < 8 only for the k % 8 tail. */
static inline int8x16_t load_pair(const int8_t *row0, const int8_t *row1, int p, int len, int k) {
    if (len == 8) return vcombine_s8(vld1_s8(row0 + p), vld1_s8(row1 + p));
    return vcombine_s8(vcreate_s8(ek_gemm_load_tail8(row0, k, len)),
                       vcreate_s8(ek_gemm_load_tail8(row1, k, len)));
}

/* Rows row0, row1 at [p, p+16) as two 2x8 operands (k slices [p, p+8) and [p+8, p+16)):
 * two 16-byte loads and two 64-bit zips, cheaper than four 8-byte loads + lane inserts. */
static inline void load_pair16(const int8_t *row0, const int8_t *row1, int p, int8x16_t *lo,
                               int8x16_t *hi) {
    const int64x2_t r0 = vreinterpretq_s64_s8(vld1q_s8(row0 + p));
    const int64x2_t r1 = vreinterpretq_s64_s8(vld1q_s8(row1 + p));
    *lo = vreinterpretq_s8_s64(vzip1q_s64(r0, r1));
    *hi = vreinterpretq_s8_s64(vzip2q_s64(r0, r1));
}

/* acc += one 16-byte k slice of 2*pairs A rows x 8 B rows.  Row-major B: br[j] is row j;
 * pre-paired B (paired = 1, EK_PACK_I8_PAIRS8): br[q] is pair q, whose 16-byte chunk at 2p is
 * already the 2x8 operand of k slice [p, p+8), so B needs no zips. */
static inline __attribute__((always_inline)) void mmla_step16(int paired, int pairs, int32x4_t acc[][NR / 2],
                                                              const int8_t *const *ar,
                                                              const int8_t *const *br, int p) {
    int8x16_t blo[NR / 2], bhi[NR / 2];
#pragma GCC unroll 4
    for (int q = 0; q < NR / 2; q++) {
        if (paired) {
            blo[q] = vld1q_s8(br[q] + 2 * p);
            bhi[q] = vld1q_s8(br[q] + 2 * p + 16);
        } else {
            load_pair16(br[2 * q], br[2 * q + 1], p, &blo[q], &bhi[q]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < pairs; r++) {
        int8x16_t alo, ahi;
        load_pair16(ar[2 * r], ar[2 * r + 1], p, &alo, &ahi);
#pragma GCC unroll 4
        for (int q = 0; q < NR / 2; q++) {
            acc[r][q] = vmmlaq_s32(acc[r][q], alo, blo[q]);
            acc[r][q] = vmmlaq_s32(acc[r][q], ahi, bhi[q]);
        }
    }
}

/* acc += one 8-byte (or, at the tail, len-byte) k slice of 2*pairs A rows x 8 B rows.  A paired
 * B chunk is zero-padded past k, so it is always one whole 16-byte load. */
static inline __attribute__((always_inline)) void mmla_step(int paired, int pairs, int32x4_t acc[][NR / 2],
                                                            const int8_t *const *ar,
                                                            const int8_t *const *br, int p,
                                                            int len, int k) {
    int8x16_t bv[NR / 2];
#pragma GCC unroll 4
    for (int q = 0; q < NR / 2; q++)
        bv[q] = paired ? vld1q_s8(br[q] + 2 * p) : load_pair(br[2 * q], br[2 * q + 1], p, len, k);
#pragma GCC unroll 4
    for (int r = 0; r < pairs; r++) {
        const int8x16_t av = load_pair(ar[2 * r], ar[2 * r + 1], p, len, k);
#pragma GCC unroll 4
        for (int q = 0; q < NR / 2; q++) acc[r][q] = vmmlaq_s32(acc[r][q], av, bv[q]);
    }
}

/* rows 2*pairs of A (ar) against 8 rows of B (br); stores rows x cols outputs at c. */
static inline __attribute__((always_inline)) void mmla_tile(int paired, int pairs, const int8_t *const *ar,
                                                            const int8_t *const *br, int k,
                                                            int32_t *c, int ldc, int rows,
                                                            int cols) {
    int32x4_t acc[MR / 2][NR / 2];
#pragma GCC unroll 4
    for (int r = 0; r < pairs; r++)
#pragma GCC unroll 4
        for (int q = 0; q < NR / 2; q++) acc[r][q] = vdupq_n_s32(0);

    int p = 0;
    for (; p + 16 <= k; p += 16) mmla_step16(paired, pairs, acc, ar, br, p);
    if (p + 8 <= k) {
        mmla_step(paired, pairs, acc, ar, br, p, 8, k);
        p += 8;
    }
    if (p < k) mmla_step(paired, pairs, acc, ar, br, p, k - p, k);

    /* acc[r][q] = [c(2r,2q) c(2r,2q+1) c(2r+1,2q) c(2r+1,2q+1)]: 64-bit zips regroup by row. */
#pragma GCC unroll 4
    for (int r = 0; r < pairs; r++) {
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

static void mmla_tile_8x8(const int8_t *const *ar, const int8_t *const *br, int k, int32_t *c,
                          int ldc, int cols) {
    mmla_tile(0, 4, ar, br, k, c, ldc, 8, cols);
}

static void mmla_tile_2x8(const int8_t *const *ar, const int8_t *const *br, int k, int32_t *c,
                          int ldc, int cols) {
    mmla_tile(0, 1, ar, br, k, c, ldc, 2, cols);
}

static void paired_tile_8x8(const int8_t *const *ar, const int8_t *const *bp, int k, int32_t *c,
                            int ldc, int cols) {
    mmla_tile(1, 4, ar, bp, k, c, ldc, 8, cols);
}

static void paired_tile_2x8(const int8_t *const *ar, const int8_t *const *bp, int k, int32_t *c,
                            int ldc, int cols) {
    mmla_tile(1, 1, ar, bp, k, c, ldc, 2, cols);
}

/* One A row against 8 B rows with sdot (8 accumulators, lanes folded at the end). */
static void sdot_tile_1x8(const int8_t *ar, const int8_t *const *br, int k, int32_t *c, int cols) {
    int32x4_t acc[NR];
#pragma GCC unroll 8
    for (int j = 0; j < NR; j++) acc[j] = vdupq_n_s32(0);
    int p = 0;
    for (; p + 16 <= k; p += 16) {
        const int8x16_t av = vld1q_s8(ar + p);
#pragma GCC unroll 8
        for (int j = 0; j < NR; j++) acc[j] = vdotq_s32(acc[j], av, vld1q_s8(br[j] + p));
    }
    if (p + 8 <= k) {
        const int8x16_t av = vcombine_s8(vld1_s8(ar + p), vdup_n_s8(0));
#pragma GCC unroll 8
        for (int j = 0; j < NR; j++)
            acc[j] = vdotq_s32(acc[j], av, vcombine_s8(vld1_s8(br[j] + p), vdup_n_s8(0)));
        p += 8;
    }
    if (p < k) {
        const int len = k - p;
        const int8x16_t av = vcombine_s8(vcreate_s8(ek_gemm_load_tail8(ar, k, len)), vdup_n_s8(0));
#pragma GCC unroll 8
        for (int j = 0; j < NR; j++) {
            const int8x8_t b8 = vcreate_s8(ek_gemm_load_tail8(br[j], k, len));
            acc[j] = vdotq_s32(acc[j], av, vcombine_s8(b8, vdup_n_s8(0)));
        }
    }
    const int32x4_t s0 = vpaddq_s32(vpaddq_s32(acc[0], acc[1]), vpaddq_s32(acc[2], acc[3]));
    const int32x4_t s1 = vpaddq_s32(vpaddq_s32(acc[4], acc[5]), vpaddq_s32(acc[6], acc[7]));
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

void ek_gemm_s8_i8mm(int m, int n, int k, const int8_t *a, int lda, const int8_t *b, int ldb,
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
                const int8_t *ar[MR];
                for (int t = 0; t < MR; t++) ar[t] = a + (ptrdiff_t)(i + t) * lda;
                mmla_tile_8x8(ar, br, k, c + (ptrdiff_t)i * ldc + j, ldc, cols);
            }
            for (; i + 2 <= i1; i += 2) {
                const int8_t *ar[2] = {a + (ptrdiff_t)i * lda, a + (ptrdiff_t)(i + 1) * lda};
                mmla_tile_2x8(ar, br, k, c + (ptrdiff_t)i * ldc + j, ldc, cols);
            }
            if (i < i1) sdot_tile_1x8(a + (ptrdiff_t)i * lda, br, k, c + (ptrdiff_t)i * ldc + j, cols);
        }
    }
}

/* One A row against 4 pre-paired B pairs with sdot: A's 8-byte k slice duplicated in both halves
 * meets [row 2q | row 2q+1] of that slice, so lanes 0-1 sum row 2q and lanes 2-3 row 2q+1. */
static void paired_sdot_1x8(const int8_t *ar, const int8_t *const *bp, int k, int32_t *c, int cols) {
    int32x4_t acc[NR / 2];
#pragma GCC unroll 4
    for (int q = 0; q < NR / 2; q++) acc[q] = vdupq_n_s32(0);
    int p = 0;
    for (; p + 16 <= k; p += 16) {
        /* ld1r: each 8-byte half of the slice loaded straight into both halves */
        const int8x16_t lo = vreinterpretq_s8_s64(vld1q_dup_s64((const int64_t *)(const void *)(ar + p)));
        const int8x16_t hi = vreinterpretq_s8_s64(vld1q_dup_s64((const int64_t *)(const void *)(ar + p + 8)));
#pragma GCC unroll 4
        for (int q = 0; q < NR / 2; q++)
            acc[q] = vdotq_s32(vdotq_s32(acc[q], lo, vld1q_s8(bp[q] + 2 * p)), hi, vld1q_s8(bp[q] + 2 * p + 16));
    }
    for (; p < k; p += 8) { /* one 8-byte step, then the k % 8 tail (B chunks are zero-padded) */
        const int len = k - p >= 8 ? 8 : k - p;
        const int8x8_t a8 = len == 8 ? vld1_s8(ar + p) : vcreate_s8(ek_gemm_load_tail8(ar, k, len));
        const int8x16_t av = vcombine_s8(a8, a8);
#pragma GCC unroll 4
        for (int q = 0; q < NR / 2; q++) acc[q] = vdotq_s32(acc[q], av, vld1q_s8(bp[q] + 2 * p));
    }
    const int32x4_t s0 = vpaddq_s32(acc[0], acc[1]), s1 = vpaddq_s32(acc[2], acc[3]);
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

void ek_gemm_s8_i8mm_paired(int m, int n, int k, const int8_t *a, int lda, const int8_t *b, int ldp,
                            int32_t *c, int ldc) {
    if (m <= 0 || n <= 0 || k <= 0) return;
    const int mc = ek_gemm_block_rows(k, MR);
    for (int i0 = 0; i0 < m; i0 += mc) {
        const int i1 = m - i0 > mc ? i0 + mc : m;
        for (int j = 0; j < n; j += NR) {
            const int cols = n - j < NR ? n - j : NR, valid = (cols + 1) / 2;
            const int8_t *bp[NR / 2]; /* pairs past the last valid one repeat it (not stored) */
            for (int q = 0; q < NR / 2; q++) bp[q] = b + (ptrdiff_t)(j / 2 + (q < valid ? q : valid - 1)) * ldp;
            int i = i0;
            for (; i + MR <= i1; i += MR) {
                const int8_t *ar[MR];
                for (int t = 0; t < MR; t++) ar[t] = a + (ptrdiff_t)(i + t) * lda;
                paired_tile_8x8(ar, bp, k, c + (ptrdiff_t)i * ldc + j, ldc, cols);
            }
            for (; i + 2 <= i1; i += 2) {
                const int8_t *ar[2] = {a + (ptrdiff_t)i * lda, a + (ptrdiff_t)(i + 1) * lda};
                paired_tile_2x8(ar, bp, k, c + (ptrdiff_t)i * ldc + j, ldc, cols);
            }
            if (i < i1) paired_sdot_1x8(a + (ptrdiff_t)i * lda, bp, k, c + (ptrdiff_t)i * ldc + j, cols);
        }
    }
}

#else
typedef int ek_gemm_s8_i8mm_not_built; /* not aarch64: an empty unit is not valid C */
#endif
