/*
 * QInvertedResidual (compiler/fused_block_lowering.py): a MobileNetV2 block as one kernel,
 *
 *   t1 = requant(expand 1x1 (x))  ->  t2 = requant(depthwise kxk (t1))  ->  y = requant(project 1x1 (t2))
 *
 * computed one band of output rows at a time so that t1 and t2 never exist in the arena.  A task
 * is one band of one image:
 *   1. expand only the input rows the band's depthwise windows read, into a tile E kept
 *      pixel-major ([row][column][channel]: the GEMM's output layout, no transpose back);
 *   2. depthwise from E into a tile D, also pixel-major, vectorizing over channels (the
 *      window's padding is skipped: (zp − zp)·w = 0);
 *   3. project D (already the GEMM's K-contiguous rows) and requantize straight into y (NCHW).
 * The band height is chosen at load so that E stays within EK_IR_TILE_BYTES (cache-sized); the
 * rows a band's window shares with the next band are expanded twice, the price of not keeping
 * t1.  Every stage is the unfused kernel's arithmetic (qconv.c, compiler/integer_kernels.py):
 * the two 1x1 stages sum raw int8 products and add the bias the compiler folded with the
 * stage's input zero point (blob format 3, encode_integer.py),
 *
 *     Σ_k (x_k − zp)·w[o,k] + bias[o] = (A·Bᵀ)[p,o] + (bias[o] − zp·rowsum[o])      (exact, int64)
 *
 * (neither pads, so no padded tap ever needs the zero point), the depthwise stage subtracts its
 * zero point per tap from the plain bias, and every stage requantizes in int64, so the result is
 * bit-exact with running the three calls.  Scratch per thread: E, D, one GEMM block (A, int32 C),
 * the depthwise accumulators and tap lists; its size formula is mirrored by encode_integer.py.
 *
 * Inputs (13): x, then per stage (expand, depthwise, project) weight, bias, multiplier, shift:
 * weights plain int8 constants; the expand and project biases folded, int32 (int64 where a value
 * leaves int32), the depthwise bias plain int32; multipliers int32; shifts int8 (31 + shift in
 * [1, 62]).  Attributes: INPUT_ZP / OUTPUT_ZP / ACT_MIN / ACT_MAX with one value per stage
 * (ek_requant_attrs.h); STRIDES, PADS, DILATIONS of the depthwise stage.
 */
#include <stdio.h>

#include "../ek_internal.h"
#include "ek_requant.h"
#include "ek_requant_attrs.h"
#include "ek_simd.h"
#include "ek_transpose.h"

#define EK_IR_TILE_BYTES 32768 /* the expanded tile E */
#define EK_IR_PIXELS 32        /* pixels per GEMM block */
#define EK_IR_OPERANDS 13

enum { WE, BE, ME, SE, WD, BD, MD, SD, WP, BP, MP, SP }; /* indices into t[]: operands 1..12 */
enum { EXPAND, DEPTHWISE, PROJECT };

typedef struct {
    const ek_tensor *x, *y, *t[EK_IR_OPERANDS - 1]; /* t: the constant operands, in input order */
    int64_t N, Cin, H, W, Ce, Co, Ho, Wo, kh, kw, sh, sw, dh, dw, pt, pl;
    int32_t zp[4], lo[3], hi[3]; /* zero points of x, t1, t2, y; clamps per stage */
    int64_t band, bands, rows_max;
    size_t off_d, off_a, off_c32, off_acc, off_taps;
    /* per-channel constants in the forms the loops read, set at load (the widened copies live in
     * this allocation, the rest point into the blob): */
    int16_t *wdt;             /* depthwise weights as [tap][channel] */
    const int32_t *mult[3];   /* the stages' multipliers (the blob's own constants) */
    int32_t *shift[3];        /* the stages' int8 shifts widened (the SIMD entries read int32) */
    int64_t *bias_e, *bias_p; /* the folded expand / project biases, int32 or int64 in the blob */
    const int32_t *bias_d;    /* the depthwise bias (the blob's own constant) */
    int32_t *add_e;           /* bias_e as int32, valid when simd_expand */
    int32_t *zeros;           /* Ce zeros: the depthwise sums already hold their bias */
    int simd_expand;          /* |bias_e| + Cin·2^14 < 2^31 for every channel: c32 + bias_e fits int32 */
} qir_params;

