"""`Program`: the lowered form every backend consumes.

A Program is a straight-line list of kernel calls over named tensors.  Everything a
backend needs is explicit and static:

* `TensorSpec` per tensor: numpy dtype name, static shape, layout, role (`kind`) and,
  once quantization has run, its `QuantParams`;
* `constants`: the weights as numpy arrays (packed by later lowering steps);
* `calls`: `KernelCall`s in execution order (a topological order of the graph);
* `arena`: the `ArenaPlan` giving every intermediate tensor a byte offset in one buffer.

Graph inputs and outputs are *not* in the arena: the caller owns those buffers.

On disk (`save` / `load`) a Program is two files, both byte-for-byte reproducible:

* `program.json`: everything except the constant bytes, keys sorted, 1-space indent;
* `constants.bin`: the raw little-endian, C-ordered bytes of every constant, each starting
  at a multiple of `CONSTANT_ALIGNMENT` and zero-padded in between.  Where each array
  lives (offset, nbytes, dtype, shape) is recorded under `"constants"` in program.json.
  This replaces `np.savez`, whose zip entries carry timestamps.
  Low-bit weights are stored packed (`"packing"` in their entry): an int8 constant whose
  TensorSpec says 4 bits holds two values per byte ("int4": two's-complement nibbles, the
  element with the even flat index in the low nibble); one that says 2 bits (ternary) holds
  four per byte ("int2": two's-complement pairs, lowest bits first, -1 = 0b11).  In memory
  they are plain int8 arrays again after `load`.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ml_dtypes  # noqa: F401  (registers bfloat16, int4, float8 names with numpy)
import numpy as np

FORMAT_NAME = "edgekiln.program"
FORMAT_VERSION = 1
PROGRAM_FILE = "program.json"
CONSTANTS_FILE = "constants.bin"
# 64 bytes: a cache line, and enough for any SIMD load a runtime may do straight from
# a memory-mapped constants file.
CONSTANT_ALIGNMENT = 64

TENSOR_KINDS = ("input", "output", "constant", "intermediate")


def numpy_dtype(name: str) -> np.dtype:
    """The numpy dtype for a dtype name used in TensorSpec (including ml_dtypes names)."""
    return np.dtype(name)


@dataclass(frozen=True)
class QuantParams:
    """Affine quantization of one tensor: real = scale * (q - zero_point).

    `axis` is None for per-tensor parameters, else the channel axis the tuples run along.
    `group_size` is set for block quantization (one scale per `group_size` elements
    along `axis`).  `bits` is the logical precision (8, 4, 2 for ternary); the storage
    dtype is the owning TensorSpec's dtype.
    """

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int | None = None
    bits: int = 8
    group_size: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "scale": list(self.scale),
            "zero_point": list(self.zero_point),
            "axis": self.axis,
            "bits": self.bits,
            "group_size": self.group_size,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QuantParams:
        return cls(
            scale=tuple(float(s) for s in data["scale"]),
            zero_point=tuple(int(z) for z in data["zero_point"]),
            axis=data["axis"],
            bits=data["bits"],
            group_size=data["group_size"],
        )


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of the program.  `kind` is one of TENSOR_KINDS."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    layout: str = "any"
    kind: str = "intermediate"
    quant: QuantParams | None = None

    def __post_init__(self) -> None:
        if self.kind not in TENSOR_KINDS:
            raise ValueError(f"tensor {self.name!r}: kind {self.kind!r} not in {TENSOR_KINDS}")
        if not all(isinstance(d, (int, np.integer)) and d >= 0 for d in self.shape):
            raise ValueError(f"tensor {self.name!r}: shape {self.shape} is not static")
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))

    @property
    def size(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes as numpy holds it (sub-byte dtypes take one byte per element here;
        packing them is a backend's storage choice)."""
        return self.size * numpy_dtype(self.dtype).itemsize

    def type_str(self) -> str:
        return f"{self.dtype}[{','.join(str(d) for d in self.shape)}]"

    def to_json(self) -> dict[str, Any]:
        return {
            "dtype": self.dtype,
            "shape": list(self.shape),
            "layout": self.layout,
            "kind": self.kind,
            "quant": None if self.quant is None else self.quant.to_json(),
        }

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any]) -> TensorSpec:
        quant = data.get("quant")
        return cls(
            name=name,
            dtype=data["dtype"],
            shape=tuple(data["shape"]),
            layout=data["layout"],
            kind=data["kind"],
            quant=None if quant is None else QuantParams.from_json(quant),
        )


