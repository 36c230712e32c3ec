/*
 * Sparse 1x1 convolution / fully connected layers: weight formats, micro-kernels, entry points.
 *
 * Both sparse ops compute, for every output channel o and output pixel p (a pixel of a 1x1
 * convolution, or a row of a fully connected input),
 *
 *     y[o, p] = Σ_{k : W[o, k] != 0} W[o, k] · x[k, p]
 *
 * with exactly the dense op's semantics around it (QSparseGemm: the int8 QConv2D /
 * QFullyConnected of compiler/integer_kernels.py, acc = bias + Σ (x − zp_x)·w, requantize;
 * SparseGemm: the float Conv / MatMul with bias and epilogue).  Skipping a zero weight drops a
 * zero term, so the integer result is bit-exact with the dense kernel and the float one adds
 * the same non-zero products in the same (increasing k) order.
 *
 * Operands: x, values, index, row_ptr (block format only), then the dense op's own
 * (bias, multiplier, shift for int8; bias, residual for float).  Attributes: EK_ATTR_MODE =
 * EK_SPARSE_FORMAT_*, EK_ATTR_KERNEL = [B] (block) or [N, M] (N:M), EK_ATTR_TRANSPOSE = 0 for a
 * 1x1 convolution (x [Nb, K, P] NCHW, y [Nb, O, P]) or 1 for a fully connected layer
 * (x [..., K], y [..., O]).
 *
 * EK_SPARSE_FORMAT_BLOCK (XNNPACK's sparse 1x1 layout, blocks along output channels):
 *   output channels are grouped in block rows of B (B in {1, 2, 4, 8}; the last row padded with
 *   zero weights); a block (row r, input channel k) is stored when any of its B weights is
 *   non-zero.  row_ptr int32 [ceil(O/B) + 1] (CSR), index int16 [nnz] = k (read as uint16,
 *   increasing within a row), values [nnz·B] = W[r·B + b, k] for b < B.
 * EK_SPARSE_FORMAT_NM (every group of M consecutive input channels holds at most N non-zeros):
 *   values [O·(K/M)·N] row by row, group by group; index uint8 = the in-group position of each
 *   value, 2 bits each, four per byte, lowest bits first (M <= 4).  A group with fewer than N
 *   non-zeros stores zeros.  `prepare` expands the positions to channel numbers once, so both
 *   formats run through the same micro-kernels (a block row of B = 1 per output channel).
 *
 * Work split: a task is one image (or all rows of a fully connected input) x one block of up to
 * EK_SPARSE_PIXELS pixels x one chunk of block rows.  The int8 op first writes the pixel
 * block as int16 (x − zp_x) rows, K x ldx (ldx = pixels rounded up to 16, zero padded), so a
 * micro-kernel needs no tail and no zero-point fold.
 */
#ifndef EK_SPARSE_H
#define EK_SPARSE_H

#include <stdint.h>

#include "../ek_internal.h"

/* acc[b·ldacc + j] = Σ_{t < nnz} w[t·wstride + b] · x[idx[t]·ldx + j]   for b < B, j < npad
 * (npad a multiple of 16; int32 sums, exact for |x| <= 255 and nnz <= 32768). */
typedef void (*ek_spmm_s16_fn)(int npad, int B, int nnz, const uint16_t *idx, const int8_t *w, int wstride,
                               const int16_t *x, int64_t ldx, int32_t *acc, int ldacc);
/* The same in float for any np: products added in t order (no fused multiply-add). */
typedef void (*ek_spmm_f32_fn)(int np, int B, int nnz, const uint16_t *idx, const float *w, int wstride,
                               const float *x, int64_t ldx, float *acc, int ldacc);

void ek_spmm_s16_c(int npad, int B, int nnz, const uint16_t *idx, const int8_t *w, int wstride, const int16_t *x,
                   int64_t ldx, int32_t *acc, int ldacc);
void ek_spmm_f32_c(int np, int B, int nnz, const uint16_t *idx, const float *w, int wstride, const float *x,
                   int64_t ldx, float *acc, int ldacc);
#if defined(__aarch64__)
void ek_spmm_s16_neon(int npad, int B, int nnz, const uint16_t *idx, const int8_t *w, int wstride, const int16_t *x,
                      int64_t ldx, int32_t *acc, int ldacc);
void ek_spmm_f32_neon(int np, int B, int nnz, const uint16_t *idx, const float *w, int wstride, const float *x,
                      int64_t ldx, float *acc, int ldacc);
#endif
#if defined(__x86_64__)
void ek_spmm_s16_avx2(int npad, int B, int nnz, const uint16_t *idx, const int8_t *w, int wstride, const int16_t *x,
                      int64_t ldx, int32_t *acc, int ldacc);
void ek_spmm_f32_avx2(int np, int B, int nnz, const uint16_t *idx, const float *w, int wstride, const float *x,
                      int64_t ldx, float *acc, int ldacc);
#endif

/* The micro-kernels for the model's ISA (m->isa: "c" forces the portable ones). */
void ek_select_spmm(const ek_model *m, ek_spmm_s16_fn *s16, ek_spmm_f32_fn *f32);

/* The sparse weight of a call, validated and in block-CSR form (N:M expanded). */
typedef struct {
    int format, B, N, M;
    int64_t O, K, rows;          /* rows = block rows = ceil(O / B) */
    const int32_t *row_ptr;      /* NULL for N:M: row r holds entries [r·per_row, (r+1)·per_row) */
    int64_t per_row;
    const uint16_t *idx;         /* the blob's indices, or `expanded` */
    uint16_t *expanded;          /* N:M channel numbers (owned by the call's params) */
    const ek_tensor *values;
} ek_sparse_weight;

/* How many uint16 the N:M expansion of this call needs (0 for the block format, -1 with `e`
 * written when the format attributes are bad); the caller allocates them after its params. */
int64_t ek_sparse_expansion_count(const ek_call *c, int64_t O, int64_t K, ek_err *e);
/* Reads operands 1..3 and the format attributes into `sw`, checking every index and count;
 * N:M positions are expanded into `storage` (ek_sparse_expansion_count entries). */
int ek_sparse_weight_read(ek_model *m, ek_call *c, int64_t O, int64_t K, int value_dtype, uint16_t *storage,
                          ek_sparse_weight *sw, ek_err *e);
/* Entries of row r: [*begin, *end). */
static inline void ek_sparse_row(const ek_sparse_weight *sw, int64_t r, int64_t *begin, int64_t *end) {
    if (sw->row_ptr) {
        *begin = sw->row_ptr[r];
        *end = sw->row_ptr[r + 1];
    } else {
        *begin = r * sw->per_row;
        *end = *begin + sw->per_row;
    }
}

int ek_prepare_qsparse_gemm(ek_model *m, ek_call *c, ek_err *e);
int ek_run_qsparse_gemm(ek_model *m, const ek_call *c, ek_err *e);
int ek_prepare_sparse_gemm(ek_model *m, ek_call *c, ek_err *e);
int ek_run_sparse_gemm(ek_model *m, const ek_call *c, ek_err *e);

#endif /* EK_SPARSE_H */
