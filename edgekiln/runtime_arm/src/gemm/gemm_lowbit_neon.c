/*
 * int4 and ternary GEMMs for armv8-a Advanced SIMD (every aarch64 CPU); compile with
 * -march=armv8-a.
 *
 * Weights are unpacked in registers (gemm_lowbit_unpack_neon.h), then multiplied with
 * smull / smlal2 / smlal / smlal2 into one int16x8 (4 products per lane) and folded into the
 * int32 accumulator with one sadalp: 5 instructions per 32 MACs, against 8 for int8 weights.
 * Exact because the weights are small: |int8 x int4| <= 128 * 8 = 2^10, so four products sum
 * to at most 2^12, far inside int16 (int8 x int8 needs the sadalp after every pair).
 *
 * Ternary weights take this same path, with multiplies.  The multiply-free alternative
 * (gemm_lowbit_neon_mask.c: lane = (x & nonzero) ^ negative, summed by sadalp, plus a count of
 * the -1 weights) needs and + eor + sadalp = 3 instructions per 16 MACs per output against 2.5
 * here, besides building two masks per slice; counted under qemu it executes 2.1-2.6x the
 * instructions of this kernel (benchmarks/lowbit_gemm.py), so the runtime does not select it.
 */
#if defined(__aarch64__)
#if !defined(__ARM_NEON)
#error "gemm_lowbit_neon.c needs Advanced SIMD: compile with -march=armv8-a"
#endif
#include <arm_neon.h>

static inline int32x4_t rowdot32(int32x4_t acc, int8x16_t a0, int8x16_t a1, int8x16_t b0, int8x16_t b1) {
    int16x8_t sum = vmull_s8(vget_low_s8(a0), vget_low_s8(b0));
    sum = vmlal_high_s8(sum, a0, b0);
    sum = vmlal_s8(sum, vget_low_s8(a1), vget_low_s8(b1));
    sum = vmlal_high_s8(sum, a1, b1);
    return vpadalq_s16(acc, sum);
}

/* int16 partial sums: unscaled slices (16·w would overflow four int16 products) */
#define EK_LB_SLICE ek_lowbit_slice
#define EK_LB_SHIFT(bits) 0
#define EK_LB_ROW_ATTR EK_LB_NO_SCHED
#define EK_LB_S4_KERNEL ek_gemm_s4_neon
#define EK_LB_T2_KERNEL ek_gemm_t2_neon
#include "gemm_lowbit_rowdot_4x4.h"

#else
typedef int ek_gemm_lowbit_neon_not_built; /* not aarch64: an empty unit is not valid C */
#endif
