/*
 * QConvTranspose2D (compiler/integer_kernels.py): every input pixel scatters
 * (x − zp)·w[c, o', ky, kx] into output (i·sh − pt + ky·dh, j·sw − pl + kx·dw) when inside.
 * With per-input-channel weight scales, each input channel is first weighted by its Q16
 * channel_ratio and the sum is shifted back by 16 − F.  A task is one output plane (n, o),
 * accumulated in int64 scratch, so tasks never write the same memory.
 *
 * Without channel ratios, when the int32 bound below holds, a task first reduces over the
 * input channels tap by tap, on the input's grid (contiguous, vectorizable):
 *
 *   T_t[i, j] = Σ_c (x[c, i, j] − zp) · w[c, o, t]              (one int32 plane per tap t)
 *
 * and then scatters the kh·kw planes onto the output: C·kh·kw·H·W multiply-adds in unit
 * stride, and only kh·kw·H·W scattered additions instead of C times as many.
 * Bound: |T_t| <= Cg · 255 · 128 and an output sums at most kh·kw of them plus the bias, so
 * Cg·kh·kw·32640 + |bias| < 2^31 keeps every sum an exact int32.
 *
 * When the kernel tiles the output exactly (stride = kernel, no dilation, no output padding:
 * the usual 2x2 stride-2 upsampling), every output has exactly one (input pixel, tap) source;
 * given Og·kh·kw >= 16 GEMM columns (fewer do better with the tap planes, which run along the
 * pixels), the whole call is then one int8 GEMM per block of input pixels (m->gemm_s8):
 *
 *   C[p, (o, t)] = Σ_c x[c, p] · w[c, o, t],    y[o, p·s + t] = requant(C[p, (o, t)] + bias[o] − zx·Σ_c w[c, o, t])
 *
 * with the weights transposed to [(o, t)][c] and the per-column constants folded at load.  A
 * task is one block of input pixels; blocks write disjoint outputs.
 */
#include <string.h>

#include "../ek_internal.h"
#include "ek_requant.h"
#include "ek_requant_attrs.h"
#include "ek_simd.h"

typedef struct {
    const ek_tensor *x, *w, *bias, *mult, *shift, *ratio, *y;
    int64_t N, C, H, W, O, Og, Cg, G, Ho, Wo, kh, kw, sh, sw, dh, dw, pt, pl, frac;
    int32_t zx, zy, lo, hi;
    /* the GEMM path (module docstring); pb = 0: not taken */
    int64_t pb, pblocks, nk; /* input pixels per task, tasks per image and group, Og·kh·kw */
    int8_t *wt;              /* [G][nk][Cg] transposed weights */
    int32_t *add, *mt;       /* per GEMM column (g, o, t): bias − zx·Σ_c w, multiplier */
    int8_t *st;              /* per GEMM column: shift */
} qconvt_params;

typedef struct {
    const qconvt_params *p;
    const ek_simd_kernels *simd; /* NULL: portable loops */
    ek_gemm_s8_fn gemm;
    const int8_t *x;
    const uint8_t *w;
    const int32_t *bias, *mult;
    const int8_t *shift; /* int8 in the blob (31 + shift in [1, 62]) */
    const int32_t *ratio;
    int8_t *y;
} qconvt_run;

/* Sets up the GEMM path when the kernel tiles the output exactly, the weights, bias, multipliers
 * and shifts are plain constants, there are no channel ratios, every folded column constant and
 * every final sum fits int32, and a block of at least 8 pixels fits the scratch the call already
 * reserves (the blob writer mirrors that size, so this path must not grow it).  The transposed
 * weights and column constants live at the end of the params block (freed with it), which is
 * why this may move the params: it returns them. */
