"""Encoders of the integer kernels (compiler/integer_kernels.py) into runtime calls.

Each returns the `BlobCall`s for one Program call.  What the runtime needs beyond the
Program is computed here, once: the per-channel epilogue constants in their compact blob form
(`_epilogue_operands`: the input zero point folded into the bias of GEMM calls by
`folded_bias`, which the fused inverted-residual block's expand and project stages use too;
every shift as int8, `int8_shifts`; 16-bit group ratios), the layout of GEMM weights
(int4 / ternary K-blocked or in their fewest bytes: low_bit_layout.py; int8 pre-paired on i8mm
targets: weight_packing.py), and the index
tables of QResizeNearest and QPad
(QResizeBilinear's tap tables go in as they are).  Scratch sizes follow the C kernels'
`prepare` exactly.

The fold (BLOB_FORMAT.md, "Weight-kernel operands"): the int8 GEMM sums raw products and the
im2col pads with zp_x, so Σ_k (x_k − zp_x)·w[o,k] = (A·Bᵀ)[p,o] − zp_x·rowsum[o] and

    per channel:  acc = (A·Bᵀ) + (bias − zp_x·rowsum)                     (int32, else int64)
    per group:    acc = rshift_round(Σ_j ratio_j·(A·Bᵀ)_j + B, 16 − F),
                  B   = bias·2^16 − zp_x·Σ_j ratio_j·rowsum_j              (int64)

(the second because rshift_round(v + bias·2^16, 16 − F) = rshift_round(v, 16 − F) + bias·2^F).
Depthwise calls subtract zp_x per tap themselves and keep the plain bias.
"""

from __future__ import annotations

import numpy as np

from edgekiln.backends.arm_cpu import op_codes
from edgekiln.backends.arm_cpu.encode_context import (
    COLS,
    ROWS,
    BlobCall,
    EncodeContext,
    align64,
    is_packed,
    normalize_axis,
)
from edgekiln.backends.arm_cpu.encode_movement import pad_tables
from edgekiln.backends.arm_cpu.low_bit_layout import reads_in_place
from edgekiln.compiler.program import KernelCall

A, OP = op_codes.ATTR, op_codes.OP


def _inputs(call: KernelCall, count: int) -> list[str | None]:
    names = [n or None for n in call.inputs[:count]]
    return names + [None] * (count - len(names))


def _clamp(a: dict) -> dict[int, int]:
    return {A["ACT_MIN"]: a.get("act_min", -128), A["ACT_MAX"]: a.get("act_max", 127)}


def _epilogue_operands(ctx: EncodeContext, call: KernelCall, weights: np.ndarray, depthwise: bool,
                       group_size: int) -> list[str | None]:
    """bias, multiplier, shift, ratio of a QConv2D / QDepthwiseConv2D / QFullyConnected in the blob's
    compact form (module docstring): the bias folded with zp_x·rowsum on the GEMM path, the shift as
    int8 (31 + shift ∈ [1, 62]), the Q16 group ratio as uint16 `ratio − 1` when no ratio is 0.
    A float output passes its float32 output_scale in the multiplier's place and has no shift."""
    _, _, bias_name, mult, _, ratio_name = _inputs(call, 6)
    bias = ctx.need_const(call, 2, "bias").astype(np.int64).reshape(-1)
    zx = int(call.attrs["input_zero_point"])
    ratio = ctx.const(ratio_name)
    if depthwise:
        folded_name = bias_name
    elif ratio is None:
        folded_name = folded_bias(ctx, call, bias, zx, weights, "folded_bias")
    else:
        sums = _weight_row_sums(ctx, call, weights, group_size).astype(np.int64)
        ratios = ratio.reshape(sums.shape).astype(np.int64)
        folded = (bias << 16) - zx * (ratios * sums).sum(axis=1)
        folded_name = ctx.derive(call, "folded_bias", folded)
    if ratio is not None and ratio.min(initial=1) >= 1:
        ratio_name = ctx.derive(call, "group_ratio_minus_one", (ratio.astype(np.int64) - 1).astype(np.uint16))
    if call.attrs.get("float_output"):
        return [folded_name, mult, None, None]
    return [folded_name, mult, int8_shifts(ctx, call, 4, "shift"), ratio_name]


