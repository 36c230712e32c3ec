"""FoldPadPass: fold a constant Pad into the padding of the Conv or pool that reads it.

A Conv pads with zeros, so a zero Pad in front of it is just more conv padding:

    Conv(Pad(x, p, value=0), pads=q) = Conv(x, pads=p+q)        (per spatial begin/end)

Case 1: Pad -> Conv          pads add up; auto_pad must be NOTSET (make-pads-explicit runs first).
Case 2: Pad -> AveragePool   the Pad's zeros count in every window's average, so the pool must
                             count its padding too: fold when the pool has no pads of its own
                             (then set count_include_pad=1) or already has count_include_pad=1.
Case 3: Pad -> MaxPool       MaxPool pads with −∞: a −∞ Pad always folds; a 0 Pad only when x ≥ 0
                             is known (x comes from Relu, or Clip with a constant min ≥ 0), because
                             then 0 never beats a real element and every window holds one
                             (pool pads stay smaller than the kernel, dilation 1).

The TF "SAME" subgraphs (pads computed by Shape/Gather/Concat arithmetic) have constant pads
once fold-constants has run; this pass only needs them constant.

Refused: pads, value or axes that are not constant, a mode other than constant, a nonzero
value (−∞ for MaxPool), negative pads (cropping), padding of the batch or channel axis, a
Pad output read by other nodes or being a graph output, a pool with ceil_mode=1, and
combined pool pads not smaller than the kernel (onnxruntime refuses those).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from edgekiln.compiler.graph import Graph
from edgekiln.compiler.pass_contract import RewritePass, node_label
from edgekiln.passes.graph_edits import (
    describe_nodes,
    drop_if_unused,
    int_attr,
    ints_attr,
)

TARGETS = ("Conv", "AveragePool", "MaxPool")


@dataclass
class _Plan:
    reader: ir.Node
    pads: list[int]  # the reader's new pads
    count_include_pad: bool  # an AveragePool must count padding from now on


def _known_non_negative(value: ir.Value) -> bool:
    producer = value.producer()
    if producer is None:
        return False
    if producer.op_type == "Relu":
        return True
    if producer.op_type == "Clip" and len(producer.inputs) > 1:
        low = Graph.constant(producer.inputs[1])
        return low is not None and low.size == 1 and float(low.reshape(())) >= 0
    return False


def spatial_pads(pad: ir.Node) -> tuple[list[int], list[int], float] | str:
    """(begins, ends, value) of a constant-mode Pad over every axis of its input, or why not."""
    mode = pad.attributes.get("mode")
    if mode is not None and mode.value != "constant":
        return f"mode is {mode.value}; conv and pool padding is constant"
    inputs = list(pad.inputs) + [None] * (4 - len(pad.inputs))
    pads = Graph.constant(inputs[1])
    if pads is None:
        return "pads are not constant"
    value = 0.0
    if inputs[2] is not None:
        given = Graph.constant(inputs[2])
        if given is None:
            return "pad value is not constant"
        value = float(given.reshape(()))
    shape = Graph.static_shape(pad.inputs[0])
    if shape is None:
        return "input shape is not static"
    rank = len(shape)
    axes = list(range(rank))
    if inputs[3] is not None:
        given_axes = Graph.constant(inputs[3])
        if given_axes is None:
            return "axes are not constant"
        axes = [int(a) % rank for a in given_axes.reshape(-1)]
    pads = [int(p) for p in pads.reshape(-1)]
    begins, ends = [0] * rank, [0] * rank
    for i, axis in enumerate(axes):
        begins[axis], ends[axis] = pads[i], pads[len(axes) + i]
    if min(begins + ends) < 0:
        return "negative pads crop the input"
    if any(begins[:2]) or any(ends[:2]):
        return "it pads the batch or channel axis"
    return begins, ends, value


class FoldPadPass(RewritePass[ir.Node]):
    name = "fold-pad"

    def match(self, graph: Graph) -> Iterable[ir.Node]:
        return [n for n in graph.main if n.op_type == "Pad" and n.domain in ("", "ai.onnx")]

    def check(self, graph: Graph, pad: ir.Node) -> str | None:
        plan = self._plan(pad)
        return plan if isinstance(plan, str) else None

    def rewrite(self, graph: Graph, pad: ir.Node) -> str:
        plan = self._plan(pad)
        reader = plan.reader
        reader.attributes["pads"] = ir.AttrInt64s("pads", plan.pads)
        if plan.count_include_pad:
            reader.attributes["count_include_pad"] = ir.AttrInt64("count_include_pad", 1)
        reader.replace_input_with(0, pad.inputs[0])
        inputs = list(pad.inputs)
        graph.main.remove(pad, safe=True)
        for value in inputs:
            drop_if_unused(graph, value)
        return f"folded {node_label(pad)} into the pads of {node_label(reader)}: {plan.pads}"

    @staticmethod
    def _plan(pad: ir.Node) -> _Plan | str:
        out = pad.outputs[0]
        if out.is_graph_output():
            return "Pad output is a graph output"
        readers = list(dict.fromkeys(user for user, _ in out.uses()))
        if len(readers) != 1:
            return f"Pad output has other readers: {describe_nodes(readers[1:])}"
        reader = readers[0]
        if reader.op_type not in TARGETS or reader.domain not in ("", "ai.onnx"):
            return f"its reader {node_label(reader)} has no padding to fold into"
        if [i for i, v in enumerate(reader.inputs) if v is out] != [0]:
            return f"{node_label(reader)} reads it as more than its data input"
        spec = spatial_pads(pad)
        if isinstance(spec, str):
            return spec
        begins, ends, value = spec
        auto_pad = reader.attributes.get("auto_pad")
        if auto_pad is not None and auto_pad.value != "NOTSET":
            return f"{reader.op_type} uses auto_pad={auto_pad.value} (make-pads-explicit runs first)"
        n = len(begins) - 2
        own = ints_attr(reader, "pads", [0] * 2 * n)
        combined = [p + q for p, q in zip(own, begins[2:] + ends[2:])]
        if reader.op_type == "Conv":  # Case 1
            if value != 0:
                return f"pad value is {value}, Conv pads with 0"
            return _Plan(reader, combined, False)
        if int_attr(reader, "ceil_mode", 0):
            return "ceil_mode=1: a window past the end could hold only padding"
        kernel = ints_attr(reader, "kernel_shape", [])
        if any(p >= k for p, k in zip(combined, kernel + kernel)):
            return f"combined pads {combined} are not smaller than the kernel {kernel}"
        if reader.op_type == "AveragePool":  # Case 2
            if value != 0:
                return f"pad value is {value}, AveragePool pads with 0"
            counts_pads = int_attr(reader, "count_include_pad", 0) == 1
            if any(own) and not counts_pads:
                return "AveragePool has its own pads and does not count them (count_include_pad=0)"
            return _Plan(reader, combined, not counts_pads)
        if ints_attr(reader, "dilations", [1] * n) != [1] * n:  # Case 3
            return "MaxPool is dilated"
        if len(reader.outputs) > 1 and (reader.outputs[1].uses() or reader.outputs[1].is_graph_output()):
            return "MaxPool's Indices output is used (the indices would move)"
        if value == -np.inf:
            return _Plan(reader, combined, False)
        if value != 0 or not _known_non_negative(pad.inputs[0]):
            return (f"MaxPool pads with -inf; a Pad with {value} folds only when its input is known "
                    "non-negative (from Relu, or Clip with min >= 0)")
        return _Plan(reader, combined, False)
