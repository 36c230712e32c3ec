/*
 * int8 GEMM for AVX-512 VNNI with the activations k-quad packed and the result channel-major,
 * the layout an NCHW convolution wants; compile with -mavx512f -mavx512bw -mavx512vl -mavx512vnni.
 *
 *   C[j*ldc + i] = Σ_{p<k} a[i][p] · B[j*ldb + p]        for pixels i < m, channels j < n
 *
 * The activations come packed by ek_pack_quads_vnni512 (below): quad row q holds, for each pixel
 * i, the 4 bytes u[i][4q .. 4q+3] where u = a ^ 0x80 = a + 128 (unsigned), so one 64-byte load is
 * 16 pixels x 4 k values: exactly the unsigned operand of vpdpbusd.  The signed operand is one
 * channel's 4 weights broadcast to all 16 lanes, so every lane accumulates one pixel of one
 * channel: no horizontal reduction at the end, and 16 contiguous outputs per accumulator (one
 * channel's row of pixels, the NCHW output order).  The +128 is taken off at the end with the
 * channel's weight sum, computed here:
 *
 *     Σ_p a[i][p]·b[j][p] = Σ_p u[i][p]·b[j][p] − 128·Σ_p b[j][p]      (exact modulo 2^32)
 *
 * which is exact because the true result fits int32 (ek_gemm.h, k <= 131071) and vpdpbusd wraps.
 *
 * Tile 6 channels x 4 vectors (64 pixels): 24 zmm accumulators, 4 activation vectors, 1
 * broadcast; per quad 4 loads, 6 broadcasts and 24 vpdpbusd.  When k % 4 != 0 the last quad's
 * weights are gathered byte by byte with zeros above k (no byte past a weight row is read), so
 * whatever the packed activations hold there adds nothing.  Pixels past m in the last vector
 * are computed from the packing's padding and not stored (masked store).
 */
#if defined(__x86_64__)
#if !defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__AVX512VL__) || !defined(__AVX512VNNI__)
#error "gemm_s8_quads_vnni512.c needs AVX-512 VNNI: compile with -mavx512f -mavx512bw -mavx512vl -mavx512vnni"
#endif
#include <immintrin.h>
#include <stddef.h>
#include <string.h>

#include "ek_gemm.h"

#define MR 6  /* channels per tile */
#define NV 4  /* 16-pixel vectors per tile */
#define PIX (16 * NV)

void ek_pack_quads_vnni512(const int8_t *rows, int64_t stride, int taps, int m, uint8_t *out) {
    const __m128i flip = _mm_set1_epi8((char)0x80);
    const int padded = ek_quads_pixels(m);
    for (int i = 0; i < padded; i += 16) {
        const int left = m - i;
        const __mmask16 mask = left >= 16 ? (__mmask16)0xFFFF : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
        __m128i r[4];
        for (int t = 0; t < 4; t++) /* masked: no byte past pixel m (or past a missing tap) is read */
            r[t] = t < taps ? _mm_xor_si128(_mm_maskz_loadu_epi8(mask, rows + t * stride + i), flip)
                            : _mm_setzero_si128();
        /* bytes (r0, r1) and (r2, r3) paired, then the pairs paired: pixel-major quads */
        const __m128i lo01 = _mm_unpacklo_epi8(r[0], r[1]), hi01 = _mm_unpackhi_epi8(r[0], r[1]);
        const __m128i lo23 = _mm_unpacklo_epi8(r[2], r[3]), hi23 = _mm_unpackhi_epi8(r[2], r[3]);
        __m128i *dst = (__m128i *)(out + 4 * i);
        _mm_storeu_si128(dst + 0, _mm_unpacklo_epi16(lo01, lo23));
        _mm_storeu_si128(dst + 1, _mm_unpackhi_epi16(lo01, lo23));
        _mm_storeu_si128(dst + 2, _mm_unpacklo_epi16(hi01, hi23));
        _mm_storeu_si128(dst + 3, _mm_unpackhi_epi16(hi01, hi23));
    }
}

/* 128 · Σ_p b[p] of one weight row (wrapping int32, as the accumulators). */
static int32_t correction(const int8_t *b, int k) {
    const __m512i ones = _mm512_set1_epi8(1);
    __m512i acc = _mm512_setzero_si512();
    int p = 0;
    for (; p + 64 <= k; p += 64) acc = _mm512_dpbusd_epi32(acc, ones, _mm512_loadu_si512((const void *)(b + p)));
    if (p < k)
        acc = _mm512_dpbusd_epi32(acc, ones, _mm512_maskz_loadu_epi8(_cvtu64_mask64(~0ull >> (64 - (k - p))), b + p));
    return (int32_t)((uint32_t)_mm512_reduce_add_epi32(acc) << 7);
}

