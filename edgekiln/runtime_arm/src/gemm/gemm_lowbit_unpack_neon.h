/*
 * Unpacking a 16-byte block of packed weights into int8 lanes, in registers (aarch64 only).
 *
 * Layouts (ek_gemm.h): int4 byte i = w[i] | w[16 + i] << 4; ternary byte i = w[i] |
 * w[16 + i] << 2 | w[32 + i] << 4 | w[48 + i] << 6, each field two's complement.  Slice s
 * (16 weights) is that field moved to the top of each byte (shl) and arithmetic-shifted back
 * down (sshr), which sign-extends it: two instructions, one for the top field.  Every shift
 * count is a literal, as the _n intrinsics require.
 */
#ifndef EK_GEMM_LOWBIT_UNPACK_NEON_H
#define EK_GEMM_LOWBIT_UNPACK_NEON_H

#include <arm_neon.h>

#include "gemm_lowbit_tail.h"

/* 16 activations at row + p; past k (tail blocks only) zeros, never loaded. */
static inline __attribute__((always_inline)) int8x16_t ek_lowbit_load_a(const int8_t *row, int p, int k, int tail) {
    if (!tail || p + 16 <= k) return vld1q_s8(row + p);
    if (p >= k) return vdupq_n_s8(0);
    uint64_t half[2];
    ek_lowbit_tail16(row, p, k, half);
    return vcombine_s8(vcreate_s8(half[0]), vcreate_s8(half[1]));
}

/* Weights [16 s, 16 s + 16) of a block: s < 2 (int4) or s < 4 (ternary). */
static inline __attribute__((always_inline)) int8x16_t ek_lowbit_slice(int8x16_t raw, int bits, int s) {
    if (bits == 4) return s == 0 ? vshrq_n_s8(vshlq_n_s8(raw, 4), 4) : vshrq_n_s8(raw, 4);
    switch (s) {
    case 0: return vshrq_n_s8(vshlq_n_s8(raw, 6), 6);
    case 1: return vshrq_n_s8(vshlq_n_s8(raw, 4), 6);
    case 2: return vshrq_n_s8(vshlq_n_s8(raw, 2), 6);
    default: return vshrq_n_s8(raw, 6);
    }
}

/*
 * The same slice times 2^EK_LOWBIT_SCALE_SHIFT(bits), for kernels that accumulate in int32 (sdot,
 * smmla): int4 needs only one instruction per slice then, the nibble left in the top half of each
 * byte (shl #4, or the high nibble masked in place); the kernel shifts its int32 sums right at
 * the end, exactly, since every product is a multiple of 16 (|x·16w| <= 2^14, so k <= 65536
 * keeps the sums inside int32).  Ternary fields gain nothing from it (a field not at the top
 * still needs two instructions), so they are returned unscaled.
 */
#define EK_LOWBIT_SCALE_SHIFT(bits) ((bits) == 4 ? 4 : 0)
static inline __attribute__((always_inline)) int8x16_t ek_lowbit_slice_scaled(int8x16_t raw, int bits, int s) {
    if (bits == 4) return s == 0 ? vshlq_n_s8(raw, 4) : vandq_s8(raw, vdupq_n_s8(-16));
    return ek_lowbit_slice(raw, bits, s);
}

#endif /* EK_GEMM_LOWBIT_UNPACK_NEON_H */
