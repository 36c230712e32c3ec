/*
 * Integer pooling and reductions (compiler/integer_kernels.py): QAveragePool (int32 multiplier
 * and int8 shift indexed by the number of window positions averaged), QMaxPool (padding never wins),
 * and QReduceMean, which also runs QGlobalAveragePool (the writer gives axes 2..).
 * Zero points cancel only after subtracting them, so sums are of (x − zp); QReduceMean over
 * adjacent axes sums the raw values (row sums, vectorized) and subtracts R·zp once.
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
    if (!(p->mults = ek_operand(m, c, 0, 1, EK_DT_INT32, -1, e)) || !(p->shifts = ek_operand(m, c, 0, 2, EK_DT_INT8, -1, e)))
        return EK_STATUS_INVALID;
    if (p->kh * p->kw > 65536 || p->mults->count != p->kh * p->kw + 1 || p->shifts->count != p->kh * p->kw + 1)
        return ek_bad(e, c, "multipliers and shifts need kh·kw + 1 = %lld entries", (long long)(p->kh * p->kw + 1));
    return ek_check_shifts(p->shifts, c, e);
}

int ek_run_qaverage_pool(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const qpool_params *p = c->params;
    const int8_t *x = ek_data(m, p->x);
    const int32_t *mult = ek_data(m, p->mults);
    const int8_t *shift = ek_data(m, p->shifts);
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

/* One output of a max pool with bounds checks (the padded edges). */
static int8_t max_window(const qpool_params *p, const int8_t *in, int64_t oy, int64_t ox) {
    int best = -32768; /* the reference pads with int16 -32768, which casts to int8 0 */
    for (int64_t ky = 0; ky < p->kh; ky++) {
        int64_t iy = oy * p->sh - p->pt + ky * p->dh;
        if (iy < 0 || iy >= p->H) continue;
        for (int64_t kx = 0; kx < p->kw; kx++) {
            int64_t ix = ox * p->sw - p->pl + kx * p->dw;
            if (ix >= 0 && ix < p->W && in[iy * p->W + ix] > best) best = in[iy * p->W + ix];
        }
    }
    return (int8_t)(best == -32768 ? 0 : best);
}

/* Row by row: the edge columns through max_window, the interior columns (whole window inside
 * the row) as running maxima over the window's in-bounds rows and taps, no bounds checks;
 * with stride 1 the compiler vectorizes them. */
int ek_run_qmax_pool(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const qpool_params *p = c->params;
    const int8_t *x = ek_data(m, p->x);
    int8_t *y = ek_data(m, p->y);
    int64_t xlo, xhi;
    ek_interior(p->W, p->Wo, p->kw, p->sw, p->dw, p->pl, &xlo, &xhi);
    for (int64_t pl = 0; pl < p->N * p->C; pl++) {
        const int8_t *in = x + pl * p->H * p->W;
        for (int64_t oy = 0; oy < p->Ho; oy++) {
            int8_t *yr = y + (pl * p->Ho + oy) * p->Wo;
            for (int64_t ox = 0; ox < xlo; ox++) yr[ox] = max_window(p, in, oy, ox);
            for (int64_t ox = xhi; ox < p->Wo; ox++) yr[ox] = max_window(p, in, oy, ox);
            int first = 1;
            for (int64_t ky = 0; ky < p->kh; ky++) {
                int64_t iy = oy * p->sh - p->pt + ky * p->dh;
                if (iy < 0 || iy >= p->H) continue;
                for (int64_t kx = 0; kx < p->kw; kx++) {
                    const int8_t *r = in + iy * p->W + kx * p->dw - p->pl;
                    if (first) {
                        for (int64_t ox = xlo; ox < xhi; ox++) yr[ox] = r[ox * p->sw];
                        first = 0;
                    } else if (p->sw == 1) {
                        for (int64_t ox = xlo; ox < xhi; ox++) yr[ox] = r[ox] > yr[ox] ? r[ox] : yr[ox];
                    } else {
                        for (int64_t ox = xlo; ox < xhi; ox++) yr[ox] = r[ox * p->sw] > yr[ox] ? r[ox * p->sw] : yr[ox];
                    }
                }
            }
            if (first) /* no row of the window is inside: padding only */
                for (int64_t ox = xlo; ox < xhi; ox++) yr[ox] = 0;
        }
    }
    return EK_STATUS_OK;
}

