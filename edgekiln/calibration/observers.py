"""Streaming observers: from every batch of one activation to its int8 clipping range (low, high).

Every observer sees the data batch by batch (`update`) and keeps a fixed amount of state,
never the activations themselves: min/max, or a `StreamingHistogram` of 2048 bins.

* `MinMaxObserver`:    [min x, max x].
* `PercentileObserver`: [q_(100−p), q_p], the p-th percentile at each end (p = 99.99 default).
* `EntropyObserver`:   TensorRT's KL calibration.  On the histogram of |x| (>= 2048 bins) try
  every threshold T = edge i, i = L .. 2048: the reference P is hist[:i] with the clipped
  outliers added to its last bin; the candidate Q merges hist[:i] into L levels and spreads
  each level back evenly over its non-empty bins; take T = argmin KL(P ‖ Q).
  L = 128 for a signed tensor (one int8 side), 255 for a one-sided one (ReLU outputs: all
  levels on one side).  Asymmetric ranges are handled on |x|, then each side is cut to the
  data: (max(min x, −T), min(max x, T)).  Cheaper and more robust than two independent
  one-sided searches, and exact for the common symmetric and one-sided cases.  Exact
  zeros are left out (they quantize exactly).  KL needs many values per tensor: on a few
  thousand, bin noise favours the smallest threshold (i = L).
* `MSEObserver`:       the range minimizing the expected squared error of asymmetric int8
  fake quantization over the histogram (bin centers c with counts n):

      E(l, h) = Σ n·[(c − clamp(c, l, h))² + 1[l ≤ c ≤ h]·s²/12],   s = (h − l)/255

  (clipping error outside, uniform rounding noise inside), searched over l = α·min,
  h = β·max: first α = β on a grid, then each side alone around the best.

Every range returned contains 0 and has high > low: an all-zero tensor gives (0, 1) — any
scale represents it exactly, and a finite non-zero one keeps requantization multipliers sane.
"""

from __future__ import annotations

import abc
import math

import numpy as np

from edgekiln.calibration.histogram import DEFAULT_BINS, StreamingHistogram
from edgekiln.errors import CalibrationError

METHODS = ("minmax", "percentile", "entropy", "mse")


class NonFiniteError(CalibrationError):
    """An observed batch holds NaN or Inf (the caller names the value and the sample)."""


def finish_range(low: float, high: float) -> tuple[float, float]:
    """Widen to contain 0 and give an all-zero range a non-zero width (see the module docstring)."""
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    if high <= low:
        return 0.0, 1.0
    return low, high


class Observer(abc.ABC):
    """Sees one activation batch by batch; `range()` gives its clipping range."""

    method: str

    def __init__(self) -> None:
        self.min = math.inf
        self.max = -math.inf
        self.count = 0

    def update(self, values: np.ndarray) -> None:
        """Observe one batch; NaN or Inf is refused (`NonFiniteError`) before it can poison the state."""
        values = np.asarray(values)
        if values.size == 0:
            return
        low, high = float(values.min()), float(values.max())
        if not (math.isfinite(low) and math.isfinite(high)):
            raise NonFiniteError("the values hold NaN or Inf")
        self.min, self.max = min(self.min, low), max(self.max, high)
        self.count += values.size
        self._update(values, low, high)

    def _update(self, values: np.ndarray, low: float, high: float) -> None:  # min/max observers need no more
        pass

    def range(self) -> tuple[float, float]:
        if self.count == 0:
            raise CalibrationError(f"{type(self).__name__}: no data was observed, so there is no range")
        if self.min == self.max:  # constant (or all-zero) tensor: nothing to clip
            return finish_range(self.min, self.max)
        return finish_range(*self._range())

    @abc.abstractmethod
    def _range(self) -> tuple[float, float]: ...


class MinMaxObserver(Observer):
    method = "minmax"

    def _range(self) -> tuple[float, float]:
        return self.min, self.max


class HistogramObserver(Observer):
    """An observer reading its range off a bounded streaming histogram."""

    def __init__(self, bins: int = DEFAULT_BINS) -> None:
        super().__init__()
        self.histogram = StreamingHistogram(bins)

    def _update(self, values: np.ndarray, low: float, high: float) -> None:
        self.histogram.update(values, low, high)


class PercentileObserver(HistogramObserver):
    method = "percentile"

    def __init__(self, percentile: float = 99.99, bins: int = DEFAULT_BINS) -> None:
        if not 50.0 < percentile <= 100.0:
            raise CalibrationError(f"percentile must be in (50, 100], got {percentile}")
        super().__init__(bins)
        self.percentile = percentile

    def _range(self) -> tuple[float, float]:
        share = self.percentile / 100.0
        return self.histogram.quantile(1.0 - share), self.histogram.quantile(share)


class EntropyObserver(HistogramObserver):
    method = "entropy"
    # 4x the usual bins: the |x| fold must keep >= 2048 bins over [0, max|x|] (TensorRT's
    # resolution) although the lattice may use only half of the signed range, on one side.
    default_bins = 4 * DEFAULT_BINS

    def __init__(self, bins: int | None = None) -> None:
        super().__init__(bins or self.default_bins)
        self.zeros = 0

    def _update(self, values: np.ndarray, low: float, high: float) -> None:
        super()._update(values, low, high)
        self.zeros += values.size - int(np.count_nonzero(values))

    def _range(self) -> tuple[float, float]:
        one_sided = self.min >= 0.0 or self.max <= 0.0
        levels = 255 if one_sided else 128
        counts, edges = self.histogram.absolute()
        # Exact zeros (ReLU's spike) quantize exactly to the zero point: they carry no error,
        # and left in bin 0 they would dominate the KL of every merge.
        counts[0] -= self.zeros
        threshold = float(edges[kl_threshold_bin(counts, levels)])
        return max(self.min, -threshold), min(self.max, threshold)


