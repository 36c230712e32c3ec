/*
 * ek_read_requant_attrs (ek_requant_attrs.h): the zero points and activation clamp of a
 * requantizing call, each attribute holding one int8-range value per stage, with the clamp's
 * order checked (act_min > act_max would make the clamp's result depend on the order of its
 * two comparisons, not on the spec).
 */
#include "ek_requant_attrs.h"

int ek_read_requant_attrs(const ek_call *c, int stages, int float_output, ek_requant_attrs *out, ek_err *e) {
    if (stages < 1 || stages > EK_REQUANT_MAX_STAGES) return ek_bad(e, c, "%d requantizing stages", stages);
    static const int keys[4] = {EK_ATTR_INPUT_ZP, EK_ATTR_OUTPUT_ZP, EK_ATTR_ACT_MIN, EK_ATTR_ACT_MAX};
    static const int64_t defaults[4] = {0, 0, -128, 127};
    const int required[4] = {1, !float_output, 0, 0};
    int64_t v[4][EK_REQUANT_MAX_STAGES];
    for (int k = 0; k < 4; k++) {
        if (ek_attr_find(c, keys[k])) {
            int rc = ek_attr_ints(c, keys[k], stages, -128, 127, v[k], e);
            if (rc) return rc;
        } else if (required[k]) {
            return ek_bad(e, c, "attribute %d is missing", keys[k]);
        } else {
            for (int s = 0; s < stages; s++) v[k][s] = defaults[k];
        }
    }
    for (int s = 0; s < stages; s++) {
        out[s] = (ek_requant_attrs){(int32_t)v[0][s], (int32_t)v[1][s], (int32_t)v[2][s], (int32_t)v[3][s]};
        if (out[s].lo > out[s].hi) {
            if (stages == 1) return ek_bad(e, c, "act_min %d > act_max %d", out[s].lo, out[s].hi);
            return ek_bad(e, c, "stage %d: act_min %d > act_max %d", s, out[s].lo, out[s].hi);
        }
    }
    return EK_STATUS_OK;
}
