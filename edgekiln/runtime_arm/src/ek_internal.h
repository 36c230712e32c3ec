/*
 * The runtime's internal types: a loaded model, its tensors and calls, and the helpers every
 * kernel uses to validate its operands at load (`prepare`) and reach their data at run time.
 *
 * Each op is a pair of functions (ops_table.c):
 *   prepare(model, call, err)  runs once at load; checks operand count, dtypes, shapes and
 *                              attributes so that `run` cannot index outside a buffer, stores
 *                              whatever it derived in call->params and sets call->scratch
 *                              (bytes of per-thread scratch it needs);
 *   run(model, call, err)      computes; allocation-free; returns EK_STATUS_OK or an error.
 */
#ifndef EK_INTERNAL_H
#define EK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h> /* prepare functions calloc their params */

#include "ek_gemm.h"
#include "ek_ops.h"
#include "ek_runtime.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the edgekiln runtime reads little-endian blobs in place: little-endian targets only"
#endif

/* Largest element count of one tensor: keeps every size product far from overflow. */
#define EK_MAX_ELEMENTS ((int64_t)1 << 40)

typedef struct {
    char *buf;
    size_t len;
} ek_err;

typedef struct {
    uint8_t dtype, rank, storage, packing;
    int64_t dims[EK_MAX_RANK];
    int64_t count;      /* elements */
    size_t elem_size;   /* bytes per element as used by kernels (packed: 1, unpacked int8) */
    size_t nbytes;      /* bytes in storage (packed size for packed constants) */
    uint64_t offset;
    const char *name;
    float scale;
    int32_t zero_point;
    const uint8_t *cdata; /* constants: the bytes in the blob */
} ek_tensor;

typedef struct {
    uint16_t key;
    uint8_t type;
    uint32_t count;
    const uint8_t *data; /* `count` little-endian 8-byte values */
} ek_attr;

struct ek_model;
struct ek_call;

typedef int (*ek_prepare_fn)(struct ek_model *m, struct ek_call *c, ek_err *e);
typedef int (*ek_run_fn)(struct ek_model *m, const struct ek_call *c, ek_err *e);

typedef struct {
    uint16_t op;
    const char *name;
    ek_prepare_fn prepare;
    ek_run_fn run;
} ek_op_def;

typedef struct ek_call {
    uint16_t op;
    const ek_op_def *def;
    int n_in, n_out;
    int32_t *in, *out; /* tensor ids, -1 = absent */
    int n_attrs;
    ek_attr *attrs;
    const char *name;
    void *params;      /* what prepare derived (free()d with the model) */
    size_t scratch;    /* per-thread scratch bytes */
} ek_call;

typedef struct ek_pool ek_pool;

struct ek_model {
    const uint8_t *blob;
    size_t size;
    uint8_t *blob_copy; /* when the caller's blob was not 64-byte aligned */
    ek_tensor *tensors;
    uint32_t n_tensors;
    ek_call *calls;
    uint32_t n_calls;
    uint32_t *inputs, *outputs;
    uint32_t n_inputs, n_outputs;
    uint8_t *arena;
    size_t arena_bytes;
    uint8_t *scratch;          /* threads x scratch_per_thread */
    size_t scratch_per_thread;
    int threads;
    ek_pool *pool;
    const void *const *in_ptrs; /* bound for the duration of one run */
    void *const *out_ptrs;
    ek_gemm_s8_fn gemm_s8;
    const char *isa;
    double *profile;
};

