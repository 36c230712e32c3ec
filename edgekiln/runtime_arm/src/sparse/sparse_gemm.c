/*
 * SparseGemm: a float 1x1 Conv / FusedConv, or a MatMul / Gemm by a constant weight, whose
 * weight is stored sparse (ek_sparse.h).
 *
 *     y[o, p] = epilogue(Σ_{k : W[o,k] != 0} W[o, k]·x[k, p] + bias[o])
 *
 * The sum starts at 0 and adds the products in increasing k, then the bias, as the dense Conv
 * kernel does; the zero products it skips change nothing, so the result matches the dense
 * kernel to the last bit (barring signed zeros).  A convolution reads its input rows in place
 * (pixels are contiguous in NCHW); a fully connected input is transposed block by block into
 * the task's scratch first.
 */
#include <string.h>

#include "../kernels/ek_activation.h"
#include "ek_sparse.h"

typedef struct {
    const ek_tensor *x, *bias, *res, *y;
    ek_sparse_weight sw;
    ek_epilogue ep;
    int fc;
    int64_t Nb, K, O, P;
    int64_t pb, pblocks, rows_per_chunk, chunks;
    size_t off_acc;
} sparse_params;

typedef struct {
    const sparse_params *p;
    ek_spmm_f32_fn spmm;
    const float *x, *values, *bias, *res;
    float *y;
} sparse_run;

int ek_prepare_sparse_gemm(ek_model *m, ek_call *c, ek_err *e) {
    int rc = ek_check_arity(c, 3, 6, 1, e);
    if (rc) return rc;
    int64_t fc;
    if ((rc = ek_attr_int(c, EK_ATTR_TRANSPOSE, 0, 0, 0, 1, &fc, e))) return rc;
    const ek_tensor *x = ek_operand(m, c, 0, 0, EK_DT_FLOAT32, -1, e), *y = ek_operand(m, c, 1, 0, EK_DT_FLOAT32, -1, e);
    if (!x || !y) return EK_STATUS_INVALID;
    int64_t Nb, K, P, O;
    if (fc) {
        if (x->rank < 1 || y->rank != x->rank) return ek_bad(e, c, "input and output ranks differ");
        for (int i = 0; i + 1 < x->rank; i++)
            if (x->dims[i] != y->dims[i]) return ek_bad(e, c, "output leading dims differ from the input's");
        Nb = 1, K = x->dims[x->rank - 1], O = y->dims[y->rank - 1];
        P = K ? x->count / K : 0;
    } else {
        if (x->rank < 3 || y->rank != x->rank || x->dims[0] != y->dims[0])
            return ek_bad(e, c, "input [N, K, ...] and output [N, O, ...] do not fit");
        for (int i = 2; i < x->rank; i++)
            if (x->dims[i] != y->dims[i]) return ek_bad(e, c, "a 1x1 convolution keeps the spatial dims");
        Nb = x->dims[0], K = x->dims[1], O = y->dims[1];
        P = Nb && K ? x->count / (Nb * K) : 0;
    }
    int64_t extra = ek_sparse_expansion_count(c, O, K, e);
    if (extra < 0) return EK_STATUS_INVALID;
    sparse_params *p = calloc(1, sizeof *p + (size_t)extra * sizeof(uint16_t));
    if (!p) return ek_fail(e, EK_STATUS_NOMEM, "out of memory");
    c->params = p;
    p->x = x, p->y = y, p->fc = (int)fc;
    p->Nb = Nb, p->K = K, p->P = P, p->O = O;
    if ((rc = ek_sparse_weight_read(m, c, O, K, EK_DT_FLOAT32, (uint16_t *)(p + 1), &p->sw, e))) return rc;
    p->bias = ek_input(m, c, 4);
    p->res = ek_input(m, c, 5);
    if (p->bias && (p->bias->dtype != EK_DT_FLOAT32 || p->bias->count != O))
        return ek_bad(e, c, "bias must be float32 with %lld values", (long long)O);
    if (p->res && (p->res->dtype != EK_DT_FLOAT32 || p->res->count != y->count))
        return ek_bad(e, c, "residual must be float32 shaped like the output");
    if ((rc = ek_epilogue_parse(c, p->res != NULL, &p->ep, e))) return rc;
    p->pb = P < EK_SPARSE_PIXELS ? (P > 0 ? P : 1) : EK_SPARSE_PIXELS;
    p->pblocks = (P + p->pb - 1) / p->pb;
    int64_t base = Nb * p->pblocks, want = base >= 8 ? 1 : (8 + base - 1) / base;
    if (want > p->sw.rows) want = p->sw.rows;
    if (want < 1) want = 1;
    p->rows_per_chunk = (p->sw.rows + want - 1) / want;
    p->chunks = (p->sw.rows + p->rows_per_chunk - 1) / p->rows_per_chunk;
    p->off_acc = fc ? ek_align64((size_t)(K * p->pb) * sizeof(float)) : 0;
    c->scratch = p->off_acc + ek_align64((size_t)(8 * p->pb) * sizeof(float));
    return EK_STATUS_OK;
}

