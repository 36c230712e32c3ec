/*
 * Float activations, shared by the Unary op and the epilogues of fused Conv / MatMul calls.
 * Formulas are ONNX's (and compiler/fused_ops.py's for SiLU and the GELUs).
 */
#ifndef EK_ACTIVATION_H
#define EK_ACTIVATION_H

#include <math.h>

#include "../ek_internal.h"

typedef struct {
    int fn;
    float alpha, beta, lo, hi;
} ek_act;

/* An epilogue: up to 4 steps, each EK_STEP_ADD (the residual) or an activation. */
typedef struct {
    int n;
    int steps[4];
    ek_act act;
} ek_epilogue;

static inline float ek_sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

static inline float ek_activate(const ek_act *a, float x) {
    switch (a->fn) {
    case EK_FN_RELU: return x > 0.0f ? x : 0.0f;
    case EK_FN_CLIP: return x < a->lo ? a->lo : x > a->hi ? a->hi : x;
    case EK_FN_SIGMOID: return ek_sigmoidf(x);
    case EK_FN_HARD_SIGMOID: { float v = a->alpha * x + a->beta; return v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v; }
    case EK_FN_HARD_SWISH: { float v = x / 6.0f + 0.5f; return x * (v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v); }
    case EK_FN_TANH: return tanhf(x);
    case EK_FN_ERF: return erff(x);
    case EK_FN_GELU: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case EK_FN_GELU_TANH: return 0.5f * x * (1.0f + tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)));
    case EK_FN_LEAKY_RELU: return x >= 0.0f ? x : a->alpha * x;
    case EK_FN_ELU: return x >= 0.0f ? x : a->alpha * (expf(x) - 1.0f);
    case EK_FN_SELU: return x > 0.0f ? a->beta * x : a->beta * (a->alpha * expf(x) - a->alpha);
    case EK_FN_SOFTPLUS: return x > 20.0f ? x : log1pf(expf(x));
    case EK_FN_MISH: return x * tanhf(x > 20.0f ? x : log1pf(expf(x)));
    case EK_FN_SILU: return x * ek_sigmoidf(x);
    case EK_FN_SQRT: return sqrtf(x);
    case EK_FN_RECIPROCAL: return 1.0f / x;
    case EK_FN_NEG: return -x;
    case EK_FN_ABS: return fabsf(x);
    case EK_FN_EXP: return expf(x);
    case EK_FN_LOG: return logf(x);
    case EK_FN_FLOOR: return floorf(x);
    case EK_FN_CEIL: return ceilf(x);
    case EK_FN_ROUND: return rintf(x); /* ONNX Round: half to even */
    case EK_FN_SIGN: return x > 0.0f ? 1.0f : x < 0.0f ? -1.0f : 0.0f;
    default: return x;
    }
}

static inline void ek_activate_array(const ek_act *a, float *v, int64_t n) {
    switch (a->fn) { /* the common cases without the per-element switch */
    case EK_FN_IDENTITY: return;
    case EK_FN_RELU: for (int64_t i = 0; i < n; i++) v[i] = v[i] > 0.0f ? v[i] : 0.0f; return;
    case EK_FN_CLIP: for (int64_t i = 0; i < n; i++) v[i] = v[i] < a->lo ? a->lo : v[i] > a->hi ? a->hi : v[i]; return;
    default: for (int64_t i = 0; i < n; i++) v[i] = ek_activate(a, v[i]); return;
    }
}

/* Reads FUNC-style parameters: `fn` plus ALPHA/BETA/FMIN/FMAX (or the ACT_* keys of an epilogue). */
int ek_act_parse(const ek_call *c, int fn, int epilogue, ek_act *a, ek_err *e);
/* Reads EK_ATTR_EPILOGUE; `has_residual`: whether the call has a residual operand. */
int ek_epilogue_parse(const ek_call *c, int has_residual, ek_epilogue *ep, ek_err *e);
/* v[i] (n values, bias already added) through the steps; `residual` the matching n values. */
static inline void ek_epilogue_apply(const ek_epilogue *ep, float *v, int64_t n, const float *residual) {
    for (int s = 0; s < ep->n; s++) {
        if (ep->steps[s] == EK_STEP_ADD) {
            for (int64_t i = 0; i < n; i++) v[i] += residual[i];
        } else {
            ek_activate_array(&ep->act, v, n);
        }
    }
}

#endif
