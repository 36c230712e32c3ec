/*
 * ek_requant.h's rounding on 8 int32 lanes with AVX2, bit-exact (include from AVX2 files only:
 * every function here is compiled with target("avx2")).
 *
 *   requantize(acc) = clamp(((int64(acc) · m + 2^(t−1)) >> t) + zp, lo, hi),  t in [1, 62]
 *
 * AVX2 has a signed 32x32->64 multiply (vpmuldq, even lanes) but no arithmetic 64-bit right
 * shift, so the floor shift is done on a biased value: |acc · m| < 2^62, hence
 *   u = acc · m + 2^(t−1) + 2^62  lies in [0, 2^64)  and
 *   (u >>logical t) − 2^(62−t) = (acc · m + 2^(t−1)) >> t   exactly (2^62 is a multiple of 2^t).
 * The zero point is folded into the subtracted constant and the clamp is done in 64 bits
 * (vpcmpgtq), so no intermediate can wrap.  Odd lanes are moved down, multiplied, and blended
 * back.
 */
#ifndef EK_REQUANT_AVX2_H
#define EK_REQUANT_AVX2_H

#include <immintrin.h>

#include "ek_simd.h"

#define EK_AVX2 __attribute__((target("avx2")))

typedef struct {
    __m256i m, bias, unbias, lo, hi;
    __m128i total;
} ek_rq_avx2;

EK_AVX2 static inline ek_rq_avx2 ek_rq_avx2_make(int32_t m, int32_t total, int32_t zp, int32_t lo, int32_t hi) {
    ek_rq_avx2 k;
    k.m = _mm256_set1_epi64x(m);
    k.bias = _mm256_set1_epi64x((int64_t)(((uint64_t)1 << 62) + ((uint64_t)1 << (total - 1))));
    k.unbias = _mm256_set1_epi64x(((int64_t)1 << (62 - total)) - zp);
    k.lo = _mm256_set1_epi64x(lo);
    k.hi = _mm256_set1_epi64x(hi);
    k.total = _mm_cvtsi32_si128(total);
    return k;
}

EK_AVX2 static inline __m256i ek_rq_avx2_shift64(__m256i product, const ek_rq_avx2 *k) {
    return _mm256_sub_epi64(_mm256_srl_epi64(_mm256_add_epi64(product, k->bias), k->total), k->unbias);
}

EK_AVX2 static inline __m256i ek_rq_avx2_clamp64(__m256i v, const ek_rq_avx2 *k) {
    v = _mm256_blendv_epi8(v, k->lo, _mm256_cmpgt_epi64(k->lo, v));
    return _mm256_blendv_epi8(v, k->hi, _mm256_cmpgt_epi64(v, k->hi));
}

/* rshift_round(acc · m, t) + zp for 8 lanes, each known to fit int32 (no clamp). */
EK_AVX2 static inline __m256i ek_rescale_avx2(__m256i acc, const ek_rq_avx2 *k) {
    __m256i even = ek_rq_avx2_shift64(_mm256_mul_epi32(acc, k->m), k);
    __m256i odd = ek_rq_avx2_shift64(_mm256_mul_epi32(_mm256_srli_epi64(acc, 32), k->m), k);
    return _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}

/* The full requantization of 8 lanes: int32 results in [lo, hi]. */
EK_AVX2 static inline __m256i ek_requantize_avx2(__m256i acc, const ek_rq_avx2 *k) {
    __m256i even = ek_rq_avx2_clamp64(ek_rq_avx2_shift64(_mm256_mul_epi32(acc, k->m), k), k);
    __m256i odd = ek_rq_avx2_clamp64(ek_rq_avx2_shift64(_mm256_mul_epi32(_mm256_srli_epi64(acc, 32), k->m), k), k);
    return _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}

/* 16 int32 lanes already within int8 range -> 16 int8 in order. */
EK_AVX2 static inline __m128i ek_pack16_avx2(__m256i lo8, __m256i hi8) {
    __m256i s = _mm256_packs_epi32(lo8, hi8); /* lanes: lo 0-3, hi 0-3 | lo 4-7, hi 4-7 */
    s = _mm256_permute4x64_epi64(s, _MM_SHUFFLE(3, 1, 2, 0));
    return _mm_packs_epi16(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
}

#endif /* EK_REQUANT_AVX2_H */
