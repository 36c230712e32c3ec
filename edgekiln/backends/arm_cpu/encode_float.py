"""Encoders of the float kernels (the ONNX ops of `lowering.py`, fused ops with epilogues).

What is done here rather than on the device: constant Gemm weights are transposed to [K, N]
(so the kernel's inner loop runs over contiguous outputs), Gemm's beta·C is folded into a
bias vector (or a residual operand when it is a full matrix), BatchNormalization is folded
to a per-channel scale and shift, and constant Clip bounds / reduction axes become attributes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekiln.backends.arm_cpu import op_codes
from edgekiln.backends.arm_cpu.encode_context import (
    ROWS,
    BlobCall,
    EncodeContext,
    align64,
    normalize_axis,
    pairs_2d,
)
from edgekiln.compiler.program import KernelCall

A, OP, FN, STEP = op_codes.ATTR, op_codes.OP, op_codes.FN, op_codes.STEP

ACTIVATION_CODES = {"Relu": "RELU", "Clip": "CLIP", "Sigmoid": "SIGMOID", "HardSigmoid": "HARD_SIGMOID",
                    "HardSwish": "HARD_SWISH", "Tanh": "TANH", "LeakyRelu": "LEAKY_RELU", "SiLU": "SILU",
                    "Gelu": "GELU", "GeluTanh": "GELU_TANH"}
UNARY_CODES = {**ACTIVATION_CODES, "Erf": "ERF", "Elu": "ELU", "Selu": "SELU", "Softplus": "SOFTPLUS",
               "Mish": "MISH", "Sqrt": "SQRT", "Reciprocal": "RECIPROCAL", "Neg": "NEG", "Abs": "ABS",
               "Exp": "EXP", "Log": "LOG", "Floor": "FLOOR", "Ceil": "CEIL", "Round": "ROUND", "Sign": "SIGN",
               "Not": "NOT"}
BINARY_CODES = {"Add": "ADD", "Sub": "SUB", "Mul": "MUL", "Div": "DIV", "Pow": "POW", "Max": "MAX", "Min": "MIN",
                "PRelu": "PRELU", "Equal": "EQUAL", "Less": "LESS", "Greater": "GREATER", "And": "AND", "Or": "OR"}


def _epilogue(call: KernelCall, extra_first: list[int] | None = None) -> dict[int, Any]:
    """EK_ATTR_EPILOGUE and the activation's parameters from a fused call's attributes."""
    steps = list(extra_first or [])
    attrs: dict[int, Any] = {}
    a = call.attrs
    for step in a.get("epilogue", []):
        if step == "Add":
            steps.append(STEP["ADD"])
            continue
        steps.append(FN[ACTIVATION_CODES[step]])
        if step == "Clip":
            attrs[A["ACT_FMIN"]] = float(a.get("act_min", -np.inf))
            attrs[A["ACT_FMAX"]] = float(a.get("act_max", np.inf))
        if "act_alpha" in a:
            attrs[A["ACT_ALPHA"]] = float(a["act_alpha"])
        if "act_beta" in a:
            attrs[A["ACT_BETA"]] = float(a["act_beta"])
    if steps:
        attrs[A["EPILOGUE"]] = steps
    return attrs


def _opt(call: KernelCall, index: int) -> str | None:
    return call.inputs[index] if len(call.inputs) > index and call.inputs[index] else None


def conv(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    x, w, out = call.inputs[0], call.inputs[1], call.outputs[0]
    rank = len(ctx.shape(x))
    strides, dilations, pads = pairs_2d(call, ctx, rank)
    group = call.attrs.get("group", 1)
    wshape = ctx.shape(w)
    o, cg = wshape[0], wshape[1]
    kg = cg * int(np.prod(wshape[2:]))
    p = int(np.prod(ctx.shape(out)[2:]))
    depthwise = cg == 1 and o == group
    scratch = 0 if depthwise else align64(kg * max(min(p, ROWS), 1) * 4)
    attrs = {A["STRIDES"]: strides, A["DILATIONS"]: dilations, A["PADS"]: pads, A["GROUP"]: group, **_epilogue(call)}
    return [BlobCall(call.name, OP["CONV"], [x, w, _opt(call, 2), _opt(call, 3)], [out], attrs, scratch)]


def conv_transpose(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    a = call.attrs
    if "output_shape" in a:
        raise ctx.fail(call, "ConvTranspose with output_shape (give pads instead)")
    rank = len(ctx.shape(call.inputs[0]))
    strides, dilations, pads = pairs_2d(call, ctx, rank)
    output_padding = list(a.get("output_padding", [0] * (rank - 2)))
    if rank == 3:
        output_padding = [0, output_padding[0]]
    attrs = {A["STRIDES"]: strides, A["DILATIONS"]: dilations, A["PADS"]: pads, A["GROUP"]: a.get("group", 1),
             A["OUTPUT_PADDING"]: output_padding}
    return [BlobCall(call.name, OP["CONV_TRANSPOSE"], [call.inputs[0], call.inputs[1], _opt(call, 2)],
                     [call.outputs[0]], attrs)]


def _matmul_scratch(ctx: EncodeContext, b: str, trans_b: bool) -> int:
    if not trans_b:
        return 0
    shape = ctx.shape(b)
    return align64(shape[-1] * shape[-2] * 4)


def matmul(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    """MatMul and FusedMatMul(A, B, bias[, R])."""
    a_name, b_name = call.inputs[0], call.inputs[1]
    if len(ctx.shape(a_name)) < 2 or len(ctx.shape(b_name)) < 2:
        raise ctx.fail(call, "a 1-D MatMul operand")
    bias = _opt(call, 2)
    if bias is not None:
        n = ctx.shape(b_name)[-1]
        if ctx.size(bias) != n or ctx.spec(bias).dtype != "float32":
            value = ctx.const(bias)
            if value is None or value.size not in (1, n) or value.ndim > 1 and value.shape[:-1] != (1,) * (value.ndim - 1):
                raise ctx.fail(call, f"a bias of shape {list(ctx.shape(bias))} (only [N] broadcasts along rows)")
            bias = ctx.derive(call, "bias", np.broadcast_to(value.astype(np.float32).reshape(-1), (n,)).copy())
    return [BlobCall(call.name, OP["MATMUL"], [a_name, b_name, bias, _opt(call, 3)], [call.outputs[0]],
                     _epilogue(call))]


def gemm(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    """Gemm and FusedGemm(A, B, C[, R]): y = epilogue(alpha·op(A)·op(B) + beta·C)."""
    a = call.attrs
    a_name, b_name, c_name, residual = call.inputs[0], call.inputs[1], _opt(call, 2), _opt(call, 3)
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    trans_a, trans_b = int(a.get("transA", 0)), int(a.get("transB", 0))
    m, n = ctx.shape(call.outputs[0])
    b_value = ctx.const(b_name)
    if b_value is not None and trans_b:  # pre-transpose constant weights to [K, N]
        b_name, trans_b = ctx.derive(call, "weight_kn", np.ascontiguousarray(b_value.T)), 0
    bias, extra = None, []
    if c_name is not None and beta != 0.0:
        c_value = ctx.const(c_name)
        if c_value is not None:
            c_value = (beta * c_value.astype(np.float64)).astype(np.float32)
            if c_value.size in (1, n) and (c_value.ndim < 2 or c_value.shape[0] == 1):
                bias = ctx.derive(call, "bias", np.broadcast_to(c_value.reshape(-1), (n,)).copy())
            elif residual is None:
                residual, extra = ctx.derive(call, "c", np.broadcast_to(c_value, (m, n)).copy()), [STEP["ADD"]]
            else:
                raise ctx.fail(call, "a matrix C together with a residual epilogue")
        elif beta == 1.0 and ctx.size(c_name) == n:
            bias = c_name
        elif beta == 1.0 and ctx.shape(c_name) == (m, n) and residual is None:
            residual, extra = c_name, [STEP["ADD"]]
        else:
            raise ctx.fail(call, f"a non-constant C of shape {list(ctx.shape(c_name))} with beta {beta}")
    attrs = {A["TRANS_A"]: trans_a, A["TRANS_B"]: trans_b, **_epilogue(call, extra)}
    if alpha != 1.0:
        attrs[A["ALPHA"]] = alpha
    return [BlobCall(call.name, OP["MATMUL"], [a_name, b_name, bias, residual], [call.outputs[0]], attrs,
                     _matmul_scratch(ctx, b_name, bool(trans_b)))]


def binary(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    if len(call.inputs) != 2:
        raise ctx.fail(call, f"{len(call.inputs)} inputs (two-input form only)")
    return [BlobCall(call.name, OP["BINARY"], list(call.inputs), [call.outputs[0]], {A["FUNC"]: FN[BINARY_CODES[call.op]]})]


def unary(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    a = call.attrs
    op = call.op
    if op == "Gelu" and a.get("approximate") == "tanh":
        op = "GeluTanh"
    attrs: dict[int, Any] = {A["FUNC"]: FN[UNARY_CODES[op]]}
    if op == "Clip":
        low, high = a.get("min", -np.inf), a.get("max", np.inf)
        for index, key in ((1, "low"), (2, "high")):
            if _opt(call, index):
                value = ctx.need_const(call, index, f"{key} bound")
                if key == "low":
                    low = value
                else:
                    high = value
        attrs[A["FMIN"]], attrs[A["FMAX"]] = float(np.asarray(low).reshape(-1)[0]), float(np.asarray(high).reshape(-1)[0])
    for key, code in (("alpha", "ALPHA"), ("beta", "BETA"), ("gamma", "BETA")):
        if key in a and op != "Clip":
            attrs[A[code]] = float(a[key])
    return [BlobCall(call.name, OP["UNARY"], [call.inputs[0]], [call.outputs[0]], attrs)]


def where(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    return [BlobCall(call.name, OP["WHERE"], list(call.inputs[:3]), [call.outputs[0]])]


def softmax(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    rank = len(ctx.shape(call.inputs[0]))
    axis = normalize_axis(call, ctx, call.attrs.get("axis", -1), rank)
    return [BlobCall(call.name, OP["SOFTMAX"], [call.inputs[0]], [call.outputs[0]],
                     {A["AXIS"]: axis, A["LOG"]: int(call.op == "LogSoftmax")})]


def _no_extra_outputs(ctx: EncodeContext, call: KernelCall) -> None:
    if any(call.outputs[1:]):
        raise ctx.fail(call, "its optional extra outputs (statistics / indices)")


def layer_norm(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    _no_extra_outputs(ctx, call)
    shape = ctx.shape(call.inputs[0])
    axis = normalize_axis(call, ctx, call.attrs.get("axis", -1), len(shape))
    trailing = shape[axis:]
    operands = [call.inputs[0]]
    for index, what in ((1, "scale"), (2, "bias")):
        name = _opt(call, index)
        if name is not None and ctx.shape(name) != trailing:
            value = ctx.need_const(call, index, what)
            name = ctx.derive(call, what, np.broadcast_to(value.astype(np.float32), trailing).copy())
        operands.append(name)
    return [BlobCall(call.name, OP["LAYER_NORM"], operands, [call.outputs[0]],
                     {A["AXIS"]: axis, A["EPSILON"]: float(call.attrs.get("epsilon", 1e-5))})]


def batch_norm(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    _no_extra_outputs(ctx, call)
    scale, bias, mean, var = (ctx.need_const(call, i, w).astype(np.float64)
                              for i, w in ((1, "scale"), (2, "bias"), (3, "mean"), (4, "variance")))
    s = scale / np.sqrt(var + float(call.attrs.get("epsilon", 1e-5)))
    operands = [call.inputs[0], ctx.derive(call, "scale", s.astype(np.float32)),
                ctx.derive(call, "shift", (bias - mean * s).astype(np.float32))]
    return [BlobCall(call.name, OP["CHANNEL_AFFINE"], operands, [call.outputs[0]])]


def instance_norm(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    return [BlobCall(call.name, OP["INSTANCE_NORM"], list(call.inputs[:3]), [call.outputs[0]],
                     {A["EPSILON"]: float(call.attrs.get("epsilon", 1e-5))})]


def lp_norm(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    rank = len(ctx.shape(call.inputs[0]))
    return [BlobCall(call.name, OP["LP_NORM"], [call.inputs[0]], [call.outputs[0]],
                     {A["AXIS"]: normalize_axis(call, ctx, call.attrs.get("axis", -1), rank),
                      A["P"]: call.attrs.get("p", 2)})]


def pool(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    _no_extra_outputs(ctx, call)
    a = call.attrs
    rank = len(ctx.shape(call.inputs[0]))
    strides, dilations, pads = pairs_2d(call, ctx, rank)
    kernel = list(a["kernel_shape"])
    if rank == 3:
        kernel = [1, kernel[0]]
    attrs = {A["MODE"]: op_codes.POOL["MAX" if call.op == "MaxPool" else "AVG"], A["KERNEL"]: kernel,
             A["STRIDES"]: strides, A["PADS"]: pads, A["DILATIONS"]: dilations,
             A["COUNT_INCLUDE_PAD"]: int(a.get("count_include_pad", 0))}
    return [BlobCall(call.name, OP["POOL"], [call.inputs[0]], [call.outputs[0]], attrs)]


_REDUCE = {"ReduceMean": "MEAN", "ReduceSum": "SUM", "ReduceMax": "MAX", "ReduceMin": "MIN", "ReduceL2": "L2",
           "GlobalAveragePool": "MEAN", "GlobalMaxPool": "MAX"}


def reduce(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    rank = len(ctx.shape(call.inputs[0]))
    if call.op.startswith("Global"):
        axes = list(range(2, rank))
    else:
        axes = call.attrs.get("axes")
        if axes is None and _opt(call, 1):
            axes = ctx.need_const(call, 1, "axes").tolist()
        if not axes:
            if call.attrs.get("noop_with_empty_axes"):
                return [BlobCall(call.name, OP["COPY"], [call.inputs[0]], [call.outputs[0]])]
            axes = list(range(rank))
        axes = sorted({normalize_axis(call, ctx, axis, rank) for axis in axes})
    return [BlobCall(call.name, OP["REDUCE"], [call.inputs[0]], [call.outputs[0]],
                     {A["FUNC"]: op_codes.REDUCE[_REDUCE[call.op]], A["AXES"]: axes},
                     align64(ctx.size(call.outputs[0]) * 8))]


def argmax(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    rank = len(ctx.shape(call.inputs[0]))
    return [BlobCall(call.name, OP["ARGMAX"], [call.inputs[0]], [call.outputs[0]],
                     {A["AXIS"]: normalize_axis(call, ctx, call.attrs.get("axis", 0), rank),
                      A["SELECT_LAST"]: int(call.attrs.get("select_last_index", 0))})]


def quantize_linear(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    """ONNX QuantizeLinear / DequantizeLinear met in a float program: per-tensor int8 only."""
    scale = ctx.need_const(call, 1, "scale")
    zero = ctx.const(_opt(call, 2))
    quantized = call.outputs[0] if call.op == "QuantizeLinear" else call.inputs[0]
    if scale.size != 1 or (zero is not None and zero.size != 1) or ctx.spec(quantized).dtype != "int8":
        raise ctx.fail(call, "per-axis or non-int8 QuantizeLinear/DequantizeLinear (quantize with --quant instead)")
    attrs = {A["SCALE"]: float(np.float32(scale.reshape(-1)[0])),
             A["ZERO_POINT"]: int(zero.reshape(-1)[0]) if zero is not None else 0}
    op = OP["QUANTIZE"] if call.op == "QuantizeLinear" else OP["DEQUANTIZE"]
    return [BlobCall(call.name, op, [call.inputs[0]], [call.outputs[0]], attrs)]


ENCODERS = {
    "Conv": conv,
    "FusedConv": conv,
    "ConvTranspose": conv_transpose,
    "MatMul": matmul,
    "FusedMatMul": matmul,
    "Gemm": gemm,
    "FusedGemm": gemm,
    **{op: binary for op in BINARY_CODES},
    **{op: unary for op in UNARY_CODES},
    "Where": where,
    "Softmax": softmax,
    "LogSoftmax": softmax,
    "LayerNormalization": layer_norm,
    "BatchNormalization": batch_norm,
    "InstanceNormalization": instance_norm,
    "LpNormalization": lp_norm,
    "MaxPool": pool,
    "AveragePool": pool,
    **{op: reduce for op in _REDUCE},
    "ArgMax": argmax,
    "QuantizeLinear": quantize_linear,
    "DequantizeLinear": quantize_linear,
}
