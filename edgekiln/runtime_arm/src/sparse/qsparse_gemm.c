/*
 * QSparseGemm: a 1x1 QConv2D or a QFullyConnected whose weight is stored sparse (ek_sparse.h).
 *
 *     acc[o, p] = bias[o] + Σ_{k : w[o,k] != 0} (x[k, p] − zp_x)·w[o, k]
 *     y[o, p]   = requantize(acc, multiplier[o], shift[o], zp_y, act_min, act_max)
 *
 * is the dense spec (compiler/integer_kernels.py) with the zero terms left out, so the output
 * is bit-exact with QConv2D / QFullyConnected on the zero-filled weight.  Each task first
 * writes its pixel block as int16 rows x16[k][j] = x[k, p0 + j] − zp_x (transposing the rows
 * of a fully connected input), zero padded to a multiple of 16 pixels; the micro-kernel then
 * only multiplies and adds, and the requantization reads int32 sums plus the int32 bias in
 * int64 exactly like the dense kernel.
 */
#include "../kernels/ek_requant.h"
#include "../kernels/ek_requant_attrs.h"
#include "ek_sparse.h"

typedef struct {
    const ek_tensor *x, *bias, *mult, *shift, *y;
    ek_sparse_weight sw;
    int fc;
    int64_t Nb, K, O, P;
    int32_t zx, zy, lo, hi;
    int64_t pb, ldx, pblocks, rows_per_chunk, chunks;
    size_t off_acc;
} qsparse_params;

typedef struct {
    const qsparse_params *p;
    ek_spmm_s16_fn spmm;
    const int8_t *x, *values;
    const int32_t *bias, *mult;
    const int8_t *shift; /* int8 in the blob (31 + shift in [1, 62]) */
    int8_t *y;
} qsparse_run;

static int64_t round16(int64_t n) { return (n + 15) / 16 * 16; }

/* Nb, K, P of the input and O from the bias, checked against the output. */
static int read_geometry(ek_model *m, ek_call *c, int fc, int64_t g[4], ek_err *e) {
    const ek_tensor *x = ek_operand(m, c, 0, 0, EK_DT_INT8, -1, e), *y = ek_operand(m, c, 1, 0, EK_DT_INT8, -1, e);
    const ek_tensor *bias = ek_input(m, c, 4);
    if (!x || !y) return EK_STATUS_INVALID;
    if (!bias || bias->dtype != EK_DT_INT32 || bias->rank != 1) return ek_bad(e, c, "bias must be int32 [O]");
    int64_t O = bias->count;
    if (fc) {
        if (x->rank < 1 || y->rank != x->rank) return ek_bad(e, c, "input and output ranks differ");
        int64_t K = x->dims[x->rank - 1];
        for (int i = 0; i + 1 < x->rank; i++)
            if (x->dims[i] != y->dims[i]) return ek_bad(e, c, "output leading dims differ from the input's");
        if (y->dims[y->rank - 1] != O || K < 1) return ek_bad(e, c, "output does not end in O = %lld", (long long)O);
        g[0] = 1, g[1] = K, g[2] = x->count / K, g[3] = O;
    } else {
        if (x->rank < 3 || y->rank != x->rank || x->dims[0] != y->dims[0] || y->dims[1] != O || x->dims[1] < 1)
            return ek_bad(e, c, "input [N, K, ...] and output [N, O = %lld, ...] do not fit", (long long)O);
        for (int i = 2; i < x->rank; i++)
            if (x->dims[i] != y->dims[i]) return ek_bad(e, c, "a 1x1 convolution keeps the spatial dims");
        g[0] = x->dims[0], g[1] = x->dims[1], g[2] = x->dims[0] ? x->count / (x->dims[0] * x->dims[1]) : 0, g[3] = O;
    }
    return EK_STATUS_OK;
}

static void split_tasks(int64_t rows, int64_t base_tasks, int64_t *rows_per_chunk, int64_t *chunks) {
    /* Few pixel blocks (a fully connected layer, a 7x7 map): split the output channels so the
     * threads share the work; re-staging x per chunk costs K·pixels, small next to the MACs. */
    int64_t want = base_tasks >= 8 ? 1 : (8 + base_tasks - 1) / base_tasks;
    if (want > rows) want = rows;
    if (want < 1) want = 1;
    *rows_per_chunk = (rows + want - 1) / want;
    *chunks = (rows + *rows_per_chunk - 1) / *rows_per_chunk;
}