typedef struct {
    const qir_params *p;
    int64_t band, bands; /* this run's band height (<= p->band, so the scratch fits) and count */
    const ek_simd_kernels *simd;
    ek_gemm_s8_fn gemm;
    const int8_t *x, *we, *wp;
    int8_t *y;
} qir_run;

/* A per-channel constant of `n` values of dtype `dt` (or also int64 when `wide`); int64 values
 * bounded by 2^50, far inside the int64 sums they join. */
static int check_vector(const ek_tensor *t, int dt, int wide, int64_t n, const ek_call *c, const char *what, ek_err *e) {
    if (!t || !(t->dtype == dt || (wide && t->dtype == EK_DT_INT64)) || t->count != n || !t->cdata)
        return ek_bad(e, c, "%s must be a constant %s%s vector of %lld values", what, ek_dtype_name(dt),
                      wide ? " (or int64)" : "", (long long)n);
    if (t->dtype == EK_DT_INT64)
        for (int64_t i = 0; i < n; i++) {
            const int64_t v = ((const int64_t *)t->cdata)[i];
            if (v < -((int64_t)1 << 50) || v > ((int64_t)1 << 50))
                return ek_bad(e, c, "%s[%lld] out of range", what, (long long)i);
        }
    return EK_STATUS_OK;
}

static void widen_bias(const ek_tensor *t, int64_t *out) {
    for (int64_t i = 0; i < t->count; i++)
        out[i] = t->dtype == EK_DT_INT64 ? ((const int64_t *)t->cdata)[i] : ((const int32_t *)t->cdata)[i];
}

/* The operands: weights that chain, then each stage's bias, multiplier and shift. */
static int check_operands(qir_params *p, const ek_call *c, ek_err *e) {
    static const int weights[3] = {WE, WD, WP};
    for (int k = 0; k < 3; k++) {
        const ek_tensor *t = p->t[weights[k]];
        if (!t || t->dtype != EK_DT_INT8 || t->rank != 4 || t->packing != EK_PACK_NONE || !t->cdata)
            return ek_bad(e, c, "weights must be constant plain int8 [O, I, kh, kw] tensors");
    }
    const ek_tensor *we = p->t[WE], *wd = p->t[WD], *wp = p->t[WP];
    p->N = p->x->dims[0]; p->Cin = p->x->dims[1]; p->H = p->x->dims[2]; p->W = p->x->dims[3];
    p->Ce = wd->dims[0]; p->Co = wp->dims[0]; p->kh = wd->dims[2]; p->kw = wd->dims[3];
    if (p->kh * p->kw < 1 || p->Ce < 1 || p->kh * p->kw * p->Ce > ((int64_t)1 << 24))
        return ek_bad(e, c, "depthwise weight shape out of range");
    if (we->dims[0] != p->Ce || we->dims[1] != p->Cin || we->dims[2] != 1 || we->dims[3] != 1 || wd->dims[1] != 1 ||
        wp->dims[1] != p->Ce || wp->dims[2] != 1 || wp->dims[3] != 1)
        return ek_bad(e, c, "weights do not chain: expand [%lld, %lld, 1, 1], depthwise [%lld, 1, k, k], project [O, %lld, 1, 1]",
                      (long long)p->Ce, (long long)p->Cin, (long long)p->Ce, (long long)p->Ce);
    if (p->Cin > 65536 || p->Ce > 65536) return ek_bad(e, c, "reduction length above 65536");
    static const char *const stage[3] = {"expand", "depthwise", "project"};
    const int64_t n[3] = {p->Ce, p->Ce, p->Co};
    char what[32];
    int rc;
    for (int k = 0; k < 3; k++) {
        const int first = weights[k] + 1; /* bias, multiplier, shift follow the weight */
        snprintf(what, sizeof what, "%s bias", stage[k]);
        if ((rc = check_vector(p->t[first], EK_DT_INT32, k != DEPTHWISE, n[k], c, what, e))) return rc;
        snprintf(what, sizeof what, "%s multiplier", stage[k]);
        if ((rc = check_vector(p->t[first + 1], EK_DT_INT32, 0, n[k], c, what, e))) return rc;
        snprintf(what, sizeof what, "%s shift", stage[k]);
        if ((rc = check_vector(p->t[first + 2], EK_DT_INT8, 0, n[k], c, what, e)) ||
            (rc = ek_check_shifts(p->t[first + 2], c, e)))
            return rc;
    }
    /* the depthwise sums are int32: |bias| + taps·255·128 must stay below 2^31 (the compiler
     * only fuses blocks where it does) */
    const int32_t *bd = (const int32_t *)p->t[BD]->cdata;
    for (int64_t ch = 0; ch < p->Ce; ch++)
        if ((bd[ch] < 0 ? -(int64_t)bd[ch] : bd[ch]) + p->kh * p->kw * 32640 >= ((int64_t)1 << 31))
            return ek_bad(e, c, "depthwise bias %d leaves the int32 accumulator range", bd[ch]);
    return EK_STATUS_OK;
}

