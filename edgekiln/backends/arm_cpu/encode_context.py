"""What the call encoders share: the Program being encoded, the constants they derive, and
the `BlobCall` each Program call becomes.

A `BlobCall` is one runtime call: an op code (`op_codes.OP`), operand tensor names (`None`
for an absent optional operand), attributes keyed by `op_codes.ATTR` code, and the per-thread
scratch bytes its kernel needs (the same formula as the kernel's `prepare` in C, which
checks that the blob reserves at least that much).  Derived constants (folded biases, int8
shifts, index tables, pre-transposed weights, folded BatchNorm scales) get fresh names and are
written into the blob next to the Program's own constants.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekiln.backends.arm_cpu import op_codes
from edgekiln.compiler.program import KernelCall, Program, TensorSpec
from edgekiln.errors import UnsupportedOpError

ROWS, COLS = op_codes.BLOCK["ROWS"], op_codes.BLOCK["COLS"]


def align64(n: int) -> int:
    return -(-n // 64) * 64


@dataclass
class BlobCall:
    name: str
    op: int
    inputs: list[str | None]
    outputs: list[str | None]
    attrs: dict[int, Any] = field(default_factory=dict)
    scratch: int = 0


class EncodeContext:
    """The Program being encoded plus the constants the encoders add to it."""

    def __init__(self, program: Program, sparse_plan: dict[str, dict] | None = None,
                 features: tuple[str, ...] = (), weight_layout: str = "fast") -> None:
        self.program = program
        # call name -> sparse weight format chosen by the compiler (encode_sparse.py)
        self.sparse_plan = dict(sparse_plan or {})
        self.derived: dict[str, np.ndarray] = {}
        self._taken = set(program.tensors)
        # int4 / ternary GEMM weights the low-bit kernels read in place: written K-blocked
        # (weight_packing.py); the others are unpacked per task, so they take the fewest bytes
        # (int4 flat, ternary base-3): low_bit_layout.py
        self.gemm_weights: set[str] = set()
        self.unpacked_gemm_weights: set[str] = set()
        # the target's ISA features (target toml [cpu] features): int8 GEMM weights are written
        # pre-paired for smmla when it has i8mm (weight_packing.py)
        self.features = tuple(features)
        self.paired_weights: set[str] = set()
        # "fast": GEMM weights in the layout their kernel reads in place (above); "compact": the
        # fewest bytes: int4 GEMM weights flat (no K-block padding, unpacked per task), every
        # ternary tensor base-3 (ternary_base3.py); compile --weight-layout
        self.weight_layout = weight_layout

    def spec(self, name: str) -> TensorSpec:
        if name in self.derived:
            array = self.derived[name]
            return TensorSpec(name, array.dtype.name, tuple(array.shape), kind="constant")
        return self.program.tensors[name]

    def shape(self, name: str) -> tuple[int, ...]:
        return self.spec(name).shape

    def size(self, name: str) -> int:
        return math.prod(self.shape(name))

    def const(self, name: str | None) -> np.ndarray | None:
        if not name:
            return None
        if name in self.derived:
            return self.derived[name]
        return self.program.constants.get(name)

    def need_const(self, call: KernelCall, index: int, what: str) -> np.ndarray:
        name = call.inputs[index] if index < len(call.inputs) else ""
        value = self.const(name)
        if value is None:
            raise self.fail(call, f"its {what} (input {index}) must be a constant")
        return value

    def derive(self, call: KernelCall, what: str, array: np.ndarray) -> str:
        """Register `array` as a new constant for `call`; returns its tensor name."""
        base = f"{call.name}/{what}"
        name, k = base, 1
        while name in self._taken:
            name, k = f"{base}_{k}", k + 1
        self._taken.add(name)
        self.derived[name] = np.ascontiguousarray(array)
        return name

    def fail(self, call: KernelCall, reason: str) -> UnsupportedOpError:
        return UnsupportedOpError(
            f"call {call.name!r} ({call.op}): {reason}; the arm_cpu runtime cannot run it. Rewrite this node "
            "in the exported model, keep it out of the compiled graph, or choose another target")


def is_packed(spec: TensorSpec) -> bool:
    """Low-bit int8 weights are stored packed (program.py `pack_low_bit`)."""
    return spec.kind == "constant" and spec.dtype == "int8" and spec.quant is not None and spec.quant.bits in (2, 4)


def normalize_axis(call: KernelCall, ctx: EncodeContext, axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise ctx.fail(call, f"axis {axis} is outside rank {rank}")
    return axis % rank if rank else 0


def pairs_2d(call: KernelCall, ctx: EncodeContext, rank: int) -> tuple[list[int], list[int], list[int]]:
    """(strides, dilations, pads) of a conv/pool node as the runtime's 2-D [t, l, b, r] form;
    1-D nodes (rank-3 tensors) become height-1 2-D ones."""
    a = call.attrs
    spatial = rank - 2
    if spatial not in (1, 2):
        raise ctx.fail(call, f"{spatial}-D spatial data (only 1-D and 2-D are supported)")
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise ctx.fail(call, f"auto_pad={a['auto_pad']!r} (the compiler's make-pads-explicit pass normally removes it)")
    strides = list(a.get("strides", [1] * spatial))
    dilations = list(a.get("dilations", [1] * spatial))
    pads = list(a.get("pads", [0] * (2 * spatial)))
    if any(p < 0 for p in pads):
        raise ctx.fail(call, f"negative pads {pads}")
    if spatial == 1:
        return [1, strides[0]], [1, dilations[0]], [0, pads[0], 0, pads[1]]
    return strides, dilations, pads