def folded_bias(ctx: EncodeContext, call: KernelCall, bias: np.ndarray, zx: int, weights: np.ndarray,
                what: str) -> str:
    """`bias − zx·rowsum` of a per-channel GEMM stage (module docstring) as a new constant named
    `what`: int32, or int64 when some value leaves int32."""
    folded = bias.astype(np.int64).reshape(-1) - zx * _weight_row_sums(ctx, call, weights, 0).astype(np.int64)
    fits = folded.min(initial=0) >= np.iinfo(np.int32).min and folded.max(initial=0) <= np.iinfo(np.int32).max
    return ctx.derive(call, what, folded.astype(np.int32 if fits else np.int64))


def int8_shifts(ctx: EncodeContext, call: KernelCall, index: int, what: str) -> str:
    """The per-channel (or per-count) shift constant at input `index` as int8: every requantize
    shift is in [-30, 31] (31 + shift in [1, 62], requantize.py), which the loader checks again."""
    shift = ctx.need_const(call, index, what)
    if shift.size and (shift.min() < -30 or shift.max() > 31):
        raise ctx.fail(call, f"a {what} outside [-30, 31] (31 + shift must be in [1, 62], requantize.py)")
    return ctx.derive(call, f"{what.replace(' ', '_')}_int8", shift.astype(np.int8))


def _clamp_and_zero_points(a: dict) -> dict[int, int]:
    """Output zero point and clamp: a float output has neither."""
    if a.get("float_output"):
        return {A["INPUT_ZP"]: a["input_zero_point"]}
    return {A["INPUT_ZP"]: a["input_zero_point"], A["OUTPUT_ZP"]: a["output_zero_point"], **_clamp(a)}


def _weight_row_sums(ctx: EncodeContext, call: KernelCall, w: np.ndarray, group_size: int) -> np.ndarray:
    rows = w.reshape(w.shape[0], -1).astype(np.int64)
    if group_size and rows.shape[1] % group_size:
        raise ctx.fail(call, f"group_size {group_size} does not divide the reduction length {rows.shape[1]}")
    if group_size:
        return rows.reshape(rows.shape[0], -1, group_size).sum(axis=2).astype(np.int32)
    return rows.sum(axis=1).astype(np.int32)


def _gemm_layout(ctx: EncodeContext, w: str, rows: int, grouped: bool, group_size: int) -> None:
    """int4 / ternary GEMM weights: K-blocked where the low-bit GEMMs read them in place, else in
    their fewest bytes, unpacked per task (low_bit_layout.py); int8 pre-paired for smmla on i8mm
    targets when the call multiplies more than one row (a GEMV reads plain rows with fewer
    instructions).  The runtime's other readers (ek_unpack_int8, other ISAs) read every layout."""
    spec = ctx.spec(w)
    if is_packed(spec):
        if reads_in_place(ctx.weight_layout, ctx.features, spec, grouped, group_size):
            ctx.gemm_weights.add(w)
        else:
            ctx.unpacked_gemm_weights.add(w)
    elif spec.dtype == "int8" and "i8mm" in ctx.features and rows > 1:
        ctx.paired_weights.add(w)


