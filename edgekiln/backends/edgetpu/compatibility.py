"""Whether the Edge TPU can map one TFLite op, and the documented reason when it cannot.

Each op is judged on its own (where the single TPU segment ends is `partition.py`'s job), in
this order, the first failing check giving the reason:

    unsupported op   the op is not in the supported-ops table (`compatibility_rules.SUPPORTED_OPS`)
    op version       newer than edgetpu_compiler 16 parses (the compiler then rejects the model)
    data type        an activation tensor is not int8/uint8 (float ops run on the CPU)
    dynamic shape    a shape signature holds -1 (sizes must be constant at compile time)
    rank             a tensor has a dim > 1 outside its 3 innermost dims
    op limit         the op's own documented limit (1-D softmax, x/y-only MEAN and PAD, ...)

An already compiled model (edgetpu_compiler's output) holds its TPU segment as one custom op,
`edgetpu-custom-op`, which is on the TPU by definition.

QUANTIZE reading a model input and DEQUANTIZE writing a model output are the float <-> int8
conversions at the model's edges: they run on the CPU but do not end the TPU segment
(`OpVerdict.boundary`), which is how edgetpu_compiler treats them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgekiln.backends.edgetpu.compatibility_model import (
    TfliteGraph,
    TfliteOp,
    TfliteTensor,
)
from edgekiln.backends.edgetpu.compatibility_rules import (
    EIGHT_BIT_TYPES,
    INNERMOST_DIMS,
    MAX_OP_VERSION,
    MAX_OP_VERSION_EVIDENCE,
    PARAMETER_TYPES,
    SOFTMAX_MAX_ELEMENTS,
    SUPPORTED_OPS,
    UNSUPPORTED_HINTS,
)

# The custom op edgetpu_compiler replaces the mapped segment with in its output model.
COMPILED_SEGMENT_OP = "CUSTOM:edgetpu-custom-op"


@dataclass(frozen=True)
class OpVerdict:
    """`reason` is None when the op can map to the Edge TPU."""

    reason: str | None = None
    category: str | None = None
    boundary: bool = False  # a float <-> int8 conversion at the model's edge

    @property
    def mappable(self) -> bool:
        return self.reason is None


def judge_op(graph: TfliteGraph, op: TfliteOp) -> OpVerdict:
    """The verdict for `op` on its own (see the module docstring for the order of checks)."""
    boundary = _is_boundary_conversion(graph, op)
    if boundary:
        return OpVerdict("float <-> int8 conversion at the model's edge: runs on the CPU, the segment goes on",
                         "model boundary", boundary=True)
    if op.name == COMPILED_SEGMENT_OP:  # a file edgetpu_compiler already compiled: this op is its TPU segment
        return OpVerdict()
    if op.name not in SUPPORTED_OPS:
        hint = UNSUPPORTED_HINTS.get(op.name, "no Edge TPU op")
        return OpVerdict(f"{op.name} is not an Edge TPU op ({hint})", "unsupported op")
    limit = MAX_OP_VERSION.get(op.name)
    if limit is not None and op.version > limit:
        evidence = MAX_OP_VERSION_EVIDENCE.get(op.name, "assumed limit")
        return OpVerdict(f"version {op.version} > {limit}, the newest edgetpu_compiler 16 parses; it refuses the "
                         f"whole model ({evidence})", "op version")
    for tensor in _activations(op):
        if tensor.dtype not in EIGHT_BIT_TYPES:
            return OpVerdict(f"tensor {tensor.name!r} is {tensor.dtype}: the Edge TPU computes 8-bit tensors only",
                             "data type")
    for tensor in _parameters(op):
        if tensor.dtype not in PARAMETER_TYPES:
            return OpVerdict(f"parameter {tensor.name!r} is {tensor.dtype}: parameters must be quantized",
                             "data type")
    for tensor in _activations(op):
        if tensor.is_dynamic:
            return OpVerdict(f"tensor {tensor.name!r} has a dynamic shape {list(tensor.signature)}: sizes must be "
                             "constant at compile time (pin the batch to 1)", "dynamic shape")
        large = [d for d in tensor.shape[:-INNERMOST_DIMS] if d != 1]
        if large:
            return OpVerdict(f"tensor {tensor.name!r} {list(tensor.shape)} has a dim > 1 outside its 3 innermost "
                             "dims", "rank")
    check = _OP_LIMITS.get(op.name)
    reason = check(op) if check is not None else None
    if reason is not None:
        return OpVerdict(f"{op.name}: {reason}", "op limit")
    return OpVerdict()


def _is_boundary_conversion(graph: TfliteGraph, op: TfliteOp) -> bool:
    """A float model input quantized, or a float model output dequantized."""
    if op.name == "QUANTIZE" and op.inputs and op.inputs[0] is not None:
        return op.inputs[0].dtype == "FLOAT32" and op.inputs[0].index in {t.index for t in graph.inputs}
    if op.name == "DEQUANTIZE" and op.outputs:
        return op.outputs[0].dtype == "FLOAT32" and op.outputs[0].index in {t.index for t in graph.outputs}
    return False


def _activations(op: TfliteOp) -> list[TfliteTensor]:
    return [t for t in [*op.inputs, *op.outputs] if t is not None and not t.is_constant]


def _parameters(op: TfliteOp) -> list[TfliteTensor]:
    return [t for t in op.inputs if t is not None and t.is_constant]


def _no_fused_activation(op: TfliteOp) -> str | None:
    return "has a fused activation function" if op.option("fusedActivationFunction", 0) else None


def _axes(op: TfliteOp, operand: int = 1) -> list[int] | None:
    """The op's constant axis operand, normalized to the input rank."""
    if len(op.inputs) <= operand or op.inputs[operand] is None or op.inputs[0] is None:
        return None
    values = op.inputs[operand].values()
    if values is None:
        return None
    rank = len(op.inputs[0].shape)
    return sorted({int(a) % rank for a in np.ravel(values)}) if rank else []


