"""Ternary weights stored base-3: five values per byte (`EK_PACK_INT2_B3`, the compact layout).

A ternary value w in {-1, 0, +1} is the base-3 digit w + 1 in {0, 1, 2}.  Five digits fit in
one byte because 3^5 = 243 <= 256 (1.6 bits per value, the "1.58-bit" of BitNet b1.58; llama.cpp's
TQ1_0 packs the same way).  Over the tensor's flat (row-major) index:

    byte b = sum_{i < 5} (w[5b + i] + 1) * 3^i        (so byte b <= 242)
    w[5b + i] = (byte b // 3^i) mod 3 - 1
    nbytes = ceil(n / 5); positions past the end count as value 0 (digit 1)

Compared with the 2-bit flat packing (`EK_PACK_INT2`, four values per byte) this stores 20 %
fewer bytes; the runtime decodes it with a 243-row digit table
(`runtime_arm/src/ternary_base3.c`), so any range of values can be read without touching the
bytes before it.  Bytes 243..255 mean nothing; the loader rejects them.
"""

from __future__ import annotations

import numpy as np

PER_BYTE = 5
MAX_BYTE = 3**PER_BYTE - 1  # 242
_POWERS = 3 ** np.arange(PER_BYTE, dtype=np.int64)


def packed_bytes(count: int) -> int:
    """Bytes of `count` base-3 packed ternary values."""
    return -(-count // PER_BYTE)


def is_ternary(values: np.ndarray) -> bool:
    """Whether every value is in {-1, 0, +1} (a 2-bit tensor may in principle hold -2)."""
    flat = np.asarray(values).reshape(-1)
    return bool(flat.size == 0 or (flat.min() >= -1 and flat.max() <= 1))


def pack_base3(values: np.ndarray) -> bytes:
    """int8 values in {-1, 0, +1} (any shape, read flat) -> ceil(n / 5) bytes, as above."""
    flat = np.asarray(values).reshape(-1)
    if not is_ternary(flat):
        raise ValueError("base-3 packing holds ternary values {-1, 0, +1} only")
    digits = np.ones(packed_bytes(flat.size) * PER_BYTE, np.int64)  # padding: value 0 = digit 1
    digits[:flat.size] = flat.astype(np.int64) + 1
    return (digits.reshape(-1, PER_BYTE) @ _POWERS).astype(np.uint8).tobytes()


def unpack_base3(data: bytes, count: int) -> np.ndarray:
    """The inverse of `pack_base3`: the first `count` int8 values (for tests and inspection)."""
    packed = np.frombuffer(data, np.uint8).astype(np.int64)
    if packed.size < packed_bytes(count) or (packed.size and packed.max() > MAX_BYTE):
        raise ValueError(f"not {count} base-3 packed ternary values: too short, or a byte above {MAX_BYTE}")
    digits = (packed[:, None] // _POWERS) % 3
    return (digits.reshape(-1)[:count] - 1).astype(np.int8)


__all__ = ["MAX_BYTE", "PER_BYTE", "is_ternary", "pack_base3", "packed_bytes", "unpack_base3"]
