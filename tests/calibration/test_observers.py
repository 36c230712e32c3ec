"""Observers and the streaming histogram: known distributions, degenerate tensors, streaming, bounded memory."""

from __future__ import annotations

import numpy as np
import pytest

from edgekiln.calibration.histogram import StreamingHistogram
from edgekiln.calibration.observers import (
    EntropyObserver,
    MinMaxObserver,
    MSEObserver,
    PercentileObserver,
    kl_threshold_bin,
    make_observer,
)
from edgekiln.compiler.requantize import activation_params, dequantize, quantize
from edgekiln.errors import CalibrationError

METHODS = ("minmax", "percentile", "entropy", "mse")
RNG = np.random.default_rng(0)
GAUSS_OUTLIERS = np.concatenate([RNG.standard_normal(100_000), [40.0, -30.0, 45.0]]).astype(np.float32)
UNIFORM = RNG.uniform(-1.0, 3.0, 100_000).astype(np.float32)
RELU = np.maximum(RNG.standard_normal(100_000), 0).astype(np.float32)
LAPLACE = RNG.laplace(size=100_000).astype(np.float32)


def observe(method: str, data: np.ndarray, batches: int = 1) -> tuple[float, float]:
    observer = make_observer(method)
    for chunk in np.array_split(data, batches):
        observer.update(chunk)
    return observer.range()


def fake_quant_mse(data: np.ndarray, low: float, high: float) -> float:
    scale, zero_point = activation_params(low, high)
    return float(np.mean((dequantize(quantize(data, scale, zero_point), scale, zero_point) - data) ** 2))


def test_minmax_is_the_exact_range():
    assert observe("minmax", UNIFORM, 7) == (float(UNIFORM.min()), float(UNIFORM.max()))


def test_uniform_keeps_nearly_the_whole_range():
    for method in ("percentile", "entropy", "mse"):
        low, high = observe(method, UNIFORM)
        assert -1.0 <= low < -0.98 and 2.95 < high <= 3.0, (method, low, high)


def test_gaussian_outliers_are_clipped_by_percentile_and_entropy():
    assert observe("minmax", GAUSS_OUTLIERS) == (-30.0, 45.0)
    for method in ("percentile", "entropy"):
        low, high = observe(method, GAUSS_OUTLIERS)
        assert -6.0 < low < -3.0 and 3.0 < high < 6.0, (method, low, high)


def test_mse_range_is_near_the_brute_force_optimum_on_heavy_tails():
    low, high = float(LAPLACE.min()), float(LAPLACE.max())
    brute = min(fake_quant_mse(LAPLACE, low * a, high * a) for a in np.linspace(0.05, 1.0, 200))
    mse_low, mse_high = observe("mse", LAPLACE)
    assert mse_high < high and mse_low > low
    assert fake_quant_mse(LAPLACE, mse_low, mse_high) < 1.03 * brute
    assert fake_quant_mse(LAPLACE, mse_low, mse_high) < 0.9 * fake_quant_mse(LAPLACE, low, high)


@pytest.mark.parametrize("method", METHODS)
def test_one_sided_relu_output_keeps_zero_as_the_low_end(method):
    low, high = observe(method, RELU)
    assert low == 0.0 and high > 2.0


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("value", "expected"), [(0.0, (0.0, 1.0)), (3.0, (0.0, 3.0)), (-2.0, (-2.0, 0.0))])
def test_constant_tensors_get_a_range_with_zero_and_nonzero_width(method, value, expected):
    low, high = observe(method, np.full(1000, value, np.float32), batches=4)
    assert (low, high) == expected
    scale, _ = activation_params(low, high)
    assert np.isfinite(scale) and scale > 0


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("data", [GAUSS_OUTLIERS, UNIFORM, RELU, LAPLACE], ids=["gauss", "uniform", "relu", "laplace"])
def test_many_small_batches_equal_one_big_batch(method, data):
    shuffled = np.random.default_rng(1).permutation(data)
    streamed, whole = observe(method, shuffled, batches=200), observe(method, data)
    assert streamed == pytest.approx(whole, abs=1e-9)


def test_histogram_merging_is_exact_and_bounded():
    data = np.random.default_rng(2).permutation(np.concatenate([GAUSS_OUTLIERS, UNIFORM * 100]))
    streamed, whole = StreamingHistogram(), StreamingHistogram()
    for chunk in np.array_split(data, 500):
        streamed.update(chunk)
    whole.update(data)
    assert streamed.width == whole.width and streamed.origin == whole.origin
    np.testing.assert_array_equal(streamed.counts, whole.counts)
    assert streamed.counts.sum() == data.size and streamed.counts.nbytes == 2048 * 8


def test_observer_state_does_not_grow_with_the_data():
    observer = EntropyObserver()
    for _ in range(50):
        observer.update(np.random.default_rng(3).standard_normal(10_000) * 10)
    assert observer.histogram.counts.shape == (EntropyObserver.default_bins,)
    assert observer.count == 500_000


def test_absolute_histogram_folds_exactly():
    histogram = StreamingHistogram(64)
    histogram.update(np.array([-1.4, -0.3, 0.0, 0.1, 0.3, 1.6, 3.0]))
    counts, edges = histogram.absolute()
    magnitudes = np.abs([-1.4, -0.3, 0.0, 0.1, 0.3, 1.6, 3.0])
    np.testing.assert_array_equal(counts, np.histogram(magnitudes, edges)[0])


def test_kl_search_keeps_every_bin_for_a_flat_histogram():
    assert kl_threshold_bin(np.ones(1024), 128) == 1024


def test_nan_is_refused():
    with pytest.raises(CalibrationError, match="NaN or Inf"):
        MinMaxObserver().update(np.array([1.0, np.nan]))
    with pytest.raises(CalibrationError, match="no data was observed"):
        MSEObserver().range()


def test_make_observer_parses_methods():
    assert isinstance(make_observer("percentile:99.9"), PercentileObserver)
    assert make_observer("percentile:99.9").percentile == 99.9
    with pytest.raises(CalibrationError, match="unknown calibration method 'kl'; choose one of minmax, percentile"):
        make_observer("kl")
    with pytest.raises(CalibrationError, match="takes no argument"):
        make_observer("mse:3")
    with pytest.raises(CalibrationError, match="percentile must be in"):
        make_observer("percentile:20")
