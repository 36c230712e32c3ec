"""RecognizeHardSwishPass: hard-swish / hard-sigmoid spelled in primitives -> one node.

    HardSigmoid_{α,β}(x) = max(0, min(1, α·x + β))
    HardSwish(x)        = x·relu6(x + 3)/6 = x·HardSigmoid_{1/6,½}(x)            (opset 14)

with relu6(v) = Clip(v, 0, 6).  Every Add/Mul takes its operands in either order; "/6" is
`Div(·, 6)` or `Mul(·, 1/6)`.

Case 1: x·relu6(x+3)/6 in its association orders -> HardSwish:
        (a) `Div(Mul(x, relu6), 6)`  (Paddle, PP-OCR),  (b) `Mul(x, Div(relu6, 6))`,
        (c) `Mul(Div(x, 6), relu6)`.
Case 2: relu6(x+3)/6 with no x· around it -> HardSigmoid(α=1/6, β=½).
Case 3: `Clip(Add(Mul(x, α), β), 0, 1)` (or `Div(x, 1/α)`) -> HardSigmoid(α, β); when its only
        reader is `Mul(x, ·)` and (α, β) = (1/6, ½), the product -> HardSwish.
Case 4: an existing `HardSigmoid(x)` with (α, β) = (1/6, ½) whose only reader is `Mul(x, ·)`
        -> HardSwish.  (The SE-block `Mul(y, HardSigmoid(pool(y)))` multiplies another tensor:
        it is not matched.)

Constants must match within 1e-6 relative; intermediates must be read only inside the
pattern; HardSwish needs opset >= 14.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import onnx_ir as ir

from edgekiln.compiler.graph import Graph
from edgekiln.compiler.pass_contract import RewritePass, node_label
from edgekiln.passes.pattern_matching import (
    first_reader,
    is_op,
    other_operand,
    replace_pattern,
    split_constant,
)

RTOL = 1e-6
HARD_SWISH_OPSET = 14
FLOATS = (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.DOUBLE)
SIXTH = 1.0 / 6.0


@dataclass
class HardSwishMatch:
    op_type: str                       # "HardSwish" or "HardSigmoid"
    x: ir.Value
    nodes: list[ir.Node]               # in data-flow order; the last produces the result
    # (what the constant should be, its value, the expected number; None = any constant)
    constants: list[tuple[str, ir.Value | None, float | None]] = field(default_factory=list)
    alpha: ir.Value | float | None = None   # HardSigmoid parameters (Case 3 reads them from the graph)
    beta: ir.Value | float | None = None
    alpha_is_divisor: bool = False

    @property
    def name(self) -> str:
        return self.nodes[0].name

    @property
    def output(self) -> ir.Value:
        return self.nodes[-1].outputs[0]


class RecognizeHardSwishPass(RewritePass[HardSwishMatch]):
    name = "recognize-hard-swish"

    def match(self, graph: Graph) -> Iterable[HardSwishMatch]:
        matches = []
        for node in graph.main:
            found = None
            if is_op(node, "Clip"):
                found = _relu6_form(node) or _linear_form(node)
            elif is_op(node, "HardSigmoid"):
                found = _times_hard_sigmoid(node)
            if found:
                matches.append(found)
        return matches

    def check(self, graph: Graph, m: HardSwishMatch) -> str | None:
        if any(n.graph is not graph.main for n in m.nodes):
            return "already rewritten by an overlapping match"
        if m.op_type == "HardSwish" and graph.opset() < HARD_SWISH_OPSET:
            return f"opset {graph.opset()} has no HardSwish (needs {HARD_SWISH_OPSET})"
        if m.x.dtype not in FLOATS:
            return f"input dtype {m.x.dtype} is not a float type"
        for label, value, expected in m.constants:
            reason = _constant_reason(label, value, expected)
            if reason:
                return reason
        if m.alpha_is_divisor and _number(m.alpha) == 0.0:
            return "the input is divided by 0"
        for node in m.nodes[:-1]:
            value = node.outputs[0]
            if value.is_graph_output() or any(user not in m.nodes for user, _ in value.uses()):
                return f"intermediate {value.name!r} is read outside the pattern"
        if m.output.shape is not None and m.x.shape is not None and m.output.shape != m.x.shape:
            return "a constant broadcasts the result to a different shape than the input"
        return None

    def rewrite(self, graph: Graph, m: HardSwishMatch) -> str:
        if m.op_type == "HardSwish":
            node = ir.node("HardSwish", [m.x])
        else:
            alpha, beta = _number(m.alpha), _number(m.beta)
            node = ir.node("HardSigmoid", [m.x], {"alpha": 1.0 / alpha if m.alpha_is_divisor else alpha,
                                                   "beta": beta})
        first, last = m.nodes[0].name, m.nodes[-1].name
        replace_pattern(graph, m.nodes, node, m.output, m.x)
        return f"recognized {m.op_type} {first}..{last} ({len(m.nodes)} nodes) as {node_label(node)}"


# -- parsing ---------------------------------------------------------------------------------

def _relu6_form(clip: ir.Node) -> HardSwishMatch | None:
    """Cases 1 and 2, anchored at Clip(Add(x, 3), 0, 6)."""
    shifted = clip.inputs[0].producer()
    if shifted is None or not is_op(shifted, "Add") or not _bounds_are(clip, 6.0):
        return None
    x, three = split_constant(shifted)
    relu6 = clip.outputs[0]
    head = [shifted, clip]
    constants = [("the shift 3", three, 3.0), *_bounds(clip, 6.0)]
    # (a) Div(Mul(x, relu6), 6)
    product = first_reader(relu6, "Mul", lambda n: x in n.inputs)
    if product is not None and (sixth := _divided_by_six(product.outputs[0])) is not None:
        return HardSwishMatch("HardSwish", x, [*head, product, sixth[0]], [*constants, sixth[1]])
    # (b) Mul(x, Div(relu6, 6)), else Case 2
    sixth = _divided_by_six(relu6)
    if sixth is not None:
        outer = first_reader(sixth[0].outputs[0], "Mul", lambda n: x in n.inputs)
        if outer is not None:
            return HardSwishMatch("HardSwish", x, [*head, sixth[0], outer], [*constants, sixth[1]])
        return HardSwishMatch("HardSigmoid", x, [*head, sixth[0]], [*constants, sixth[1]], alpha=SIXTH, beta=0.5)
    # (c) Mul(Div(x, 6), relu6)
    for user, _ in x.uses():
        if user is not shifted and (scaled := _divided_by_six(x, user)) is not None:
            outer = first_reader(relu6, "Mul", lambda n: scaled[0].outputs[0] in n.inputs)
            if outer is not None:
                return HardSwishMatch("HardSwish", x, [scaled[0], *head, outer], [*constants, scaled[1]])
    return None


def _linear_form(clip: ir.Node) -> HardSwishMatch | None:
    """Case 3, anchored at Clip(Add(Mul(x, α), β), 0, 1)."""
    shifted = clip.inputs[0].producer()
    if shifted is None or not is_op(shifted, "Add") or not _bounds_are(clip, 1.0):
        return None
    scaled_value, beta = split_constant(shifted)
    scaled = scaled_value.producer()
    if scaled is None or not (is_op(scaled, "Mul") or is_op(scaled, "Div")):
        return None
    x, alpha = (scaled.inputs[0], scaled.inputs[1]) if is_op(scaled, "Div") else split_constant(scaled)
    nodes = [scaled, shifted, clip]
    constants = [("α", alpha, None), ("β", beta, None), *_bounds(clip, 1.0)]
    divisor = is_op(scaled, "Div")
    outer = first_reader(clip.outputs[0], "Mul", lambda n: x in n.inputs)
    if outer is not None and _close(alpha, 6.0 if divisor else SIXTH) and _close(beta, 0.5):
        return HardSwishMatch("HardSwish", x, [*nodes, outer], constants)
    return HardSwishMatch("HardSigmoid", x, nodes, constants, alpha=alpha, beta=beta, alpha_is_divisor=divisor)


def _times_hard_sigmoid(hard_sigmoid: ir.Node) -> HardSwishMatch | None:
    """Case 4: Mul(x, HardSigmoid(x))."""
    x = hard_sigmoid.inputs[0]
    outer = first_reader(hard_sigmoid.outputs[0], "Mul", lambda n: x in n.inputs)
    if outer is None:
        return None
    alpha = hard_sigmoid.attributes.get_float("alpha", 0.2)
    beta = hard_sigmoid.attributes.get_float("beta", 0.5)
    return HardSwishMatch("HardSwish", x, [hard_sigmoid, outer], [("α=1/6", alpha, SIXTH), ("β=½", beta, 0.5)])


def _divided_by_six(value: ir.Value, node: ir.Node | None = None) -> tuple[ir.Node, tuple] | None:
    """A reader of `value` (or the given `node`) computing value/6 or value·(1/6)."""
    for user in [node] if node is not None else [user for user, _ in value.uses()]:
        if is_op(user, "Div") and user.inputs[0] is value:
            return user, ("the divisor 6", user.inputs[1], 6.0)
        if is_op(user, "Mul") and value in user.inputs and Graph.constant(other_operand(user, value)) is not None:
            return user, ("the factor 1/6", other_operand(user, value), SIXTH)
    return None


def _bounds(clip: ir.Node, high: float) -> list[tuple[str, ir.Value | None, float]]:
    return [("the Clip min 0", _input(clip, 1), 0.0), (f"the Clip max {high:g}", _input(clip, 2), high)]


def _bounds_are(clip: ir.Node, high: float) -> bool:
    """Structural filter: a Clip whose upper bound is this number (the other checks are in `check`)."""
    return _close(_input(clip, 2), high)


# -- small IR helpers ----------------------------------------------------------------------------

def _number(value: ir.Value | float | None) -> float:
    if isinstance(value, float):
        return value
    return float(Graph.constant(value).reshape(()))


def _close(value: ir.Value | float | None, expected: float) -> bool:
    if not isinstance(value, float):
        array = Graph.constant(value)
        if array is None or array.size != 1:
            return False
        value = float(array.reshape(()))
    return abs(value - expected) <= RTOL * max(abs(expected), 1e-30) if expected else value == 0.0


def _constant_reason(label: str, value: ir.Value | float | None, expected: float | None) -> str | None:
    if isinstance(value, float):
        actual = value
    else:
        array = Graph.constant(value)
        if array is None:
            return f"{label} is not a constant"
        if array.size != 1:
            return f"{label} has {array.size} values, not one"
        actual = float(array.reshape(()))
    if expected is not None and not _close(actual, expected):
        return f"constant {actual:.7g} is not {label}"
    return None


def _input(node: ir.Node, index: int) -> ir.Value | None:
    return node.inputs[index] if len(node.inputs) > index else None
