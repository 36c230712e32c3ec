/*
 * Elementwise integer kernels (compiler/integer_kernels.py): QAdd (TFLite's scheme: both
 * inputs rescaled to a common 2^-left_shift grid, then requantized), QMul, QRequantize,
 * QLookupTable, and the float boundaries Quantize, Dequantize and DequantizeWeight.
 *
 * Any int8 -> int8 function is tabulated at load and run as a 256-entry lookup (ek_lookup_i8):
 * QRequantize, and QAdd / QMul whose other operand is a constant scalar.  Big calls are split
 * over the thread pool (ek_parallel_range); each element is computed alone, so the split never
 * changes a result.
 */
#include <math.h>
#include <string.h>

#include "../ek_internal.h"
#include "ek_broadcast.h"
#include "ek_requant.h"
#include "ek_simd.h"

typedef struct {
    const ek_tensor *a, *b, *y;
    ek_bcast bc;
    int32_t za, zb, zy, lo, hi, ma, sa, mb, sb, m, s, left, subtract;
    int mul;
    int simd_ok;         /* QAdd: every intermediate of the SIMD path fits int32 (see below) */
    ek_qadd_consts add;  /* QAdd's constants for the SIMD path */
    const ek_tensor *x;  /* one operand a constant scalar: y = lut[x + 128] over the other one */
    int8_t lut[256];
} qbinary_params;

/* Elements per thread below which an elementwise call is not split (a split costs ~1 us, or a
 * wake-up of ~10 us when the workers sleep; 16 K int8 elements take ~5-10 us). */
#define EK_ELEMENTWISE_CHUNK 16384

typedef struct {
    const qbinary_params *p;
    const ek_simd_kernels *simd; /* NULL: portable loops */
    const int8_t *a, *b;
    int8_t *y;
} qbinary_run;

static int get_i32(const ek_call *c, int key, int required, int64_t def, int64_t lo, int64_t hi, int32_t *out, ek_err *e) {
    int64_t v;
    int rc = ek_attr_int(c, key, required, def, lo, hi, &v, e);
    *out = (int32_t)v;
    return rc;
}

static int8_t qadd_one(const qbinary_params *p, int64_t a, int64_t b) {
    const int64_t left = (int64_t)1 << p->left;
    int64_t va = ek_rescale((a - p->za) * left, p->ma, p->sa), vb = ek_rescale((b - p->zb) * left, p->mb, p->sb);
    return ek_requantize(p->subtract ? va - vb : va + vb, p->m, p->s, p->zy, p->lo, p->hi);
}

static int8_t qmul_one(const qbinary_params *p, int64_t a, int64_t b) {
    return ek_requantize((a - p->za) * (b - p->zb), p->m, p->s, p->zy, p->lo, p->hi);
}

/* x·scale + bias with constant scalars (PP-OCR's learnable affine blocks, scalar Add/Mul) is an
 * int8 -> int8 function of the other operand: tabulate it once, run it as a lookup. */
static void tabulate_scalar_operand(qbinary_params *p) {
    int scalar_b = p->b->cdata && p->b->count == 1 && p->b->packing == EK_PACK_NONE && p->a->count == p->y->count;
    int scalar_a = !scalar_b && p->a->cdata && p->a->count == 1 && p->a->packing == EK_PACK_NONE && p->b->count == p->y->count;
    if (!scalar_a && !scalar_b) return;
    int64_t k = scalar_b ? ((const int8_t *)p->b->cdata)[0] : ((const int8_t *)p->a->cdata)[0];
    p->x = scalar_b ? p->a : p->b;
    for (int64_t v = -128; v < 128; v++) {
        int64_t a = scalar_b ? v : k, b = scalar_b ? k : v;
        p->lut[v + 128] = p->mul ? qmul_one(p, a, b) : qadd_one(p, a, b);
    }
}

