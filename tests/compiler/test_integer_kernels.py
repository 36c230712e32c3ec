"""The integer kernel catalogue is complete and consistent, and its primitives are exact."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgekiln.backends.reference.interpreter import KERNELS
from edgekiln.backends.reference.kernels.normalization import rsqrt_fixed
from edgekiln.backends.reference.kernels.primitives import bit_length, isqrt, rescale, rshift_round
from edgekiln.compiler import integer_kernels as ik
from edgekiln.compiler.integer_lowering import _Act, lookup_table
from edgekiln.compiler.requantize import quantize, quantize_multiplier


def test_every_catalogued_op_has_a_reference_kernel_and_no_more():
    assert set(KERNELS) == set(ik.CATALOGUE)
    for spec in ik.CATALOGUE.values():
        assert spec.inputs and spec.outputs and spec.summary
        assert all(o.dtype in ("int8", "int32", "int64", "float32") for o in (*spec.inputs, *spec.outputs))
    assert not set(ik.DATA_MOVEMENT_OPS) & set(ik.CATALOGUE)  # those keep their ONNX op type


def test_rshift_round_rounds_ties_toward_plus_infinity():
    v = np.array([5, 6, 7, -5, -6, -7, 0], np.int64)  # /4: 1.25 1.5 1.75 -1.25 -1.5 -1.75 0
    np.testing.assert_array_equal(rshift_round(v, 2), [1, 2, 2, -1, -1, -2, 0])
    np.testing.assert_array_equal(rshift_round(v, 0), v)
    m, sh = quantize_multiplier(0.25)
    np.testing.assert_array_equal(rescale(v, m, sh), rshift_round(v, 2))


def test_isqrt_and_bit_length_are_exact():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.integers(0, 2**52, 2000), np.array([0, 1, 2, 3, 4, 2**52 - 1, (2**26 - 1) ** 2,
                                                                     (2**26 - 1) ** 2 - 1])]).astype(np.int64)
    np.testing.assert_array_equal(isqrt(values), [math.isqrt(int(v)) for v in values])
    wide = np.concatenate([rng.integers(0, 2**62, 2000), 2 ** np.arange(63) - 1, 2 ** np.arange(63)]).astype(np.int64)
    np.testing.assert_array_equal(bit_length(wide), [int(v).bit_length() for v in wide])


def test_fixed_point_rsqrt_is_accurate_over_the_whole_range():
    w = np.unique(np.concatenate([2 ** np.arange(0, 62), np.random.default_rng(1).integers(1, 2**62, 5000)]))
    inv, k = rsqrt_fixed(w.astype(np.int64))
    approx = inv.astype(np.float64) * 2.0 ** -(31 + k.astype(np.float64))
    exact = 1 / np.sqrt(w.astype(np.float64))
    assert np.max(np.abs(approx / exact - 1)) < 2e-6
    assert inv.max() < 2**31  # fits int32


@pytest.mark.parametrize("s_in,zp_in,s_out,zp_out", [(0.05, -3, 0.02, -128), (0.3, 20, 0.1, 0)])
def test_lookup_table_is_quantize_of_f_of_dequantize(s_in, zp_in, s_out, zp_out):
    table = lookup_table(np.tanh, _Act("x", s_in, zp_in), s_out, zp_out)
    q = np.arange(-128, 128)
    expected = quantize(np.tanh(np.float32(s_in) * (q - zp_in).astype(np.float64)), s_out, zp_out)
    assert table.dtype == np.int8 and table.shape == (256,)
    assert np.mean(table == expected) > 0.99 and np.max(np.abs(table.astype(int) - expected)) <= 1
    assert lookup_table(np.log, _Act("x", s_in, zp_in), s_out, zp_out) is None  # log(<=0): no table


def test_fixed_point_constants_leave_headroom():
    """The bounds the docstring promises: QAdd's input multipliers are <= 1/2 and the softmax
    table starts at exactly 2^20."""
    for s_a, s_b in [(0.1, 0.1), (0.01, 0.5), (1e-3, 1e-3 * (1 + 2**-20))]:
        twice = 2 * max(s_a, s_b)
        for s in (s_a, s_b):
            m, sh = quantize_multiplier(s / twice)
            assert m * 2.0 ** -(31 + sh) <= 0.5 + 1e-12
    table = np.rint(np.exp(-np.arange(256) * 0.1) * 2**ik.SOFTMAX_EXP_BITS)
    assert table[0] == 2**ik.SOFTMAX_EXP_BITS and table.max() < 2**31
