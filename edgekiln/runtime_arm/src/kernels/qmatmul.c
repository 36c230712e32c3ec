/*
 * QMatMul: activation x activation, A [..., M, K] · B [..., K, N] with numpy broadcasting of
 * the batch dims.  Through the int8 GEMM (which wants both operands K-contiguous) B is
 * transposed per task into scratch; the zero points are folded afterwards:
 *
 *     Σ_k (a − za)(b − zb) = Σ ab − zb·Σ_k a[i,k] − za·Σ_k b[k,j] + K·za·zb
 *
 * A task is one block of up to EK_BLOCK_ROWS rows of one batch matrix.
 */
#include <string.h>

#include "../ek_internal.h"
#include "ek_broadcast.h"
#include "ek_requant.h"

typedef struct {
    const ek_tensor *a, *b, *y;
    int64_t M, K, N, batches, mblocks, pb;
    int brank;                        /* batch rank of the output */
    int64_t bdims[EK_MAX_RANK];
    int64_t astr[EK_MAX_RANK], bstr[EK_MAX_RANK]; /* matrix strides per batch dim (0: broadcast) */
    int32_t za, zb, zy, lo, hi, mult, shift;
    size_t off_c32, off_sum;
} qmatmul_params;

typedef struct {
    const qmatmul_params *p;
    ek_gemm_s8_fn gemm;
    const int8_t *a, *b;
    int8_t *y;
} qmatmul_run;

int ek_prepare_qmatmul(ek_model *m, ek_call *c, ek_err *e) {
    int rc = ek_check_arity(c, 2, 2, 1, e);
    if (rc) return rc;
    qmatmul_params *p = calloc(1, sizeof *p);
    if (!p) return ek_fail(e, EK_STATUS_NOMEM, "out of memory");
    c->params = p;
    if (!(p->a = ek_operand(m, c, 0, 0, EK_DT_INT8, -1, e)) || !(p->b = ek_operand(m, c, 0, 1, EK_DT_INT8, -1, e)) ||
        !(p->y = ek_operand(m, c, 1, 0, EK_DT_INT8, -1, e)))
        return EK_STATUS_INVALID;
    const ek_tensor *a = p->a, *b = p->b, *y = p->y;
    if (a->rank < 2 || b->rank < 2 || y->rank < 2) return ek_bad(e, c, "operands need rank >= 2");
    p->M = a->dims[a->rank - 2];
    p->K = a->dims[a->rank - 1];
    p->N = b->dims[b->rank - 1];
    if (b->dims[b->rank - 2] != p->K || y->dims[y->rank - 2] != p->M || y->dims[y->rank - 1] != p->N)
        return ek_bad(e, c, "shapes do not multiply: [.., %lld, %lld] x [.., %lld, %lld] -> [.., %lld, %lld]",
                      (long long)p->M, (long long)p->K, (long long)b->dims[b->rank - 2], (long long)p->N,
                      (long long)y->dims[y->rank - 2], (long long)y->dims[y->rank - 1]);
    if (p->K > 65536) return ek_bad(e, c, "K = %lld above 65536", (long long)p->K);
    p->brank = y->rank - 2;
    p->batches = 1;
    for (int d = 0; d < p->brank; d++) {
        p->bdims[d] = y->dims[d];
        p->batches *= y->dims[d];
    }
    if (!ek_matmul_batch_strides(a, p->brank, p->bdims, p->astr) ||
        !ek_matmul_batch_strides(b, p->brank, p->bdims, p->bstr))
        return ek_bad(e, c, "batch dims do not broadcast to the output's");
    int64_t v;
    if ((rc = ek_attr_int(c, EK_ATTR_A_ZP, 1, 0, -128, 127, &v, e))) return rc;
    p->za = (int32_t)v;
    if ((rc = ek_attr_int(c, EK_ATTR_B_ZP, 1, 0, -128, 127, &v, e))) return rc;
    p->zb = (int32_t)v;
    if ((rc = ek_attr_int(c, EK_ATTR_OUTPUT_ZP, 1, 0, -128, 127, &v, e))) return rc;
    p->zy = (int32_t)v;
    if ((rc = ek_attr_int(c, EK_ATTR_MULTIPLIER, 1, 0, 0, INT32_MAX, &v, e))) return rc;
    p->mult = (int32_t)v;
    if ((rc = ek_attr_int(c, EK_ATTR_SHIFT, 1, 0, -30, 31, &v, e))) return rc;
    p->shift = (int32_t)v;
    if ((rc = ek_attr_int(c, EK_ATTR_ACT_MIN, 0, -128, -128, 127, &v, e))) return rc;
    p->lo = (int32_t)v;
    if ((rc = ek_attr_int(c, EK_ATTR_ACT_MAX, 0, 127, -128, 127, &v, e))) return rc;
    p->hi = (int32_t)v;
    p->pb = p->M < EK_BLOCK_ROWS ? (p->M > 0 ? p->M : 1) : EK_BLOCK_ROWS;
    p->mblocks = (p->M + p->pb - 1) / p->pb;
    p->off_c32 = ek_align64((size_t)(p->N * p->K));
    p->off_sum = p->off_c32 + ek_align64((size_t)(p->pb * p->N) * 4);
    c->scratch = p->off_sum + ek_align64((size_t)p->N * 4);
    return EK_STATUS_OK;
}

