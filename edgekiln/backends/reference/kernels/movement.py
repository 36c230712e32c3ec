"""QConcat, QResizeNearest, QResizeBilinear, QPad (the other int8 data movement ops are ONNX ops; see float_ops)."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekiln.backends.reference.kernels.primitives import requantize
from edgekiln.compiler.program import KernelCall


def concat(call: KernelCall, args: list[Any]) -> list[np.ndarray]:
    a = call.attrs
    parts = []
    for x, zero_point, rescale in zip(args, a["input_zero_points"], a["requantize"]):
        if rescale is None:
            parts.append(x)
        else:
            parts.append(requantize(x.astype(np.int64) - zero_point, rescale[0], rescale[1], a["output_zero_point"]))
    return [np.concatenate(parts, axis=a["axis"])]


def resize_nearest(call: KernelCall, args: list[Any]) -> list[np.ndarray]:
    x, index_h, index_w = args
    return [x[:, :, index_h][:, :, :, index_w]]


def resize_bilinear(call: KernelCall, args: list[Any]) -> list[np.ndarray]:
    """integer_kernels.py QResizeBilinear: four 10-bit-weighted taps, round half away from zero."""
    x, taps_h, taps_w = args
    x = x.astype(np.int64)
    th, tw = np.asarray(taps_h, np.int64), np.asarray(taps_w, np.int64)
    fh, fw = th[:, 2][:, None], tw[:, 2][None, :]
    rows0, rows1 = x[:, :, th[:, 0]], x[:, :, th[:, 1]]
    acc = ((rows0[..., tw[:, 0]] * (1024 - fw) + rows0[..., tw[:, 1]] * fw) * (1024 - fh)
           + (rows1[..., tw[:, 0]] * (1024 - fw) + rows1[..., tw[:, 1]] * fw) * fh)
    return [(np.sign(acc) * ((np.abs(acc) + (1 << 19)) >> 20)).astype(np.int8)]


def pad(call: KernelCall, args: list[Any]) -> list[np.ndarray]:
    x = args[0]
    a = call.attrs
    pads = a["pads"]
    rank = x.ndim
    begin, end = pads[:rank], pads[rank:]
    # Negative pads crop (ONNX); crop first, then pad the rest.
    x = x[tuple(slice(max(-b, 0), x.shape[i] - max(-e, 0)) for i, (b, e) in enumerate(zip(begin, end)))]
    widths = [(max(b, 0), max(e, 0)) for b, e in zip(begin, end)]
    mode = a.get("mode", "constant")
    if mode == "constant":
        return [np.pad(x, widths, constant_values=a["pad_value"])]
    return [np.pad(x, widths, mode={"reflect": "reflect", "edge": "edge", "wrap": "wrap"}[mode])]
