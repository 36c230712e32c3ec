/*
 * numpy broadcasting for elementwise kernels: up to three operands against one output.
 *
 * Dims are right-aligned; an operand dim of 1 (or a missing leading dim) has stride 0.
 * Adjacent dims that are contiguous for every operand are merged and size-1 dims dropped,
 * so a same-shape add is one row and a per-channel scale [1, C, 1, 1] on [N, C, H, W] is
 * N·C rows of H·W.  Kernels then run a row function with one start offset and one element
 * step per operand.
 */
#include <string.h>

#include "ek_internal.h"
#include "kernels/ek_broadcast.h"

int ek_bcast_init(ek_bcast *b, const ek_tensor *y, int nops, const ek_tensor *const *ops) {
    int64_t str[EK_BCAST_MAX_OPS][EK_MAX_RANK];
    memset(b, 0, sizeof *b);
    b->nops = nops;
    for (int i = 0; i < nops; i++)
        if (!ek_broadcast_strides(ops[i], y->rank, y->dims, str[i])) return 0;
    /* Merge from the right: dim d joins the current innermost kept dim when contiguous. */
    int rank = 0;
    int64_t dims[EK_MAX_RANK], s[EK_BCAST_MAX_OPS][EK_MAX_RANK];
    for (int d = y->rank - 1; d >= 0; d--) {
        if (y->dims[d] == 1) continue;
        if (rank > 0) {
            int ok = 1;
            for (int i = 0; i < nops; i++)
                if (str[i][d] != s[i][rank - 1] * dims[rank - 1]) ok = 0;
            if (ok) {
                dims[rank - 1] *= y->dims[d];
                continue;
            }
        }
        dims[rank] = y->dims[d];
        for (int i = 0; i < nops; i++) s[i][rank] = str[i][d];
        rank++;
    }
    /* stored outermost first */
    b->rank = rank;
    for (int d = 0; d < rank; d++) {
        b->dims[d] = dims[rank - 1 - d];
        for (int i = 0; i < nops; i++) b->str[i][d] = s[i][rank - 1 - d];
    }
    return 1;
}

void ek_bcast_run_range(const ek_bcast *b, ek_bcast_row row, void *ctx, int64_t begin, int64_t end) {
    int64_t off[EK_BCAST_MAX_OPS] = {0}, step[EK_BCAST_MAX_OPS] = {0}, at[EK_BCAST_MAX_OPS];
    if (b->rank == 0) {
        if (begin < end) row(ctx, off, step, 0, 1);
        return;
    }
    int inner = b->rank - 1;
    int64_t n = b->dims[inner];
    if (n == 0) return;
    for (int i = 0; i < b->nops; i++) step[i] = b->str[i][inner];
    /* the row holding `begin`, unravelled over the outer dims */
    int64_t idx[EK_MAX_RANK] = {0}, r = begin / n, col = begin % n;
    for (int d = inner - 1; d >= 0; d--) {
        idx[d] = r % b->dims[d];
        r /= b->dims[d];
        for (int i = 0; i < b->nops; i++) off[i] += idx[d] * b->str[i][d];
    }
    for (int64_t yoff = begin; yoff < end;) {
        int64_t len = n - col < end - yoff ? n - col : end - yoff;
        for (int i = 0; i < b->nops; i++) at[i] = off[i] + col * step[i];
        row(ctx, at, step, yoff, len);
        yoff += len;
        col = 0;
        for (int d = inner - 1; d >= 0; d--) {
            idx[d]++;
            for (int i = 0; i < b->nops; i++) off[i] += b->str[i][d];
            if (idx[d] < b->dims[d]) break;
            for (int i = 0; i < b->nops; i++) off[i] -= b->str[i][d] * b->dims[d];
            idx[d] = 0;
        }
    }
}

int64_t ek_bcast_count(const ek_bcast *b) {
    int64_t n = 1;
    for (int d = 0; d < b->rank; d++) n *= b->dims[d];
    return n;
}

void ek_bcast_run(const ek_bcast *b, ek_bcast_row row, void *ctx) {
    ek_bcast_run_range(b, row, ctx, 0, ek_bcast_count(b));
}

/* Matrix strides of `t`'s batch dims against the output's (right-aligned broadcasting). */
int ek_matmul_batch_strides(const ek_tensor *t, int brank, const int64_t *bdims, int64_t *str) {
    int trank = t->rank - 2;
    if (trank > brank) return 0;
    int64_t s = 1;
    for (int d = brank - 1; d >= 0; d--) {
        int td = d - (brank - trank);
        if (td < 0) {
            str[d] = 0;
            continue;
        }
        int64_t n = t->dims[td];
        if (n != bdims[d] && n != 1) return 0;
        str[d] = n == 1 ? 0 : s;
        s *= n;
    }
    return 1;
}
