/*
 * QConv2D, QDepthwiseConv2D and QFullyConnected (compiler/integer_kernels.py), one prepare.
 *
 * General path: im2col + int8 GEMM.  A task is one block of up to EK_BLOCK_ROWS output pixels
 * (rows of A, gathered by im2col with the input zero point as padding, so padding contributes
 * (zp - zp)·w = 0) times one block of up to EK_BLOCK_COLS output channels of one group (rows
 * of B = weights, one row of K per channel).  The GEMM (ek_gemm.h, chosen per CPU) sums raw
 * int8 products; the compiler folded the zero point into the bias operand (blob format 2,
 * encode_integer.py), so the accumulator is the GEMM sum plus one constant per channel:
 *
 *     Σ_k (x_k − zp)·w[o,k] + bias[o] = (A·Bᵀ)[p,o] + (bias[o] − zp·rowsum[o])     (exact, int64)
 *
 * Per-group weights (int4 / ternary with group_ratio) run one GEMM per K group and combine
 * the group sums with their Q16 ratios exactly as the spec says; their folded bias is int64 in
 * the Q16 sum's units (bias·2^16 − zp·Σ_j ratio_j·rowsum_j).  Ratios come as uint16 `ratio − 1`
 * (int32 `ratio` when some ratio is 0); shifts as int8.  A float output (y float32: a graph
 * output kept float) ends in y = float(acc)·output_scale[o] instead of requantizing.  int4 / ternary weights in
 * the K-blocked GEMM layout (EK_PACK_INT4_K32 / INT2_K64, written by the compiler) go to the
 * low-bit GEMM, which unpacks them in registers; other packed weights (flat int4/int2) are
 * unpacked block by block into the task's scratch and run the int8 GEMM.  Depthwise convolutions with
 * per-channel weights take a direct loop instead (a GEMM with K = kh·kw per channel wastes
 * more than it saves): with a SIMD table (ek_simd.h) the padded-row kernels of
 * qdepthwise_rows.c, else the portable loop below.  Fully connected layers are the same GEMM
 * with A = x itself.  The GEMM epilogue requantizes a channel's column with the SIMD table
 * when c32 + folded bias provably fits int32, else with the scalar int64 rule.
 *
 * On x86 with AVX-512 VNNI (the model's GEMM is ek_gemm_s8_vnni512) convolutions without group
 * ratios take the quad path instead: im2col builds the block straight into k-quads (ek_gemm.h,
 * gemm/im2col_quads_vnni512.c), the quad GEMM writes c32 channel-major, so the epilogue reads each
 * channel's pixels contiguously (c32[i·ci + o·co] covers both layouts) and requantizes them with
 * AVX-512.  Same sums, same rounding: the result is bit-exact either way.
 */
#include <string.h>

#include "../ek_internal.h"
#include "ek_requant.h"
#include "ek_requant_attrs.h"
#include "ek_simd.h"
#include "ek_transpose.h"
#include "qdepthwise_rows.h"

typedef struct {
    const ek_tensor *x, *w, *bias, *mult, *shift, *ratio, *y;
    int fc, depthwise, float_out; /* float_out: y float32 = float(acc)·mult (the float32 output_scale) */
    int64_t N, C, H, W, O, Ho, Wo, P;
    int64_t kh, kw, sh, sw, dh, dw, pt, pl;
    int64_t G, Cg, Og, Kg;
    int32_t zx, zy, lo, hi;
    int64_t gs, ngr, frac;
    int64_t pb, ocb, pblocks, oblocks;
    size_t off_c32, off_w, off_wide;
    ek_dw_rows_plan rows; /* depthwise: the SIMD row path (qdepthwise_rows.c) */
} qconv_params;

typedef struct {
    const qconv_params *p;
    const ek_simd_kernels *simd; /* NULL: portable loops */
    ek_gemm_s8_fn gemm;
    const int8_t *x;
    const uint8_t *w;
    const void *bias;              /* int32, or int64 (bias64) */
    const int32_t *mult;           /* NULL for a float output */
    const float *scale;            /* a float output's output_scale, else NULL */
    const int8_t *shift;
    const void *ratio;             /* uint16 ratio − 1 (ratio16), or int32 ratio */
    void *y;                       /* int8, or float32 for a float output */
    int bias64, ratio16;
    ek_gemm_lowbit_fn gemm_lowbit; /* K-blocked int4 / ternary weights read in place; NULL: unpack */
    int lowbit_bits;
    int64_t lowbit_row_bytes;
    ek_gemm_s8_fn gemm_paired;     /* int8 weights pre-paired for smmla read in place; NULL: unpack */
    int64_t pair_bytes;
    int quads; /* x86 AVX-512 VNNI: im2col packs k-quads, the GEMM writes c32 channel-major (quads_path) */
} qconv_run;

static int64_t out_size(int64_t in, int64_t pad_total, int64_t k, int64_t s, int64_t d) {
    int64_t num = in + pad_total - d * (k - 1) - 1;
    return num < 0 ? -1 : num / s + 1;
}

