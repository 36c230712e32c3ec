/*
 * Elementwise float (and bool / integer where ONNX graphs use them) kernels: Unary (every
 * activation and math function, EK_FN_*), Binary with numpy broadcasting (arithmetic,
 * comparisons into bool, logical and / or), and Where.
 */
#include <math.h>
#include <string.h>

#include "../ek_internal.h"
#include "ek_activation.h"
#include "ek_broadcast.h"

/* -- Unary ------------------------------------------------------------------------------- */
typedef struct {
    const ek_tensor *x, *y;
    ek_act act;
} unary_params;

int ek_prepare_unary(ek_model *m, ek_call *c, ek_err *e) {
    int rc = ek_check_arity(c, 1, 1, 1, e);
    if (rc) return rc;
    unary_params *p = calloc(1, sizeof *p);
    if (!p) return ek_fail(e, EK_STATUS_NOMEM, "out of memory");
    c->params = p;
    int64_t fn;
    if ((rc = ek_attr_int(c, EK_ATTR_FUNC, 1, 0, 0, EK_FN_UNARY_MAX, &fn, e))) return rc;
    int dt = fn == EK_FN_NOT ? EK_DT_BOOL : EK_DT_FLOAT32;
    if (!(p->x = ek_operand(m, c, 0, 0, dt, -1, e)) || !(p->y = ek_operand(m, c, 1, 0, dt, -1, e))) return EK_STATUS_INVALID;
    if (p->x->count != p->y->count) return ek_bad(e, c, "input and output sizes differ");
    return ek_act_parse(c, (int)fn, 0, &p->act, e);
}

int ek_run_unary(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const unary_params *p = c->params;
    if (p->act.fn == EK_FN_NOT) {
        const uint8_t *x = ek_data(m, p->x);
        uint8_t *y = ek_data(m, p->y);
        for (int64_t i = 0; i < p->x->count; i++) y[i] = !x[i];
        return EK_STATUS_OK;
    }
    const float *x = ek_data(m, p->x);
    float *y = ek_data(m, p->y);
    if (x != y) memmove(y, x, p->x->count * sizeof(float));
    ek_activate_array(&p->act, y, p->x->count);
    return EK_STATUS_OK;
}

/* -- Binary ------------------------------------------------------------------------------ */
typedef struct {
    const ek_tensor *a, *b, *y;
    ek_bcast bc;
    ek_bcast_row row;
} binary_params;

typedef struct {
    const void *a, *b;
    void *y;
} binary_run;

#define ROW(name, TA, TY, expr)                                                                       \
    static void name(void *ctx, const int64_t *off, const int64_t *step, int64_t yoff, int64_t n) {   \
        const binary_run *r = ctx;                                                                    \
        const TA *pa = (const TA *)r->a + off[0], *pb = (const TA *)r->b + off[1];                    \
        TY *py = (TY *)r->y + yoff;                                                                   \
        const int64_t sa = step[0], sb = step[1];                                                     \
        for (int64_t i = 0; i < n; i++) {                                                             \
            TA x = pa[i * sa], z = pb[i * sb];                                                        \
            py[i] = (TY)(expr);                                                                       \
        }                                                                                             \
    }