static qconvt_params *plan_gemm(ek_call *c, qconvt_params *p, const int64_t *op) {
    const int64_t kk = p->kh * p->kw, nk = p->Og * kk;
    const int32_t *bias = (const int32_t *)p->bias->cdata, *mult = (const int32_t *)p->mult->cdata;
    const int8_t *shift = (const int8_t *)p->shift->cdata;
    if (p->ratio || p->frac || p->w->packing != EK_PACK_NONE || !p->w->cdata || !bias || !mult || !shift || p->dh != 1 ||
        p->dw != 1 || p->sh != p->kh || p->sw != p->kw || op[0] || op[1] || p->Ho + p->pt > p->sh * p->H ||
        p->Wo + p->pl > p->sw * p->W)
        return p;
    /* a GEMM with a handful of columns (one output channel of a 2x2 kernel: 4) does worse than
     * the tap planes, which run along the pixels */
    if (nk < 16) return p;
    const size_t per_pixel = (size_t)p->Cg + (size_t)nk * 4 + 1; /* A row, int32 C column, one result byte */
    int64_t pb = (int64_t)((c->scratch - 192) / per_pixel);
    if (pb > 256) pb = 256;
    if (pb < 8) return p;
    for (int64_t o = 0; o < p->O; o++)
        if (p->Cg * 32640 + (bias[o] < 0 ? -(int64_t)bias[o] : bias[o]) >= ((int64_t)1 << 31)) return p;
    const size_t cols = (size_t)(p->G * nk), head = ek_align64(sizeof *p);
    qconvt_params *q = realloc(p, head + cols * 9 + cols * (size_t)p->Cg);
    if (!q) return p; /* the tap-plane path needs no memory */
    c->params = q;
    q->add = (int32_t *)((uint8_t *)q + head);
    q->mt = q->add + cols;
    q->st = (int8_t *)(q->mt + cols);
    q->wt = q->st + cols;
    const int8_t *w = (const int8_t *)q->w->cdata;
    for (int64_t g = 0; g < q->G; g++)
        for (int64_t oo = 0; oo < q->Og; oo++)
            for (int64_t t = 0; t < kk; t++) {
                const int64_t col = g * nk + oo * kk + t, o = g * q->Og + oo;
                int64_t sum = 0;
                for (int64_t ci = 0; ci < q->Cg; ci++) {
                    const int8_t v = w[((g * q->Cg + ci) * q->Og + oo) * kk + t];
                    q->wt[col * q->Cg + ci] = v;
                    sum += v;
                }
                const int64_t folded = (int64_t)bias[o] - (int64_t)q->zx * sum;
                if (folded < INT32_MIN || folded > INT32_MAX) return q; /* pb stays 0: tap planes */
                q->add[col] = (int32_t)folded;
                q->mt[col] = mult[o];
                q->st[col] = shift[o];
            }
    q->nk = nk;
    q->pb = pb;
    q->pblocks = (q->H * q->W + pb - 1) / pb;
    return q;
}

