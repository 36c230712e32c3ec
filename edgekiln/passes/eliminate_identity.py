"""EliminateIdentityPass: remove nodes that pass their input through unchanged.

Case 1: `Identity(x)` -> x.
Case 2: `Dropout(x)` at inference (no training_mode input, or a constant False one) -> x,
        when its mask output is unused.

When the node's output is a graph output and its input is a graph input, the node stays:
removing it would merge an input and an output of the model.
"""

from __future__ import annotations

from collections.abc import Iterable

import onnx_ir as ir

from edgekiln.compiler.graph import Graph
from edgekiln.compiler.pass_contract import RewritePass, node_label


class EliminateIdentityPass(RewritePass[ir.Node]):
    name = "eliminate-identity"

    def match(self, graph: Graph) -> Iterable[ir.Node]:
        return [n for n in graph.main if n.op_type in ("Identity", "Dropout") and n.domain in ("", "ai.onnx")]

    def check(self, graph: Graph, node: ir.Node) -> str | None:
        source, result = node.inputs[0], node.outputs[0]
        if node.op_type == "Dropout":
            mask = node.outputs[1] if len(node.outputs) > 1 else None
            if mask is not None and (mask.uses() or mask.is_graph_output()):
                return "its mask output is used"
            training = node.inputs[2] if len(node.inputs) > 2 else None
            if training is not None:
                flag = Graph.constant(training)
                if flag is None or bool(flag):
                    return "training_mode is not a constant False"
        if source is None:
            return "it has no input"
        if result.is_graph_output() and (source.is_graph_input() or source.is_graph_output()):
            return "it joins a graph input or output to a graph output"
        return None

    def rewrite(self, graph: Graph, node: ir.Node) -> str:
        source, result = node.inputs[0], node.outputs[0]
        output_name = result.name if result.is_graph_output() else None
        result.replace_all_uses_with(source, replace_graph_outputs=True)
        graph.main.remove(node, safe=True)
        if output_name is not None:
            source.name = output_name  # the model's output keeps its name
        return f"removed {node_label(node)}"