/* Zero points (which must chain: t1's writer and reader agree, likewise t2's), clamps and the
 * depthwise geometry. */
static int read_attrs(qir_params *p, const ek_call *c, ek_err *e) {
    ek_requant_attrs st[3];
    int64_t s[2], d[2], pads[4];
    int rc;
    if ((rc = ek_attr_ints(c, EK_ATTR_STRIDES, 2, 1, 1 << 16, s, e)) ||
        (rc = ek_attr_ints(c, EK_ATTR_DILATIONS, 2, 1, 1 << 16, d, e)) ||
        (rc = ek_attr_ints(c, EK_ATTR_PADS, 4, 0, 1 << 16, pads, e)) || (rc = ek_read_requant_attrs(c, 3, 0, st, e)))
        return rc;
    if (st[EXPAND].zy != st[DEPTHWISE].zx || st[DEPTHWISE].zy != st[PROJECT].zx)
        return ek_bad(e, c, "stage zero points do not chain");
    for (int k = 0; k < 3; k++) {
        p->zp[k] = st[k].zx;
        p->lo[k] = st[k].lo;
        p->hi[k] = st[k].hi;
    }
    p->zp[3] = st[PROJECT].zy;
    p->sh = s[0]; p->sw = s[1]; p->dh = d[0]; p->dw = d[1]; p->pt = pads[0]; p->pl = pads[1];
    const int64_t ho = p->H + pads[0] + pads[2] - ((p->kh - 1) * p->dh + 1), wo = p->W + pads[1] + pads[3] - (p->kw - 1) * p->dw - 1;
    p->Ho = ho < 0 ? -1 : ho / p->sh + 1;
    p->Wo = wo < 0 ? -1 : wo / p->sw + 1;
    const int64_t *yd = p->y->dims;
    if (yd[0] != p->N || yd[1] != p->Co || yd[2] != p->Ho || yd[3] != p->Wo)
        return ek_bad(e, c, "output '%s' does not have the block's shape [%lld, %lld, %lld, %lld]", p->y->name,
                      (long long)p->N, (long long)p->Co, (long long)p->Ho, (long long)p->Wo);
    return EK_STATUS_OK;
}

/* The per-channel constants in the forms the loops read (qir_params). */
static void unpack_constants(qir_params *p) {
    const int64_t ce = p->Ce, taps = p->kh * p->kw;
    const int8_t *w = (const int8_t *)p->t[WD]->cdata;
    for (int64_t ch = 0; ch < ce; ch++)
        for (int64_t t = 0; t < taps; t++) p->wdt[t * ce + ch] = w[ch * taps + t];
    static const int operand[3][2] = {{ME, SE}, {MD, SD}, {MP, SP}}; /* multiplier, shift */
    for (int k = 0; k < 3; k++) {
        const ek_tensor *sft = p->t[operand[k][1]];
        p->mult[k] = (const int32_t *)p->t[operand[k][0]]->cdata;
        for (int64_t i = 0; i < sft->count; i++) p->shift[k][i] = ((const int8_t *)sft->cdata)[i];
    }
    p->bias_d = (const int32_t *)p->t[BD]->cdata;
    widen_bias(p->t[BE], p->bias_e);
    widen_bias(p->t[BP], p->bias_p);
    p->simd_expand = 1;
    for (int64_t ch = 0; ch < ce; ch++) {
        const int64_t add = p->bias_e[ch];
        if ((add < 0 ? -add : add) + p->Cin * (1 << 14) >= ((int64_t)1 << 31)) p->simd_expand = 0;
        p->add_e[ch] = (int32_t)add; /* read only when simd_expand */
    }
}

