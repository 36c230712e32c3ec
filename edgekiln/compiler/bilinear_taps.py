"""The tap tables of QResizeBilinear: for each output position along one axis, (i0, i1, f).

Bilinear resize is separable.  Along one axis of input size `in` and output size `out`,
output position i reads input positions i0 and i1 with the weights (1024 − f) and f, where
the source coordinate is held in fixed point with 10 fraction bits (as TFLite's integer
kernel, reference_ops::ResizeBilinearInteger, holds it):

    src(i) = clamp(round_half_up(1024 · x_orig(i)), 0, 1024 · (in − 1))
    i0 = src // 1024,   f = src − 1024 · i0,   i1 = min(i0 + 1, in − 1)   (f = 0 when i0 = in − 1)

with x_orig the ONNX Resize coordinate transformation, in float64 (ratio = 1 / scale, where
scale is the `scales` entry, or out / in when `sizes` were given):

    half_pixel          x_orig = (i + 0.5) · ratio − 0.5
    pytorch_half_pixel  the same when out > 1, else 0
    align_corners       x_orig = i · (in − 1) / (out − 1)   (0 when out = 1)
    asymmetric          x_orig = i · ratio

Clamping x_orig to [0, in − 1] is what onnxruntime does at the borders, so each output differs
from the exact interpolation by at most 2 · 255 · 2^−11 < 0.25 LSB before rounding.

TFLite computes its coordinate from a rounded step instead, step = round(1024 · in / out)
(or (in − 1) / (out − 1) with align_corners), src(i) = i · step (+ step // 2 − 512 with
half_pixel_centers).  `tflite_taps` spells that out, so a writer can check that a TFLite
RESIZE_BILINEAR reads the same coordinates: identical for ratios whose step is an integer
(2x, 4x, 1/2 ...), and otherwise within `max_coordinate_difference` 1/1024-units.
"""

from __future__ import annotations

import numpy as np

FRAC_BITS = 10
ONE = 1 << FRAC_BITS
MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric")


def _from_source(src: np.ndarray, in_size: int) -> np.ndarray:
    """(i0, i1, f) rows from fixed-point source coordinates (already clamped to the input)."""
    i0 = src // ONE
    f = src - i0 * ONE
    i1 = np.minimum(i0 + 1, in_size - 1)
    f = np.where(i1 == i0, 0, f)
    return np.stack([i0, i1, f], axis=1).astype(np.int32)


def source_coordinates(in_size: int, out_size: int, mode: str, scale: float | None = None) -> np.ndarray:
    """The fixed-point source coordinate of every output position (int64, clamped to the input)."""
    if mode not in MODES:
        raise ValueError(f"coordinate_transformation_mode {mode!r} is not one of {MODES}")
    i = np.arange(out_size, dtype=np.float64)
    ratio = in_size / out_size if scale is None else 1.0 / float(scale)
    if mode == "align_corners":
        x = i * ((in_size - 1) / (out_size - 1)) if out_size > 1 else np.zeros(out_size)
    elif mode == "asymmetric":
        x = i * ratio
    elif mode == "pytorch_half_pixel" and out_size == 1:
        x = np.zeros(out_size)
    else:
        x = (i + 0.5) * ratio - 0.5
    src = np.floor(np.clip(x, 0.0, in_size - 1) * ONE + 0.5).astype(np.int64)
    return np.minimum(src, (in_size - 1) * ONE)


def onnx_taps(in_size: int, out_size: int, mode: str, scale: float | None = None) -> np.ndarray:
    """int32 [out, 3]: (i0, i1, f) per output position, from the ONNX coordinate transformation."""
    return _from_source(source_coordinates(in_size, out_size, mode, scale), in_size)


def tflite_source_coordinates(in_size: int, out_size: int, align_corners: bool, half_pixel: bool) -> np.ndarray:
    """TFLite's integer source coordinates (ResizeBilinearInteger), clamped as its reads are."""
    if align_corners and out_size > 1:
        step = (ONE * (in_size - 1) + (out_size - 1) // 2) // (out_size - 1)
    else:
        step = (ONE * in_size + out_size // 2) // out_size
    src = np.arange(out_size, dtype=np.int64) * step
    if half_pixel:
        src = src + step // 2 - ONE // 2
    return np.clip(src, 0, (in_size - 1) * ONE)


def tflite_taps(in_size: int, out_size: int, align_corners: bool, half_pixel: bool) -> np.ndarray:
    """int32 [out, 3] as TFLite reads them.  (Its i0 = max(trunc(src / 1024), 0) and i1 =
    min(ceil(src / 1024), in − 1) give the same sum: where i0 = i1 the two weights add to 1024.)"""
    return _from_source(tflite_source_coordinates(in_size, out_size, align_corners, half_pixel), in_size)


def coordinates_of(taps: np.ndarray) -> np.ndarray:
    """The fixed-point source coordinate each (i0, i1, f) row reads: 1024 · i0 + f."""
    taps = np.asarray(taps, np.int64).reshape(-1, 3)
    return taps[:, 0] * ONE + taps[:, 2]


def max_coordinate_difference(taps: np.ndarray, other: np.ndarray) -> int:
    """The largest distance, in 1/1024 of a pixel, between the coordinates two tables read.
    Bilinear interpolation moves by at most 255 LSB per pixel of coordinate, so a distance of d
    changes an output by at most d · 255 / 1024 LSB per axis before rounding."""
    a, b = coordinates_of(taps), coordinates_of(other)
    if a.shape != b.shape:
        raise ValueError(f"tables of {a.size} and {b.size} output positions")
    return int(np.abs(a - b).max()) if a.size else 0


# (align_corners, half_pixel_centers) of TFLite's RESIZE_BILINEAR, the lowest op version first.
TFLITE_FLAGS = ((False, False), (True, False), (False, True))
# How far (in 1/1024 of a pixel) a TFLite op may read from a table and still count as reading it:
# each output then moves by at most 2 · 255 / 1024 < 1 LSB before rounding.
TFLITE_TOLERANCE = 1


def closest_tflite_taps(h: int, w: int, taps_h: np.ndarray, taps_w: np.ndarray
                        ) -> tuple[tuple[bool, bool], int, np.ndarray, np.ndarray]:
    """The TFLite flags whose coordinates lie closest to the two tables (the largest distance over
    both axes, in 1/1024 of a pixel; ties go to the lower op version), that distance, and
    TFLite's own tables for those flags."""
    best = None
    for flags in TFLITE_FLAGS:
        tflite_h = tflite_taps(h, len(taps_h), *flags)
        tflite_w = tflite_taps(w, len(taps_w), *flags)
        distance = max(max_coordinate_difference(taps_h, tflite_h), max_coordinate_difference(taps_w, tflite_w))
        if best is None or distance < best[1]:
            best = (flags, distance, tflite_h, tflite_w)
    assert best is not None
    return best