@dataclass(frozen=True)
class KernelCall:
    """One kernel invocation.

    `name` is the ONNX node it came from; `op` the kernel op (for now the ONNX op type).
    `inputs` / `outputs` are tensor names, "" for an absent optional one.  `attrs` holds
    JSON-able values only (tensor attributes become nested lists).  `block` groups calls
    a backend may run as one fused kernel; a later pass sets it.  Frozen: change a call
    with `dataclasses.replace`.  (Not hashable, since `attrs` is a dict.)
    """

    name: str
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    block: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "op": self.op,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "attrs": self.attrs,
            "block": self.block,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KernelCall:
        return cls(
            name=data["name"],
            op=data["op"],
            inputs=tuple(data["inputs"]),
            outputs=tuple(data["outputs"]),
            attrs=data["attrs"],
            block=data["block"],
        )


@dataclass
class ArenaPlan:
    """Where each intermediate tensor lives in the one activation arena.

    `naive_bytes` is what one buffer per intermediate would take (each size rounded up
    to `alignment`), `peak_live_bytes` the most bytes live at any one call: a lower bound
    no plan can beat.  See `memory_planner.plan_arena`.
    """

    offsets: dict[str, int]
    arena_bytes: int
    naive_bytes: int
    alignment: int
    peak_live_bytes: int = 0

    @property
    def ratio(self) -> float:
        return self.arena_bytes / self.naive_bytes if self.naive_bytes else 1.0

    def describe(self) -> str:
        return (
            f"arena {_kib(self.arena_bytes)} vs {_kib(self.naive_bytes)} naive "
            f"({self.ratio:.2f}x; peak live {_kib(self.peak_live_bytes)})"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "offsets": self.offsets,
            "arena_bytes": self.arena_bytes,
            "naive_bytes": self.naive_bytes,
            "alignment": self.alignment,
            "peak_live_bytes": self.peak_live_bytes,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ArenaPlan:
        return cls(
            offsets=dict(data["offsets"]),
            arena_bytes=data["arena_bytes"],
            naive_bytes=data["naive_bytes"],
            alignment=data["alignment"],
            peak_live_bytes=data["peak_live_bytes"],
        )


@dataclass(eq=False)
class Program:
    """The lowered program.  See the module docstring for what each field means."""

    tensors: dict[str, TensorSpec]
    constants: dict[str, np.ndarray]
    calls: list[KernelCall]
    inputs: list[str]
    outputs: list[str]
    arena: ArenaPlan

    # -- questions -------------------------------------------------------------------
    @property
    def constant_bytes(self) -> int:
        return sum(int(a.nbytes) for a in self.constants.values())

    def op_histogram(self) -> dict[str, int]:
        return dict(sorted(Counter(c.op for c in self.calls).items()))

    def summary(self) -> dict[str, Any]:
        """Headline numbers, JSON-able (for manifests, `inspect`, benchmark tables)."""
        return {
            "calls": len(self.calls),
            "ops": self.op_histogram(),
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "tensors": len(self.tensors),
            "constants": len(self.constants),
            "constant_bytes": self.constant_bytes,
            "arena_bytes": self.arena.arena_bytes,
            "naive_bytes": self.arena.naive_bytes,
            "peak_live_bytes": self.arena.peak_live_bytes,
        }

    def validate(self) -> None:
        """Raise ValueError when the program is not self-consistent.

        Checks what every backend relies on: each tensor a call reads is a graph input, a
        constant or written by an earlier call; each tensor is written once; every
        intermediate has an arena offset; constants match their specs.
        """
        problems: list[str] = []
        available = set(self.inputs) | set(self.constants)
        for name in list(self.inputs) + list(self.outputs):
            if name not in self.tensors:
                problems.append(f"graph input/output {name!r} has no TensorSpec")
        for name, array in self.constants.items():
            spec = self.tensors.get(name)
            if spec is None or spec.kind != "constant":
                problems.append(f"constant {name!r} has no TensorSpec of kind 'constant'")
            elif tuple(array.shape) != spec.shape or array.dtype.name != spec.dtype:
                problems.append(f"constant {name!r} is {array.dtype.name}{list(array.shape)}, "
                                f"spec says {spec.type_str()}")
        for call in self.calls:
            for name in call.inputs:
                if name and name not in available:
                    problems.append(f"call {call.name!r} reads {name!r} before it is written")
            for name in call.outputs:
                if not name:
                    continue
                if name in available:
                    problems.append(f"call {call.name!r} writes {name!r}, already written")
                if name not in self.tensors:
                    problems.append(f"call {call.name!r} writes {name!r}, which has no TensorSpec")
                available.add(name)
        for name in self.outputs:
            if name not in available:
                problems.append(f"graph output {name!r} is never written")
        for spec in self.tensors.values():
            if spec.kind == "intermediate" and spec.name not in self.arena.offsets:
                problems.append(f"intermediate {spec.name!r} has no arena offset")
        if problems:
            raise ValueError("invalid program:\n  " + "\n  ".join(problems))

    # -- text dump ---------------------------------------------------------------------
    def to_text(self) -> str:
        """A readable dump: inputs/outputs, one line per call, then the arena summary.

        Activations are written `%name`, constants bare; `@N` is an arena byte offset.
        """
        lines = [f"program: {len(self.calls)} calls, {len(self.tensors)} tensors"]
        for name in self.inputs:
            lines.append(f"input  {self._operand(name)} {self.tensors[name].layout}")
        for name in self.outputs:
            lines.append(f"output {self._operand(name)} {self.tensors[name].layout}")
        lines.append("")
        for call in self.calls:
            lines.append(self._call_line(call))
        lines.append("")
        lines.append(self.arena.describe())
        lines.append(f"constants {_kib(self.constant_bytes)} in {len(self.constants)} tensors")
        return "\n".join(lines) + "\n"

    def _ref(self, name: str) -> str:
        return name if name in self.constants else f"%{name}"

    def _operand(self, name: str) -> str:
        if not name:
            return "_"
        spec = self.tensors[name]
        text = f"{self._ref(name)}: {spec.type_str()}"
        if spec.quant is not None:
            text += f" q{spec.quant.bits}"
        if name in self.arena.offsets:
            text += f" @{self.arena.offsets[name]}"
        return text

    def _call_line(self, call: KernelCall) -> str:
        results = ", ".join(self._ref(o) if o else "_" for o in call.outputs)
        attrs = ", ".join(f"{k}={_format_attr(k, v)}" for k, v in sorted(call.attrs.items()))
        attrs = f"[{attrs}]" if attrs else ""
        args = ", ".join(self._operand(i) for i in call.inputs)
        out_types = ", ".join(self._result_type(o) for o in call.outputs)
        block = f"  # block {call.block}" if call.block else ""
        return f"{results} = {call.op}{attrs}({args}) -> {out_types}{block}"

    def _result_type(self, name: str) -> str:
        if not name:
            return "_"
        text = self.tensors[name].type_str()
        if name in self.arena.offsets:
            text += f" @{self.arena.offsets[name]}"
        return text

    # -- files -------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write program.json and constants.bin into `directory` (created if missing).

        Each file is written to a temporary name and renamed, so a reader never sees a
        half-written file; making the whole artifact directory atomic is the caller's job.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        bits = {name: spec.quant.bits for name, spec in self.tensors.items()
                if spec.quant is not None and spec.dtype == "int8" and spec.quant.bits in _PACKINGS}
        blob, layout = _pack_constants(self.constants, bits)
        document = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "tensors": {name: spec.to_json() for name, spec in self.tensors.items()},
            "calls": [call.to_json() for call in self.calls],
            "constants_file": CONSTANTS_FILE,
            "constants_alignment": CONSTANT_ALIGNMENT,
            "constants": layout,
            "arena": self.arena.to_json(),
        }
        text = json.dumps(document, sort_keys=True, indent=1, allow_nan=True) + "\n"
        _write_atomic(directory / PROGRAM_FILE, text.encode("utf-8"))
        _write_atomic(directory / CONSTANTS_FILE, blob)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Program:
        directory = Path(directory)
        document = json.loads((directory / PROGRAM_FILE).read_text(encoding="utf-8"))
        if document.get("format") != FORMAT_NAME or document.get("version") != FORMAT_VERSION:
            raise ValueError(f"{directory / PROGRAM_FILE}: not an {FORMAT_NAME} "
                             f"v{FORMAT_VERSION} file")
        blob = (directory / document["constants_file"]).read_bytes()
        return cls(
            tensors={n: TensorSpec.from_json(n, d) for n, d in document["tensors"].items()},
            constants=_unpack_constants(blob, document["constants"]),
            calls=[KernelCall.from_json(c) for c in document["calls"]],
            inputs=list(document["inputs"]),
            outputs=list(document["outputs"]),
            arena=ArenaPlan.from_json(document["arena"]),
        )

    # -- equality ----------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        # Dict order is not part of a Program's meaning (program.json sorts its keys),
        # so compare by content; arrays compare by dtype, shape and exact bytes.
        if not isinstance(other, Program):
            return NotImplemented
        return (
            self.tensors == other.tensors
            and self.calls == other.calls
            and self.inputs == other.inputs
            and self.outputs == other.outputs
            and self.arena == other.arena
            and self.constants.keys() == other.constants.keys()
            and all(_same_array(a, other.constants[n]) for n, a in self.constants.items())
        )


