/*
 * Float pooling and reductions: MaxPool / AveragePool (2-D, 1-D as height 1; ceil_mode shows
 * as an output one larger, whose windows are clipped), Reduce* (also GlobalAveragePool and
 * GlobalMaxPool, as reductions over axes 2..), ArgMax.
 */
#include <math.h>
#include <string.h>

#include "../ek_internal.h"

typedef struct {
    const ek_tensor *x, *y;
    int64_t N, C, H, W, Ho, Wo, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr;
    int mode, include_pad;
} fpool_params;

static int fits(int64_t in, int64_t pads, int64_t k, int64_t s, int64_t d, int64_t out) {
    int64_t num = in + pads - d * (k - 1) - 1;
    if (num < 0) return 0;
    return out == num / s + 1 || out == (num + s - 1) / s + 1;
}

int ek_prepare_pool(ek_model *m, ek_call *c, ek_err *e) {
    int rc = ek_check_arity(c, 1, 1, 1, e);
    if (rc) return rc;
    fpool_params *p = calloc(1, sizeof *p);
    if (!p) return ek_fail(e, EK_STATUS_NOMEM, "out of memory");
    c->params = p;
    int64_t xd[4], yd[4], k[2], s[2], d[2] = {1, 1}, pads[4], v;
    if (!(p->x = ek_operand(m, c, 0, 0, EK_DT_FLOAT32, -1, e)) || !(p->y = ek_operand(m, c, 1, 0, EK_DT_FLOAT32, -1, e)))
        return EK_STATUS_INVALID;
    if (!ek_view4(p->x, xd) || !ek_view4(p->y, yd) || p->x->rank != p->y->rank) return ek_bad(e, c, "needs 3-D or 4-D tensors");
    if ((rc = ek_attr_int(c, EK_ATTR_MODE, 1, 0, EK_POOL_MAX, EK_POOL_AVG, &v, e))) return rc;
    p->mode = (int)v;
    if ((rc = ek_attr_int(c, EK_ATTR_COUNT_INCLUDE_PAD, 0, 0, 0, 1, &v, e))) return rc;
    p->include_pad = (int)v;
    if ((rc = ek_attr_ints(c, EK_ATTR_KERNEL, 2, 1, 1 << 16, k, e)) || (rc = ek_attr_ints(c, EK_ATTR_STRIDES, 2, 1, 1 << 16, s, e)) ||
        (rc = ek_attr_ints(c, EK_ATTR_PADS, 4, 0, 1 << 16, pads, e)))
        return rc;
    if (ek_attr_find(c, EK_ATTR_DILATIONS) && (rc = ek_attr_ints(c, EK_ATTR_DILATIONS, 2, 1, 1 << 16, d, e))) return rc;
    p->N = xd[0]; p->C = xd[1]; p->H = xd[2]; p->W = xd[3]; p->Ho = yd[2]; p->Wo = yd[3];
    p->kh = k[0]; p->kw = k[1]; p->sh = s[0]; p->sw = s[1]; p->dh = d[0]; p->dw = d[1];
    p->pt = pads[0]; p->pl = pads[1]; p->pb = pads[2]; p->pr = pads[3];
    if (yd[0] != p->N || yd[1] != p->C || !fits(p->H, pads[0] + pads[2], p->kh, p->sh, p->dh, p->Ho) ||
        !fits(p->W, pads[1] + pads[3], p->kw, p->sw, p->dw, p->Wo))
        return ek_bad(e, c, "output '%s' does not have the pooled shape", p->y->name);
    return EK_STATUS_OK;
}

int ek_run_pool(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const fpool_params *p = c->params;
    const float *x = ek_data(m, p->x);
    float *y = ek_data(m, p->y);
    for (int64_t pl = 0; pl < p->N * p->C; pl++) {
        const float *in = x + pl * p->H * p->W;
        for (int64_t oy = 0; oy < p->Ho; oy++)
            for (int64_t ox = 0; ox < p->Wo; ox++) {
                float best = -INFINITY;
                double sum = 0.0;
                int64_t count = 0, padded = 0;
                for (int64_t ky = 0; ky < p->kh; ky++) {
                    int64_t iy = oy * p->sh - p->pt + ky * p->dh;
                    int in_y = iy >= 0 && iy < p->H, pad_y = iy >= -p->pt && iy < p->H + p->pb;
                    for (int64_t kx = 0; kx < p->kw; kx++) {
                        int64_t ix = ox * p->sw - p->pl + kx * p->dw;
                        if (pad_y && ix >= -p->pl && ix < p->W + p->pr) padded++;
                        if (!in_y || ix < 0 || ix >= p->W) continue;
                        float v = in[iy * p->W + ix];
                        if (v > best || v != v) best = v;
                        sum += v;
                        count++;
                    }
                }
                float out;
                if (p->mode == EK_POOL_MAX) out = best;
                else out = (float)(sum / (double)((p->include_pad ? padded : count) ? (p->include_pad ? padded : count) : 1));
                y[(pl * p->Ho + oy) * p->Wo + ox] = out;
            }
    }
    return EK_STATUS_OK;
}

