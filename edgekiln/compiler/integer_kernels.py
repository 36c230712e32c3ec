"""The integer kernels of a quantized Program: what each op reads, holds and computes, exactly.

This module is the specification every backend implements (C, OpenCL, TFLite, HLS C++) and
the numpy reference (`backends/reference`) executes.  `CATALOGUE` lists each op as data
(operands, dtypes, attributes); the formulas are here, written once.  Lowering
(`integer_lowering.py`) computes every constant at compile time, so a kernel never sees a
float scale: only int8 data, int32/int64 constants and integer attributes.

Conventions
-----------
* Activations are int8 NCHW (ONNX layout), per tensor: real = s·(q − zp).  Their TensorSpec
  carries `QuantParams`, but a kernel reads its zero points from `attrs` (`input_zero_point`,
  `output_zero_point`, ...), never from floats.
* Weights are int8 values, symmetric (zero point 0), output channel on axis 0, unpacked: the
  TensorSpec's `QuantParams.bits` (8, 4, 2 = ternary) and `group_size` say how a backend may
  pack them.  FullyConnected weights are [N, K] (row n = output n).
* `act_min`, `act_max`: the output clamp, [−128, 127] narrowed by a fused Relu / Relu6 / Clip.
* Broadcasting (QAdd, QMul, QMatMul batch dims) is numpy's.

Integer primitives (all intermediate values are exact in int64)
---------------------------------------------------------------
    rshift_round(v, n) = (v + 2^(n−1)) >> n   for n ≥ 1 (>> floors: ties go toward +∞);  v for n = 0
    rescale(v, m, sh)  = rshift_round(int64(v)·m, 31 + sh)            m ∈ [0, 2³¹), 31 + sh ∈ [1, 62]
    requantize(acc, m, sh, zp, lo, hi) = clamp(rescale(acc, m, sh) + zp, lo, hi)     (requantize.py)

A real multiplier M becomes (m, sh) through `requantize.quantize_multiplier` (M ≈ m·2^−(31+sh)).
Per-channel (m, sh) are int32 constant operands `multiplier`, `shift`; per-tensor ones are attrs.

A float model output of a weighted layer (QuantizeGraphPass `float_outputs`) is the same weight
kernel with a float epilogue, attribute `float_output`: operands x, w, bias, `output_scale`
(float32 [O] = s_x·s_w[o]; no multiplier, no shift, no clamp, no output zero point), y float32:

    y[o] = float32(acc[o]) · output_scale[o]        (one float32 multiply, rounded once)

Per-channel weights only (no group_ratio); lowering checks |b_q| + 255·Σ|W_q| < 2^24 per channel,
so float32(acc) is exact and y is what Dequantize -> float op -> Mul on the same integers gives.

Weight-reading kernels (QConv2D, QDepthwiseConv2D, QConvTranspose2D, QFullyConnected)
---------------------------------------------------------------------------------------
For output channel o, with K the reduction (input channel within the group × kernel window):

    per channel:  acc[o] = bias[o] + Σ_k (x_k − zp_x)·w[o, k]                      (int32)
    per group of g along K (int4 / ternary groups, scales s_w[o, j]):
        acc_j[o] = Σ_{k ∈ group j} (x_k − zp_x)·w[o, k]                             (int32)
        acc[o]   = rshift_round(Σ_j group_ratio[o, j]·acc_j[o], 16 − F) + bias[o]·2^F    (int64)
        group_ratio[o, j] = round(s_w[o, j] / s_ref[o] · 2¹⁶) ∈ [0, 2¹⁶],  s_ref[o] = max_j s_w[o, j]
        F = `acc_frac_bits`: the accumulator keeps F fraction bits, so rounding it costs at most
        2^−(F+1) of a unit (F = 0 would flip ~M/2 of the outputs); lowering picks F ≤ 8 with
        |acc| < 2³¹ guaranteed (K·255·max|w|·2^F < 2³⁰).
    y[o] = requantize(acc[o], multiplier[o], shift[o], zp_y, act_min, act_max)
           with M[o] = s_x·s_ref[o] / (2^F·s_y)  (per channel: s_ref = s_w, F = 0);
           with `float_output`: y[o] = float32(acc[o])·output_scale[o] (above)
    bias[o] is int32 at the accumulator scale s_x·s_ref[o] (Gemm alpha/beta are folded into M and bias).

Conv padding contributes 0 (as if x = zp_x).  Group k's index is the position in the weight
row flattened C-order over (c, ky, kx).  QConv2D output size per axis:
floor((H + pad_begin + pad_end − dilation·(kernel − 1) − 1) / stride) + 1.

QConvTranspose2D (ONNX ConvTranspose, weight [C, O/group, kh, kw], output channel on axis 1):
input (c, i, j) adds (x − zp_x)·w[c, o', ky, kx] to output (o, i·sh − pt + ky·dh, j·sw − pl + kx·dw)
when that position is inside the output (H_out = sh·(H−1) + output_padding + dh·(kh−1) + 1 − pt − pb).
When the weight has one scale per *input* channel (the QDQ axis 0), each input channel is
first weighted by `channel_ratio[c]` (Q16 of s_w[c] / max_c s_w, as group_ratio): the sum
becomes rshift_round(Σ, 16 − F) + bias·2^F with F = `acc_frac_bits`, as above.

Activation x activation and elementwise
---------------------------------------
QMatMul (A [..., M, K], B [..., K, N], both int8 activations):
    acc = Σ_k (a − zp_a)(b − zp_b) (int32);  y = requantize(acc, m, sh, zp_y, lo, hi),  M = s_a·s_b/s_y
QAdd (TFLite's scheme, left_shift = 20; `subtract` negates b'):
    M_a = s_a/(2·max(s_a, s_b)),  M_b = s_b/(2·max(s_a, s_b)),  M = 2·max(s_a, s_b)/(2²⁰·s_y)
    a' = rescale((a − zp_a)·2²⁰, m_a, sh_a),  b' = rescale((b − zp_b)·2²⁰, m_b, sh_b)
    y  = requantize(a' ± b', m, sh, zp_y, lo, hi)
QMul:   acc = (a − zp_a)(b − zp_b);  y = requantize(acc, m, sh, zp_y, lo, hi),  M = s_a·s_b/s_y
QRequantize (a change of quantization parameters):
    y = requantize(x − zp_x, m, sh, zp_y),  M = s_x/s_y
QLookupTable (any unary function f: activations, x·c, x + c, ...):
    y = table[x + 128],  table[i] = quantize(f(s_x·(i − 128 − zp_x)), s_y, zp_y) computed at
    compile time in float64 and rounded half to even like QuantizeLinear.

Pooling and reductions (zero points cancel only after subtracting them)
------------------------------------------------------------------------
QGlobalAveragePool / QReduceMean:  acc = Σ_{reduced} (x − zp_x);  y = requantize(acc, m, sh, zp_y),
    M = s_x/(count·s_y).
QAveragePool (ceil_mode 0):  acc = Σ_{window ∩ input} (x − zp_x);  count = kh·kw when
    count_include_pad else |window ∩ input|;  y = requantize(acc, multipliers[count], shifts[count], zp_y),
    the constants indexed by count (entry 0 unused), M_count = s_x/(count·s_y).
QMaxPool: the max of the window positions inside the input (padding never wins); input and
    output share their parameters (lowering adds a QRequantize when a graph has them differ).

Softmax (last axis; D ≤ 2²⁰)
----------------------------
    exp_table[d] = round(exp(−d·s_x)·2²⁰)   d = 0..255 (int32 constant, computed in float64)
    e_i = exp_table[max_j x_j − x_i];   S = Σ_i e_i (int64, S ≥ 2²⁰)
    r_i = (e_i·2³⁰ + S // 2) // S        (int64, all terms ≥ 0: Q30 probability)
    y_i = requantize(r_i, m, sh, zp_y),  M = 2^−30 / s_y

LayerNorm (over the trailing D elements; γ, β folded at compile time; F = 20 fraction bits)
------------------------------------------------------------------------------------------
    S   = Σ_j x_j                 c_i = D·x_i − S                 (int32: D·(x − mean), zp cancels)
    V   = Σ_i c_i²                (int64; D ≤ 32768)
    W   = max(1, V + eps_term)    eps_term = round(eps·D³/s_x²)  (int64 attr)
    then 1/√W in fixed point, deterministically:
        e  = bit_length(W);   k = floor((e − 20) / 2)
        Wn = W >> 2k  (k ≥ 0)  or  W << −2k  (k < 0)                 Wn ∈ [2¹⁹, 2²¹)
        inv = isqrt(2⁶² // Wn)            (isqrt = floor square root, exact)  ≈ 2³¹/√Wn
    z_i = rshift_round(c_i·inv, 31 + k − F)         (≈ 2^F·c_i/√W ∈ [−2^F, 2^F])
    u_i = z_i·gamma[i] + beta[i]                    (int64)
    y_i = clamp(rshift_round(u_i, out_shift) + zp_y, −128, 127)
    gamma[i] = round(γ_i·√D/s_y·2^G) (int32),  beta[i] = round(β_i/s_y·2^(F+G)) (int64),
    out_shift = F + G, G chosen per tensor so |gamma| < 2³⁰ and |beta| < 2⁶⁰.
    (normalized_i = (x_i − mean)/√(var + eps) = √D·c_i/√W exactly, with W as above.)

Data movement on int8
---------------------
Reshape, Flatten, Squeeze, Unsqueeze, Transpose, Slice, Split, Gather, Expand, Tile, Identity,
DepthToSpace, SpaceToDepth: the ONNX op on int8 data (its attributes and constant inputs as in
ONNX), parameters unchanged.  QConcat: `requantize[i]` is null when input i has exactly the
output's parameters (copied), else [m, sh]: y_i = requantize(x_i − zp_i, m, sh, zp_y).
QResizeNearest: y[n, c, i, j] = x[n, c, index_h[i], index_w[j]] (int32 index tables computed at
compile time from the ONNX Resize attributes).  QPad: ONNX Pad on int8, constant mode pads
with `pad_value` (the quantized constant).
QResizeBilinear (ONNX Resize mode linear over H, W; TFLite's integer RESIZE_BILINEAR):
`taps_h` [H_out, 3] and `taps_w` [W_out, 3] hold (i0, i1, f) per output row / column, the source
coordinate 1024·i0 + f in fixed point with 10 fraction bits (f ∈ [0, 1024), i1 = min(i0 + 1, H − 1);
`bilinear_taps.py` derives them from the coordinate_transformation_mode):
    acc = x[i0, j0]·(1024 − f_h)·(1024 − f_w) + x[i1, j0]·f_h·(1024 − f_w)
        + x[i0, j1]·(1024 − f_h)·f_w      + x[i1, j1]·f_h·f_w          (|acc| ≤ 2²⁷: exact in int32)
    y = sign(acc)·((|acc| + 2¹⁹) >> 20)       (round half away from zero, as TFLite)
on the raw int8 values: the weights sum to 2²⁰, so the zero point passes through and input and
output share their parameters (lowering adds a QRequantize when a graph has them differ).

Boundaries and float islands
----------------------------
Quantize:   y = clamp(round_half_even(float32(x) / float32(scale)) + zp, −128, 127)   (QuantizeLinear)
Dequantize: y = float32(x − zp)·float32(scale)                                         (DequantizeLinear)
DequantizeWeight: a weight as float32 for a float reader (weight-only int4, a float island):
    w = s[o]·q[o, k] (per channel) or s[o, k // g]·q[o, k] (per group), reshaped to the stored
    shape, transposed ([N, K] -> [K, N]) when `transpose`.
Any other call of a quantized Program is a float kernel: op = the ONNX op type, exactly as in
`lowering.py` (fused ops as "FusedConv" ... with `attrs["epilogue"]`).
"""