int ek_prepare_qinverted_residual(ek_model *m, ek_call *c, ek_err *e) {
    int rc = ek_check_arity(c, EK_IR_OPERANDS, EK_IR_OPERANDS, 1, e);
    if (rc) return rc;
    qir_params probe = {0}; /* the operands are checked before the per-channel arrays are sized */
    if (!(probe.x = ek_operand(m, c, 0, 0, EK_DT_INT8, 4, e)) || !(probe.y = ek_operand(m, c, 1, 0, EK_DT_INT8, 4, e)))
        return EK_STATUS_INVALID;
    for (int i = 0; i < EK_IR_OPERANDS - 1; i++) probe.t[i] = ek_input(m, c, i + 1);
    if ((rc = check_operands(&probe, c, e))) return rc;
    const int64_t ce = probe.Ce, co = probe.Co, taps = probe.kh * probe.kw;
    const size_t head = ek_align64(sizeof(qir_params)), wbytes = ek_align64((size_t)(taps * ce) * 2);
    const size_t ce4 = ek_align64((size_t)ce * 4), co4 = ek_align64((size_t)co * 4);
    const size_t ce8 = ek_align64((size_t)ce * 8), co8 = ek_align64((size_t)co * 8);
    uint8_t *block = calloc(1, head + wbytes + 4 * ce4 + co4 + ce8 + co8);
    if (!block) return ek_fail(e, EK_STATUS_NOMEM, "out of memory");
    qir_params *p = (qir_params *)block;
    *p = probe;
    c->params = p;
    uint8_t *at = block + head;
    p->wdt = (int16_t *)at, at += wbytes;
    p->add_e = (int32_t *)at, at += ce4;
    p->zeros = (int32_t *)at, at += ce4;
    p->shift[EXPAND] = (int32_t *)at, at += ce4;
    p->shift[DEPTHWISE] = (int32_t *)at, at += ce4;
    p->shift[PROJECT] = (int32_t *)at, at += co4;
    p->bias_e = (int64_t *)at, at += ce8;
    p->bias_p = (int64_t *)at;
    if ((rc = read_attrs(p, c, e))) return rc;
    unpack_constants(p);
    /* band height: the expanded rows of a band fill at most EK_IR_TILE_BYTES */
    const int64_t span = (p->kh - 1) * p->dh + 1;
    const int64_t fit = EK_IR_TILE_BYTES / (p->W * p->Ce > 0 ? p->W * p->Ce : 1);
    p->band = fit >= span ? (fit - span) / p->sh + 1 : 1;
    if (p->band > p->Ho) p->band = p->Ho;
    if (p->band < 1) p->band = 1;
    p->bands = (p->Ho + p->band - 1) / p->band;
    p->rows_max = (p->band - 1) * p->sh + span;
    const int64_t widest = p->Ce > p->Co ? p->Ce : p->Co;
    p->off_d = ek_align64((size_t)(p->rows_max * p->W * p->Ce));
    p->off_a = p->off_d + ek_align64((size_t)(p->band * p->Wo * p->Ce));
    p->off_c32 = p->off_a + ek_align64((size_t)(EK_IR_PIXELS * p->Cin));
    p->off_acc = p->off_c32 + ek_align64((size_t)(EK_IR_PIXELS * widest) * 4);
    p->off_taps = p->off_acc + ek_align64((size_t)p->Ce * 4);
    c->scratch = p->off_taps + 2 * ek_align64((size_t)taps * 8); /* tap pointers: inputs and weights */
    return EK_STATUS_OK;
}

