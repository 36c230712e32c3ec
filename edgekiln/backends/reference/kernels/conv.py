"""QConv2D, QDepthwiseConv2D, QConvTranspose2D, QFullyConnected, QMatMul.

Products are summed in float64 matrix products: every term and partial sum is an integer
below 2^53, so BLAS gives the exact int32 accumulator the spec defines, at BLAS speed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from edgekiln.backends.reference.kernels.primitives import requantize, rshift_round
from edgekiln.compiler import integer_kernels as ik
from edgekiln.compiler.program import KernelCall


def _centered_padded(x: np.ndarray, zero_point: int, pads: list[int]) -> np.ndarray:
    """x − zp as int32, zero-padded ([top, left, bottom, right]): padding contributes 0."""
    pt, pl, pb, pr = pads
    return np.pad(x.astype(np.int32) - zero_point, ((0, 0), (0, 0), (pt, pb), (pl, pr)))


def windows(x: np.ndarray, kernel: list[int], strides: list[int], dilations: list[int]) -> np.ndarray:
    """A read-only [N, C, Ho, Wo, kh, kw] view of the windows of a padded [N, C, H, W] array."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilations
    ho, wo = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
    s = x.strides
    return as_strided(x, (n, c, ho, wo, kh, kw), (s[0], s[1], s[2] * sh, s[3] * sw, s[2] * dh, s[3] * dw),
                      writeable=False)


def _grouped_products(cols: np.ndarray, w: np.ndarray, ratio: np.ndarray | None,
                      group_size: int | None, frac: int = 0) -> np.ndarray:
    """Σ_k cols[p, k]·w[o, k] as int64 [P, O], per channel or through the Q16 group ratios
    (then with `frac` fraction bits kept)."""
    if ratio is None:
        return np.rint(cols @ w.T).astype(np.int64)
    wide = np.zeros((cols.shape[0], w.shape[0]), np.int64)
    for j in range(w.shape[1] // group_size):
        part = slice(j * group_size, (j + 1) * group_size)
        wide += np.rint(cols[:, part] @ w[:, part].T).astype(np.int64) * ratio[:, j].astype(np.int64)
    return rshift_round(wide, ik.RATIO_BITS - frac)


def _weight_operands(args: list[Any]) -> list[Any]:
    """x, w, bias, multiplier (or a float output's output_scale), shift, ratio: absent ones None."""
    return [*args[:6], *[None] * (6 - len(args[:6]))]


def _finish(acc: np.ndarray, call: KernelCall, bias: np.ndarray, multiplier: np.ndarray,
            shift: np.ndarray | None, channel_axis: int) -> np.ndarray:
    shape = [1] * acc.ndim
    shape[channel_axis] = -1
    a = call.attrs
    acc = acc + (bias.astype(np.int64) << a.get("acc_frac_bits", 0)).reshape(shape)
    if a.get("float_output"):  # `multiplier` is the float32 output_scale: one float32 multiply
        return acc.astype(np.float32) * multiplier.astype(np.float32).reshape(shape)
    return requantize(acc, multiplier.reshape(shape), shift.reshape(shape), a["output_zero_point"],
                      a["act_min"], a["act_max"])


def conv2d(call: KernelCall, args: list[Any]) -> list[np.ndarray]:
    x, w, bias, multiplier, shift, ratio = _weight_operands(args)
    a = call.attrs
    o, cg, kh, kw = w.shape
    group = a.get("group", 1)
    xp = _centered_padded(x, a["input_zero_point"], a["pads"])
    view = windows(xp, [kh, kw], a["strides"], a["dilations"])
    n, _, ho, wo = view.shape[:4]
    og = o // group
    acc = np.empty((n, ho, wo, o), np.int64)
    for g in range(group):
        cols = view[:, g * cg:(g + 1) * cg].transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, cg * kh * kw)
        rows = slice(g * og, (g + 1) * og)
        wg = w[rows].reshape(og, -1).astype(np.float64)
        acc[..., rows] = _grouped_products(cols.astype(np.float64), wg, None if ratio is None else ratio[rows],
                                           a.get("group_size"), a.get("acc_frac_bits", 0)).reshape(n, ho, wo, og)
    return [_finish(acc.transpose(0, 3, 1, 2), call, bias, multiplier, shift, 1)]


