"""Constant int4 / ternary GEMM weights packed into the layout the runtime's GEMM kernels read.

The compiler does this once, so the runtime never repacks: every low-bit GEMM micro-kernel
(runtime_arm/src/gemm/gemm_lowbit_*.c: portable C, NEON, dotprod, i8mm, AVX2) reads a
weight matrix [rows, K] (rows = dim 0, K = the product of the other dims) as

    each row: ceil(K / per_block) blocks of 16 bytes, per_block = 128 / bits;
    int4    (bits 4, 32 per block): byte i = w[32b + i] & 0xF | (w[32b + 16 + i] & 0xF) << 4
    ternary (bits 2, 64 per block): byte i = OR over s < 4 of (w[64b + 16s + i] & 3) << 2s

two's complement fields, zeros past K (`runtime_arm/include/ek_gemm.h`, "Low-bit weights").
One 16-byte load and one or two shifts give 16 int8 lanes on every ISA (NEON shl + sshr,
AVX2 on the sign-extended int16 lanes), so the same bytes serve every path the runtime may
pick at run time (`--isa`); no path needs a layout of its own, and nothing is expanded to int8
in memory.  The blob marks such tensors with `EK_PACK_INT4_K32` / `EK_PACK_INT2_K64`.  This is
`--weight-layout fast` (the default); `compact` trades the block padding away: int4 GEMM weights
stay flat (`program.pack_low_bit`) and ternary tensors go base-3 (`ternary_base3.py`), and the
runtime unpacks a block of rows into scratch per task and runs the int8 GEMM.

int8 GEMM weights are read as plain rows by the NEON, dotprod, AVX2 and portable kernels; the
i8mm kernel's smmla operand is two rows' 8-byte slices side by side, so for targets with i8mm
(the target toml's `features`) the weights of calls that multiply more than one row are
stored pre-paired (`EK_PACK_I8_PAIRS8`): rows (2q, 2q+1), per 8 bytes of K one 16-byte chunk
[row 2q | row 2q+1], which saves the kernel's 64-bit zips of B.  If the same artifact runs on
another path (`--isa dotprod`), the runtime unpacks such weights per block into scratch.
"""

from __future__ import annotations

import numpy as np

from edgekiln.backends.arm_cpu import op_codes

BLOCK_BYTES = 16  # EK_LOWBIT_BLOCK_BYTES in runtime_arm/include/ek_gemm.h
PACKING_CODES = {4: op_codes.PACK["INT4_K32"], 2: op_codes.PACK["INT2_K64"]}
PAIR_CHUNK = 8  # int8 pre-paired for smmla: K bytes per row in one 16-byte chunk


def weights_per_block(bits: int) -> int:
    return 8 * BLOCK_BYTES // bits


def row_bytes(bits: int, k: int) -> int:
    """Bytes of one packed row of `k` weights."""
    per = weights_per_block(bits)
    return -(-k // per) * BLOCK_BYTES


def pack_gemm_rows(values: np.ndarray, bits: int) -> bytes:
    """int8 weights [rows, ...] in [-2^(bits-1), 2^(bits-1)) -> the K-blocked bytes above."""
    if bits not in PACKING_CODES:
        raise ValueError(f"GEMM weight packing exists for 4 and 2 bits, not {bits}")
    array = np.asarray(values, np.int8)
    rows = array.shape[0] if array.ndim else 1
    matrix = array.reshape(rows, -1)
    low = -(1 << (bits - 1))
    if matrix.size and (matrix.min() < low or matrix.max() > -low - 1):
        raise ValueError(f"values outside the {bits}-bit range [{low}, {-low - 1}]")
    per, k = weights_per_block(bits), matrix.shape[1]
    blocks = -(-k // per)
    padded = np.zeros((rows, blocks * per), np.uint8)
    padded[:, :k] = matrix.astype(np.uint8) & ((1 << bits) - 1)
    fields = padded.reshape(rows, blocks, per // BLOCK_BYTES, BLOCK_BYTES)  # [row, block, field, byte]
    shifts = (np.arange(per // BLOCK_BYTES, dtype=np.uint8) * bits)[None, None, :, None]
    return np.bitwise_or.reduce(fields << shifts, axis=2).astype(np.uint8).tobytes()


def unpack_gemm_rows(data: bytes, bits: int, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of `pack_gemm_rows` (for tests and inspection)."""
    rows = shape[0] if shape else 1
    k = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
    per = weights_per_block(bits)
    packed = np.frombuffer(data, np.uint8).reshape(rows, -1, 1, BLOCK_BYTES)
    shifts = (np.arange(per // BLOCK_BYTES, dtype=np.uint8) * bits)[None, None, :, None]
    codes = ((packed >> shifts) & ((1 << bits) - 1)).reshape(rows, -1)[:, :k].astype(np.int16)
    return np.where(codes >= 1 << (bits - 1), codes - (1 << bits), codes).astype(np.int8).reshape(shape)


def pack_i8_pairs(values: np.ndarray) -> bytes:
    """int8 weights [rows, ...] -> pre-paired for smmla: rows in pairs (2q, 2q+1), each pair
    ceil(K / 8) chunks of 16 bytes (row 2q's 8 weights, then row 2q+1's), zeros past K and for
    the partner of an odd last row."""
    array = np.asarray(values, np.int8)
    rows = array.shape[0] if array.ndim else 1
    matrix = array.reshape(rows, -1)
    k = matrix.shape[1]
    chunks = -(-k // PAIR_CHUNK)
    padded = np.zeros((rows + rows % 2, chunks * PAIR_CHUNK), np.int8)
    padded[:rows, :k] = matrix
    # [pair, row in pair, chunk, byte] -> [pair, chunk, row in pair, byte]
    paired = padded.reshape(-1, 2, chunks, PAIR_CHUNK).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(paired).tobytes()


def unpack_i8_pairs(data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of `pack_i8_pairs`."""
    rows = shape[0] if shape else 1
    k = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
    chunks = -(-k // PAIR_CHUNK)
    paired = np.frombuffer(data, np.int8).reshape(-1, chunks, 2, PAIR_CHUNK).transpose(0, 2, 1, 3)
    return paired.reshape(-1, chunks * PAIR_CHUNK)[:rows, :k].reshape(shape)


__all__ = ["BLOCK_BYTES", "PACKING_CODES", "PAIR_CHUNK", "pack_gemm_rows", "pack_i8_pairs", "row_bytes",
           "unpack_gemm_rows", "unpack_i8_pairs", "weights_per_block"]
