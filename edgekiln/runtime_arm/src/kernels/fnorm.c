/*
 * Float normalizations: Softmax / LogSoftmax along one axis, LayerNormalization over the
 * trailing axes from `axis`, BatchNormalization (folded by the compiler to a per-channel
 * scale and shift), InstanceNormalization and LpNormalization.  Means and variances are
 * accumulated in double: the reference computes in float32 and agreeing within 1e-4 is
 * easier from the more accurate side.
 */
#include <math.h>
#include <string.h>

#include "../ek_internal.h"

typedef struct {
    const ek_tensor *x, *s, *b, *y;
    int64_t outer, D, inner;
    int log;
    float eps;
    int p;
} fnorm_params;

/* outer x D x inner around `axis`; D spans [axis, axis + span) */
static void split(const ek_tensor *t, int64_t axis, int64_t span, fnorm_params *p) {
    p->outer = p->D = p->inner = 1;
    for (int d = 0; d < t->rank; d++) {
        if (d < axis) p->outer *= t->dims[d];
        else if (d < axis + span) p->D *= t->dims[d];
        else p->inner *= t->dims[d];
    }
}

static fnorm_params *begin(ek_model *m, ek_call *c, int min_in, int max_in, ek_err *e) {
    if (ek_check_arity(c, min_in, max_in, 1, e)) return NULL;
    fnorm_params *p = calloc(1, sizeof *p);
    if (!p) {
        ek_fail(e, EK_STATUS_NOMEM, "out of memory");
        return NULL;
    }
    c->params = p;
    if (!(p->x = ek_operand(m, c, 0, 0, EK_DT_FLOAT32, -1, e)) || !(p->y = ek_operand(m, c, 1, 0, EK_DT_FLOAT32, -1, e)))
        return NULL;
    if (!ek_same_shape(p->x, p->y)) {
        ek_bad(e, c, "input and output shapes differ");
        return NULL;
    }
    return p;
}

int ek_prepare_softmax(ek_model *m, ek_call *c, ek_err *e) {
    fnorm_params *p = begin(m, c, 1, 1, e);
    if (!p) return EK_STATUS_INVALID;
    int64_t axis, log;
    int rc;
    if (p->x->rank < 1) return ek_bad(e, c, "softmax of a scalar");
    if ((rc = ek_attr_int(c, EK_ATTR_AXIS, 1, 0, 0, p->x->rank - 1, &axis, e)) ||
        (rc = ek_attr_int(c, EK_ATTR_LOG, 0, 0, 0, 1, &log, e)))
        return rc;
    split(p->x, axis, 1, p);
    p->log = (int)log;
    return EK_STATUS_OK;
}

int ek_run_softmax(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const fnorm_params *p = c->params;
    const float *x = ek_data(m, p->x);
    float *y = ek_data(m, p->y);
    for (int64_t o = 0; o < p->outer; o++)
        for (int64_t in = 0; in < p->inner; in++) {
            const float *xr = x + o * p->D * p->inner + in;
            float *yr = y + o * p->D * p->inner + in;
            float mx = -INFINITY;
            for (int64_t i = 0; i < p->D; i++)
                if (xr[i * p->inner] > mx) mx = xr[i * p->inner];
            double sum = 0.0;
            for (int64_t i = 0; i < p->D; i++) sum += expf(xr[i * p->inner] - mx);
            if (p->log) {
                float ls = (float)log(sum);
                for (int64_t i = 0; i < p->D; i++) yr[i * p->inner] = xr[i * p->inner] - mx - ls;
            } else {
                float inv = (float)(1.0 / sum);
                for (int64_t i = 0; i < p->D; i++) yr[i * p->inner] = expf(xr[i * p->inner] - mx) * inv;
            }
        }
    return EK_STATUS_OK;
}

int ek_prepare_layer_norm(ek_model *m, ek_call *c, ek_err *e) {
    fnorm_params *p = begin(m, c, 2, 3, e);
    if (!p) return EK_STATUS_INVALID;
    int64_t axis;
    double eps;
    int rc;
    if ((rc = ek_attr_int(c, EK_ATTR_AXIS, 1, 0, 0, p->x->rank > 0 ? p->x->rank - 1 : 0, &axis, e)) ||
        (rc = ek_attr_float(c, EK_ATTR_EPSILON, 0, 1e-5, &eps, e)))
        return rc;
    split(p->x, axis, EK_MAX_RANK, p);
    p->eps = (float)eps;
    if (!(p->s = ek_operand(m, c, 0, 1, EK_DT_FLOAT32, -1, e))) return EK_STATUS_INVALID;
    p->b = ek_input(m, c, 2);
    if (p->s->count != p->D || (p->b && (p->b->dtype != EK_DT_FLOAT32 || p->b->count != p->D)))
        return ek_bad(e, c, "scale and bias need D = %lld values", (long long)p->D);
    return EK_STATUS_OK;
}

