/*
 * Data movement on any dtype: Copy (Reshape, Flatten, Squeeze, Unsqueeze, Identity: the data
 * of a C-ordered tensor does not change, only its arena slot), Transpose (also DepthToSpace
 * and SpaceToDepth, as a transpose of a 6-D view), Concat, QConcat (with per-input
 * requantization: an int8 -> int8 function, tabulated at load and run as a lookup) and Cast.
 */
#include <math.h>
#include <string.h>

#include "../ek_internal.h"
#include "ek_requant.h"
#include "ek_simd.h"

typedef struct {
    const ek_tensor *x, *y;
} copy_params;

int ek_prepare_copy(ek_model *m, ek_call *c, ek_err *e) {
    int rc = ek_check_arity(c, 1, 1, 1, e);
    if (rc) return rc;
    copy_params *p = calloc(1, sizeof *p);
    if (!p) return ek_fail(e, EK_STATUS_NOMEM, "out of memory");
    c->params = p;
    if (!(p->x = ek_operand(m, c, 0, 0, 0, -1, e)) || !(p->y = ek_operand(m, c, 1, 0, 0, -1, e))) return EK_STATUS_INVALID;
    if (p->x->packing != EK_PACK_NONE || p->x->nbytes != p->y->nbytes || p->x->elem_size != p->y->elem_size)
        return ek_bad(e, c, "input and output sizes differ");
    return EK_STATUS_OK;
}

int ek_run_copy(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const copy_params *p = c->params;
    void *dst = ek_data(m, p->y);
    const void *src = ek_data(m, p->x);
    if (dst != src && p->y->nbytes) memmove(dst, src, p->y->nbytes);
    return EK_STATUS_OK;
}

/* -- Transpose ---------------------------------------------------------------------------- */
typedef struct {
    const ek_tensor *x, *y;
    int rank;
    int64_t odims[EK_MAX_RANK], istr[EK_MAX_RANK]; /* output dims, input stride per output dim */
} transpose_params;

int ek_prepare_transpose(ek_model *m, ek_call *c, ek_err *e) {
    int rc = ek_check_arity(c, 1, 1, 1, e);
    if (rc) return rc;
    transpose_params *p = calloc(1, sizeof *p);
    if (!p) return ek_fail(e, EK_STATUS_NOMEM, "out of memory");
    c->params = p;
    if (!(p->x = ek_operand(m, c, 0, 0, 0, -1, e)) || !(p->y = ek_operand(m, c, 1, 0, 0, -1, e))) return EK_STATUS_INVALID;
    if (p->x->packing != EK_PACK_NONE || p->x->elem_size != p->y->elem_size || p->x->count != p->y->count)
        return ek_bad(e, c, "input and output sizes differ");
    int64_t perm[EK_MAX_RANK], dims[EK_MAX_RANK];
    int n = 0, nd = 0;
    if ((rc = ek_attr_int_list(c, EK_ATTR_PERM, EK_MAX_RANK, 0, EK_MAX_RANK - 1, perm, &n, e))) return rc;
    if (ek_attr_find(c, EK_ATTR_DIMS)) {
        if ((rc = ek_attr_int_list(c, EK_ATTR_DIMS, EK_MAX_RANK, 0, EK_MAX_ELEMENTS, dims, &nd, e))) return rc;
        int64_t count = 1;
        for (int d = 0; d < nd; d++) count = count > EK_MAX_ELEMENTS ? count : count * dims[d];
        if (count != p->x->count) return ek_bad(e, c, "view dims hold %lld elements, the input %lld", (long long)count, (long long)p->x->count);
    } else {
        nd = p->x->rank;
        memcpy(dims, p->x->dims, sizeof dims);
    }
    if (n != nd) return ek_bad(e, c, "perm has %d entries for rank %d", n, nd);
    unsigned seen = 0;
    for (int d = 0; d < n; d++) {
        if (perm[d] >= n || (seen >> perm[d] & 1)) return ek_bad(e, c, "perm is not a permutation");
        seen |= 1u << perm[d];
    }
    int64_t stride[EK_MAX_RANK], s = 1;
    for (int d = n - 1; d >= 0; d--) {
        stride[d] = s;
        s *= dims[d];
    }
    p->rank = n;
    for (int d = 0; d < n; d++) {
        p->odims[d] = dims[perm[d]];
        p->istr[d] = stride[perm[d]];
    }
    if (p->y->rank == n)
        for (int d = 0; d < n; d++)
            if (p->y->dims[d] != p->odims[d]) return ek_bad(e, c, "output '%s' is not the permuted shape", p->y->name);
    return EK_STATUS_OK;
}

