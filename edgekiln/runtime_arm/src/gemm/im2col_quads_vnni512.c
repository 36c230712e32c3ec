/*
 * An NCHW convolution's im2col block, built straight into the k-quad layout of the AVX-512 VNNI
 * quad GEMM (gemm_s8_quads_vnni512.c, ek_gemm.h); compile with -mavx512f -mavx512bw -mavx512vl
 * -mavx512vnni.
 *
 * The block's pixels are taken 64 at a time, one byte lane each.  A tap's 64 lanes are built in
 * one register: the pixels form runs within output rows, and along a run the tap reads an input
 * row at stride sw, so each run is one masked load (AVX-512BW byte masks: only the in-bounds
 * bytes are read, masked-off lanes do not fault and keep the zero point zx).  At stride 1 the
 * masks and offsets are tabulated per chunk (they depend on the kernel column and row, not on
 * the channel), leaving one table lookup and one masked load per run and tap.  At stride 2 the run
 * is loaded as 128 bytes and the even bytes packed (vpackuswb on the low bytes of each word, then
 * one qword permute to undo the per-128-bit-lane order); other strides gather the run bytewise.
 * Four taps' registers then become four vectors of 16 pixels x 4 taps (the quad layout) with two
 * rounds of byte/word unpacks and a 4x4 transpose of 128-bit blocks, flipped to unsigned
 * (u = x ^ 0x80) on the way, and stored.  Compared with im2col rows + packing this never writes
 * a byte twice and makes no call per run.
 */
#if defined(__x86_64__)
#if !defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__AVX512VL__) || !defined(__AVX512VNNI__)
#error "im2col_quads_vnni512.c needs AVX-512 VNNI: compile with -mavx512f -mavx512bw -mavx512vl -mavx512vnni"
#endif
#include <immintrin.h>
#include <stddef.h>

#include "ek_gemm.h"

#define LANES 64

/* Lanes [a, b) set, 0 <= a <= b <= 64. */
static inline __mmask64 lanes(int64_t a, int64_t b) {
    if (a >= b) return 0;
    const uint64_t upto = b >= 64 ? ~0ull : ((1ull << b) - 1);
    return _cvtu64_mask64(upto & ~((1ull << a) - 1));
}

typedef struct {
    int64_t count, at[LANES], len[LANES], iy0[LANES], ix0[LANES];
} runs64;

/* Pixels [p0, p0 + m) (m <= 64) as runs within one output row, with each run's window origin. */
static void runs_init(const ek_conv_geometry *g, int64_t p0, int m, runs64 *r) {
    r->count = 0;
    for (int64_t i = 0; i < m; r->count++) {
        const int64_t u = r->count, ox0 = (p0 + i) % g->Wo;
        r->at[u] = i;
        r->len[u] = m - i < g->Wo - ox0 ? m - i : g->Wo - ox0;
        r->iy0[u] = (p0 + i) / g->Wo * g->sh - g->pt;
        r->ix0[u] = ox0 * g->sw - g->pl;
        i += r->len[u];
    }
}

/* Lane at + s = row[ix + 2s] for s in [lo, hi), other lanes of v kept. */
static inline __m512i stride2_run(__m512i v, const int8_t *row, int64_t ix, int64_t at, int64_t lo, int64_t hi) {
    /* base[2L] = row[ix + 2(L − at)]: lane L's byte; bytes [2(at+lo), 2(at+hi) − 1) are in bounds */
    const int8_t *base = row + ix - 2 * at;
    const int64_t b0 = 2 * (at + lo), b1 = 2 * (at + hi) - 1;
    const __m512i low = _mm512_maskz_loadu_epi8(lanes(b0 < 64 ? b0 : 64, b1 < 64 ? b1 : 64), base);
    const __m512i high = _mm512_maskz_loadu_epi8(lanes(b0 > 64 ? b0 - 64 : 0, b1 > 64 ? b1 - 64 : 0), base + 64);
    const __m512i byte = _mm512_set1_epi16(0xFF);
    /* per 128-bit block L: even bytes of low's block L, then of high's block L */
    const __m512i packed = _mm512_packus_epi16(_mm512_and_si512(low, byte), _mm512_and_si512(high, byte));
    const __m512i ordered = _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7), packed);
    return _mm512_mask_mov_epi8(v, lanes(at + lo, at + hi), ordered);
}

