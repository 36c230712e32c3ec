"""The two sparse weight formats of the arm_cpu runtime's sparse kernels, built from a dense
[O, K] weight matrix (row o = output channel o, K = input channels of a 1x1 conv / FC).

    block B   (XNNPACK's sparse 1x1 layout): output channels in block rows of B (the last row
              padded with zeros); block (r, k) is stored when any of W[r·B : r·B + B, k] is
              non-zero.  row_ptr int32 [rows + 1] (CSR), index = k (uint16 stored as int16),
              values [nnz, B].  Work per pixel: B multiply-adds per stored block.
    N:M       every group of M consecutive input channels of a row holds at most N non-zeros:
              values [O, K/M, N] and the in-group position of each, 2 bits, four per byte,
              lowest bits first.  A group with fewer than N non-zeros stores zeros.

Positions are kept increasing within a row, so a float kernel adds its products in the same
order as the dense one.  `runtime_arm/src/sparse/ek_sparse.h` reads exactly these arrays.
"""

from __future__ import annotations

import numpy as np

BLOCK_SIZES = (1, 2, 4, 8)
N_M_PATTERNS = ((1, 4), (2, 4))
MAX_K = 32768  # the runtime's int32 sums stay exact up to here


def _padded_blocks(w: np.ndarray, block: int) -> np.ndarray:
    o, k = w.shape
    rows = -(-o // block)
    padded = np.zeros((rows * block, k), w.dtype)
    padded[:o] = w
    return padded.reshape(rows, block, k)


def stored_blocks(w: np.ndarray, block: int) -> int:
    """How many B x 1 blocks the block format stores for `w` [O, K]."""
    return int(np.count_nonzero((_padded_blocks(w, block) != 0).any(axis=1)))


def fits_n_m(w: np.ndarray, n: int, m: int) -> bool:
    o, k = w.shape
    return k % m == 0 and bool((np.count_nonzero(w.reshape(o, k // m, m), axis=2) <= n).all())


def block_layout(w: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values [nnz·B], index int16 [nnz], row_ptr int32 [rows + 1]) of `w` [O, K]."""
    blocks = _padded_blocks(w, block)
    present = (blocks != 0).any(axis=1)  # [rows, K]
    rows, ks = np.nonzero(present)  # row-major: by row, then increasing k
    row_ptr = np.concatenate([[0], np.cumsum(present.sum(axis=1))]).astype(np.int32)
    values = blocks[rows, :, ks].reshape(-1).astype(w.dtype)
    return np.ascontiguousarray(values), ks.astype(np.uint16).view(np.int16), row_ptr


def n_m_layout(w: np.ndarray, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(values [O·K/M·N], packed 2-bit positions uint8) of `w` [O, K] that fits N:M."""
    if m > 4 or not fits_n_m(w, n, m):
        raise ValueError(f"the weight does not fit {n}:{m} (or M > 4)")
    o, k = w.shape
    groups = w.reshape(o, k // m, m)
    # Non-zeros first (stable: in position order), then zeros to fill a group up to N.
    order = np.argsort(groups == 0, axis=2, kind="stable")[:, :, :n]
    positions = np.sort(order, axis=2)
    values = np.take_along_axis(groups, positions, axis=2).reshape(-1)
    flat = positions.reshape(-1).astype(np.uint8)
    flat = np.concatenate([flat, np.zeros(-len(flat) % 4, np.uint8)]).reshape(-1, 4)
    meta = flat[:, 0] | flat[:, 1] << 2 | flat[:, 2] << 4 | flat[:, 3] << 6
    return np.ascontiguousarray(values.astype(w.dtype)), meta.astype(np.uint8)