/* Bits of K-blocked int4 / ternary weights the low-bit GEMM reads in place, else 0: not a
 * depthwise call, and every K group (group_size) starting on a block boundary.  Otherwise
 * packed weights are unpacked per task into scratch (ek_unpack_int8 reads every layout). */
static int lowbit_in_place(const qconv_params *p) {
    const int bits = ek_packing_bits(p->w->packing);
    if (!bits || p->depthwise || (p->ratio && p->gs % ek_lowbit_per_block(bits))) return 0;
    return bits;
}

/* int8 weights pre-paired for smmla (EK_PACK_I8_PAIRS8, written for i8mm targets) are read in place
 * when the model runs the i8mm int8 GEMM, every channel block starts on a pair (even first
 * channel) and every K group on an 8-byte chunk; otherwise (e.g. --isa dotprod on the same
 * artifact) they are unpacked per task like packed weights. */
static int paired_in_place(const ek_model *m, const qconv_params *p) {
    if (p->w->packing != EK_PACK_I8_PAIRS8 || p->depthwise || !ek_gemm_s8_i8mm_paired_fn()) return 0;
    if (m->gemm_s8 != ek_gemm_s8_i8mm_fn()) return 0;
    const int even_blocks = (p->G == 1 || p->Og % 2 == 0) && (p->oblocks == 1 || p->ocb % 2 == 0);
    return even_blocks && (!p->ratio || p->gs % 8 == 0);
}

static int check_vector(const ek_tensor *t, int dtype, int64_t n, const ek_call *c, const char *what, ek_err *e) {
    if (!t || t->dtype != dtype || t->count != n)
        return ek_bad(e, c, "%s must be %s with %lld values", what, ek_dtype_name(dtype), (long long)n);
    return EK_STATUS_OK;
}

/* The epilogue operands of blob format 3 (encode_integer.py `_epilogue_operands`): bias int32 or
 * int64 (int64 required for per-group weights: the folded Q16 constant), multiplier int32 and
 * shift int8, or a float output's float32 output_scale and no shift; group_ratio uint16 or int32. */
static int check_epilogue(const qconv_params *p, const ek_call *c, ek_err *e) {
    int rc;
    const int bias_dt = p->bias && (p->bias->dtype == EK_DT_INT64 || p->ratio) ? EK_DT_INT64 : EK_DT_INT32;
    if ((rc = check_vector(p->bias, bias_dt, p->O, c, "bias", e))) return rc;
    if (p->bias->dtype == EK_DT_INT64 && p->depthwise) return ek_bad(e, c, "a depthwise bias must be int32");
    /* an int64 bias (a per-channel fold that left int32, or the folded Q16 constant of per-group
     * weights: |bias·2^16| < 2^47 and |zp·Σ ratio·rowsum| <= 128·2^16·128·K) joins int64 sums
     * (c32 + bias, Σ_j ratio_j·c32_j + bias) that stay far inside int64 when |bias| <= 2^50 */
    if (p->bias->dtype == EK_DT_INT64 && p->bias->cdata)
        for (int64_t i = 0; i < p->O; i++) {
            const int64_t b = ((const int64_t *)p->bias->cdata)[i];
            if (b < -((int64_t)1 << 50) || b > ((int64_t)1 << 50)) return ek_bad(e, c, "folded bias[%lld] out of range", (long long)i);
        }
    if (p->float_out) {
        if (p->shift || p->ratio) return ek_bad(e, c, "a float output has no shift and no group_ratio");
        if ((rc = check_vector(p->mult, EK_DT_FLOAT32, p->O, c, "output_scale", e))) return rc;
        if (p->mult->cdata)
            for (int64_t i = 0; i < p->O; i++) {
                const float s = ((const float *)p->mult->cdata)[i];
                if (!(s >= 0.0f && s < 3.0e38f)) return ek_bad(e, c, "output_scale[%lld] is not finite and >= 0", (long long)i);
            }
        return EK_STATUS_OK;
    }
    if ((rc = check_vector(p->mult, EK_DT_INT32, p->O, c, "multiplier", e)) ||
        (rc = check_vector(p->shift, EK_DT_INT8, p->O, c, "shift", e)) || (rc = ek_check_shifts(p->shift, c, e)))
        return rc;
    if (!p->ratio) return EK_STATUS_OK;
    const int ratio_dt = p->ratio->dtype == EK_DT_UINT16 ? EK_DT_UINT16 : EK_DT_INT32;
    if ((rc = check_vector(p->ratio, ratio_dt, p->O * p->ngr, c, "group_ratio", e))) return rc;
    if (ratio_dt == EK_DT_INT32 && p->ratio->cdata)
        for (int64_t i = 0; i < p->ratio->count; i++) {
            int32_t v = ((const int32_t *)p->ratio->cdata)[i];
            if (v < 0 || v > 65536) return ek_bad(e, c, "group_ratio[%lld] = %d outside [0, 2^16]", (long long)i, v);
        }
    return EK_STATUS_OK;
}

