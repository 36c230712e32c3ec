/*
 * Float Conv (and FusedConv with its epilogue) and ConvTranspose, NCHW; 1-D convolutions run
 * as 2-D ones of height 1.
 *
 * Conv: y[o, p] = Σ_k W[o, k]·cols[k, p] over the im2col matrix in its natural NCHW
 * orientation (k rows, pixels contiguous): the float GEMM of ek_gemm.h (NEON or AVX2+FMA
 * register tiles, or the portable axpy loop), C = W · cols with pixels along the vectors.  A
 * task is one block of EK_BLOCK_ROWS pixels and EK_BLOCK_COLS output channels of one group and
 * image.  A 1x1, stride-1, unpadded convolution reads the input as its own
 * column matrix.  Depthwise convolutions take a direct loop.
 */
#include <string.h>

#include "../ek_internal.h"
#include "ek_activation.h"

typedef struct {
    const ek_tensor *x, *w, *bias, *res, *y;
    int64_t N, C, H, W, O, Ho, Wo, P, kh, kw, sh, sw, dh, dw, pt, pl, G, Cg, Og, Kg;
    int64_t pb, ocb, pblocks, oblocks;
    int direct, depthwise;
    ek_epilogue ep;
} fconv_params;

typedef struct {
    const fconv_params *p;
    const float *x, *w, *bias, *res;
    float *y;
    ek_sgemm_fn gemm; /* the float GEMM of the model's ISA (ek_gemm.h) */
} fconv_run;

static int prepare_geometry(ek_model *m, ek_call *c, fconv_params *p, int transposed, ek_err *e) {
    int64_t xd[4], wd[4], s[2], d[2], pads[4];
    int rc;
    if (!(p->x = ek_operand(m, c, 0, 0, EK_DT_FLOAT32, -1, e)) || !(p->w = ek_operand(m, c, 0, 1, EK_DT_FLOAT32, -1, e)) ||
        !(p->y = ek_operand(m, c, 1, 0, EK_DT_FLOAT32, -1, e)))
        return EK_STATUS_INVALID;
    p->bias = ek_input(m, c, 2);
    if (!ek_view4(p->x, xd) || !ek_view4(p->w, wd) || p->y->rank != p->x->rank || p->w->rank != p->x->rank)
        return ek_bad(e, c, "input, weight and output must all be 3-D or all 4-D");
    if ((rc = ek_attr_ints(c, EK_ATTR_STRIDES, 2, 1, 1 << 16, s, e)) ||
        (rc = ek_attr_ints(c, EK_ATTR_DILATIONS, 2, 1, 1 << 16, d, e)) ||
        (rc = ek_attr_ints(c, EK_ATTR_PADS, 4, 0, 1 << 16, pads, e)) ||
        (rc = ek_attr_int(c, EK_ATTR_GROUP, 0, 1, 1, 1 << 24, &p->G, e)))
        return rc;
    p->N = xd[0]; p->C = xd[1]; p->H = xd[2]; p->W = xd[3];
    p->kh = wd[2]; p->kw = wd[3];
    p->sh = s[0]; p->sw = s[1]; p->dh = d[0]; p->dw = d[1]; p->pt = pads[0]; p->pl = pads[1];
    if (p->kh < 1 || p->kw < 1 || p->C % p->G) return ek_bad(e, c, "bad kernel or group");
    if (!transposed) {
        p->O = wd[0]; p->Cg = wd[1];
        if (p->C != p->G * p->Cg || p->O % p->G) return ek_bad(e, c, "weight does not fit the input channels and groups");
        p->Og = p->O / p->G;
        int64_t nh = p->H + pads[0] + pads[2] - p->dh * (p->kh - 1) - 1, nw = p->W + pads[1] + pads[3] - p->dw * (p->kw - 1) - 1;
        p->Ho = nh < 0 ? -1 : nh / p->sh + 1;
        p->Wo = nw < 0 ? -1 : nw / p->sw + 1;
    } else {
        int64_t op[2] = {0, 0};
        if (ek_attr_find(c, EK_ATTR_OUTPUT_PADDING) && (rc = ek_attr_ints(c, EK_ATTR_OUTPUT_PADDING, 2, 0, 1 << 16, op, e)))
            return rc;
        if (wd[0] != p->C) return ek_bad(e, c, "weight does not fit the input channels");
        p->Cg = p->C / p->G;
        p->Og = wd[1];
        p->O = p->Og * p->G;
        p->Ho = p->sh * (p->H - 1) + op[0] + p->dh * (p->kh - 1) + 1 - pads[0] - pads[2];
        p->Wo = p->sw * (p->W - 1) + op[1] + p->dw * (p->kw - 1) + 1 - pads[1] - pads[3];
    }
    int64_t yd[4];
    ek_view4(p->y, yd);
    if (yd[0] != p->N || yd[1] != p->O || yd[2] != p->Ho || yd[3] != p->Wo)
        return ek_bad(e, c, "output '%s' does not have the convolution's shape", p->y->name);
    if (p->bias && (p->bias->dtype != EK_DT_FLOAT32 || p->bias->count != p->O))
        return ek_bad(e, c, "bias must be float32 with %lld values", (long long)p->O);
    p->P = p->Ho * p->Wo;
    p->Kg = p->Cg * p->kh * p->kw;
    return EK_STATUS_OK;
}

