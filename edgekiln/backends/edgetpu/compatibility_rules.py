"""The Edge TPU's documented model requirements, as data: which TFLite ops map, their limits, op versions.

Source [MODELS]: Coral, "TensorFlow models on the Edge TPU" -> "Model requirements" and
"Supported operations" (https://coral.ai/docs/edgetpu/models-intro/).  The requirements every
op must meet (checked in `compatibility.py`):

* tensors are 8-bit quantized (int8 / uint8); int32 appears only in constant parameters (biases,
  shapes, axes);
* tensor sizes are constant at compile time (no dynamic dims: the shape signature has no -1);
* tensors are 1-, 2- or 3-D; a tensor with more dims may exceed 1 only in its 3 innermost dims;
* the model uses only the ops below, each within its documented limit.

The compiler maps ONE segment: at the first op it cannot map it cuts the graph, and that op and
every op after it run on the CPU (`partition.py`).

Op versions: edgetpu_compiler 16 embeds an older TFLite and refuses to parse a model with an op
version it does not know ("Didn't find op for builtin opcode 'CONV_2D' version '6'").  The
rejections cited in `MAX_OP_VERSION_EVIDENCE` are reported in google-coral/edgetpu issues; the
other maxima are ASSUMED (the versions TFLite kernels had in 2021, when compiler 16 shipped)
and are a warning, not a certainty.
"""

from __future__ import annotations

# TFLite op -> the documented limitation (free text; `compatibility.py` checks each one it can).
SUPPORTED_OPS: dict[str, str] = {
    "ADD": "",
    "AVERAGE_POOL_2D": "no fused activation function",
    "CONCATENATION": "no fused activation function; a compile-time constant input only as one of exactly "
                     "2 inputs and all zeros (a zero pad)",
    "CONV_2D": "the same dilation in x and y",
    "DEPTHWISE_CONV_2D": "no dilated kernels",
    "EXPAND_DIMS": "",
    "FULLY_CONNECTED": "only the default weights format; the output is one-dimensional",
    "L2_NORMALIZATION": "",
    "LOGISTIC": "",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "unidirectional LSTM only",
    "MAXIMUM": "",
    "MAX_POOL_2D": "no fused activation function",
    "MEAN": "no reduction in the batch dimension; reduction along x and/or y only",
    "MINIMUM": "",
    "MUL": "",
    "PACK": "no packing in the batch dimension",
    "PAD": "no padding in the batch dimension; padding along x and/or y only",
    "PRELU": "alpha is a compile-time constant",
    "QUANTIZE": "",
    "REDUCE_MAX": "no reduction in the batch dimension",
    "REDUCE_MIN": "no reduction in the batch dimension",
    "RELU": "",
    "RELU6": "",
    "RELU_N1_TO_1": "",
    "RESHAPE": "certain reshapes of large tensors may not be mapped",
    "RESIZE_BILINEAR": "3-D input/output; depending on sizes the compiler may keep it on the CPU "
                       "(google-coral/edgetpu#31: a 256x256 -> 512x512 upsample stayed on the CPU, 64 -> 128 "
                       "mapped)",
    "RESIZE_NEAREST_NEIGHBOR": "3-D input/output; depending on sizes the compiler may keep it on the CPU",
    "RSQRT": "",
    "SLICE": "",
    "SOFTMAX": "1-D input with at most 16,000 elements",
    "SPACE_TO_DEPTH": "",
    "SPLIT": "no splitting in the batch dimension",
    "SQUARED_DIFFERENCE": "",
    "SQUEEZE": "",
    "STRIDED_SLICE": "all strides 1, ellipsis_mask and new_axis_mask 0",
    "SUB": "",
    "SUM": "no reduction in the batch dimension",
    "TANH": "",
    "TRANSPOSE": "mapped by edgetpu_compiler 16",
    "TRANSPOSE_CONV": "",
}

# Ops users meet most that the Edge TPU does NOT map, with what to do instead.
UNSUPPORTED_HINTS: dict[str, str] = {
    "DEQUANTIZE": "float output: keep int8 outputs (no --float-io) or dequantize in the application",
    "LEAKY_RELU": "write it as PRELU with a constant alpha, which maps: the same function",
    "HARD_SWISH": "write it as x * hard_sigmoid(x), which maps: a 1x1 DEPTHWISE_CONV_2D (slope 1/6, offset 1/2, "
                  "clamped to [0, 1]) and a MUL; edgekiln's edgetpu target does this itself "
                  "(hard-swish-to-hard-sigmoid-mul)",
    "DIV": "division by a constant is a MUL by its reciprocal (edgekiln rewrites it)",
    "BATCH_MATMUL": "only a constant right operand maps (as FULLY_CONNECTED)",
    "GATHER": "no Edge TPU op: do the lookup on the CPU (--cpu-tail)",
    "CAST": "shape arithmetic must fold: pin dynamic input dims",
    "EXP": "no Edge TPU op",
    "LOG_SOFTMAX": "no Edge TPU op: use SOFTMAX, or move it to the CPU tail",
    "ARG_MAX": "no Edge TPU op: post-process on the CPU (--cpu-tail)",
}

# The largest op version edgetpu_compiler 16 parses.  See the module docstring: ASSUMED except
# where MAX_OP_VERSION_EVIDENCE cites a rejection of the next version.
MAX_OP_VERSION: dict[str, int] = {
    "ADD": 4, "SUB": 3, "MUL": 4, "AVERAGE_POOL_2D": 3, "MAX_POOL_2D": 3, "CONCATENATION": 3,
    "CONV_2D": 5, "DEPTHWISE_CONV_2D": 6, "FULLY_CONNECTED": 9, "RESHAPE": 1, "SOFTMAX": 3,
    "LOGISTIC": 3, "TANH": 3, "MEAN": 3, "PAD": 3, "QUANTIZE": 2, "DEQUANTIZE": 4, "PRELU": 1,
    "RESIZE_BILINEAR": 4, "RESIZE_NEAREST_NEIGHBOR": 4, "TRANSPOSE_CONV": 3, "RELU": 2, "RELU6": 2,
    "L2_NORMALIZATION": 2, "MAXIMUM": 4, "MINIMUM": 4, "SQUEEZE": 1, "STRIDED_SLICE": 5, "SLICE": 4,
    "SPLIT": 4, "SPACE_TO_DEPTH": 2, "TRANSPOSE": 5, "EXPAND_DIMS": 1, "PACK": 3, "SUM": 2,
    "REDUCE_MAX": 2, "REDUCE_MIN": 2, "RSQRT": 2, "SQUARED_DIFFERENCE": 2, "EXP": 1,
}
MAX_OP_VERSION_EVIDENCE: dict[str, str] = {
    "CONV_2D": "google-coral/edgetpu#631: compiler 16 rejects CONV_2D version 6",
    "TRANSPOSE_CONV": "google-coral/edgetpu#845: compiler 16 rejects TRANSPOSE_CONV version 4",
    "QUANTIZE": "google-coral/edgetpu#879: compiler 16 rejects QUANTIZE version 3",
    "EXP": "google-coral/libedgetpu#71: compiler 16 rejects EXP version 2",
}

# Element types the Edge TPU computes in; anything else on an activation is a CPU op.
EIGHT_BIT_TYPES = frozenset({"INT8", "UINT8"})
# Constant parameters may be wider: int32 biases, shape / axis / padding operands.
PARAMETER_TYPES = frozenset({"INT8", "UINT8", "INT32", "INT64"})
INNERMOST_DIMS = 3
SOFTMAX_MAX_ELEMENTS = 16000
