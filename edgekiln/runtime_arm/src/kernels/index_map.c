/*
 * Index maps: y[i0, ..., ir] = x[t0[i0], ..., tr[ir]], or the fill value where any t is −1.
 *
 * The compiler turns every op whose output position along each axis depends only on its
 * position along that axis into per-axis int32 tables (computed once in Python, exactly as
 * the ONNX op defines them): Slice (any steps), Pad (constant, reflect, edge, wrap; negative
 * pads crop), Split (one map per output), nearest Resize and QResizeNearest, Tile, Expand, and
 * Gather with constant indices.  Tables are checked against the input dims at load.
 * `dims` / `in_dims` attributes give same-rank views when the op changes the rank.
 *
 * Gather with run-time indices is a separate op: its indices are checked as it runs.
 */
#include <string.h>

#include "../ek_internal.h"

typedef struct {
    const ek_tensor *x, *tables, *y;
    int rank;
    int64_t odims[EK_MAX_RANK], istr[EK_MAX_RANK], toff[EK_MAX_RANK];
    uint64_t fill; /* the fill value in the output dtype's bytes */
    int inner_run; /* the innermost table is t0, t0 + 1, ... (no fill): an output row is one memcpy */
    int inner_all; /* the innermost table has no −1: no fill test per element */
} index_map_params;

static int view(const ek_call *c, int key, const ek_tensor *t, int64_t *dims, int *rank, ek_err *e) {
    if (!ek_attr_find(c, key)) {
        *rank = t->rank;
        memcpy(dims, t->dims, sizeof(int64_t) * EK_MAX_RANK);
        return EK_STATUS_OK;
    }
    int rc = ek_attr_int_list(c, key, EK_MAX_RANK, 0, EK_MAX_ELEMENTS, dims, rank, e);
    if (rc) return rc;
    int64_t count = 1;
    for (int d = 0; d < *rank; d++) count = count > EK_MAX_ELEMENTS ? count : count * dims[d];
    if (count != t->count) return ek_bad(e, c, "a view of '%s' with %lld elements, it has %lld", t->name, (long long)count, (long long)t->count);
    return EK_STATUS_OK;
}

int ek_prepare_index_map(ek_model *m, ek_call *c, ek_err *e) {
    int rc = ek_check_arity(c, 2, 2, 1, e);
    if (rc) return rc;
    index_map_params *p = calloc(1, sizeof *p);
    if (!p) return ek_fail(e, EK_STATUS_NOMEM, "out of memory");
    c->params = p;
    if (!(p->x = ek_operand(m, c, 0, 0, 0, -1, e)) || !(p->tables = ek_operand(m, c, 0, 1, EK_DT_INT32, 1, e)) ||
        !(p->y = ek_operand(m, c, 1, 0, p->x->dtype, -1, e)))
        return EK_STATUS_INVALID;
    if (p->x->packing != EK_PACK_NONE || !p->tables->cdata) return ek_bad(e, c, "tables must be constant, input unpacked");
    int64_t idims[EK_MAX_RANK];
    int irank, orank;
    if ((rc = view(c, EK_ATTR_IN_DIMS, p->x, idims, &irank, e)) || (rc = view(c, EK_ATTR_DIMS, p->y, p->odims, &orank, e)))
        return rc;
    if (irank != orank) return ek_bad(e, c, "input view rank %d, output view rank %d", irank, orank);
    p->rank = orank;
    int64_t s = 1, total = 0;
    for (int d = orank - 1; d >= 0; d--) {
        p->istr[d] = s;
        s *= idims[d];
    }
    for (int d = 0; d < orank; d++) {
        p->toff[d] = total;
        total += p->odims[d];
    }
    if (p->tables->count != total) return ek_bad(e, c, "tables hold %lld entries, the output dims sum to %lld",
                                                 (long long)p->tables->count, (long long)total);
    const int32_t *t = (const int32_t *)p->tables->cdata;
    for (int d = 0; d < orank; d++)
        for (int64_t i = 0; i < p->odims[d]; i++) {
            int32_t v = t[p->toff[d] + i];
            if (v < -1 || v >= idims[d]) return ek_bad(e, c, "axis %d index %d outside [-1, %lld)", d, v, (long long)idims[d]);
        }
    if (orank > 0) {
        const int32_t *last = t + p->toff[orank - 1];
        p->inner_run = p->inner_all = 1;
        for (int64_t i = 0; i < p->odims[orank - 1]; i++) {
            if (last[i] < 0) p->inner_all = 0;
            if (last[i] != last[0] + i || p->istr[orank - 1] != 1) p->inner_run = 0;
        }
        p->inner_run &= p->inner_all;
    }
    double fill;
    if ((rc = ek_attr_float(c, EK_ATTR_FILL, 0, 0.0, &fill, e))) return rc;
    switch (p->y->dtype) { /* the fill value in the output's own bytes */
    case EK_DT_FLOAT32: { float f = (float)fill; memcpy(&p->fill, &f, 4); break; }
    case EK_DT_INT8: { int8_t v = (int8_t)(fill < -128 ? -128 : fill > 127 ? 127 : fill); memcpy(&p->fill, &v, 1); break; }
    case EK_DT_UINT8: case EK_DT_BOOL: { uint8_t v = (uint8_t)(fill < 0 ? 0 : fill > 255 ? 255 : fill); memcpy(&p->fill, &v, 1); break; }
    case EK_DT_INT16: { int16_t v = (int16_t)(fill < -32768 ? -32768 : fill > 32767 ? 32767 : fill); memcpy(&p->fill, &v, 2); break; }
    case EK_DT_INT32: { int32_t v = (int32_t)(fill < -2147483648.0 ? -2147483648.0 : fill > 2147483647.0 ? 2147483647.0 : fill); memcpy(&p->fill, &v, 4); break; }
    default: { int64_t v = fill < -9.2e18 ? INT64_MIN : fill > 9.2e18 ? INT64_MAX : (int64_t)fill; memcpy(&p->fill, &v, 8); break; }
    }
    return EK_STATUS_OK;
}