/* The 64 lanes of tap (c, ky, kx) for the chunk's runs; zx where the tap falls outside the image. */
static __m512i tap_lanes(const ek_conv_geometry *g, const int8_t *plane, const runs64 *r, int64_t ky, int64_t kx) {
    __m512i v = _mm512_set1_epi8(g->zx);
    const int64_t sw = g->sw;
    for (int64_t u = 0; u < r->count; u++) {
        const int64_t iy = r->iy0[u] + ky * g->dh;
        if (iy < 0 || iy >= g->H) continue;
        const int64_t ix = r->ix0[u] + kx * g->dw, at = r->at[u], run = r->len[u];
        /* pixels s in [lo, hi) read columns ix + s·sw inside [0, W) */
        int64_t lo = ix < 0 ? (-ix + sw - 1) / sw : 0;
        int64_t hi = g->W - ix > 0 ? (g->W - ix + sw - 1) / sw : 0;
        if (hi > run) hi = run;
        if (lo >= hi) continue;
        const int8_t *row = plane + iy * g->W;
        if (sw == 2) {
            v = stride2_run(v, row, ix, at, lo, hi);
        } else {
            int8_t buf[LANES];
            _mm512_storeu_si512((void *)buf, v);
            for (int64_t s = lo; s < hi; s++) buf[at + s] = row[ix + s * sw];
            v = _mm512_loadu_si512((const void *)buf);
        }
    }
    return v;
}

/* Stride 1: what tap_lanes computes per run depends on (run, kx) for the columns and on
 * (run, ky) for the row, never on the channel, so both are tabulated once per chunk and a tap
 * costs one masked load per run (a row outside the image has no entry: the lanes keep zx). */
#define TABLE_MAX 256 /* kw · runs and kh · runs entries; larger kernels take tap_lanes */
typedef struct {
    __mmask64 mask[TABLE_MAX]; /* [kx][u]: lanes of run u inside the row */
    int64_t col[TABLE_MAX];    /* [kx][u]: byte offset of lane 0 from the row start */
    int64_t row[TABLE_MAX];    /* [ky][u]: the row's offset in the plane, −1 outside the image */
} stride1_table;

static int stride1_table_init(const ek_conv_geometry *g, const runs64 *r, stride1_table *t) {
    if (g->sw != 1 || g->kw * r->count > TABLE_MAX || g->kh * r->count > TABLE_MAX) return 0;
    for (int64_t kx = 0; kx < g->kw; kx++)
        for (int64_t u = 0; u < r->count; u++) {
            const int64_t ix = r->ix0[u] + kx * g->dw, at = r->at[u];
            int64_t lo = ix < 0 ? -ix : 0, hi = g->W - ix > 0 ? g->W - ix : 0; /* empty: mask 0 */
            if (hi > r->len[u]) hi = r->len[u];
            t->mask[kx * r->count + u] = lanes(at + lo, at + hi);
            t->col[kx * r->count + u] = ix - at; /* lane at + s = row[ix + s] */
        }
    for (int64_t ky = 0; ky < g->kh; ky++)
        for (int64_t u = 0; u < r->count; u++) {
            const int64_t iy = r->iy0[u] + ky * g->dh;
            t->row[ky * r->count + u] = iy >= 0 && iy < g->H ? iy * g->W : -1;
        }
    return 1;
}

static inline __m512i tap_lanes_stride1(const ek_conv_geometry *g, const int8_t *plane, const stride1_table *t,
                                        int64_t runs, int64_t ky, int64_t kx) {
    __m512i v = _mm512_set1_epi8(g->zx);
    const __mmask64 *mask = t->mask + kx * runs;
    const int64_t *col = t->col + kx * runs, *row = t->row + ky * runs;
    for (int64_t u = 0; u < runs; u++)
        if (row[u] >= 0) v = _mm512_mask_loadu_epi8(v, mask[u], plane + row[u] + col[u]);
    return v;
}