static int prepare_common(ek_model *m, ek_call *c, qconv_params *p, ek_err *e) {
    int rc;
    p->bias = ek_input(m, c, 2);
    p->mult = ek_input(m, c, 3);
    p->shift = ek_input(m, c, 4);
    p->ratio = ek_input(m, c, 5);
    if (p->y->dtype != EK_DT_INT8 && p->y->dtype != EK_DT_FLOAT32)
        return ek_bad(e, c, "output '%s' must be int8 (or float32: a float output)", p->y->name);
    p->float_out = p->y->dtype == EK_DT_FLOAT32;
    ek_requant_attrs rq;
    if ((rc = ek_read_requant_attrs(c, 1, p->float_out, &rq, e))) return rc;
    p->zx = rq.zx; p->zy = rq.zy; p->lo = rq.lo; p->hi = rq.hi;
    if ((rc = ek_attr_int(c, EK_ATTR_GROUP_SIZE, 0, 0, 0, p->Kg, &p->gs, e))) return rc;
    if ((rc = ek_attr_int(c, EK_ATTR_ACC_FRAC_BITS, 0, 0, 0, 16, &p->frac, e))) return rc;
    if ((p->gs > 0) != (p->ratio != NULL)) return ek_bad(e, c, "group_size and group_ratio come together");
    if (p->gs > 0 && p->Kg % p->gs) return ek_bad(e, c, "group_size %lld does not divide K = %lld", (long long)p->gs, (long long)p->Kg);
    p->ngr = p->gs > 0 ? p->Kg / p->gs : 1;
    if ((rc = check_epilogue(p, c, e))) return rc;
    if (p->w->packing != EK_PACK_NONE && !p->w->cdata) return ek_bad(e, c, "packed weights must be constant");
    /* |x|·|w| <= 128·128: K <= 2^16 keeps every raw int32 GEMM sum exact (the lowering never
     * gets near it); ratios are Q16 in [0, 2^16]. */
    if (p->Kg > 65536) return ek_bad(e, c, "reduction length %lld above 65536", (long long)p->Kg);
    p->pb = p->P < EK_BLOCK_ROWS ? p->P : EK_BLOCK_ROWS;
    p->ocb = p->Og < EK_BLOCK_COLS ? p->Og : EK_BLOCK_COLS;
    if (p->pb < 1) p->pb = 1;
    if (p->ocb < 1) p->ocb = 1;
    p->pblocks = (p->P + p->pb - 1) / p->pb;
    p->oblocks = (p->Og + p->ocb - 1) / p->ocb;
    /* im2col rows, or the same block as k-quads (pixels padded to 16, K to 4) for the VNNI path */
    const int64_t quad_bytes = (p->Kg + 3) / 4 * 4 * ek_quads_pixels((int)p->pb);
    size_t off = p->fc ? 0 : ek_align64((size_t)(quad_bytes > p->pb * p->Kg ? quad_bytes : p->pb * p->Kg));
    p->off_c32 = off;
    off += ek_align64((size_t)(p->pb * p->ocb) * 4);
    p->off_w = off;
    if (p->w->packing != EK_PACK_NONE && !lowbit_in_place(p)) off += ek_align64((size_t)(p->ocb * p->Kg));
    p->off_wide = off;
    if (p->ratio) off += ek_align64((size_t)(p->pb * p->ocb) * 8);
    c->scratch = off;
    if (p->depthwise) {
        /* either path may run (the ISA can change after load): room for both */
        ek_dw_rows_plan_init(&p->rows, p->H, p->W, p->Ho, p->Wo, p->kh, p->kw, p->sh, p->sw, p->dh, p->dw, p->pt, p->pl);
        size_t portable = ek_align64((size_t)p->Wo * 4);
        c->scratch = ek_align64((size_t)(p->kh * p->kw)) + (portable > p->rows.scratch ? portable : p->rows.scratch);
    }
    return EK_STATUS_OK;
}

