"""Each integer kernel of the reference against the loop version in loop_kernels.py, bit for bit,
on randomized shapes: odd sizes, strides, padding, dilation, groups, depthwise, per-group weights."""

from __future__ import annotations

import numpy as np
import pytest

from edgekiln.backends.reference.interpreter import KERNELS
from edgekiln.compiler.program import KernelCall
from edgekiln.compiler.requantize import quantize_multiplier
from tests.backends.reference import loop_kernels as loops


def _int8(rng, shape, low=-128, high=127):
    return rng.integers(low, high + 1, size=shape).astype(np.int8)


def _multipliers(rng, count, low=1e-4, high=2e-2):
    pairs = [quantize_multiplier(float(v)) for v in rng.uniform(low, high, count)]
    return np.array([p[0] for p in pairs], np.int32), np.array([p[1] for p in pairs], np.int32)


def _call(op, attrs, n_inputs=1):
    return KernelCall(name=op.lower(), op=op, inputs=tuple(f"i{k}" for k in range(n_inputs)), outputs=("y",),
                      attrs=attrs)


CONV_CASES = [
    # (N, C, H, W, O, kh, kw, stride, pads, dilation, group, group_size)
    (1, 3, 7, 9, 5, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1, None),
    (2, 4, 8, 7, 6, 3, 2, (2, 1), (0, 1, 2, 0), (1, 1), 1, None),
    (1, 6, 9, 9, 4, 3, 3, (2, 2), (1, 1, 1, 1), (2, 2), 2, None),
    (1, 5, 6, 5, 5, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 1, None),
    (1, 8, 5, 7, 6, 3, 3, (1, 2), (1, 0, 1, 2), (1, 1), 1, 24),     # int4 groups: K = 72 = 3 x 24
    (1, 4, 6, 6, 4, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 2, 9),      # grouped conv with per-group scales
]


