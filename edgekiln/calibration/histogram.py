"""`StreamingHistogram`: a fixed-size histogram whose range grows, so memory never depends on the data size.

The bins lie on a global lattice: the width w is a power of two and the origin a multiple
of w,

    bin i = [origin + i·w, origin + (i+1)·w),   i = 0 .. bins-1,   origin = ⌊min/w⌋·w,

with w the smallest power of two for which [min, max] fits in `bins` bins.  When a batch
falls outside the range, w doubles k times and the origin moves down to the coarser
lattice; the lattice of 2^k·w refines to that of w, so every old bin lies inside exactly
one new bin and rebinning only adds counts.  Because w is the smallest fitting power of
two for the data seen so far, the final histogram is the same however the data were
split into batches: streaming equals one big batch, bit for bit.  The data occupy between
half and all of the bins.  (onnxruntime's HistogramCollector grows its range the same
way, but re-histograms with interpolation.)

0 is a lattice edge, so the histogram of |x| (`absolute`) is an exact fold.  Exact min,
max and count are kept beside the bins.
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_BINS = 2048
# The finest width ever used; a constant batch gets it, later batches coarsen it.
_MIN_WIDTH_EXPONENT = -60


class StreamingHistogram:
    """Counts of every value seen, in `bins` equal bins over a range that only grows."""

    def __init__(self, bins: int = DEFAULT_BINS) -> None:
        if bins < 16:
            raise ValueError(f"a histogram needs at least 16 bins, got {bins}")
        self.bins = bins
        self.counts = np.zeros(bins, np.int64)
        self.origin = 0.0
        self.width = 0.0  # 0 until the first non-empty batch
        self.min = math.inf
        self.max = -math.inf
        self.count = 0

    @property
    def edges(self) -> np.ndarray:
        """The bins + 1 bin edges (float64)."""
        return self.origin + self.width * np.arange(self.bins + 1, dtype=np.float64)

    @property
    def centers(self) -> np.ndarray:
        return self.origin + self.width * (np.arange(self.bins, dtype=np.float64) + 0.5)

    def update(self, values: np.ndarray, low: float | None = None, high: float | None = None) -> None:
        """Add every element of `values` (finite floats) to the histogram; `low`/`high`: their min/max if known."""
        flat = np.asarray(values).reshape(-1)
        if flat.size == 0:
            return
        low = float(flat.min()) if low is None else low
        high = float(flat.max()) if high is None else high
        low, high = min(low, self.min), max(high, self.max)
        self._cover(low, high)
        self.min, self.max = low, high
        self.count += flat.size
        # Bin index by arithmetic rather than np.histogram: several times faster; the clip
        # only catches rounding at the outer edges.
        index = ((flat.astype(np.float64, copy=False) - self.origin) * (1.0 / self.width)).astype(np.intp)
        np.clip(index, 0, self.bins - 1, out=index)
        self.counts += np.bincount(index, minlength=self.bins)

    def _fits(self, width: float, low: float, high: float) -> bool:
        return math.floor(high / width) - math.floor(low / width) < self.bins

    def _cover(self, low: float, high: float) -> None:
        """Coarsen the lattice (if needed) so that [low, high] fits; see the module docstring."""
        width = self.width or 2.0**_MIN_WIDTH_EXPONENT
        if self.width and self._fits(width, low, high) and low >= self.origin:
            return
        span = high - low
        if span > 0:  # jump close to the answer, then step: the smallest fitting power of two
            guess = math.floor(math.log2(span / self.bins)) - 1
            width = max(width, 2.0**guess)
        while not self._fits(width, low, high):
            width *= 2.0
        origin = math.floor(low / width) * width
        if self.width:
            shift = round((self.origin - origin) / self.width)  # whole old bins between the origins
            factor = round(width / self.width)
            new_index = (np.arange(self.bins) + shift) // factor
            merged = np.bincount(new_index, weights=self.counts, minlength=self.bins).astype(np.int64)
            # Old bins past the new top are empty (the new range covers all data seen).
            self.counts = merged[: self.bins]
        self.origin, self.width = origin, width

    # -- reading -----------------------------------------------------------------------------------------

    def quantile(self, share: float) -> float:
        """The value below which `share` of the data lie (linear inside a bin), clamped to the exact min/max."""
        cumulative = np.concatenate([[0.0], np.cumsum(self.counts, dtype=np.float64)]) / max(self.count, 1)
        value = float(np.interp(share, cumulative, self.edges))
        return min(max(value, self.min), self.max)

    def absolute(self) -> tuple[np.ndarray, np.ndarray]:
        """(counts, edges) of |x| over [0, max|x|], at this width (coarsened to <= `bins` bins if needed).

        Exact: 0 is a lattice edge, so the bin [p·w, (p+1)·w) with p < 0 folds onto |x| bin −p−1.
        """
        position = round(self.origin / self.width) + np.arange(self.bins, dtype=np.int64)
        folded = np.where(position >= 0, position, -position - 1)
        used = self.counts > 0
        top = int(folded[used].max()) + 1 if used.any() else 1
        factor = 1
        while math.ceil(top / factor) > self.bins:
            factor *= 2
        size = math.ceil(top / factor)
        counts = np.bincount(folded[used] // factor, weights=self.counts[used], minlength=size)
        return counts, self.width * factor * np.arange(size + 1, dtype=np.float64)
