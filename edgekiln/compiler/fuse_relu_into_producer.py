"""Fuse a standalone Relu into the integer kernel before it, in the int8 Program of the edgetpu and arm_cpu targets.

The quantized pipeline fuses Relu into Conv / Gemm epilogues only, so a ResNet block ends in
two calls, each with its own calibrated output parameters (likewise a ConvTranspose + Relu):

    t = QAdd(a, b)        at (s_t, zp_t), the range of a + b
    y = QLookupTable(t)   Relu table, at (s_y, zp_y), the range of relu(a + b)

This rewrite makes each pair one call that writes y directly:

    y = QAdd(a, b)        at (s_y, zp_y), output multiplier for s_y, clamp [max(-128, zp_y), 127]

Why each backend wants it:
  - edgetpu (TFLite): the pair is written as ADD + a standalone int8 RELU, and TFLite's RELU with
    different input and output parameters is a per-element requantization that XNNPACK does not
    take: on LiteRT's CPU the two RELUs of resnet_basic made its file 2.4x slower than the peers'
    and split the graph into three XNNPACK partitions; ppocr_det's one RELU after its
    TRANSPOSE_CONV (80x80x24 values) costs about 1/6 of its run.  Fused, the clamp is written as
    the op's fused activation (`activation_bounds`: RELU, or NONE when zp_y = -128 and int8
    saturation is the clamp already).
  - arm_cpu (C runtime): the QLookupTable is a 256-byte table in the blob and one more full pass
    over the tensor (read t, write y); fused, the producer's epilogue clamps at ACT_MIN / ACT_MAX
    (QAdd / QMul attributes, the weight kernels' requant attributes) as it stores y, so the table,
    the pass and the intermediate tensor t in the arena are gone.
Both get one rounding fewer (below).

The producer's output rescale is its real multiplier M (M proportional to 1/s_out for every kernel
below) times s_t/s_y, and the clamp starts at the quantized zero (quantize(0, s_y, zp_y) = zp_y).
QAdd recomputes M from its formula (2*max(s_a, s_b)/(2^20*s_y), integer_kernels.py); a weight
kernel's per-channel multiplier and shift constants are replaced (M_new = M*s_t/s_y from the old
(m, shift), within one unit of m of the exact product; the TFLite writer re-derives the weight
scale where TFLite would round it differently).  The result is relu(...) rounded once at
(s_y, zp_y) instead of rounded at (s_t, zp_t), clipped to t's range, then rounded again: one
rounding fewer, on the finer scale (relu's calibrated range is the positive part of t's, so
usually s_y < s_t).  It changes the Program's numbers, so it runs before anything verifies or
writes the Program (compile.py; on arm_cpu before the inverted-residual blocks are fused), and the
QDQ model.onnx stays the unfused float reference (within about an LSB of the Program at those
points).

Fused only when (otherwise a note says why):
  - the producer is QAdd, QMul, QConv2D, QDepthwiseConv2D, QConvTranspose2D or QFullyConnected
    with an integer output (not a float-output layer) and no clamp of its own (full int8 range);
  - the Relu table is the only reader of t, and t is no graph output.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from edgekiln.compiler import integer_kernels as ik
from edgekiln.compiler.memory_planner import plan_arena
from edgekiln.compiler.program import KernelCall, Program
from edgekiln.compiler.requantize import quantize_multiplier

INT8_MIN, INT8_MAX = -128, 127
ATTR_MULTIPLIER = ("QAdd", "QMul")   # (multiplier, shift) are attributes
CONSTANT_MULTIPLIER = ("QConv2D", "QDepthwiseConv2D", "QConvTranspose2D", "QFullyConnected")  # operands 3, 4


def _readers(program: Program) -> dict[str, list[KernelCall]]:
    readers: dict[str, list[KernelCall]] = {}
    for call in program.calls:
        for name in call.inputs:
            if name:
                readers.setdefault(name, []).append(call)
    return readers


def fusion_reason(program: Program, producer: KernelCall, readers: dict[str, list[KernelCall]]) -> str | None:
    """None when the Relu table reading `producer`'s output can be fused into it, else why not."""
    t = producer.outputs[0]
    if producer.op not in ATTR_MULTIPLIER + CONSTANT_MULTIPLIER:
        return f"{producer.op} has no output rescale to fold a Relu into"
    if producer.attrs.get("float_output") or "multiplier" not in producer.attrs and producer.op in ATTR_MULTIPLIER:
        return f"{producer.name} writes a float output"
    if len(readers.get(t, [])) != 1 or t in program.outputs:
        return f"{producer.name}'s output {t!r} is read by more than the Relu (or is a graph output)"
    if (int(producer.attrs.get("act_min", INT8_MIN)), int(producer.attrs.get("act_max", INT8_MAX))) != (INT8_MIN,
                                                                                                         INT8_MAX):
        return f"{producer.name} already clamps its output"
    return None