int ek_prepare_qconv_transpose2d(ek_model *m, ek_call *c, ek_err *e) {
    int rc = ek_check_arity(c, 5, 6, 1, e);
    if (rc) return rc;
    qconvt_params *p = calloc(1, sizeof *p);
    if (!p) return ek_fail(e, EK_STATUS_NOMEM, "out of memory");
    c->params = p;
    if (!(p->x = ek_operand(m, c, 0, 0, EK_DT_INT8, 4, e)) || !(p->w = ek_operand(m, c, 0, 1, EK_DT_INT8, 4, e)) ||
        !(p->bias = ek_operand(m, c, 0, 2, EK_DT_INT32, -1, e)) || !(p->mult = ek_operand(m, c, 0, 3, EK_DT_INT32, -1, e)) ||
        !(p->shift = ek_operand(m, c, 0, 4, EK_DT_INT8, -1, e)) || !(p->y = ek_operand(m, c, 1, 0, EK_DT_INT8, 4, e)))
        return EK_STATUS_INVALID;
    p->ratio = ek_input(m, c, 5);
    int64_t s[2], d[2], pads[4], op[2] = {0, 0};
    ek_requant_attrs rq;
    if ((rc = ek_attr_ints(c, EK_ATTR_STRIDES, 2, 1, 1 << 16, s, e)) ||
        (rc = ek_attr_ints(c, EK_ATTR_DILATIONS, 2, 1, 1 << 16, d, e)) ||
        (rc = ek_attr_ints(c, EK_ATTR_PADS, 4, 0, 1 << 16, pads, e)) ||
        (rc = ek_attr_int(c, EK_ATTR_GROUP, 0, 1, 1, 1 << 24, &p->G, e)) ||
        (rc = ek_attr_int(c, EK_ATTR_ACC_FRAC_BITS, 0, 0, 0, 16, &p->frac, e)))
        return rc;
    if (ek_attr_find(c, EK_ATTR_OUTPUT_PADDING) && (rc = ek_attr_ints(c, EK_ATTR_OUTPUT_PADDING, 2, 0, 1 << 16, op, e)))
        return rc;
    if ((rc = ek_read_requant_attrs(c, 1, 0, &rq, e))) return rc;
    p->zx = rq.zx; p->zy = rq.zy; p->lo = rq.lo; p->hi = rq.hi;
    p->N = p->x->dims[0]; p->C = p->x->dims[1]; p->H = p->x->dims[2]; p->W = p->x->dims[3];
    p->Og = p->w->dims[1]; p->kh = p->w->dims[2]; p->kw = p->w->dims[3];
    p->sh = s[0]; p->sw = s[1]; p->dh = d[0]; p->dw = d[1]; p->pt = pads[0]; p->pl = pads[1];
    if (p->w->dims[0] != p->C || p->C % p->G || p->kh < 1 || p->kw < 1)
        return ek_bad(e, c, "weight does not fit %lld input channels in %lld groups", (long long)p->C, (long long)p->G);
    if (p->C * p->kh * p->kw > 65536) return ek_bad(e, c, "reduction longer than 65536");
    p->Cg = p->C / p->G;
    p->O = p->Og * p->G;
    p->Ho = p->sh * (p->H - 1) + op[0] + p->dh * (p->kh - 1) + 1 - pads[0] - pads[2];
    p->Wo = p->sw * (p->W - 1) + op[1] + p->dw * (p->kw - 1) + 1 - pads[1] - pads[3];
    const int64_t *yd = p->y->dims;
    if (yd[0] != p->N || yd[1] != p->O || yd[2] != p->Ho || yd[3] != p->Wo)
        return ek_bad(e, c, "output '%s' does not have the transposed convolution's shape", p->y->name);
    if (p->bias->count != p->O || p->mult->count != p->O || p->shift->count != p->O)
        return ek_bad(e, c, "bias, multiplier and shift need %lld values", (long long)p->O);
    if ((rc = ek_check_shifts(p->shift, c, e))) return rc;
    if (p->ratio) {
        if (p->ratio->dtype != EK_DT_INT32 || p->ratio->count != p->C || !p->ratio->cdata)
            return ek_bad(e, c, "channel_ratio must be an int32 constant of %lld values", (long long)p->C);
        for (int64_t i = 0; i < p->C; i++) {
            int32_t r = ((const int32_t *)p->ratio->cdata)[i];
            if (r < 0 || r > 65536) return ek_bad(e, c, "channel_ratio[%lld] = %d outside [0, 2^16]", (long long)i, r);
        }
    }
    c->scratch = ek_align64((size_t)(p->Ho * p->Wo) * 8) + ek_align64((size_t)(p->kh * p->kw)) +
                 ek_align64((size_t)(p->kh * p->kw * p->H * p->W) * 4);
    plan_gemm(c, p, op);
    return EK_STATUS_OK;
}

