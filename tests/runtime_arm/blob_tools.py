"""Reading and patching model blobs in tests: where each table entry lives, so a test can
corrupt one field on purpose and re-seal the CRC to reach the loader's deeper checks."""

from __future__ import annotations

import struct
import zlib

from edgekiln.backends.arm_cpu import op_codes

B = op_codes.BLOB


class BlobView:
    def __init__(self, blob: bytes) -> None:
        self.data = bytearray(blob)
        self.n_tensors, self.n_calls, self.n_inputs, self.n_outputs = struct.unpack_from("<4I", self.data, 32)
        self.sections = [struct.unpack_from("<2Q", self.data, 64 + 16 * i) for i in range(B["SECTIONS"])]

    def section(self, index: int) -> tuple[int, int]:
        return self.sections[index]

    def tensor(self, i: int) -> int:
        """Byte offset of tensor entry i."""
        return self.sections[op_codes.SECTION["TENSORS"]][0] + i * B["TENSOR_BYTES"]

    def call(self, i: int) -> int:
        return self.sections[op_codes.SECTION["CALLS"]][0] + i * B["CALL_BYTES"]

    def call_op(self, i: int) -> int:
        return struct.unpack_from("<H", self.data, self.call(i))[0]

    def call_operand(self, i: int, k: int) -> int:
        """Byte offset of operand k (inputs, then outputs) of call i in call_io."""
        first = struct.unpack_from("<I", self.data, self.call(i) + 4)[0]
        return self.sections[op_codes.SECTION["CALL_IO"]][0] + 4 * (first + k)

    def call_attr_value(self, i: int, key: int, k: int = 0) -> int:
        """Byte offset of value k of attribute `key` of call i in attr_data."""
        first, count = struct.unpack_from("<IH", self.data, self.call(i) + 8)
        for a in range(first, first + count):
            entry = self.sections[op_codes.SECTION["ATTRS"]][0] + a * B["ATTR_BYTES"]
            akey, _, _, index = struct.unpack_from("<HBxII", self.data, entry)
            if akey == key:
                return self.sections[op_codes.SECTION["ATTR_DATA"]][0] + 8 * (index + k)
        raise KeyError(key)

    def find_call(self, op: str) -> int:
        code = op_codes.OP[op]
        return next(i for i in range(self.n_calls) if self.call_op(i) == code)

    def put(self, offset: int, fmt: str, value) -> BlobView:
        struct.pack_into(fmt, self.data, offset, value)
        return self

    def sealed(self) -> bytes:
        """The bytes with the CRC recomputed over [32, end)."""
        data = bytearray(self.data)
        struct.pack_into("<I", data, 24, zlib.crc32(bytes(data[32:])))
        return bytes(data)
