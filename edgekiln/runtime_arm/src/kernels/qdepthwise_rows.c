/*
 * The depthwise convolution as whole output rows for the SIMD row kernels (ek_simd.h).
 *
 * With the input's zero-point padding made explicit, every tap is a plain product:
 *
 *   Σ_t w[t] · (x_t − zx) = Σ_t w[t] · x_t − zx · Σ_t w[t]       (padding x_t = zx adds 0)
 *
 * so the row kernel only sums raw int8 products onto bias' = bias − zx · Σw, with no bounds
 * checks and no per-tap zero-point subtraction.  Each input row the window needs is copied
 * once into a ring of prepared rows: padded left/right with zx, split into `sw` stride phases
 * (phase r holds padded columns r, r + sw, r + 2·sw, …), so that tap (ky, kx) of output
 * columns i, i+1, … reads phase (kx·dw) mod sw contiguously from offset (kx·dw) div sw, for
 * stride 1 and 2 alike (stride-2 rows are split by one SIMD deinterleave, the table's
 * deinterleave2).  Rows above or below the input are all zx.  A prepared row is
 * reused by the next output rows while it stays in the window (ring slot = row mod span).
 *
 * Window rows above or below the image hold only zx, and zx · w − zx · w = 0: an output row
 * whose window sticks out skips them and folds the bias over the remaining taps (a 5x5 window on
 * a 3-row map reads 3 of its 5 rows).
 *
 * Bound: |x · w| <= 2^14, so the row kernels' int32 sums are exact when
 * |bias'| + taps · 2^14 < 2^31; otherwise this plane is left to the portable loop.  Skipping
 * rows needs |bias| + |zx| · Σ|w| + taps · 2^14 < 2^31 (every partial fold is then int32).
 */
#include <string.h>

#include "qdepthwise_rows.h"

#define EK_DW_BLOCK 16 /* outputs per row-kernel step: rows are padded to a multiple of it */

void ek_dw_rows_plan_init(ek_dw_rows_plan *p, int64_t H, int64_t W, int64_t Ho, int64_t Wo, int64_t kh, int64_t kw,
                          int64_t sh, int64_t sw, int64_t dh, int64_t dw, int64_t pt, int64_t pl) {
    *p = (ek_dw_rows_plan){.H = H, .W = W, .Ho = Ho, .Wo = Wo, .kh = kh, .kw = kw, .sh = sh, .sw = sw, .dh = dh,
                           .dw = dw, .pt = pt, .pl = pl};
    const int64_t wo_pad = (Wo + EK_DW_BLOCK - 1) / EK_DW_BLOCK * EK_DW_BLOCK;
    p->span = (kh - 1) * dh + 1;
    p->phase_len = wo_pad + (kw - 1) * dw / sw + 1;
    p->row_bytes = (int64_t)ek_align64((size_t)(sw * p->phase_len));
    size_t taps = (size_t)(kh * kw);
    p->off_w16 = ek_align64(taps * 8); /* tap pointers (8 bytes: the same size on every target) */
    p->off_cols = p->off_w16 + ek_align64(taps * 2);
    p->off_tags = p->off_cols + ek_align64((size_t)kw * 8);
    p->off_rows = p->off_tags + ek_align64((size_t)p->span * 8);
    p->scratch = p->off_rows + (size_t)(p->span * p->row_bytes);
}

/* Stride 2: padded column q = c + pl goes to phase q mod 2 at q div 2, so the even and odd
 * input columns are two contiguous runs (one SIMD deinterleave); only the columns some
 * window reads (q < 2·phase_len) are written. */
static void prepare_row2(const ek_dw_rows_plan *p, const ek_simd_kernels *k, const int8_t *src, int8_t zx, int8_t *dst) {
    int8_t *ph0 = dst, *ph1 = dst + p->phase_len;
    memset(dst, zx, (size_t)(2 * p->phase_len));
    int64_t n = 2 * p->phase_len - p->pl;
    if (n > p->W) n = p->W;
    if (n <= 0) return;
    if (p->pl % 2 == 0) k->deinterleave2(src, n, ph0 + p->pl / 2, ph1 + p->pl / 2);
    else k->deinterleave2(src, n, ph1 + (p->pl - 1) / 2, ph0 + (p->pl + 1) / 2);
}

/* Input row iy (any integer) as sw zx-padded phases at dst.  `padded`: dst already holds an
 * inside row of this plane (stride 1), so its zx borders are in place and only the row's bytes
 * are copied. */