int ek_prepare_qconv2d(ek_model *m, ek_call *c, ek_err *e) {
    int rc = ek_check_arity(c, 4, 6, 1, e);
    if (rc) return rc;
    qconv_params *p = calloc(1, sizeof *p);
    if (!p) return ek_fail(e, EK_STATUS_NOMEM, "out of memory");
    c->params = p;
    if (!(p->x = ek_operand(m, c, 0, 0, EK_DT_INT8, 4, e)) || !(p->w = ek_operand(m, c, 0, 1, EK_DT_INT8, 4, e)) ||
        !(p->y = ek_operand(m, c, 1, 0, 0, 4, e)))
        return EK_STATUS_INVALID;
    int64_t s[2], d[2], pads[4];
    if ((rc = ek_attr_ints(c, EK_ATTR_STRIDES, 2, 1, 1 << 16, s, e)) ||
        (rc = ek_attr_ints(c, EK_ATTR_DILATIONS, 2, 1, 1 << 16, d, e)) ||
        (rc = ek_attr_ints(c, EK_ATTR_PADS, 4, 0, 1 << 16, pads, e)) ||
        (rc = ek_attr_int(c, EK_ATTR_GROUP, 0, 1, 1, 1 << 24, &p->G, e)))
        return rc;
    p->N = p->x->dims[0]; p->C = p->x->dims[1]; p->H = p->x->dims[2]; p->W = p->x->dims[3];
    p->O = p->w->dims[0]; p->Cg = p->w->dims[1]; p->kh = p->w->dims[2]; p->kw = p->w->dims[3];
    p->sh = s[0]; p->sw = s[1]; p->dh = d[0]; p->dw = d[1]; p->pt = pads[0]; p->pl = pads[1];
    if (p->kh < 1 || p->kw < 1 || p->C != p->G * p->Cg || p->O % p->G)
        return ek_bad(e, c, "weight [%lld, %lld, %lld, %lld] does not fit %lld input channels in %lld groups",
                      (long long)p->O, (long long)p->Cg, (long long)p->kh, (long long)p->kw, (long long)p->C, (long long)p->G);
    p->Og = p->O / p->G;
    p->Kg = p->Cg * p->kh * p->kw;
    p->Ho = out_size(p->H, pads[0] + pads[2], p->kh, p->sh, p->dh);
    p->Wo = out_size(p->W, pads[1] + pads[3], p->kw, p->sw, p->dw);
    const int64_t *yd = p->y->dims;
    if (yd[0] != p->N || yd[1] != p->O || yd[2] != p->Ho || yd[3] != p->Wo)
        return ek_bad(e, c, "output '%s' is [%lld, %lld, %lld, %lld], the convolution gives [%lld, %lld, %lld, %lld]",
                      p->y->name, (long long)yd[0], (long long)yd[1], (long long)yd[2], (long long)yd[3],
                      (long long)p->N, (long long)p->O, (long long)p->Ho, (long long)p->Wo);
    p->P = p->Ho * p->Wo;
    p->depthwise = p->Cg == 1 && p->Og == 1 && !ek_input(m, c, 5);
    return prepare_common(m, c, p, e);
}

int ek_prepare_qfully_connected(ek_model *m, ek_call *c, ek_err *e) {
    int rc = ek_check_arity(c, 4, 6, 1, e);
    if (rc) return rc;
    qconv_params *p = calloc(1, sizeof *p);
    if (!p) return ek_fail(e, EK_STATUS_NOMEM, "out of memory");
    c->params = p;
    p->fc = 1;
    if (!(p->x = ek_operand(m, c, 0, 0, EK_DT_INT8, -1, e)) || !(p->w = ek_operand(m, c, 0, 1, EK_DT_INT8, 2, e)) ||
        !(p->y = ek_operand(m, c, 1, 0, 0, -1, e)))
        return EK_STATUS_INVALID;
    int64_t K = p->w->dims[1];
    p->O = p->Og = p->w->dims[0];
    p->G = p->N = 1;
    p->Kg = K;
    if (p->x->rank < 1 || p->x->dims[p->x->rank - 1] != K || K < 1 || p->y->rank != p->x->rank)
        return ek_bad(e, c, "input '%s' does not end in K = %lld, or the output rank differs", p->x->name, (long long)K);
    for (int i = 0; i + 1 < p->x->rank; i++)
        if (p->y->dims[i] != p->x->dims[i]) return ek_bad(e, c, "output leading dims differ from the input's");
    if (p->y->dims[p->y->rank - 1] != p->O) return ek_bad(e, c, "output does not end in N = %lld", (long long)p->O);
    p->P = p->x->count / K;
    return prepare_common(m, c, p, e);
}

/* The pixels [p0, p0 + rows) of a block as runs within one output row, and each run's window
 * origin (computed once per block: no division in the copy loops). */
typedef struct {
    int64_t count, at[EK_BLOCK_ROWS], len[EK_BLOCK_ROWS], iy0[EK_BLOCK_ROWS], ix0[EK_BLOCK_ROWS];
} pixel_runs;

static void pixel_runs_init(const qconv_params *p, int64_t p0, int64_t rows, pixel_runs *pr) {
    pr->count = 0;
    for (int64_t r = 0; r < rows; pr->count++) {
        const int64_t u = pr->count, ox0 = (p0 + r) % p->Wo;
        pr->at[u] = r;
        pr->len[u] = rows - r < p->Wo - ox0 ? rows - r : p->Wo - ox0;
        pr->iy0[u] = (p0 + r) / p->Wo * p->sh - p->pt;
        pr->ix0[u] = ox0 * p->sw - p->pl;
        r += pr->len[u];
    }
}

