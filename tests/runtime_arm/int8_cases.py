"""Randomized one-call Programs of every integer kernel, for the C runtime tests.

Each builder takes a numpy Generator and returns `one_call(...)`'s (program, feeds, expected):
odd sizes, strides, padding, dilation, groups, depthwise, int4 and ternary weights (packed in
the blob) with and without per-group scales, broadcasting.  Multipliers are drawn so that the
outputs spread over the int8 range instead of saturating.
"""

from __future__ import annotations

import numpy as np

from edgekiln.compiler.program import QuantParams
from edgekiln.compiler.requantize import quantize_multiplier
from tests.runtime_arm.harness import one_call

BITS_RANGE = {8: (-127, 127), 4: (-8, 7), 2: (-1, 1)}


def int8(rng, shape, low=-128, high=127):
    return rng.integers(low, high + 1, size=shape).astype(np.int8)


def multipliers(rng, count, k):
    """Per-channel (m, shift) putting a K-term accumulator's spread at about ±60."""
    base = 60.0 / (max(k, 1) ** 0.5 * 74.0 * 60.0)
    pairs = [quantize_multiplier(float(v)) for v in base * rng.uniform(0.5, 2.0, count)]
    return np.array([p[0] for p in pairs], np.int32), np.array([p[1] for p in pairs], np.int32)


def _weight_quant(o, bits, group_size):
    return QuantParams(scale=tuple([0.01] * o), zero_point=tuple([0] * o), axis=0, bits=bits, group_size=group_size)


