/*
 * Integer pooling and reductions (compiler/integer_kernels.py): QAveragePool (multiplier and
 * shift indexed by the number of window positions averaged), QMaxPool (padding never wins),
 * and QReduceMean, which also runs QGlobalAveragePool (the writer gives axes 2..).
 * Zero points cancel only after subtracting them, so sums are of (x − zp).
 */
#include <string.h>

#include "../ek_internal.h"
#include "ek_requant.h"

typedef struct {
    const ek_tensor *x, *mults, *shifts, *y;
    int64_t N, C, H, W, Ho, Wo, kh, kw, sh, sw, dh, dw, pt, pl;
    int include_pad;
    int32_t zx, zy;
} qpool_params;

static int pool_geometry(ek_model *m, ek_call *c, qpool_params *p, int dilations, ek_err *e) {
    int64_t k[2], s[2], d[2] = {1, 1}, pads[4];
    int rc;
    if (!(p->x = ek_operand(m, c, 0, 0, EK_DT_INT8, 4, e)) || !(p->y = ek_operand(m, c, 1, 0, EK_DT_INT8, 4, e)))
        return EK_STATUS_INVALID;
    if ((rc = ek_attr_ints(c, EK_ATTR_KERNEL, 2, 1, 1 << 16, k, e)) ||
        (rc = ek_attr_ints(c, EK_ATTR_STRIDES, 2, 1, 1 << 16, s, e)) ||
        (rc = ek_attr_ints(c, EK_ATTR_PADS, 4, 0, 1 << 16, pads, e)))
        return rc;
    if (dilations && ek_attr_find(c, EK_ATTR_DILATIONS) && (rc = ek_attr_ints(c, EK_ATTR_DILATIONS, 2, 1, 1 << 16, d, e)))
        return rc;
    p->N = p->x->dims[0]; p->C = p->x->dims[1]; p->H = p->x->dims[2]; p->W = p->x->dims[3];
    p->kh = k[0]; p->kw = k[1]; p->sh = s[0]; p->sw = s[1]; p->dh = d[0]; p->dw = d[1];
    p->pt = pads[0]; p->pl = pads[1];
    int64_t nh = p->H + pads[0] + pads[2] - p->dh * (p->kh - 1) - 1, nw = p->W + pads[1] + pads[3] - p->dw * (p->kw - 1) - 1;
    p->Ho = nh < 0 ? -1 : nh / p->sh + 1;
    p->Wo = nw < 0 ? -1 : nw / p->sw + 1;
    const int64_t *yd = p->y->dims;
    if (yd[0] != p->N || yd[1] != p->C || yd[2] != p->Ho || yd[3] != p->Wo)
        return ek_bad(e, c, "output '%s' does not have the pooled shape", p->y->name);
    return EK_STATUS_OK;
}

int ek_prepare_qaverage_pool(ek_model *m, ek_call *c, ek_err *e) {
    int rc = ek_check_arity(c, 3, 3, 1, e);
    if (rc) return rc;
    qpool_params *p = calloc(1, sizeof *p);
    if (!p) return ek_fail(e, EK_STATUS_NOMEM, "out of memory");
    c->params = p;
    if ((rc = pool_geometry(m, c, p, 0, e))) return rc;
    int64_t v;
    if ((rc = ek_attr_int(c, EK_ATTR_COUNT_INCLUDE_PAD, 0, 0, 0, 1, &v, e))) return rc;
    p->include_pad = (int)v;
    if ((rc = ek_attr_int(c, EK_ATTR_INPUT_ZP, 1, 0, -128, 127, &v, e))) return rc;
    p->zx = (int32_t)v;
    if ((rc = ek_attr_int(c, EK_ATTR_OUTPUT_ZP, 1, 0, -128, 127, &v, e))) return rc;
    p->zy = (int32_t)v;
    if (!(p->mults = ek_operand(m, c, 0, 1, EK_DT_INT32, -1, e)) || !(p->shifts = ek_operand(m, c, 0, 2, EK_DT_INT32, -1, e)))
        return EK_STATUS_INVALID;
    if (p->kh * p->kw > 65536 || p->mults->count != p->kh * p->kw + 1 || p->shifts->count != p->kh * p->kw + 1)
        return ek_bad(e, c, "multipliers and shifts need kh·kw + 1 = %lld entries", (long long)(p->kh * p->kw + 1));
    return ek_check_shifts(p->shifts, c, e);
}

int ek_run_qaverage_pool(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const qpool_params *p = c->params;
    const int8_t *x = ek_data(m, p->x);
    const int32_t *mult = ek_data(m, p->mults), *shift = ek_data(m, p->shifts);
    int8_t *y = ek_data(m, p->y);
    for (int64_t pl = 0; pl < p->N * p->C; pl++) {
        const int8_t *in = x + pl * p->H * p->W;
        for (int64_t oy = 0; oy < p->Ho; oy++)
            for (int64_t ox = 0; ox < p->Wo; ox++) {
                int64_t acc = 0, count = 0;
                for (int64_t ky = 0; ky < p->kh; ky++) {
                    int64_t iy = oy * p->sh - p->pt + ky;
                    if (iy < 0 || iy >= p->H) continue;
                    for (int64_t kx = 0; kx < p->kw; kx++) {
                        int64_t ix = ox * p->sw - p->pl + kx;
                        if (ix < 0 || ix >= p->W) continue;
                        acc += (int64_t)in[iy * p->W + ix] - p->zx;
                        count++;
                    }
                }
                if (p->include_pad) count = p->kh * p->kw;
                y[(pl * p->Ho + oy) * p->Wo + ox] = ek_requantize(acc, mult[count], shift[count], p->zy, -128, 127);
            }
    }
    return EK_STATUS_OK;
}

