/*
 * QResizeBilinear (compiler/integer_kernels.py): bilinear resize of the last two axes of int8
 * data by per-axis tap tables, TFLite's integer RESIZE_BILINEAR arithmetic.
 *
 * taps_h [Ho, 3] and taps_w [Wo, 3] hold (i0, i1, f): output row i reads input rows i0 and i1
 * with weights 1024 − f and f (10 fraction bits), likewise for columns, and
 *
 *     acc = Σ x[i_a, j_b] · wy_a · wx_b          y = sign(acc) · ((|acc| + 2^19) >> 20)
 *
 * on the raw int8 values (the weights sum to 2^20, so input and output share their
 * parameters).  The sum is computed in two passes, columns then rows:
 *
 *     h_r[j] = x[r, j0] · (1024 − f_w) + x[r, j1] · f_w       for the input rows r = i0, i1
 *     acc    = h_i0[j] · (1024 − f_h) + h_i1[j] · f_h          (|h| <= 2^17, |acc| <= 2^27)
 *
 * which is the same integer by distributivity, exact in int32.  The column pass gathers (scalar);
 * the row pass and the rounding run over contiguous rows and are written branch-free, so gcc
 * vectorises them (NEON on aarch64, SSE2 on x86_64).  One task is a band of output rows of one
 * plane: it keeps the last two column-interpolated input rows in its scratch, so an upscale
 * interpolates each input row about once per band instead of once per output row.
 *
 * A vertical downscale (H_out < H) shares no input rows between output rows, and gathering two
 * rows per output row costs more than blending them whole: there the passes swap, rows first
 * (v[j] = x[i0, j] · (1024 − f_h) + x[i1, j] · f_h over the W input columns, vectorised), then
 * the column gather with the rounding.  Both orders give the same integer acc.
 */
#include "../ek_internal.h"

#define TAP_ONE 1024
#define ROUND_BIT (1 << 19)
#define OUT_SHIFT 20

#define BAND_ROWS 16 /* output rows per task */

typedef struct {
    const ek_tensor *x, *taps_h, *taps_w, *y;
    int64_t planes, H, W, Ho, Wo, bands;
    int rows_first; /* H_out < H: blend input rows first, then gather columns */
    int32_t *col0, *col1, *colf; /* taps_w split into contiguous columns (same allocation as the params) */
} resize_bilinear_params;

static int check_taps(const ek_call *c, const ek_tensor *t, int64_t n_out, int64_t n_in, const char *axis, ek_err *e) {
    if (!t->cdata || t->count != n_out * 3)
        return ek_bad(e, c, "taps_%s must be a constant of %lld x 3 entries", axis, (long long)n_out);
    const int32_t *v = (const int32_t *)t->cdata;
    for (int64_t i = 0; i < n_out; i++) {
        int32_t i0 = v[3 * i], i1 = v[3 * i + 1], f = v[3 * i + 2];
        if (i0 < 0 || i0 >= n_in || i1 < 0 || i1 >= n_in)
            return ek_bad(e, c, "taps_%s row %lld reads %d, %d outside [0, %lld)", axis, (long long)i, i0, i1,
                          (long long)n_in);
        if (f < 0 || f > TAP_ONE) return ek_bad(e, c, "taps_%s row %lld fraction %d outside [0, 1024]", axis, (long long)i, f);
    }
    return EK_STATUS_OK;
}

int ek_prepare_qresize_bilinear(ek_model *m, ek_call *c, ek_err *e) {
    int rc = ek_check_arity(c, 3, 3, 1, e);
    if (rc) return rc;
    const ek_tensor *y = ek_operand(m, c, 1, 0, EK_DT_INT8, -1, e);
    if (!y) return EK_STATUS_INVALID;
    int64_t wo = y->rank >= 2 ? y->dims[y->rank - 1] : 0;
    resize_bilinear_params *p = calloc(1, sizeof *p + 3 * (size_t)wo * sizeof(int32_t));
    if (!p) return ek_fail(e, EK_STATUS_NOMEM, "out of memory");
    c->params = p;
    p->y = y;
    if (!(p->x = ek_operand(m, c, 0, 0, EK_DT_INT8, -1, e)) || !(p->taps_h = ek_operand(m, c, 0, 1, EK_DT_INT32, 2, e)) ||
        !(p->taps_w = ek_operand(m, c, 0, 2, EK_DT_INT32, 2, e)))
        return EK_STATUS_INVALID;
    int r = p->x->rank;
    if (r < 2 || p->y->rank != r || p->x->packing != EK_PACK_NONE)
        return ek_bad(e, c, "needs an unpacked input of rank >= 2 and an output of the same rank");
    for (int d = 0; d < r - 2; d++)
        if (p->x->dims[d] != p->y->dims[d]) return ek_bad(e, c, "only the last two axes resize");
    p->H = p->x->dims[r - 2]; p->W = p->x->dims[r - 1]; p->Ho = p->y->dims[r - 2]; p->Wo = wo;
    p->planes = p->H > 0 && p->W > 0 ? p->x->count / (p->H * p->W) : 0;
    if ((p->H == 0 || p->W == 0) && p->y->count > 0) return ek_bad(e, c, "an empty input cannot fill the output");
    if ((rc = check_taps(c, p->taps_h, p->Ho, p->H, "h", e)) || (rc = check_taps(c, p->taps_w, p->Wo, p->W, "w", e)))
        return rc;
    p->col0 = (int32_t *)(p + 1); p->col1 = p->col0 + wo; p->colf = p->col1 + wo;
    const int32_t *tw = (const int32_t *)p->taps_w->cdata;
    for (int64_t j = 0; j < wo; j++) {
        p->col0[j] = tw[3 * j]; p->col1[j] = tw[3 * j + 1]; p->colf[j] = tw[3 * j + 2];
    }
    p->bands = (p->Ho + BAND_ROWS - 1) / BAND_ROWS;
    p->rows_first = p->Ho < p->H;
    c->scratch = p->rows_first ? ek_align64((size_t)p->W * sizeof(int32_t)) : 2 * ek_align64((size_t)p->Wo * sizeof(int32_t));
    return EK_STATUS_OK;
}