#define TRANSPOSE_LOOP(T)                                                                  \
    do {                                                                                   \
        const T *src = (const T *)xs;                                                      \
        T *dst = (T *)ys;                                                                  \
        for (;;) {                                                                         \
            for (int64_t i = 0; i < n; i++) dst[i] = src[off + i * step];                  \
            dst += n;                                                                      \
            int d = inner - 1;                                                             \
            for (; d >= 0; d--) {                                                          \
                off += p->istr[d];                                                         \
                if (++idx[d] < p->odims[d]) break;                                         \
                off -= p->istr[d] * p->odims[d];                                           \
                idx[d] = 0;                                                                \
            }                                                                              \
            if (d < 0) break;                                                              \
        }                                                                                  \
    } while (0)

int ek_run_transpose(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const transpose_params *p = c->params;
    if (p->y->count == 0) return EK_STATUS_OK;
    const void *xs = ek_data(m, p->x);
    void *ys = ek_data(m, p->y);
    if (p->rank == 0) {
        memcpy(ys, xs, p->y->nbytes);
        return EK_STATUS_OK;
    }
    int inner = p->rank - 1;
    int64_t n = p->odims[inner], step = p->istr[inner], off = 0, idx[EK_MAX_RANK] = {0};
    switch (p->x->elem_size) {
    case 1: TRANSPOSE_LOOP(uint8_t); break;
    case 2: TRANSPOSE_LOOP(uint16_t); break;
    case 4: TRANSPOSE_LOOP(uint32_t); break;
    default: TRANSPOSE_LOOP(uint64_t); break;
    }
    return EK_STATUS_OK;
}

/* -- Concat and QConcat ------------------------------------------------------------------- */
typedef struct {
    const ek_tensor *y;
    int64_t outer, axis;
    int quantized;
    int32_t zy, zps[256], flags[256], mults[256], shifts[256];
    int8_t luts[][256]; /* QConcat: input i's requantization for every int8 value (x + 128) */
} concat_params;

static int prepare_concat(ek_model *m, ek_call *c, ek_err *e, int quantized) {
    int rc = ek_check_arity(c, 1, 255, 1, e);
    if (rc) return rc;
    concat_params *p = calloc(1, sizeof *p + (quantized ? (size_t)c->n_in * 256 : 0));
    if (!p) return ek_fail(e, EK_STATUS_NOMEM, "out of memory");
    c->params = p;
    p->quantized = quantized;
    if (!(p->y = ek_operand(m, c, 1, 0, quantized ? EK_DT_INT8 : 0, -1, e))) return EK_STATUS_INVALID;
    if ((rc = ek_attr_int(c, EK_ATTR_AXIS, 1, 0, 0, p->y->rank - 1, &p->axis, e))) return rc;
    if (p->y->rank < 1) return ek_bad(e, c, "output is a scalar");
    int64_t total = 0;
    for (int i = 0; i < c->n_in; i++) {
        const ek_tensor *x = ek_operand(m, c, 0, i, p->y->dtype, p->y->rank, e);
        if (!x) return EK_STATUS_INVALID;
        if (x->packing != EK_PACK_NONE) return ek_bad(e, c, "input %d is packed", i);
        for (int d = 0; d < x->rank; d++)
            if (d != p->axis && x->dims[d] != p->y->dims[d]) return ek_bad(e, c, "input %d differs off the concat axis", i);
        total += x->dims[p->axis];
    }
    if (total != p->y->dims[p->axis]) return ek_bad(e, c, "inputs add up to %lld along the axis, output has %lld",
                                                    (long long)total, (long long)p->y->dims[p->axis]);
    p->outer = 1;
    for (int d = 0; d < p->axis; d++) p->outer *= p->y->dims[d];
    if (quantized) {
        int64_t v[256];
        int64_t zy;
        if ((rc = ek_attr_int(c, EK_ATTR_OUTPUT_ZP, 1, 0, -128, 127, &zy, e))) return rc;
        p->zy = (int32_t)zy;
        struct { int key; int64_t lo, hi; int32_t *dst; } lists[4] = {
            {EK_ATTR_INPUT_ZPS, -128, 127, p->zps}, {EK_ATTR_REQ_FLAGS, 0, 1, p->flags},
            {EK_ATTR_REQ_MULTIPLIERS, 0, INT32_MAX, p->mults}, {EK_ATTR_REQ_SHIFTS, -30, 31, p->shifts}};
        for (int l = 0; l < 4; l++) {
            if ((rc = ek_attr_ints(c, lists[l].key, c->n_in, lists[l].lo, lists[l].hi, v, e))) return rc;
            for (int i = 0; i < c->n_in; i++) lists[l].dst[i] = (int32_t)v[i];
        }
        for (int i = 0; i < c->n_in; i++)
            for (int v8 = -128; v8 < 128 && p->flags[i]; v8++)
                p->luts[i][v8 + 128] = ek_requantize((int64_t)v8 - p->zps[i], p->mults[i], p->shifts[i], p->zy, -128, 127);
    }
    return EK_STATUS_OK;
}

