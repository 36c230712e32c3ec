/*
 * The public API around a loaded model: I/O description, threads, ISA choice, running and
 * profiling, freeing.  Loading and validation live in blob.c.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, posix_memalign */

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ek_internal.h"

void ek_model_free(ek_model *m) {
    if (!m) return;
    if (m->calls)
        for (uint32_t i = 0; i < m->n_calls; i++) {
            free(m->calls[i].in);
            free(m->calls[i].attrs);
            free(m->calls[i].params);
        }
    ek_pool_destroy(m->pool);
    free(m->calls);
    free(m->tensors);
    free(m->inputs);
    free(m->outputs);
    free(m->arena);
    free(m->scratch);
    free(m->blob_copy);
    free(m);
}

int ek_model_num_inputs(const ek_model *m) { return m ? (int)m->n_inputs : 0; }
int ek_model_num_outputs(const ek_model *m) { return m ? (int)m->n_outputs : 0; }
int ek_model_num_calls(const ek_model *m) { return m ? (int)m->n_calls : 0; }
size_t ek_model_arena_bytes(const ek_model *m) { return m ? m->arena_bytes : 0; }
size_t ek_model_scratch_bytes(const ek_model *m) { return m ? m->scratch_per_thread * (size_t)m->threads : 0; }
const char *ek_model_isa(const ek_model *m) { return m ? m->isa : ""; }
void ek_model_set_profile(ek_model *m, double *seconds) { if (m) m->profile = seconds; }

const char *ek_model_call_name(const ek_model *m, int i) {
    return m && i >= 0 && (uint32_t)i < m->n_calls ? m->calls[i].name : "";
}

const char *ek_model_call_op(const ek_model *m, int i) {
    return m && i >= 0 && (uint32_t)i < m->n_calls ? m->calls[i].def->name : "";
}

int ek_model_io(const ek_model *m, int is_output, int index, ek_tensor_info *info) {
    if (!m || !info || index < 0 || (uint32_t)index >= (is_output ? m->n_outputs : m->n_inputs))
        return EK_STATUS_ARG;
    const ek_tensor *t = &m->tensors[is_output ? m->outputs[index] : m->inputs[index]];
    memset(info, 0, sizeof *info);
    info->name = t->name;
    info->dtype = t->dtype;
    info->rank = t->rank;
    for (int d = 0; d < t->rank; d++) info->dims[d] = t->dims[d];
    info->nbytes = t->nbytes;
    info->scale = t->scale;
    info->zero_point = t->zero_point;
    return EK_STATUS_OK;
}

int ek_model_set_threads(ek_model *m, int threads, char *err, size_t errlen) {
    ek_err e = {err, errlen};
    if (!m || threads < 1 || threads > 256) return ek_fail(&e, EK_STATUS_ARG, "threads must be in [1, 256]");
    if (threads == m->threads) return EK_STATUS_OK;
    uint8_t *scratch = NULL;
    if (m->scratch_per_thread > (SIZE_MAX - 64) / (size_t)threads || /* 32-bit: the product would wrap */
        posix_memalign((void **)&scratch, 64, m->scratch_per_thread * (size_t)threads + 64))
        return ek_fail(&e, EK_STATUS_NOMEM, "out of memory for %d threads' scratch", threads);
    ek_pool *pool = NULL;
    if (threads > 1 && !(pool = ek_pool_create(threads))) {
        free(scratch);
        return ek_fail(&e, EK_STATUS_RUNTIME, "could not start %d threads", threads);
    }
    ek_pool_destroy(m->pool);
    free(m->scratch);
    m->pool = pool;
    m->scratch = scratch;
    m->threads = threads;
    return EK_STATUS_OK;
}

int ek_model_set_isa(ek_model *m, const char *isa, char *err, size_t errlen) {
    ek_err e = {err, errlen};
    if (!m) return ek_fail(&e, EK_STATUS_ARG, "NULL model");
    const char *name = NULL;
    ek_gemm_s8_fn fn = ek_select_gemm_s8(ek_cpu_features(), isa, &name);
    if (!fn) return ek_fail(&e, EK_STATUS_ISA, "--isa %s: %s", isa ? isa : "auto", name ? name : "not available");
    m->gemm_s8 = fn;
    m->isa = name;
    return EK_STATUS_OK;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int ek_model_run(ek_model *m, const void *const *inputs, void *const *outputs, char *err, size_t errlen) {
    ek_err e = {err, errlen};
    if (err && errlen) err[0] = 0;
    if (!m || (m->n_inputs && !inputs) || (m->n_outputs && !outputs))
        return ek_fail(&e, EK_STATUS_ARG, "ek_model_run: NULL model, inputs or outputs");
    for (uint32_t i = 0; i < m->n_inputs; i++)
        if (!inputs[i] && m->tensors[m->inputs[i]].nbytes) return ek_fail(&e, EK_STATUS_ARG, "input %u is NULL", i);
    for (uint32_t i = 0; i < m->n_outputs; i++)
        if (!outputs[i] && m->tensors[m->outputs[i]].nbytes) return ek_fail(&e, EK_STATUS_ARG, "output %u is NULL", i);
    m->in_ptrs = inputs;
    m->out_ptrs = outputs;
    int rc = EK_STATUS_OK;
    for (uint32_t i = 0; i < m->n_calls && !rc; i++) {
        const ek_call *c = &m->calls[i];
        double start = m->profile ? now_seconds() : 0.0;
        rc = c->def->run(m, c, &e);
        if (m->profile) m->profile[i] = now_seconds() - start;
    }
    m->in_ptrs = NULL;
    m->out_ptrs = NULL;
    return rc;
}

const char *ek_status_name(int status) {
    static const char *names[] = {"ok", "bad argument", "truncated blob", "not a blob", "unsupported version",
                                  "checksum mismatch", "corrupt blob", "unsupported", "invalid operands",
                                  "out of memory", "run-time error", "ISA not available"};
    return status >= 0 && status < (int)(sizeof names / sizeof names[0]) ? names[status] : "unknown status";
}
