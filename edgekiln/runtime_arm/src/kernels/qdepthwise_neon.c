/*
 * The depthwise-convolution row kernel with NEON (ek_simd.h: ek_depthwise_row_neon).
 *
 *   y[i] = requantize(bias + Σ_t w[t] · taps[t][i])     for i < n
 *
 * 16 outputs at a time in four int32x4 accumulators: each tap's inputs are widened to int16
 * (sxtl) and multiplied-accumulated by the tap's weight with the widening smlal / smlal2
 * (int16 x int16 -> int32, exact); the caller guarantees |bias| + ntaps · 2^14 < 2^31.  The
 * requantization is ek_requant_neon.h's, bit-exact.  The last partial block is computed from
 * the padded rows and stored through a small buffer.  ek_deinterleave2_neon splits a row into
 * its even and odd columns (ld2) for the stride-2 rows of qdepthwise_rows.c.
 * ek_depthwise_channels_neon is the channels-last form (the fused block's depthwise stage):
 * 16 channels at a time, (x − zp) in int16 times the int16 weights with smlal / smlal2.
 */
#include <string.h>

#include "ek_simd.h"

#if defined(__aarch64__)
#include "ek_requant_neon.h"

void ek_depthwise_row_neon(const int8_t *const *taps, const int16_t *w, int ntaps, int64_t n, int32_t bias,
                           const ek_rq *rq, int8_t *y) {
    const ek_rq_neon k = ek_rq_neon_make(rq->m, rq->total, rq->zp, rq->lo, rq->hi);
    for (int64_t i = 0; i < n; i += 16) {
        int32x4_t a0 = vdupq_n_s32(bias), a1 = a0, a2 = a0, a3 = a0;
        for (int t = 0; t < ntaps; t++) {
            const int8x16_t x = vld1q_s8(taps[t] + i);
            const int16x8_t lo = vmovl_s8(vget_low_s8(x)), hi = vmovl_high_s8(x);
            const int16_t wt = w[t];
            a0 = vmlal_n_s16(a0, vget_low_s16(lo), wt);
            a1 = vmlal_high_n_s16(a1, lo, wt);
            a2 = vmlal_n_s16(a2, vget_low_s16(hi), wt);
            a3 = vmlal_high_n_s16(a3, hi, wt);
        }
        int8x16_t q = ek_pack16_neon(ek_requantize_neon(a0, &k), ek_requantize_neon(a1, &k),
                                     ek_requantize_neon(a2, &k), ek_requantize_neon(a3, &k));
        if (n - i >= 16) {
            vst1q_s8(y + i, q);
        } else {
            int8_t tail[16];
            vst1q_s8(tail, q);
            memcpy(y + i, tail, (size_t)(n - i));
        }
    }
}

void ek_depthwise_channels_neon(const int8_t *const *src, const int16_t *const *w, int ntaps, int64_t n, int32_t zp,
                                const int32_t *bias, int32_t *acc) {
    const int16x8_t z = vdupq_n_s16((int16_t)zp);
    int64_t c = 0;
    for (; c + 16 <= n; c += 16) {
        int32x4_t a0 = vld1q_s32(bias + c), a1 = vld1q_s32(bias + c + 4), a2 = vld1q_s32(bias + c + 8),
                  a3 = vld1q_s32(bias + c + 12);
        for (int t = 0; t < ntaps; t++) {
            const int8x16_t x = vld1q_s8(src[t] + c);
            const int16x8_t lo = vsubq_s16(vmovl_s8(vget_low_s8(x)), z), hi = vsubq_s16(vmovl_high_s8(x), z);
            const int16x8_t wl = vld1q_s16(w[t] + c), wh = vld1q_s16(w[t] + c + 8);
            a0 = vmlal_s16(a0, vget_low_s16(lo), vget_low_s16(wl));
            a1 = vmlal_high_s16(a1, lo, wl);
            a2 = vmlal_s16(a2, vget_low_s16(hi), vget_low_s16(wh));
            a3 = vmlal_high_s16(a3, hi, wh);
        }
        vst1q_s32(acc + c, a0);
        vst1q_s32(acc + c + 4, a1);
        vst1q_s32(acc + c + 8, a2);
        vst1q_s32(acc + c + 12, a3);
    }
    for (; c < n; c++) {
        int32_t a = bias[c];
        for (int t = 0; t < ntaps; t++) a += ((int32_t)src[t][c] - zp) * w[t][c];
        acc[c] = a;
    }
}

void ek_deinterleave2_neon(const int8_t *src, int64_t n, int8_t *even, int8_t *odd) {
    int64_t k = 0;
    for (; 2 * k + 32 <= n; k += 16) {
        const int8x16x2_t v = vld2q_s8(src + 2 * k);
        vst1q_s8(even + k, v.val[0]);
        vst1q_s8(odd + k, v.val[1]);
    }
    for (; 2 * k < n; k++) {
        even[k] = src[2 * k];
        if (2 * k + 1 < n) odd[k] = src[2 * k + 1];
    }
}
#endif
