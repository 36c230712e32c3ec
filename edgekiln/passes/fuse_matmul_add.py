"""FuseMatMulAddPass: a MatMul by a weight matrix plus a bias becomes one Gemm.

    Add(MatMul(A, B), c) = A·B + c = Gemm(A, B, C)      (alpha = beta = 1, no transposes)

for A [M, K], B a constant [K, N] and c a constant per-column bias: shape [N], [1, N], [1]
or a scalar, stored as C [N] so lowering sees one bias layout.

Case 1: Add(MatMul(A, B), c).
Case 2: Add(c, MatMul(A, B)) (Add commutes).

Refused: A that is not 2-D (Gemm is 2-D only; Flatten/Reshape to 2-D is not done here),
B or c not constant, c varying along rows, a MatMul output read by other nodes or being a
graph output.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from edgekiln.compiler.graph import Graph
from edgekiln.compiler.pass_contract import RewritePass, node_label
from edgekiln.passes.graph_edits import (
    add_initializer,
    bypass,
    describe_nodes,
    readers_other_than,
)


@dataclass
class _Plan:
    add: ir.Node
    bias: np.ndarray  # [N]


class FuseMatMulAddPass(RewritePass[ir.Node]):
    name = "fuse-matmul-add"

    def match(self, graph: Graph) -> Iterable[ir.Node]:
        return [n for n in graph.main if n.op_type == "MatMul" and n.domain in ("", "ai.onnx")
                and any(user.op_type == "Add" for user, _ in n.outputs[0].uses())]

    def check(self, graph: Graph, matmul: ir.Node) -> str | None:
        plan = self._plan(graph, matmul)
        return plan if isinstance(plan, str) else None

    def rewrite(self, graph: Graph, matmul: ir.Node) -> str:
        plan = self._plan(graph, matmul)
        add, out = plan.add, plan.add.outputs[0]
        bias_value = next(v for v in add.inputs if v is not matmul.outputs[0])
        if Graph.static_shape(bias_value) != plan.bias.shape:
            bias_value = add_initializer(graph, plan.bias, f"{matmul.name}_bias")
        gemm = ir.node("Gemm", [matmul.inputs[0], matmul.inputs[1], bias_value], name=f"{matmul.name}__gemm")
        gemm.outputs[0].shape, gemm.outputs[0].type = out.shape, out.type
        graph.main.insert_before(add, gemm)
        out_name = out.name
        bypass(graph, add, gemm.outputs[0])
        graph.main.remove(matmul, safe=True)
        # The Gemm takes over both names: the MatMul's (node) and the Add's (value).
        gemm.name, gemm.outputs[0].name = matmul.name, out_name
        return f"fused {node_label(matmul)} and {node_label(add)} into Gemm {gemm.name}"

    @staticmethod
    def _plan(graph: Graph, matmul: ir.Node) -> _Plan | str:
        product = matmul.outputs[0]
        adds = [user for user, _ in product.uses() if user.op_type == "Add"]
        add = adds[0]
        if product.is_graph_output():
            return "MatMul output is a graph output"
        others = readers_other_than(product, add)
        if others:
            return f"MatMul output has other readers: {describe_nodes(others)}"
        a_shape = Graph.static_shape(matmul.inputs[0])
        if a_shape is None:
            return "A's shape is not static"
        if len(a_shape) != 2:
            return f"A is {len(a_shape)}-D; Gemm is 2-D only"
        b = Graph.constant(matmul.inputs[1])
        if b is None:
            return "B is not a constant initializer"
        if b.ndim != 2:
            return f"B is {b.ndim}-D, not a 2-D weight matrix"
        operands = list(add.inputs)
        if operands[0] is product and operands[1] is product:
            return "the Add adds the MatMul output to itself"
        c = Graph.constant(operands[1] if operands[0] is product else operands[0])
        if c is None:
            return "bias is not a constant initializer"
        if c.dtype != b.dtype:
            return f"bias is {c.dtype}, weights {b.dtype}"
        columns = b.shape[1]
        if c.ndim > 2 or any(d != 1 for d in c.shape[:-1]) or (c.ndim and c.shape[-1] not in (1, columns)):
            return f"bias {list(c.shape)} is not a per-column vector of the [{a_shape[0]}, {columns}] output"
        return _Plan(add, np.ascontiguousarray(np.broadcast_to(c.reshape(-1), (columns,))))