@pytest.mark.parametrize("case", CONV_CASES, ids=[str(i) for i in range(len(CONV_CASES))])
def test_conv2d_matches_loops(case):
    n, c, h, w, o, kh, kw, stride, pads, dilation, group, group_size = case
    rng = np.random.default_rng(hash(case) % 2**32)
    x = _int8(rng, (n, c, h, w))
    weights = _int8(rng, (o, c // group, kh, kw), -127, 127) if group_size is None else _int8(
        rng, (o, c // group, kh, kw), -8, 7)
    bias = rng.integers(-5000, 5000, o).astype(np.int32)
    mult, shift = _multipliers(rng, o)
    attrs = {"strides": list(stride), "pads": list(pads), "dilations": list(dilation), "group": group,
             "input_zero_point": int(rng.integers(-20, 20)), "output_zero_point": int(rng.integers(-10, 10)),
             "act_min": -128, "act_max": 127}
    args = [x, weights, bias, mult, shift]
    ratio = None
    if group_size is not None:
        attrs["group_size"], attrs["acc_frac_bits"] = group_size, 5
        ratio = rng.integers(1 << 14, (1 << 16) + 1, (o, (c // group) * kh * kw // group_size)).astype(np.int32)
        args.append(ratio)
    got = KERNELS["QConv2D"](_call("QConv2D", attrs, len(args)), args)[0]
    np.testing.assert_array_equal(got, loops.conv2d(x, weights, bias, mult, shift, attrs, ratio))


@pytest.mark.parametrize("stride,pads,dilation", [((1, 1), (1, 1, 1, 1), (1, 1)), ((2, 2), (1, 0, 1, 1), (1, 1)),
                                                  ((1, 2), (2, 2, 2, 2), (2, 1))])
def test_depthwise_matches_loops_and_the_general_conv(stride, pads, dilation):
    rng = np.random.default_rng(3)
    c = 7
    x = _int8(rng, (1, c, 9, 8))
    weights = _int8(rng, (c, 1, 3, 3), -127, 127)
    bias = rng.integers(-3000, 3000, c).astype(np.int32)
    mult, shift = _multipliers(rng, c, 1e-3, 5e-2)
    attrs = {"strides": list(stride), "pads": list(pads), "dilations": list(dilation), "group": c,
             "input_zero_point": 5, "output_zero_point": -3, "act_min": -3, "act_max": 100}  # a Relu-style clamp
    args = [x, weights, bias, mult, shift]
    got = KERNELS["QDepthwiseConv2D"](_call("QDepthwiseConv2D", attrs, 5), args)[0]
    expected = loops.conv2d(x, weights, bias, mult, shift, attrs)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(KERNELS["QConv2D"](_call("QConv2D", attrs, 5), args)[0], expected)
    assert got.min() >= -3 and got.max() <= 100


@pytest.mark.parametrize("stride,pads,out_pad,dilation,group,with_ratio", [
    ((2, 2), (0, 0, 0, 0), (0, 0), (1, 1), 1, False),
    ((2, 3), (1, 0, 1, 2), (1, 0), (1, 1), 1, True),
    ((1, 1), (1, 1, 1, 1), (0, 0), (2, 1), 2, True),
])
def test_conv_transpose_matches_loops(stride, pads, out_pad, dilation, group, with_ratio):
    rng = np.random.default_rng(11)
    c, og, kh, kw = 4, 3, 3, 2
    x = _int8(rng, (1, c, 4, 5))
    weights = _int8(rng, (c, og, kh, kw), -127, 127)
    o = og * group
    bias = rng.integers(-2000, 2000, o).astype(np.int32)
    mult, shift = _multipliers(rng, o)
    attrs = {"strides": list(stride), "pads": list(pads), "dilations": list(dilation), "group": group,
             "output_padding": list(out_pad), "input_zero_point": -7, "output_zero_point": 2,
             "act_min": -128, "act_max": 127}
    args = [x, weights, bias, mult, shift]
    ratio = rng.integers(1 << 12, (1 << 16) + 1, c).astype(np.int32) if with_ratio else None
    if with_ratio:
        args.append(ratio)
        attrs["acc_frac_bits"] = 3
    got = KERNELS["QConvTranspose2D"](_call("QConvTranspose2D", attrs, len(args)), args)[0]
    np.testing.assert_array_equal(got, loops.conv_transpose2d(x, weights, bias, mult, shift, attrs, ratio))


@pytest.mark.parametrize("shape,group_size", [((3, 20), None), ((2, 3, 17), None), ((4, 32), 8)])
def test_fully_connected_matches_loops(shape, group_size):
    rng = np.random.default_rng(5)
    n = 7
    x = _int8(rng, shape)
    weights = _int8(rng, (n, shape[-1]), -127, 127)
    bias = rng.integers(-9000, 9000, n).astype(np.int32)
    mult, shift = _multipliers(rng, n)
    attrs = {"input_zero_point": 9, "output_zero_point": 0, "act_min": 0, "act_max": 127}
    args = [x, weights, bias, mult, shift]
    ratio = None
    if group_size:
        attrs["group_size"], attrs["acc_frac_bits"] = group_size, 8
        ratio = rng.integers(1 << 13, (1 << 16) + 1, (n, shape[-1] // group_size)).astype(np.int32)
        args.append(ratio)
    got = KERNELS["QFullyConnected"](_call("QFullyConnected", attrs, len(args)), args)[0]
    np.testing.assert_array_equal(got, loops.fully_connected(x, weights, bias, mult, shift, attrs, ratio))


def test_matmul_with_broadcast_batch_matches_loops():
    rng = np.random.default_rng(6)
    a_in, b_in = _int8(rng, (2, 1, 3, 5)), _int8(rng, (1, 3, 5, 4))
    m, sh = quantize_multiplier(3.1e-3)
    attrs = {"a_zero_point": -4, "b_zero_point": 11, "output_zero_point": 3, "multiplier": m, "shift": sh,
             "act_min": -128, "act_max": 127}
    got = KERNELS["QMatMul"](_call("QMatMul", attrs, 2), [a_in, b_in])[0]
    np.testing.assert_array_equal(got, loops.matmul(a_in, b_in, attrs))


@pytest.mark.parametrize("subtract", [False, True])
def test_add_matches_loops_and_the_real_sum(subtract):
    rng = np.random.default_rng(7)
    x_a, x_b = _int8(rng, (2, 3, 4, 5)), _int8(rng, (1, 3, 1, 5))
    s_a, s_b, s_y = 0.031, 0.047, 0.06
    twice = 2 * max(s_a, s_b)
    attrs = {"a_zero_point": 3, "b_zero_point": -9, "output_zero_point": 1, "left_shift": 20, "subtract": subtract,
             "act_min": -128, "act_max": 127}
    attrs["a_multiplier"], attrs["a_shift"] = quantize_multiplier(s_a / twice)
    attrs["b_multiplier"], attrs["b_shift"] = quantize_multiplier(s_b / twice)
    attrs["multiplier"], attrs["shift"] = quantize_multiplier(twice / (2**20 * s_y))
    got = KERNELS["QAdd"](_call("QAdd", attrs, 2), [x_a, x_b])[0]
    np.testing.assert_array_equal(got, loops.add(x_a, x_b, attrs))
    sign = -1 if subtract else 1
    real = (s_a * (x_a.astype(float) - 3) + sign * s_b * (x_b.astype(float) + 9)) / s_y + 1
    assert np.max(np.abs(got - np.clip(np.rint(real), -128, 127))) <= 1


def test_mul_matches_loops():
    rng = np.random.default_rng(8)
    x_a, x_b = _int8(rng, (1, 4, 3, 3)), _int8(rng, (1, 4, 1, 1))
    m, sh = quantize_multiplier(7.7e-4)
    attrs = {"a_zero_point": -1, "b_zero_point": -128, "output_zero_point": -5, "multiplier": m, "shift": sh,
             "act_min": -128, "act_max": 127}
    got = KERNELS["QMul"](_call("QMul", attrs, 2), [x_a, x_b])[0]
    np.testing.assert_array_equal(got, loops.mul(x_a, x_b, attrs))


@pytest.mark.parametrize("pads,include", [((0, 0, 0, 0), 0), ((1, 1, 1, 1), 0), ((1, 0, 1, 1), 1)])
def test_average_pool_matches_loops(pads, include):
    rng = np.random.default_rng(9)
    x = _int8(rng, (1, 3, 7, 6))
    kernel = [3, 2]
    pairs = [(0, 0)] + [quantize_multiplier(0.9 / n) for n in range(1, 7)]
    mults = np.array([p[0] for p in pairs], np.int32)
    shifts = np.array([p[1] for p in pairs], np.int32)
    attrs = {"kernel_shape": kernel, "strides": [2, 1], "pads": list(pads), "count_include_pad": include,
             "input_zero_point": -20, "output_zero_point": 4}
    got = KERNELS["QAveragePool"](_call("QAveragePool", attrs, 3), [x, mults, shifts])[0]
    np.testing.assert_array_equal(got, loops.average_pool(x, mults, shifts, attrs))


def test_max_pool_matches_loops_and_padding_never_wins():
    rng = np.random.default_rng(10)
    x = _int8(rng, (1, 2, 6, 7), -128, -100)  # all negative: a zero pad would win if it were counted
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "dilations": [1, 2]}
    got = KERNELS["QMaxPool"](_call("QMaxPool", attrs), [x])[0]
    np.testing.assert_array_equal(got, loops.max_pool(x, attrs))
    assert got.max() <= -100


def test_means_match_sums():
    rng = np.random.default_rng(12)
    x = _int8(rng, (2, 3, 5, 4))
    m, sh = quantize_multiplier(1.3 / 20)
    attrs = {"input_zero_point": 6, "output_zero_point": -2, "multiplier": m, "shift": sh}
    got = KERNELS["QGlobalAveragePool"](_call("QGlobalAveragePool", attrs), [x])[0]
    sums = (x.astype(np.int64) - 6).sum(axis=(2, 3), keepdims=True)
    np.testing.assert_array_equal(got, np.vectorize(lambda s: loops.requant(int(s), m, sh, -2))(sums))
    reduce_attrs = {**attrs, "axes": [1], "keepdims": 0}
    m3, sh3 = quantize_multiplier(0.4)
    reduce_attrs.update(multiplier=m3, shift=sh3)
    got = KERNELS["QReduceMean"](_call("QReduceMean", reduce_attrs), [x])[0]
    sums = (x.astype(np.int64) - 6).sum(axis=1)
    np.testing.assert_array_equal(got, np.vectorize(lambda s: loops.requant(int(s), m3, sh3, -2))(sums))


@pytest.mark.parametrize("s_x,d", [(0.05, 7), (0.2, 33), (0.011, 16)])
def test_softmax_matches_loops_and_real_softmax(s_x, d):
    rng = np.random.default_rng(13)
    x = _int8(rng, (3, 2, d))
    table = np.rint(np.exp(-np.arange(256) * s_x) * 2**20).astype(np.int32)
    s_y, zp_y = 1 / 255, -128
    m, sh = quantize_multiplier(2.0**-30 / s_y)
    attrs = {"output_zero_point": zp_y, "multiplier": m, "shift": sh}
    got = KERNELS["QSoftmax"](_call("QSoftmax", attrs, 2), [x, table])[0]
    np.testing.assert_array_equal(got, loops.softmax(x, table, attrs))
    xf = x.astype(np.float64)
    real = np.exp(s_x * (xf - xf.max(axis=-1, keepdims=True)))
    real /= real.sum(axis=-1, keepdims=True)
    assert np.max(np.abs(got.astype(int) - (np.rint(real / s_y) + zp_y))) <= 1


@pytest.mark.parametrize("d,s_x", [(8, 0.05), (31, 0.02), (64, 0.3)])
def test_layer_norm_matches_loops_and_real_layer_norm(d, s_x):
    rng = np.random.default_rng(d)
    x = _int8(rng, (2, 3, d))
    x[0, 0] = 17  # a constant row: variance 0, only eps keeps it finite
    gamma_real, beta_real = rng.uniform(-2, 2, d), rng.uniform(-0.5, 0.5, d)
    s_y, zp_y, eps, frac, bits = 0.03, 3, 1e-5, 20, 20
    attrs = {"eps_term": round(eps * d**3 / s_x**2), "frac_bits": frac, "out_shift": frac + bits,
             "output_zero_point": zp_y}
    gamma = np.rint(gamma_real * np.sqrt(d) / s_y * 2.0**bits).astype(np.int32)
    beta = np.array([round(b / s_y * 2.0 ** (frac + bits)) for b in beta_real], np.int64)
    got = KERNELS["QLayerNorm"](_call("QLayerNorm", attrs, 3), [x, gamma, beta])[0]
    np.testing.assert_array_equal(got, loops.layer_norm(x, gamma, beta, attrs))
    real_x = s_x * x.astype(np.float64)
    norm = (real_x - real_x.mean(-1, keepdims=True)) / np.sqrt(real_x.var(-1, keepdims=True) + eps)
    real = np.clip(np.rint((norm * gamma_real + beta_real) / s_y) + zp_y, -128, 127)
    assert np.max(np.abs(got - real)) <= 1
    assert np.mean(got == real) > 0.97


def test_lookup_table_concat_resize_pad_and_requantize():
    rng = np.random.default_rng(14)
    x = _int8(rng, (1, 2, 3, 4))
    table = _int8(rng, (256,))
    got = KERNELS["QLookupTable"](_call("QLookupTable", {"function": "t"}, 2), [x, table])[0]
    np.testing.assert_array_equal(got, table[x.astype(int) + 128])

    m, sh = quantize_multiplier(0.5)
    attrs = {"axis": 1, "input_zero_points": [0, 10], "output_zero_point": 0, "requantize": [None, [m, sh]]}
    other = _int8(rng, (1, 3, 3, 4))
    got = KERNELS["QConcat"](_call("QConcat", attrs, 2), [x, other])[0]
    np.testing.assert_array_equal(got[:, :2], x)
    np.testing.assert_array_equal(got[:, 2:], np.vectorize(lambda v: loops.requant(int(v) - 10, m, sh, 0))(other))

    rq = {"input_zero_point": 10, "output_zero_point": 0, "multiplier": m, "shift": sh}
    np.testing.assert_array_equal(KERNELS["QRequantize"](_call("QRequantize", rq), [other])[0], got[:, 2:])

    idx_h, idx_w = np.array([0, 0, 1, 1, 2, 2], np.int32), np.array([0, 1, 1, 2, 3, 3, 3], np.int32)
    got = KERNELS["QResizeNearest"](_call("QResizeNearest", {}, 3), [x, idx_h, idx_w])[0]
    assert got.shape == (1, 2, 6, 7) and got[0, 1, 3, 4] == x[0, 1, 1, 3]

    pad_attrs = {"pads": [0, 0, 1, -1, 0, 0, 2, 1], "mode": "constant", "pad_value": -7}
    got = KERNELS["QPad"](_call("QPad", pad_attrs), [x])[0]
    assert got.shape == (1, 2, 6, 4)
    np.testing.assert_array_equal(got[:, :, 1:4, :3], x[:, :, :, 1:])
    assert (got[:, :, 0] == -7).all() and (got[:, :, :, 3] == -7).all()
