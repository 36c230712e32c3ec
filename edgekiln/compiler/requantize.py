"""The integer semantics of edgekiln, written down once.  Every backend implements exactly this.

Quantization (affine, int8 storage):

    real = scale · (q − zero_point)
    activations: per tensor, asymmetric, q ∈ [−128, 127], zero_point ∈ [−128, 127], and
                 0.0 is exactly representable (q = zero_point)
    weights:     symmetric (zero_point 0): int8 per output channel q ∈ [−127, 127];
                 int4 per group of the reduction axis q ∈ [−8, 7] (stored unpacked in int8
                 in the graph, packed two per byte by a backend); ternary q ∈ {−1, 0, 1}
    bias:        int32, scale = input_scale · weight_scale (per output channel), zero 0

Requantization: an int32 accumulator `acc` at scale s_acc becomes an int8 at scale s_out
through the real multiplier M = s_acc / s_out, represented as a Q31 fixed-point multiplier
m ∈ [2³⁰, 2³¹) and a right shift n (M ≈ m · 2^−(31 + shift)):

    product = int64(acc) · m                                   (exact in int64)
    total   = 31 + shift                                       (shift may be negative)
    rounded = (product + 2^(total − 1)) >> total               (>> is arithmetic: floor;
                                                                so ties round toward +∞)
    q       = clamp(rounded + zero_point_out, q_min, q_max)

One rule, one rounding: round half up (toward +∞), computed in 64-bit integers, so C,
OpenCL, HLS C++ and numpy agree bit for bit.  A fused Relu / Relu6 / Clip is the clamp
bounds (q_min = max(−128, Q(low)), q_max = min(127, Q(high))); any other activation is a
separate int8 -> int8 lookup table, never evaluated in float on the device.

`total` is kept within [1, 62]: a multiplier M below 2^−31 (a dead channel) becomes m = 0.
"""

from __future__ import annotations

import math

import numpy as np

INT8_MIN, INT8_MAX = -128, 127
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
Q31 = 1 << 31
MAX_TOTAL_SHIFT = 62


def quantize_multiplier(real_multiplier: float) -> tuple[int, int]:
    """M -> (m, shift) with M ≈ m · 2^−(31 + shift), m ∈ [2³⁰, 2³¹) (or (0, 0) for M == 0).

    M must be non-negative and finite.  M in [0.5, 1) has shift 0; larger M a negative shift.
    """
    if not math.isfinite(real_multiplier) or real_multiplier < 0:
        raise ValueError(f"requantization multiplier must be finite and >= 0, got {real_multiplier}")
    if real_multiplier == 0.0:
        return 0, 0
    mantissa, exponent = math.frexp(real_multiplier)  # M = mantissa · 2^exponent, mantissa ∈ [0.5, 1)
    m = round(mantissa * Q31)
    if m == Q31:  # rounding reached 1.0: renormalize
        m //= 2
        exponent += 1
    shift = -exponent
    if 31 + shift > MAX_TOTAL_SHIFT:  # too small to matter: the channel outputs its zero point
        return 0, 0
    if 31 + shift < 1:
        raise ValueError(f"requantization multiplier {real_multiplier} is too large (>= 2^30)")
    return int(m), int(shift)


def quantize_multipliers(real_multipliers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel `quantize_multiplier`: int32 multipliers and int32 shifts."""
    pairs = [quantize_multiplier(float(v)) for v in np.asarray(real_multipliers, np.float64).reshape(-1)]
    return (np.array([p[0] for p in pairs], np.int32).reshape(np.shape(real_multipliers)),
            np.array([p[1] for p in pairs], np.int32).reshape(np.shape(real_multipliers)))


def requantize(acc: np.ndarray, multiplier: np.ndarray | int, shift: np.ndarray | int, zero_point: int,
               q_min: int = INT8_MIN, q_max: int = INT8_MAX) -> np.ndarray:
    """The rule in the module docstring, vectorized; `multiplier`/`shift` broadcast against `acc`."""
    acc64 = np.asarray(acc, np.int64)
    total = 31 + np.asarray(shift, np.int64)
    product = acc64 * np.asarray(multiplier, np.int64)
    rounded = (product + (np.int64(1) << (total - 1))) >> total
    return np.clip(rounded + zero_point, q_min, q_max).astype(np.int8)


def activation_params(low: float, high: float, bits: int = 8) -> tuple[float, int]:
    """(scale, zero_point) for an asymmetric range; the range is widened to contain 0.

    A degenerate range (all zeros, or low == high == 0) gets scale 1.0 rather than an
    infinite or zero scale: every value then quantizes to the zero point exactly.
    """
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"activation range [{low}, {high}] is not finite")
    q_min, q_max = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    low, high = min(low, 0.0), max(high, 0.0)
    if high - low <= 0.0:
        return 1.0, 0
    scale = (high - low) / (q_max - q_min)
    zero_point = int(np.clip(round(q_min - low / scale), q_min, q_max))
    return float(np.float32(scale)), zero_point


def quantize(real: np.ndarray, scale: float | np.ndarray, zero_point: int | np.ndarray,
             q_min: int = INT8_MIN, q_max: int = INT8_MAX) -> np.ndarray:
    """real -> int8 the way ONNX QuantizeLinear does it (round half to even, then saturate)."""
    scaled = np.asarray(real, np.float32) / np.asarray(scale, np.float32)
    return np.clip(np.rint(scaled) + np.asarray(zero_point), q_min, q_max).astype(np.int8)


def dequantize(q: np.ndarray, scale: float | np.ndarray, zero_point: int | np.ndarray) -> np.ndarray:
    """int -> real the way ONNX DequantizeLinear does it."""
    return ((np.asarray(q, np.int32) - np.asarray(zero_point, np.int32)) * np.asarray(scale, np.float32)).astype(
        np.float32)