int ek_prepare_concat(ek_model *m, ek_call *c, ek_err *e) { return prepare_concat(m, c, e, 0); }
int ek_prepare_qconcat(ek_model *m, ek_call *c, ek_err *e) { return prepare_concat(m, c, e, 1); }

int ek_run_concat(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const concat_params *p = c->params;
    uint8_t *y = ek_data(m, p->y);
    size_t row = p->y->count && p->outer ? (size_t)(p->y->count / p->outer) * p->y->elem_size : 0, at = 0;
    for (int i = 0; i < c->n_in; i++) {
        const ek_tensor *x = ek_input(m, c, i);
        const uint8_t *src = ek_data(m, x);
        size_t part = x->count && p->outer ? (size_t)(x->count / p->outer) * x->elem_size : 0;
        for (int64_t o = 0; o < p->outer; o++) {
            uint8_t *dst = y + o * row + at;
            const uint8_t *s = src + o * part;
            if (!p->quantized || !p->flags[i]) {
                memcpy(dst, s, part);
                continue;
            }
            ek_lookup_i8(m, (const int8_t *)s, (int64_t)part, p->luts[i], (int8_t *)dst);
        }
        at += part;
    }
    return EK_STATUS_OK;
}

/* -- Cast --------------------------------------------------------------------------------- */
int ek_prepare_cast(ek_model *m, ek_call *c, ek_err *e) {
    int rc = ek_check_arity(c, 1, 1, 1, e);
    if (rc) return rc;
    copy_params *p = calloc(1, sizeof *p);
    if (!p) return ek_fail(e, EK_STATUS_NOMEM, "out of memory");
    c->params = p;
    if (!(p->x = ek_operand(m, c, 0, 0, 0, -1, e)) || !(p->y = ek_operand(m, c, 1, 0, 0, -1, e))) return EK_STATUS_INVALID;
    if (p->x->packing != EK_PACK_NONE || p->x->count != p->y->count) return ek_bad(e, c, "input and output sizes differ");
    return EK_STATUS_OK;
}

static double load_as_double(const void *base, int dtype, int64_t i, int64_t *as_int, int *is_int) {
    *is_int = 1;
    switch (dtype) {
    case EK_DT_FLOAT32: *is_int = 0; return ((const float *)base)[i];
    case EK_DT_INT8: *as_int = ((const int8_t *)base)[i]; break;
    case EK_DT_UINT8: case EK_DT_BOOL: *as_int = ((const uint8_t *)base)[i]; break;
    case EK_DT_INT16: *as_int = ((const int16_t *)base)[i]; break;
    case EK_DT_INT32: *as_int = ((const int32_t *)base)[i]; break;
    default: *as_int = ((const int64_t *)base)[i]; break;
    }
    return (double)*as_int;
}

/* float -> integer truncates toward zero like numpy's astype, saturating instead of UB. */
static int64_t to_int(double v, int64_t lo, int64_t hi) {
    if (v != v) return 0;
    if (v <= (double)lo) return lo;
    if (v >= (double)hi) return hi;
    return (int64_t)v;
}

int ek_run_cast(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const copy_params *p = c->params;
    const void *x = ek_data(m, p->x);
    void *y = ek_data(m, p->y);
    for (int64_t i = 0; i < p->x->count; i++) {
        int64_t iv = 0;
        int is_int;
        double dv = load_as_double(x, p->x->dtype, i, &iv, &is_int);
        switch (p->y->dtype) {
        case EK_DT_FLOAT32: ((float *)y)[i] = (float)dv; break;
        case EK_DT_BOOL: ((uint8_t *)y)[i] = is_int ? iv != 0 : dv != 0.0; break;
        case EK_DT_INT8: ((int8_t *)y)[i] = (int8_t)(is_int ? (int8_t)(uint8_t)iv : to_int(dv, -128, 127)); break;
        case EK_DT_UINT8: ((uint8_t *)y)[i] = (uint8_t)(is_int ? (uint8_t)iv : to_int(dv, 0, 255)); break;
        case EK_DT_INT16: ((int16_t *)y)[i] = (int16_t)(is_int ? (int16_t)(uint16_t)iv : to_int(dv, INT16_MIN, INT16_MAX)); break;
        case EK_DT_INT32: ((int32_t *)y)[i] = (int32_t)(is_int ? (int32_t)(uint32_t)iv : to_int(dv, INT32_MIN, INT32_MAX)); break;
        default: ((int64_t *)y)[i] = is_int ? iv : to_int(dv, INT64_MIN, INT64_MAX); break;
        }
    }
    return EK_STATUS_OK;
}
