"""Lower each marked inverted-residual block of an integer Program to one fused kernel call.

PartitionBlocksPass tags the calls of a MobileNetV2 block with `block = "inverted_residual_<n>"`:

    t1 = QConv2D 1x1 (x)            expand, with its clamp (ReLU / ReLU6)
    t2 = QDepthwiseConv2D k x k (t1)  any stride / padding / dilation, with its clamp
    y  = QConv2D 1x1 (t2)           project (linear bottleneck)

This rewrite replaces the three calls by one `QInvertedResidual` call

    inputs  = x, w_e, b_e, m_e, s_e,  w_d, b_d, m_d, s_d,  w_p, b_p, m_p, s_p
    outputs = y
    attrs   = {"parts": [expand, depthwise, project]}   each {"name", "op", "attrs"} of the original call

so that a backend can compute the block tile by tile (runtime_arm: a few output rows at a time,
expanding only the input rows the depthwise window needs into a cache-sized buffer), and t1 and
t2 never exist in the activation arena: they leave the Program's tensors and the arena is
planned again.  The integer semantics do not change: each part keeps its own attributes, and the
reference interpreter runs the fused call as the composition of the three kernels
(`backends/reference/kernels/fused_block.py`), so any backend that is bit-exact on it is bit-exact
on the unfused Program.

A block is fused only when (each refusal is a note in the explain trace):
  - the three calls are consecutive, of the ops above, expand and project 1x1 / stride 1 / no
    padding / one group, the depthwise one with one weight per channel;
  - weights are plain int8 per channel (no per-group ratios, no int4 / ternary packing);
  - t1 is read only by the depthwise call, t2 only by the project call, neither is a graph output;
  - the zero points agree (t1's writer and reader, t2's writer and reader);
  - the depthwise bias is constant and |bias| + taps·255·128 < 2^31 (int32 accumulators).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from edgekiln.compiler.memory_planner import plan_arena
from edgekiln.compiler.program import KernelCall, Program

FUSED_OP = "QInvertedResidual"
BLOCK_PREFIX = "inverted_residual"
PARTS = ("QConv2D", "QDepthwiseConv2D", "QConv2D")


def _weight_reason(program: Program, call: KernelCall) -> str | None:
    if len(call.inputs) > 5 and call.inputs[5]:
        return f"{call.name}: per-group weight scales"
    spec = program.tensors[call.inputs[1]]
    if spec.dtype != "int8" or (spec.quant is not None and spec.quant.bits not in (None, 8)):
        return f"{call.name}: weights are not plain int8"
    if call.inputs[1] not in program.constants:
        return f"{call.name}: weights are not constant"
    return None


def _pointwise_reason(program: Program, call: KernelCall) -> str | None:
    a = call.attrs
    shape = program.tensors[call.inputs[1]].shape
    if tuple(shape[2:]) != (1, 1) or a.get("group", 1) != 1 or list(a.get("strides", [1, 1])) != [1, 1] \
            or any(a.get("pads", [0, 0, 0, 0])) or list(a.get("dilations", [1, 1])) != [1, 1]:
        return f"{call.name}: not a plain 1x1 convolution"
    return _weight_reason(program, call)


def fusion_reason(program: Program, calls: list[KernelCall], readers: dict[str, int]) -> str | None:
    """Why the three calls `calls` cannot become one fused call; None when they can."""
    if tuple(c.op for c in calls) != PARTS:
        return f"ops {[c.op for c in calls]} are not expand 1x1 -> depthwise -> project 1x1"
    expand, depthwise, project = calls
    for reason in (_pointwise_reason(program, expand), _weight_reason(program, depthwise),
                   _pointwise_reason(program, project)):
        if reason:
            return reason
    t1, t2 = expand.outputs[0], depthwise.outputs[0]
    if depthwise.inputs[0] != t1 or project.inputs[0] != t2:
        return "the calls do not form a chain"
    for name in (t1, t2):
        if readers.get(name, 0) != 1 or name in program.outputs:
            return f"intermediate {name!r} is read outside the block"
    bias = program.constants.get(depthwise.inputs[2])
    taps = math.prod(program.tensors[depthwise.inputs[1]].shape[2:])
    if bias is None or int(np.abs(bias.astype(np.int64)).max(initial=0)) + taps * 255 * 128 >= 2**31:
        return "the depthwise sums could leave int32 (the fused kernel accumulates in int32)"
    if expand.attrs["output_zero_point"] != depthwise.attrs["input_zero_point"] or \
            depthwise.attrs["output_zero_point"] != project.attrs["input_zero_point"]:
        return "zero points of the intermediates disagree"
    return None


def _fused_call(calls: list[KernelCall], block: str) -> KernelCall:
    expand, depthwise, project = calls
    parts = [{"name": c.name, "op": c.op, "attrs": c.attrs} for c in calls]
    inputs = (expand.inputs[0], *expand.inputs[1:5], *depthwise.inputs[1:5], *project.inputs[1:5])
    return KernelCall(name=block, op=FUSED_OP, inputs=inputs, outputs=(project.outputs[0],),
                      attrs={"parts": parts}, block=block)


def fuse_inverted_residual_blocks(program: Program, notes: list[str] | None = None) -> Program:
    """The Program with every fusible inverted-residual block as one call (module docstring);
    `notes` collects one line per block: fused (with the arena bytes saved) or why not."""
    readers: dict[str, int] = {}
    for call in program.calls:
        for name in call.inputs:
            if name:
                readers[name] = readers.get(name, 0) + 1
    calls: list[KernelCall] = []
    removed: set[str] = set()
    fused: list[str] = []
    i = 0
    while i < len(program.calls):
        call = program.calls[i]
        block = call.block
        if block and block.startswith(BLOCK_PREFIX) and call.op == "QConv2D":
            group = program.calls[i:i + 3]
            if len(group) == 3 and all(c.block == block for c in group):
                reason = fusion_reason(program, group, readers)
                if reason is None:
                    calls.append(_fused_call(group, block))
                    removed.update((group[0].outputs[0], group[1].outputs[0]))
                    fused.append(block)
                    i += 3
                    continue
                if notes is not None:
                    notes.append(f"{block}: not fused into one kernel: {reason}")
        calls.append(call)
        i += 1
    if not fused:
        return program
    tensors = {k: v for k, v in program.tensors.items() if k not in removed}
    arena = plan_arena(tensors, calls, alignment=program.arena.alignment)
    result = dataclasses.replace(program, tensors=tensors, calls=calls, arena=arena)
    result.validate()
    if notes is not None:
        notes.append(f"fused {len(fused)} inverted-residual block(s) into one kernel each ({', '.join(fused)}): "
                     f"activation arena {program.arena.arena_bytes} -> {arena.arena_bytes} bytes")
    return result


def part_calls(call: KernelCall, intermediates: tuple[str, str] = ("t1", "t2")) -> list[tuple[KernelCall, list[Any]]]:
    """The fused call's parts as plain calls with the positions of their operands in call.inputs:
    [(expand, [0..4]), (depthwise, [-1, 5..8]), (project, [-1, 9..12])], -1 = the previous part's output."""
    parts = call.attrs["parts"]
    names = (call.inputs[0], *intermediates)
    outs = (*intermediates, call.outputs[0])
    layout = [[0, 1, 2, 3, 4], [-1, 5, 6, 7, 8], [-1, 9, 10, 11, 12]]
    return [(KernelCall(name=p["name"], op=p["op"], inputs=(names[k], *(call.inputs[j] for j in layout[k][1:])),
                        outputs=(outs[k],), attrs=p["attrs"], block=call.block), layout[k])
            for k, p in enumerate(parts)]
