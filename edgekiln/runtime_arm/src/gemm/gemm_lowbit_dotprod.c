/*
 * int4 and ternary GEMMs for armv8.2-a with the dot-product extension; compile with
 * -march=armv8.2-a+dotprod.
 *
 * The packed weights are unpacked in registers (1-2 shifts per 16 weights, shared by 4 A rows)
 * straight into sdot: one instruction per 16 MACs, as for int8.  For ternary weights this beats
 * the multiply-free mask kernel (gemm_lowbit_neon_mask.c: and + eor + sadalp = 3 instructions
 * per 16 MACs per output): sdot's multiplier array is there anyway, so the "2-bit code -> int8
 * lane -> sdot" route is the one kept on dotprod and i8mm CPUs (benchmarks/lowbit_gemm.py counts
 * both).
 */
#if defined(__aarch64__)
#if !defined(__ARM_FEATURE_DOTPROD)
#error "gemm_lowbit_dotprod.c needs sdot: compile with -march=armv8.2-a+dotprod"
#endif
#include <arm_neon.h>

static inline int32x4_t rowdot32(int32x4_t acc, int8x16_t a0, int8x16_t a1, int8x16_t b0, int8x16_t b1) {
    return vdotq_s32(vdotq_s32(acc, a0, b0), a1, b1);
}

/* int4 slices stay scaled by 16 (one instruction each), the sums shifted back at the end */
#define EK_LB_SLICE ek_lowbit_slice_scaled
#define EK_LB_SHIFT EK_LOWBIT_SCALE_SHIFT
#define EK_LB_ROW_ATTR /* the 1-row (GEMV) tiles schedule better with the default passes (fewer moves) */
#define EK_LB_S4_KERNEL ek_gemm_s4_dotprod
#define EK_LB_T2_KERNEL ek_gemm_t2_dotprod
#include "gemm_lowbit_rowdot_4x4.h"

#else
typedef int ek_gemm_lowbit_dotprod_not_built; /* not aarch64: an empty unit is not valid C */
#endif