/* Expand input rows [iy_lo, iy_hi) of image n into E ([row - iy_lo][column][channel]). */
static void expand_rows(const qir_run *r, int64_t n, int64_t iy_lo, int64_t iy_hi, uint8_t *scratch) {
    const qir_params *p = r->p;
    int8_t *E = (int8_t *)scratch, *A = (int8_t *)(scratch + p->off_a);
    int32_t *c32 = (int32_t *)(scratch + p->off_c32);
    const int64_t hw = p->H * p->W, first = iy_lo * p->W, npix = (iy_hi - iy_lo) * p->W;
    const int8_t *x = r->x + n * p->Cin * hw + first;
    const int32_t *mult = p->mult[EXPAND], *shift = p->shift[EXPAND];
    const int64_t *bias = p->bias_e; /* the folded bias */
    for (int64_t p0 = 0; p0 < npix; p0 += EK_IR_PIXELS) {
        const int64_t rows = npix - p0 < EK_IR_PIXELS ? npix - p0 : EK_IR_PIXELS;
        ek_transpose_i8(x + p0, hw, p->Cin, rows, A, p->Cin); /* A[i][ch] = x[ch][p0 + i] (SIMD 16x16 blocks) */
        r->gemm((int)rows, (int)p->Ce, (int)p->Cin, A, (int)p->Cin, r->we, (int)p->Cin, c32, (int)p->Ce);
        int8_t *dst = E + p0 * p->Ce;
        if (r->simd && p->simd_expand) {
            for (int64_t i = 0; i < rows; i++)
                r->simd->requantize_channels(c32 + i * p->Ce, p->add_e, mult, shift, p->Ce, p->zp[1], p->lo[0],
                                             p->hi[0], dst + i * p->Ce);
            continue;
        }
        for (int64_t i = 0; i < rows; i++)
            for (int64_t o = 0; o < p->Ce; o++) {
                const int64_t acc = (int64_t)c32[i * p->Ce + o] + bias[o];
                dst[i * p->Ce + o] = ek_requantize(acc, mult[o], shift[o], p->zp[1], p->lo[0], p->hi[0]);
            }
    }
}

/* Depthwise output rows [oy0, oy1) from E (whose row 0 is input row iy_lo) into D.  Per output
 * pixel, the window's in-bounds taps are listed (padding is skipped: (zp − zp)·w = 0), then
 * all channels are summed, channels-last, by the SIMD entry or the portable loop. */
static void depthwise_rows(const qir_run *r, int64_t oy0, int64_t oy1, int64_t iy_lo, uint8_t *scratch) {
    const qir_params *p = r->p;
    const int8_t *E = (const int8_t *)scratch;
    int8_t *D = (int8_t *)(scratch + p->off_d);
    int32_t *acc = (int32_t *)(scratch + p->off_acc);
    const int8_t **srcs = (const int8_t **)(scratch + p->off_taps);
    const int16_t **ws = (const int16_t **)(scratch + p->off_taps + ek_align64((size_t)(p->kh * p->kw) * 8));
    const int64_t ce = p->Ce;
    const int32_t ze = p->zp[1];
    const int32_t *bias = p->bias_d, *mult = p->mult[DEPTHWISE], *shift = p->shift[DEPTHWISE];
    for (int64_t oy = oy0; oy < oy1; oy++)
        for (int64_t ox = 0; ox < p->Wo; ox++) {
            int n = 0;
            for (int64_t ky = 0; ky < p->kh; ky++) {
                const int64_t iy = oy * p->sh - p->pt + ky * p->dh;
                if (iy < 0 || iy >= p->H) continue;
                for (int64_t kx = 0; kx < p->kw; kx++) {
                    const int64_t ix = ox * p->sw - p->pl + kx * p->dw;
                    if (ix < 0 || ix >= p->W) continue;
                    srcs[n] = E + ((iy - iy_lo) * p->W + ix) * ce;
                    ws[n++] = p->wdt + (ky * p->kw + kx) * ce;
                }
            }
            int8_t *dst = D + ((oy - oy0) * p->Wo + ox) * ce;
            if (r->simd) {
                r->simd->depthwise_channels(srcs, ws, n, ce, ze, bias, acc);
                r->simd->requantize_channels(acc, p->zeros, mult, shift, ce, p->zp[2], p->lo[1], p->hi[1], dst);
                continue;
            }
            for (int64_t ch = 0; ch < ce; ch++) acc[ch] = bias[ch];
            for (int t = 0; t < n; t++)
                for (int64_t ch = 0; ch < ce; ch++) acc[ch] += ((int32_t)srcs[t][ch] - ze) * ws[t][ch];
            for (int64_t ch = 0; ch < ce; ch++)
                dst[ch] = ek_requantize(acc[ch], mult[ch], shift[ch], p->zp[2], p->lo[1], p->hi[1]);
        }
}

