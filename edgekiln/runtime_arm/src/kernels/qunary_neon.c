/*
 * The int8 unary kernels with NEON (ek_simd.h), 16 elements at a time.
 *
 *   lookup:   y[i] = table[x[i] + 128]                      (QLookupTable, and QRequantize /
 *                                                            QConcat through a 256-entry table)
 *   quantize: y[i] = clamp(rint(x[i] / scale) + zp, -128, 127), NaN -> 0   (QuantizeLinear)
 *
 * lookup: four 64-byte table registers; TBL returns 0 and TBX keeps the lane for an index past
 * 63, so u = x + 128 looked up in quarter q as u − 64q touches each lane exactly once.
 * quantize: IEEE division, FRINTN (ties to even, rintf's default mode) and a truncating
 * convert of an integer-valued float: the scalar loop's result bit for bit.
 * Both return how many leading elements they wrote (a multiple of 16); the caller finishes.
 */
#include "ek_simd.h"

#if defined(__aarch64__)
#include <arm_neon.h>

int64_t ek_lookup_neon(const int8_t *x, int64_t n, const int8_t *table, int8_t *y) {
    if (n < 16) return 0;
    const uint8_t *t = (const uint8_t *)table;
    uint8x16x4_t q0 = {{vld1q_u8(t), vld1q_u8(t + 16), vld1q_u8(t + 32), vld1q_u8(t + 48)}};
    uint8x16x4_t q1 = {{vld1q_u8(t + 64), vld1q_u8(t + 80), vld1q_u8(t + 96), vld1q_u8(t + 112)}};
    uint8x16x4_t q2 = {{vld1q_u8(t + 128), vld1q_u8(t + 144), vld1q_u8(t + 160), vld1q_u8(t + 176)}};
    uint8x16x4_t q3 = {{vld1q_u8(t + 192), vld1q_u8(t + 208), vld1q_u8(t + 224), vld1q_u8(t + 240)}};
    const uint8x16_t top = vdupq_n_u8(0x80), quarter = vdupq_n_u8(64);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        uint8x16_t u = veorq_u8(vld1q_u8((const uint8_t *)x + i), top);
        uint8x16_t r = vqtbl4q_u8(q0, u);
        u = vsubq_u8(u, quarter);
        r = vqtbx4q_u8(r, q1, u);
        u = vsubq_u8(u, quarter);
        r = vqtbx4q_u8(r, q2, u);
        u = vsubq_u8(u, quarter);
        r = vqtbx4q_u8(r, q3, u);
        vst1q_u8((uint8_t *)y + i, r);
    }
    return i;
}

int64_t ek_quantize_neon(const float *x, int64_t n, float scale, int32_t zp, int8_t *y) {
    const float32x4_t s = vdupq_n_f32(scale), z = vdupq_n_f32((float)zp);
    const float32x4_t lo = vdupq_n_f32(-128.0f), hi = vdupq_n_f32(127.0f);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        int32x4_t q[4];
        for (int j = 0; j < 4; j++) {
            float32x4_t v = vaddq_f32(vrndnq_f32(vdivq_f32(vld1q_f32(x + i + 4 * j), s)), z);
            uint32x4_t ordered = vceqq_f32(v, v); /* false for NaN */
            v = vminq_f32(vmaxq_f32(v, lo), hi);
            q[j] = vandq_s32(vcvtq_s32_f32(v), vreinterpretq_s32_u32(ordered));
        }
        int16x8_t a = vcombine_s16(vmovn_s32(q[0]), vmovn_s32(q[1])), b = vcombine_s16(vmovn_s32(q[2]), vmovn_s32(q[3]));
        vst1q_s8(y + i, vcombine_s8(vmovn_s16(a), vmovn_s16(b)));
    }
    return i;
}
#endif