ROW(add_f32, float, float, x + z)
ROW(sub_f32, float, float, x - z)
ROW(mul_f32, float, float, x * z)
ROW(div_f32, float, float, x / z)
ROW(pow_f32, float, float, powf(x, z))
ROW(max_f32, float, float, x > z || x != x ? x : z)
ROW(min_f32, float, float, x < z || x != x ? x : z)
ROW(prelu_f32, float, float, x < 0.0f ? x * z : x)
ROW(add_i32, int32_t, int32_t, (uint32_t)x + (uint32_t)z)
ROW(sub_i32, int32_t, int32_t, (uint32_t)x - (uint32_t)z)
ROW(mul_i32, int32_t, int32_t, (uint32_t)x * (uint32_t)z)
ROW(max_i32, int32_t, int32_t, x > z ? x : z)
ROW(min_i32, int32_t, int32_t, x < z ? x : z)
ROW(add_i64, int64_t, int64_t, (uint64_t)x + (uint64_t)z)
ROW(sub_i64, int64_t, int64_t, (uint64_t)x - (uint64_t)z)
ROW(mul_i64, int64_t, int64_t, (uint64_t)x * (uint64_t)z)
ROW(max_i64, int64_t, int64_t, x > z ? x : z)
ROW(min_i64, int64_t, int64_t, x < z ? x : z)
ROW(eq_f32, float, uint8_t, x == z)
ROW(lt_f32, float, uint8_t, x < z)
ROW(gt_f32, float, uint8_t, x > z)
ROW(eq_i8, int8_t, uint8_t, x == z)
ROW(lt_i8, int8_t, uint8_t, x < z)
ROW(gt_i8, int8_t, uint8_t, x > z)
ROW(eq_u8, uint8_t, uint8_t, x == z)
ROW(lt_u8, uint8_t, uint8_t, x < z)
ROW(gt_u8, uint8_t, uint8_t, x > z)
ROW(eq_i32, int32_t, uint8_t, x == z)
ROW(lt_i32, int32_t, uint8_t, x < z)
ROW(gt_i32, int32_t, uint8_t, x > z)
ROW(eq_i64, int64_t, uint8_t, x == z)
ROW(lt_i64, int64_t, uint8_t, x < z)
ROW(gt_i64, int64_t, uint8_t, x > z)
ROW(and_b, uint8_t, uint8_t, x && z)
ROW(or_b, uint8_t, uint8_t, x || z)

static ek_bcast_row pick_row(int fn, int dt, int *out_dt) {
    *out_dt = dt;
    if (fn == EK_FN_EQUAL || fn == EK_FN_LESS || fn == EK_FN_GREATER) {
        *out_dt = EK_DT_BOOL;
        int k = fn - EK_FN_EQUAL;
        switch (dt) {
        case EK_DT_FLOAT32: return (ek_bcast_row[]){eq_f32, lt_f32, gt_f32}[k];
        case EK_DT_INT8: return (ek_bcast_row[]){eq_i8, lt_i8, gt_i8}[k];
        case EK_DT_UINT8: case EK_DT_BOOL: return (ek_bcast_row[]){eq_u8, lt_u8, gt_u8}[k];
        case EK_DT_INT32: return (ek_bcast_row[]){eq_i32, lt_i32, gt_i32}[k];
        case EK_DT_INT64: return (ek_bcast_row[]){eq_i64, lt_i64, gt_i64}[k];
        default: return NULL;
        }
    }
    if (fn == EK_FN_AND || fn == EK_FN_OR) return dt == EK_DT_BOOL ? (fn == EK_FN_AND ? and_b : or_b) : NULL;
    if (dt == EK_DT_FLOAT32) {
        switch (fn) {
        case EK_FN_ADD: return add_f32;
        case EK_FN_SUB: return sub_f32;
        case EK_FN_MUL: return mul_f32;
        case EK_FN_DIV: return div_f32;
        case EK_FN_POW: return pow_f32;
        case EK_FN_MAX: return max_f32;
        case EK_FN_MIN: return min_f32;
        case EK_FN_PRELU: return prelu_f32;
        default: return NULL;
        }
    }
    if (dt == EK_DT_INT32 || dt == EK_DT_INT64) {
        int i = dt == EK_DT_INT64;
        switch (fn) {
        case EK_FN_ADD: return i ? add_i64 : add_i32;
        case EK_FN_SUB: return i ? sub_i64 : sub_i32;
        case EK_FN_MUL: return i ? mul_i64 : mul_i32;
        case EK_FN_MAX: return i ? max_i64 : max_i32;
        case EK_FN_MIN: return i ? min_i64 : min_i32;
        default: return NULL;
        }
    }
    return NULL;
}

