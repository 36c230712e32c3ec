/*
 * An int8 matrix transpose, for the GEMM rows of 1x1 convolutions (qconv.c's im2col):
 *
 *   dst[c · dst_stride + r] = src[r · src_stride + c]      for r < rows, c < cols
 *
 * In NCHW a 1x1 convolution's GEMM row (one pixel, K = channels contiguous) is a column of the
 * [channels][pixels] input, so building the rows is a transpose.  Full 16x16 tiles are
 * transposed in registers with the baseline SIMD of the architecture (SSE2 on x86_64, NEON on
 * aarch64: both always present, so no run-time dispatch): four rounds of interleaving 8-,
 * 16-, 32- and 64-bit lanes of pairs of rows; the ragged edges are copied element by element.
 * The values are only moved, so the result is the same on every path.
 */
#include "ek_transpose.h"

#if defined(__x86_64__)
#include <emmintrin.h>

/* 16 rows of 16 bytes -> 16 columns, stored as the rows of dst. */
static void tile16(const int8_t *src, int64_t src_stride, int8_t *dst, int64_t dst_stride) {
    __m128i a[16], b[16];
    for (int i = 0; i < 16; i++) a[i] = _mm_loadu_si128((const __m128i *)(src + i * src_stride));
    for (int i = 0; i < 8; i++) { /* bytes of rows 2i, 2i+1 */
        b[i] = _mm_unpacklo_epi8(a[2 * i], a[2 * i + 1]);
        b[i + 8] = _mm_unpackhi_epi8(a[2 * i], a[2 * i + 1]);
    }
    for (int h = 0; h < 2; h++)
        for (int i = 0; i < 4; i++) { /* 16-bit pairs of rows (4i, 4i+1), (4i+2, 4i+3) */
            a[8 * h + i] = _mm_unpacklo_epi16(b[8 * h + 2 * i], b[8 * h + 2 * i + 1]);
            a[8 * h + i + 4] = _mm_unpackhi_epi16(b[8 * h + 2 * i], b[8 * h + 2 * i + 1]);
        }
    for (int q = 0; q < 4; q++)
        for (int i = 0; i < 2; i++) {
            b[4 * q + i] = _mm_unpacklo_epi32(a[4 * q + 2 * i], a[4 * q + 2 * i + 1]);
            b[4 * q + i + 2] = _mm_unpackhi_epi32(a[4 * q + 2 * i], a[4 * q + 2 * i + 1]);
        }
    for (int o = 0; o < 8; o++) {
        a[2 * o] = _mm_unpacklo_epi64(b[2 * o], b[2 * o + 1]);
        a[2 * o + 1] = _mm_unpackhi_epi64(b[2 * o], b[2 * o + 1]);
    }
    for (int k = 0; k < 16; k++) _mm_storeu_si128((__m128i *)(dst + k * dst_stride), a[k]); /* a[k]: column k */
}
#define EK_HAVE_TILE16 1

#elif defined(__aarch64__)
#include <arm_neon.h>

static void tile16(const int8_t *src, int64_t src_stride, int8_t *dst, int64_t dst_stride) {
    int8x16_t a[16];
    for (int i = 0; i < 16; i++) a[i] = vld1q_s8(src + i * src_stride);
    for (int i = 0; i < 16; i += 2) { /* 2x2 blocks of bytes */
        int8x16_t t = vtrn1q_s8(a[i], a[i + 1]);
        a[i + 1] = vtrn2q_s8(a[i], a[i + 1]);
        a[i] = t;
    }
    for (int i = 0; i < 16; i += 4) /* 2x2 blocks of 16-bit pairs */
        for (int j = 0; j < 2; j++) {
            int16x8_t x = vreinterpretq_s16_s8(a[i + j]), y = vreinterpretq_s16_s8(a[i + j + 2]);
            a[i + j] = vreinterpretq_s8_s16(vtrn1q_s16(x, y));
            a[i + j + 2] = vreinterpretq_s8_s16(vtrn2q_s16(x, y));
        }
    for (int i = 0; i < 16; i += 8)
        for (int j = 0; j < 4; j++) {
            int32x4_t x = vreinterpretq_s32_s8(a[i + j]), y = vreinterpretq_s32_s8(a[i + j + 4]);
            a[i + j] = vreinterpretq_s8_s32(vtrn1q_s32(x, y));
            a[i + j + 4] = vreinterpretq_s8_s32(vtrn2q_s32(x, y));
        }
    for (int j = 0; j < 8; j++) {
        int64x2_t x = vreinterpretq_s64_s8(a[j]), y = vreinterpretq_s64_s8(a[j + 8]);
        a[j] = vreinterpretq_s8_s64(vtrn1q_s64(x, y));
        a[j + 8] = vreinterpretq_s8_s64(vtrn2q_s64(x, y));
    }
    for (int k = 0; k < 16; k++) vst1q_s8(dst + k * dst_stride, a[k]);
}
#define EK_HAVE_TILE16 1
#endif

void ek_transpose_i8(const int8_t *src, int64_t src_stride, int64_t rows, int64_t cols, int8_t *dst,
                     int64_t dst_stride) {
    int64_t r0 = 0, c0 = 0;
#if defined(EK_HAVE_TILE16)
    for (; r0 + 16 <= rows; r0 += 16)
        for (c0 = 0; c0 + 16 <= cols; c0 += 16)
            tile16(src + r0 * src_stride + c0, src_stride, dst + c0 * dst_stride + r0, dst_stride);
    /* the right edge of the tiled rows */
    for (int64_t r = 0; r < r0; r++)
        for (int64_t c = c0; c < cols; c++) dst[c * dst_stride + r] = src[r * src_stride + c];
#endif
    for (int64_t r = r0; r < rows; r++) /* the bottom edge */
        for (int64_t c = 0; c < cols; c++) dst[c * dst_stride + r] = src[r * src_stride + c];
}