static void prepare_row(const ek_dw_rows_plan *p, const ek_simd_kernels *k, const int8_t *plane, int64_t iy, int8_t zx,
                        int8_t *dst, int padded) {
    const int inside = iy >= 0 && iy < p->H;
    const int8_t *src = plane + (inside ? iy : 0) * p->W;
    if (p->sw == 2 && inside) {
        prepare_row2(p, k, src, zx, dst);
        return;
    }
    if (p->sw == 1 && inside && padded) {
        int64_t lo = p->pl < p->phase_len ? p->pl : p->phase_len, hi = p->W + p->pl < p->phase_len ? p->W + p->pl : p->phase_len;
        if (hi > lo) memcpy(dst + lo, src + lo - p->pl, (size_t)(hi - lo));
        return;
    }
    for (int64_t r = 0; r < p->sw; r++) {
        int8_t *ph = dst + r * p->phase_len;
        /* phase index j holds input column j·sw + r − pl: inside for j in [lo, hi) */
        int64_t lo = p->pl > r ? (p->pl - r + p->sw - 1) / p->sw : 0;
        int64_t hi = p->W + p->pl > r ? (p->W + p->pl - r + p->sw - 1) / p->sw : 0;
        if (!inside) lo = hi = 0;
        if (lo > p->phase_len) lo = p->phase_len;
        if (hi > p->phase_len) hi = p->phase_len;
        if (hi < lo) hi = lo;
        memset(ph, zx, (size_t)lo);
        if (p->sw == 1) {
            memcpy(ph + lo, src + lo - p->pl, (size_t)(hi - lo));
        } else {
            const int8_t *s = src + r - p->pl;
            for (int64_t j = lo; j < hi; j++) ph[j] = s[j * p->sw];
        }
        memset(ph + hi, zx, (size_t)(p->phase_len - hi));
    }
}

/* v mod span for v in [0, 2^62): a subtraction in the common case, a division only for a long step */
static inline int64_t wrap(int64_t v, int64_t span) {
    return v < span ? v : v - span < span ? v - span : v % span;
}

int ek_dw_rows_plane(const ek_dw_rows_plan *p, const ek_simd_kernels *k, const int8_t *plane, const int8_t *w,
                     int32_t zx, int64_t bias, const ek_rq *rq, int8_t *out, uint8_t *scratch) {
    const int64_t ntaps = p->kh * p->kw;
    int64_t wsum = 0, wabs = 0;
    for (int64_t t = 0; t < ntaps; t++) wsum += w[t], wabs += w[t] < 0 ? -w[t] : w[t];
    const int64_t folded = bias - (int64_t)zx * wsum;
    const int64_t reach = (folded < 0 ? -folded : folded) + ntaps * (1 << 14);
    if (reach >= ((int64_t)1 << 31)) return 0;
    /* Window rows above or below the image are all zx and add w·zx − zx·w = 0: they are skipped,
     * with the bias folded over the taps that remain, when every such partial sum is surely int32. */
    const int skip_outside = (bias < 0 ? -bias : bias) + (zx < 0 ? -(int64_t)zx : zx) * wabs + ntaps * (1 << 14) <
                             ((int64_t)1 << 31);

    const int8_t **taps = (const int8_t **)scratch;
    int16_t *w16 = (int16_t *)(scratch + p->off_w16);
    int64_t *tags = (int64_t *)(scratch + p->off_tags);
    int8_t *rows = (int8_t *)(scratch + p->off_rows);
    int64_t *cols = (int64_t *)(scratch + p->off_cols);
    for (int64_t t = 0; t < ntaps; t++) w16[t] = w[t];
    for (int64_t kx = 0; kx < p->kw; kx++) /* where tap column kx starts in a prepared row */
        cols[kx] = (kx * p->dw % p->sw) * p->phase_len + kx * p->dw / p->sw;
    for (int64_t s = 0; s < p->span; s++) tags[s] = INT64_MIN; /* no row prepared yet */
    /* slot of the window's first row, iy0 mod span, kept up to date without divisions */
    int64_t slot0 = ((-p->pt) % p->span + p->span) % p->span;
    for (int64_t oy = 0; oy < p->Ho; oy++) {
        /* window rows inside the image: ky in [first, last] (all of them when not skipping) */
        const int64_t iy0 = oy * p->sh - p->pt, iy_end = iy0 + (p->kh - 1) * p->dh;
        int64_t first = 0, last = p->kh - 1;
        if (skip_outside && iy0 < 0) first = (-iy0 + p->dh - 1) / p->dh;
        if (skip_outside && iy_end >= p->H) last = p->H - 1 - iy0 < 0 ? -1 : (p->H - 1 - iy0) / p->dh;
        int64_t slot = first < p->kh ? wrap(slot0 + first * p->dh, p->span) : slot0;
        for (int64_t ky = first; ky <= last; ky++) {
            const int64_t iy = iy0 + ky * p->dh;
            int8_t *row = rows + slot * p->row_bytes;
            if (tags[slot] != iy) {
                /* a slot that held an inside row has its zx borders already (stride 1) */
                prepare_row(p, k, plane, iy, (int8_t)zx, row, tags[slot] >= 0 && tags[slot] < p->H);
                tags[slot] = iy;
            }
            for (int64_t kx = 0; kx < p->kw; kx++) taps[ky * p->kw + kx] = row + cols[kx];
            slot = wrap(slot + p->dh, p->span);
        }
        slot0 = wrap(slot0 + p->sh, p->span);
        if (first == 0 && last == p->kh - 1) {
            k->depthwise_row(taps, w16, (int)ntaps, p->Wo, (int32_t)folded, rq, out + oy * p->Wo);
            continue;
        }
        /* the inside rows are one run of ky (iy grows with ky): a contiguous slice of taps and weights */
        int64_t in_sum = 0, t0 = first * p->kw, nt = last >= first ? (last - first + 1) * p->kw : 0;
        for (int64_t t = t0; t < t0 + nt; t++) in_sum += w[t];
        k->depthwise_row(taps + t0, w16 + t0, (int)nt, p->Wo, (int32_t)(bias - (int64_t)zx * in_sum), rq, out + oy * p->Wo);
    }
    return 1;
}