# -- helpers -------------------------------------------------------------------------------
def _kib(nbytes: int) -> str:
    return f"{nbytes / 1024:.1f} KiB"


def _format_attr(key: str, value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.7g}"
    if isinstance(value, list):
        flat = list(_flatten(value))
        if len(flat) > 8:
            return f"<{len(flat)} values>"
        # Spatial sizes read best as 3x3; pads and everything else as a plain list.
        sep = "x" if key in ("kernel_shape", "strides", "dilations") else ","
        return sep.join(_format_attr(key, v) for v in flat)
    return str(value)


def _flatten(value: Any):
    if isinstance(value, list):
        for item in value:
            yield from _flatten(item)
    else:
        yield value


def _same_array(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _align(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


def _little_endian(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, order="C")
    if array.dtype.kind in "iufc" and array.dtype.itemsize > 1:
        array = array.astype(array.dtype.newbyteorder("<"), copy=False)
    return array


# bits -> (packing name, values per byte)
_PACKINGS = {4: ("int4", 2), 2: ("int2", 4)}


def pack_low_bit(values: np.ndarray, bits: int) -> bytes:
    """int8 values in [-2^(bits-1), 2^(bits-1)) -> bytes, 8/bits values each, lowest bits first."""
    per_byte = 8 // bits
    flat = np.asarray(values, np.int8).reshape(-1)
    low = -(1 << (bits - 1))
    if flat.size and (flat.min() < low or flat.max() > -low - 1):
        raise ValueError(f"values outside the {bits}-bit range [{low}, {-low - 1}]")
    codes = (flat.astype(np.uint8) & ((1 << bits) - 1)).astype(np.uint8)
    codes = np.concatenate([codes, np.zeros(-flat.size % per_byte, np.uint8)]).reshape(-1, per_byte)
    shifts = np.arange(per_byte, dtype=np.uint8) * bits
    return np.bitwise_or.reduce(codes << shifts, axis=1).astype(np.uint8).tobytes()


def unpack_low_bit(data: bytes, bits: int, count: int) -> np.ndarray:
    """The inverse of `pack_low_bit`: `count` int8 values."""
    per_byte = 8 // bits
    packed = np.frombuffer(data, np.uint8)
    shifts = np.arange(per_byte, dtype=np.uint8) * bits
    codes = ((packed[:, None] >> shifts) & ((1 << bits) - 1)).reshape(-1)[:count].astype(np.int16)
    return np.where(codes >= 1 << (bits - 1), codes - (1 << bits), codes).astype(np.int8)


def _pack_constants(constants: dict[str, np.ndarray],
                    bits: dict[str, int] | None = None) -> tuple[bytes, dict[str, Any]]:
    """Concatenate the arrays' bytes in dict order, each at a CONSTANT_ALIGNMENT offset.

    Arrays named in `bits` (4 or 2) are packed as the module docstring says.
    """
    bits = bits or {}
    chunks: list[bytes] = []
    layout: dict[str, Any] = {}
    offset = 0
    for name, array in constants.items():
        entry: dict[str, Any] = {"dtype": array.dtype.name, "shape": list(array.shape)}
        if name in bits:
            data = pack_low_bit(array, bits[name])
            entry["packing"] = _PACKINGS[bits[name]][0]
        else:
            data = _little_endian(array).tobytes()
        padding = _align(offset, CONSTANT_ALIGNMENT) - offset
        chunks.append(b"\0" * padding)
        offset += padding
        layout[name] = {"offset": offset, "nbytes": len(data), **entry}
        chunks.append(data)
        offset += len(data)
    return b"".join(chunks), layout


def _unpack_constants(blob: bytes, layout: dict[str, Any]) -> dict[str, np.ndarray]:
    # program.json lists constants sorted by name; the file order (by offset) is the
    # order they were given in, which restores the original dict order.
    constants: dict[str, np.ndarray] = {}
    for name, entry in sorted(layout.items(), key=lambda item: item[1]["offset"]):
        dtype = numpy_dtype(entry["dtype"])
        if dtype.kind in "iufc" and dtype.itemsize > 1:
            dtype = dtype.newbyteorder("<")
        start, end = entry["offset"], entry["offset"] + entry["nbytes"]
        if "packing" in entry:
            bits = {packing: b for b, (packing, _) in _PACKINGS.items()}[entry["packing"]]
            constants[name] = unpack_low_bit(blob[start:end], bits, math.prod(entry["shape"])).reshape(entry["shape"])
            continue
        array = np.frombuffer(blob[start:end], dtype=dtype).reshape(entry["shape"])
        # A writable, native-order copy: callers (passes, packers) may modify it.
        constants[name] = array.astype(numpy_dtype(entry["dtype"]), copy=True)
    return constants


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
