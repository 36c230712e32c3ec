"""QSoftmax and QLayerNorm in fixed point, as `compiler/integer_kernels.py` defines them."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekiln.backends.reference.kernels.primitives import bit_length, isqrt, requantize, rshift_round
from edgekiln.compiler import integer_kernels as ik
from edgekiln.compiler.program import KernelCall


def softmax(call: KernelCall, args: list[Any]) -> list[np.ndarray]:
    x, table = args
    a = call.attrs
    q = x.astype(np.int64)
    e = table.astype(np.int64)[q.max(axis=-1, keepdims=True) - q]
    total = e.sum(axis=-1, keepdims=True)
    r = ((e << ik.SOFTMAX_PROB_BITS) + total // 2) // total
    return [requantize(r, a["multiplier"], a["shift"], a["output_zero_point"])]


def rsqrt_fixed(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(inv, k) with 1/√W ≈ inv·2^−(31 + k): W normalized to Wn ∈ [2^19, 2^21), inv = isqrt(2^62 // Wn)."""
    k = (bit_length(w) - ik.LAYERNORM_WN_BITS) // 2  # floor division, also for negative values
    down = w >> np.maximum(2 * k, 0)
    up = w << np.maximum(-2 * k, 0)
    wn = np.where(k >= 0, down, up)
    return isqrt((np.int64(1) << 62) // wn), k


def layer_norm(call: KernelCall, args: list[Any]) -> list[np.ndarray]:
    x, gamma, beta = args
    a = call.attrs
    d = gamma.size
    q = x.astype(np.int64).reshape(-1, d)
    c = d * q - q.sum(axis=1, keepdims=True)
    w = np.maximum((c * c).sum(axis=1, keepdims=True) + a["eps_term"], 1)
    inv, k = rsqrt_fixed(w)
    z = rshift_round(c * inv, 31 + k - a["frac_bits"])
    u = z * gamma.astype(np.int64).reshape(1, d) + beta.astype(np.int64).reshape(1, d)
    y = np.clip(rshift_round(u, a["out_shift"]) + a["output_zero_point"], -128, 127).astype(np.int8)
    return [y.reshape(x.shape)]