from __future__ import annotations

from dataclasses import dataclass

LEFT_SHIFT_ADD = 20     # QAdd's headroom before rescaling both inputs (TFLite uses 20 for int8)
RATIO_BITS = 16         # group_ratio / channel_ratio fixed point
MAX_ACC_FRAC_BITS = 8   # fraction bits a ratio-weighted accumulator keeps
SOFTMAX_EXP_BITS = 20   # exp_table fixed point
SOFTMAX_PROB_BITS = 30  # r_i fixed point
SOFTMAX_MAX_D = 1 << 20
LAYERNORM_FRAC_BITS = 20
LAYERNORM_MAX_D = 32768
LAYERNORM_WN_BITS = 20  # Wn ∈ [2^19, 2^21)

DATA_MOVEMENT_OPS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Slice", "Split", "Gather",
                     "Expand", "Tile", "Identity", "DepthToSpace", "SpaceToDepth")


@dataclass(frozen=True)
class Operand:
    name: str
    dtype: str
    doc: str = ""
    optional: bool = False


@dataclass(frozen=True)
class KernelSpec:
    """One integer kernel: `inputs` in `KernelCall.inputs` order (activations, then constants)."""

    op: str
    inputs: tuple[Operand, ...]
    outputs: tuple[Operand, ...]
    attrs: tuple[str, ...]
    summary: str