def conv(rng, *, n=1, c=None, hw=None, o=None, k=None, stride=None, pads=None, dilation=None, group=None,
         bits=8, group_size=None, depthwise=False, frac=6):
    c = c or int(rng.integers(1, 9))
    h, w = hw or (int(rng.integers(3, 12)), int(rng.integers(3, 12)))
    kh, kw = k or (int(rng.choice([1, 2, 3, 5])), int(rng.choice([1, 3])))
    if depthwise:
        group, o = c, c
    group = group or 1
    o = o or group * int(rng.integers(1, 7))
    stride = stride or (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    dilation = dilation or (1, 1)
    pads = pads or tuple(int(v) for v in rng.integers(0, 3, 4))
    h, w = max(h, dilation[0] * (kh - 1) + 1), max(w, dilation[1] * (kw - 1) + 1)  # at least one output
    lo, hi = BITS_RANGE[bits]
    weights = int8(rng, (o, c // group, kh, kw), lo, hi)
    kg = (c // group) * kh * kw
    mult, shift = multipliers(rng, o, kg)
    bias = rng.integers(-3000, 3000, o).astype(np.int32)
    attrs = {"strides": list(stride), "pads": list(pads), "dilations": list(dilation), "group": group,
             "input_zero_point": int(rng.integers(-30, 30)), "output_zero_point": int(rng.integers(-10, 10)),
             "act_min": int(rng.choice([-128, -5])), "act_max": 127}
    x = int8(rng, (n, c, h, w))
    operands = [("x", x, False), ("w", weights, True), ("bias", bias, True), ("mult", mult, True), ("shift", shift, True)]
    if group_size:
        attrs["group_size"], attrs["acc_frac_bits"] = group_size, frac
        ratio = rng.integers(1 << 13, (1 << 16) + 1, (o, kg // group_size)).astype(np.int32)
        operands.append(("ratio", ratio, True))
    op = "QDepthwiseConv2D" if depthwise else "QConv2D"
    return one_call(op, operands, attrs, quant={"w": _weight_quant(o, bits, group_size)})


def fully_connected(rng, *, shape=None, n=None, bits=8, group_size=None, frac=8):
    shape = shape or (int(rng.integers(1, 6)), int(rng.integers(1, 70)))
    n = n or int(rng.integers(1, 80))
    k = shape[-1]
    lo, hi = BITS_RANGE[bits]
    weights = int8(rng, (n, k), lo, hi)
    mult, shift = multipliers(rng, n, k)
    attrs = {"input_zero_point": int(rng.integers(-20, 20)), "output_zero_point": int(rng.integers(-5, 5)),
             "act_min": -128, "act_max": 127}
    operands = [("x", int8(rng, shape), False), ("w", weights, True),
                ("bias", rng.integers(-9000, 9000, n).astype(np.int32), True), ("mult", mult, True), ("shift", shift, True)]
    if group_size:
        attrs["group_size"], attrs["acc_frac_bits"] = group_size, frac
        operands.append(("ratio", rng.integers(1 << 13, (1 << 16) + 1, (n, k // group_size)).astype(np.int32), True))
    return one_call("QFullyConnected", operands, attrs, quant={"w": _weight_quant(n, bits, group_size)})


def conv_transpose(rng, *, with_ratio=False, group=1):
    c, og, kh, kw = 2 * group, int(rng.integers(1, 4)), int(rng.integers(1, 4)), int(rng.integers(1, 4))
    o = og * group
    mult, shift = multipliers(rng, o, c * kh * kw)
    attrs = {"strides": [int(rng.integers(1, 3)), int(rng.integers(1, 4))], "pads": [1, 0, 0, 1],
             "dilations": [1, int(rng.integers(1, 3))], "group": group, "output_padding": [1, 0],
             "input_zero_point": -7, "output_zero_point": 2, "act_min": -128, "act_max": 127}
    operands = [("x", int8(rng, (1, c, int(rng.integers(2, 6)), int(rng.integers(2, 6)))), False),
                ("w", int8(rng, (c, og, kh, kw), -127, 127), True),
                ("bias", rng.integers(-2000, 2000, o).astype(np.int32), True), ("mult", mult, True), ("shift", shift, True)]
    if with_ratio:
        attrs["acc_frac_bits"] = 3
        operands.append(("ratio", rng.integers(1 << 12, (1 << 16) + 1, c).astype(np.int32), True))
    return one_call("QConvTranspose2D", operands, attrs)


def matmul(rng, *, a_shape=(2, 1, 3, 5), b_shape=(1, 3, 5, 4)):
    m, sh = quantize_multiplier(60.0 / (a_shape[-1] ** 0.5 * 74 * 74))
    attrs = {"a_zero_point": int(rng.integers(-10, 10)), "b_zero_point": int(rng.integers(-10, 10)),
             "output_zero_point": 3, "multiplier": m, "shift": sh, "act_min": -128, "act_max": 127}
    return one_call("QMatMul", [("a", int8(rng, a_shape), False), ("b", int8(rng, b_shape), False)], attrs)


def add_mul(rng, op, a_shape, b_shape, b_const=False, subtract=False):
    s_a, s_b, s_y = rng.uniform(0.01, 0.05, 3)
    attrs = {"a_zero_point": int(rng.integers(-10, 10)), "b_zero_point": int(rng.integers(-10, 10)),
             "output_zero_point": int(rng.integers(-5, 5)), "act_min": -128, "act_max": 127}
    if op == "QAdd":
        twice = 2 * max(s_a, s_b)
        attrs.update(left_shift=20, subtract=subtract)
        attrs["a_multiplier"], attrs["a_shift"] = quantize_multiplier(s_a / twice)
        attrs["b_multiplier"], attrs["b_shift"] = quantize_multiplier(s_b / twice)
        attrs["multiplier"], attrs["shift"] = quantize_multiplier(twice / (2**20 * s_y))
    else:
        attrs["multiplier"], attrs["shift"] = quantize_multiplier(s_a * s_b / s_y / 8)
    return one_call(op, [("a", int8(rng, a_shape), False), ("b", int8(rng, b_shape), b_const)], attrs)


def average_pool(rng, *, pads=(1, 0, 1, 1), include=0, kernel=(3, 2), strides=(2, 1)):
    counts = kernel[0] * kernel[1]
    pairs = [(0, 0)] + [quantize_multiplier(0.9 / n) for n in range(1, counts + 1)]
    attrs = {"kernel_shape": list(kernel), "strides": list(strides), "pads": list(pads), "count_include_pad": include,
             "input_zero_point": -20, "output_zero_point": 4}
    return one_call("QAveragePool", [("x", int8(rng, (1, 3, 7, 6)), False),
                                     ("mults", np.array([p[0] for p in pairs], np.int32), True),
                                     ("shifts", np.array([p[1] for p in pairs], np.int32), True)], attrs)


def max_pool(rng, *, pads=(1, 1, 1, 1), dilations=(1, 2)):
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": list(pads), "dilations": list(dilations)}
    return one_call("QMaxPool", [("x", int8(rng, (2, 2, 6, 7), -128, -100), False)], attrs)


def mean(rng, op, shape=(2, 3, 5, 4), axes=None, keepdims=1):
    m, sh = quantize_multiplier(1.3 / 20)
    attrs = {"input_zero_point": 6, "output_zero_point": -2, "multiplier": m, "shift": sh}
    if op == "QReduceMean":
        attrs.update(axes=list(axes), keepdims=keepdims)
    return one_call(op, [("x", int8(rng, shape), False)], attrs)


def softmax(rng, *, s_x=0.05, shape=(3, 2, 7)):
    table = np.rint(np.exp(-np.arange(256) * s_x) * 2**20).astype(np.int32)
    m, sh = quantize_multiplier(2.0**-30 * 255)
    return one_call("QSoftmax", [("x", int8(rng, shape), False), ("table", table, True)],
                    {"output_zero_point": -128, "multiplier": m, "shift": sh})


def layer_norm(rng, *, d=31, s_x=0.02):
    x = int8(rng, (2, 3, d))
    x[0, 0] = 17  # a constant row: only eps keeps it finite
    s_y, frac, bits = 0.03, 20, 20
    gamma = np.rint(rng.uniform(-2, 2, d) * np.sqrt(d) / s_y * 2.0**bits).astype(np.int32)
    beta = np.array([round(b / s_y * 2.0 ** (frac + bits)) for b in rng.uniform(-0.5, 0.5, d)], np.int64)
    attrs = {"eps_term": round(1e-5 * d**3 / s_x**2), "frac_bits": frac, "out_shift": frac + bits, "output_zero_point": 3}
    return one_call("QLayerNorm", [("x", x, False), ("gamma", gamma, True), ("beta", beta, True)], attrs)


def concat(rng):
    m, sh = quantize_multiplier(0.5)
    attrs = {"axis": 1, "input_zero_points": [0, 10, -3], "output_zero_point": 0, "requantize": [None, [m, sh], None]}
    return one_call("QConcat", [("a", int8(rng, (1, 2, 3, 4)), False), ("b", int8(rng, (1, 3, 3, 4)), False),
                                ("c", int8(rng, (1, 1, 3, 4)), True)], attrs)


def resize_nearest(rng):
    return one_call("QResizeNearest", [("x", int8(rng, (1, 2, 3, 4)), False),
                                       ("ih", np.array([0, 0, 1, 1, 2, 2], np.int32), True),
                                       ("iw", np.array([0, 1, 1, 2, 3, 3, 3], np.int32), True)])


def pad(rng, mode):
    pads = [0, 0, 1, -1, 0, 0, 2, 1] if mode == "constant" else [0, 0, 2, 1, 0, 1, 1, 2]
    return one_call("QPad", [("x", int8(rng, (1, 2, 3, 4)), False)], {"pads": pads, "mode": mode, "pad_value": -7})


def lookup_requantize(rng, op):
    if op == "QLookupTable":
        return one_call(op, [("x", int8(rng, (2, 3, 5)), False), ("t", int8(rng, (256,)), True)], {"function": "t"})
    m, sh = quantize_multiplier(0.7)
    return one_call(op, [("x", int8(rng, (2, 3, 5)), False)],
                    {"input_zero_point": 10, "output_zero_point": -3, "multiplier": m, "shift": sh})


def boundaries(rng, op):
    if op == "Quantize":
        x = (rng.standard_normal((2, 3, 7)) * 3).astype(np.float32)
        x.flat[:4] = [0.05, -0.05, 0.15, 1e6]  # exact ties round half to even; saturation
        return one_call(op, [("x", x, False)], {"scale": 0.1, "zero_point": 3})
    return one_call(op, [("x", int8(rng, (2, 3, 7)), False)], {"scale": 0.037, "zero_point": -4})


def dequantize_weight(rng, *, bits=4, group_size=8, transpose=True):
    lo, hi = BITS_RANGE[bits]
    w = int8(rng, (6, 16), lo, hi)
    scale = rng.uniform(0.01, 0.1, (6, 16 // group_size) if group_size else (6,)).astype(np.float32)
    return one_call("DequantizeWeight", [("w", w, True), ("s", scale, True)],
                    {"group_size": group_size, "transpose": transpose}, quant={"w": _weight_quant(6, bits, group_size)})


def movement(rng, op):
    """The ONNX data movement ops on int8 (run by ONNX semantics in the reference)."""
    x = int8(rng, (2, 3, 4, 5))
    if op == "Transpose":
        return one_call(op, [("x", x, False)], {"perm": [0, 2, 3, 1]}, out_dtypes=("int8",))
    if op == "Reshape":
        return one_call(op, [("x", x, False), ("s", np.array([2, -1, 5], np.int64), True)], out_dtypes=("int8",))
    if op == "Slice":
        return one_call(op, [("x", x, False), ("st", np.array([3, 1], np.int64), True),
                             ("en", np.array([-10, 4], np.int64), True), ("ax", np.array([3, 2], np.int64), True),
                             ("sp", np.array([-2, 2], np.int64), True)], out_dtypes=("int8",))
    if op == "Squeeze":
        return one_call(op, [("x", int8(rng, (2, 1, 4)), False), ("a", np.array([1], np.int64), True)], out_dtypes=("int8",))
    if op == "Flatten":
        return one_call(op, [("x", x, False)], {"axis": 2}, out_dtypes=("int8",))
    raise ValueError(op)


def resize_bilinear(rng, *, shape=(1, 3, 5, 7), out_hw=(9, 4), mode="half_pixel", random_taps=False):
    """QResizeBilinear with the tap tables of an ONNX mode, or arbitrary ones (any rows, any fraction
    in [0, 1024]: the kernel must compute the spec's sum for every table the loader accepts)."""
    from edgekiln.compiler.bilinear_taps import onnx_taps

    def taps(n_in, n_out):
        if not random_taps:
            return onnx_taps(n_in, n_out, mode)
        return np.stack([rng.integers(0, n_in, n_out), rng.integers(0, n_in, n_out),
                         rng.integers(0, 1025, n_out)], axis=1).astype(np.int32)

    return one_call("QResizeBilinear", [("x", int8(rng, shape), False), ("taps_h", taps(shape[-2], out_hw[0]), True),
                                        ("taps_w", taps(shape[-1], out_hw[1]), True)])


def weight_float_output(rng, op):
    """QConv2D / QDepthwiseConv2D / QFullyConnected with a float output: x, w, bias, output_scale
    (float32), y = float32(acc)·scale (integer_kernels.py `float_output`)."""
    if op == "QFullyConnected":
        x, w = int8(rng, (2, 3, 37)), int8(rng, (11, 37), -127, 127)
        attrs = {"input_zero_point": -7, "float_output": True}
    else:
        c = 5 if op == "QDepthwiseConv2D" else 6
        o, cg, group = (c, 1, c) if op == "QDepthwiseConv2D" else (8, 3, 2)
        x, w = int8(rng, (1, c, 9, 7)), int8(rng, (o, cg, 3, 3), -127, 127)
        attrs = {"strides": [2, 1], "pads": [1, 0, 2, 1], "dilations": [1, 1], "group": group,
                 "input_zero_point": 13, "float_output": True}
    o = w.shape[0]
    bias = rng.integers(-5000, 5000, o).astype(np.int32)
    scale = rng.uniform(1e-4, 3e-3, o).astype(np.float32)
    return one_call(op, [("x", x, False), ("w", w, True), ("bias", bias, True), ("scale", scale, True)], attrs)