/* Four taps' lanes (64 pixels each) -> 4 vectors of 16 pixels x 4 taps, unsigned, stored at out. */
static inline void store_quads(__m512i t0, __m512i t1, __m512i t2, __m512i t3, uint8_t *out) {
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    t0 = _mm512_xor_si512(t0, flip), t1 = _mm512_xor_si512(t1, flip);
    t2 = _mm512_xor_si512(t2, flip), t3 = _mm512_xor_si512(t3, flip);
    const __m512i lo01 = _mm512_unpacklo_epi8(t0, t1), hi01 = _mm512_unpackhi_epi8(t0, t1);
    const __m512i lo23 = _mm512_unpacklo_epi8(t2, t3), hi23 = _mm512_unpackhi_epi8(t2, t3);
    /* block L of q0..q3: pixels 16L + 0..3, 4..7, 8..11, 12..15 (4 bytes each) */
    const __m512i q0 = _mm512_unpacklo_epi16(lo01, lo23), q1 = _mm512_unpackhi_epi16(lo01, lo23);
    const __m512i q2 = _mm512_unpacklo_epi16(hi01, hi23), q3 = _mm512_unpackhi_epi16(hi01, hi23);
    /* 4x4 transpose of 128-bit blocks: vector L = (q0, q1, q2, q3) block L */
    const __m512i a = _mm512_shuffle_i32x4(q0, q1, _MM_SHUFFLE(1, 0, 1, 0)); /* q0.0 q0.1 q1.0 q1.1 */
    const __m512i b = _mm512_shuffle_i32x4(q2, q3, _MM_SHUFFLE(1, 0, 1, 0)); /* q2.0 q2.1 q3.0 q3.1 */
    const __m512i c = _mm512_shuffle_i32x4(q0, q1, _MM_SHUFFLE(3, 2, 3, 2)); /* q0.2 q0.3 q1.2 q1.3 */
    const __m512i d = _mm512_shuffle_i32x4(q2, q3, _MM_SHUFFLE(3, 2, 3, 2)); /* q2.2 q2.3 q3.2 q3.3 */
    _mm512_storeu_si512((void *)(out + 0), _mm512_shuffle_i32x4(a, b, _MM_SHUFFLE(2, 0, 2, 0)));
    _mm512_storeu_si512((void *)(out + 64), _mm512_shuffle_i32x4(a, b, _MM_SHUFFLE(3, 1, 3, 1)));
    _mm512_storeu_si512((void *)(out + 128), _mm512_shuffle_i32x4(c, d, _MM_SHUFFLE(2, 0, 2, 0)));
    _mm512_storeu_si512((void *)(out + 192), _mm512_shuffle_i32x4(c, d, _MM_SHUFFLE(3, 1, 3, 1)));
}

void ek_im2col_quads_vnni512(const ek_conv_geometry *g, const int8_t *planes, int64_t p0, int m, uint8_t *aq) {
    const int64_t K = g->Cg * g->kh * g->kw, ldq = 4 * (int64_t)ek_quads_pixels(m), plane_bytes = g->H * g->W;
    runs64 r;
    stride1_table table;
    for (int i0 = 0; i0 < m; i0 += LANES) {
        const int chunk = m - i0 < LANES ? m - i0 : LANES;
        runs_init(g, p0 + i0, chunk, &r);
        const int tabulated = stride1_table_init(g, &r, &table);
        /* a chunk shorter than 64 pixels stores only its 16-pixel vectors (the rest belong to nobody) */
        const int vectors = (chunk + 15) / 16;
        const int8_t *plane = planes;
        int64_t ky = 0, kx = 0;
        for (int64_t k0 = 0; k0 < K; k0 += 4) {
            __m512i t[4];
            for (int j = 0; j < 4; j++) {
                if (k0 + j >= K) {
                    t[j] = _mm512_setzero_si512(); /* past K: the GEMM's weights are zero there */
                    continue;
                }
                t[j] = tabulated ? tap_lanes_stride1(g, plane, &table, r.count, ky, kx) : tap_lanes(g, plane, &r, ky, kx);
                if (++kx == g->kw) {
                    kx = 0;
                    if (++ky == g->kh) ky = 0, plane += plane_bytes;
                }
            }
            uint8_t *out = aq + k0 / 4 * ldq + 4 * (int64_t)i0;
            if (vectors == 4) {
                store_quads(t[0], t[1], t[2], t[3], out);
            } else {
                uint8_t buf[4 * LANES];
                store_quads(t[0], t[1], t[2], t[3], buf);
                for (int b = 0; b < 64 * vectors; b += 64)
                    _mm512_storeu_si512((void *)(out + b), _mm512_loadu_si512((const void *)(buf + b)));
            }
        }
    }
}

#else
typedef int ek_im2col_quads_vnni512_not_built; /* not x86_64: an empty unit is not valid C */
#endif
