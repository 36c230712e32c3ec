"""The operator version written for each TFLite builtin: the lowest version that expresses it.

Versions follow tensorflow/lite/tools/versioning/op_version.cc (GetBuiltinOperatorVersion):
an op's version rises with each new input type or option, and a runtime (or the EdgeTPU
compiler, which accepts only the versions of its TFLite release) refuses versions it does
not know.  For int8 tensors with per-channel weights the lowest versions are these.
"""

from __future__ import annotations

OP_VERSIONS: dict[str, int] = {
    "CONV_2D": 3,
    "TRANSPOSE_CONV": 3,           # v2: int8 weights, v3: with the bias input (v4: fused activation)                  # v3: int8 with per-channel weights (v2 added dilation, float)
    "DEPTHWISE_CONV_2D": 3,        # v3: int8 per-channel
    "FULLY_CONNECTED": 4,          # v4: int8 (v5: keep_num_dims)
    "ADD": 2, "SUB": 2, "MUL": 2,  # v2: int8
    "AVERAGE_POOL_2D": 2, "MAX_POOL_2D": 2,
    "MEAN": 2,                     # v2: int8
    "CONCATENATION": 2,
    "RESHAPE": 1,
    "SOFTMAX": 2, "LOGISTIC": 2, "TANH": 2,
    "HARD_SWISH": 1,
    "RELU": 2, "RELU6": 2,
    "PRELU": 1,                    # int8 since v1 (op_version has no int8 bump)
    "PAD": 2, "PADV2": 2,
    "RESIZE_NEAREST_NEIGHBOR": 2,  # v3 with half_pixel_centers or align_corners
    "RESIZE_BILINEAR": 2,
    "QUANTIZE": 1,                 # float -> int8 and int8 -> int8 requantization (v2 is int16 output)
    "DEQUANTIZE": 2,               # v2: int8 input
}


def op_version(op: str, *, fc_keep_num_dims: bool = False, half_pixel_centers: bool = False,
               align_corners: bool = False,
               mul_multiplier_at_least_one: bool = False, fused_activation: bool = False) -> int:
    """The version for `op` given the options that raise it."""
    if op == "FULLY_CONNECTED" and fc_keep_num_dims:
        return 5
    if op == "RESIZE_NEAREST_NEIGHBOR" and (half_pixel_centers or align_corners):
        return 3
    if op == "RESIZE_BILINEAR" and half_pixel_centers:
        return 3
    if op == "TRANSPOSE_CONV" and fused_activation:
        return 4
    if op == "MUL" and mul_multiplier_at_least_one:  # s_a·s_b/s_y >= 1 needs the v3 kernel
        return 3
    return OP_VERSIONS[op]
