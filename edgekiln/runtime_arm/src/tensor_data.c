/*
 * Tensor helpers: where a tensor's bytes are during a run, element sizes, views, numpy
 * broadcasting strides, and unpacking of low-bit constants.
 */
#include <string.h>

#include "ek_internal.h"
#include "ternary_base3.h"

size_t ek_dtype_size(int dtype) {
    switch (dtype) {
    case EK_DT_FLOAT32: case EK_DT_INT32: return 4;
    case EK_DT_INT8: case EK_DT_UINT8: case EK_DT_BOOL: return 1;
    case EK_DT_INT64: return 8;
    case EK_DT_INT16: case EK_DT_UINT16: return 2;
    default: return 0;
    }
}

const char *ek_dtype_name(int dtype) {
    switch (dtype) {
    case EK_DT_FLOAT32: return "float32";
    case EK_DT_INT8: return "int8";
    case EK_DT_UINT8: return "uint8";
    case EK_DT_INT32: return "int32";
    case EK_DT_INT64: return "int64";
    case EK_DT_BOOL: return "bool";
    case EK_DT_INT16: return "int16";
    case EK_DT_UINT16: return "uint16";
    default: return "unknown";
    }
}

void *ek_data(const ek_model *m, const ek_tensor *t) {
    switch (t->storage) {
    case EK_STORE_ARENA: return m->arena + t->offset;
    case EK_STORE_CONST: return (void *)t->cdata; /* kernels never write constants (checked at load) */
    case EK_STORE_INPUT: return (void *)m->in_ptrs[t->offset];
    default: return m->out_ptrs[t->offset];
    }
}

int ek_view4(const ek_tensor *t, int64_t out[4]) {
    if (t->rank == 4) {
        memcpy(out, t->dims, 4 * sizeof(int64_t));
        return 1;
    }
    if (t->rank == 3) {
        out[0] = t->dims[0];
        out[1] = t->dims[1];
        out[2] = 1;
        out[3] = t->dims[2];
        return 1;
    }
    return 0;
}

int ek_broadcast_strides(const ek_tensor *t, int rank, const int64_t *dims, int64_t *strides) {
    if (t->rank > rank) return 0;
    int64_t stride = 1;
    for (int d = rank - 1; d >= 0; d--) {
        int td = d - (rank - t->rank);
        if (td < 0) {
            strides[d] = 0;
            continue;
        }
        int64_t n = t->dims[td];
        if (n == dims[d]) strides[d] = n == 1 ? 0 : stride;
        else if (n == 1) strides[d] = 0;
        else return 0;
        stride *= n;
    }
    return 1;
}

int ek_packing_bits(int packing) {
    return packing == EK_PACK_INT4_K32 ? 4 : packing == EK_PACK_INT2_K64 ? 2 : 0;
}

/* a two's-complement nibble (0..15) as int8 */
static inline int8_t ek_nibble_s8(unsigned v) { return (int8_t)((int)v - (int)((v & 8) << 1)); }

void ek_unpack_int8(const ek_tensor *t, const uint8_t *data, int64_t first, int64_t count, int8_t *dst) {
    if (t->packing == EK_PACK_NONE) {
        memcpy(dst, data + first, (size_t)count);
        return;
    }
    if (t->packing == EK_PACK_I8_PAIRS8) { /* int8 rows pre-paired for smmla */
        const int64_t k = t->count / t->dims[0], pair_bytes = ek_pairs_pair_bytes(k);
        int64_t row = first / k, col = first % k;
        for (int64_t i = 0; i < count; i++) {
            dst[i] = (int8_t)ek_pairs_weight((const int8_t *)data, row, col, pair_bytes);
            if (++col == k) col = 0, row++;
        }
        return;
    }
    const int blocked_bits = ek_packing_bits(t->packing);
    if (blocked_bits) { /* K-blocked GEMM rows: walk row by row */
        const int64_t k = t->count / t->dims[0], row_bytes = ek_lowbit_row_bytes(blocked_bits, k);
        int64_t row = first / k, col = first % k;
        for (int64_t i = 0; i < count; i++) {
            dst[i] = (int8_t)ek_lowbit_weight(data + row * row_bytes, blocked_bits, col);
            if (++col == k) col = 0, row++;
        }
        return;
    }
    if (t->packing == EK_PACK_INT2_B3) { /* ternary, five values per byte (--weight-layout compact) */
        ek_unpack_base3(data, first, count, dst);
        return;
    }
    if (t->packing == EK_PACK_INT4) { /* byte by byte: flat int4 GEMM weights are unpacked per task */
        const uint8_t *src = data + (first >> 1);
        int64_t i = 0;
        if ((first & 1) && count > 0) dst[i++] = ek_nibble_s8(*src++ >> 4);
        for (; i + 1 < count; i += 2, src++) {
            dst[i] = ek_nibble_s8(*src & 0xF);
            dst[i + 1] = ek_nibble_s8(*src >> 4);
        }
        if (i < count) dst[i] = ek_nibble_s8(*src & 0xF);
        return;
    }
    for (int64_t i = 0; i < count; i++) {
        int64_t k = first + i;
        int v = (data[k >> 2] >> (2 * (k & 3))) & 0x3;
        dst[i] = (int8_t)(v >= 2 ? v - 4 : v);
    }
}

int ek_reduce_strides(const ek_tensor *x, const ek_tensor *y, unsigned mask, int64_t *ostride) {
    int64_t kept[EK_MAX_RANK], count = 1;
    int nk = 0;
    for (int d = x->rank - 1; d >= 0; d--) {
        if (mask >> d & 1) {
            ostride[d] = 0;
        } else {
            ostride[d] = count;
            count *= x->dims[d];
        }
    }
    for (int d = 0; d < x->rank; d++)
        if (!(mask >> d & 1)) kept[nk++] = x->dims[d];
    if (y->count != count) return 0;
    if (y->rank == x->rank) { /* keepdims: reduced axes are 1 */
        for (int d = 0; d < x->rank; d++)
            if (y->dims[d] != ((mask >> d & 1) ? 1 : x->dims[d])) return 0;
        return 1;
    }
    if (y->rank != nk) return 0;
    for (int d = 0; d < nk; d++)
        if (y->dims[d] != kept[d]) return 0;
    return 1;
}

int ek_axes_mask(const ek_call *c, int rank, unsigned *mask, ek_err *e) {
    int64_t axes[EK_MAX_RANK];
    int n = 0;
    int rc = ek_attr_int_list(c, EK_ATTR_AXES, EK_MAX_RANK, 0, rank - 1, axes, &n, e);
    if (rc) return rc;
    *mask = 0;
    for (int i = 0; i < n; i++) {
        if (*mask >> axes[i] & 1) return ek_bad(e, c, "axis %lld listed twice", (long long)axes[i]);
        *mask |= 1u << axes[i];
    }
    return EK_STATUS_OK;
}
