"""QAveragePool, QGlobalAveragePool, QReduceMean, QMaxPool."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekiln.backends.reference.kernels.conv import windows
from edgekiln.backends.reference.kernels.primitives import requantize
from edgekiln.compiler.program import KernelCall


def _pad(x: np.ndarray, pads: list[int], value: int) -> np.ndarray:
    pt, pl, pb, pr = pads
    return np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=value)


def average_pool(call: KernelCall, args: list[Any]) -> list[np.ndarray]:
    x, multipliers, shifts = args
    a = call.attrs
    kernel, strides, pads = a["kernel_shape"], a["strides"], a["pads"]
    centered = _pad(x.astype(np.int64) - a["input_zero_point"], pads, 0)
    acc = windows(centered, kernel, strides, [1, 1]).sum(axis=(4, 5))
    if a.get("count_include_pad"):
        count = np.full(acc.shape, kernel[0] * kernel[1], np.int64)
    else:
        inside = _pad(np.ones((1, 1, *x.shape[2:]), np.int64), pads, 0)
        count = np.broadcast_to(windows(inside, kernel, strides, [1, 1]).sum(axis=(4, 5)), acc.shape)
    return [requantize(acc, multipliers[count], shifts[count], a["output_zero_point"])]


def _mean(x: np.ndarray, axes: tuple[int, ...], keepdims: bool, call: KernelCall) -> np.ndarray:
    a = call.attrs
    acc = (x.astype(np.int64) - a["input_zero_point"]).sum(axis=axes, keepdims=keepdims)
    return requantize(acc, a["multiplier"], a["shift"], a["output_zero_point"])


def global_average_pool(call: KernelCall, args: list[Any]) -> list[np.ndarray]:
    return [_mean(args[0], tuple(range(2, args[0].ndim)), True, call)]


def reduce_mean(call: KernelCall, args: list[Any]) -> list[np.ndarray]:
    return [_mean(args[0], tuple(call.attrs["axes"]), bool(call.attrs.get("keepdims", 1)), call)]


def max_pool(call: KernelCall, args: list[Any]) -> list[np.ndarray]:
    a = call.attrs
    padded = _pad(args[0].astype(np.int16), a["pads"], -32768)  # below every int8: padding never wins
    view = windows(padded, a["kernel_shape"], a["strides"], a.get("dilations", [1, 1]))
    return [view.max(axis=(4, 5)).astype(np.int8), None]