def _gemm_scratch(ctx: EncodeContext, w: str, rows_p: int, kg: int, og: int, fc: bool, ratio: bool) -> int:
    pb, ocb = max(min(rows_p, ROWS), 1), max(min(og, COLS), 1)
    # im2col rows; or, on an AVX-512 VNNI CPU (known only at run time), the same block as k-quads:
    # pixels padded to 16 and K to 4 (qconv.c prepare_common, ek_gemm.h ek_quads_pixels)
    size = 0 if fc else align64(max(pb * kg, (kg + 3) // 4 * 4 * ((pb + 15) // 16 * 16)))
    size += align64(pb * ocb * 4)
    # a block of weight rows is unpacked into scratch when the kernel does not read them in place:
    # low-bit weights not K-blocked (low_bit_layout.py), and pre-paired int8 whenever the run-time
    # ISA is not i8mm (qconv.c paired_in_place)
    if w in ctx.unpacked_gemm_weights or w in ctx.paired_weights:
        size += align64(ocb * kg)
    if ratio:
        size += align64(pb * ocb * 8)
    return size


def depthwise_rows_scratch(kh: int, kw: int, wo: int, sw: int, dilations: list[int]) -> int:
    """Scratch of the SIMD depthwise path (runtime_arm/src/kernels/qdepthwise_rows.c, ek_dw_rows_plan_init):
    tap pointers, int16 weights, tap column offsets, ring tags, and `span` zero-point-padded rows split
    into `sw` phases."""
    dh, dw = dilations
    taps, span = kh * kw, (kh - 1) * dh + 1
    phase_len = -(-wo // 16) * 16 + (kw - 1) * dw // sw + 1
    return (align64(taps * 8) + align64(taps * 2) + align64(kw * 8) + align64(span * 8)
            + span * align64(sw * phase_len))


def qconv(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    """QConv2D and QDepthwiseConv2D: x, w, bias (folded on the GEMM path), multiplier, shift (int8),
    [group_ratio]; a float output: x, w, bias, output_scale."""
    x, w, _, _, _, ratio = _inputs(call, 6)
    a = call.attrs
    weights = ctx.need_const(call, 1, "weight")
    o, cg, kh, kw = weights.shape
    group = a.get("group", 1)
    kg = cg * kh * kw
    group_size = a.get("group_size") or 0
    _, _, ho, wo = ctx.shape(call.outputs[0])
    depthwise = cg == 1 and o == group and not ratio
    epilogue = _epilogue_operands(ctx, call, weights, depthwise, group_size if ratio else 0)
    if depthwise:
        scratch = align64(kh * kw) + max(align64(wo * 4), depthwise_rows_scratch(kh, kw, wo, a.get("strides", [1, 1])[1],
                                                                                 a.get("dilations", [1, 1])))
    else:
        _gemm_layout(ctx, w, ho * wo, bool(ratio), group_size)
        scratch = _gemm_scratch(ctx, w, ho * wo, kg, o // group, False, bool(ratio))
    attrs = {A["STRIDES"]: a.get("strides", [1, 1]), A["DILATIONS"]: a.get("dilations", [1, 1]),
             A["PADS"]: a.get("pads", [0, 0, 0, 0]), A["GROUP"]: group, **_clamp_and_zero_points(a)}
    if ratio:
        attrs.update({A["GROUP_SIZE"]: group_size, A["ACC_FRAC_BITS"]: a.get("acc_frac_bits", 0)})
    op = OP["QDEPTHWISE_CONV2D"] if call.op == "QDepthwiseConv2D" else OP["QCONV2D"]
    return [BlobCall(call.name, op, [x, w, *epilogue], [call.outputs[0]], attrs, scratch)]


def qfully_connected(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    """x, w, bias (folded), multiplier, shift (int8), [group_ratio]; a float output: x, w, bias, output_scale."""
    x, w, _, _, _, ratio = _inputs(call, 6)
    a = call.attrs
    weights = ctx.need_const(call, 1, "weight")
    n, k = weights.shape
    group_size = a.get("group_size") or 0
    epilogue = _epilogue_operands(ctx, call, weights, False, group_size if ratio else 0)
    rows = ctx.size(x) // k if k else 0
    attrs = _clamp_and_zero_points(a)
    if ratio:
        attrs.update({A["GROUP_SIZE"]: group_size, A["ACC_FRAC_BITS"]: a.get("acc_frac_bits", 0)})
    _gemm_layout(ctx, w, rows, bool(ratio), group_size)
    scratch = _gemm_scratch(ctx, w, rows, k, n, True, bool(ratio))
    return [BlobCall(call.name, OP["QFULLY_CONNECTED"], [x, w, *epilogue], [call.outputs[0]], attrs, scratch)]


def qconv_transpose(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    """x, w, bias (int32, the layer's own: the kernel subtracts zp per input pixel), multiplier,
    shift (int8), [channel_ratio]."""
    x, w, bias, mult, _, ratio = _inputs(call, 6)
    a = call.attrs
    _, _, kh, kw = ctx.shape(w)
    _, _, ho, wo = ctx.shape(call.outputs[0])
    attrs = {A["STRIDES"]: a.get("strides", [1, 1]), A["DILATIONS"]: a.get("dilations", [1, 1]),
             A["PADS"]: a.get("pads", [0, 0, 0, 0]), A["GROUP"]: a.get("group", 1),
             A["OUTPUT_PADDING"]: a.get("output_padding", [0, 0]), A["INPUT_ZP"]: a["input_zero_point"],
             A["OUTPUT_ZP"]: a["output_zero_point"], A["ACC_FRAC_BITS"]: a.get("acc_frac_bits", 0), **_clamp(a)}
    operands = [x, w, bias, mult, int8_shifts(ctx, call, 4, "shift")] + ([ratio] if ratio else [])
    _, _, h, w_in = ctx.shape(x)
    # the int64 output plane and the weights, plus the int32 per-tap planes of the fast path
    scratch = align64(ho * wo * 8) + align64(kh * kw) + align64(kh * kw * h * w_in * 4)
    return [BlobCall(call.name, OP["QCONV_TRANSPOSE2D"], operands, [call.outputs[0]], attrs, scratch)]


def qmatmul(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    a_name, b_name = call.inputs
    a = call.attrs
    m, k = ctx.shape(a_name)[-2:]
    n = ctx.shape(b_name)[-1]
    pb = max(min(m, ROWS), 1)
    scratch = align64(n * k) + align64(pb * n * 4) + align64(n * 4)
    attrs = {A["A_ZP"]: a["a_zero_point"], A["B_ZP"]: a["b_zero_point"], A["OUTPUT_ZP"]: a["output_zero_point"],
             A["MULTIPLIER"]: a["multiplier"], A["SHIFT"]: a["shift"], **_clamp(a)}
    return [BlobCall(call.name, OP["QMATMUL"], [a_name, b_name], [call.outputs[0]], attrs, scratch)]


def qadd_mul(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    a = call.attrs
    attrs = {A["A_ZP"]: a["a_zero_point"], A["B_ZP"]: a["b_zero_point"], A["OUTPUT_ZP"]: a["output_zero_point"],
             A["MULTIPLIER"]: a["multiplier"], A["SHIFT"]: a["shift"], **_clamp(a)}
    if call.op == "QAdd":
        attrs.update({A["A_MULTIPLIER"]: a["a_multiplier"], A["A_SHIFT"]: a["a_shift"],
                      A["B_MULTIPLIER"]: a["b_multiplier"], A["B_SHIFT"]: a["b_shift"],
                      A["LEFT_SHIFT"]: a["left_shift"], A["SUBTRACT"]: int(bool(a.get("subtract")))})
    op = OP["QADD"] if call.op == "QAdd" else OP["QMUL"]
    return [BlobCall(call.name, op, list(call.inputs[:2]), [call.outputs[0]], attrs)]


def qrequantize(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    a = call.attrs
    attrs = {A["INPUT_ZP"]: a["input_zero_point"], A["OUTPUT_ZP"]: a["output_zero_point"],
             A["MULTIPLIER"]: a["multiplier"], A["SHIFT"]: a["shift"]}
    return [BlobCall(call.name, OP["QREQUANTIZE"], [call.inputs[0]], [call.outputs[0]], attrs)]


def qlookup_table(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    return [BlobCall(call.name, OP["QLOOKUP_TABLE"], list(call.inputs[:2]), [call.outputs[0]])]


def _scalar(ctx: EncodeContext, call: KernelCall, key: str) -> float | int:
    value = call.attrs[key]
    if isinstance(value, list):
        if len(value) != 1:
            raise ctx.fail(call, f"per-axis {key} (only per-tensor quantization at graph boundaries)")
        value = value[0]
    return value


def quantize(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    op = OP["QUANTIZE"] if call.op == "Quantize" else OP["DEQUANTIZE"]
    attrs = {A["SCALE"]: float(np.float32(_scalar(ctx, call, "scale"))), A["ZERO_POINT"]: int(_scalar(ctx, call, "zero_point"))}
    return [BlobCall(call.name, op, [call.inputs[0]], [call.outputs[0]], attrs)]


def dequantize_weight(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    a = call.attrs
    attrs = {A["GROUP_SIZE"]: a.get("group_size") or 0, A["TRANSPOSE"]: int(bool(a.get("transpose")))}
    return [BlobCall(call.name, OP["DEQUANTIZE_WEIGHT"], list(call.inputs[:2]), [call.outputs[0]], attrs)]


def qaverage_pool(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    """x, multipliers int32 [kh·kw + 1], shifts int8 [kh·kw + 1] (indexed by the count averaged)."""
    a = call.attrs
    attrs = {A["KERNEL"]: a["kernel_shape"], A["STRIDES"]: a.get("strides", [1, 1]), A["PADS"]: a.get("pads", [0, 0, 0, 0]),
             A["COUNT_INCLUDE_PAD"]: int(a.get("count_include_pad", 0)), A["INPUT_ZP"]: a["input_zero_point"],
             A["OUTPUT_ZP"]: a["output_zero_point"]}
    operands = [call.inputs[0], call.inputs[1], int8_shifts(ctx, call, 2, "shifts")]
    return [BlobCall(call.name, OP["QAVERAGE_POOL"], operands, [call.outputs[0]], attrs)]


def qreduce_mean(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    """QReduceMean, and QGlobalAveragePool as a mean over axes 2.."""
    a = call.attrs
    rank = len(ctx.shape(call.inputs[0]))
    if call.op == "QGlobalAveragePool":
        axes = list(range(2, rank))
    else:
        axes = sorted({normalize_axis(call, ctx, axis, rank) for axis in a["axes"]})
    attrs = {A["AXES"]: axes, A["INPUT_ZP"]: a["input_zero_point"], A["OUTPUT_ZP"]: a["output_zero_point"],
             A["MULTIPLIER"]: a["multiplier"], A["SHIFT"]: a["shift"]}
    return [BlobCall(call.name, OP["QREDUCE_MEAN"], [call.inputs[0]], [call.outputs[0]], attrs,
                     align64(ctx.size(call.outputs[0]) * 8))]


def qmax_pool(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    a = call.attrs
    if len(call.outputs) > 1 and call.outputs[1]:
        raise ctx.fail(call, "the MaxPool indices output is not supported")
    attrs = {A["KERNEL"]: a["kernel_shape"], A["STRIDES"]: a.get("strides", [1, 1]), A["PADS"]: a.get("pads", [0, 0, 0, 0]),
             A["DILATIONS"]: a.get("dilations", [1, 1])}
    return [BlobCall(call.name, OP["QMAX_POOL"], [call.inputs[0]], [call.outputs[0]], attrs)]


def qconcat(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    a = call.attrs
    if len(call.inputs) > 255:
        raise ctx.fail(call, "more than 255 inputs")
    rank = len(ctx.shape(call.outputs[0]))
    requant = a["requantize"]
    attrs = {A["AXIS"]: normalize_axis(call, ctx, a["axis"], rank), A["OUTPUT_ZP"]: a["output_zero_point"],
             A["INPUT_ZPS"]: list(a["input_zero_points"]), A["REQ_FLAGS"]: [0 if r is None else 1 for r in requant],
             A["REQ_MULTIPLIERS"]: [0 if r is None else r[0] for r in requant],
             A["REQ_SHIFTS"]: [0 if r is None else r[1] for r in requant]}
    return [BlobCall(call.name, OP["QCONCAT"], list(call.inputs), [call.outputs[0]], attrs)]


def qresize_nearest(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    x = call.inputs[0]
    n, c = ctx.shape(x)[:2]
    tables = np.concatenate([np.arange(n), np.arange(c), ctx.need_const(call, 1, "index_h").reshape(-1),
                             ctx.need_const(call, 2, "index_w").reshape(-1)]).astype(np.int32)
    return [BlobCall(call.name, OP["INDEX_MAP"], [x, ctx.derive(call, "index", tables)], [call.outputs[0]])]


def qresize_bilinear(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    """The Program's tap tables as they are.  Scratch as runtime_arm/src/kernels/qresize_bilinear.c
    sizes it: one int32 input row when it blends rows first (H_out < H), else two int32 output rows
    (the column-interpolated input rows it keeps)."""
    for index, what in ((1, "taps_h"), (2, "taps_w")):
        ctx.need_const(call, index, what)
    (h, w), (h_out, w_out) = ctx.shape(call.inputs[0])[-2:], ctx.shape(call.outputs[0])[-2:]
    scratch = align64(w * 4) if h_out < h else 2 * align64(w_out * 4)
    return [BlobCall(call.name, OP["QRESIZE_BILINEAR"], list(call.inputs[:3]), [call.outputs[0]], {}, scratch)]


def qpad(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    a = call.attrs
    shape = ctx.shape(call.inputs[0])
    tables = pad_tables(ctx, call, shape, list(a["pads"]), a.get("mode", "constant"))
    return [BlobCall(call.name, OP["INDEX_MAP"], [call.inputs[0], ctx.derive(call, "index", tables)], [call.outputs[0]],
                     {A["FILL"]: float(a.get("pad_value", 0))})]


def qsoftmax(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    a = call.attrs
    attrs = {A["OUTPUT_ZP"]: a["output_zero_point"], A["MULTIPLIER"]: a["multiplier"], A["SHIFT"]: a["shift"]}
    return [BlobCall(call.name, OP["QSOFTMAX"], list(call.inputs[:2]), [call.outputs[0]], attrs)]


def qlayer_norm(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    a = call.attrs
    attrs = {A["EPS_TERM"]: a["eps_term"], A["FRAC_BITS"]: a["frac_bits"], A["OUT_SHIFT"]: a["out_shift"],
             A["OUTPUT_ZP"]: a["output_zero_point"]}
    return [BlobCall(call.name, OP["QLAYER_NORM"], list(call.inputs[:3]), [call.outputs[0]], attrs)]


# runtime_arm/src/kernels/qinverted_residual.c: the expanded tile's byte budget, pixels per GEMM block
IR_TILE_BYTES, IR_PIXELS = 32768, 32


def inverted_residual_scratch(cin: int, h_w: tuple[int, int], ce: int, co: int, out_hw: tuple[int, int],
                              k: tuple[int, int], sh: int, dh: int) -> int:
    """Scratch of the fused inverted-residual kernel (its prepare): the expanded rows of one band of
    output rows (as many as fit IR_TILE_BYTES), the depthwise band, one GEMM block, the accumulators
    and the two tap-pointer lists."""
    (_, w), (ho, wo), (kh, kw) = h_w, out_hw, k
    span = (kh - 1) * dh + 1
    fit = IR_TILE_BYTES // max(w * ce, 1)
    band = max(1, min((fit - span) // sh + 1 if fit >= span else 1, ho))
    rows_max = (band - 1) * sh + span
    return (align64(rows_max * w * ce) + align64(band * wo * ce) + align64(IR_PIXELS * cin)
            + align64(IR_PIXELS * max(ce, co) * 4) + align64(ce * 4) + 2 * align64(kh * kw * 8))


def qinverted_residual(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    """QInvertedResidual (compiler/fused_block_lowering.py): 13 operands, x then per stage (expand,
    depthwise, project) weight, bias, multiplier, shift (int8).  The expand and project stages are
    1x1 GEMMs without padding: their biases are folded with the stage's input zero point like a
    plain QConv2D's (module docstring); the depthwise stage keeps its plain bias (its loop
    subtracts zp per tap).  Per-stage zero points and clamps as 3-value attributes."""
    expand, depthwise, project = (part["attrs"] for part in call.attrs["parts"])
    x, y = call.inputs[0], call.outputs[0]
    stages = (expand, depthwise, project)
    inputs, weights = [x], []
    for k, (stage, attrs) in enumerate(zip(("expand", "depthwise", "project"), stages)):
        first = 1 + 4 * k  # the stage's weight, bias, multiplier, shift
        w_name, bias_name, mult_name = call.inputs[first:first + 3]
        weights.append(ctx.need_const(call, first, f"{stage} weight"))
        if stage != "depthwise":
            bias_name = folded_bias(ctx, call, ctx.need_const(call, first + 1, f"{stage} bias"),
                                    int(attrs["input_zero_point"]), weights[-1], f"{stage}_folded_bias")
        inputs += [w_name, bias_name, mult_name, int8_shifts(ctx, call, first + 3, f"{stage} shift")]
    w_e, w_d, _ = weights
    attrs = {A["STRIDES"]: depthwise.get("strides", [1, 1]), A["DILATIONS"]: depthwise.get("dilations", [1, 1]),
             A["PADS"]: depthwise.get("pads", [0, 0, 0, 0]),
             A["INPUT_ZP"]: [a["input_zero_point"] for a in stages],
             A["OUTPUT_ZP"]: [a["output_zero_point"] for a in stages],
             A["ACT_MIN"]: [a.get("act_min", -128) for a in stages], A["ACT_MAX"]: [a.get("act_max", 127) for a in stages]}
    _, cin, h, w = ctx.shape(x)
    _, co, ho, wo = ctx.shape(y)
    scratch = inverted_residual_scratch(cin, (h, w), w_e.shape[0], co, (ho, wo), tuple(w_d.shape[2:]),
                                        depthwise.get("strides", [1, 1])[0], depthwise.get("dilations", [1, 1])[0])
    return [BlobCall(call.name, OP["QINVERTED_RESIDUAL"], inputs, [y], attrs, scratch)]


ENCODERS = {
    "QConv2D": qconv,
    "QDepthwiseConv2D": qconv,
    "QFullyConnected": qfully_connected,
    "QConvTranspose2D": qconv_transpose,
    "QMatMul": qmatmul,
    "QAdd": qadd_mul,
    "QMul": qadd_mul,
    "QRequantize": qrequantize,
    "QLookupTable": qlookup_table,
    "Quantize": quantize,
    "Dequantize": quantize,
    "DequantizeWeight": dequantize_weight,
    "QAveragePool": qaverage_pool,
    "QGlobalAveragePool": qreduce_mean,
    "QReduceMean": qreduce_mean,
    "QMaxPool": qmax_pool,
    "QConcat": qconcat,
    "QResizeNearest": qresize_nearest,
    "QResizeBilinear": qresize_bilinear,
    "QPad": qpad,
    "QSoftmax": qsoftmax,
    "QLayerNorm": qlayer_norm,
    "QInvertedResidual": qinverted_residual,
}
