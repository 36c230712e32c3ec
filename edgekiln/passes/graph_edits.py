"""Small graph edits the folding passes share: attributes, fresh names, constants, bypassing a node.

Every helper keeps the two promises rewrites make: a constant with other readers is never
changed in place (a copy is written instead), and the model's graph output names survive
when the node that produced one is removed.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx_ir as ir

from edgekiln.compiler.graph import Graph
from edgekiln.compiler.pass_contract import node_label

# The float element types ONNX activation operators accept.
FLOAT_TYPES = (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.DOUBLE, ir.DataType.BFLOAT16)


def float_activation_refusal(node: ir.Node) -> str | None:
    """Why an activation node cannot be rewritten as other default-domain float ops: it is in
    another domain, or its input is not a float tensor (None when it can)."""
    if node.domain not in ("", "ai.onnx"):
        return f"domain {node.domain!r} is not the default one"
    x = node.inputs[0]
    if x is None or x.dtype not in FLOAT_TYPES:
        return "its input is not a float tensor"
    return None


def int_attr(node: ir.Node, name: str, default: int) -> int:
    attr = node.attributes.get(name)
    return int(attr.value) if attr is not None else default


def ints_attr(node: ir.Node, name: str, default: list[int]) -> list[int]:
    attr = node.attributes.get(name)
    return [int(v) for v in attr.value] if attr is not None else default


def float_attr(node: ir.Node, name: str, default: float) -> float:
    attr = node.attributes.get(name)
    return float(attr.value) if attr is not None else default


def used_names(graph: Graph) -> set[str]:
    names = {v.name for v in graph.inputs} | set(graph.main.initializers)
    for node in graph.walk_subgraph_nodes():
        names |= {v.name for v in node.outputs if v.name}
    return names


def unique_name(graph: Graph, base: str) -> str:
    taken = used_names(graph)
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name


def unique_node_name(graph: Graph, base: str) -> str:
    taken = {n.name for n in graph.walk_subgraph_nodes()}
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name


def add_initializer(graph: Graph, array: np.ndarray, base_name: str) -> ir.Value:
    """A new initializer holding `array`, under a name no other value has."""
    name = unique_name(graph, base_name)
    value = ir.Value(name=name, const_value=ir.tensor(array, name=name),
                     shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.from_numpy(array.dtype)))
    graph.main.register_initializer(value)
    return value


def readers_other_than(value: ir.Value, node: ir.Node) -> list[ir.Node]:
    """The nodes besides `node` that read `value` (each listed once)."""
    return list(dict.fromkeys(user for user, _ in value.uses() if user is not node))


def describe_nodes(nodes: Iterable[ir.Node]) -> str:
    return ", ".join(node_label(n) for n in nodes)


def set_constant_input(graph: Graph, node: ir.Node, index: int, array: np.ndarray, base_name: str) -> None:
    """Make `node`'s input `index` hold `array`.

    In place when that input is an initializer only `node` reads; otherwise (absent, shared,
    a graph output) a new initializer is written so other readers keep the old values.
    """
    current = node.inputs[index] if index < len(node.inputs) else None
    if (current is not None and Graph.constant(current) is not None and not current.is_graph_output()
            and not readers_other_than(current, node) and current.name in graph.main.initializers):
        current.const_value = ir.tensor(array, name=current.name)
        current.shape = ir.Shape(array.shape)
        return
    fresh = add_initializer(graph, array, base_name)
    if index >= len(node.inputs):
        node.resize_inputs(index + 1)
    node.replace_input_with(index, fresh)
    if current is not None:
        drop_if_unused(graph, current)


def drop_if_unused(graph: Graph, value: ir.Value | None) -> None:
    """Forget an initializer nobody reads any more (so a rewrite leaves no dead weights)."""
    if (value is not None and not value.uses() and not value.is_graph_input() and not value.is_graph_output()
            and graph.main.initializers.get(value.name) is value):
        graph.main.initializers.pop(value.name)


def bypass(graph: Graph, node: ir.Node, replacement: ir.Value) -> None:
    """Remove single-output `node`, its readers reading `replacement` instead.

    When `node`'s output is a graph output, `replacement` takes over its name.
    """
    result = node.outputs[0]
    output_name = result.name if result.is_graph_output() else None
    result.replace_all_uses_with(replacement, replace_graph_outputs=True)
    inputs = list(node.inputs)
    graph.main.remove(node, safe=True)
    if output_name is not None:
        replacement.name = output_name
    for value in inputs:
        drop_if_unused(graph, value)


def replace_keeping_name(graph: Graph, node: ir.Node, replacement: ir.Value) -> None:
    """Remove single-output `node` for `replacement` (the output of the node(s) rewriting it),
    which takes over the old output's shape, type and name, so readers and --explain see the
    same tensor as before the rewrite."""
    result = node.outputs[0]
    replacement.shape, replacement.type = result.shape, result.type
    name = result.name
    bypass(graph, node, replacement)
    replacement.name = name
