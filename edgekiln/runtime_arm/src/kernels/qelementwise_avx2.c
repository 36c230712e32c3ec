/*
 * QAdd, QMul and the GEMM-tile requantization with AVX2 (ek_simd.h), 16 elements at a time.
 *
 *   QAdd: y = requantize(rescale((a − za) · 2^left, ma, ta) ± rescale((b − zb) · 2^left, mb, tb))
 *   QMul: y = requantize((a − za) · (b − zb))
 *   column: y[i] = requantize(src[i · stride] + add)
 *   channels: y[c] = requantize(acc[c] + add[c]) with channel c's multiplier and shift
 *
 * Every rescale / requantize is ek_requant_avx2.h's bit-exact rounding.  QAdd's caller has
 * checked, over all 256 values of each input, that (a − za) · 2^left and va + vb fit int32,
 * so the 32-bit lanes here hold exactly the int64 values of the reference.  An operand with
 * step 0 is one value broadcast over the row.  Leftover elements (n mod 16) are left to the
 * caller's scalar loop, except for the column, which finishes them itself.
 */
#include "ek_requant.h"
#include "ek_simd.h"

#if defined(__x86_64__)
#include "ek_requant_avx2.h"

EK_AVX2 static inline __m128i load16(const int8_t *p, int step, int64_t i) {
    return step ? _mm_loadu_si128((const __m128i *)(p + i)) : _mm_set1_epi8(p[0]);
}

/* 16 int8 -> two int32x8 minus the zero point. */
EK_AVX2 static inline void widen(__m128i v, __m256i zp, __m256i *lo, __m256i *hi) {
    *lo = _mm256_sub_epi32(_mm256_cvtepi8_epi32(v), zp);
    *hi = _mm256_sub_epi32(_mm256_cvtepi8_epi32(_mm_srli_si128(v, 8)), zp);
}

EK_AVX2 int64_t ek_qadd_avx2(const int8_t *a, int sa, const int8_t *b, int sb, int64_t n, const ek_qadd_consts *c,
                             int8_t *y) {
    const ek_rq_avx2 ka = ek_rq_avx2_make(c->ma, c->ta, 0, 0, 0), kb = ek_rq_avx2_make(c->mb, c->tb, 0, 0, 0);
    const ek_rq_avx2 ky = ek_rq_avx2_make(c->out.m, c->out.total, c->out.zp, c->out.lo, c->out.hi);
    const __m256i za = _mm256_set1_epi32(c->za), zb = _mm256_set1_epi32(c->zb);
    const __m128i left = _mm_cvtsi32_si128(c->left);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i a0, a1, b0, b1;
        widen(load16(a, sa, i), za, &a0, &a1);
        widen(load16(b, sb, i), zb, &b0, &b1);
        a0 = ek_rescale_avx2(_mm256_sll_epi32(a0, left), &ka);
        a1 = ek_rescale_avx2(_mm256_sll_epi32(a1, left), &ka);
        b0 = ek_rescale_avx2(_mm256_sll_epi32(b0, left), &kb);
        b1 = ek_rescale_avx2(_mm256_sll_epi32(b1, left), &kb);
        __m256i s0 = c->subtract ? _mm256_sub_epi32(a0, b0) : _mm256_add_epi32(a0, b0);
        __m256i s1 = c->subtract ? _mm256_sub_epi32(a1, b1) : _mm256_add_epi32(a1, b1);
        _mm_storeu_si128((__m128i *)(y + i), ek_pack16_avx2(ek_requantize_avx2(s0, &ky), ek_requantize_avx2(s1, &ky)));
    }
    return i;
}

EK_AVX2 int64_t ek_qmul_avx2(const int8_t *a, int sa, const int8_t *b, int sb, int64_t n, int32_t za_, int32_t zb_,
                             const ek_rq *rq, int8_t *y) {
    const ek_rq_avx2 ky = ek_rq_avx2_make(rq->m, rq->total, rq->zp, rq->lo, rq->hi);
    const __m256i za = _mm256_set1_epi32(za_), zb = _mm256_set1_epi32(zb_);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i a0, a1, b0, b1;
        widen(load16(a, sa, i), za, &a0, &a1);
        widen(load16(b, sb, i), zb, &b0, &b1);
        __m256i p0 = _mm256_mullo_epi32(a0, b0), p1 = _mm256_mullo_epi32(a1, b1); /* |.| <= 255^2 */
        _mm_storeu_si128((__m128i *)(y + i), ek_pack16_avx2(ek_requantize_avx2(p0, &ky), ek_requantize_avx2(p1, &ky)));
    }
    return i;
}

