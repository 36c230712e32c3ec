"""Straightforward loop versions of the integer kernels, in Python ints, for the kernel tests.

They follow `compiler/integer_kernels.py` line by line, with no numpy vectorization, stride
tricks or float64 matrix products: a second, independent reading of the specification.
"""

from __future__ import annotations

import math

import numpy as np


def shift_round(v: int, n: int) -> int:
    return (v + (1 << (n - 1))) >> n if n > 0 else v


def requant(acc: int, m: int, sh: int, zp: int, lo: int = -128, hi: int = 127) -> int:
    return min(hi, max(lo, shift_round(int(acc) * int(m), 31 + int(sh)) + zp))


def conv2d(x, w, bias, mult, shift, a, ratio=None):
    n_, _, h, wd = x.shape
    o_, cg, kh, kw = w.shape
    group = a.get("group", 1)
    og = o_ // group
    (sh, sw), (dh, dw) = a["strides"], a["dilations"]
    pt, pl, pb, pr = a["pads"]
    ho = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    gs = a.get("group_size")
    y = np.zeros((n_, o_, ho, wo), np.int8)
    for n in range(n_):
        for o in range(o_):
            g = o // og
            for oy in range(ho):
                for ox in range(wo):
                    parts: dict[int, int] = {}
                    for c in range(cg):
                        for ky in range(kh):
                            for kx in range(kw):
                                iy, ix = oy * sh - pt + ky * dh, ox * sw - pl + kx * dw
                                v = int(x[n, g * cg + c, iy, ix]) - a["input_zero_point"] \
                                    if 0 <= iy < h and 0 <= ix < wd else 0
                                k = (c * kh + ky) * kw + kx
                                j = k // gs if gs else 0
                                parts[j] = parts.get(j, 0) + v * int(w[o, c, ky, kx])
                    frac = a.get("acc_frac_bits", 0)
                    if ratio is None:
                        acc = sum(parts.values())
                    else:
                        acc = shift_round(sum(int(ratio[o, j]) * p for j, p in parts.items()), 16 - frac)
                    y[n, o, oy, ox] = requant(acc + (int(bias[o]) << frac), mult[o], shift[o], a["output_zero_point"],
                                              a["act_min"], a["act_max"])
    return y


def conv_transpose2d(x, w, bias, mult, shift, a, ratio=None):
    n_, c_, h, wd = x.shape
    _, og, kh, kw = w.shape
    group = a.get("group", 1)
    cg = c_ // group
    (sh, sw), (dh, dw) = a["strides"], a["dilations"]
    pt, pl, pb, pr = a["pads"]
    oph, opw = a["output_padding"]
    ho = sh * (h - 1) + oph + dh * (kh - 1) + 1 - pt - pb
    wo = sw * (wd - 1) + opw + dw * (kw - 1) + 1 - pl - pr
    acc = {}
    for n in range(n_):
        for c in range(c_):
            g = c // cg
            for i in range(h):
                for j in range(wd):
                    v = int(x[n, c, i, j]) - a["input_zero_point"]
                    if ratio is not None:
                        v *= int(ratio[c])
                    for oo in range(og):
                        for ky in range(kh):
                            for kx in range(kw):
                                oy, ox = i * sh - pt + ky * dh, j * sw - pl + kx * dw
                                if 0 <= oy < ho and 0 <= ox < wo:
                                    key = (n, g * og + oo, oy, ox)
                                    acc[key] = acc.get(key, 0) + v * int(w[c, oo, ky, kx])
    y = np.zeros((n_, og * group, ho, wo), np.int8)
    for idx in np.ndindex(y.shape):
        total = acc.get(idx, 0)
        frac = a.get("acc_frac_bits", 0)
        if ratio is not None:
            total = shift_round(total, 16 - frac)
        o = idx[1]
        y[idx] = requant(total + (int(bias[o]) << frac), mult[o], shift[o], a["output_zero_point"], a["act_min"], a["act_max"])
    return y


def fully_connected(x, w, bias, mult, shift, a, ratio=None):
    flat = x.reshape(-1, x.shape[-1])
    gs = a.get("group_size")
    y = np.zeros((flat.shape[0], w.shape[0]), np.int8)
    for p in range(flat.shape[0]):
        for o in range(w.shape[0]):
            parts: dict[int, int] = {}
            for k in range(w.shape[1]):
                j = k // gs if gs else 0
                parts[j] = parts.get(j, 0) + (int(flat[p, k]) - a["input_zero_point"]) * int(w[o, k])
            frac = a.get("acc_frac_bits", 0)
            acc = sum(parts.values()) if ratio is None else shift_round(
                sum(int(ratio[o, j]) * v for j, v in parts.items()), 16 - frac)
            y[p, o] = requant(acc + (int(bias[o]) << frac), mult[o], shift[o], a["output_zero_point"], a["act_min"],
                              a["act_max"])
    return y.reshape(*x.shape[:-1], w.shape[0])