_X = Operand("x", "int8", "activation")
_Y = Operand("y", "int8", "activation")
_ZP = ("input_zero_point", "output_zero_point")
_CLAMP = ("act_min", "act_max")
_PER_CHANNEL = (Operand("bias", "int32", "[O] at scale s_x·s_ref[o]"),
                Operand("multiplier", "int32", "[O]"), Operand("shift", "int32", "[O]"))
_CONV_ATTRS = ("strides", "pads", "dilations", "group", *_ZP, *_CLAMP, "group_size", "acc_frac_bits")


def _spec(op: str, inputs: tuple[Operand, ...], attrs: tuple[str, ...], summary: str,
          outputs: tuple[Operand, ...] = (_Y,)) -> KernelSpec:
    return KernelSpec(op, inputs, outputs, attrs, summary)


CATALOGUE: dict[str, KernelSpec] = {s.op: s for s in (
    _spec("QConv2D", (_X, Operand("w", "int8", "[O, C/group, kh, kw]"), *_PER_CHANNEL,
                      Operand("group_ratio", "int32", "[O, K/g] Q16, per-group weights only", optional=True)),
          _CONV_ATTRS, "2-D convolution, int32 accumulate, per-channel requantize, clamp"),
    _spec("QDepthwiseConv2D", (_X, Operand("w", "int8", "[C, 1, kh, kw]"), *_PER_CHANNEL,
                               Operand("group_ratio", "int32", "[C, K/g]", optional=True)),
          _CONV_ATTRS, "QConv2D with group == C_in == C_out"),
    _spec("QConvTranspose2D", (_X, Operand("w", "int8", "[C, O/group, kh, kw]"), *_PER_CHANNEL,
                               Operand("channel_ratio", "int32", "[C] Q16, per-input-channel scales", optional=True)),
          ("strides", "pads", "dilations", "group", "output_padding", *_ZP, *_CLAMP, "acc_frac_bits"),
          "transposed 2-D convolution"),
    _spec("QFullyConnected", (_X, Operand("w", "int8", "[N, K]"), *_PER_CHANNEL,
                              Operand("group_ratio", "int32", "[N, K/g]", optional=True)),
          (*_ZP, *_CLAMP, "group_size", "acc_frac_bits"), "x[..., K] · wᵀ + bias (Gemm, MatMul with a constant weight)"),
    _spec("QMatMul", (Operand("a", "int8"), Operand("b", "int8")),
          ("a_zero_point", "b_zero_point", "output_zero_point", "multiplier", "shift", *_CLAMP),
          "activation x activation matrix product (attention)"),
    _spec("QAdd", (Operand("a", "int8"), Operand("b", "int8")),
          ("a_zero_point", "b_zero_point", "output_zero_point", "a_multiplier", "a_shift", "b_multiplier",
           "b_shift", "multiplier", "shift", "left_shift", "subtract", *_CLAMP),
          "TFLite-style add / subtract with both inputs rescaled to 2·max(s_a, s_b)/2^20"),
    _spec("QMul", (Operand("a", "int8"), Operand("b", "int8")),
          ("a_zero_point", "b_zero_point", "output_zero_point", "multiplier", "shift", *_CLAMP),
          "elementwise product"),
    _spec("QRequantize", (_X,), (*_ZP, "multiplier", "shift"), "change of quantization parameters"),
    _spec("QLookupTable", (_X, Operand("table", "int8", "[256], indexed by x + 128")), ("function",),
          "int8 -> int8 table: activations and scalar arithmetic"),
    _spec("QAveragePool", (_X, Operand("multipliers", "int32", "[kh·kw + 1] by count"),
                           Operand("shifts", "int32", "[kh·kw + 1]")),
          ("kernel_shape", "strides", "pads", "count_include_pad", *_ZP), "average pooling"),
    _spec("QGlobalAveragePool", (_X,), (*_ZP, "multiplier", "shift"), "mean over H, W (keepdims)"),
    _spec("QReduceMean", (_X,), ("axes", "keepdims", *_ZP, "multiplier", "shift"), "mean over `axes`"),
    _spec("QMaxPool", (_X,), ("kernel_shape", "strides", "pads", "dilations"), "max pooling, parameters kept"),
    _spec("QConcat", (Operand("inputs", "int8", "variadic"),),
          ("axis", "input_zero_points", "output_zero_point", "requantize"), "concatenation with rescale"),
    _spec("QResizeNearest", (_X, Operand("index_h", "int32", "[H_out]"), Operand("index_w", "int32", "[W_out]")),
          (), "nearest-neighbour resize by index tables"),
    _spec("QResizeBilinear", (_X, Operand("taps_h", "int32", "[H_out, 3] (i0, i1, f)"),
                              Operand("taps_w", "int32", "[W_out, 3] (j0, j1, f)")),
          (), "bilinear resize of H, W by 10-bit tap tables, parameters kept"),
    _spec("QPad", (_X,), ("pads", "mode", "pad_value"), "ONNX Pad on int8"),
    _spec("QSoftmax", (_X, Operand("exp_table", "int32", "[256] Q20")), ("output_zero_point", "multiplier", "shift"),
          "softmax over the last axis in fixed point"),
    _spec("QLayerNorm", (_X, Operand("gamma", "int32", "[D]"), Operand("beta", "int64", "[D]")),
          ("eps_term", "frac_bits", "out_shift", "output_zero_point"), "layer normalization over the last D"),
    _spec("QInvertedResidual", (_X, *(Operand(f"{stage}_{name}", "int8" if name == "w" else "int32")
                                      for stage in ("expand", "depthwise", "project")
                                      for name in ("w", "bias", "multiplier", "shift"))),
          ("parts",), "QConv2D 1x1 -> QDepthwiseConv2D -> QConv2D 1x1 as one call: exactly the three kernels "
                      "composed (`parts` keeps each one's attributes; compiler/fused_block_lowering.py)"),
    _spec("Quantize", (Operand("x", "float32"),), ("scale", "zero_point"), "float -> int8 (QuantizeLinear)"),
    _spec("Dequantize", (_X,), ("scale", "zero_point"), "int8 -> float (DequantizeLinear)",
          outputs=(Operand("y", "float32"),)),
    _spec("DequantizeWeight", (Operand("w", "int8"), Operand("scale", "float32", "[O] or [O, K/g]")),
          ("group_size", "transpose"), "a quantized weight as float32 for a float reader",
          outputs=(Operand("y", "float32"),)),
)}

INTEGER_OPS = frozenset(CATALOGUE) - {"Quantize", "Dequantize", "DequantizeWeight"}