/* One im2col column, k-major: dst[r] = the input under tap (ch, ky, kx) of the block's pixel r,
 * zx outside the image.  Along a run the tap's input column advances by sw, so each run copies
 * a strided input segment whose in-bounds part is computed once (one memcpy at stride 1). */
static void tap_row(const qconv_params *p, const int8_t *plane, const pixel_runs *pr, int64_t ky, int64_t kx, int8_t *dst) {
    const int8_t zx = (int8_t)p->zx;
    const int64_t sw = p->sw;
    for (int64_t u = 0; u < pr->count; u++) {
        int8_t *d = dst + pr->at[u];
        const int64_t run = pr->len[u], iy = pr->iy0[u] + ky * p->dh;
        const int64_t ix = pr->ix0[u] + kx * p->dw; /* input column of the run's first pixel */
        if (iy < 0 || iy >= p->H) {
            memset(d, zx, (size_t)run);
            continue;
        }
        /* pixels s in [lo, hi) read columns ix + s·sw inside [0, W) (no division at stride 1) */
        int64_t lo, hi;
        if (sw == 1) {
            lo = ix < 0 ? -ix : 0;
            hi = p->W - ix > 0 ? p->W - ix : 0; /* a dilated tap can start right of the row */
        } else {
            lo = ix < 0 ? (-ix + sw - 1) / sw : 0;
            hi = p->W - ix > 0 ? (p->W - ix + sw - 1) / sw : 0;
        }
        if (hi > run) hi = run;
        if (lo > hi) lo = hi;
        const int8_t *row = plane + iy * p->W + ix;
        if (lo > 0) memset(d, zx, (size_t)lo);
        if (sw == 1) memcpy(d + lo, row + lo, (size_t)(hi - lo));
        else
            for (int64_t s = lo; s < hi; s++) d[s] = row[s * sw];
        if (hi < run) memset(d + hi, zx, (size_t)(run - hi));
    }
}

/* Walks the taps k = (ch, ky, kx) of image n, group g in order: the input plane and kernel
 * position of tap k, then k + 1. */
typedef struct {
    const int8_t *plane;
    int64_t ky, kx, plane_bytes;
} tap_cursor;

static tap_cursor tap_start(const qconv_params *p, const int8_t *x, int64_t n, int64_t g) {
    tap_cursor t = {x + (n * p->C + g * p->Cg) * p->H * p->W, 0, 0, p->H * p->W};
    return t;
}

static void tap_next(const qconv_params *p, tap_cursor *t) {
    if (++t->kx < p->kw) return;
    t->kx = 0;
    if (++t->ky < p->kh) return;
    t->ky = 0;
    t->plane += t->plane_bytes;
}

static int pointwise_contiguous(const qconv_params *p) {
    return p->kh == 1 && p->kw == 1 && p->sh == 1 && p->sw == 1 && p->pt == 0 && p->pl == 0 && p->Wo == p->W;
}

/* rows [p0, p0 + rows) of the im2col matrix of image n, group g: cols[r][(c, ky, kx)].  Built
 * IM2COL_TAPS taps at a time: the taps' rows go k-major into a small tile (tap_row), which is
 * then transposed into its columns of `cols` (ek_transpose_i8's SIMD 16x16 blocks); storing
 * `cols` pixel-major directly would write one byte every K bytes, which cost more than the GEMM. */
#define IM2COL_TAPS 16
static void im2col(const qconv_params *p, const int8_t *x, int64_t n, int64_t g, int64_t p0, int64_t rows, int8_t *cols) {
    const int64_t K = p->Kg;
    if (pointwise_contiguous(p)) {
        /* pixels are contiguous: the rows are the [channels][pixels] block transposed */
        const int8_t *src = x + (n * p->C + g * p->Cg) * p->H * p->W + p0;
        ek_transpose_i8(src, p->H * p->W, p->Cg, rows, cols, K);
        return;
    }
    pixel_runs pr;
    pixel_runs_init(p, p0, rows, &pr);
    tap_cursor tap = tap_start(p, x, n, g);
    int8_t tile[IM2COL_TAPS * EK_BLOCK_ROWS];
    for (int64_t k0 = 0; k0 < K; k0 += IM2COL_TAPS) {
        const int64_t taps = K - k0 < IM2COL_TAPS ? K - k0 : IM2COL_TAPS;
        for (int64_t t = 0; t < taps; t++, tap_next(p, &tap)) tap_row(p, tap.plane, &pr, tap.ky, tap.kx, tile + t * rows);
        ek_transpose_i8(tile, rows, taps, rows, cols + k0, K);
    }
}

#if defined(__x86_64__)
/* The same block for the AVX-512 VNNI quad GEMM (ek_gemm.h): ceil(K / 4) quad rows of
 * 4·ek_quads_pixels(rows) bytes, built straight from the image (im2col_quads_vnni512.c); a
 * pointwise convolution's tap rows are the input channels themselves, packed in place. */
