/*
 * edgekiln C runtime: load a model blob, run it.
 *
 *     ek_model *model;
 *     char err[256];
 *     if (ek_model_load(blob, size, &model, err, sizeof err) != EK_STATUS_OK) { puts(err); ... }
 *     ek_model_set_threads(model, 4, err, sizeof err);
 *     const void *inputs[] = {x};   void *outputs[] = {y};
 *     ek_model_run(model, inputs, outputs, err, sizeof err);
 *     ek_model_free(model);
 *
 * Contract
 *   - Every function returns an EK_STATUS_* code (ek_ops.h) and, on failure, writes a
 *     NUL-terminated message into `err` (when err != NULL and errlen > 0).  A corrupted or
 *     truncated blob is refused by ek_model_load with a message; it never crashes the caller.
 *   - The blob is validated completely at load: magic, version, CRC32, every offset, size,
 *     tensor id, op code and attribute, and each call's operand shapes and dtypes against its
 *     op.  A blob that loads runs without reading or writing outside its buffers.
 *   - ek_model_load and ek_model_set_threads allocate (arena, scratch, threads); ek_model_run
 *     never does.  Constants are used in place: keep the blob alive, unchanged, until
 *     ek_model_free (a blob that is not 64-byte aligned is copied once at load).
 *   - Inputs and outputs are dense, C-ordered, little-endian buffers of exactly the byte size
 *     ek_model_io reports; graph outputs are written directly into the caller's buffers.
 *   - A model is not re-entrant: one ek_model_run at a time per model.
 */
#ifndef EK_RUNTIME_H
#define EK_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#include "ek_ops.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ek_model ek_model;

typedef struct {
    const char *name;
    int dtype;                    /* EK_DT_* */
    int rank;
    int64_t dims[EK_MAX_RANK];
    size_t nbytes;
    float scale;                  /* quantized tensors: real = scale * (q - zero_point) */
    int32_t zero_point;
} ek_tensor_info;

int ek_model_load(const void *blob, size_t size, ek_model **out, char *err, size_t errlen);
void ek_model_free(ek_model *model);

int ek_model_num_inputs(const ek_model *model);
int ek_model_num_outputs(const ek_model *model);
/* is_output = 0: input `index`, else output `index`. */
int ek_model_io(const ek_model *model, int is_output, int index, ek_tensor_info *info);

/* Threads used by the parallel kernels (conv, GEMM, matmul); 1 = run on the caller only. */
int ek_model_set_threads(ek_model *model, int threads, char *err, size_t errlen);
/* The int8 GEMM path: "auto" (the fastest this CPU runs), "c", "neon", "dotprod", "i8mm", "avx2",
 * "avxvnni" or "avx512vnni".  EK_STATUS_ISA when the CPU or this build lacks it. */
int ek_model_set_isa(ek_model *model, const char *isa, char *err, size_t errlen);
const char *ek_model_isa(const ek_model *model);

/* Bytes held: the activation arena and the scratch of all threads. */
size_t ek_model_arena_bytes(const ek_model *model);
size_t ek_model_scratch_bytes(const ek_model *model);

int ek_model_run(ek_model *model, const void *const *inputs, void *const *outputs, char *err,
                 size_t errlen);

/* Per-call wall time in seconds of the last run, written when `seconds` is not NULL (an array
 * of ek_model_num_calls entries, owned by the caller); NULL turns profiling off. */
void ek_model_set_profile(ek_model *model, double *seconds);
int ek_model_num_calls(const ek_model *model);
const char *ek_model_call_name(const ek_model *model, int index);
const char *ek_model_call_op(const ek_model *model, int index);

const char *ek_status_name(int status);
const char *ek_dtype_name(int dtype);

#ifdef __cplusplus
}
#endif

#endif /* EK_RUNTIME_H */