/* Project D (output rows [oy0, oy1) of image n) into y. */
static void project_rows(const qir_run *r, int64_t n, int64_t oy0, int64_t oy1, uint8_t *scratch) {
    const qir_params *p = r->p;
    const int8_t *D = (const int8_t *)(scratch + p->off_d);
    int32_t *c32 = (int32_t *)(scratch + p->off_c32);
    const int64_t plane = p->Ho * p->Wo, npix = (oy1 - oy0) * p->Wo;
    int8_t *y = r->y + n * p->Co * plane + oy0 * p->Wo;
    const int32_t *mult = p->mult[PROJECT], *shift = p->shift[PROJECT];
    const int64_t *bias = p->bias_p; /* the folded bias */
    for (int64_t p0 = 0; p0 < npix; p0 += EK_IR_PIXELS) {
        const int64_t rows = npix - p0 < EK_IR_PIXELS ? npix - p0 : EK_IR_PIXELS;
        r->gemm((int)rows, (int)p->Co, (int)p->Ce, D + p0 * p->Ce, (int)p->Ce, r->wp, (int)p->Ce, c32, (int)p->Co);
        for (int64_t o = 0; o < p->Co; o++) {
            const int64_t add = bias[o];
            const int32_t mlt = mult[o], sft = shift[o];
            int8_t *dst = y + o * plane + p0;
            /* |c32| <= Ce·2^14 (raw int8 products): c32 + add is exact in int32 under this bound */
            if (r->simd && (add < 0 ? -add : add) + p->Ce * (1 << 14) < ((int64_t)1 << 31)) {
                const ek_rq rq = {mlt, 31 + sft, p->zp[3], p->lo[2], p->hi[2]};
                r->simd->requantize_column(c32 + o, p->Co, rows, (int32_t)add, &rq, dst);
                continue;
            }
            for (int64_t i = 0; i < rows; i++)
                dst[i] = ek_requantize((int64_t)c32[i * p->Co + o] + add, mlt, sft, p->zp[3], p->lo[2], p->hi[2]);
        }
    }
}

static void band_task(void *ctx, int64_t t, uint8_t *scratch) {
    const qir_run *r = ctx;
    const qir_params *p = r->p;
    const int64_t n = t / r->bands, oy0 = t % r->bands * r->band;
    const int64_t oy1 = oy0 + r->band < p->Ho ? oy0 + r->band : p->Ho;
    int64_t iy_lo = oy0 * p->sh - p->pt, iy_hi = (oy1 - 1) * p->sh - p->pt + (p->kh - 1) * p->dh + 1;
    if (iy_lo < 0) iy_lo = 0;
    if (iy_hi > p->H) iy_hi = p->H;
    if (iy_hi > iy_lo) expand_rows(r, n, iy_lo, iy_hi, scratch);
    depthwise_rows(r, oy0, oy1, iy_lo, scratch);
    project_rows(r, n, oy0, oy1, scratch);
}

int ek_run_qinverted_residual(ek_model *m, const ek_call *c, ek_err *e) {
    (void)e;
    const qir_params *p = c->params;
    if (p->y->count == 0) return EK_STATUS_OK;
    qir_run r = {p, p->band, p->bands, ek_simd_for(m), m->gemm_s8, ek_data(m, p->x), ek_data(m, p->t[WE]),
                 ek_data(m, p->t[WP]), ek_data(m, p->y)};
    /* Fewer tasks than threads (a small image fits one band): split it into thinner bands, one
     * per thread; each recomputes its halo rows, which costs less than leaving threads idle. */
    if (m->threads > 1 && p->N * p->bands < m->threads) {
        const int64_t per_image = (m->threads + p->N - 1) / p->N;
        r.band = (p->Ho + per_image - 1) / per_image;
        r.bands = (p->Ho + r.band - 1) / r.band;
    }
    ek_parallel(m, p->N * r.bands, band_task, &r);
    return EK_STATUS_OK;
}