int ek_prepare_binary(ek_model *m, ek_call *c, ek_err *e) {
    int rc = ek_check_arity(c, 2, 2, 1, e);
    if (rc) return rc;
    binary_params *p = calloc(1, sizeof *p);
    if (!p) return ek_fail(e, EK_STATUS_NOMEM, "out of memory");
    c->params = p;
    int64_t fn;
    if ((rc = ek_attr_int(c, EK_ATTR_FUNC, 1, 0, EK_FN_ADD, EK_FN_BINARY_MAX, &fn, e))) return rc;
    if (!(p->a = ek_operand(m, c, 0, 0, 0, -1, e)) || !(p->b = ek_operand(m, c, 0, 1, p->a->dtype, -1, e)))
        return EK_STATUS_INVALID;
    int out_dt;
    p->row = pick_row((int)fn, p->a->dtype, &out_dt);
    if (!p->row) return ek_bad(e, c, "function %d is not implemented for %s", (int)fn, ek_dtype_name(p->a->dtype));
    if (!(p->y = ek_operand(m, c, 1, 0, out_dt, -1, e))) return EK_STATUS_INVALID;
    if (p->a->packing != EK_PACK_NONE || p->b->packing != EK_PACK_NONE) return ek_bad(e, c, "packed operand");
    const ek_tensor *ops[2] = {p->a, p->b};
    if (!ek_bcast_init(&p->bc, p->y, 2, ops)) return ek_bad(e, c, "inputs do not broadcast to the output's shape");
    return EK_STATUS_OK;
}

int ek_run_binary(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const binary_params *p = c->params;
    if (p->y->count == 0) return EK_STATUS_OK;
    binary_run r = {ek_data(m, p->a), ek_data(m, p->b), ek_data(m, p->y)};
    ek_bcast_run(&p->bc, p->row, &r);
    return EK_STATUS_OK;
}

/* -- Where -------------------------------------------------------------------------------- */
typedef struct {
    const ek_tensor *cond, *a, *b, *y;
    ek_bcast bc;
} where_params;

typedef struct {
    const uint8_t *cond, *a, *b;
    uint8_t *y;
    size_t es;
} where_run;

static void where_row(void *ctx, const int64_t *off, const int64_t *step, int64_t yoff, int64_t n) {
    const where_run *r = ctx;
    for (int64_t i = 0; i < n; i++) {
        const uint8_t *src = r->cond[off[0] + i * step[0]] ? r->a + (off[1] + i * step[1]) * r->es
                                                            : r->b + (off[2] + i * step[2]) * r->es;
        memcpy(r->y + (yoff + i) * r->es, src, r->es);
    }
}

int ek_prepare_where(ek_model *m, ek_call *c, ek_err *e) {
    int rc = ek_check_arity(c, 3, 3, 1, e);
    if (rc) return rc;
    where_params *p = calloc(1, sizeof *p);
    if (!p) return ek_fail(e, EK_STATUS_NOMEM, "out of memory");
    c->params = p;
    if (!(p->cond = ek_operand(m, c, 0, 0, EK_DT_BOOL, -1, e)) || !(p->a = ek_operand(m, c, 0, 1, 0, -1, e)) ||
        !(p->b = ek_operand(m, c, 0, 2, p->a->dtype, -1, e)) || !(p->y = ek_operand(m, c, 1, 0, p->a->dtype, -1, e)))
        return EK_STATUS_INVALID;
    if (p->a->packing != EK_PACK_NONE || p->b->packing != EK_PACK_NONE) return ek_bad(e, c, "packed operand");
    const ek_tensor *ops[3] = {p->cond, p->a, p->b};
    if (!ek_bcast_init(&p->bc, p->y, 3, ops)) return ek_bad(e, c, "inputs do not broadcast to the output's shape");
    return EK_STATUS_OK;
}

int ek_run_where(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const where_params *p = c->params;
    if (p->y->count == 0) return EK_STATUS_OK;
    where_run r = {ek_data(m, p->cond), ek_data(m, p->a), ek_data(m, p->b), ek_data(m, p->y), p->y->elem_size};
    ek_bcast_run(&p->bc, where_row, &r);
    return EK_STATUS_OK;
}