/* The tap-plane path (module docstring); returns 0 when the int32 bound fails for plane o. */
static int tap_planes(const qconvt_run *r, int64_t n, int64_t o, uint8_t *scratch) {
    const qconvt_params *p = r->p;
    const int64_t g = o / p->Og, oo = o % p->Og, plane = p->Ho * p->Wo, kk = p->kh * p->kw, hw = p->H * p->W;
    const int64_t bias = r->bias[o];
    if (r->ratio || p->Cg * kk * 32640 + (bias < 0 ? -bias : bias) >= ((int64_t)1 << 31)) return 0;
    int32_t *acc = (int32_t *)scratch; /* the output plane (the int64 plane's room) */
    int8_t *w = (int8_t *)(scratch + ek_align64((size_t)plane * 8));
    int32_t *taps = (int32_t *)(scratch + ek_align64((size_t)plane * 8) + ek_align64((size_t)kk));
    memset(taps, 0, (size_t)(kk * hw) * 4);
    for (int64_t ci = 0; ci < p->Cg; ci++) {
        const int64_t ch = g * p->Cg + ci;
        ek_unpack_int8(p->w, r->w, (ch * p->Og + oo) * kk, kk, w);
        const int8_t *x = r->x + (n * p->C + ch) * hw;
        const int32_t zx = p->zx;
        for (int64_t t = 0; t < kk; t++) {
            const int32_t wt = w[t];
            int32_t *dst = taps + t * hw;
            if (wt != 0)
                for (int64_t k = 0; k < hw; k++) dst[k] += ((int32_t)x[k] - zx) * wt;
        }
    }
    for (int64_t k = 0; k < plane; k++) acc[k] = (int32_t)bias;
    for (int64_t ky = 0; ky < p->kh; ky++)
        for (int64_t kx = 0; kx < p->kw; kx++) {
            const int32_t *src = taps + (ky * p->kw + kx) * hw;
            const int64_t ox0 = kx * p->dw - p->pl; /* output column of input column 0 */
            /* input columns j with 0 <= j·sw + ox0 < Wo */
            int64_t jlo = ox0 < 0 ? (-ox0 + p->sw - 1) / p->sw : 0;
            int64_t jhi = p->Wo - ox0 > 0 ? (p->Wo - ox0 + p->sw - 1) / p->sw : 0;
            if (jhi > p->W) jhi = p->W;
            for (int64_t i = 0; i < p->H; i++) {
                const int64_t oy = i * p->sh - p->pt + ky * p->dh;
                if (oy < 0 || oy >= p->Ho) continue;
                int32_t *row = acc + oy * p->Wo;
                const int32_t *s = src + i * p->W;
                for (int64_t j = jlo; j < jhi; j++) row[j * p->sw + ox0] += s[j];
            }
        }
    int8_t *y = r->y + (n * p->O + o) * plane;
    const ek_rq rq = {r->mult[o], 31 + r->shift[o], p->zy, p->lo, p->hi};
    if (r->simd) {
        r->simd->requantize_column(acc, 1, plane, 0, &rq, y);
    } else {
        for (int64_t k = 0; k < plane; k++) y[k] = ek_requantize(acc[k], rq.m, r->shift[o], p->zy, p->lo, p->hi);
    }
    return 1;
}

static void task(void *ctx, int64_t t, uint8_t *scratch) {
    const qconvt_run *r = ctx;
    const qconvt_params *p = r->p;
    int64_t o = t % p->O, n = t / p->O, g = o / p->Og, oo = o % p->Og;
    if (tap_planes(r, n, o, scratch)) return;
    int64_t plane = p->Ho * p->Wo, kk = p->kh * p->kw;
    int64_t *acc = (int64_t *)scratch;
    int8_t *w = (int8_t *)(scratch + ek_align64((size_t)plane * 8));
    memset(acc, 0, (size_t)plane * 8);
    for (int64_t ci = 0; ci < p->Cg; ci++) {
        int64_t ch = g * p->Cg + ci;
        ek_unpack_int8(p->w, r->w, (ch * p->Og + oo) * kk, kk, w);
        int64_t scale = r->ratio ? r->ratio[ch] : 1;
        const int8_t *x = r->x + (n * p->C + ch) * p->H * p->W;
        for (int64_t i = 0; i < p->H; i++)
            for (int64_t j = 0; j < p->W; j++) {
                int64_t v = ((int64_t)x[i * p->W + j] - p->zx) * scale;
                for (int64_t ky = 0; ky < p->kh; ky++) {
                    int64_t oy = i * p->sh - p->pt + ky * p->dh;
                    if (oy < 0 || oy >= p->Ho) continue;
                    for (int64_t kx = 0; kx < p->kw; kx++) {
                        int64_t ox = j * p->sw - p->pl + kx * p->dw;
                        if (ox >= 0 && ox < p->Wo) acc[oy * p->Wo + ox] += v * w[ky * p->kw + kx];
                    }
                }
            }
    }
    int8_t *y = r->y + (n * p->O + o) * plane;
    int64_t bias = (int64_t)r->bias[o] * ((int64_t)1 << p->frac);
    for (int64_t k = 0; k < plane; k++) {
        int64_t a = r->ratio ? ek_rshift_round(acc[k], 16 - (int)p->frac) : acc[k];
        y[k] = ek_requantize(a + bias, r->mult[o], r->shift[o], p->zy, p->lo, p->hi);
    }
}

/* The GEMM path (module docstring): one block of input pixels of one image and group.  The
 * GEMM puts the (o, t) columns in rows, C'[(o, t)][p], so each (o, t) is one contiguous run of
 * pixels: requantized in one vector pass, then stored along its output row with stride sw. */
