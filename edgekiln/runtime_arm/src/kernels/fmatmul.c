/*
 * Float MatMul / Gemm / FusedMatMul / FusedGemm:  y = epilogue(alpha·op(A)·op(B) + bias),
 * A [..., M, K], B [..., K, N] (either transposed by attribute), numpy batch broadcasting,
 * bias [N] along rows, an optional residual shaped like y.
 *
 * The product runs on the float GEMM of ek_gemm.h (NEON or AVX2+FMA register tiles, or the
 * portable axpy loop); a transposed B (only ever an activation: the compiler pre-transposes
 * constant ones) is packed to [K, N] in scratch first.  A transposed A (rare) keeps the
 * portable loop: axpys over rows of B, four output rows per pass.
 * A task is one block of EK_BLOCK_ROWS rows of one batch matrix.
 */
#include <string.h>

#include "../ek_internal.h"
#include "ek_activation.h"
#include "ek_broadcast.h"

typedef struct {
    const ek_tensor *a, *b, *bias, *res, *y;
    int64_t M, K, N, batches, mblocks, pb;
    int ta, tb, brank;
    int64_t bdims[EK_MAX_RANK], astr[EK_MAX_RANK], bstr[EK_MAX_RANK];
    float alpha;
    ek_epilogue ep;
} fmatmul_params;

typedef struct {
    const fmatmul_params *p;
    const float *a, *b, *bias, *res;
    float *y;
    ek_sgemm_fn gemm; /* the float GEMM of the model's ISA (ek_gemm.h) */
} fmatmul_run;

int ek_prepare_matmul(ek_model *m, ek_call *c, ek_err *e) {
    int rc = ek_check_arity(c, 2, 4, 1, e);
    if (rc) return rc;
    fmatmul_params *p = calloc(1, sizeof *p);
    if (!p) return ek_fail(e, EK_STATUS_NOMEM, "out of memory");
    c->params = p;
    if (!(p->a = ek_operand(m, c, 0, 0, EK_DT_FLOAT32, -1, e)) || !(p->b = ek_operand(m, c, 0, 1, EK_DT_FLOAT32, -1, e)) ||
        !(p->y = ek_operand(m, c, 1, 0, EK_DT_FLOAT32, -1, e)))
        return EK_STATUS_INVALID;
    p->bias = ek_input(m, c, 2);
    p->res = ek_input(m, c, 3);
    int64_t ta, tb;
    double alpha;
    if ((rc = ek_attr_int(c, EK_ATTR_TRANS_A, 0, 0, 0, 1, &ta, e)) || (rc = ek_attr_int(c, EK_ATTR_TRANS_B, 0, 0, 0, 1, &tb, e)) ||
        (rc = ek_attr_float(c, EK_ATTR_ALPHA, 0, 1.0, &alpha, e)))
        return rc;
    p->ta = (int)ta;
    p->tb = (int)tb;
    p->alpha = (float)alpha;
    const ek_tensor *a = p->a, *b = p->b, *y = p->y;
    if (a->rank < 2 || b->rank < 2 || y->rank < 2) return ek_bad(e, c, "operands need rank >= 2");
    p->M = a->dims[a->rank - 2 + p->ta];
    p->K = a->dims[a->rank - 1 - p->ta];
    p->N = b->dims[b->rank - 1 - p->tb];
    if (b->dims[b->rank - 2 + p->tb] != p->K || y->dims[y->rank - 2] != p->M || y->dims[y->rank - 1] != p->N)
        return ek_bad(e, c, "shapes do not multiply");
    p->brank = y->rank - 2;
    p->batches = 1;
    for (int d = 0; d < p->brank; d++) {
        p->bdims[d] = y->dims[d];
        p->batches *= y->dims[d];
    }
    if (!ek_matmul_batch_strides(a, p->brank, p->bdims, p->astr) ||
        !ek_matmul_batch_strides(b, p->brank, p->bdims, p->bstr))
        return ek_bad(e, c, "batch dims do not broadcast to the output's");
    if (p->bias && (p->bias->dtype != EK_DT_FLOAT32 || p->bias->count != p->N))
        return ek_bad(e, c, "bias must be float32 with N = %lld values", (long long)p->N);
    if (p->res && (p->res->dtype != EK_DT_FLOAT32 || p->res->count != y->count))
        return ek_bad(e, c, "residual must be float32 shaped like the output");
    if ((rc = ek_epilogue_parse(c, p->res != NULL, &p->ep, e))) return rc;
    p->pb = p->M < EK_BLOCK_ROWS ? (p->M > 0 ? p->M : 1) : EK_BLOCK_ROWS;
    p->mblocks = (p->M + p->pb - 1) / p->pb;
    c->scratch = p->tb ? ek_align64((size_t)(p->K * p->N) * 4) : 0;
    return EK_STATUS_OK;
}