int ek_run_layer_norm(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const fnorm_params *p = c->params;
    const float *x = ek_data(m, p->x), *s = ek_data(m, p->s), *b = p->b ? ek_data(m, p->b) : NULL;
    float *y = ek_data(m, p->y);
    for (int64_t o = 0; o < p->outer; o++) {
        const float *xr = x + o * p->D;
        float *yr = y + o * p->D;
        double mean = 0.0, var = 0.0;
        for (int64_t i = 0; i < p->D; i++) mean += xr[i];
        mean /= (double)p->D;
        for (int64_t i = 0; i < p->D; i++) var += (xr[i] - mean) * (xr[i] - mean);
        var /= (double)p->D;
        double inv = 1.0 / sqrt(var + p->eps);
        for (int64_t i = 0; i < p->D; i++) yr[i] = (float)((xr[i] - mean) * inv) * s[i] + (b ? b[i] : 0.0f);
    }
    return EK_STATUS_OK;
}

/* y = x·s[c] + b[c] over channel axis 1 (BatchNormalization, folded by the compiler). */
int ek_prepare_channel_affine(ek_model *m, ek_call *c, ek_err *e) {
    fnorm_params *p = begin(m, c, 3, 3, e);
    if (!p) return EK_STATUS_INVALID;
    if (p->x->rank < 2) return ek_bad(e, c, "needs a channel axis");
    split(p->x, 1, 1, p);
    if (!(p->s = ek_operand(m, c, 0, 1, EK_DT_FLOAT32, -1, e)) || !(p->b = ek_operand(m, c, 0, 2, EK_DT_FLOAT32, -1, e)))
        return EK_STATUS_INVALID;
    if (p->s->count != p->D || p->b->count != p->D) return ek_bad(e, c, "scale and shift need C = %lld values", (long long)p->D);
    return EK_STATUS_OK;
}

int ek_run_channel_affine(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const fnorm_params *p = c->params;
    const float *x = ek_data(m, p->x), *s = ek_data(m, p->s), *b = ek_data(m, p->b);
    float *y = ek_data(m, p->y);
    for (int64_t o = 0; o < p->outer; o++)
        for (int64_t ch = 0; ch < p->D; ch++) {
            int64_t base = (o * p->D + ch) * p->inner;
            for (int64_t i = 0; i < p->inner; i++) y[base + i] = x[base + i] * s[ch] + b[ch];
        }
    return EK_STATUS_OK;
}

int ek_prepare_instance_norm(ek_model *m, ek_call *c, ek_err *e) {
    int rc = ek_prepare_channel_affine(m, c, e);
    if (rc) return rc;
    fnorm_params *p = c->params;
    double eps;
    if ((rc = ek_attr_float(c, EK_ATTR_EPSILON, 0, 1e-5, &eps, e))) return rc;
    p->eps = (float)eps;
    return EK_STATUS_OK;
}

int ek_run_instance_norm(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const fnorm_params *p = c->params;
    const float *x = ek_data(m, p->x), *s = ek_data(m, p->s), *b = ek_data(m, p->b);
    float *y = ek_data(m, p->y);
    for (int64_t o = 0; o < p->outer; o++)
        for (int64_t ch = 0; ch < p->D; ch++) {
            const float *xr = x + (o * p->D + ch) * p->inner;
            float *yr = y + (o * p->D + ch) * p->inner;
            double mean = 0.0, var = 0.0;
            for (int64_t i = 0; i < p->inner; i++) mean += xr[i];
            mean /= (double)(p->inner ? p->inner : 1);
            for (int64_t i = 0; i < p->inner; i++) var += (xr[i] - mean) * (xr[i] - mean);
            var /= (double)(p->inner ? p->inner : 1);
            double inv = 1.0 / sqrt(var + p->eps);
            for (int64_t i = 0; i < p->inner; i++) yr[i] = (float)((xr[i] - mean) * inv) * s[ch] + b[ch];
        }
    return EK_STATUS_OK;
}

int ek_prepare_lp_norm(ek_model *m, ek_call *c, ek_err *e) {
    fnorm_params *p = begin(m, c, 1, 1, e);
    if (!p) return EK_STATUS_INVALID;
    int64_t axis, order;
    int rc;
    if (p->x->rank < 1) return ek_bad(e, c, "norm of a scalar");
    if ((rc = ek_attr_int(c, EK_ATTR_AXIS, 1, 0, 0, p->x->rank - 1, &axis, e)) ||
        (rc = ek_attr_int(c, EK_ATTR_P, 0, 2, 1, 2, &order, e)))
        return rc;
    split(p->x, axis, 1, p);
    p->p = (int)order;
    return EK_STATUS_OK;
}

int ek_run_lp_norm(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const fnorm_params *p = c->params;
    const float *x = ek_data(m, p->x);
    float *y = ek_data(m, p->y);
    for (int64_t o = 0; o < p->outer; o++)
        for (int64_t in = 0; in < p->inner; in++) {
            const float *xr = x + o * p->D * p->inner + in;
            float *yr = y + o * p->D * p->inner + in;
            double norm = 0.0;
            for (int64_t i = 0; i < p->D; i++) {
                double v = xr[i * p->inner];
                norm += p->p == 1 ? fabs(v) : v * v;
            }
            if (p->p == 2) norm = sqrt(norm);
            for (int64_t i = 0; i < p->D; i++) yr[i * p->inner] = norm == 0.0 ? 0.0f : (float)(xr[i * p->inner] / norm);
        }
    return EK_STATUS_OK;
}