static void gemm_task(void *ctx, int64_t t, uint8_t *scratch) {
    const qconvt_run *r = ctx;
    const qconvt_params *p = r->p;
    const int64_t blk = t % p->pblocks, g = (t / p->pblocks) % p->G, n = t / p->pblocks / p->G;
    const int64_t hw = p->H * p->W, p0 = blk * p->pb, rows = hw - p0 < p->pb ? hw - p0 : p->pb;
    const int64_t nk = p->nk, kk = p->kh * p->kw;
    int8_t *a = (int8_t *)scratch;                                            /* [rows][Cg] */
    int32_t *acc = (int32_t *)(scratch + ek_align64((size_t)(p->pb * p->Cg))); /* [nk][rows] */
    int8_t *q = (int8_t *)acc + ek_align64((size_t)(p->pb * nk) * 4);          /* [rows] */
    for (int64_t ci = 0; ci < p->Cg; ci++) { /* NCHW -> pixel-major rows */
        const int8_t *x = r->x + (n * p->C + g * p->Cg + ci) * hw + p0;
        for (int64_t i = 0; i < rows; i++) a[i * p->Cg + ci] = x[i];
    }
    r->gemm((int)nk, (int)rows, (int)p->Cg, p->wt + g * nk * p->Cg, (int)p->Cg, a, (int)p->Cg, acc, (int)rows);
    for (int64_t col = 0; col < nk; col++) {
        const int64_t oo = col / kk, ky = col % kk / p->kw, kx = col % p->kw, gc = g * nk + col;
        const int32_t *src = acc + col * rows;
        const ek_rq rq = {p->mt[gc], 31 + p->st[gc], p->zy, p->lo, p->hi};
        if (r->simd) {
            r->simd->requantize_column(src, 1, rows, p->add[gc], &rq, q);
        } else {
            for (int64_t i = 0; i < rows; i++)
                q[i] = ek_requantize((int64_t)src[i] + p->add[gc], p->mt[gc], p->st[gc], p->zy, p->lo, p->hi);
        }
        /* input pixel (ih, iw) -> output (ih·sh − pt + ky, iw·sw − pl + kx), one input row at a time */
        int8_t *plane = r->y + (n * p->O + g * p->Og + oo) * p->Ho * p->Wo;
        const int64_t ox0 = kx - p->pl; /* output column of input column 0 */
        const int64_t jlo = ox0 < 0 ? (-ox0 + p->sw - 1) / p->sw : 0;
        int64_t jhi = p->Wo - ox0 > 0 ? (p->Wo - ox0 + p->sw - 1) / p->sw : 0;
        if (jhi > p->W) jhi = p->W;
        for (int64_t i = 0; i < rows;) {
            const int64_t ih = (p0 + i) / p->W, iw0 = (p0 + i) % p->W;
            const int64_t run = p->W - iw0 < rows - i ? p->W - iw0 : rows - i; /* pixels left in this input row */
            const int64_t oy = ih * p->sh - p->pt + ky;
            if (oy >= 0 && oy < p->Ho) {
                int8_t *dst = plane + oy * p->Wo;
                const int8_t *v = q + i; /* v[j − iw0]: the value of input column j */
                const int64_t lo = jlo > iw0 ? jlo : iw0, hi = jhi < iw0 + run ? jhi : iw0 + run;
                for (int64_t j = lo; j < hi; j++) dst[ox0 + j * p->sw] = v[j - iw0];
            }
            i += run;
        }
    }
}

int ek_run_qconv_transpose2d(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const qconvt_params *p = c->params;
    if (p->y->count == 0) return EK_STATUS_OK;
    qconvt_run r = {p, ek_simd_for(m), m->gemm_s8, ek_data(m, p->x), ek_data(m, p->w), ek_data(m, p->bias),
                    ek_data(m, p->mult), ek_data(m, p->shift), p->ratio ? ek_data(m, p->ratio) : NULL, ek_data(m, p->y)};
    if (p->pb) ek_parallel(m, p->N * p->G * p->pblocks, gemm_task, &r);
    else ek_parallel(m, p->N * p->O, task, &r);
    return EK_STATUS_OK;
}