int ek_prepare_conv(ek_model *m, ek_call *c, ek_err *e) {
    int rc = ek_check_arity(c, 2, 4, 1, e);
    if (rc) return rc;
    fconv_params *p = calloc(1, sizeof *p);
    if (!p) return ek_fail(e, EK_STATUS_NOMEM, "out of memory");
    c->params = p;
    if ((rc = prepare_geometry(m, c, p, 0, e))) return rc;
    p->res = ek_input(m, c, 3);
    if (p->res && (p->res->dtype != EK_DT_FLOAT32 || p->res->count != p->y->count))
        return ek_bad(e, c, "residual must be float32 shaped like the output");
    if ((rc = ek_epilogue_parse(c, p->res != NULL, &p->ep, e))) return rc;
    p->direct = p->kh == 1 && p->kw == 1 && p->sh == 1 && p->sw == 1 && p->pt == 0 && p->pl == 0 && p->Ho == p->H && p->Wo == p->W;
    p->depthwise = p->Cg == 1 && p->Og == 1;
    p->pb = p->P < EK_BLOCK_ROWS ? (p->P > 0 ? p->P : 1) : EK_BLOCK_ROWS;
    p->ocb = p->Og < EK_BLOCK_COLS ? p->Og : EK_BLOCK_COLS;
    p->pblocks = (p->P + p->pb - 1) / p->pb;
    p->oblocks = (p->Og + p->ocb - 1) / p->ocb;
    c->scratch = p->depthwise ? 0 : ek_align64((size_t)(p->Kg * p->pb) * 4);
    return EK_STATUS_OK;
}

static void im2col(const fconv_params *p, const float *x, int64_t n, int64_t g, int64_t p0, int64_t rows, float *cols) {
    /* window origins of the block's pixels, computed once (no division in the copy loops) */
    int64_t iy0[EK_BLOCK_ROWS], ix0[EK_BLOCK_ROWS];
    for (int64_t r = 0; r < rows; r++) {
        iy0[r] = (p0 + r) / p->Wo * p->sh - p->pt;
        ix0[r] = (p0 + r) % p->Wo * p->sw - p->pl;
    }
    int64_t k = 0;
    for (int64_t ch = 0; ch < p->Cg; ch++) {
        const float *plane = x + (n * p->C + g * p->Cg + ch) * p->H * p->W;
        for (int64_t ky = 0; ky < p->kh; ky++)
            for (int64_t kx = 0; kx < p->kw; kx++, k++) {
                float *dst = cols + k * rows;
                for (int64_t r = 0; r < rows; r++) {
                    int64_t iy = iy0[r] + ky * p->dh, ix = ix0[r] + kx * p->dw;
                    dst[r] = iy >= 0 && iy < p->H && ix >= 0 && ix < p->W ? plane[iy * p->W + ix] : 0.0f;
                }
            }
    }
}