/* -- errors ------------------------------------------------------------------------------ */
int ek_fail(ek_err *e, int status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* "call 'NAME' (OP): " + message, status EK_STATUS_INVALID. */
int ek_bad(ek_err *e, const ek_call *c, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* -- operands ---------------------------------------------------------------------------- */
const ek_tensor *ek_input(const struct ek_model *m, const ek_call *c, int i);  /* NULL if absent */
const ek_tensor *ek_output(const struct ek_model *m, const ek_call *c, int i);
/* Checks that input i (or output i when `output`) exists, has `dtype` (0: any) and, when
 * rank >= 0, that rank; returns it or NULL after writing the error. */
const ek_tensor *ek_operand(struct ek_model *m, const ek_call *c, int output, int i, int dtype,
                            int rank, ek_err *e);
int ek_check_arity(const ek_call *c, int min_in, int max_in, int n_out, ek_err *e);
int ek_same_shape(const ek_tensor *a, const ek_tensor *b);
/* A 3-D [N, C, L] tensor seen as [N, C, 1, L]; 4-D as is.  Returns 0 for other ranks. */
int ek_view4(const ek_tensor *t, int64_t out[4]);
/* numpy broadcasting of `t` against an output of rank `rank`, dims `dims`: element strides
 * (0 on broadcast axes), aligned right; 0 when the shapes do not broadcast. */
int ek_broadcast_strides(const ek_tensor *t, int rank, const int64_t *dims, int64_t *strides);

/* Output strides of x's dims for a reduction over the axes in `mask` (0 on reduced axes);
 * 0 when y is neither the keepdims nor the squeezed shape of the result. */
int ek_reduce_strides(const ek_tensor *x, const ek_tensor *y, unsigned mask, int64_t *ostride);
/* EK_ATTR_AXES (each in [0, rank), no repeats) as a bit mask. */
int ek_axes_mask(const ek_call *c, int rank, unsigned *mask, ek_err *e);

/* Data of a tensor during a run (arena, constant, or the caller's I/O buffer). */
void *ek_data(const struct ek_model *m, const ek_tensor *t);
static inline const void *ek_cdata(const struct ek_model *m, const ek_tensor *t) { return ek_data(m, t); }

/* -- attributes -------------------------------------------------------------------------- */
const ek_attr *ek_attr_find(const ek_call *c, int key);
int64_t ek_attr_i64_at(const ek_attr *a, uint32_t i);
double ek_attr_f64_at(const ek_attr *a, uint32_t i);
/* Required integer attribute with `count` values in [lo, hi] into out[]. */
int ek_attr_ints(const ek_call *c, int key, int count, int64_t lo, int64_t hi, int64_t *out, ek_err *e);
/* One integer value in [lo, hi]; `def` when absent and not required. */
int ek_attr_int(const ek_call *c, int key, int required, int64_t def, int64_t lo, int64_t hi,
                int64_t *out, ek_err *e);
int ek_attr_float(const ek_call *c, int key, int required, double def, double *out, ek_err *e);
/* Variable-length integer list: *count = its length (<= max). */
int ek_attr_int_list(const ek_call *c, int key, int max, int64_t lo, int64_t hi, int64_t *out,
                     int *count, ek_err *e);

/* -- parallel loops ---------------------------------------------------------------------- */
typedef void (*ek_task_fn)(void *ctx, int64_t task, uint8_t *scratch);
/* Runs fn(ctx, t, scratch of the executing thread) for t in [0, ntasks). */
void ek_parallel(struct ek_model *m, int64_t ntasks, ek_task_fn fn, void *ctx);
/* Runs fn(ctx, begin, end) over pieces of [0, n) covering it once, in parallel when the pool has
 * threads and each piece gets at least min_chunk elements (pieces are multiples of 64). */
typedef void (*ek_range_fn)(void *ctx, int64_t begin, int64_t end);
void ek_parallel_range(struct ek_model *m, int64_t n, int64_t min_chunk, ek_range_fn fn, void *ctx);

ek_pool *ek_pool_create(int threads);
void ek_pool_destroy(ek_pool *pool);
/* Runs the tasks on the pool's workers and the caller; `scratch` holds one block of
 * `stride` bytes per thread (the caller uses block 0). */
void ek_pool_run(ek_pool *pool, int64_t ntasks, ek_task_fn fn, void *ctx, uint8_t *scratch,
                 size_t stride);

/* Output positions [*lo, *hi) along one axis whose whole window (k taps, stride s, dilation d,
 * leading pad) lies inside an input of `in`: there no tap needs a bounds check. */
static inline void ek_interior(int64_t in, int64_t out, int64_t k, int64_t s, int64_t d, int64_t pad, int64_t *lo,
                               int64_t *hi) {
    int64_t a = (pad + s - 1) / s, b = in + pad - d * (k - 1) - 1; /* o·s − pad >= 0, o·s − pad + d(k−1) <= in − 1 */
    b = b < 0 ? 0 : b / s + 1;
    *lo = a < out ? a : out;
    *hi = b < *lo ? *lo : b > out ? out : b;
}

/* -- shared numerics --------------------------------------------------------------------- */
static inline size_t ek_align64(size_t n) { return (n + 63) & ~(size_t)63; }
uint32_t ek_crc32(const uint8_t *data, size_t n);
/* Values [first, first + count) (flat, row-major indices) of a packed int4/int2 constant in any
 * layout, flat or K-blocked, of pre-paired int8 (EK_PACK_I8_PAIRS8), or of plain int8, as int8. */
void ek_unpack_int8(const ek_tensor *t, const uint8_t *data, int64_t first, int64_t count, int8_t *dst);
/* Bits per weight of a K-blocked GEMM packing (EK_PACK_INT4_K32: 4, EK_PACK_INT2_K64: 2), else 0. */
int ek_packing_bits(int packing);
/* Checks a constant of per-channel shifts: int8 (every kernel reads them so since blob format 3),
 * 31 + shift in [1, 62] for every entry. */
int ek_check_shifts(const ek_tensor *t, const ek_call *c, ek_err *e);
size_t ek_dtype_size(int dtype);

/* Ops (ops_table.c). */
const ek_op_def *ek_find_op(int op);

#endif /* EK_INTERNAL_H */
