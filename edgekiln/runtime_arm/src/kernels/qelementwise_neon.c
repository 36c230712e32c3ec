/*
 * QAdd, QMul and the GEMM-tile requantization with NEON (ek_simd.h), 16 elements at a time.
 *
 *   QAdd: y = requantize(rescale((a − za) · 2^left, ma, ta) ± rescale((b − zb) · 2^left, mb, tb))
 *   QMul: y = requantize((a − za) · (b − zb))
 *   column: y[i] = requantize(src[i · stride] + add)
 *   channels: y[c] = requantize(acc[c] + add[c]) with channel c's multiplier and shift
 *
 * Every rescale / requantize is ek_requant_neon.h's bit-exact rounding.  QAdd's caller has
 * checked, over all 256 values of each input, that (a − za) · 2^left and va + vb fit int32.
 * An operand with step 0 is one value broadcast over the row.  Leftover elements (n mod 16)
 * are left to the caller's scalar loop, except for the column, which finishes them itself.
 */
#include "ek_requant.h"
#include "ek_simd.h"

#if defined(__aarch64__)
#include "ek_requant_neon.h"

static inline int8x16_t load16(const int8_t *p, int step, int64_t i) { return step ? vld1q_s8(p + i) : vdupq_n_s8(p[0]); }

/* 16 int8 -> four int32x4 minus the zero point. */
static inline void widen(int8x16_t v, int16x8_t zp, int32x4_t out[4]) {
    int16x8_t lo = vsubq_s16(vmovl_s8(vget_low_s8(v)), zp), hi = vsubq_s16(vmovl_high_s8(v), zp);
    out[0] = vmovl_s16(vget_low_s16(lo));
    out[1] = vmovl_high_s16(lo);
    out[2] = vmovl_s16(vget_low_s16(hi));
    out[3] = vmovl_high_s16(hi);
}

int64_t ek_qadd_neon(const int8_t *a, int sa, const int8_t *b, int sb, int64_t n, const ek_qadd_consts *c, int8_t *y) {
    const ek_rq_neon ka = ek_rq_neon_make(c->ma, c->ta, 0, 0, 0), kb = ek_rq_neon_make(c->mb, c->tb, 0, 0, 0);
    const ek_rq_neon ky = ek_rq_neon_make(c->out.m, c->out.total, c->out.zp, c->out.lo, c->out.hi);
    const int16x8_t za = vdupq_n_s16((int16_t)c->za), zb = vdupq_n_s16((int16_t)c->zb);
    const int32x4_t left = vdupq_n_s32(c->left);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        int32x4_t va[4], vb[4], q[4];
        widen(load16(a, sa, i), za, va);
        widen(load16(b, sb, i), zb, vb);
        for (int j = 0; j < 4; j++) {
            int32x4_t ra = ek_rescale_neon(vshlq_s32(va[j], left), &ka);
            int32x4_t rb = ek_rescale_neon(vshlq_s32(vb[j], left), &kb);
            q[j] = ek_requantize_neon(c->subtract ? vsubq_s32(ra, rb) : vaddq_s32(ra, rb), &ky);
        }
        vst1q_s8(y + i, ek_pack16_neon(q[0], q[1], q[2], q[3]));
    }
    return i;
}

int64_t ek_qmul_neon(const int8_t *a, int sa, const int8_t *b, int sb, int64_t n, int32_t za_, int32_t zb_,
                     const ek_rq *rq, int8_t *y) {
    const ek_rq_neon ky = ek_rq_neon_make(rq->m, rq->total, rq->zp, rq->lo, rq->hi);
    const int16x8_t za = vdupq_n_s16((int16_t)za_), zb = vdupq_n_s16((int16_t)zb_);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        int32x4_t va[4], vb[4], q[4];
        widen(load16(a, sa, i), za, va);
        widen(load16(b, sb, i), zb, vb);
        for (int j = 0; j < 4; j++) q[j] = ek_requantize_neon(vmulq_s32(va[j], vb[j]), &ky); /* |.| <= 255^2 */
        vst1q_s8(y + i, ek_pack16_neon(q[0], q[1], q[2], q[3]));
    }
    return i;
}

void ek_requantize_column_neon(const int32_t *src, int64_t stride, int64_t n, int32_t add, const ek_rq *rq, int8_t *y) {
    const ek_rq_neon ky = ek_rq_neon_make(rq->m, rq->total, rq->zp, rq->lo, rq->hi);
    const int32x4_t vadd = vdupq_n_s32(add);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        int32_t g[16];
        for (int j = 0; j < 16; j++) g[j] = src[(i + j) * stride];
        int32x4_t q[4];
        for (int j = 0; j < 4; j++) q[j] = ek_requantize_neon(vaddq_s32(vld1q_s32(g + 4 * j), vadd), &ky);
        vst1q_s8(y + i, ek_pack16_neon(q[0], q[1], q[2], q[3]));
    }
    for (; i < n; i++) y[i] = ek_requantize((int64_t)src[i * stride] + add, rq->m, rq->total - 31, rq->zp, rq->lo, rq->hi);
}

void ek_requantize_channels_neon(const int32_t *acc, const int32_t *add, const int32_t *m, const int32_t *shift,
                                 int64_t n, int32_t zp, int32_t lo, int32_t hi, int8_t *y) {
    const int32x4_t vzp = vdupq_n_s32(zp), vlo = vdupq_n_s32(lo), vhi = vdupq_n_s32(hi), t31 = vdupq_n_s32(31);
    int64_t c = 0;
    for (; c + 16 <= n; c += 16) {
        int32x4_t q[4];
        for (int j = 0; j < 4; j++) {
            const int64_t o = c + 4 * j;
            const int32x4_t v = vaddq_s32(vld1q_s32(acc + o), vld1q_s32(add + o)), mv = vld1q_s32(m + o);
            const int32x4_t neg_t = vnegq_s32(vaddq_s32(vld1q_s32(shift + o), t31)); /* srshl by −t: round half up */
            int64x2_t lo2 = vrshlq_s64(vmull_s32(vget_low_s32(v), vget_low_s32(mv)), vmovl_s32(vget_low_s32(neg_t)));
            int64x2_t hi2 = vrshlq_s64(vmull_high_s32(v, mv), vmovl_high_s32(neg_t));
            int32x4_t r = vqaddq_s32(vcombine_s32(vqmovn_s64(lo2), vqmovn_s64(hi2)), vzp);
            q[j] = vminq_s32(vmaxq_s32(r, vlo), vhi);
        }
        vst1q_s8(y + c, ek_pack16_neon(q[0], q[1], q[2], q[3]));
    }
    for (; c < n; c++) y[c] = ek_requantize((int64_t)acc[c] + add[c], m[c], shift[c], zp, lo, hi);
}
#endif