static int prepare_qbinary(ek_model *m, ek_call *c, ek_err *e, int mul) {
    int rc = ek_check_arity(c, 2, 2, 1, e);
    if (rc) return rc;
    qbinary_params *p = calloc(1, sizeof *p);
    if (!p) return ek_fail(e, EK_STATUS_NOMEM, "out of memory");
    c->params = p;
    p->mul = mul;
    if (!(p->a = ek_operand(m, c, 0, 0, EK_DT_INT8, -1, e)) || !(p->b = ek_operand(m, c, 0, 1, EK_DT_INT8, -1, e)) ||
        !(p->y = ek_operand(m, c, 1, 0, EK_DT_INT8, -1, e)))
        return EK_STATUS_INVALID;
    const ek_tensor *ops[2] = {p->a, p->b};
    if (!ek_bcast_init(&p->bc, p->y, 2, ops)) return ek_bad(e, c, "inputs do not broadcast to the output's shape");
    if ((rc = get_i32(c, EK_ATTR_A_ZP, 1, 0, -128, 127, &p->za, e)) || (rc = get_i32(c, EK_ATTR_B_ZP, 1, 0, -128, 127, &p->zb, e)) ||
        (rc = get_i32(c, EK_ATTR_OUTPUT_ZP, 1, 0, -128, 127, &p->zy, e)) ||
        (rc = get_i32(c, EK_ATTR_MULTIPLIER, 1, 0, 0, INT32_MAX, &p->m, e)) ||
        (rc = get_i32(c, EK_ATTR_SHIFT, 1, 0, -30, 31, &p->s, e)) ||
        (rc = get_i32(c, EK_ATTR_ACT_MIN, 0, -128, -128, 127, &p->lo, e)) ||
        (rc = get_i32(c, EK_ATTR_ACT_MAX, 0, 127, -128, 127, &p->hi, e)))
        return rc;
    if (!mul && ((rc = get_i32(c, EK_ATTR_A_MULTIPLIER, 1, 0, 0, INT32_MAX, &p->ma, e)) ||
                 (rc = get_i32(c, EK_ATTR_A_SHIFT, 1, 0, -30, 31, &p->sa, e)) ||
                 (rc = get_i32(c, EK_ATTR_B_MULTIPLIER, 1, 0, 0, INT32_MAX, &p->mb, e)) ||
                 (rc = get_i32(c, EK_ATTR_B_SHIFT, 1, 0, -30, 31, &p->sb, e)) ||
                 (rc = get_i32(c, EK_ATTR_LEFT_SHIFT, 1, 0, 0, 24, &p->left, e)) ||
                 (rc = get_i32(c, EK_ATTR_SUBTRACT, 0, 0, 0, 1, &p->subtract, e))))
        return rc;
    if (!mul) {
        /* The SIMD QAdd keeps (x − z)·2^left and va + vb in int32 lanes: check both over all 256
         * values of each input, with the exact scalar rescale. */
        int64_t reach_a = 0, reach_b = 0;
        for (int64_t v = -128; v < 128; v++) {
            int64_t ra = ek_rescale((v - p->za) * ((int64_t)1 << p->left), p->ma, p->sa);
            int64_t rb = ek_rescale((v - p->zb) * ((int64_t)1 << p->left), p->mb, p->sb);
            if ((ra < 0 ? -ra : ra) > reach_a) reach_a = ra < 0 ? -ra : ra;
            if ((rb < 0 ? -rb : rb) > reach_b) reach_b = rb < 0 ? -rb : rb;
        }
        p->simd_ok = ((int64_t)255 << p->left) < ((int64_t)1 << 31) && reach_a + reach_b < ((int64_t)1 << 31);
        p->add = (ek_qadd_consts){p->za, p->zb, p->left, p->ma, 31 + p->sa, p->mb, 31 + p->sb, p->subtract,
                                  {p->m, 31 + p->s, p->zy, p->lo, p->hi}};
    }
    tabulate_scalar_operand(p);
    return EK_STATUS_OK;
}

int ek_prepare_qadd(ek_model *m, ek_call *c, ek_err *e) { return prepare_qbinary(m, c, e, 0); }
int ek_prepare_qmul(ek_model *m, ek_call *c, ek_err *e) { return prepare_qbinary(m, c, e, 1); }