/* Row by row over the output.  Consecutive output rows that read the same input row (nearest
 * upsampling repeats each row) are one memcpy of the row before; a contiguous run is one
 * memcpy; a table without fill entries skips the per-element test. */
#define INDEX_MAP_LOOP(T)                                                                      \
    do {                                                                                       \
        const T *src = (const T *)xs;                                                          \
        T *dst = (T *)ys;                                                                      \
        T fill;                                                                                \
        memcpy(&fill, &p->fill, sizeof fill);                                                  \
        int64_t prev = -2; /* base of the row just written; -2: none yet */                    \
        for (;;) {                                                                             \
            if (base == prev && base >= 0) {                                                   \
                memcpy(dst, dst - n, (size_t)n * sizeof(T));                                   \
            } else if (base < 0) {                                                             \
                for (int64_t i = 0; i < n; i++) dst[i] = fill;                                 \
            } else if (p->inner_run) {                                                         \
                memcpy(dst, src + base + last[0], (size_t)n * sizeof(T));                      \
            } else if (p->inner_all) {                                                         \
                for (int64_t i = 0; i < n; i++) dst[i] = src[base + (int64_t)last[i] * step];  \
            } else {                                                                           \
                for (int64_t i = 0; i < n; i++) {                                              \
                    int32_t k = last[i];                                                       \
                    dst[i] = k < 0 ? fill : src[base + k * step];                              \
                }                                                                              \
            }                                                                                  \
            prev = base;                                                                       \
            dst += n;                                                                          \
            int d = inner - 1;                                                                 \
            for (; d >= 0; d--)                                                                \
                if (++idx[d] < p->odims[d]) break;                                             \
                else idx[d] = 0;                                                               \
            if (d < 0) break;                                                                  \
            base = 0;                                                                          \
            for (int a = 0; a < inner; a++) {                                                  \
                int32_t k = t[p->toff[a] + idx[a]];                                            \
                if (k < 0) { base = -1; break; }                                               \
                base += k * p->istr[a];                                                        \
            }                                                                                  \
        }                                                                                      \
    } while (0)

