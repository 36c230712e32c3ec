/*
 * ek_requant.h's rounding on 4 int32 lanes with NEON (aarch64), bit-exact.
 *
 *   requantize(acc) = clamp(((int64(acc) · m + 2^(t−1)) >> t) + zp, lo, hi),  t in [1, 62]
 *
 * smull gives the exact int64 product; srshl by −t is exactly "add 2^(t−1), arithmetic shift
 * right by t" (the architecture defines it on the unbounded integer), i.e. round half up.
 * The narrowing to int32 saturates (sqxtn) and the zero point is added saturating (sqadd):
 * a saturated value lies beyond every int8 clamp bound on the same side, so the clamp that
 * follows gives what the int64 rule gives.
 */
#ifndef EK_REQUANT_NEON_H
#define EK_REQUANT_NEON_H

#include <arm_neon.h>

#include "ek_simd.h"

typedef struct {
    int32x4_t m, zp, lo, hi;
    int64x2_t neg_total;
} ek_rq_neon;

static inline ek_rq_neon ek_rq_neon_make(int32_t m, int32_t total, int32_t zp, int32_t lo, int32_t hi) {
    ek_rq_neon k;
    k.m = vdupq_n_s32(m);
    k.zp = vdupq_n_s32(zp);
    k.lo = vdupq_n_s32(lo);
    k.hi = vdupq_n_s32(hi);
    k.neg_total = vdupq_n_s64(-(int64_t)total);
    return k;
}

/* rshift_round(acc · m, t) + zp, saturated to int32 (exact when the result fits). */
static inline int32x4_t ek_rescale_neon(int32x4_t acc, const ek_rq_neon *k) {
    int64x2_t lo = vrshlq_s64(vmull_s32(vget_low_s32(acc), vget_low_s32(k->m)), k->neg_total);
    int64x2_t hi = vrshlq_s64(vmull_high_s32(acc, k->m), k->neg_total);
    return vqaddq_s32(vcombine_s32(vqmovn_s64(lo), vqmovn_s64(hi)), k->zp);
}

static inline int32x4_t ek_requantize_neon(int32x4_t acc, const ek_rq_neon *k) {
    return vminq_s32(vmaxq_s32(ek_rescale_neon(acc, k), k->lo), k->hi);
}

/* 16 int32 lanes already within int8 range -> 16 int8 in order. */
static inline int8x16_t ek_pack16_neon(int32x4_t a, int32x4_t b, int32x4_t c, int32x4_t d) {
    int16x8_t ab = vcombine_s16(vmovn_s32(a), vmovn_s32(b));
    int16x8_t cd = vcombine_s16(vmovn_s32(c), vmovn_s32(d));
    return vcombine_s8(vmovn_s16(ab), vmovn_s16(cd));
}

#endif /* EK_REQUANT_NEON_H */
