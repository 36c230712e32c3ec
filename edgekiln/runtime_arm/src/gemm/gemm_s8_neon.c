/*
 * int8 GEMM for armv8-a Advanced SIMD (every aarch64 CPU); compile with -march=armv8-a.
 * The same code builds for 32-bit armv7 with NEON (-mfpu=neon-vfpv4), where smull2 is a
 * vmull_s8 of the high d register; its 16 q registers spill some of the 4x4 tile's accumulators.
 *
 * Without sdot, a 16-byte step is smull + smull2 (int8 x int8 -> int16, exact since
 * |product| <= 2^14) and two sadalp (add adjacent int16 pairs into the int32 lanes).  The
 * common smull + smlal2 pairing is avoided on purpose: (-128)^2 + (-128)^2 = 2^15 overflows
 * int16, and the kernel must be exact for every int8 input.  4 instructions per 16 MACs.
 */
#include "ek_gemm.h"

#if defined(EK_GEMM_S8_NEON_BUILT)
#if !defined(__ARM_NEON)
#error "gemm_s8_neon.c needs Advanced SIMD: compile with -march=armv8-a"
#endif
#include <arm_neon.h>

static inline int32x4_t rowdot16(int32x4_t acc, int8x16_t a, int8x16_t b) {
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
#if defined(__aarch64__)
    return vpadalq_s16(acc, vmull_high_s8(a, b));
#else /* armv7: no smull2; the high halves are d registers of their own, so this is free */
    return vpadalq_s16(acc, vmull_s8(vget_high_s8(a), vget_high_s8(b)));
#endif
}

static inline int32x4_t rowdot8(int32x4_t acc, int8x8_t a, int8x8_t b) {
    return vpadalq_s16(acc, vmull_s8(a, b));
}

#define EK_ROWDOT_KERNEL ek_gemm_s8_neon
#include "gemm_s8_rowdot_4x4.h"

#else
typedef int ek_gemm_s8_neon_not_built; /* no NEON here: an empty unit is not valid C */
#endif
