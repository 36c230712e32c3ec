"""`write_blob(program) -> bytes`: the model blob the C runtime loads (edgekiln/runtime_arm).

Layout (all little-endian; the numbers come from `runtime_arm/include/ek_ops.h` through
`op_codes`; runtime_arm/BLOB_FORMAT.md is the full description):

    header, 192 bytes
      0  magic "\\x89EKBLOB\\n"            24  u32 CRC-32 (zlib) of bytes [32, total)
      8  u32 format version (3)            28  u32 flags (0)
     12  u32 header bytes (192)            32  u32 tensors, calls, inputs, outputs (4 x u32)
     16  u64 total bytes                   48  u64 arena bytes, u64 scratch bytes per thread
     64  8 section entries (u64 offset, u64 size), in file order:
    tensors     88 bytes each: u8 dtype, u8 rank, u8 storage, u8 packing, u32 name,
                i64 dims[6] (0 past the rank), u64 offset, u64 nbytes, f32 scale, i32 zero
                point, 8 reserved bytes (0).  storage: arena (offset = byte offset in the
                activation arena, from the Program's ArenaPlan), constant (byte offset in the
                constants section), input / output (offset = slot).
    io          u32 tensor ids of the inputs, then of the outputs
    calls       24 bytes each: u16 op, u8 inputs, u8 outputs, u32 first operand (in
                call_io), u32 first attribute, u16 attributes, u16 reserved, u32 name, u32 reserved
    call_io     i32 tensor ids, -1 for an absent optional operand
    attrs       12 bytes each: u16 key, u8 type (1 int64, 2 float64), u8 reserved,
                u32 count, u32 first value (in attr_data)
    attr_data   8-byte values
    strings     NUL-terminated names (tensor and call names, for messages and profiles)
    constants   each constant at a multiple of 64; int4 / ternary weights that only GEMMs read
                K-blocked as the GEMM kernels read them (`weight_packing.py`), other int4 /
                ternary weights packed exactly as Program files pack them
                (`program.pack_low_bit`), everything else raw.  weight_layout "compact":
                no K-blocking, and ternary tensors five values per byte (`ternary_base3.py`)

Every section starts at a multiple of 64 and is zero-padded.  The writer is deterministic:
tensors are numbered in order of first use (inputs, outputs, then call operands in call
order), constants laid out in that order, strings deduplicated in first-use order.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import numpy as np

from edgekiln.backends.arm_cpu import op_codes, ternary_base3, weight_packing
from edgekiln.backends.arm_cpu.call_encoding import OUTPUT_ALIAS_PREFIX, encode_program
from edgekiln.backends.arm_cpu.encode_context import (
    BlobCall,
    EncodeContext,
    align64,
    is_packed,
)
from edgekiln.backends.arm_cpu.low_bit_layout import WEIGHT_LAYOUTS
from edgekiln.compiler.program import Program, TensorSpec, pack_low_bit
from edgekiln.errors import UnsupportedOpError

MAGIC = b"\x89EKBLOB\n"
B = op_codes.BLOB
ST, PK, AT = op_codes.STORE, op_codes.PACK, op_codes.ATYPE


class _Strings:
    def __init__(self) -> None:
        self.data = bytearray()
        self.offsets: dict[str, int] = {}

    def add(self, text: str) -> int:
        if text not in self.offsets:
            self.offsets[text] = len(self.data)
            self.data += text.encode("utf-8").replace(b"\0", b"?") + b"\0"
        return self.offsets[text]




def write_blob(program: Program, sparse_plan: dict[str, dict] | None = None, features: tuple[str, ...] = (),
               weight_layout: str = "fast") -> bytes:
    """The blob of `program` (see the module docstring); refuses what the runtime cannot run.
    `sparse_plan` maps call names to the sparse weight format to run them with (encode_sparse.py);
    `features` are the target's ISA features, which pick the GEMM weight layouts (weight_packing.py);
    `weight_layout` "fast" stores low-bit GEMM weights as their kernels read them, "compact" in the
    fewest bytes (flat int4, base-3 ternary), unpacked per task at run time."""
    if weight_layout not in WEIGHT_LAYOUTS:
        raise ValueError(f"weight_layout {weight_layout!r}: expected one of {', '.join(WEIGHT_LAYOUTS)}")
    calls, ctx = encode_program(program, sparse_plan, features, weight_layout)
    return _BlobLayout(program, ctx, calls).serialize()


class _BlobLayout:
    def __init__(self, program: Program, ctx: EncodeContext, calls: list[BlobCall]) -> None:
        self.program, self.ctx, self.calls = program, ctx, calls
        self.ids: dict[str, int] = {}
        for name in program.inputs:
            self._id(name)
        for name in program.outputs:
            self._id(self._output_key(name))
        for call in calls:
            for name in (*call.inputs, *call.outputs):
                if name:
                    self._id(name)

    def _output_key(self, name: str) -> str:
        return OUTPUT_ALIAS_PREFIX + name if name in self.program.inputs or name in self.program.constants else name

    def _id(self, key: str) -> int:
        if key not in self.ids:
            self.ids[key] = len(self.ids)
        return self.ids[key]

    # -- sections ----------------------------------------------------------------------------
    def serialize(self) -> bytes:
        strings = _Strings()
        tensors, constants = self._tensors(strings)
        io = struct.pack(f"<{len(self.program.inputs) + len(self.program.outputs)}I",
                         *[self.ids[n] for n in self.program.inputs],
                         *[self.ids[self._output_key(n)] for n in self.program.outputs])
        call_table, call_io, attrs, attr_data = self._calls(strings)
        sections = [tensors, io, call_table, call_io, attrs, attr_data, bytes(strings.data), constants]
        offset = B["HEADER_BYTES"]
        entries, body = [], bytearray()
        for data in sections:
            entries.append((offset, len(data)))
            body += data + b"\0" * (align64(len(data)) - len(data))
            offset += align64(len(data))
        scratch = align64(max((c.scratch for c in self.calls), default=0))
        counts = struct.pack("<4I2Q", len(self.ids), len(self.calls), len(self.program.inputs),
                             len(self.program.outputs), self.program.arena.arena_bytes, scratch)
        section_table = b"".join(struct.pack("<2Q", o, s) for o, s in entries)
        covered = counts + section_table + bytes(body)  # everything after the 32-byte prefix
        total = 32 + len(covered)
        prefix = MAGIC + struct.pack("<IIQII", B["VERSION"], B["HEADER_BYTES"], total, zlib.crc32(covered), 0)
        return prefix + covered

    def _tensors(self, strings: _Strings) -> tuple[bytes, bytes]:
        table, constants = bytearray(), bytearray()
        inputs = {name: i for i, name in enumerate(self.program.inputs)}
        outputs = {self._output_key(name): i for i, name in enumerate(self.program.outputs)}
        for key in self.ids:  # insertion order = id order
            name = key.removeprefix(OUTPUT_ALIAS_PREFIX)
            spec = self.ctx.spec(name)
            if len(spec.shape) > op_codes.MAX_RANK:
                raise UnsupportedOpError(f"tensor {name!r} has rank {len(spec.shape)}; the arm_cpu runtime takes "
                                         f"at most {op_codes.MAX_RANK}")
            if spec.dtype not in op_codes.DTYPE_CODES:
                raise UnsupportedOpError(f"tensor {name!r} is {spec.dtype}; the arm_cpu runtime handles "
                                         f"{', '.join(op_codes.DTYPE_CODES)}")
            packing = PK["NONE"]
            if key in outputs:
                storage, offset, nbytes = ST["OUTPUT"], outputs[key], spec.nbytes
            elif key in inputs:
                storage, offset, nbytes = ST["INPUT"], inputs[key], spec.nbytes
            elif (value := self.ctx.const(name)) is not None:
                data = self._constant_bytes(spec, value, name in self.ctx.gemm_weights)
                if is_packed(spec):
                    packing = PK["INT4"] if spec.quant.bits == 4 else PK["INT2"]
                    if name in self.ctx.gemm_weights:
                        packing = weight_packing.PACKING_CODES[spec.quant.bits]
                    elif self._base3(name, spec, value):
                        data, packing = ternary_base3.pack_base3(value), PK["INT2_B3"]
                elif name in self.ctx.paired_weights:
                    data, packing = weight_packing.pack_i8_pairs(value), PK["I8_PAIRS8"]
                constants += b"\0" * (align64(len(constants)) - len(constants))
                storage, offset, nbytes = ST["CONST"], len(constants), len(data)
                constants += data
            else:
                storage, offset, nbytes = ST["ARENA"], self.program.arena.offsets[name], spec.nbytes
            scale, zero = 0.0, 0
            if spec.quant is not None and len(spec.quant.scale) == 1:
                scale, zero = spec.quant.scale[0], spec.quant.zero_point[0]
            dims = list(spec.shape) + [0] * (op_codes.MAX_RANK - len(spec.shape))
            table += struct.pack("<4BI6qQQfi8x", op_codes.DTYPE_CODES[spec.dtype], len(spec.shape), storage, packing,
                                 strings.add(name), *dims, offset, nbytes, scale, zero)
        return bytes(table), bytes(constants)

    def _base3(self, name: str, spec: TensorSpec, value: np.ndarray) -> bool:
        """2-bit tensors base-3, five values per byte: every one in the compact layout, and the GEMM
        weights the fast layout unpacks (low_bit_layout.py); a 2-bit tensor holding -2 (not ternary:
        no quantizer writes one) keeps the 2-bit flat packing."""
        smallest = self.ctx.weight_layout == "compact" or name in self.ctx.unpacked_gemm_weights
        return smallest and spec.quant.bits == 2 and ternary_base3.is_ternary(value)

    @staticmethod
    def _constant_bytes(spec: TensorSpec, value: np.ndarray, gemm_layout: bool = False) -> bytes:
        if is_packed(spec):
            if gemm_layout:
                return weight_packing.pack_gemm_rows(value, spec.quant.bits)
            return pack_low_bit(value, spec.quant.bits)
        array = np.ascontiguousarray(value, dtype=np.dtype(spec.dtype))
        if array.dtype.itemsize > 1:
            array = array.astype(array.dtype.newbyteorder("<"), copy=False)
        return array.tobytes()

    def _calls(self, strings: _Strings) -> tuple[bytes, bytes, bytes, bytes]:
        table, io, attrs, data = bytearray(), [], bytearray(), bytearray()
        n_attrs = 0
        for call in self.calls:
            if len(call.inputs) > 255 or len(call.outputs) > 255:
                raise UnsupportedOpError(f"call {call.name!r} has more than 255 operands")
            first_io, first_attr = len(io), n_attrs
            io += [self.ids[n] if n else -1 for n in call.inputs]
            io += [self.ids[n] if n else -1 for n in call.outputs]
            for key, value in sorted(call.attrs.items()):
                kind, values = _attr_values(value)
                attrs += struct.pack("<HBxII", key, kind, len(values), len(data) // 8)
                fmt = "<q" if kind == AT["INT"] else "<d"
                for v in values:
                    data += struct.pack(fmt, v)
                n_attrs += 1
            table += struct.pack("<HBBIIHHII", call.op, len(call.inputs), len(call.outputs), first_io, first_attr,
                                 len(call.attrs), 0, strings.add(call.name), 0)
        return bytes(table), struct.pack(f"<{len(io)}i", *io), bytes(attrs), bytes(data)


def _attr_values(value: Any) -> tuple[int, list]:
    values = list(np.asarray(value).reshape(-1).tolist()) if isinstance(value, (list, tuple, np.ndarray)) else [value]
    if any(isinstance(v, float) for v in values):
        return AT["FLOAT"], [float(v) for v in values]
    return AT["INT"], [int(v) for v in values]


__all__ = ["MAGIC", "WEIGHT_LAYOUTS", "write_blob"]