def depthwise_conv2d(call: KernelCall, args: list[Any]) -> list[np.ndarray]:
    if len(args) > 5 and args[5] is not None:  # per-group weights: the general path handles the ratios
        return conv2d(call, args)
    x, w, bias, multiplier, shift, _ = _weight_operands(args)
    a = call.attrs
    c, _, kh, kw = w.shape
    view = windows(_centered_padded(x, a["input_zero_point"], a["pads"]), [kh, kw], a["strides"], a["dilations"])
    acc = np.zeros(view.shape[:4], np.int64)
    for ky in range(kh):
        for kx in range(kw):
            acc += view[..., ky, kx] * w[:, 0, ky, kx].astype(np.int64).reshape(1, c, 1, 1)
    return [_finish(acc, call, bias, multiplier, shift, 1)]


def conv_transpose2d(call: KernelCall, args: list[Any]) -> list[np.ndarray]:
    x, w, bias, multiplier, shift, ratio = _weight_operands(args)
    a = call.attrs
    n, c, h, wd = x.shape
    _, og, kh, kw = w.shape
    group = a.get("group", 1)
    (sh, sw), (dh, dw) = a["strides"], a["dilations"]
    pt, pl, pb, pr = a["pads"]
    oph, opw = a.get("output_padding", [0, 0])
    xc = x.astype(np.int64) - a["input_zero_point"]
    if ratio is not None:
        xc = xc * ratio.astype(np.int64).reshape(1, c, 1, 1)
    xc = xc.astype(np.float64)
    full_h, full_w = (h - 1) * sh + dh * (kh - 1) + 1 + oph, (wd - 1) * sw + dw * (kw - 1) + 1 + opw
    full = np.zeros((n, og * group, full_h, full_w), np.float64)
    cg = c // group
    for g in range(group):
        xg = xc[:, g * cg:(g + 1) * cg]
        for ky in range(kh):
            for kx in range(kw):
                part = np.einsum("nchw,co->nohw", xg, w[g * cg:(g + 1) * cg, :, ky, kx].astype(np.float64))
                full[:, g * og:(g + 1) * og, ky * dh:ky * dh + (h - 1) * sh + 1:sh,
                     kx * dw:kx * dw + (wd - 1) * sw + 1:sw] += part
    acc = np.rint(full[:, :, pt:full_h - pb, pl:full_w - pr]).astype(np.int64)
    if ratio is not None:
        acc = rshift_round(acc, ik.RATIO_BITS - a.get("acc_frac_bits", 0))
    return [_finish(acc, call, bias, multiplier, shift, 1)]


def fully_connected(call: KernelCall, args: list[Any]) -> list[np.ndarray]:
    x, w, bias, multiplier, shift, ratio = _weight_operands(args)
    a = call.attrs
    cols = (x.astype(np.float64) - a["input_zero_point"]).reshape(-1, x.shape[-1])
    acc = _grouped_products(cols, w.astype(np.float64), ratio, a.get("group_size"), a.get("acc_frac_bits", 0))
    return [_finish(acc.reshape(*x.shape[:-1], w.shape[0]), call, bias, multiplier, shift, -1)]


def matmul(call: KernelCall, args: list[Any]) -> list[np.ndarray]:
    a_in, b_in = args
    a = call.attrs
    acc = np.rint(np.matmul(a_in.astype(np.float64) - a["a_zero_point"],
                            b_in.astype(np.float64) - a["b_zero_point"])).astype(np.int64)
    return [requantize(acc, a["multiplier"], a["shift"], a["output_zero_point"], a["act_min"], a["act_max"])]
