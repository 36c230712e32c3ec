"""Weight quantizers: float weights -> (int8-stored integers with the output channel on axis 0, scales).

Every scheme is symmetric (zero point 0), one scale per row, where a row is one output channel
(per channel) or one group of g consecutive values of the flattened reduction axis
K = prod(W.shape[1:]) (per group; scale shape [O, K/g]):

    int8      s = max|w| / 127,  q = clamp(round(w / s), −127, 127)
    int4      s = max|w| / 7,    q = clamp(round(w / s), −7, 7)        (stored in int8; −8 unused,
                                                                        so the grid is symmetric)
    ternary   s = mean|w|,       q = clamp(round(w / s), −1, 1)        (BitNet b1.58 absmean)

A row of zeros gets s = 1 (q = 0): never a zero or infinite scale.

"mse" (int8 / int4): instead of max|w|, the clipping level c·max|w| with c in `MSE_RATIOS`
that minimizes Σ(s·q − w)² per row (c = 1 is a candidate, so it is never worse than minmax).

Group size fallback: when K is not a multiple of g, the largest divisor of K that is <= g and
>= 8 is used; when there is none, or it is K itself, the weight is quantized per channel.

Group scales are rounded to the nearest float16 value (clamped to float16's normal range)
before the integers are computed, so a backend stores them as float16 without changing a
single result: per-group scales are as many as 1/g of the values, and at 4 bytes each they
would cost int4:g64 a tenth of its size.

Storage (`packed_weight_bytes`): int8 1 byte, int4 0.5 byte per value, ternary five values per
byte (3^5 = 243 codes fit a byte: 1.6 bits per value, the arm_cpu blob's compact layout), plus
4 bytes per per-channel float32 scale or 2 bytes per per-group float16 scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgekiln.errors import QuantizationError
from edgekiln.quantization.quant_config import (
    group_size_of,
    parse_precision,
    precision_kind,
)

INT8_QMAX = 127
INT4_QMAX = 7
MIN_GROUP = 8
MSE_RATIOS = tuple(np.linspace(1.0, 0.5, 11))  # 1.0, 0.95, ..., 0.5
_BITS = {"fp32": 32, "int32": 32, "int8": 8, "int4": 4, "w4a16": 4, "ternary": 2}
TERNARY_PER_BYTE = 5  # base-3 digits in a byte: 3^5 = 243 <= 256


@dataclass(frozen=True)
class QuantizedWeightValues:
    """A quantized weight: `q` (int8, the weight's shape), `scale` ([O] or [O, K/g]) and how."""

    q: np.ndarray
    scale: np.ndarray
    precision: str           # as the graph records it: "int8", "int4", "int4:g64", "ternary", "ternary:g32"
    group_size: int | None
    note: str | None = None  # e.g. a group-size fallback, worth telling the user

    def dequantized(self) -> np.ndarray:
        """s · q in float32, the weight's shape (what the QDQ graph computes with)."""
        rows = self.q.reshape(self.q.shape[0], -1).astype(np.float32)
        if self.group_size is None:
            out = rows * self.scale.reshape(-1, 1)
        else:
            grouped = rows.reshape(rows.shape[0], -1, self.group_size)
            out = (grouped * self.scale.reshape(rows.shape[0], -1, 1)).reshape(rows.shape)
        return out.reshape(self.q.shape).astype(np.float32)


def resolve_group_size(k: int, group_size: int) -> tuple[int | None, str | None]:
    """(group size to use, or None for per channel; a note when it is not `group_size`)."""
    if k % group_size == 0 and k != group_size:
        return group_size, None
    if k == group_size:
        return None, f"K = {k} is one group of {group_size}: per channel"
    divisors = [d for d in range(min(group_size, k), MIN_GROUP - 1, -1) if k % d == 0]
    if not divisors or divisors[0] == k:
        return None, f"K = {k} has no divisor in [{MIN_GROUP}, {group_size}] below K: per channel instead of g{group_size}"
    return divisors[0], f"K = {k} is not a multiple of {group_size}: groups of {divisors[0]}"


def _rows(w: np.ndarray, group_size: int | None) -> np.ndarray:
    rows = w.reshape(w.shape[0], -1)
    return rows if group_size is None else rows.reshape(-1, group_size)


FLOAT16_MIN_NORMAL, FLOAT16_MAX = 2.0**-14, 65504.0


def _half_precision(scale: np.ndarray) -> np.ndarray:
    """Scales rounded to float16 values (as float32), within float16's normal range."""
    clamped = np.clip(np.asarray(scale, np.float64), FLOAT16_MIN_NORMAL, FLOAT16_MAX)
    return clamped.astype(np.float16).astype(np.float32)


def _symmetric(rows: np.ndarray, qmax: int, method: str, half_scales: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric quantization with max|w| (or the MSE-best clip of it) mapped to qmax."""
    peak = np.max(np.abs(rows), axis=1).astype(np.float64)
    ratios = MSE_RATIOS if method == "mse" else (1.0,)
    best_scale = best_error = None
    for ratio in ratios:
        scale = np.where(peak > 0, peak * ratio / qmax, 1.0)
        q = np.clip(np.rint(rows / scale[:, None]), -qmax, qmax)
        error = np.sum((q * scale[:, None] - rows) ** 2, axis=1)
        if best_scale is None:
            best_scale, best_error = scale, error
        else:
            better = error < best_error
            best_scale, best_error = np.where(better, scale, best_scale), np.minimum(error, best_error)
    scale = best_scale.astype(np.float32)
    scale[scale == 0] = 1.0  # a float32 underflow of a tiny peak: keep the "never a zero scale" promise
    if half_scales:
        scale = _half_precision(scale)
    q = np.clip(np.rint(rows / scale[:, None].astype(np.float64)), -qmax, qmax).astype(np.int8)
    return q, scale


def quantize_int8(w: np.ndarray, method: str = "minmax") -> tuple[np.ndarray, np.ndarray]:
    """Per output channel int8: (q like `w`, scale [O])."""
    q, scale = _symmetric(_rows(np.asarray(w, np.float64), None), INT8_QMAX, method)
    return q.reshape(np.shape(w)), scale


def quantize_int4(w: np.ndarray, group_size: int | None = None,
                  method: str = "minmax") -> tuple[np.ndarray, np.ndarray]:
    """int4 per group of `group_size` along K (None: per channel): (q like `w`, scale [O, K/g] or [O])."""
    w = np.asarray(w, np.float64)
    q, scale = _symmetric(_rows(w, group_size), INT4_QMAX, method, half_scales=group_size is not None)
    return q.reshape(w.shape), scale if group_size is None else scale.reshape(w.shape[0], -1)


def quantize_ternary(w: np.ndarray, group_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """{-1, 0, 1} with an absmean scale per channel or per group (BitNet b1.58)."""
    w = np.asarray(w, np.float64)
    rows = _rows(w, group_size)
    scale = np.mean(np.abs(rows), axis=1).astype(np.float32)
    scale[scale == 0] = 1.0
    if group_size is not None:
        scale = _half_precision(scale)
    q = np.clip(np.rint(rows / scale[:, None].astype(np.float64)), -1, 1).astype(np.int8)
    return q.reshape(w.shape), scale if group_size is None else scale.reshape(w.shape[0], -1)


def quantize_weight(w: np.ndarray, precision: str, method: str = "minmax",
                    name: str = "weight") -> QuantizedWeightValues:
    """Quantize `w` (output channel on axis 0) as `precision` says ("w4a16:g64" -> int4 groups)."""
    precision = parse_precision(precision, f"precision of {name!r}")
    kind = precision_kind(precision)
    if kind == "fp32":
        raise QuantizationError(f"weight {name!r} has precision fp32: nothing to quantize")
    w = np.asarray(w)
    if not np.all(np.isfinite(w)):
        bad = int(np.size(w) - np.count_nonzero(np.isfinite(w)))
        raise QuantizationError(f"weight {name!r} holds {bad} NaN/Inf value(s); fix the model before quantizing")
    if w.ndim < 1 or w.shape[0] == 0 or w.size == 0:
        raise QuantizationError(f"weight {name!r} of shape {list(w.shape)} has no output channels to quantize")
    if kind == "int8":
        q, scale = quantize_int8(w, method)
        return QuantizedWeightValues(q, scale, "int8", None)
    k = int(w.size // w.shape[0])
    wanted = group_size_of(precision)
    group, note = resolve_group_size(k, wanted) if wanted is not None else (None, None)
    if kind == "ternary":
        q, scale = quantize_ternary(w, group)
        label = "ternary"
    else:  # int4 and the weights of w4a16
        q, scale = quantize_int4(w, group, method)
        label = "int4"
    return QuantizedWeightValues(q, scale, f"{label}:g{group}" if group else label, group, note)


def with_scale_floor(w: np.ndarray, values: QuantizedWeightValues, floor: np.ndarray) -> QuantizedWeightValues:
    """`values` re-quantized so every output channel's largest scale is at least `floor[o]`.

    For a bias that would overflow int32 at scale s_in · s_w[o]: a channel whose weights are
    tiny next to its bias (a nearly dead channel) gets a coarser weight grid instead of a
    clamped, wrong bias.  Channels already above their floor are untouched.
    """
    scale = values.scale.reshape(values.scale.shape[0], -1).astype(np.float32)
    low = scale.max(axis=1) < floor
    if not np.any(low):
        return values
    scale = scale.copy()
    scale[low] = np.maximum(scale[low], np.asarray(floor, np.float32)[low, None])
    qmax = {"int8": INT8_QMAX, "int4": INT4_QMAX, "ternary": 1}[precision_kind(values.precision)]
    rows = np.asarray(w, np.float64).reshape(w.shape[0], scale.shape[1], -1)
    q = np.clip(np.rint(rows / scale[..., None].astype(np.float64)), -qmax, qmax).astype(np.int8)
    note = f"weight scale raised on {int(np.count_nonzero(low))} channel(s) so the int32 bias fits"
    note = f"{values.note}; {note}" if values.note else note
    return QuantizedWeightValues(q.reshape(w.shape), scale.reshape(values.scale.shape), values.precision,
                                 values.group_size, note)


def packed_value_bytes(count: int, precision: str) -> int:
    """Bytes of `count` values at `precision`, packed (the values alone, no scales)."""
    kind = precision_kind(precision)
    if kind not in _BITS:
        raise ValueError(f"unknown precision {precision!r}")
    return -(-count // TERNARY_PER_BYTE) if kind == "ternary" else math.ceil(count * _BITS[kind] / 8)


def packed_weight_bytes(q: np.ndarray, precision: str) -> int:
    """Bytes a backend stores for weight `q` at `precision`: packed values plus scales.

    Per-channel precisions have one float32 scale per output channel (axis 0), grouped ones
    one float16 scale per group; "fp32" is 4 bytes per value and no scales; "int32" (a bias)
    4 bytes per value and no scale: its scale is input scale x weight scale, which a backend
    derives (integer kernels never read it: requantization multipliers carry it).
    """
    size = int(np.size(q))
    value_bytes = packed_value_bytes(size, precision)
    if precision_kind(precision) in ("fp32", "int32"):
        return value_bytes
    group = group_size_of(precision)
    if group:
        return value_bytes + 2 * (size // group)
    return value_bytes + 4 * (q.shape[0] if np.ndim(q) else 1)