def _reduction(op: TfliteOp, spatial_only: bool) -> str | None:
    axes = _axes(op)
    if axes is None:
        return "the reduction axes are not a constant"
    if 0 in axes and len(op.inputs[0].shape) > 1:
        return "reduces the batch dimension"
    if spatial_only and len(op.inputs[0].shape) == 4 and not set(axes) <= {1, 2}:
        return f"reduces axes {axes}; only x and/or y (NHWC axes 1, 2) map"
    return None


def _pad(op: TfliteOp) -> str | None:
    paddings = op.inputs[1].values() if len(op.inputs) > 1 and op.inputs[1] is not None else None
    if paddings is None:
        return "the paddings are not a constant"
    paddings = np.asarray(paddings).reshape(-1, 2)
    if paddings.shape[0] and np.any(paddings[0]):
        return "pads the batch dimension"
    if paddings.shape[0] == 4 and np.any(paddings[3]):
        return "pads the channel dimension; only x and/or y map"
    return None


def _softmax(op: TfliteOp) -> str | None:
    shape = op.inputs[0].shape
    if any(d != 1 for d in shape[:-1]):
        return f"input {list(shape)} is not 1-D (only the last dim may exceed 1)"
    if shape and shape[-1] > SOFTMAX_MAX_ELEMENTS:
        return f"{shape[-1]} elements > {SOFTMAX_MAX_ELEMENTS}"
    return None


def _concatenation(op: TfliteOp) -> str | None:
    fused = _no_fused_activation(op)
    if fused:
        return fused
    constants = [t for t in op.inputs if t is not None and t.is_constant]
    if constants and (len(op.inputs) != 2 or np.any(np.frombuffer(constants[0].data, np.uint8))):
        return "a constant input is allowed only as one of exactly 2 inputs and all zeros"
    return None


def _conv(op: TfliteOp) -> str | None:
    if op.option("dilationWFactor", 1) != op.option("dilationHFactor", 1):
        return "different dilations in x and y"
    return None


def _depthwise(op: TfliteOp) -> str | None:
    if op.option("dilationWFactor", 1) != 1 or op.option("dilationHFactor", 1) != 1:
        return "dilated depthwise kernels are not supported"
    return None


def _fully_connected(op: TfliteOp) -> str | None:
    if op.option("weightsFormat", 0) != 0:
        return "weights are not in the default format"
    if sum(d != 1 for d in op.outputs[0].shape) > 1:
        return f"output {list(op.outputs[0].shape)} is not one-dimensional"
    return None


def _prelu(op: TfliteOp) -> str | None:
    return None if len(op.inputs) > 1 and op.inputs[1] is not None and op.inputs[1].is_constant else \
        "alpha is not a compile-time constant"


def _strided_slice(op: TfliteOp) -> str | None:
    strides = op.inputs[3].values() if len(op.inputs) > 3 and op.inputs[3] is not None else None
    if strides is None or np.any(np.asarray(strides) != 1):
        return "strides are not all 1"
    if op.option("ellipsisMask", 0) or op.option("newAxisMask", 0):
        return "uses ellipsis_mask or new_axis_mask"
    return None


def _split(op: TfliteOp) -> str | None:
    # SPLIT's axis is input 0 and the data input 1.
    if not op.inputs or op.inputs[0] is None:
        return None
    values = op.inputs[0].values()
    data = op.inputs[1] if len(op.inputs) > 1 else None
    if values is None or data is None:
        return "the split axis is not a constant"
    return "splits the batch dimension" if int(np.ravel(values)[0]) % max(len(data.shape), 1) == 0 else None


def _pack(op: TfliteOp) -> str | None:
    return "packs along the batch dimension" if op.option("axis", 0) == 0 else None


_OP_LIMITS: dict[str, Callable[[TfliteOp], str | None]] = {
    "AVERAGE_POOL_2D": _no_fused_activation,
    "MAX_POOL_2D": _no_fused_activation,
    "CONCATENATION": _concatenation,
    "CONV_2D": _conv,
    "DEPTHWISE_CONV_2D": _depthwise,
    "FULLY_CONNECTED": _fully_connected,
    "MEAN": lambda op: _reduction(op, spatial_only=True),
    "SUM": lambda op: _reduction(op, spatial_only=False),
    "REDUCE_MAX": lambda op: _reduction(op, spatial_only=False),
    "REDUCE_MIN": lambda op: _reduction(op, spatial_only=False),
    "PAD": _pad,
    "PRELU": _prelu,
    "SOFTMAX": _softmax,
    "STRIDED_SLICE": _strided_slice,
    "SPLIT": _split,
    "PACK": _pack,
}
