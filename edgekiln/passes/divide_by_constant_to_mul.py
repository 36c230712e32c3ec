"""DivideByConstantToMulPass: Div(x, c) -> Mul(x, 1/c) for a constant float divisor c.

    x / c = x · (1/c)      (float: equal up to one rounding of 1/c, |relative error| <= 2^-23 in fp32)

DIV is not an Edge TPU op while MUL is, so a division by a constant (a normalization, an
average spelled as a sum divided by N) would end the model's single TPU segment.  The
reciprocal is computed in float64 and stored in the divisor's dtype.

Refused: a divisor that is not a constant, is not float (integer division truncates), or holds
a zero or a non-finite value (x/0 is ±inf or NaN, x·(1/0) would differ for x = 0).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx_ir as ir

from edgekiln.compiler.graph import Graph
from edgekiln.compiler.pass_contract import RewritePass, node_label
from edgekiln.passes.graph_edits import add_initializer, replace_keeping_name


class DivideByConstantToMulPass(RewritePass[ir.Node]):
    name = "divide-by-constant-to-mul"

    def match(self, graph: Graph) -> Iterable[ir.Node]:
        return [n for n in graph.main if n.op_type == "Div" and n.domain in ("", "ai.onnx")]

    def check(self, graph: Graph, node: ir.Node) -> str | None:
        divisor = Graph.constant(node.inputs[1]) if len(node.inputs) > 1 else None
        if divisor is None:
            return "the divisor is not a constant"
        if not np.issubdtype(divisor.dtype, np.floating):
            return f"the divisor is {divisor.dtype} (integer division truncates)"
        if not np.all(np.isfinite(divisor)) or np.any(divisor == 0):
            return "the divisor holds a zero or a non-finite value"
        return None

    def rewrite(self, graph: Graph, node: ir.Node) -> str:
        x = node.inputs[0]
        divisor = Graph.constant(node.inputs[1])
        reciprocal = (1.0 / divisor.astype(np.float64)).astype(divisor.dtype)
        factor = add_initializer(graph, reciprocal, f"{node.name}_reciprocal")
        mul = ir.Node("", "Mul", inputs=[x, factor], name=node.name, num_outputs=1)
        graph.main.insert_after(node, mul)
        replace_keeping_name(graph, node, mul.outputs[0])
        shown = f"{float(reciprocal.ravel()[0]):g}" if reciprocal.size == 1 else f"a {list(reciprocal.shape)} tensor"
        return f"{node_label(node)} -> Mul by {shown}"