int ek_prepare_qmax_pool(ek_model *m, ek_call *c, ek_err *e) {
    int rc = ek_check_arity(c, 1, 1, 1, e);
    if (rc) return rc;
    qpool_params *p = calloc(1, sizeof *p);
    if (!p) return ek_fail(e, EK_STATUS_NOMEM, "out of memory");
    c->params = p;
    return pool_geometry(m, c, p, 1, e);
}

int ek_run_qmax_pool(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const qpool_params *p = c->params;
    const int8_t *x = ek_data(m, p->x);
    int8_t *y = ek_data(m, p->y);
    for (int64_t pl = 0; pl < p->N * p->C; pl++) {
        const int8_t *in = x + pl * p->H * p->W;
        for (int64_t oy = 0; oy < p->Ho; oy++)
            for (int64_t ox = 0; ox < p->Wo; ox++) {
                int best = -32768; /* the reference pads with int16 -32768, which casts to int8 0 */
                for (int64_t ky = 0; ky < p->kh; ky++) {
                    int64_t iy = oy * p->sh - p->pt + ky * p->dh;
                    if (iy < 0 || iy >= p->H) continue;
                    for (int64_t kx = 0; kx < p->kw; kx++) {
                        int64_t ix = ox * p->sw - p->pl + kx * p->dw;
                        if (ix >= 0 && ix < p->W && in[iy * p->W + ix] > best) best = in[iy * p->W + ix];
                    }
                }
                y[(pl * p->Ho + oy) * p->Wo + ox] = (int8_t)(best == -32768 ? 0 : best);
            }
    }
    return EK_STATUS_OK;
}

typedef struct {
    const ek_tensor *x, *y;
    int64_t ostride[EK_MAX_RANK];
    int32_t zx, zy, m, s;
} qreduce_params;

int ek_prepare_qreduce_mean(ek_model *m, ek_call *c, ek_err *e) {
    int rc = ek_check_arity(c, 1, 1, 1, e);
    if (rc) return rc;
    qreduce_params *p = calloc(1, sizeof *p);
    if (!p) return ek_fail(e, EK_STATUS_NOMEM, "out of memory");
    c->params = p;
    if (!(p->x = ek_operand(m, c, 0, 0, EK_DT_INT8, -1, e)) || !(p->y = ek_operand(m, c, 1, 0, EK_DT_INT8, -1, e)))
        return EK_STATUS_INVALID;
    unsigned mask;
    if ((rc = ek_axes_mask(c, p->x->rank, &mask, e))) return rc;
    if (!ek_reduce_strides(p->x, p->y, mask, p->ostride)) return ek_bad(e, c, "output shape does not fit the reduction");
    int64_t v;
    if ((rc = ek_attr_int(c, EK_ATTR_INPUT_ZP, 1, 0, -128, 127, &v, e))) return rc;
    p->zx = (int32_t)v;
    if ((rc = ek_attr_int(c, EK_ATTR_OUTPUT_ZP, 1, 0, -128, 127, &v, e))) return rc;
    p->zy = (int32_t)v;
    if ((rc = ek_attr_int(c, EK_ATTR_MULTIPLIER, 1, 0, 0, INT32_MAX, &v, e))) return rc;
    p->m = (int32_t)v;
    if ((rc = ek_attr_int(c, EK_ATTR_SHIFT, 1, 0, -30, 31, &v, e))) return rc;
    p->s = (int32_t)v;
    c->scratch = ek_align64((size_t)p->y->count * 8);
    return EK_STATUS_OK;
}

int ek_run_qreduce_mean(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const qreduce_params *p = c->params;
    const int8_t *x = ek_data(m, p->x);
    int8_t *y = ek_data(m, p->y);
    int64_t *acc = (int64_t *)m->scratch;
    memset(acc, 0, (size_t)p->y->count * 8);
    int rank = p->x->rank;
    int64_t idx[EK_MAX_RANK] = {0}, o = 0;
    for (int64_t i = 0; i < p->x->count; i++) {
        acc[o] += (int64_t)x[i] - p->zx;
        for (int d = rank - 1; d >= 0; d--) {
            o += p->ostride[d];
            if (++idx[d] < p->x->dims[d]) break;
            o -= p->ostride[d] * p->x->dims[d];
            idx[d] = 0;
        }
    }
    for (int64_t i = 0; i < p->y->count; i++) y[i] = ek_requantize(acc[i], p->m, p->s, p->zy, -128, 127);
    return EK_STATUS_OK;
}