static void task(void *ctx, int64_t t, uint8_t *scratch) {
    const fmatmul_run *r = ctx;
    const fmatmul_params *p = r->p;
    int64_t mb = t % p->mblocks, batch = t / p->mblocks, ai = 0, bi = 0, rest = batch;
    for (int d = p->brank - 1; d >= 0; d--) {
        int64_t idx = rest % p->bdims[d];
        rest /= p->bdims[d];
        ai += idx * p->astr[d];
        bi += idx * p->bstr[d];
    }
    const int64_t M = p->M, K = p->K, N = p->N;
    const float *a = r->a + ai * M * K, *b = r->b + bi * K * N;
    if (p->tb) { /* [N, K] -> [K, N] */
        float *bt = (float *)scratch;
        for (int64_t j = 0; j < N; j++)
            for (int64_t k = 0; k < K; k++) bt[k * N + j] = b[j * K + k];
        b = bt;
    }
    /* element (i, k) of op(A) */
    const int64_t ars = p->ta ? 1 : K, acs = p->ta ? M : 1;
    int64_t i0 = mb * p->pb, i1 = i0 + p->pb < M ? i0 + p->pb : M;
    float *y = r->y + batch * M * N;
    if (!p->ta) /* rows i0..i1 of A are row-major with stride K: one float GEMM */
        r->gemm((int)(i1 - i0), (int)N, (int)K, a + i0 * K, (int)K, b, (int)N, y + i0 * N, (int)N);
    for (int64_t i = i0; i < i1; i += 4) {
        int ni = i1 - i < 4 ? (int)(i1 - i) : 4;
        float *restrict y0 = y + i * N, *restrict y1 = y0 + N, *restrict y2 = y1 + N, *restrict y3 = y2 + N;
        if (!p->ta) {
            /* computed by the GEMM above */
        } else if (ni == 4) {
            memset(y0, 0, (size_t)(ni * N) * sizeof(float));
            for (int64_t k = 0; k < K; k++) {
                const float *restrict br = b + k * N;
                const float a0 = a[i * ars + k * acs], a1 = a[(i + 1) * ars + k * acs];
                const float a2 = a[(i + 2) * ars + k * acs], a3 = a[(i + 3) * ars + k * acs];
                for (int64_t j = 0; j < N; j++) {
                    float v = br[j];
                    y0[j] += a0 * v;
                    y1[j] += a1 * v;
                    y2[j] += a2 * v;
                    y3[j] += a3 * v;
                }
            }
        } else {
            memset(y0, 0, (size_t)(ni * N) * sizeof(float));
            for (int q = 0; q < ni; q++) {
                float *yq = y0 + q * N;
                for (int64_t k = 0; k < K; k++) {
                    const float *br = b + k * N;
                    const float av = a[(i + q) * ars + k * acs];
                    for (int64_t j = 0; j < N; j++) yq[j] += av * br[j];
                }
            }
        }
        for (int q = 0; q < ni; q++) {
            float *yq = y0 + q * N;
            if (p->alpha != 1.0f)
                for (int64_t j = 0; j < N; j++) yq[j] *= p->alpha;
            if (r->bias)
                for (int64_t j = 0; j < N; j++) yq[j] += r->bias[j];
            ek_epilogue_apply(&p->ep, yq, N, r->res ? r->res + batch * M * N + (i + q) * N : NULL);
        }
    }
}

int ek_run_matmul(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const fmatmul_params *p = c->params;
    if (p->y->count == 0) return EK_STATUS_OK;
    fmatmul_run r = {p, ek_data(m, p->a), ek_data(m, p->b), p->bias ? ek_data(m, p->bias) : NULL,
                     p->res ? ek_data(m, p->res) : NULL, ek_data(m, p->y), ek_select_sgemm(ek_cpu_features(), m->isa)};
    ek_parallel(m, p->batches * p->mblocks, task, &r);
    return EK_STATUS_OK;
}
