"""Weight quantizers: symmetric grids, ranges, all-zero channels, group fallback, ternary, MSE, bytes."""

from __future__ import annotations

import numpy as np
import pytest

from edgekiln.errors import QuantizationError
from edgekiln.quantization.weights import (
    packed_weight_bytes,
    quantize_int4,
    quantize_int8,
    quantize_ternary,
    quantize_weight,
    resolve_group_size,
)

RNG = np.random.default_rng(3)
W = RNG.standard_normal((8, 4, 3, 3)).astype(np.float32)  # K = 36


def test_int8_per_channel_is_symmetric_and_hits_127_on_each_channel_peak():
    q, scale = quantize_int8(W)
    assert q.dtype == np.int8 and q.shape == W.shape and scale.shape == (8,)
    np.testing.assert_allclose(scale, np.abs(W).reshape(8, -1).max(axis=1) / 127, rtol=1e-6)
    assert np.all(np.abs(q).reshape(8, -1).max(axis=1) == 127) and q.min() >= -127
    assert np.max(np.abs(q * scale[:, None, None, None] - W)) <= scale.max() / 2 + 1e-7
    negated, _ = quantize_int8(-W)
    np.testing.assert_array_equal(negated, -q)  # symmetric: no zero point


def test_an_all_zero_channel_gets_scale_one_never_zero_or_inf():
    w = W.copy()
    w[2] = 0
    for q, scale in (quantize_int8(w), quantize_int4(w, 12), quantize_ternary(w), quantize_ternary(w, 12)):
        assert np.all(np.isfinite(scale)) and np.all(scale > 0)
        assert np.all(q[2] == 0) and np.all(scale.reshape(8, -1)[2] == 1.0)


def test_int4_groups_along_the_flattened_reduction_axis():
    q, scale = quantize_int4(W, 12)
    assert scale.shape == (8, 3) and q.min() >= -7 and q.max() <= 7
    groups = W.reshape(8, 3, 12)
    # Group scales are float16 values (stored as such by backends): within float16 rounding.
    np.testing.assert_allclose(scale, np.abs(groups).max(axis=2) / 7, rtol=2**-11)
    np.testing.assert_array_equal(scale, scale.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(q.reshape(8, 3, 12), np.rint(groups / scale[..., None]).astype(np.int8))
    values = quantize_weight(W, "int4:g32")  # 36 is not a multiple of 32: largest divisor in [8, 32] is 18
    assert (values.group_size, values.precision, values.scale.shape) == (18, "int4:g18", (8, 2))
    assert "groups of 18" in values.note


@pytest.mark.parametrize("k, g, expected", [(256, 64, 64), (400, 64, 50), (72, 32, 24), (9, 64, None),
                                            (64, 64, None), (14, 32, None), (150, 32, 30)])
def test_group_size_fallback(k, g, expected):
    assert resolve_group_size(k, g)[0] == expected


def test_ternary_is_absmean_bitnet():
    q, scale = quantize_ternary(W)
    assert set(np.unique(q)) <= {-1, 0, 1}
    np.testing.assert_allclose(scale, np.abs(W).reshape(8, -1).mean(axis=1), rtol=1e-6)
    expected = np.clip(np.rint(W / scale[:, None, None, None]), -1, 1)
    np.testing.assert_array_equal(q, expected)
    grouped = quantize_weight(W, "ternary:g32")
    assert grouped.precision == "ternary:g18" and set(np.unique(grouped.q)) <= {-1, 0, 1}


def test_mse_clipping_is_never_worse_than_minmax_and_wins_with_an_outlier():
    w = RNG.standard_normal((4, 256)).astype(np.float32)
    w[:, 0] = 12.0  # one outlier per channel stretches minmax
    for precision in ("int8", "int4:g64", "int4"):
        minmax = quantize_weight(w, precision, "minmax")
        mse = quantize_weight(w, precision, "mse")
        err_minmax = np.sum((minmax.dequantized() - w) ** 2)
        err_mse = np.sum((mse.dequantized() - w) ** 2)
        assert err_mse <= err_minmax
    int4 = quantize_weight(w, "int4", "mse")
    assert np.sum((int4.dequantized() - w) ** 2) < 0.9 * np.sum((quantize_weight(w, "int4").dequantized() - w) ** 2)


def test_dequantized_matches_scale_times_q():
    for precision in ("int8", "int4:g64", "ternary:g32", "w4a16:g64"):
        values = quantize_weight(W, precision)
        rows = values.q.reshape(8, -1).astype(np.float32)
        if values.group_size:
            expected = (rows.reshape(8, -1, values.group_size) * values.scale[..., None]).reshape(W.shape)
        else:
            expected = (rows * values.scale[:, None]).reshape(W.shape)
        np.testing.assert_array_equal(values.dequantized(), expected)
    assert quantize_weight(W, "w4a16:g64").precision.startswith("int4")


def test_nan_or_inf_in_a_weight_is_an_error_naming_it():
    w = W.copy()
    w[0, 0, 0, 0] = np.nan
    with pytest.raises(QuantizationError, match="'conv1.weight' holds 1 NaN/Inf"):
        quantize_weight(w, "int8", name="conv1.weight")


def test_packed_weight_bytes_and_the_ratios_the_issue_asks_for():
    w = RNG.standard_normal((64, 64, 3, 3)).astype(np.float32)  # 36864 values, K = 576
    fp32 = packed_weight_bytes(w, "fp32")
    assert fp32 == 4 * w.size
    int8 = quantize_weight(w, "int8")
    assert packed_weight_bytes(int8.q, "int8") == w.size + 4 * 64
    int4 = quantize_weight(w, "int4:g64")
    assert packed_weight_bytes(int4.q, int4.precision) == w.size // 2 + 2 * w.size // 64  # float16 group scales
    ternary = quantize_weight(w, "ternary")
    assert packed_weight_bytes(ternary.q, "ternary") == -(-w.size // 5) + 4 * 64  # five values per byte
    assert packed_weight_bytes(int8.q, "int8") / fp32 <= 0.26
    # 0.5 byte + a 2-byte scale per g values: g64 is 0.1328x, inside the 0.14x target
    assert packed_weight_bytes(int4.q, int4.precision) / fp32 == pytest.approx(0.1328125)
    assert packed_weight_bytes(int4.q, int4.precision) / fp32 <= 0.14
    int4_g128 = quantize_weight(w, "int4:g128")
    assert packed_weight_bytes(int4_g128.q, int4_g128.precision) / fp32 <= 0.14
    assert packed_weight_bytes(ternary.q, "ternary") / fp32 <= 0.08
