/*
 * The requantization attributes of a call, read and validated in one place (requant_attrs.c).
 *
 * Every kernel that ends in requantize(acc, m, shift, zp_y, act_min, act_max) (ek_requant.h)
 * carries the same four attributes, one value per requantizing stage (1 for QConv2D,
 * QDepthwiseConv2D, QFullyConnected, QConvTranspose2D, QSparseGemm; 3 for QInvertedResidual,
 * whose expand, depthwise and project stages each requantize):
 *
 *   EK_ATTR_INPUT_ZP   required                                  int8 range
 *   EK_ATTR_OUTPUT_ZP  required, except for a float output (0)   int8 range
 *   EK_ATTR_ACT_MIN    optional, default -128                    int8 range
 *   EK_ATTR_ACT_MAX    optional, default 127                     int8 range, act_min <= act_max
 *
 * A failure names the call (ek_bad) and, for a multi-stage call, the stage.
 */
#ifndef EK_REQUANT_ATTRS_H
#define EK_REQUANT_ATTRS_H

#include <stdint.h>

#include "../ek_internal.h"

#define EK_REQUANT_MAX_STAGES 3

typedef struct {
    int32_t zx, zy; /* input and output zero points */
    int32_t lo, hi; /* the activation clamp */
} ek_requant_attrs;

/* Fills out[0 .. stages) (stages in [1, EK_REQUANT_MAX_STAGES]); `float_output`: the call writes
 * float32, so OUTPUT_ZP may be absent. */
int ek_read_requant_attrs(const ek_call *c, int stages, int float_output, ek_requant_attrs *out, ek_err *e);

#endif /* EK_REQUANT_ATTRS_H */
