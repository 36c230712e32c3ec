"""RecognizeGeluPass: the GELU formulas spelled in primitives -> one `Gelu` node.

    exact:  GELU(x) = 0.5·x·(1 + erf(x/√2))
    tanh:   GELU(x) ≈ 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))

At opset >= 20 the result is ONNX `Gelu` (approximate "none" / "tanh"); below it is the
edgekiln-domain function `Gelu` / `GeluTanh` (`fused_ops.ensure_gelu_function`), which
onnxruntime inlines and epilogue fusion folds into the producing conv / gemm.

Case 1 (exact head): `Erf(Div(x, √2))` or `Erf(Mul(x, 1/√2))`.
Case 2 (tanh head): `Tanh(Mul(Add(x, Mul(x³, 0.044715)), √(2/π)))`, with x³ spelled
        `Pow(x, 3)`, `Mul(Mul(x, x), x)` or `Mul(x, Mul(x, x))`.
Case 3 (tail, with p = Add(head, 1)): the three association orders of 0.5·x·p,
        (a) `Mul(Mul(x, p), ½)`  (torch),  (b) `Mul(x, Mul(p, ½))`,  (c) `Mul(Mul(x, ½), p)`,
        where "·½" may also be `Div(·, 2)`.  Every Add/Mul takes its operands in either order.

The constants must equal the formula's within 1e-6 relative ("constant 1.41 is not √2");
every intermediate must be read only inside the pattern; x must be float32 below opset 20
(the function body's constants are float).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import onnx_ir as ir

from edgekiln.compiler import fused_ops
from edgekiln.compiler.graph import Graph
from edgekiln.compiler.pass_contract import RewritePass, node_label
from edgekiln.passes.graph_edits import FLOAT_TYPES
from edgekiln.passes.pattern_matching import (
    first_reader,
    is_op,
    other_operand,
    replace_pattern,
    split_constant,
)

RTOL = 1e-6
ONNX_GELU_OPSET = 20


@dataclass
class GeluMatch:
    approximate: str                   # "none" (erf) or "tanh"
    x: ir.Value
    nodes: list[ir.Node]               # in data-flow order; the last produces the result
    # (what the constant should be, its value, the expected number); value None = not a constant
    constants: list[tuple[str, ir.Value, float]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.nodes[0].name

    @property
    def output(self) -> ir.Value:
        return self.nodes[-1].outputs[0]


class RecognizeGeluPass(RewritePass[GeluMatch]):
    name = "recognize-gelu"

    def match(self, graph: Graph) -> Iterable[GeluMatch]:
        matches = []
        for node in graph.main:
            head = _erf_head(node) if is_op(node, "Erf") else _tanh_head(node) if is_op(node, "Tanh") else None
            found = head and _tail(*head)
            if found:
                matches.append(found)
        return matches

    def check(self, graph: Graph, m: GeluMatch) -> str | None:
        if any(n.graph is not graph.main for n in m.nodes):
            return "already rewritten by an overlapping match"
        allowed = FLOAT_TYPES if graph.opset() >= ONNX_GELU_OPSET else (ir.DataType.FLOAT,)
        if m.x.dtype not in allowed:
            return f"input dtype {m.x.dtype} is not supported by Gelu at opset {graph.opset()}"
        for label, value, expected in m.constants:
            reason = _constant_reason(label, value, expected)
            if reason:
                return reason
        for node in m.nodes[:-1]:
            value = node.outputs[0]
            if value.is_graph_output() or any(user not in m.nodes for user, _ in value.uses()):
                return f"intermediate {value.name!r} is read outside the GELU pattern"
        if m.output.shape is not None and m.x.shape is not None and m.output.shape != m.x.shape:
            return "a constant broadcasts the result to a different shape than the input"
        return None

    def rewrite(self, graph: Graph, m: GeluMatch) -> str:
        if graph.opset() >= ONNX_GELU_OPSET:
            node = ir.node("Gelu", [m.x], {"approximate": m.approximate})
        else:
            op_type = fused_ops.ensure_gelu_function(graph.model, m.approximate)
            node = ir.node(op_type, [m.x], domain=fused_ops.DOMAIN)
        first, last = m.nodes[0].name, m.nodes[-1].name
        replace_pattern(graph, m.nodes, node, m.output, m.x)
        form = "erf" if m.approximate == "none" else "tanh"
        return f"recognized GELU ({form} form) {first}..{last} ({len(m.nodes)} nodes) as {node_label(node)}"


# -- parsing: the head gives (x, nodes, constants, the value p = 1 + head) --------------------------

Head = tuple[str, ir.Value, list[ir.Node], list[tuple[str, ir.Value | None, float]], ir.Value]


def _erf_head(erf: ir.Node) -> Head | None:
    """Case 1."""
    scaled = erf.inputs[0].producer()
    if scaled is None or not (is_op(scaled, "Div") or is_op(scaled, "Mul")):
        return None
    if is_op(scaled, "Div"):
        x, constants = scaled.inputs[0], [("√2", scaled.inputs[1], math.sqrt(2))]
    else:
        x, factor = split_constant(scaled)
        constants = [("1/√2", factor, 1 / math.sqrt(2))]
    return _plus_one("none", x, [scaled, erf], constants, erf)


def _tanh_head(tanh: ir.Node) -> Head | None:
    """Case 2."""
    arg = tanh.inputs[0].producer()
    if arg is None or not is_op(arg, "Mul"):
        return None
    inner_value, k = split_constant(arg)
    inner = inner_value.producer()
    if inner is None or not is_op(inner, "Add"):
        return None
    for x, cubic_value in (inner.inputs, reversed(inner.inputs)):
        cubic = cubic_value.producer()
        if cubic is None or not is_op(cubic, "Mul"):
            continue
        cube_value, c = split_constant(cubic)
        cube_nodes = _cube_of(cube_value, x)
        if cube_nodes is None:
            continue
        nodes = [*cube_nodes[0], cubic, inner, arg, tanh]
        constants = [*cube_nodes[1], ("0.044715", c, 0.044715), ("√(2/π)", k, math.sqrt(2 / math.pi))]
        return _plus_one("tanh", x, nodes, constants, tanh)
    return None


def _cube_of(value: ir.Value, x: ir.Value) -> tuple[list[ir.Node], list] | None:
    """x³ as Pow(x, 3) or two Muls of x; None when `value` is not a cube of x."""
    node = value.producer()
    if node is None:
        return None
    if is_op(node, "Pow") and node.inputs[0] is x:
        return [node], [("the exponent 3", node.inputs[1], 3.0)]
    if is_op(node, "Mul") and x in node.inputs:
        square_value = node.inputs[1] if node.inputs[0] is x else node.inputs[0]
        square = square_value.producer()
        if square is not None and is_op(square, "Mul") and square.inputs[0] is x and square.inputs[1] is x:
            return [square, node], []
    return None


def _plus_one(kind: str, x: ir.Value, nodes: list[ir.Node], constants: list, head: ir.Node) -> Head | None:
    add = first_reader(head.outputs[0], "Add")
    if add is None:
        return None
    constants = [*constants, ("1", other_operand(add, head.outputs[0]), 1.0)]
    return kind, x, [*nodes, add], constants, add.outputs[0]


def _tail(kind: str, x: ir.Value, nodes: list[ir.Node], constants: list, p: ir.Value) -> GeluMatch | None:
    """Case 3: the ways of multiplying p by x and by ½."""
    halved_p = _half_of(p)
    if halved_p is not None:  # (b) Mul(x, Mul(p, ½))
        outer = first_reader(halved_p[0].outputs[0], "Mul", lambda n: x in n.inputs)
        if outer is not None:
            return GeluMatch(kind, x, [*nodes, halved_p[0], outer], [*constants, halved_p[1]])
    for mul in [user for user, _ in p.uses() if is_op(user, "Mul")]:
        other = other_operand(mul, p)
        if other is x:  # (a) Mul(Mul(x, p), ½)
            half = _half_of(mul.outputs[0])
            if half:
                return GeluMatch(kind, x, [*nodes, mul, half[0]], [*constants, half[1]])
        elif (halved := other.producer()) is not None and x in halved.inputs:  # (c) Mul(Mul(x, ½), p)
            half = _half_of(x, halved)
            if half:
                return GeluMatch(kind, x, [halved, *nodes, mul], [*constants, half[1]])
    return None


def _half_of(value: ir.Value, node: ir.Node | None = None) -> tuple[ir.Node, tuple] | None:
    """A reader of `value` (or the given `node`) computing value·½ or value/2 by a constant."""
    candidates = [node] if node is not None else [user for user, _ in value.uses()]
    for user in candidates:
        if is_op(user, "Div") and user.inputs[0] is value:
            return user, ("2", user.inputs[1], 2.0)
        if is_op(user, "Mul") and value in user.inputs and (node is not None or Graph.constant(other_operand(user, value)) is not None):
            return user, ("½", other_operand(user, value), 0.5)
    return None


# -- small IR helpers ----------------------------------------------------------------------------

def _constant_reason(label: str, value: ir.Value | None, expected: float) -> str | None:
    array = Graph.constant(value)
    if array is None:
        return f"the {label} operand is not a constant"
    if array.size != 1:
        return f"the {label} operand has {array.size} values, not one"
    actual = float(array.reshape(()))
    if abs(actual - expected) > RTOL * abs(expected):
        return f"constant {actual:.7g} is not {label}"
    return None
