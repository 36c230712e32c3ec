"""QAdd, QMul, QRequantize, QLookupTable and the float boundaries Quantize / Dequantize / DequantizeWeight."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekiln.backends.reference.kernels.primitives import requantize, rescale
from edgekiln.compiler.program import KernelCall
from edgekiln.compiler.requantize import dequantize, quantize


def add(call: KernelCall, args: list[Any]) -> list[np.ndarray]:
    x_a, x_b = args
    a = call.attrs
    left = np.int64(1) << a["left_shift"]
    scaled_a = rescale((x_a.astype(np.int64) - a["a_zero_point"]) * left, a["a_multiplier"], a["a_shift"])
    scaled_b = rescale((x_b.astype(np.int64) - a["b_zero_point"]) * left, a["b_multiplier"], a["b_shift"])
    total = scaled_a - scaled_b if a.get("subtract") else scaled_a + scaled_b
    return [requantize(total, a["multiplier"], a["shift"], a["output_zero_point"], a["act_min"], a["act_max"])]


def mul(call: KernelCall, args: list[Any]) -> list[np.ndarray]:
    x_a, x_b = args
    a = call.attrs
    acc = (x_a.astype(np.int64) - a["a_zero_point"]) * (x_b.astype(np.int64) - a["b_zero_point"])
    return [requantize(acc, a["multiplier"], a["shift"], a["output_zero_point"], a["act_min"], a["act_max"])]


def requantize_kernel(call: KernelCall, args: list[Any]) -> list[np.ndarray]:
    a = call.attrs
    return [requantize(args[0].astype(np.int64) - a["input_zero_point"], a["multiplier"], a["shift"],
                       a["output_zero_point"])]


def lookup_table(call: KernelCall, args: list[Any]) -> list[np.ndarray]:
    x, table = args
    return [table[x.astype(np.int16) + 128]]


def quantize_kernel(call: KernelCall, args: list[Any]) -> list[np.ndarray]:
    return [quantize(args[0], call.attrs["scale"], call.attrs["zero_point"])]


def dequantize_kernel(call: KernelCall, args: list[Any]) -> list[np.ndarray]:
    return [dequantize(args[0], call.attrs["scale"], call.attrs["zero_point"])]


def dequantize_weight(call: KernelCall, args: list[Any]) -> list[np.ndarray]:
    w, scale = args
    group = call.attrs.get("group_size")
    rows = w.reshape(w.shape[0], -1).astype(np.float32)
    if group:
        real = (rows.reshape(rows.shape[0], -1, group) * scale.reshape(rows.shape[0], -1, 1)).reshape(rows.shape)
    else:
        real = rows * scale.reshape(-1, 1)
    real = real.reshape(w.shape).astype(np.float32)
    return [np.ascontiguousarray(real.T) if call.attrs.get("transpose") else real]