typedef struct {
    const resize_bilinear_params *p;
    const int8_t *x;
    const int32_t *taps_h;
    int8_t *y;
} resize_bilinear_run;

/* sign(acc) · ((|acc| + 2^19) >> 20): half away from zero, branch-free (sign is 0 or −1: gcc and
 * clang shift signed values arithmetically) so the loops calling it vectorise */
static inline int8_t round_out(int32_t acc) {
    int32_t sign = acc >> 31;
    return (int8_t)(((((acc ^ sign) - sign + ROUND_BIT) >> OUT_SHIFT) ^ sign) - sign);
}

/* h[j] = row[j0] · (1024 − f) + row[j1] · f for every output column */
static void interpolate_columns(const resize_bilinear_params *p, const int8_t *row, int32_t *h) {
    const int32_t *c0 = p->col0, *c1 = p->col1, *f = p->colf;
    for (int64_t j = 0; j < p->Wo; j++) h[j] = (int32_t)row[c0[j]] * (TAP_ONE - f[j]) + (int32_t)row[c1[j]] * f[j];
}

/* out[j] = round_out(h0[j] · (1024 − f) + h1[j] · f) */
static void blend_rows(const int32_t *restrict h0, const int32_t *restrict h1, int32_t f, int64_t n,
                       int8_t *restrict out) {
    const int32_t g = TAP_ONE - f;
    for (int64_t j = 0; j < n; j++) out[j] = round_out(h0[j] * g + h1[j] * f);
}

/* H_out < H: v = the two input rows blended (vectorised), then each output gathers two of v */
static void rows_first_band(const resize_bilinear_params *p, const int8_t *in, const int32_t *taps_h, int64_t first,
                            int64_t last, int32_t *restrict v, int8_t *out) {
    const int32_t *c0 = p->col0, *c1 = p->col1, *f = p->colf;
    for (int64_t i = first; i < last; i++) {
        const int32_t *th = taps_h + 3 * i;
        const int8_t *restrict row0 = in + (int64_t)th[0] * p->W, *restrict row1 = in + (int64_t)th[1] * p->W;
        const int32_t w1 = th[2], w0 = TAP_ONE - w1;
        for (int64_t j = 0; j < p->W; j++) v[j] = (int32_t)row0[j] * w0 + (int32_t)row1[j] * w1;
        int8_t *o = out + i * p->Wo;
        for (int64_t j = 0; j < p->Wo; j++) o[j] = round_out(v[c0[j]] * (TAP_ONE - f[j]) + v[c1[j]] * f[j]);
    }
}

static void band_task(void *ctx, int64_t task, uint8_t *scratch) {
    const resize_bilinear_run *r = ctx;
    const resize_bilinear_params *p = r->p;
    int64_t plane = task / p->bands, first = task % p->bands * BAND_ROWS;
    int64_t last = first + BAND_ROWS < p->Ho ? first + BAND_ROWS : p->Ho;
    const int8_t *in = r->x + plane * p->H * p->W;
    if (p->rows_first) {
        rows_first_band(p, in, r->taps_h, first, last, (int32_t *)scratch, r->y + plane * p->Ho * p->Wo);
        return;
    }
    int32_t *slot[2] = {(int32_t *)scratch, (int32_t *)(scratch + ek_align64((size_t)p->Wo * sizeof(int32_t)))};
    int32_t held[2] = {-1, -1}; /* the input row each slot holds */
    for (int64_t i = first; i < last; i++) {
        const int32_t *th = r->taps_h + 3 * i;
        int32_t rows[2] = {th[0], th[1]};
        const int32_t *h[2];
        for (int k = 0; k < 2; k++) {
            int s = held[0] == rows[k] ? 0 : held[1] == rows[k] ? 1 : -1;
            if (s < 0) { /* evict the slot the other row of this output row does not need */
                s = held[0] == rows[1 - k] ? 1 : 0;
                interpolate_columns(p, in + (int64_t)rows[k] * p->W, slot[s]);
                held[s] = rows[k];
            }
            h[k] = slot[s];
        }
        blend_rows(h[0], h[1], th[2], p->Wo, r->y + (plane * p->Ho + i) * p->Wo);
    }
}

int ek_run_qresize_bilinear(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const resize_bilinear_params *p = c->params;
    if (p->y->count == 0) return EK_STATUS_OK;
    resize_bilinear_run r = {p, ek_data(m, p->x), ek_data(m, p->taps_h), ek_data(m, p->y)};
    ek_parallel(m, p->planes * p->bands, band_task, &r);
    return EK_STATUS_OK;
}