static void finish(const fconv_run *r, int64_t n, int64_t og, int64_t p0, float *v, int64_t rows) {
    const fconv_params *p = r->p;
    if (r->bias)
        for (int64_t i = 0; i < rows; i++) v[i] += r->bias[og];
    int64_t at = (n * p->O + og) * p->P + p0;
    ek_epilogue_apply(&p->ep, v, rows, r->res ? r->res + at : NULL);
    memcpy(r->y + at, v, (size_t)rows * sizeof(float));
}

static void gemm_task(void *ctx, int64_t t, uint8_t *scratch) {
    const fconv_run *r = ctx;
    const fconv_params *p = r->p;
    int64_t ob = t % p->oblocks;
    t /= p->oblocks;
    int64_t pbk = t % p->pblocks;
    t /= p->pblocks;
    int64_t g = t % p->G, n = t / p->G;
    int64_t p0 = pbk * p->pb, rows = p->P - p0 < p->pb ? p->P - p0 : p->pb;
    int64_t o0 = g * p->Og + ob * p->ocb, oend = g * p->Og + (ob * p->ocb + p->ocb < p->Og ? ob * p->ocb + p->ocb : p->Og);
    const float *cols;
    int64_t ld;
    if (p->direct) {
        cols = r->x + (n * p->C + g * p->Cg) * p->P + p0;
        ld = p->P;
    } else {
        im2col(p, r->x, n, g, p0, rows, (float *)scratch);
        cols = (const float *)scratch;
        ld = rows;
    }
    /* [oend - o0 channels] x [rows pixels] = W[o0:oend, :] · cols (K x rows, row stride ld) */
    float acc[EK_BLOCK_COLS][EK_BLOCK_ROWS];
    r->gemm((int)(oend - o0), (int)rows, (int)p->Kg, r->w + o0 * p->Kg, (int)p->Kg, cols, (int)ld, &acc[0][0],
            EK_BLOCK_ROWS);
    for (int64_t o = o0; o < oend; o++) finish(r, n, o, p0, acc[o - o0], rows);
}

/* One output row at a time, accumulated in place in the output: for each tap, one pass over
 * the row's interior pixels (vectorized for stride 1), bounds checks only on the border. */
static void depthwise_task(void *ctx, int64_t t, uint8_t *scratch) {
    (void)scratch;
    const fconv_run *r = ctx;
    const fconv_params *p = r->p;
    int64_t ch = t % p->C, n = t / p->C, sw = p->sw, xlo, xhi;
    const float *plane = r->x + t * p->H * p->W, *w = r->w + ch * p->kh * p->kw;
    float *out = r->y + t * p->P;
    const float b = r->bias ? r->bias[ch] : 0.0f;
    ek_interior(p->W, p->Wo, p->kw, p->sw, p->dw, p->pl, &xlo, &xhi);
    for (int64_t oy = 0; oy < p->Ho; oy++) {
        float *restrict acc = out + oy * p->Wo;
        for (int64_t ox = 0; ox < p->Wo; ox++) acc[ox] = b;
        for (int64_t ky = 0; ky < p->kh; ky++) {
            int64_t iy = oy * p->sh - p->pt + ky * p->dh;
            if (iy < 0 || iy >= p->H) continue;
            const float *row = plane + iy * p->W;
            for (int64_t kx = 0; kx < p->kw; kx++) {
                const float wk = w[ky * p->kw + kx];
                const int64_t off = kx * p->dw - p->pl;
                for (int64_t ox = 0; ox < xlo; ox++) {
                    int64_t ix = ox * sw + off;
                    if (ix >= 0 && ix < p->W) acc[ox] += row[ix] * wk;
                }
                const float *restrict src = row + off;
                if (sw == 1)
                    for (int64_t ox = xlo; ox < xhi; ox++) acc[ox] += src[ox] * wk;
                else
                    for (int64_t ox = xlo; ox < xhi; ox++) acc[ox] += src[ox * sw] * wk;
                for (int64_t ox = xhi; ox < p->Wo; ox++) {
                    int64_t ix = ox * sw + off;
                    if (ix >= 0 && ix < p->W) acc[ox] += row[ix] * wk;
                }
            }
        }
    }
    ek_epilogue_apply(&p->ep, out, p->P, r->res ? r->res + (n * p->O + ch) * p->P : NULL);
}

