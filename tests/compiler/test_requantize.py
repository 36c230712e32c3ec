"""The integer requantization rule: exactness, rounding, edge cases."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from edgekiln.compiler.requantize import (
    activation_params,
    dequantize,
    quantize,
    quantize_multiplier,
    quantize_multipliers,
    requantize,
)


@pytest.mark.parametrize("real", [1e-9, 3.1e-5, 0.0123, 0.25, 0.5, 0.75, 0.999999999, 1.0, 7.5, 1234.5])
def test_multiplier_represents_the_real_value(real):
    m, shift = quantize_multiplier(real)
    assert 2**30 <= m < 2**31
    assert math.isclose(m * 2.0 ** -(31 + shift), real, rel_tol=2**-30)


def test_zero_and_negligible_multipliers_output_the_zero_point():
    assert quantize_multiplier(0.0) == (0, 0)
    assert quantize_multiplier(1e-30) == (0, 0)
    assert requantize(np.array([12345]), 0, 0, zero_point=-5)[0] == -5


def test_bad_multipliers_are_refused():
    for bad in (-1.0, float("nan"), float("inf"), 2.0**31):
        with pytest.raises(ValueError):
            quantize_multiplier(bad)


def test_requantize_matches_exact_rational_rounding_half_up():
    rng = np.random.default_rng(0)
    acc = rng.integers(-(2**24), 2**24, size=2000)
    for real in (0.0037, 0.25, 0.61, 1.9):
        m, shift = quantize_multiplier(real)
        # Before saturation, against exact rational arithmetic.
        total = 31 + shift
        expected = [math.floor(Fraction(int(a) * m, 2**total) + Fraction(1, 2)) for a in acc]
        product = acc.astype(np.int64) * m
        rounded = (product + (1 << (total - 1))) >> total
        np.testing.assert_array_equal(rounded, expected)
        got = requantize(acc, m, shift, zero_point=3)
        np.testing.assert_array_equal(got, np.clip(np.array(expected) + 3, -128, 127))


def test_ties_round_toward_positive_infinity():
    m, shift = quantize_multiplier(0.5)  # acc / 2 exactly
    np.testing.assert_array_equal(requantize(np.array([1, 3, -1, -3]), m, shift, 0), [1, 2, 0, -1])


def test_per_channel_multipliers_broadcast():
    m, s = quantize_multipliers(np.array([0.5, 0.25]))
    acc = np.array([[8, 8], [-8, -8]])
    np.testing.assert_array_equal(requantize(acc, m, s, 0), [[4, 2], [-4, -2]])


def test_activation_params_contain_zero_and_never_divide_by_zero():
    scale, zp = activation_params(0.5, 2.0)
    assert quantize(np.array([0.0]), scale, zp)[0] == zp  # 0.0 is exact
    assert activation_params(0.0, 0.0) == (1.0, 0)
    scale, zp = activation_params(-1.0, 1.0)
    np.testing.assert_allclose(dequantize(quantize(np.array([-1.0, 1.0]), scale, zp), scale, zp), [-1, 1], atol=scale)
    with pytest.raises(ValueError):
        activation_params(float("nan"), 1.0)