int ek_run_index_map(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const index_map_params *p = c->params;
    if (p->y->count == 0) return EK_STATUS_OK;
    const void *xs = ek_data(m, p->x);
    void *ys = ek_data(m, p->y);
    const int32_t *t = ek_data(m, p->tables);
    if (p->rank == 0) {
        memcpy(ys, xs, p->y->elem_size);
        return EK_STATUS_OK;
    }
    int inner = p->rank - 1;
    int64_t n = p->odims[inner], step = p->istr[inner], idx[EK_MAX_RANK] = {0}, base = 0;
    const int32_t *last = t + p->toff[inner];
    for (int a = 0; a < inner; a++) {
        int32_t k = t[p->toff[a]];
        if (k < 0) { base = -1; break; }
        base += k * p->istr[a];
    }
    switch (p->y->elem_size) {
    case 1: INDEX_MAP_LOOP(uint8_t); break;
    case 2: INDEX_MAP_LOOP(uint16_t); break;
    case 4: INDEX_MAP_LOOP(uint32_t); break;
    default: INDEX_MAP_LOOP(uint64_t); break;
    }
    return EK_STATUS_OK;
}

/* -- Gather with run-time indices ------------------------------------------------------- */
typedef struct {
    const ek_tensor *x, *idx, *y;
    int64_t outer, dim, inner;
} gather_params;

int ek_prepare_gather(ek_model *m, ek_call *c, ek_err *e) {
    int rc = ek_check_arity(c, 2, 2, 1, e);
    if (rc) return rc;
    gather_params *p = calloc(1, sizeof *p);
    if (!p) return ek_fail(e, EK_STATUS_NOMEM, "out of memory");
    c->params = p;
    if (!(p->x = ek_operand(m, c, 0, 0, 0, -1, e)) || !(p->idx = ek_operand(m, c, 0, 1, 0, -1, e)) ||
        !(p->y = ek_operand(m, c, 1, 0, p->x->dtype, -1, e)))
        return EK_STATUS_INVALID;
    if (p->idx->dtype != EK_DT_INT32 && p->idx->dtype != EK_DT_INT64) return ek_bad(e, c, "indices must be int32 or int64");
    if (p->x->packing != EK_PACK_NONE || p->x->rank < 1) return ek_bad(e, c, "data must be unpacked with rank >= 1");
    int64_t axis;
    if ((rc = ek_attr_int(c, EK_ATTR_AXIS, 1, 0, 0, p->x->rank - 1, &axis, e))) return rc;
    if (p->y->rank != p->x->rank - 1 + p->idx->rank) return ek_bad(e, c, "output rank does not fit");
    int od = 0;
    p->outer = p->inner = 1;
    for (int d = 0; d < p->x->rank; d++) {
        if (d == axis) {
            for (int k = 0; k < p->idx->rank; k++)
                if (p->y->dims[od++] != p->idx->dims[k]) return ek_bad(e, c, "output dims do not fit the indices");
            continue;
        }
        if (p->y->dims[od++] != p->x->dims[d]) return ek_bad(e, c, "output dims do not fit the data");
        if (d < axis) p->outer *= p->x->dims[d];
        else p->inner *= p->x->dims[d];
    }
    p->dim = p->x->dims[axis];
    return EK_STATUS_OK;
}

int ek_run_gather(ek_model *m, const ek_call *c, ek_err *e) {
    const gather_params *p = c->params;
    const uint8_t *x = ek_data(m, p->x);
    const void *ix = ek_data(m, p->idx);
    uint8_t *y = ek_data(m, p->y);
    size_t es = p->x->elem_size, chunk = (size_t)p->inner * es;
    int64_t n = p->idx->count;
    for (int64_t o = 0; o < p->outer; o++)
        for (int64_t j = 0; j < n; j++) {
            int64_t k = p->idx->dtype == EK_DT_INT32 ? ((const int32_t *)ix)[j] : ((const int64_t *)ix)[j];
            if (k < 0) k += p->dim;
            if (k < 0 || k >= p->dim)
                return ek_fail(e, EK_STATUS_RUNTIME, "call '%s' (Gather): index %lld outside [0, %lld)", c->name,
                               (long long)k, (long long)p->dim);
            memcpy(y + ((size_t)(o * n + j)) * chunk, x + ((size_t)(o * p->dim + k)) * chunk, chunk);
        }
    return EK_STATUS_OK;
}
