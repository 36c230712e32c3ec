/*
 * The quad GEMM's epilogue: one output channel's contiguous row of int32 sums requantized to int8
 * on 16 lanes with AVX-512 (compile with -mavx512f -mavx512bw -mavx512vl -mavx512vnni, the flags
 * of the quad GEMM it follows), bit-exact with ek_requant.h:
 *
 *   y[i] = clamp(((int64(src[i] + add) · m + 2^(t−1)) >> t) + zp, lo, hi),   t in [1, 62]
 *
 * AVX-512F has what AVX2 lacks for this: an arithmetic 64-bit shift (vpsraq) and 64-bit min/max,
 * so the product (vpmuldq on even lanes, then on the odd lanes moved down) is rounded, shifted,
 * offset and clamped in int64 without the AVX2 code's bias trick, and the 16 results narrow to
 * bytes in one vpmovdb.  Reading the row with plain loads (the channel-major sums are
 * contiguous) also drops the gathers the AVX2 column kernel needs.  The caller guarantees that
 * src[i] + add fits int32 (qconv.c checks |add| + K·2^14 < 2^31).
 *
 * The same core also gives the avx512vnni SIMD table (kernels/ek_simd.h, simd_select.c) its two
 * requantizing entries, with per-lane multipliers and shifts (vpsravq, vpsllvq) for the
 * channels-last one: ek_requantize_column_avx512, ek_requantize_channels_avx512.
 */
#if defined(__x86_64__)
#if !defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__AVX512VL__)
#error "requantize_rows_vnni512.c needs AVX-512: compile with -mavx512f -mavx512bw -mavx512vl -mavx512vnni"
#endif
#include <immintrin.h>

#include "ek_gemm.h"
#include "../kernels/ek_requant.h"
#include "../kernels/ek_simd.h"

/* rshift_round(v · m, t) + zp clamped to [lo, hi], on the even int32 lanes of v (64-bit results). */
static inline __m512i rescale_even(__m512i v, __m512i m, __m512i round, __m128i t, __m512i zp, __m512i lo,
                                   __m512i hi) {
    const __m512i q = _mm512_add_epi64(_mm512_sra_epi64(_mm512_add_epi64(_mm512_mul_epi32(v, m), round), t), zp);
    return _mm512_min_epi64(_mm512_max_epi64(q, lo), hi);
}

void ek_requantize_row_vnni512(const int32_t *src, int64_t n, int32_t add, int32_t m, int32_t t, int32_t zp, int32_t lo,
                               int32_t hi, int8_t *y) {
    const __m512i vadd = _mm512_set1_epi32(add), vm = _mm512_set1_epi64(m);
    const __m512i round = _mm512_set1_epi64((int64_t)1 << (t - 1)), vzp = _mm512_set1_epi64(zp);
    const __m512i vlo = _mm512_set1_epi64(lo), vhi = _mm512_set1_epi64(hi);
    const __m128i shift = _mm_cvtsi32_si128(t);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 keep = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        const __m512i v = _mm512_add_epi32(_mm512_maskz_loadu_epi32(keep, src + i), vadd);
        const __m512i even = rescale_even(v, vm, round, shift, vzp, vlo, vhi);
        const __m512i odd = rescale_even(_mm512_srli_epi64(v, 32), vm, round, shift, vzp, vlo, vhi);
        /* even results in the low halves, odd ones moved up into the high halves */
        const __m512i both = _mm512_mask_blend_epi32((__mmask16)0xAAAA, even, _mm512_slli_epi64(odd, 32));
        _mm_mask_storeu_epi8(y + i, keep, _mm512_cvtepi32_epi8(both)); /* in [lo, hi]: narrowing is exact */
    }
}

/* 16 lanes: clamp(rshift_round((v + add) · m, t) + zp, lo, hi) with per-lane m and t (int32 lanes),
 * as int8 in an xmm. */
static inline __m128i requantize16(__m512i v, __m512i m, __m512i t, __m512i zp, __m512i lo, __m512i hi) {
    const __m512i one = _mm512_set1_epi64(1), low32 = _mm512_set1_epi64(0xFFFFFFFF);
    __m512i r[2];
    for (int half = 0; half < 2; half++) { /* even lanes, then the odd ones moved down */
        const __m512i vv = half ? _mm512_srli_epi64(v, 32) : v, mm = half ? _mm512_srli_epi64(m, 32) : m;
        const __m512i tt = half ? _mm512_srli_epi64(t, 32) : _mm512_and_si512(t, low32);
        const __m512i round = _mm512_sllv_epi64(one, _mm512_sub_epi64(tt, one));
        const __m512i q = _mm512_add_epi64(_mm512_srav_epi64(_mm512_add_epi64(_mm512_mul_epi32(vv, mm), round), tt), zp);
        r[half] = _mm512_min_epi64(_mm512_max_epi64(q, lo), hi);
    }
    return _mm512_cvtepi32_epi8(_mm512_mask_blend_epi32((__mmask16)0xAAAA, r[0], _mm512_slli_epi64(r[1], 32)));
}

void ek_requantize_column_avx512(const int32_t *src, int64_t stride, int64_t n, int32_t add, const ek_rq *rq, int8_t *y) {
    if (stride == 1) {
        ek_requantize_row_vnni512(src, n, add, rq->m, rq->total, rq->zp, rq->lo, rq->hi, y);
        return;
    }
    const __m512i vadd = _mm512_set1_epi32(add), m = _mm512_set1_epi32(rq->m), t = _mm512_set1_epi32(rq->total);
    const __m512i zp = _mm512_set1_epi64(rq->zp), lo = _mm512_set1_epi64(rq->lo), hi = _mm512_set1_epi64(rq->hi);
    const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32((int)stride));
    int64_t i = 0;
    if (stride <= (INT32_MAX >> 4)) /* the gather's int32 offsets */
        for (; i + 16 <= n; i += 16) {
            const __m512i v = _mm512_add_epi32(_mm512_i32gather_epi32(idx, src + i * stride, 4), vadd);
            _mm_storeu_si128((__m128i *)(y + i), requantize16(v, m, t, zp, lo, hi));
        }
    for (; i < n; i++) y[i] = ek_requantize((int64_t)src[i * stride] + add, rq->m, rq->total - 31, rq->zp, rq->lo, rq->hi);
}

void ek_requantize_channels_avx512(const int32_t *acc, const int32_t *add, const int32_t *m, const int32_t *shift,
                                   int64_t n, int32_t zp, int32_t lo, int32_t hi, int8_t *y) {
    const __m512i vzp = _mm512_set1_epi64(zp), vlo = _mm512_set1_epi64(lo), vhi = _mm512_set1_epi64(hi);
    const __m512i t31 = _mm512_set1_epi32(31);
    for (int64_t c = 0; c < n; c += 16) {
        const __mmask16 keep = n - c >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - c)) - 1);
        const __m512i v = _mm512_add_epi32(_mm512_maskz_loadu_epi32(keep, acc + c), _mm512_maskz_loadu_epi32(keep, add + c));
        /* masked-off lanes: shift 0 -> t = 31, a valid shift whose result is not stored */
        const __m512i t = _mm512_add_epi32(_mm512_maskz_loadu_epi32(keep, shift + c), t31);
        _mm_mask_storeu_epi8(y + c, keep, requantize16(v, _mm512_maskz_loadu_epi32(keep, m + c), t, vzp, vlo, vhi));
    }
}

#else
typedef int ek_requantize_rows_vnni512_not_built; /* not x86_64: an empty unit is not valid C */
#endif
