/* Parsing of activation parameters and epilogues (ek_activation.h). */
#include <math.h>

#include "ek_activation.h"

static int is_activation(int fn) {
    switch (fn) {
    case EK_FN_RELU: case EK_FN_CLIP: case EK_FN_SIGMOID: case EK_FN_HARD_SIGMOID: case EK_FN_HARD_SWISH:
    case EK_FN_TANH: case EK_FN_GELU: case EK_FN_GELU_TANH: case EK_FN_LEAKY_RELU: case EK_FN_SILU:
        return 1;
    default:
        return 0;
    }
}

int ek_act_parse(const ek_call *c, int fn, int epilogue, ek_act *a, ek_err *e) {
    double alpha_def = fn == EK_FN_HARD_SIGMOID ? 0.2 : fn == EK_FN_LEAKY_RELU ? 0.01 : fn == EK_FN_SELU ? 1.67326319217681884765625 : 1.0;
    double beta_def = fn == EK_FN_HARD_SIGMOID ? 0.5 : fn == EK_FN_SELU ? 1.05070102214813232421875 : 0.0;
    double alpha, beta, lo, hi;
    int rc;
    if ((rc = ek_attr_float(c, epilogue ? EK_ATTR_ACT_ALPHA : EK_ATTR_ALPHA, 0, alpha_def, &alpha, e)) ||
        (rc = ek_attr_float(c, epilogue ? EK_ATTR_ACT_BETA : EK_ATTR_BETA, 0, beta_def, &beta, e)) ||
        (rc = ek_attr_float(c, epilogue ? EK_ATTR_ACT_FMIN : EK_ATTR_FMIN, 0, -INFINITY, &lo, e)) ||
        (rc = ek_attr_float(c, epilogue ? EK_ATTR_ACT_FMAX : EK_ATTR_FMAX, 0, INFINITY, &hi, e)))
        return rc;
    a->fn = fn;
    a->alpha = (float)alpha;
    a->beta = (float)beta;
    a->lo = (float)lo;
    a->hi = (float)hi;
    return EK_STATUS_OK;
}

int ek_epilogue_parse(const ek_call *c, int has_residual, ek_epilogue *ep, ek_err *e) {
    int64_t steps[4];
    int n = 0, adds = 0, acts = 0, rc;
    ep->n = 0;
    ep->act.fn = EK_FN_IDENTITY;
    if (!ek_attr_find(c, EK_ATTR_EPILOGUE)) {
        if (has_residual) return ek_bad(e, c, "a residual operand without an epilogue Add");
        return EK_STATUS_OK;
    }
    if ((rc = ek_attr_int_list(c, EK_ATTR_EPILOGUE, 4, 0, EK_STEP_ADD, steps, &n, e))) return rc;
    for (int i = 0; i < n; i++) {
        int s = (int)steps[i];
        if (s == EK_STEP_ADD) {
            adds++;
        } else {
            if (!is_activation(s)) return ek_bad(e, c, "epilogue step %d is not an activation", s);
            if ((rc = ek_act_parse(c, s, 1, &ep->act, e))) return rc;
            acts++;
        }
        ep->steps[i] = s;
    }
    if (adds > 1 || acts > 1) return ek_bad(e, c, "an epilogue has at most one Add and one activation");
    if (adds != (has_residual ? 1 : 0)) return ek_bad(e, c, "epilogue Add and residual operand must come together");
    ep->n = n;
    return EK_STATUS_OK;
}