typedef struct {
    const ek_tensor *x, *y;
    int64_t ostride[EK_MAX_RANK];
    int32_t zx, zy, m, s;
    int rows;                   /* the reduction is [outer, R, inner] -> [outer, inner] */
    int64_t outer, R, inner;
} qreduce_params;

/* Sees the reduction as x[outer, R, inner] -> y[outer, inner] when the reduced axes are adjacent
 * once size-1 axes are ignored (global pooling: R = H·W, inner = 1).  Returns 0 otherwise.
 * y's flat index is then o·inner + i for keepdims and squeezed outputs alike. */
static int reduce_as_rows(const ek_tensor *x, unsigned mask, int64_t *outer, int64_t *R, int64_t *inner) {
    int first = -1, last = -1;
    for (int d = 0; d < x->rank; d++)
        if ((mask >> d & 1) && x->dims[d] > 1) {
            if (first < 0) first = d;
            last = d;
        }
    *outer = 1, *R = 1, *inner = 1;
    for (int d = 0; d < x->rank; d++) {
        if (first >= 0 && d >= first && d <= last) {
            if (!(mask >> d & 1) && x->dims[d] > 1) return 0; /* a kept axis between reduced ones */
            *R *= x->dims[d];
        } else if (first >= 0 && d > last) {
            *inner *= x->dims[d];
        } else {
            *outer *= x->dims[d];
        }
    }
    return 1;
}

/* Σ x[i] over n int8 values: int32 partial sums (2^16 · 128 < 2^31) that the compiler vectorizes. */
static int64_t sum_i8(const int8_t *x, int64_t n) {
    int64_t total = 0;
    for (int64_t i0 = 0; i0 < n; i0 += 65536) {
        int64_t len = n - i0 < 65536 ? n - i0 : 65536;
        int32_t s = 0;
        for (int64_t i = 0; i < len; i++) s += x[i0 + i];
        total += s;
    }
    return total;
}

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
    /* the row path keeps column sums in int32: R · 256 must stay below 2^31 */
    p->rows = reduce_as_rows(p->x, mask, &p->outer, &p->R, &p->inner) && p->R < ((int64_t)1 << 23);
    return EK_STATUS_OK;
}

/* Σ_r (x[o, r, i] − zx) = Σ_r x[o, r, i] − R·zx, one requantization per output. */
static void reduce_rows(const qreduce_params *p, const int8_t *x, int8_t *y, int32_t *colsum) {
    const int64_t bias = -p->R * (int64_t)p->zx;
    for (int64_t o = 0; o < p->outer; o++) {
        const int8_t *xo = x + o * p->R * p->inner;
        int8_t *yo = y + o * p->inner;
        if (p->inner == 1) {
            yo[0] = ek_requantize(sum_i8(xo, p->R) + bias, p->m, p->s, p->zy, -128, 127);
            continue;
        }
        for (int64_t i = 0; i < p->inner; i++) colsum[i] = 0;
        for (int64_t r = 0; r < p->R; r++) {
            const int8_t *row = xo + r * p->inner;
            for (int64_t i = 0; i < p->inner; i++) colsum[i] += row[i];
        }
        for (int64_t i = 0; i < p->inner; i++) yo[i] = ek_requantize(colsum[i] + bias, p->m, p->s, p->zy, -128, 127);
    }
}

int ek_run_qreduce_mean(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const qreduce_params *p = c->params;
    const int8_t *x = ek_data(m, p->x);
    int8_t *y = ek_data(m, p->y);
    if (p->rows) {
        reduce_rows(p, x, y, (int32_t *)m->scratch);
        return EK_STATUS_OK;
    }
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