static void im2col_quads(const qconv_params *p, const int8_t *x, int64_t n, int64_t g, int64_t p0, int64_t rows,
                         uint8_t *aq) {
    const int64_t K = p->Kg, ldq = 4 * (int64_t)ek_quads_pixels((int)rows);
    if (pointwise_contiguous(p)) {
        const int8_t *src = x + (n * p->C + g * p->Cg) * p->H * p->W + p0;
        for (int64_t k0 = 0; k0 < K; k0 += 4)
            ek_pack_quads_vnni512(src + k0 * p->H * p->W, p->H * p->W, (int)(K - k0 < 4 ? K - k0 : 4), (int)rows,
                                  aq + k0 / 4 * ldq);
        return;
    }
    const ek_conv_geometry geom = {p->H, p->W, p->Wo, p->Cg, p->kh, p->kw, p->sh, p->sw, p->dh, p->dw, p->pt, p->pl,
                                   (int8_t)p->zx};
    ek_im2col_quads_vnni512(&geom, x + (n * p->C + g * p->Cg) * p->H * p->W, p0, (int)rows, aq);
}
#endif

/* The quad path runs where the model's int8 GEMM is the AVX-512 VNNI one, for plain int8 (or
 * unpacked) weights without per-group ratios, on convolutions (not fully connected layers,
 * whose A is x itself, pixel-major). */
static int quads_path(const ek_model *m, const qconv_params *p, const qconv_run *r) {
#if defined(__x86_64__)
    return m->gemm_s8 == ek_gemm_s8_vnni512 && !p->fc && !p->depthwise && !p->ratio && !r->gemm_lowbit &&
           !r->gemm_paired;
#else
    (void)m, (void)p, (void)r;
    return 0;
#endif
}

/* The folded bias of channel o (int32 or int64 in the blob). */
static inline int64_t bias_at(const qconv_run *r, int64_t o) {
    return r->bias64 ? ((const int64_t *)r->bias)[o] : ((const int32_t *)r->bias)[o];
}

/* Q16 group ratio k: uint16 holds ratio − 1 (ratio in [1, 2^16]), int32 the ratio itself. */
static inline int64_t ratio_at(const qconv_run *r, int64_t k) {
    return r->ratio16 ? (int64_t)((const uint16_t *)r->ratio)[k] + 1 : ((const int32_t *)r->ratio)[k];
}