static void task(void *ctx, int64_t t, uint8_t *scratch) {
    const qmatmul_run *r = ctx;
    const qmatmul_params *p = r->p;
    int64_t mb = t % p->mblocks, batch = t / p->mblocks;
    int64_t ai = 0, bi = 0, rest = batch;
    for (int d = p->brank - 1; d >= 0; d--) {
        int64_t idx = rest % p->bdims[d];
        rest /= p->bdims[d];
        ai += idx * p->astr[d];
        bi += idx * p->bstr[d];
    }
    const int64_t M = p->M, K = p->K, N = p->N;
    const int8_t *a = r->a + ai * M * K + mb * p->pb * K;
    const int8_t *b = r->b + bi * K * N;
    int64_t rows = M - mb * p->pb < p->pb ? M - mb * p->pb : p->pb;
    int8_t *bt = (int8_t *)scratch;
    int32_t *c32 = (int32_t *)(scratch + p->off_c32);
    int32_t *colsum = (int32_t *)(scratch + p->off_sum);
    for (int64_t j = 0; j < N; j++) colsum[j] = 0;
    for (int64_t k = 0; k < K; k++)
        for (int64_t j = 0; j < N; j++) {
            bt[j * K + k] = b[k * N + j];
            colsum[j] += b[k * N + j];
        }
    r->gemm((int)rows, (int)N, (int)K, a, (int)K, bt, (int)K, c32, (int)N);
    int8_t *y = r->y + batch * M * N + mb * p->pb * N;
    const int64_t za = p->za, zb = p->zb, kzz = K * za * zb;
    for (int64_t i = 0; i < rows; i++) {
        int64_t rowsum = 0;
        for (int64_t k = 0; k < K; k++) rowsum += a[i * K + k];
        for (int64_t j = 0; j < N; j++) {
            int64_t acc = (int64_t)c32[i * N + j] - zb * rowsum - za * colsum[j] + kzz;
            y[i * N + j] = ek_requantize(acc, p->mult, p->shift, p->zy, p->lo, p->hi);
        }
    }
}

int ek_run_qmatmul(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const qmatmul_params *p = c->params;
    if (p->y->count == 0) return EK_STATUS_OK;
    qmatmul_run r = {p, m->gemm_s8, ek_data(m, p->a), ek_data(m, p->b), ek_data(m, p->y)};
    ek_parallel(m, p->batches * p->mblocks, task, &r);
    return EK_STATUS_OK;
}
