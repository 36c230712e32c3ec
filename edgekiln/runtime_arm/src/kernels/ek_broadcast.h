/* numpy broadcasting for elementwise kernels (broadcast.c). */
#ifndef EK_BROADCAST_H
#define EK_BROADCAST_H

#include "../ek_internal.h"

#define EK_BCAST_MAX_OPS 3

typedef struct {
    int rank, nops;
    int64_t dims[EK_MAX_RANK];
    int64_t str[EK_BCAST_MAX_OPS][EK_MAX_RANK];
} ek_bcast;

/* One row: operand i starts at element off[i] and advances step[i]; the output at yoff, +1. */
typedef void (*ek_bcast_row)(void *ctx, const int64_t *off, const int64_t *step, int64_t yoff, int64_t n);

/* 0 when an operand does not broadcast to y's shape. */
int ek_bcast_init(ek_bcast *b, const ek_tensor *y, int nops, const ek_tensor *const *ops);
void ek_bcast_run(const ek_bcast *b, ek_bcast_row row, void *ctx);
/* The output elements [begin, end) only (row-major), rows cut where the range cuts them: lets a
 * kernel split one broadcast over threads. */
void ek_bcast_run_range(const ek_bcast *b, ek_bcast_row row, void *ctx, int64_t begin, int64_t end);
/* Output elements the broadcast covers. */
int64_t ek_bcast_count(const ek_bcast *b);

/* MatMul: the matrix strides of `t`'s batch dims against the output's `brank` batch dims
   `bdims` (right-aligned; 0 where `t` broadcasts).  0 when `t` does not broadcast. */
int ek_matmul_batch_strides(const ek_tensor *t, int brank, const int64_t *bdims, int64_t *str);

#endif