def matmul(a_in, b_in, a):
    out_shape = np.broadcast_shapes(a_in.shape[:-2], b_in.shape[:-2]) + (a_in.shape[-2], b_in.shape[-1])
    A = np.broadcast_to(a_in, out_shape[:-2] + a_in.shape[-2:])
    B = np.broadcast_to(b_in, out_shape[:-2] + b_in.shape[-2:])
    y = np.zeros(out_shape, np.int8)
    for idx in np.ndindex(out_shape):
        *batch, i, j = idx
        acc = sum((int(A[(*batch, i, k)]) - a["a_zero_point"]) * (int(B[(*batch, k, j)]) - a["b_zero_point"])
                  for k in range(A.shape[-1]))
        y[idx] = requant(acc, a["multiplier"], a["shift"], a["output_zero_point"], a["act_min"], a["act_max"])
    return y


def add(x_a, x_b, a):
    A, B = np.broadcast_arrays(x_a, x_b)
    y = np.zeros(A.shape, np.int8)
    for idx in np.ndindex(A.shape):
        sa = shift_round(((int(A[idx]) - a["a_zero_point"]) << a["left_shift"]) * a["a_multiplier"], 31 + a["a_shift"])
        sb = shift_round(((int(B[idx]) - a["b_zero_point"]) << a["left_shift"]) * a["b_multiplier"], 31 + a["b_shift"])
        total = sa - sb if a.get("subtract") else sa + sb
        y[idx] = requant(total, a["multiplier"], a["shift"], a["output_zero_point"], a["act_min"], a["act_max"])
    return y


def mul(x_a, x_b, a):
    A, B = np.broadcast_arrays(x_a, x_b)
    y = np.zeros(A.shape, np.int8)
    for idx in np.ndindex(A.shape):
        acc = (int(A[idx]) - a["a_zero_point"]) * (int(B[idx]) - a["b_zero_point"])
        y[idx] = requant(acc, a["multiplier"], a["shift"], a["output_zero_point"], a["act_min"], a["act_max"])
    return y


def average_pool(x, mults, shifts, a):
    n_, c_, h, w = x.shape
    (kh, kw), (sh, sw) = a["kernel_shape"], a["strides"]
    pt, pl, pb, pr = a["pads"]
    ho, wo = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1
    y = np.zeros((n_, c_, ho, wo), np.int8)
    for n, c, oy, ox in np.ndindex(y.shape):
        acc = count = 0
        for ky in range(kh):
            for kx in range(kw):
                iy, ix = oy * sh - pt + ky, ox * sw - pl + kx
                if 0 <= iy < h and 0 <= ix < w:
                    acc += int(x[n, c, iy, ix]) - a["input_zero_point"]
                    count += 1
        if a["count_include_pad"]:
            count = kh * kw
        y[n, c, oy, ox] = requant(acc, mults[count], shifts[count], a["output_zero_point"])
    return y


def max_pool(x, a):
    n_, c_, h, w = x.shape
    (kh, kw), (sh, sw), (dh, dw) = a["kernel_shape"], a["strides"], a["dilations"]
    pt, pl, pb, pr = a["pads"]
    ho, wo = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1, (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((n_, c_, ho, wo), np.int8)
    for n, c, oy, ox in np.ndindex(y.shape):
        values = [int(x[n, c, oy * sh - pt + ky * dh, ox * sw - pl + kx * dw])
                  for ky in range(kh) for kx in range(kw)
                  if 0 <= oy * sh - pt + ky * dh < h and 0 <= ox * sw - pl + kx * dw < w]
        y[n, c, oy, ox] = max(values)
    return y


def softmax(x, table, a):
    rows = x.reshape(-1, x.shape[-1])
    y = np.zeros(rows.shape, np.int8)
    for r in range(rows.shape[0]):
        top = max(int(v) for v in rows[r])
        e = [int(table[top - int(v)]) for v in rows[r]]
        total = sum(e)
        for i, ei in enumerate(e):
            prob = ((ei << 30) + total // 2) // total
            y[r, i] = requant(prob, a["multiplier"], a["shift"], a["output_zero_point"])
    return y.reshape(x.shape)


def layer_norm(x, gamma, beta, a):
    d = gamma.size
    rows = x.reshape(-1, d)
    y = np.zeros(rows.shape, np.int8)
    for r in range(rows.shape[0]):
        q = [int(v) for v in rows[r]]
        total = sum(q)
        c = [d * v - total for v in q]
        w = max(1, sum(v * v for v in c) + a["eps_term"])
        k = (w.bit_length() - 20) // 2
        wn = w >> (2 * k) if k >= 0 else w << (-2 * k)
        inv = math.isqrt((1 << 62) // wn)
        for i in range(d):
            z = shift_round(c[i] * inv, 31 + k - a["frac_bits"])
            u = z * int(gamma[i]) + int(beta[i])
            y[r, i] = min(127, max(-128, shift_round(u, a["out_shift"]) + a["output_zero_point"]))
    return y.reshape(x.shape)
