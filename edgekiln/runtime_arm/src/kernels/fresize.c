/*
 * Separable float resize over the last two axes: y[.., i, j] = Σ_a Σ_b wy[i, a]·wx[j, b]·
 * x[.., iy[i, a], ix[j, b]] with T taps per output position (2 for linear).  The compiler
 * derives the tap tables by running the ONNX Resize itself on basis vectors, so every
 * coordinate_transformation_mode matches the specification.  (Nearest resize is an index map.)
 */
#include "../ek_internal.h"

typedef struct {
    const ek_tensor *x, *idx, *wts, *y;
    int64_t planes, H, W, Ho, Wo, T;
} resize_params;

int ek_prepare_resize(ek_model *m, ek_call *c, ek_err *e) {
    int rc = ek_check_arity(c, 3, 3, 1, e);
    if (rc) return rc;
    resize_params *p = calloc(1, sizeof *p);
    if (!p) return ek_fail(e, EK_STATUS_NOMEM, "out of memory");
    c->params = p;
    if (!(p->x = ek_operand(m, c, 0, 0, EK_DT_FLOAT32, -1, e)) || !(p->idx = ek_operand(m, c, 0, 1, EK_DT_INT32, 1, e)) ||
        !(p->wts = ek_operand(m, c, 0, 2, EK_DT_FLOAT32, 1, e)) || !(p->y = ek_operand(m, c, 1, 0, EK_DT_FLOAT32, -1, e)))
        return EK_STATUS_INVALID;
    if (p->x->rank < 2 || p->y->rank != p->x->rank) return ek_bad(e, c, "needs rank >= 2, same for input and output");
    if ((rc = ek_attr_int(c, EK_ATTR_TAPS, 1, 0, 1, 16, &p->T, e))) return rc;
    int r = p->x->rank;
    p->H = p->x->dims[r - 2]; p->W = p->x->dims[r - 1]; p->Ho = p->y->dims[r - 2]; p->Wo = p->y->dims[r - 1];
    for (int d = 0; d < r - 2; d++)
        if (p->x->dims[d] != p->y->dims[d]) return ek_bad(e, c, "only the last two axes resize");
    p->planes = p->H > 0 && p->W > 0 ? p->x->count / (p->H * p->W) : 0;
    int64_t n = (p->Ho + p->Wo) * p->T;
    if (p->idx->count != n || p->wts->count != n || !p->idx->cdata) return ek_bad(e, c, "tap tables need %lld constant entries", (long long)n);
    const int32_t *t = (const int32_t *)p->idx->cdata;
    for (int64_t i = 0; i < n; i++) {
        int64_t lim = i < p->Ho * p->T ? p->H : p->W;
        if (t[i] < 0 || t[i] >= lim) return ek_bad(e, c, "tap index %d outside [0, %lld)", t[i], (long long)lim);
    }
    return EK_STATUS_OK;
}

int ek_run_resize(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const resize_params *p = c->params;
    const float *x = ek_data(m, p->x), *w = ek_data(m, p->wts);
    const int32_t *t = ek_data(m, p->idx);
    float *y = ek_data(m, p->y);
    const int32_t *iy = t, *ix = t + p->Ho * p->T;
    const float *wy = w, *wx = w + p->Ho * p->T;
    for (int64_t pl = 0; pl < p->planes; pl++) {
        const float *in = x + pl * p->H * p->W;
        float *out = y + pl * p->Ho * p->Wo;
        for (int64_t i = 0; i < p->Ho; i++)
            for (int64_t j = 0; j < p->Wo; j++) {
                float acc = 0.0f;
                for (int64_t a = 0; a < p->T; a++) {
                    const float *row = in + (int64_t)iy[i * p->T + a] * p->W;
                    float racc = 0.0f;
                    for (int64_t b = 0; b < p->T; b++) racc += wx[j * p->T + b] * row[ix[j * p->T + b]];
                    acc += wy[i * p->T + a] * racc;
                }
                out[i * p->Wo + j] = acc;
            }
    }
    return EK_STATUS_OK;
}