static void task(void *ctx, int64_t t, uint8_t *scratch) {
    const sparse_run *r = ctx;
    const sparse_params *p = r->p;
    const ek_sparse_weight *sw = &p->sw;
    int64_t chunk = t % p->chunks;
    t /= p->chunks;
    int64_t pbk = t % p->pblocks, n = t / p->pblocks;
    int64_t p0 = pbk * p->pb, np = p->P - p0 < p->pb ? p->P - p0 : p->pb;
    const float *xs;
    int64_t ldx;
    if (p->fc) {
        float *xt = (float *)scratch;
        for (int64_t j = 0; j < np; j++)
            for (int64_t k = 0; k < p->K; k++) xt[k * np + j] = r->x[(p0 + j) * p->K + k];
        xs = xt, ldx = np;
    } else {
        xs = r->x + n * p->K * p->P + p0, ldx = p->P;
    }
    float *acc = (float *)(scratch + p->off_acc);
    int64_t r0 = chunk * p->rows_per_chunk, r1 = r0 + p->rows_per_chunk < sw->rows ? r0 + p->rows_per_chunk : sw->rows;
    for (int64_t row = r0; row < r1; row++) {
        int64_t b0, b1;
        ek_sparse_row(sw, row, &b0, &b1);
        r->spmm((int)np, sw->B, (int)(b1 - b0), sw->idx + b0, r->values + b0 * sw->B, sw->B, xs, ldx, acc, (int)p->pb);
        for (int b = 0; b < sw->B; b++) {
            int64_t o = row * sw->B + b;
            if (o >= p->O) break;
            float *v = acc + b * p->pb;
            if (r->bias)
                for (int64_t j = 0; j < np; j++) v[j] += r->bias[o];
            if (p->fc) {
                for (int64_t j = 0; j < np; j++) {
                    int64_t at = (p0 + j) * p->O + o;
                    ek_epilogue_apply(&p->ep, v + j, 1, r->res ? r->res + at : NULL);
                    r->y[at] = v[j];
                }
            } else {
                int64_t at = (n * p->O + o) * p->P + p0;
                ek_epilogue_apply(&p->ep, v, np, r->res ? r->res + at : NULL);
                memcpy(r->y + at, v, (size_t)np * sizeof(float));
            }
        }
    }
}

int ek_run_sparse_gemm(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const sparse_params *p = c->params;
    sparse_run r = {p, 0, ek_data(m, p->x), (const float *)p->sw.values->cdata,
                    p->bias ? ek_data(m, p->bias) : NULL, p->res ? ek_data(m, p->res) : NULL, ek_data(m, p->y)};
    ek_spmm_s16_fn unused;
    ek_select_spmm(m, &unused, &r.spmm);
    if (p->y->count == 0) return EK_STATUS_OK;
    ek_parallel(m, p->Nb * p->pblocks * p->chunks, task, &r);
    return EK_STATUS_OK;
}
