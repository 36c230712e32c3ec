"""FoldTransposeIntoFullyConnectedPass: Transpose -> Flatten -> MatMul/Gemm with constant W, without the Transpose.

A model exported from an NHWC framework often flattens in NHWC order: the NCHW activation x
is transposed (perm = [0, 2, 3, 1]), flattened and fed to a dense layer.  Flattening is a
reordering of x's elements, so the transpose can move into the constant weights instead:

    t = Transpose(x, perm)                 perm[0] = 0 (the batch stays in front)
    f = Flatten(t) = x_flat[:, src]        src = arange(|x|/N).reshape(x.shape[1:])
                                                   .transpose(perm[1:] - 1).ravel()
    y = f · W = x_flat · W'                W'[src[j], :] = W[j, :]   (Gemm transB=1: columns)

so y = MatMul(Flatten(x), W') exactly: the same products, summed in a different order.  The
Edge TPU maps TRANSPOSE only from edgetpu_compiler 16 on, and every TRANSPOSE moves data, so
the rewrite also helps targets that do map it.

Case 1: Flatten(axis=1).   Case 2: Reshape to [N, -1] or [N, |x|/N].
Refused: a perm that moves the batch axis, a Transpose or Flatten read by other nodes or being a
graph output, unknown shapes, a weight that is not a constant, Gemm with transA=1.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from edgekiln.compiler.graph import Graph
from edgekiln.compiler.pass_contract import RewritePass, node_label
from edgekiln.passes.graph_edits import bypass, int_attr, ints_attr, set_constant_input


@dataclass
class TransposeFlattenDense:
    transpose: ir.Node
    flatten: ir.Node
    dense: ir.Node

    @property
    def name(self) -> str:
        return self.transpose.name or "<unnamed>"


class FoldTransposeIntoFullyConnectedPass(RewritePass[TransposeFlattenDense]):
    name = "fold-transpose-into-fully-connected"

    def match(self, graph: Graph) -> Iterable[TransposeFlattenDense]:
        found = []
        for node in graph.main:
            if node.op_type != "Transpose" or node.domain not in ("", "ai.onnx"):
                continue
            readers = Graph.consumers(node.outputs[0])
            if len(readers) != 1 or readers[0].op_type not in ("Flatten", "Reshape"):
                continue
            dense = Graph.consumers(readers[0].outputs[0])
            if len(dense) == 1 and dense[0].op_type in ("MatMul", "Gemm"):
                found.append(TransposeFlattenDense(node, readers[0], dense[0]))
        return found

    def check(self, graph: Graph, m: TransposeFlattenDense) -> str | None:
        x = m.transpose.inputs[0]
        shape = Graph.static_shape(x) if x is not None else None
        if shape is None or len(shape) < 2:
            return "the transposed tensor has no static shape of rank >= 2"
        perm = ints_attr(m.transpose, "perm", list(reversed(range(len(shape)))))
        if perm[0] != 0:
            return f"perm {perm} moves the batch axis"
        for value in (m.transpose.outputs[0], m.flatten.outputs[0]):
            if value.is_graph_output() or len(Graph.consumers(value)) != 1:
                return f"{value.name!r} has other readers or is a graph output"
        flat = Graph.static_shape(m.flatten.outputs[0])
        if flat is None or flat != (shape[0], int(np.prod(shape[1:]))):
            return f"the flatten output {flat} is not [N, {int(np.prod(shape[1:]))}]"
        if m.flatten.op_type == "Flatten" and int_attr(m.flatten, "axis", 1) != 1:
            return "Flatten axis is not 1"
        if m.dense.inputs[0] is not m.flatten.outputs[0]:
            return "the flattened tensor is not the dense layer's left operand"
        if Graph.constant(m.dense.inputs[1]) is None:
            return "the weight is not a constant"
        if m.dense.op_type == "Gemm" and int_attr(m.dense, "transA", 0):
            return "Gemm has transA=1"
        return None

    def rewrite(self, graph: Graph, m: TransposeFlattenDense) -> str:
        x = m.transpose.inputs[0]
        shape = Graph.static_shape(x)
        perm = ints_attr(m.transpose, "perm", list(reversed(range(len(shape)))))
        src = np.arange(int(np.prod(shape[1:]))).reshape(shape[1:]).transpose([p - 1 for p in perm[1:]]).ravel()
        weight = Graph.constant(m.dense.inputs[1])
        moved = np.empty_like(weight)
        if m.dense.op_type == "Gemm" and int_attr(m.dense, "transB", 0):
            moved[:, src] = weight
        else:
            moved[src, :] = weight
        set_constant_input(graph, m.dense, 1, moved, f"{m.dense.name}_weight_untransposed")
        bypass(graph, m.transpose, x)
        return (f"folded {node_label(m.transpose)} (perm {perm}) into the weights of {node_label(m.dense)} "
                f"through {node_label(m.flatten)}")