def kl_threshold_bin(counts: np.ndarray, levels: int, coarse_steps: int = 256) -> int:
    """The bin count i (levels <= i <= len(counts)) whose clipping minimizes KL(P ‖ Q); see the module docstring.

    Searched coarse to fine (about `coarse_steps` evenly spaced i, then every i around the
    best) rather than at every i: ~7x faster at 2048 bins, for the same threshold up to a
    few bins when the KL curve has several close minima.
    """
    counts = np.asarray(counts, np.float64)
    bins = len(counts)
    if bins <= levels:
        return bins
    tail = np.concatenate([np.cumsum(counts[::-1])[::-1], [0.0]])  # tail[i] = Σ counts[i:]
    stride = max(1, (bins - levels) // coarse_steps)
    coarse = [*range(levels, bins + 1, stride), bins]
    best = min(coarse, key=lambda i: _clipping_kl(counts, tail, i, levels))
    fine = range(max(levels, best - stride + 1), min(bins, best + stride - 1) + 1)
    return min([best, *fine], key=lambda i: (_clipping_kl(counts, tail, i, levels), i))


def _clipping_kl(counts: np.ndarray, tail: np.ndarray, i: int, levels: int) -> float:
    """KL(P ‖ Q) for clipping at bin i: P = counts[:i] plus the outliers in its last bin, Q = P quantized."""
    p = counts[:i].copy()
    p[-1] += tail[i]
    if p.sum() == 0:
        return math.inf
    # Merge the i bins into `levels` groups (boundaries by position), then spread each
    # group's mass evenly over the bins that were non-empty in it.
    group = (np.arange(i) * levels) // i
    nonzero = counts[:i] > 0
    group_mass = np.bincount(group, weights=counts[:i], minlength=levels)
    group_nonzero = np.bincount(group, weights=nonzero, minlength=levels)
    q = np.where(nonzero, group_mass[group] / np.maximum(group_nonzero[group], 1), 0.0)
    return _kl_divergence(p, q)


def _kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """KL(P ‖ Q) of two unnormalized histograms; bins where P > 0 but Q = 0 get a small Q (smoothing)."""
    p = p / p.sum()
    q_total = q.sum()
    if q_total == 0:
        return math.inf
    q = q / q_total
    mask = p > 0
    q = np.where(mask & (q == 0), 1e-10, q)
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


class MSEObserver(HistogramObserver):
    method = "mse"
    levels = 255
    grid = 100

    def _range(self) -> tuple[float, float]:
        centers = self.histogram.centers
        counts = self.histogram.counts.astype(np.float64)
        low, high = min(self.min, 0.0), max(self.max, 0.0)
        shrink = np.linspace(1.0, 1.0 / self.grid, self.grid)
        errors = self._expected_error(centers, counts, low * shrink, high * shrink)
        best = shrink[int(np.argmin(errors))]
        # Then each side alone, from the best joint shrink.
        lows, highs = np.full(self.grid, low * best), np.full(self.grid, high * best)
        side = np.linspace(min(1.0, best * 1.5), best / 2, self.grid)
        best_high = high * side[int(np.argmin(self._expected_error(centers, counts, lows, high * side)))]
        highs[:] = best_high
        best_low = low * side[int(np.argmin(self._expected_error(centers, counts, low * side, highs)))]
        return best_low, best_high

    def _expected_error(self, centers: np.ndarray, counts: np.ndarray, lows: np.ndarray,
                        highs: np.ndarray) -> np.ndarray:
        """E(l, h) of the module docstring for each candidate pair (vectorized over candidates)."""
        lows, highs = lows[:, None], highs[:, None]
        step = np.maximum(highs - lows, 1e-30) / self.levels
        clipped = np.clip(centers[None, :], lows, highs)
        inside = (centers[None, :] >= lows) & (centers[None, :] <= highs)
        per_bin = (centers[None, :] - clipped) ** 2 + inside * step**2 / 12.0
        return per_bin @ counts


_OBSERVERS: dict[str, type[Observer]] = {
    "minmax": MinMaxObserver,
    "percentile": PercentileObserver,
    "entropy": EntropyObserver,
    "mse": MSEObserver,
}


def make_observer(method: str) -> Observer:
    """An observer from a method string: "minmax", "entropy", "mse", "percentile" or "percentile:99.9"."""
    name, _, argument = method.partition(":")
    if name not in _OBSERVERS:
        raise CalibrationError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)} "
                               "(percentile takes an optional value, e.g. percentile:99.9)")
    if argument:
        if name != "percentile":
            raise CalibrationError(f"calibration method {name!r} takes no argument, got {method!r}")
        try:
            return PercentileObserver(float(argument))
        except ValueError:
            raise CalibrationError(f"calibration method {method!r}: {argument!r} is not a number") from None
    return _OBSERVERS[name]()