int ek_prepare_qsparse_gemm(ek_model *m, ek_call *c, ek_err *e) {
    int rc = ek_check_arity(c, 7, 7, 1, e);
    if (rc) return rc;
    int64_t fc, g[4] = {0, 0, 0, 0};
    if ((rc = ek_attr_int(c, EK_ATTR_TRANSPOSE, 0, 0, 0, 1, &fc, e)) || (rc = read_geometry(m, c, (int)fc, g, e)))
        return rc;
    int64_t extra = ek_sparse_expansion_count(c, g[3], g[1], e);
    if (extra < 0) return EK_STATUS_INVALID;
    qsparse_params *p = calloc(1, sizeof *p + (size_t)extra * sizeof(uint16_t));
    if (!p) return ek_fail(e, EK_STATUS_NOMEM, "out of memory");
    c->params = p;
    p->fc = (int)fc;
    p->Nb = g[0], p->K = g[1], p->P = g[2], p->O = g[3];
    p->x = ek_input(m, c, 0);
    p->y = ek_output(m, c, 0);
    p->bias = ek_input(m, c, 4);
    p->mult = ek_input(m, c, 5);
    p->shift = ek_input(m, c, 6);
    if ((rc = ek_sparse_weight_read(m, c, p->O, p->K, EK_DT_INT8, (uint16_t *)(p + 1), &p->sw, e))) return rc;
    if (!p->mult || p->mult->dtype != EK_DT_INT32 || p->mult->count != p->O || !p->shift ||
        p->shift->dtype != EK_DT_INT8 || p->shift->count != p->O)
        return ek_bad(e, c, "multiplier must be int32 [%lld] and shift int8 [%lld]", (long long)p->O, (long long)p->O);
    if ((rc = ek_check_shifts(p->shift, c, e))) return rc;
    ek_requant_attrs rq;
    if ((rc = ek_read_requant_attrs(c, 1, 0, &rq, e))) return rc;
    p->zx = rq.zx; p->zy = rq.zy; p->lo = rq.lo; p->hi = rq.hi;
    p->pb = p->P < EK_SPARSE_PIXELS ? (p->P > 0 ? p->P : 1) : EK_SPARSE_PIXELS;
    p->ldx = round16(p->pb);
    p->pblocks = (p->P + p->pb - 1) / p->pb;
    split_tasks(p->sw.rows, p->Nb * p->pblocks, &p->rows_per_chunk, &p->chunks);
    p->off_acc = ek_align64((size_t)(p->K * p->ldx) * sizeof(int16_t));
    c->scratch = p->off_acc + ek_align64((size_t)(8 * p->ldx) * sizeof(int32_t));
    return EK_STATUS_OK;
}

static void task(void *ctx, int64_t t, uint8_t *scratch) {
    const qsparse_run *r = ctx;
    const qsparse_params *p = r->p;
    const ek_sparse_weight *sw = &p->sw;
    int64_t chunk = t % p->chunks;
    t /= p->chunks;
    int64_t pbk = t % p->pblocks, n = t / p->pblocks;
    int64_t p0 = pbk * p->pb, np = p->P - p0 < p->pb ? p->P - p0 : p->pb, npad = round16(np);
    int16_t *x16 = (int16_t *)scratch;
    int32_t *acc = (int32_t *)(scratch + p->off_acc);
    const int16_t zx = (int16_t)p->zx;
    for (int64_t k = 0; k < p->K; k++) {
        int16_t *dst = x16 + k * p->ldx;
        if (p->fc) {
            const int8_t *src = r->x + p0 * p->K + k;
            for (int64_t j = 0; j < np; j++) dst[j] = (int16_t)(src[j * p->K] - zx);
        } else {
            const int8_t *src = r->x + (n * p->K + k) * p->P + p0;
            for (int64_t j = 0; j < np; j++) dst[j] = (int16_t)(src[j] - zx);
        }
        for (int64_t j = np; j < npad; j++) dst[j] = 0;
    }
    int64_t r0 = chunk * p->rows_per_chunk, r1 = r0 + p->rows_per_chunk < sw->rows ? r0 + p->rows_per_chunk : sw->rows;
    for (int64_t row = r0; row < r1; row++) {
        int64_t b0, b1;
        ek_sparse_row(sw, row, &b0, &b1);
        r->spmm((int)npad, sw->B, (int)(b1 - b0), sw->idx + b0, r->values + b0 * sw->B, sw->B, x16, p->ldx, acc,
                (int)p->ldx);
        for (int b = 0; b < sw->B; b++) {
            int64_t o = row * sw->B + b;
            if (o >= p->O) break;
            const int32_t *a = acc + b * p->ldx;
            const int64_t bias = r->bias[o];
            const int32_t mlt = r->mult[o], sft = r->shift[o];
            if (p->fc) {
                for (int64_t j = 0; j < np; j++)
                    r->y[(p0 + j) * p->O + o] = ek_requantize((int64_t)a[j] + bias, mlt, sft, p->zy, p->lo, p->hi);
            } else {
                int8_t *dst = r->y + (n * p->O + o) * p->P + p0;
                for (int64_t j = 0; j < np; j++)
                    dst[j] = ek_requantize((int64_t)a[j] + bias, mlt, sft, p->zy, p->lo, p->hi);
            }
        }
    }
}

int ek_run_qsparse_gemm(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const qsparse_params *p = c->params;
    qsparse_run r = {p, 0, ek_data(m, p->x), (const int8_t *)p->sw.values->cdata, ek_data(m, p->bias),
                     ek_data(m, p->mult), ek_data(m, p->shift), ek_data(m, p->y)};
    ek_spmm_f32_fn unused;
    ek_select_spmm(m, &r.spmm, &unused);
    if (p->y->count == 0) return EK_STATUS_OK;
    ek_parallel(m, p->Nb * p->pblocks * p->chunks, task, &r);
    return EK_STATUS_OK;
}
