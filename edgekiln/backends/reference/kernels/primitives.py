"""The integer primitives of `compiler/integer_kernels.py`, vectorized in int64 numpy."""

from __future__ import annotations

import numpy as np

from edgekiln.compiler.requantize import requantize

__all__ = ["bit_length", "isqrt", "requantize", "rescale", "rshift_round"]


def rshift_round(value: np.ndarray, n: np.ndarray | int) -> np.ndarray:
    """(v + 2^(n−1)) >> n for n ≥ 1 (floor shift: ties toward +∞); v for n = 0.  `n` broadcasts."""
    v = np.asarray(value, np.int64)
    n = np.asarray(n, np.int64)
    half = np.where(n > 0, np.int64(1) << np.maximum(n - 1, 0), 0)
    return (v + half) >> n


def rescale(value: np.ndarray, multiplier: np.ndarray | int, shift: np.ndarray | int) -> np.ndarray:
    """rshift_round(int64(v)·m, 31 + shift): requantize without zero point or clamp."""
    return rshift_round(np.asarray(value, np.int64) * np.asarray(multiplier, np.int64),
                        31 + np.asarray(shift, np.int64))


def isqrt(n: np.ndarray) -> np.ndarray:
    """floor(√n) for 0 ≤ n < 2^53, exactly (float64 estimate, then corrected)."""
    n = np.asarray(n, np.int64)
    r = np.floor(np.sqrt(n.astype(np.float64))).astype(np.int64)
    for _ in range(2):
        r = np.where(r * r > n, r - 1, r)
        r = np.where((r + 1) * (r + 1) <= n, r + 1, r)
    return r


def bit_length(value: np.ndarray) -> np.ndarray:
    """Python's int.bit_length for 0 ≤ v < 2^63, exactly (no float rounding)."""
    v = np.asarray(value, np.int64).copy()
    length = np.zeros(v.shape, np.int64)
    for bits in (32, 16, 8, 4, 2, 1):
        high = v >> bits
        moved = high > 0
        v = np.where(moved, high, v)
        length += np.where(moved, bits, 0)
    return length + (v > 0)