static void qadd_row(void *ctx, const int64_t *off, const int64_t *step, int64_t yoff, int64_t n) {
    const qbinary_run *r = ctx;
    const qbinary_params *p = r->p;
    const int8_t *a = r->a + off[0], *b = r->b + off[1];
    int8_t *y = r->y + yoff;
    int64_t i = 0;
    if (r->simd && p->simd_ok && step[0] <= 1 && step[1] <= 1)
        i = r->simd->qadd(a, (int)step[0], b, (int)step[1], n, &p->add, y);
    for (; i < n; i++) y[i] = qadd_one(p, a[i * step[0]], b[i * step[1]]);
}

static void qmul_row(void *ctx, const int64_t *off, const int64_t *step, int64_t yoff, int64_t n) {
    const qbinary_run *r = ctx;
    const qbinary_params *p = r->p;
    const int8_t *a = r->a + off[0], *b = r->b + off[1];
    int8_t *y = r->y + yoff;
    int64_t i = 0;
    if (r->simd && step[0] <= 1 && step[1] <= 1) {
        const ek_rq rq = {p->m, 31 + p->s, p->zy, p->lo, p->hi};
        i = r->simd->qmul(a, (int)step[0], b, (int)step[1], n, p->za, p->zb, &rq, y);
    }
    for (; i < n; i++) y[i] = qmul_one(p, a[i * step[0]], b[i * step[1]]);
}

static void qbinary_range(void *ctx, int64_t begin, int64_t end) {
    const qbinary_run *r = ctx;
    ek_bcast_run_range(&r->p->bc, r->p->mul ? qmul_row : qadd_row, (void *)r, begin, end);
}

int ek_run_qbinary(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const qbinary_params *p = c->params;
    if (p->y->count == 0) return EK_STATUS_OK;
    if (p->x) {
        ek_lookup_i8(m, ek_data(m, p->x), p->y->count, p->lut, ek_data(m, p->y));
        return EK_STATUS_OK;
    }
    qbinary_run r = {p, ek_simd_for(m), ek_data(m, p->a), ek_data(m, p->b), ek_data(m, p->y)};
    ek_parallel_range(m, ek_bcast_count(&p->bc), EK_ELEMENTWISE_CHUNK, qbinary_range, &r);
    return EK_STATUS_OK;
}

/* -- unary: QRequantize, QLookupTable, Quantize, Dequantize ----------------------------- */
typedef struct {
    const ek_tensor *x, *table, *y;
    int32_t zx, zy, m, s;
    float scale;
    int8_t lut[256]; /* QRequantize: its value for every int8 input, indexed by x + 128 */
} qunary_params;

typedef struct {
    const ek_simd_kernels *simd;
    const int8_t *x, *table;
    int8_t *y;
} lookup_run;

static void lookup_range(void *ctx, int64_t begin, int64_t end) {
    const lookup_run *r = ctx;
    int64_t i = begin + (r->simd ? r->simd->lookup(r->x + begin, end - begin, r->table, r->y + begin) : 0);
    for (; i < end; i++) r->y[i] = r->table[r->x[i] + 128];
}

void ek_lookup_i8(ek_model *m, const int8_t *x, int64_t n, const int8_t *table, int8_t *y) {
    lookup_run r = {ek_simd_for(m), x, table, y};
    ek_parallel_range(m, n, 2 * EK_ELEMENTWISE_CHUNK, lookup_range, &r);
}

static int prepare_unary(ek_model *m, ek_call *c, ek_err *e, int in_dt, int out_dt, int n_in, qunary_params **out) {
    int rc = ek_check_arity(c, n_in, n_in, 1, e);
    if (rc) return rc;
    qunary_params *p = calloc(1, sizeof *p);
    if (!p) return ek_fail(e, EK_STATUS_NOMEM, "out of memory");
    c->params = p;
    if (!(p->x = ek_operand(m, c, 0, 0, in_dt, -1, e)) || !(p->y = ek_operand(m, c, 1, 0, out_dt, -1, e)))
        return EK_STATUS_INVALID;
    if (p->x->count != p->y->count) return ek_bad(e, c, "input and output sizes differ");
    *out = p;
    return EK_STATUS_OK;
}