int ek_run_conv(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const fconv_params *p = c->params;
    if (p->y->count == 0) return EK_STATUS_OK;
    fconv_run r = {p, ek_data(m, p->x), ek_data(m, p->w), p->bias ? ek_data(m, p->bias) : NULL,
                   p->res ? ek_data(m, p->res) : NULL, ek_data(m, p->y), ek_select_sgemm(ek_cpu_features(), m->isa)};
    if (p->depthwise) ek_parallel(m, p->N * p->C, depthwise_task, &r);
    else ek_parallel(m, p->N * p->G * p->pblocks * p->oblocks, gemm_task, &r);
    return EK_STATUS_OK;
}

/* -- ConvTranspose: scatter each input pixel into the output plane of one (n, o) task ----- */
int ek_prepare_conv_transpose(ek_model *m, ek_call *c, ek_err *e) {
    int rc = ek_check_arity(c, 2, 3, 1, e);
    if (rc) return rc;
    fconv_params *p = calloc(1, sizeof *p);
    if (!p) return ek_fail(e, EK_STATUS_NOMEM, "out of memory");
    c->params = p;
    return prepare_geometry(m, c, p, 1, e);
}

static void transpose_task(void *ctx, int64_t t, uint8_t *scratch) {
    (void)scratch;
    const fconv_run *r = ctx;
    const fconv_params *p = r->p;
    int64_t o = t % p->O, n = t / p->O, g = o / p->Og, oo = o % p->Og;
    float *y = r->y + t * p->P;
    float b = r->bias ? r->bias[o] : 0.0f;
    for (int64_t k = 0; k < p->P; k++) y[k] = b;
    for (int64_t ci = 0; ci < p->Cg; ci++) {
        int64_t ch = g * p->Cg + ci;
        const float *x = r->x + (n * p->C + ch) * p->H * p->W, *w = r->w + (ch * p->Og + oo) * p->kh * p->kw;
        for (int64_t i = 0; i < p->H; i++)
            for (int64_t j = 0; j < p->W; j++) {
                float v = x[i * p->W + j];
                for (int64_t ky = 0; ky < p->kh; ky++) {
                    int64_t oy = i * p->sh - p->pt + ky * p->dh;
                    if (oy < 0 || oy >= p->Ho) continue;
                    for (int64_t kx = 0; kx < p->kw; kx++) {
                        int64_t ox = j * p->sw - p->pl + kx * p->dw;
                        if (ox >= 0 && ox < p->Wo) y[oy * p->Wo + ox] += v * w[ky * p->kw + kx];
                    }
                }
            }
    }
}

int ek_run_conv_transpose(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const fconv_params *p = c->params;
    if (p->y->count == 0) return EK_STATUS_OK;
    fconv_run r = {p, ek_data(m, p->x), ek_data(m, p->w), p->bias ? ek_data(m, p->bias) : NULL, NULL, ek_data(m, p->y),
                   NULL};
    ek_parallel(m, p->N * p->O, transpose_task, &r);
    return EK_STATUS_OK;
}