/* Weights [4q, 4q+4) of a row as one int32 lane value; bytes past k are zero. */
static inline int32_t weight_quad(const int8_t *b, int q, int k) {
    int32_t v = 0;
    if (4 * q + 4 <= k) {
        memcpy(&v, b + 4 * q, 4);
        return v;
    }
    uint32_t u = 0;
    for (int t = 0; 4 * q + t < k; t++) u |= (uint32_t)(uint8_t)b[4 * q + t] << (8 * t);
    memcpy(&v, &u, 4);
    return v;
}

/* acc[r][v] += the quad row's vector v times channel r's 4 weights w[r] (broadcast). */
static inline __attribute__((always_inline)) void quad_step(int mr, int nv, __m512i acc[][NV], const uint8_t *arow,
                                                            const int32_t *w) {
    __m512i av[NV];
#pragma GCC unroll 4
    for (int v = 0; v < nv; v++) av[v] = _mm512_loadu_si512((const void *)(arow + 64 * v));
#pragma GCC unroll 6
    for (int r = 0; r < mr; r++) {
        const __m512i bw = _mm512_set1_epi32(w[r]);
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], av[v], bw);
    }
}

static inline __attribute__((always_inline)) void quad_tile(int mr, int nv, int m_left, const uint8_t *aq,
                                                            int64_t ldq, int k, const int8_t *const *br,
                                                            const int32_t *corr, int32_t *c, int ldc) {
    __m512i acc[MR][NV];
#pragma GCC unroll 6
    for (int r = 0; r < mr; r++)
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) acc[r][v] = _mm512_setzero_si512();
    const int full = k / 4;
    int32_t w[MR];
    for (int q = 0; q < full; q++) {
#pragma GCC unroll 6
        for (int r = 0; r < mr; r++) memcpy(&w[r], br[r] + 4 * q, 4);
        quad_step(mr, nv, acc, aq + (int64_t)q * ldq, w);
    }
    if (4 * full < k) {
        for (int r = 0; r < mr; r++) w[r] = weight_quad(br[r], full, k);
        quad_step(mr, nv, acc, aq + (int64_t)full * ldq, w);
    }
    const __mmask16 last = m_left >= 16 * nv ? (__mmask16)0xFFFF : (__mmask16)((1u << (m_left - 16 * (nv - 1))) - 1);
#pragma GCC unroll 6
    for (int r = 0; r < mr; r++) {
        const __m512i fix = _mm512_set1_epi32(corr[r]);
        int32_t *crow = c + (ptrdiff_t)r * ldc;
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) {
            const __m512i out = _mm512_sub_epi32(acc[r][v], fix);
            if (v + 1 < nv) _mm512_storeu_si512((void *)(crow + 16 * v), out);
            else _mm512_mask_storeu_epi32(crow + 16 * v, last, out);
        }
    }
}

/* One function per (channels, vectors) shape, so each keeps its accumulators in registers. */
typedef void (*quad_tile_fn)(int, const uint8_t *, int64_t, int, const int8_t *const *, const int32_t *, int32_t *,
                             int);
#define QTILE(R, V)                                                                                          \
    static void quad_tile_##R##x##V(int m_left, const uint8_t *aq, int64_t ldq, int k,                        \
                                    const int8_t *const *br, const int32_t *corr, int32_t *c, int ldc) {    \
        quad_tile(R, V, m_left, aq, ldq, k, br, corr, c, ldc);                                               \
    }
#define QTILES(R) QTILE(R, 1) QTILE(R, 2) QTILE(R, 3) QTILE(R, 4)
QTILES(1)
QTILES(2)
QTILES(3)
QTILES(4)
QTILES(5)
QTILES(6)
#define QROW(R) {quad_tile_##R##x1, quad_tile_##R##x2, quad_tile_##R##x3, quad_tile_##R##x4}
static const quad_tile_fn quad_tiles[MR][NV] = {QROW(1), QROW(2), QROW(3), QROW(4), QROW(5), QROW(6)};

void ek_gemm_s8_quads_vnni512(int m, int n, int k, const uint8_t *aq, const int8_t *b, int ldb, int32_t *c,
                              int ldc) {
    if (m <= 0 || n <= 0 || k <= 0) return;
    const int64_t ldq = 4 * (int64_t)ek_quads_pixels(m);
    for (int j = 0; j < n; j += MR) {
        const int mr = n - j < MR ? n - j : MR;
        const int8_t *br[MR];
        int32_t corr[MR];
        for (int r = 0; r < mr; r++) {
            br[r] = b + (ptrdiff_t)(j + r) * ldb;
            corr[r] = correction(br[r], k);
        }
        for (int i = 0; i < m; i += PIX) {
            const int m_left = m - i, nv = m_left >= PIX ? NV : (m_left + 15) / 16;
            quad_tiles[mr - 1][nv - 1](m_left, aq + 4 * (int64_t)i, ldq, k, br, corr, c + (ptrdiff_t)j * ldc + i, ldc);
        }
    }
}

#else
typedef int ek_gemm_s8_quads_vnni512_not_built; /* not x86_64: an empty unit is not valid C */
#endif