static void gemm_task(void *ctx, int64_t t, uint8_t *scratch) {
    const qconv_run *r = ctx;
    const qconv_params *p = r->p;
    int64_t ob = t % p->oblocks;
    t /= p->oblocks;
    int64_t pbk = t % p->pblocks;
    t /= p->pblocks;
    int64_t g = t % p->G, n = t / p->G;
    int64_t p0 = pbk * p->pb, rows = p->P - p0 < p->pb ? p->P - p0 : p->pb;
    int64_t o0 = ob * p->ocb, on = p->Og - o0 < p->ocb ? p->Og - o0 : p->ocb;
    int64_t obase = g * p->Og + o0; /* first global output channel */
    const int8_t *a;
    if (p->fc) {
        a = r->x + p0 * p->Kg;
    } else {
#if defined(__x86_64__)
        if (r->quads) im2col_quads(p, r->x, n, g, p0, rows, scratch);
        else
#endif
            im2col(p, r->x, n, g, p0, rows, (int8_t *)scratch);
        a = (const int8_t *)scratch;
    }
    const int8_t *b = NULL;
    const uint8_t *packed = r->gemm_lowbit ? r->w + obase * r->lowbit_row_bytes : NULL;
    /* pre-paired int8: obase is even (checked in ek_run_qconv), so its pair starts the block */
    const int8_t *paired = r->gemm_paired ? (const int8_t *)r->w + obase / 2 * r->pair_bytes : NULL;
    if (packed || paired) {
        /* read in place by the low-bit or the paired i8mm GEMM */
    } else if (p->w->packing != EK_PACK_NONE) {
        int8_t *wbuf = (int8_t *)(scratch + p->off_w);
        ek_unpack_int8(p->w, r->w, obase * p->Kg, on * p->Kg, wbuf);
        b = wbuf;
    } else {
        b = (const int8_t *)r->w + obase * p->Kg;
    }
    int32_t *c32 = (int32_t *)(scratch + p->off_c32);
    int64_t *wide = (int64_t *)(scratch + p->off_wide);
    if (p->ratio) {
        /* wide = folded Q16 bias + Σ_j ratio_j·(A·Bᵀ)_j; the bias already holds −zp·Σ_j ratio_j·rowsum_j */
        for (int64_t i = 0; i < rows; i++)
            for (int64_t o = 0; o < on; o++) wide[i * on + o] = bias_at(r, obase + o);
        for (int64_t j = 0; j < p->ngr; j++) {
            if (packed) /* gs is a whole number of K blocks (checked in ek_run_qconv) */
                r->gemm_lowbit((int)rows, (int)on, (int)p->gs, a + j * p->gs, (int)p->Kg,
                               packed + j * p->gs / ek_lowbit_per_block(r->lowbit_bits) * EK_LOWBIT_BLOCK_BYTES,
                               (int)r->lowbit_row_bytes, c32, (int)on);
            else if (paired) /* gs is a multiple of 8: K slice j * gs starts chunk j * gs / 8 */
                r->gemm_paired((int)rows, (int)on, (int)p->gs, a + j * p->gs, (int)p->Kg, paired + 2 * j * p->gs,
                               (int)r->pair_bytes, c32, (int)on);
            else
                r->gemm((int)rows, (int)on, (int)p->gs, a + j * p->gs, (int)p->Kg, b + j * p->gs, (int)p->Kg, c32, (int)on);
            for (int64_t o = 0; o < on; o++) {
                const int64_t ratio = ratio_at(r, (obase + o) * p->ngr + j);
                for (int64_t i = 0; i < rows; i++) wide[i * on + o] += ratio * c32[i * on + o];
            }
        }
    } else if (packed) {
        r->gemm_lowbit((int)rows, (int)on, (int)p->Kg, a, (int)p->Kg, packed, (int)r->lowbit_row_bytes, c32, (int)on);
    } else if (paired) {
        r->gemm_paired((int)rows, (int)on, (int)p->Kg, a, (int)p->Kg, paired, (int)r->pair_bytes, c32, (int)on);
    } else if (r->quads) {
#if defined(__x86_64__)
        ek_gemm_s8_quads_vnni512((int)rows, (int)on, (int)p->Kg, (const uint8_t *)a, b, (int)p->Kg, c32, (int)rows);
#endif
    } else {
        r->gemm((int)rows, (int)on, (int)p->Kg, a, (int)p->Kg, b, (int)p->Kg, c32, (int)on);
    }
    /* c32[i·ci + o·co]: pixel-major from the row GEMMs, channel-major from the quad GEMM */
    const int64_t ci = r->quads ? 1 : on, co = r->quads ? rows : 1;
    for (int64_t o = 0; o < on; o++) {
        int64_t og = obase + o;
        if (p->float_out) { /* per-channel weights only: acc = c32 + folded bias, exact (|acc| < 2^24) */
            const int64_t add = bias_at(r, og);
            const float s = r->scale[og];
            float *yf = (float *)r->y;
            for (int64_t i = 0; i < rows; i++) {
                const float v = (float)((int64_t)c32[i * ci + o * co] + add) * s;
                if (p->fc) yf[(p0 + i) * p->O + og] = v;
                else yf[(n * p->O + og) * p->P + p0 + i] = v;
            }
            continue;
        }
        int32_t mlt = r->mult[og], sft = r->shift[og];
        /* SIMD epilogue: |c32| <= Kg·2^14 (raw int8 products), so c32 + folded bias is an exact
         * int32 when the bound below holds */
        int64_t add = p->ratio ? 0 : bias_at(r, og), reach = (add < 0 ? -add : add) + p->Kg * (1 << 14);
        if (r->simd && !p->ratio && !p->fc && reach < ((int64_t)1 << 31)) {
            int8_t *yrow = (int8_t *)r->y + (n * p->O + og) * p->P + p0;
#if defined(__x86_64__)
            if (r->quads) { /* the channel's sums are one contiguous row: AVX-512, no gathers */
                ek_requantize_row_vnni512(c32 + o * co, rows, (int32_t)add, mlt, 31 + sft, p->zy, p->lo, p->hi, yrow);
                continue;
            }
#endif
            const ek_rq rq = {mlt, 31 + sft, p->zy, p->lo, p->hi};
            r->simd->requantize_column(c32 + o * co, ci, rows, (int32_t)add, &rq, yrow);
            continue;
        }
        int8_t *y8 = (int8_t *)r->y;
        for (int64_t i = 0; i < rows; i++) {
            int64_t acc;
            if (p->ratio) acc = ek_rshift_round(wide[i * on + o], 16 - (int)p->frac);
            else acc = (int64_t)c32[i * ci + o * co] + add;
            int8_t q = ek_requantize(acc, mlt, sft, p->zy, p->lo, p->hi);
            if (p->fc) y8[(p0 + i) * p->O + og] = q;
            else y8[(n * p->O + og) * p->P + p0 + i] = q;
        }
    }
}

/* One output row at a time: for each tap, one pass over the row's interior pixels (a stride-1
 * row vectorizes), with bounds checks only on the border pixels. */
