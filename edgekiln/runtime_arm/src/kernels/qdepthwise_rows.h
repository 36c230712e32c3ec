/* The padded-row driver of the SIMD depthwise convolution (qdepthwise_rows.c). */
#ifndef EK_QDEPTHWISE_ROWS_H
#define EK_QDEPTHWISE_ROWS_H

#include "ek_simd.h"

typedef struct {
    int64_t H, W, Ho, Wo, kh, kw, sh, sw, dh, dw, pt, pl;
    int64_t span;       /* input rows one output row's window spans: ring slots */
    int64_t phase_len;  /* bytes of one stride phase of a prepared row */
    int64_t row_bytes;  /* one prepared row: sw phases */
    size_t off_w16, off_cols, off_tags, off_rows, scratch;
} ek_dw_rows_plan;

/* Fills the plan for one depthwise geometry; plan->scratch is the bytes one task needs. */
void ek_dw_rows_plan_init(ek_dw_rows_plan *p, int64_t H, int64_t W, int64_t Ho, int64_t Wo, int64_t kh, int64_t kw,
                          int64_t sh, int64_t sw, int64_t dh, int64_t dw, int64_t pt, int64_t pl);

/* One channel plane: out = requantize(bias + Σ (x − zx) · w) through k->depthwise_row.
 * Returns 0 (and writes nothing) when the int32 accumulator bound does not hold for this
 * channel's bias and weights: the caller then takes its portable loop. */
int ek_dw_rows_plane(const ek_dw_rows_plan *p, const ek_simd_kernels *k, const int8_t *plane, const int8_t *w,
                     int32_t zx, int64_t bias, const ek_rq *rq, int8_t *out, uint8_t *scratch);

#endif
