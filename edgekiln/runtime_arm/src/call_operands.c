/*
 * What `prepare` functions use to check a call: operand presence, dtype and rank, attribute
 * values within bounds; and the error messages, which always name the call and its op.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ek_internal.h"

int ek_fail(ek_err *e, int status, const char *fmt, ...) {
    if (e && e->buf && e->len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->buf, e->len, fmt, ap);
        va_end(ap);
    }
    return status;
}

int ek_bad(ek_err *e, const ek_call *c, const char *fmt, ...) {
    if (e && e->buf && e->len) {
        int n = snprintf(e->buf, e->len, "call '%s' (%s): ", c->name, c->def ? c->def->name : "?");
        if (n >= 0 && (size_t)n < e->len) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(e->buf + n, e->len - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return EK_STATUS_INVALID;
}

const ek_tensor *ek_input(const ek_model *m, const ek_call *c, int i) {
    return i < c->n_in && c->in[i] >= 0 ? &m->tensors[c->in[i]] : NULL;
}

const ek_tensor *ek_output(const ek_model *m, const ek_call *c, int i) {
    return i < c->n_out && c->out[i] >= 0 ? &m->tensors[c->out[i]] : NULL;
}

int ek_check_arity(const ek_call *c, int min_in, int max_in, int n_out, ek_err *e) {
    if (c->n_in < min_in || c->n_in > max_in || c->n_out != n_out)
        return ek_bad(e, c, "takes %d..%d inputs and %d outputs, has %d and %d", min_in, max_in, n_out, c->n_in,
                      c->n_out);
    for (int i = 0; i < n_out; i++)
        if (c->out[i] < 0) return ek_bad(e, c, "output %d is absent", i);
    return EK_STATUS_OK;
}

const ek_tensor *ek_operand(ek_model *m, const ek_call *c, int output, int i, int dtype, int rank, ek_err *e) {
    const ek_tensor *t = output ? ek_output(m, c, i) : ek_input(m, c, i);
    const char *what = output ? "output" : "input";
    if (!t) {
        ek_bad(e, c, "%s %d is missing", what, i);
        return NULL;
    }
    if (dtype && t->dtype != dtype) {
        ek_bad(e, c, "%s %d '%s' is %s, expected %s", what, i, t->name, ek_dtype_name(t->dtype), ek_dtype_name(dtype));
        return NULL;
    }
    if (rank >= 0 && t->rank != rank) {
        ek_bad(e, c, "%s %d '%s' has rank %d, expected %d", what, i, t->name, t->rank, rank);
        return NULL;
    }
    return t;
}

int ek_same_shape(const ek_tensor *a, const ek_tensor *b) {
    if (a->rank != b->rank) return 0;
    for (int d = 0; d < a->rank; d++)
        if (a->dims[d] != b->dims[d]) return 0;
    return 1;
}

const ek_attr *ek_attr_find(const ek_call *c, int key) {
    for (int i = 0; i < c->n_attrs; i++)
        if (c->attrs[i].key == key) return &c->attrs[i];
    return NULL;
}

int64_t ek_attr_i64_at(const ek_attr *a, uint32_t i) {
    uint64_t u = 0;
    for (int b = 7; b >= 0; b--) u = u << 8 | a->data[8 * (size_t)i + b];
    if (a->type == EK_ATYPE_FLOAT) {
        double d;
        memcpy(&d, &u, 8);
        return d >= -9.2e18 && d <= 9.2e18 ? (int64_t)d : 0;
    }
    return (int64_t)u;
}

double ek_attr_f64_at(const ek_attr *a, uint32_t i) {
    uint64_t u = 0;
    for (int b = 7; b >= 0; b--) u = u << 8 | a->data[8 * (size_t)i + b];
    if (a->type == EK_ATYPE_INT) return (double)(int64_t)u;
    double d;
    memcpy(&d, &u, 8);
    return d;
}

int ek_attr_int_list(const ek_call *c, int key, int max, int64_t lo, int64_t hi, int64_t *out, int *count,
                     ek_err *e) {
    const ek_attr *a = ek_attr_find(c, key);
    if (!a) return ek_bad(e, c, "attribute %d is missing", key);
    if (a->type != EK_ATYPE_INT) return ek_bad(e, c, "attribute %d is not an integer list", key);
    if (a->count > (uint32_t)max) return ek_bad(e, c, "attribute %d has %u values, at most %d", key, a->count, max);
    for (uint32_t i = 0; i < a->count; i++) {
        int64_t v = ek_attr_i64_at(a, i);
        if (v < lo || v > hi)
            return ek_bad(e, c, "attribute %d value %lld outside [%lld, %lld]", key, (long long)v, (long long)lo,
                          (long long)hi);
        out[i] = v;
    }
    *count = (int)a->count;
    return EK_STATUS_OK;
}

int ek_attr_ints(const ek_call *c, int key, int count, int64_t lo, int64_t hi, int64_t *out, ek_err *e) {
    int n = 0;
    int rc = ek_attr_int_list(c, key, count, lo, hi, out, &n, e);
    if (rc) return rc;
    if (n != count) return ek_bad(e, c, "attribute %d has %d values, expected %d", key, n, count);
    return EK_STATUS_OK;
}

int ek_attr_int(const ek_call *c, int key, int required, int64_t def, int64_t lo, int64_t hi, int64_t *out,
                ek_err *e) {
    if (!ek_attr_find(c, key)) {
        if (required) return ek_bad(e, c, "attribute %d is missing", key);
        *out = def;
        return EK_STATUS_OK;
    }
    return ek_attr_ints(c, key, 1, lo, hi, out, e);
}

int ek_attr_float(const ek_call *c, int key, int required, double def, double *out, ek_err *e) {
    const ek_attr *a = ek_attr_find(c, key);
    if (!a) {
        if (required) return ek_bad(e, c, "attribute %d is missing", key);
        *out = def;
        return EK_STATUS_OK;
    }
    if (a->count != 1) return ek_bad(e, c, "attribute %d has %u values, expected 1", key, a->count);
    *out = ek_attr_f64_at(a, 0);
    if (isnan(*out)) return ek_bad(e, c, "attribute %d is NaN", key);
    return EK_STATUS_OK;
}

int ek_check_shifts(const ek_tensor *t, const ek_call *c, ek_err *e) {
    if (!t->cdata) return ek_bad(e, c, "shift operand '%s' must be a constant", t->name);
    if (t->dtype != EK_DT_INT8) return ek_bad(e, c, "shift operand '%s' must be int8", t->name);
    for (int64_t i = 0; i < t->count; i++) {
        const int32_t s = ((const int8_t *)t->cdata)[i];
        if (s < -30 || s > 31) return ek_bad(e, c, "shift[%lld] = %d: 31 + shift outside [1, 62]", (long long)i, s);
    }
    return EK_STATUS_OK;
}
