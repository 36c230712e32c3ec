/*
 * QSoftmax and QLayerNorm in fixed point, exactly as compiler/integer_kernels.py defines them
 * (the docstring there has the derivation; the names below follow it).
 */
#include <math.h>

#include "../ek_internal.h"
#include "ek_requant.h"

typedef struct {
    const ek_tensor *x, *table, *y;
    int64_t rows, D;
    int32_t zy, m, s;
} qsoftmax_params;

int ek_prepare_qsoftmax(ek_model *m, ek_call *c, ek_err *e) {
    int rc = ek_check_arity(c, 2, 2, 1, e);
    if (rc) return rc;
    qsoftmax_params *p = calloc(1, sizeof *p);
    if (!p) return ek_fail(e, EK_STATUS_NOMEM, "out of memory");
    c->params = p;
    if (!(p->x = ek_operand(m, c, 0, 0, EK_DT_INT8, -1, e)) || !(p->table = ek_operand(m, c, 0, 1, EK_DT_INT32, -1, e)) ||
        !(p->y = ek_operand(m, c, 1, 0, EK_DT_INT8, -1, e)))
        return EK_STATUS_INVALID;
    if (p->x->rank < 1 || !ek_same_shape(p->x, p->y)) return ek_bad(e, c, "input and output shapes differ");
    p->D = p->x->dims[p->x->rank - 1];
    if (p->D > (1 << 20)) return ek_bad(e, c, "softmax length %lld above 2^20", (long long)p->D);
    p->rows = p->D ? p->x->count / p->D : 0;
    /* exp_table[0] = 2^20 > 0 keeps the sum (which includes the row maximum) positive. */
    if (p->table->count != 256 || !p->table->cdata) return ek_bad(e, c, "exp_table must be a constant of 256 int32");
    const int32_t *t = (const int32_t *)p->table->cdata;
    for (int i = 0; i < 256; i++)
        if (t[i] < 0 || t[i] > (1 << 20) || t[0] < 1) return ek_bad(e, c, "exp_table[%d] = %d outside [1, 2^20]", i, t[i]);
    int64_t v;
    if ((rc = ek_attr_int(c, EK_ATTR_OUTPUT_ZP, 1, 0, -128, 127, &v, e))) return rc;
    p->zy = (int32_t)v;
    if ((rc = ek_attr_int(c, EK_ATTR_MULTIPLIER, 1, 0, 0, INT32_MAX, &v, e))) return rc;
    p->m = (int32_t)v;
    if ((rc = ek_attr_int(c, EK_ATTR_SHIFT, 1, 0, -30, 31, &v, e))) return rc;
    p->s = (int32_t)v;
    return EK_STATUS_OK;
}

int ek_run_qsoftmax(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const qsoftmax_params *p = c->params;
    const int8_t *x = ek_data(m, p->x);
    const int32_t *table = ek_data(m, p->table);
    int8_t *y = ek_data(m, p->y);
    for (int64_t r = 0; r < p->rows; r++) {
        const int8_t *row = x + r * p->D;
        int mx = -128;
        for (int64_t i = 0; i < p->D; i++)
            if (row[i] > mx) mx = row[i];
        int64_t sum = 0;
        for (int64_t i = 0; i < p->D; i++) sum += table[mx - row[i]];
        for (int64_t i = 0; i < p->D; i++) {
            int64_t ei = table[mx - row[i]];
            int64_t prob = ((ei << 30) + sum / 2) / sum;
            y[r * p->D + i] = ek_requantize(prob, p->m, p->s, p->zy, -128, 127);
        }
    }
    return EK_STATUS_OK;
}

typedef struct {
    const ek_tensor *x, *gamma, *beta, *y;
    int64_t rows, D, eps, frac, out_shift;
    int32_t zy;
} qlayernorm_params;

