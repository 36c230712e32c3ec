/*
 * The depthwise-convolution row kernel with AVX2 (ek_simd.h: ek_depthwise_row_avx2).
 *
 *   y[i] = requantize(bias + Σ_t w[t] · taps[t][i])     for i < n
 *
 * 16 outputs at a time, two taps per step: the taps' 16 int8 inputs are widened to int16 and
 * interleaved (vpunpck{l,h}wd), so one vpmaddwd with the weight pair (w_t, w_t+1) gives
 * x_t·w_t + x_t+1·w_t+1 in int32 for 8 outputs (|each| <= 2·2^14: exact).  The interleave
 * works within 128-bit halves, so the two accumulators hold outputs {0-3, 8-11} and
 * {4-7, 12-15}; one cross-half permute restores the order before requantizing.  An odd last
 * tap is paired with a zero weight.  The caller guarantees |bias| + ntaps · 2^14 < 2^31, so
 * no sum wraps.  The requantization is ek_requant_avx2.h's, bit-exact.  The last partial
 * block is computed from the padded rows and stored through a small buffer.
 *
 * ek_deinterleave2_avx2 splits a row into its even and odd columns for the stride-2 rows of
 * qdepthwise_rows.c: 32 bytes at a time, a byte shuffle within each 128-bit half then a
 * 64-bit permute.
 *
 * ek_depthwise_channels_avx2 is the channels-last form (the fused block's depthwise stage):
 * 16 channels at a time, two taps per vpmaddwd on interleaved (x − zp, w) pairs, exact since
 * |x − zp| <= 255 and |w| <= 128 fit int16.
 */
#include <string.h>

#include "ek_simd.h"

#if defined(__x86_64__)
#include "ek_requant_avx2.h"

EK_AVX2 void ek_depthwise_row_avx2(const int8_t *const *taps, const int16_t *w, int ntaps, int64_t n, int32_t bias,
                                   const ek_rq *rq, int8_t *y) {
    const ek_rq_avx2 k = ek_rq_avx2_make(rq->m, rq->total, rq->zp, rq->lo, rq->hi);
    for (int64_t i = 0; i < n; i += 16) {
        __m256i lo = _mm256_set1_epi32(bias), hi = lo; /* outputs {0-3, 8-11}, {4-7, 12-15} */
        int t = 0;
        for (; t + 1 < ntaps; t += 2) {
            __m256i a = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(taps[t] + i)));
            __m256i b = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(taps[t + 1] + i)));
            __m256i pair = _mm256_set1_epi32((int32_t)(((uint32_t)(uint16_t)w[t + 1] << 16) | (uint16_t)w[t]));
            lo = _mm256_add_epi32(lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(a, b), pair));
            hi = _mm256_add_epi32(hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(a, b), pair));
        }
        if (t < ntaps) {
            __m256i a = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(taps[t] + i)));
            __m256i one = _mm256_set1_epi32((uint16_t)w[t]); /* (w_t, 0) */
            lo = _mm256_add_epi32(lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(a, _mm256_setzero_si256()), one));
            hi = _mm256_add_epi32(hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(a, _mm256_setzero_si256()), one));
        }
        __m256i acc0 = _mm256_permute2x128_si256(lo, hi, 0x20), acc1 = _mm256_permute2x128_si256(lo, hi, 0x31);
        __m128i q = ek_pack16_avx2(ek_requantize_avx2(acc0, &k), ek_requantize_avx2(acc1, &k));
        if (n - i >= 16) {
            _mm_storeu_si128((__m128i *)(y + i), q);
        } else {
            int8_t tail[16];
            _mm_storeu_si128((__m128i *)tail, q);
            memcpy(y + i, tail, (size_t)(n - i));
        }
    }
}

EK_AVX2 void ek_depthwise_channels_avx2(const int8_t *const *src, const int16_t *const *w, int ntaps, int64_t n,
                                        int32_t zp, const int32_t *bias, int32_t *acc) {
    const __m256i z = _mm256_set1_epi16((int16_t)zp), zero = _mm256_setzero_si256();
    int64_t c = 0;
    for (; c + 16 <= n; c += 16) {
        __m256i lo = zero, hi = zero; /* channels {0-3, 8-11}, {4-7, 12-15} */
        int t = 0;
        for (; t < ntaps; t += 2) {
            __m256i xa = _mm256_sub_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(src[t] + c))), z);
            __m256i wa = _mm256_loadu_si256((const __m256i *)(w[t] + c)), xb = zero, wb = zero;
            if (t + 1 < ntaps) {
                xb = _mm256_sub_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(src[t + 1] + c))), z);
                wb = _mm256_loadu_si256((const __m256i *)(w[t + 1] + c));
            }
            lo = _mm256_add_epi32(lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(xa, xb), _mm256_unpacklo_epi16(wa, wb)));
            hi = _mm256_add_epi32(hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(xa, xb), _mm256_unpackhi_epi16(wa, wb)));
        }
        __m256i b0 = _mm256_loadu_si256((const __m256i *)(bias + c)), b1 = _mm256_loadu_si256((const __m256i *)(bias + c + 8));
        _mm256_storeu_si256((__m256i *)(acc + c), _mm256_add_epi32(b0, _mm256_permute2x128_si256(lo, hi, 0x20)));
        _mm256_storeu_si256((__m256i *)(acc + c + 8), _mm256_add_epi32(b1, _mm256_permute2x128_si256(lo, hi, 0x31)));
    }
    for (; c < n; c++) {
        int32_t a = bias[c];
        for (int t = 0; t < ntaps; t++) a += ((int32_t)src[t][c] - zp) * w[t][c];
        acc[c] = a;
    }
}

EK_AVX2 void ek_deinterleave2_avx2(const int8_t *src, int64_t n, int8_t *even, int8_t *odd) {
    const __m256i split = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15,
                                           0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    int64_t k = 0;
    for (; 2 * k + 32 <= n; k += 16) {
        __m256i v = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)(src + 2 * k)), split);
        v = _mm256_permute4x64_epi64(v, _MM_SHUFFLE(3, 1, 2, 0)); /* evens 0-15 | odds 0-15 */
        _mm_storeu_si128((__m128i *)(even + k), _mm256_castsi256_si128(v));
        _mm_storeu_si128((__m128i *)(odd + k), _mm256_extracti128_si256(v, 1));
    }
    for (; 2 * k < n; k++) {
        even[k] = src[2 * k];
        if (2 * k + 1 < n) odd[k] = src[2 * k + 1];
    }
}
#endif