int ek_prepare_qrequantize(ek_model *m, ek_call *c, ek_err *e) {
    qunary_params *p;
    int rc = prepare_unary(m, c, e, EK_DT_INT8, EK_DT_INT8, 1, &p);
    if (rc) return rc;
    if ((rc = get_i32(c, EK_ATTR_INPUT_ZP, 1, 0, -128, 127, &p->zx, e)) ||
        (rc = get_i32(c, EK_ATTR_OUTPUT_ZP, 1, 0, -128, 127, &p->zy, e)) ||
        (rc = get_i32(c, EK_ATTR_MULTIPLIER, 1, 0, 0, INT32_MAX, &p->m, e)) ||
        (rc = get_i32(c, EK_ATTR_SHIFT, 1, 0, -30, 31, &p->s, e)))
        return rc;
    /* an int8 -> int8 function: tabulated once, run as a lookup */
    for (int v = -128; v < 128; v++) p->lut[v + 128] = ek_requantize((int64_t)v - p->zx, p->m, p->s, p->zy, -128, 127);
    return EK_STATUS_OK;
}

int ek_run_qrequantize(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const qunary_params *p = c->params;
    ek_lookup_i8(m, ek_data(m, p->x), p->x->count, p->lut, ek_data(m, p->y));
    return EK_STATUS_OK;
}

int ek_prepare_qlookup_table(ek_model *m, ek_call *c, ek_err *e) {
    qunary_params *p;
    int rc = prepare_unary(m, c, e, EK_DT_INT8, EK_DT_INT8, 2, &p);
    if (rc) return rc;
    if (!(p->table = ek_operand(m, c, 0, 1, EK_DT_INT8, -1, e))) return EK_STATUS_INVALID;
    if (p->table->count != 256 || p->table->packing != EK_PACK_NONE)
        return ek_bad(e, c, "table must hold 256 plain int8 values");
    return EK_STATUS_OK;
}

int ek_run_qlookup_table(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const qunary_params *p = c->params;
    ek_lookup_i8(m, ek_data(m, p->x), p->x->count, ek_data(m, p->table), ek_data(m, p->y));
    return EK_STATUS_OK;
}

static int quant_attrs(const ek_call *c, qunary_params *p, ek_err *e) {
    double scale;
    int rc = ek_attr_float(c, EK_ATTR_SCALE, 1, 0.0, &scale, e);
    if (rc) return rc;
    p->scale = (float)scale;
    if (!(p->scale > 0.0f) || isinf(p->scale)) return ek_bad(e, c, "scale %g is not a positive finite float", scale);
    return get_i32(c, EK_ATTR_ZERO_POINT, 1, 0, -128, 127, &p->zy, e);
}

int ek_prepare_quantize(ek_model *m, ek_call *c, ek_err *e) {
    qunary_params *p;
    int rc = prepare_unary(m, c, e, EK_DT_FLOAT32, EK_DT_INT8, 1, &p);
    return rc ? rc : quant_attrs(c, p, e);
}

typedef struct {
    const qunary_params *p;
    const ek_simd_kernels *simd;
    const float *x;
    int8_t *y;
} quantize_run;

static void quantize_range(void *ctx, int64_t begin, int64_t end) {
    const quantize_run *r = ctx;
    const float *x = r->x;
    int8_t *y = r->y;
    int64_t i = begin + (r->simd ? r->simd->quantize(x + begin, end - begin, r->p->scale, r->p->zy, y + begin) : 0);
    /* QuantizeLinear: float32 division, round half to even (rintf in the default mode). */
    for (; i < end; i++) {
        float v = rintf(x[i] / r->p->scale) + (float)r->p->zy;
        y[i] = v != v ? (int8_t)0 : v <= -128.0f ? (int8_t)-128 : v >= 127.0f ? (int8_t)127 : (int8_t)v;
    }
}