int ek_prepare_qlayer_norm(ek_model *m, ek_call *c, ek_err *e) {
    int rc = ek_check_arity(c, 3, 3, 1, e);
    if (rc) return rc;
    qlayernorm_params *p = calloc(1, sizeof *p);
    if (!p) return ek_fail(e, EK_STATUS_NOMEM, "out of memory");
    c->params = p;
    if (!(p->x = ek_operand(m, c, 0, 0, EK_DT_INT8, -1, e)) || !(p->gamma = ek_operand(m, c, 0, 1, EK_DT_INT32, -1, e)) ||
        !(p->beta = ek_operand(m, c, 0, 2, EK_DT_INT64, -1, e)) || !(p->y = ek_operand(m, c, 1, 0, EK_DT_INT8, -1, e)))
        return EK_STATUS_INVALID;
    p->D = p->gamma->count;
    if (p->D < 1 || p->D > 32768 || p->beta->count != p->D || p->x->rank < 1 || p->x->dims[p->x->rank - 1] != p->D ||
        !ek_same_shape(p->x, p->y))
        return ek_bad(e, c, "gamma, beta and the input's last axis must all be D <= 32768, output shaped as input");
    p->rows = p->x->count / p->D;
    int64_t v;
    if ((rc = ek_attr_int(c, EK_ATTR_EPS_TERM, 1, 0, 0, (int64_t)1 << 61, &p->eps, e)) ||
        (rc = ek_attr_int(c, EK_ATTR_FRAC_BITS, 1, 0, 0, 21, &p->frac, e)) ||
        (rc = ek_attr_int(c, EK_ATTR_OUT_SHIFT, 1, 0, 0, 62, &p->out_shift, e)) ||
        (rc = ek_attr_int(c, EK_ATTR_OUTPUT_ZP, 1, 0, -128, 127, &v, e)))
        return rc;
    p->zy = (int32_t)v;
    return EK_STATUS_OK;
}

static int bit_length(uint64_t v) {
    int n = 0;
    while (v) {
        n++;
        v >>= 1;
    }
    return n;
}

/* floor(sqrt(n)) exactly, for 0 <= n < 2^53: a float estimate, then corrected. */
static int64_t isqrt(int64_t n) {
    int64_t r = (int64_t)sqrt((double)n);
    while (r > 0 && r * r > n) r--;
    while ((r + 1) * (r + 1) <= n) r++;
    return r;
}

static int64_t floor_div2(int64_t v) { return v >= 0 ? v / 2 : -((-v + 1) / 2); }

int ek_run_qlayer_norm(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const qlayernorm_params *p = c->params;
    const int8_t *x = ek_data(m, p->x);
    const int32_t *gamma = ek_data(m, p->gamma);
    const int64_t *beta = ek_data(m, p->beta);
    int8_t *y = ek_data(m, p->y);
    const int64_t D = p->D;
    for (int64_t r = 0; r < p->rows; r++) {
        const int8_t *row = x + r * D;
        int64_t sum = 0;
        for (int64_t i = 0; i < D; i++) sum += row[i];
        int64_t var = 0;
        for (int64_t i = 0; i < D; i++) {
            int64_t ci = D * row[i] - sum;
            var += ci * ci;
        }
        int64_t w = var + p->eps;
        if (w < 1) w = 1;
        int64_t k = floor_div2(bit_length((uint64_t)w) - 20);
        int64_t wn = k >= 0 ? w >> (2 * k) : w << (-2 * k);
        int64_t inv = isqrt(((int64_t)1 << 62) / wn);
        int shift = (int)(31 + k - p->frac);
        for (int64_t i = 0; i < D; i++) {
            int64_t ci = D * row[i] - sum;
            int64_t z = ek_rshift_round(ci * inv, shift);
            int64_t u = ek_wrap_add(ek_wrap_mul(z, gamma[i]), beta[i]);
            y[r * D + i] = ek_clamp_i8(ek_rshift_round(u, (int)p->out_shift) + p->zy);
        }
    }
    return EK_STATUS_OK;
}