EK_AVX2 void ek_requantize_column_avx2(const int32_t *src, int64_t stride, int64_t n, int32_t add, const ek_rq *rq,
                                       int8_t *y) {
    const ek_rq_avx2 ky = ek_rq_avx2_make(rq->m, rq->total, rq->zp, rq->lo, rq->hi);
    const __m256i vadd = _mm256_set1_epi32(add);
    const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)stride));
    int64_t i = 0;
    if (stride <= (INT32_MAX >> 4)) /* the gather's int32 offsets */
        for (; i + 16 <= n; i += 16) {
            __m256i v0 = _mm256_add_epi32(_mm256_i32gather_epi32((const int *)(src + i * stride), idx, 4), vadd);
            __m256i v1 = _mm256_add_epi32(_mm256_i32gather_epi32((const int *)(src + (i + 8) * stride), idx, 4), vadd);
            _mm_storeu_si128((__m128i *)(y + i), ek_pack16_avx2(ek_requantize_avx2(v0, &ky), ek_requantize_avx2(v1, &ky)));
        }
    for (; i < n; i++) y[i] = ek_requantize((int64_t)src[i * stride] + add, rq->m, rq->total - 31, rq->zp, rq->lo, rq->hi);
}

/* Per-lane multipliers and shifts: ek_requant_avx2.h's biased logical shift with the bias
 * 2^62 + 2^(t−1) and the correction 2^(62−t) − zp built per lane (vpsllvq / vpsrlvq). */
EK_AVX2 static inline __m256i requantize_lanes(__m256i v, __m256i m, __m256i t, __m256i zp64, __m256i lo, __m256i hi) {
    const __m256i one = _mm256_set1_epi64x(1), low32 = _mm256_set1_epi64x(0xFFFFFFFF);
    const __m256i top = _mm256_set1_epi64x((int64_t)1 << 62), s62 = _mm256_set1_epi64x(62);
    __m256i te = _mm256_and_si256(t, low32), to = _mm256_srli_epi64(t, 32);
    __m256i r[2];
    for (int half = 0; half < 2; half++) {
        __m256i tt = half ? to : te;
        __m256i prod = half ? _mm256_mul_epi32(_mm256_srli_epi64(v, 32), _mm256_srli_epi64(m, 32)) : _mm256_mul_epi32(v, m);
        __m256i bias = _mm256_add_epi64(top, _mm256_sllv_epi64(one, _mm256_sub_epi64(tt, one)));
        __m256i unbias = _mm256_sub_epi64(_mm256_sllv_epi64(one, _mm256_sub_epi64(s62, tt)), zp64);
        __m256i q = _mm256_sub_epi64(_mm256_srlv_epi64(_mm256_add_epi64(prod, bias), tt), unbias);
        q = _mm256_blendv_epi8(q, lo, _mm256_cmpgt_epi64(lo, q));
        r[half] = _mm256_blendv_epi8(q, hi, _mm256_cmpgt_epi64(q, hi));
    }
    return _mm256_blend_epi32(r[0], _mm256_slli_epi64(r[1], 32), 0xAA);
}

EK_AVX2 void ek_requantize_channels_avx2(const int32_t *acc, const int32_t *add, const int32_t *m, const int32_t *shift,
                                         int64_t n, int32_t zp, int32_t lo, int32_t hi, int8_t *y) {
    const __m256i zp64 = _mm256_set1_epi64x(zp), lo64 = _mm256_set1_epi64x(lo), hi64 = _mm256_set1_epi64x(hi);
    const __m256i t31 = _mm256_set1_epi32(31);
    int64_t c = 0;
    for (; c + 16 <= n; c += 16) {
        __m256i q[2];
        for (int h = 0; h < 2; h++) {
            const int64_t o = c + 8 * h;
            __m256i v = _mm256_add_epi32(_mm256_loadu_si256((const __m256i *)(acc + o)),
                                         _mm256_loadu_si256((const __m256i *)(add + o)));
            __m256i t = _mm256_add_epi32(_mm256_loadu_si256((const __m256i *)(shift + o)), t31);
            q[h] = requantize_lanes(v, _mm256_loadu_si256((const __m256i *)(m + o)), t, zp64, lo64, hi64);
        }
        _mm_storeu_si128((__m128i *)(y + c), ek_pack16_avx2(q[0], q[1]));
    }
    for (; c < n; c++) y[c] = ek_requantize((int64_t)acc[c] + add[c], m[c], shift[c], zp, lo, hi);
}
#endif