int ek_run_quantize(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const qunary_params *p = c->params;
    quantize_run r = {p, ek_simd_for(m), ek_data(m, p->x), ek_data(m, p->y)};
    ek_parallel_range(m, p->x->count, EK_ELEMENTWISE_CHUNK, quantize_range, &r);
    return EK_STATUS_OK;
}

int ek_prepare_dequantize(ek_model *m, ek_call *c, ek_err *e) {
    qunary_params *p;
    int rc = prepare_unary(m, c, e, EK_DT_INT8, EK_DT_FLOAT32, 1, &p);
    return rc ? rc : quant_attrs(c, p, e);
}

int ek_run_dequantize(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const qunary_params *p = c->params;
    const int8_t *x = ek_data(m, p->x);
    float *y = ek_data(m, p->y);
    for (int64_t i = 0; i < p->x->count; i++) y[i] = (float)((int32_t)x[i] - p->zy) * p->scale;
    return EK_STATUS_OK;
}

/* -- DequantizeWeight -------------------------------------------------------------------- */
typedef struct {
    const ek_tensor *w, *scale, *y;
    int64_t rows, cols, gs;
    int transpose;
} dqw_params;

int ek_prepare_dequantize_weight(ek_model *m, ek_call *c, ek_err *e) {
    int rc = ek_check_arity(c, 2, 2, 1, e);
    if (rc) return rc;
    dqw_params *p = calloc(1, sizeof *p);
    if (!p) return ek_fail(e, EK_STATUS_NOMEM, "out of memory");
    c->params = p;
    if (!(p->w = ek_operand(m, c, 0, 0, EK_DT_INT8, -1, e)) || !(p->scale = ek_operand(m, c, 0, 1, EK_DT_FLOAT32, -1, e)) ||
        !(p->y = ek_operand(m, c, 1, 0, EK_DT_FLOAT32, -1, e)))
        return EK_STATUS_INVALID;
    int64_t t;
    if ((rc = ek_attr_int(c, EK_ATTR_GROUP_SIZE, 0, 0, 0, EK_MAX_ELEMENTS, &p->gs, e)) ||
        (rc = ek_attr_int(c, EK_ATTR_TRANSPOSE, 0, 0, 0, 1, &t, e)))
        return rc;
    p->transpose = (int)t;
    if (p->w->rank < 1 || p->w->dims[0] < 1) return ek_bad(e, c, "weight needs a leading output axis");
    p->rows = p->w->dims[0];
    p->cols = p->w->count / p->rows;
    if (p->y->count != p->w->count) return ek_bad(e, c, "output size differs from the weight's");
    if (p->transpose && (p->w->rank != 2 || p->y->rank != 2 || p->y->dims[0] != p->cols))
        return ek_bad(e, c, "transpose needs a 2-D weight and its transposed output");
    if (p->gs > 0 && (p->cols % p->gs || p->scale->count != p->rows * (p->cols / p->gs)))
        return ek_bad(e, c, "group scales do not fit the weight");
    if (p->gs == 0 && p->scale->count != p->rows) return ek_bad(e, c, "needs one scale per output channel");
    return EK_STATUS_OK;
}

int ek_run_dequantize_weight(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const dqw_params *p = c->params;
    const uint8_t *w = ek_data(m, p->w);
    const float *s = ek_data(m, p->scale);
    float *y = ek_data(m, p->y);
    int8_t q[256];
    for (int64_t o = 0; o < p->rows; o++)
        for (int64_t k0 = 0; k0 < p->cols; k0 += 256) {
            int64_t n = p->cols - k0 < 256 ? p->cols - k0 : 256;
            ek_unpack_int8(p->w, w, o * p->cols + k0, n, q);
            for (int64_t i = 0; i < n; i++) {
                int64_t k = k0 + i;
                float sc = p->gs ? s[o * (p->cols / p->gs) + k / p->gs] : s[o];
                float v = (float)q[i] * sc;
                if (p->transpose) y[k * p->rows + o] = v;
                else y[o * p->cols + k] = v;
            }
        }
    return EK_STATUS_OK;
}