/* -- Reduce ------------------------------------------------------------------------------- */
typedef struct {
    const ek_tensor *x, *y;
    int64_t ostride[EK_MAX_RANK];
    int fn;
    int64_t per_output;
} reduce_params;

int ek_prepare_reduce(ek_model *m, ek_call *c, ek_err *e) {
    int rc = ek_check_arity(c, 1, 1, 1, e);
    if (rc) return rc;
    reduce_params *p = calloc(1, sizeof *p);
    if (!p) return ek_fail(e, EK_STATUS_NOMEM, "out of memory");
    c->params = p;
    if (!(p->x = ek_operand(m, c, 0, 0, EK_DT_FLOAT32, -1, e)) || !(p->y = ek_operand(m, c, 1, 0, EK_DT_FLOAT32, -1, e)))
        return EK_STATUS_INVALID;
    int64_t fn;
    unsigned mask;
    if ((rc = ek_attr_int(c, EK_ATTR_FUNC, 1, 0, EK_REDUCE_MEAN, EK_REDUCE_L2, &fn, e)) ||
        (rc = ek_axes_mask(c, p->x->rank, &mask, e)))
        return rc;
    p->fn = (int)fn;
    if (!ek_reduce_strides(p->x, p->y, mask, p->ostride)) return ek_bad(e, c, "output shape does not fit the reduction");
    p->per_output = p->y->count ? p->x->count / p->y->count : 0;
    c->scratch = ek_align64((size_t)p->y->count * 8);
    return EK_STATUS_OK;
}

int ek_run_reduce(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const reduce_params *p = c->params;
    const float *x = ek_data(m, p->x);
    float *y = ek_data(m, p->y);
    double *acc = (double *)m->scratch;
    double init = p->fn == EK_REDUCE_MAX ? -INFINITY : p->fn == EK_REDUCE_MIN ? INFINITY : 0.0;
    for (int64_t i = 0; i < p->y->count; i++) acc[i] = init;
    int64_t idx[EK_MAX_RANK] = {0}, o = 0;
    for (int64_t i = 0; i < p->x->count; i++) {
        double v = x[i];
        switch (p->fn) {
        case EK_REDUCE_MAX: if (v > acc[o]) acc[o] = v; break;
        case EK_REDUCE_MIN: if (v < acc[o]) acc[o] = v; break;
        case EK_REDUCE_L2: acc[o] += v * v; break;
        default: acc[o] += v; break;
        }
        for (int d = p->x->rank - 1; d >= 0; d--) {
            o += p->ostride[d];
            if (++idx[d] < p->x->dims[d]) break;
            o -= p->ostride[d] * p->x->dims[d];
            idx[d] = 0;
        }
    }
    for (int64_t i = 0; i < p->y->count; i++) {
        double v = acc[i];
        if (p->fn == EK_REDUCE_MEAN) v /= (double)(p->per_output ? p->per_output : 1);
        if (p->fn == EK_REDUCE_L2) v = sqrt(v);
        y[i] = (float)v;
    }
    return EK_STATUS_OK;
}

/* -- ArgMax ------------------------------------------------------------------------------- */
typedef struct {
    const ek_tensor *x, *y;
    int64_t outer, D, inner;
    int last;
} argmax_params;

int ek_prepare_argmax(ek_model *m, ek_call *c, ek_err *e) {
    int rc = ek_check_arity(c, 1, 1, 1, e);
    if (rc) return rc;
    argmax_params *p = calloc(1, sizeof *p);
    if (!p) return ek_fail(e, EK_STATUS_NOMEM, "out of memory");
    c->params = p;
    if (!(p->x = ek_operand(m, c, 0, 0, EK_DT_FLOAT32, -1, e)) || !(p->y = ek_operand(m, c, 1, 0, EK_DT_INT64, -1, e)))
        return EK_STATUS_INVALID;
    int64_t axis, last;
    if (p->x->rank < 1) return ek_bad(e, c, "argmax of a scalar");
    if ((rc = ek_attr_int(c, EK_ATTR_AXIS, 1, 0, 0, p->x->rank - 1, &axis, e)) ||
        (rc = ek_attr_int(c, EK_ATTR_SELECT_LAST, 0, 0, 0, 1, &last, e)))
        return rc;
    p->last = (int)last;
    p->outer = p->inner = 1;
    for (int d = 0; d < p->x->rank; d++) {
        if (d < axis) p->outer *= p->x->dims[d];
        if (d > axis) p->inner *= p->x->dims[d];
    }
    p->D = p->x->dims[axis];
    if (p->D < 1 || p->y->count != p->outer * p->inner) return ek_bad(e, c, "output size does not fit");
    return EK_STATUS_OK;
}

int ek_run_argmax(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const argmax_params *p = c->params;
    const float *x = ek_data(m, p->x);
    int64_t *y = ek_data(m, p->y);
    for (int64_t o = 0; o < p->outer; o++)
        for (int64_t in = 0; in < p->inner; in++) {
            const float *xr = x + o * p->D * p->inner + in;
            int64_t best = 0;
            for (int64_t i = 1; i < p->D; i++) {
                float v = xr[i * p->inner], b = xr[best * p->inner];
                if (v > b || (p->last && v == b)) best = i;
            }
            y[o * p->inner + in] = best;
        }
    return EK_STATUS_OK;
}