static void depthwise_task(void *ctx, int64_t t, uint8_t *scratch) {
    const qconv_run *r = ctx;
    const qconv_params *p = r->p;
    int64_t ch = t % p->C;
    const int8_t *plane = r->x + t * p->H * p->W;
    int8_t *out = p->float_out ? NULL : (int8_t *)r->y + t * p->P;
    int8_t *w = (int8_t *)scratch;
    uint8_t *rest = scratch + ek_align64((size_t)(p->kh * p->kw));
    int32_t *acc = (int32_t *)rest;
    ek_unpack_int8(p->w, r->w, ch * p->kh * p->kw, p->kh * p->kw, w);
    /* a depthwise bias is the plain int32 bias (zp is subtracted per tap here) */
    const int32_t mlt = p->float_out ? 0 : r->mult[ch], sft = p->float_out ? 0 : r->shift[ch], zx = p->zx;
    const int64_t bias = ((const int32_t *)r->bias)[ch], sw = p->sw;
    const ek_rq rq = {mlt, 31 + sft, p->zy, p->lo, p->hi};
    if (r->simd && !p->float_out && ek_dw_rows_plane(&p->rows, r->simd, plane, w, zx, bias, &rq, out, rest)) return;
    int64_t xlo, xhi;
    ek_interior(p->W, p->Wo, p->kw, p->sw, p->dw, p->pl, &xlo, &xhi);
    for (int64_t oy = 0; oy < p->Ho; oy++) {
        for (int64_t ox = 0; ox < p->Wo; ox++) acc[ox] = 0;
        for (int64_t ky = 0; ky < p->kh; ky++) {
            int64_t iy = oy * p->sh - p->pt + ky * p->dh;
            if (iy < 0 || iy >= p->H) continue;
            const int8_t *row = plane + iy * p->W;
            for (int64_t kx = 0; kx < p->kw; kx++) {
                const int32_t wk = w[ky * p->kw + kx];
                const int64_t off = kx * p->dw - p->pl;
                for (int64_t ox = 0; ox < xlo; ox++) {
                    int64_t ix = ox * sw + off;
                    if (ix >= 0 && ix < p->W) acc[ox] += ((int32_t)row[ix] - zx) * wk;
                }
                const int8_t *src = row + off;
                if (sw == 1)
                    for (int64_t ox = xlo; ox < xhi; ox++) acc[ox] += ((int32_t)src[ox] - zx) * wk;
                else
                    for (int64_t ox = xlo; ox < xhi; ox++) acc[ox] += ((int32_t)src[ox * sw] - zx) * wk;
                for (int64_t ox = xhi; ox < p->Wo; ox++) {
                    int64_t ix = ox * sw + off;
                    if (ix >= 0 && ix < p->W) acc[ox] += ((int32_t)row[ix] - zx) * wk;
                }
            }
        }
        if (p->float_out) {
            float *dst = (float *)r->y + t * p->P + oy * p->Wo;
            for (int64_t ox = 0; ox < p->Wo; ox++) dst[ox] = (float)((int64_t)acc[ox] + bias) * r->scale[ch];
            continue;
        }
        int8_t *dst = out + oy * p->Wo;
        for (int64_t ox = 0; ox < p->Wo; ox++)
            dst[ox] = ek_requantize((int64_t)acc[ox] + bias, mlt, sft, p->zy, p->lo, p->hi);
    }
}

int ek_run_qconv(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const qconv_params *p = c->params;
    qconv_run r = {p, ek_simd_for(m), m->gemm_s8, ek_data(m, p->x), ek_data(m, p->w), ek_data(m, p->bias),
                   p->float_out ? NULL : ek_data(m, p->mult), p->float_out ? ek_data(m, p->mult) : NULL,
                   p->shift ? ek_data(m, p->shift) : NULL, p->ratio ? ek_data(m, p->ratio) : NULL, ek_data(m, p->y),
                   p->bias->dtype == EK_DT_INT64, p->ratio && p->ratio->dtype == EK_DT_UINT16, NULL, 0, 0, NULL, 0, 0};
    if (p->y->count == 0) return EK_STATUS_OK;
    /* K-blocked int4 / ternary weights (the compiler packs GEMM weights so): the low-bit GEMM of
     * the model's ISA family reads them in place (see lowbit_in_place). */
    r.lowbit_bits = lowbit_in_place(p);
    if (r.lowbit_bits) {
        r.gemm_lowbit = ek_select_gemm_lowbit(r.lowbit_bits, ek_cpu_features(), m->isa, NULL);
        if (!r.gemm_lowbit) r.gemm_lowbit = r.lowbit_bits == 4 ? ek_gemm_s4_ref : ek_gemm_t2_ref; /* no scratch to unpack */
        r.lowbit_row_bytes = ek_lowbit_row_bytes(r.lowbit_bits, p->Kg);
    }
    if (paired_in_place(m, p)) {
        r.gemm_paired = ek_gemm_s8_i8mm_paired_fn();
        r.pair_bytes = ek_pairs_pair_bytes(p->Kg);
    }
    r.quads = quads_path(m, p, &r);
    if (p->depthwise) ek_parallel(m, p->N * p->C, depthwise_task, &r);
    else ek_parallel(m, p->N * p->G * p->pblocks * p->oblocks, gemm_task, &r);
    return EK_STATUS_OK;
}
