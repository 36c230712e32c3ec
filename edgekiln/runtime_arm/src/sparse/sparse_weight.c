/*
 * Reading and checking the sparse weight of a QSparseGemm / SparseGemm call (ek_sparse.h has
 * the two formats).  Everything a kernel later trusts is checked here once: row pointers
 * non-decreasing and inside the values, every index below K, counts that match O and K.  The
 * N:M format's 2-bit in-group positions become channel numbers g·M + position, so the run
 * loops see one format.
 */
#include "ek_sparse.h"

static int read_format(const ek_call *c, int *format, int64_t kernel[2], int *nk, ek_err *e) {
    int64_t v;
    int rc;
    if ((rc = ek_attr_int(c, EK_ATTR_MODE, 1, 0, EK_SPARSE_FORMAT_BLOCK, EK_SPARSE_FORMAT_NM, &v, e))) return rc;
    *format = (int)v;
    if ((rc = ek_attr_int_list(c, EK_ATTR_KERNEL, 2, 1, 8, kernel, nk, e))) return rc;
    if (*format == EK_SPARSE_FORMAT_BLOCK) {
        if (*nk != 1 || (kernel[0] != 1 && kernel[0] != 2 && kernel[0] != 4 && kernel[0] != 8))
            return ek_bad(e, c, "a block-sparse weight needs kernel = [B] with B in {1, 2, 4, 8}");
    } else if (*nk != 2 || kernel[1] > 4 || kernel[0] > kernel[1]) {
        return ek_bad(e, c, "an N:M sparse weight needs kernel = [N, M] with 1 <= N <= M <= 4");
    }
    return EK_STATUS_OK;
}

int64_t ek_sparse_expansion_count(const ek_call *c, int64_t O, int64_t K, ek_err *e) {
    int format, nk;
    int64_t kernel[2];
    if (read_format(c, &format, kernel, &nk, e)) return -1;
    if (format != EK_SPARSE_FORMAT_NM) return 0;
    if (K % kernel[1]) {
        ek_bad(e, c, "N:M with M = %lld needs K = %lld to be a multiple of M", (long long)kernel[1], (long long)K);
        return -1;
    }
    return O * (K / kernel[1]) * kernel[0];
}

int ek_sparse_weight_read(ek_model *m, ek_call *c, int64_t O, int64_t K, int value_dtype, uint16_t *storage,
                          ek_sparse_weight *sw, ek_err *e) {
    int nk, rc;
    int64_t kernel[2];
    if ((rc = read_format(c, &sw->format, kernel, &nk, e))) return rc;
    if (K < 1 || K > 32768 || O < 1)
        return ek_bad(e, c, "sparse weights need 1 <= K <= 32768 (int32 sums stay exact) and O >= 1");
    sw->O = O;
    sw->K = K;
    const ek_tensor *values = ek_input(m, c, 1), *index = ek_input(m, c, 2), *rowp = ek_input(m, c, 3);
    if (!values || !index || !values->cdata || !index->cdata || values->dtype != value_dtype)
        return ek_bad(e, c, "sparse values and index must be constants (values of the op's dtype)");
    sw->values = values;
    if (sw->format == EK_SPARSE_FORMAT_BLOCK) {
        sw->B = (int)kernel[0];
        sw->rows = (O + sw->B - 1) / sw->B;
        if (!rowp || !rowp->cdata || rowp->dtype != EK_DT_INT32 || rowp->count != sw->rows + 1)
            return ek_bad(e, c, "row_ptr must be a constant int32 [%lld]", (long long)(sw->rows + 1));
        if (index->dtype != EK_DT_INT16) return ek_bad(e, c, "block-sparse indices must be int16 (read as uint16)");
        sw->row_ptr = (const int32_t *)rowp->cdata;
        sw->idx = (const uint16_t *)index->cdata;
        int64_t nnz = index->count;
        if (sw->row_ptr[0] != 0 || sw->row_ptr[sw->rows] != nnz || values->count < nnz * sw->B)
            return ek_bad(e, c, "row_ptr does not span the %lld stored blocks", (long long)nnz);
        for (int64_t r = 0; r < sw->rows; r++)
            if (sw->row_ptr[r + 1] < sw->row_ptr[r]) return ek_bad(e, c, "row_ptr decreases at row %lld", (long long)r);
        for (int64_t t = 0; t < nnz; t++)
            if (sw->idx[t] >= K) return ek_bad(e, c, "sparse index %u >= K = %lld", sw->idx[t], (long long)K);
        return EK_STATUS_OK;
    }
    sw->N = (int)kernel[0];
    sw->M = (int)kernel[1];
    sw->B = 1;
    sw->rows = O;
    if (K % sw->M) return ek_bad(e, c, "N:M needs K %% M == 0");
    int64_t groups = K / sw->M;
    sw->per_row = groups * sw->N;
    int64_t total = O * sw->per_row;
    if (rowp) return ek_bad(e, c, "an N:M weight has no row_ptr operand");
    if (index->dtype != EK_DT_UINT8 || index->count != (total + 3) / 4 || values->count != total)
        return ek_bad(e, c, "N:M needs %lld values and %lld uint8 index bytes", (long long)total,
                      (long long)((total + 3) / 4));
    const uint8_t *meta = index->cdata;
    for (int64_t t = 0; t < total; t++) {
        int pos = (meta[t / 4] >> (2 * (t % 4))) & 3;
        if (pos >= sw->M) return ek_bad(e, c, "N:M position %d >= M = %d", pos, sw->M);
        storage[t] = (uint16_t)((t % sw->per_row) / sw->N * sw->M + pos);
    }
    sw->row_ptr = NULL;
    sw->expanded = storage;
    sw->idx = storage;
    return EK_STATUS_OK;
}