def _scale(program: Program, name: str) -> float:
    return float(np.float32(program.tensors[name].quant.scale[0]))


def _rescaled(m: int, shift: int, ratio: float) -> tuple[int, int]:
    """(m, shift) of the real multiplier m·2^−(31+shift) times `ratio`."""
    return quantize_multiplier(m * 2.0 ** -(31 + shift) * ratio)


class _Fusion:
    """The calls, tensors and constants of the Program being rewritten."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self.tensors = dict(program.tensors)
        self.constants = dict(program.constants)

    def fused(self, producer: KernelCall, relu: KernelCall) -> KernelCall:
        t, y = producer.outputs[0], relu.outputs[0]
        zp_y = int(self.program.tensors[y].quant.zero_point[0])
        ratio = _scale(self.program, t) / _scale(self.program, y)
        attrs = {**producer.attrs, "output_zero_point": zp_y, "act_min": max(INT8_MIN, zp_y), "act_max": INT8_MAX}
        inputs = list(producer.inputs)
        if producer.op == "QAdd":  # the lowering's own formula (integer_lowering._binary_lower), for s_y
            twice = 2.0 * max(_scale(self.program, producer.inputs[0]), _scale(self.program, producer.inputs[1]))
            attrs["multiplier"], attrs["shift"] = quantize_multiplier(
                twice / ((1 << ik.LEFT_SHIFT_ADD) * _scale(self.program, y)))
        elif producer.op == "QMul":
            attrs["multiplier"], attrs["shift"] = _rescaled(int(attrs["multiplier"]), int(attrs["shift"]), ratio)
        else:
            old_m, old_shift = self.constants[inputs[3]], self.constants[inputs[4]]
            pairs = [_rescaled(int(m), int(s), ratio) for m, s in zip(old_m.tolist(), old_shift.tolist())]
            inputs[3] = self._constant(f"{producer.name}_relu_multiplier", np.array([p[0] for p in pairs], np.int32),
                                       like=inputs[3])
            inputs[4] = self._constant(f"{producer.name}_relu_shift", np.array([p[1] for p in pairs], np.int32),
                                       like=inputs[4])
        return dataclasses.replace(producer, inputs=tuple(inputs), outputs=(y,), attrs=attrs)

    def _constant(self, hint: str, array: np.ndarray, like: str) -> str:
        name, k = hint, 1
        while name in self.tensors:
            name, k = f"{hint}_{k}", k + 1
        self.constants[name] = array
        self.tensors[name] = dataclasses.replace(self.tensors[like], name=name, shape=tuple(array.shape))
        return name

    def drop_unread(self, calls: list[KernelCall]) -> None:
        """Forget the tensors no call reads or writes any more (the fused-away t, old tables and multipliers)."""
        used = {n for c in calls for n in (*c.inputs, *c.outputs) if n}
        used |= set(self.program.inputs) | set(self.program.outputs)
        for name in [n for n in self.tensors if n not in used]:
            del self.tensors[name]
            self.constants.pop(name, None)


def fuse_relu_into_producers(program: Program, notes: list[str] | None = None) -> Program:
    """The Program with every fusible (producer, Relu table) pair as one clamped call (module docstring).
    `notes` collects one line per Relu table after a kernel: fused, or why not."""
    readers = _readers(program)
    producers = {name: call for call in program.calls for name in call.outputs if name}
    fusion = _Fusion(program)
    replaced: dict[str, KernelCall] = {}   # producer name -> its fused form
    dropped: set[str] = set()              # Relu call names
    for call in program.calls:
        if call.op != "QLookupTable" or call.attrs.get("function") != "Relu":
            continue
        producer = producers.get(call.inputs[0])
        if producer is None:
            continue
        reason = fusion_reason(program, producer, readers)
        if reason is not None:
            if notes is not None:
                notes.append(f"{call.name} (Relu) not fused into {producer.name} ({producer.op}): {reason}")
            continue
        replaced[producer.name] = fusion.fused(producer, call)
        dropped.add(call.name)
    if not replaced:
        return program
    calls = [replaced.get(c.name, c) for c in program.calls if c.name not in dropped]
    fusion.drop_unread(calls)
    arena = plan_arena(fusion.tensors, calls, alignment=program.arena.alignment)
    result = dataclasses.replace(program, tensors=fusion.tensors, constants=fusion.constants, calls=calls,
                                 arena=arena)
    result.validate()
    if notes is not None:
        shown = ", ".join(f"{c.name} ({c.op})" for c in replaced.values())
        notes.append(f"fused {len(replaced)} Relu(s) into the kernel before them, one quantization point each "
                     f"({shown}): written as that op's fused activation, no standalone int8 RELU")
    return result
