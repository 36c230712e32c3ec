"""Helpers the pattern passes share to walk a spelled-out formula and replace it by one node.

The recognizers (LayerNorm, GELU, HardSwish, attention) follow a value from reader to
reader, ask which operand of a binary node is the constant, and finally swap the matched
nodes for one op while the model's output names survive.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx_ir as ir

from edgekiln.compiler.graph import Graph
from edgekiln.passes.graph_edits import drop_if_unused, unique_node_name


def is_op(node: ir.Node, op_type: str) -> bool:
    """`node` is the default-domain operator `op_type`."""
    return node.op_type == op_type and node.domain in ("", "ai.onnx")


def first_reader(value: ir.Value, op_type: str, accept: Callable[[ir.Node], bool] = lambda n: True) -> ir.Node | None:
    """The first reader of `value` with this op type that `accept`s it."""
    for user, _ in value.uses():
        if is_op(user, op_type) and accept(user):
            return user
    return None


def other_operand(node: ir.Node, value: ir.Value) -> ir.Value:
    """The input of a binary `node` that is not `value`."""
    return node.inputs[1] if node.inputs[0] is value else node.inputs[0]


def split_constant(node: ir.Node) -> tuple[ir.Value, ir.Value]:
    """(the variable operand, the constant one) of a binary node; the second input if neither is constant."""
    a, b = node.inputs[0], node.inputs[1]
    return (b, a) if Graph.constant(a) is not None and Graph.constant(b) is None else (a, b)


def replace_pattern(graph: Graph, nodes: list[ir.Node], node: ir.Node, output: ir.Value, source: ir.Value) -> None:
    """Put `node` in place of `nodes` (whose result is `output`, shaped like `source`), keeping names."""
    last = nodes[-1]  # it reads all the others, so inserting before it keeps the order topological
    new = node.outputs[0]
    new.shape, new.type = source.shape, source.type  # every pattern here keeps its input's shape
    graph.main.insert_before(last, node)
    read = [v for n in nodes for v in n.inputs]
    name, node_name = output.name, last.name
    output.replace_all_uses_with(new, replace_graph_outputs=True)
    graph.main.remove(nodes, safe=True)
    new.name, node.name = name, unique_node_name(graph, f"{node_name}/{node.op_type}")
    for value in read:  # constants only the pattern read (ε, 3, 6, ...) go with it
        drop_if_unused(graph, value)
