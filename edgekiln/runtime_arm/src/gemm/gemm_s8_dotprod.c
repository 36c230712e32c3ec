/*
 * int8 GEMM for armv8.2-a with the dot-product extension (Cortex-A55/A76 and later);
 * compile with -march=armv8.2-a+dotprod.
 *
 * sdot adds four int8 x int8 products into each int32 lane, exactly: one instruction per
 * 16 MACs, 4x fewer than the smull/sadalp path.  The 8-byte step zero-extends both operands
 * to 16 bytes (an 8-byte load already clears the top of the register).
 */
#if defined(__aarch64__)
#if !defined(__ARM_FEATURE_DOTPROD)
#error "gemm_s8_dotprod.c needs sdot: compile with -march=armv8.2-a+dotprod"
#endif
#include <arm_neon.h>

static inline int32x4_t rowdot16(int32x4_t acc, int8x16_t a, int8x16_t b) {
    return vdotq_s32(acc, a, b);
}

static inline int32x4_t rowdot8(int32x4_t acc, int8x8_t a, int8x8_t b) {
    const int8x8_t zero = vdup_n_s8(0);
    return vdotq_s32(acc, vcombine_s8(a, zero), vcombine_s8(b, zero));
}

#define EK_ROWDOT_KERNEL ek_gemm_s8_dotprod
#include "gemm_s8_rowdot_4x4.h"

#else
typedef int ek_gemm_s8_dotprod_not_built; /* not aarch64: an empty unit is not valid C */
#endif
