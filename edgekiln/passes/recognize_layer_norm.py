"""RecognizeLayerNormPass: LayerNorm spelled in primitives -> one `LayerNormalization` (opset 17).

Over the trailing axes A = {r-k, ..., r-1} of x (rank r):

    μ = ReduceMean(x, A)          d = x - μ          σ² = ReduceMean(d², A)
    y = d / √(σ² + ε)  [· γ]  [+ β]        ==   LayerNormalization(x, γ, β, axis=-k, epsilon=ε)

Spellings recognized (the Sub, square and normalize are found from the ReduceMean):

Case 1: the square is `Pow(d, 2)` or `Mul(d, d)`.
Case 2: the normalize is `Div(d, Sqrt(σ²+ε))` or `Mul(d, Reciprocal(Sqrt(σ²+ε)))`; the root
        may also be `Pow(σ²+ε, 0.5)`.  ε is added in either operand order.
Case 3: the affine tail `Mul(·, γ)` then `Add(·, β)` (each optional, either operand order) is
        absorbed when γ / β are constants that vary only over the normalized axes; they are
        copied to the normalized shape when they are not already that shape.  A γ (or β) that
        does not fit stays as its own Mul (Add) after a LayerNormalization with scale 1 (and
        whatever was absorbed before it): the rewrite is still exact.
Case 4: ReduceMean axes as an attribute (opset < 18) or as a constant input (opset >= 18).

Refused (with the reason): axes not the trailing axes or different between the two means,
keepdims=0, ε or the axes not constant, an exponent other than 2, an intermediate read
outside the pattern, non-static normalized dims, opset < 17, a non-float dtype.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from edgekiln.compiler.graph import Graph
from edgekiln.compiler.pass_contract import RewritePass, node_label
from edgekiln.passes.graph_edits import (
    add_initializer,
)
from edgekiln.passes.pattern_matching import (
    first_reader,
    is_op,
    other_operand,
    replace_pattern,
)

FLOAT_TYPES = (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.DOUBLE, ir.DataType.BFLOAT16)


@dataclass
class LayerNormMatch:
    mean: ir.Node                  # ReduceMean(x)
    center: ir.Node                # Sub(x, mean)
    square: ir.Node                # Pow(d, 2) | Mul(d, d)
    variance: ir.Node              # ReduceMean(d²)
    add_eps: ir.Node               # Add(σ², ε)
    root: ir.Node                  # Sqrt | Pow(·, 0.5)
    normalize: ir.Node             # Div(d, root) | Mul(d, reciprocal)
    reciprocal: ir.Node | None = None
    scale: ir.Node | None = None   # Mul(·, γ), only when γ fits (Case 3)
    shift: ir.Node | None = None   # Add(·, β), only when β fits
    kept: list[str] = field(default_factory=list)  # why an affine tail node stayed

    @property
    def name(self) -> str:
        return self.mean.name

    @property
    def x(self) -> ir.Value:
        return self.mean.inputs[0]

    @property
    def eps(self) -> ir.Value:
        return other_operand(self.add_eps, self.variance.outputs[0])

    @property
    def nodes(self) -> list[ir.Node]:
        chain = [self.mean, self.center, self.square, self.variance, self.add_eps, self.root,
                 self.reciprocal, self.normalize, self.scale, self.shift]
        return [n for n in chain if n is not None]

    @property
    def output(self) -> ir.Value:
        return self.nodes[-1].outputs[0]


class RecognizeLayerNormPass(RewritePass[LayerNormMatch]):
    name = "recognize-layer-norm"

    def match(self, graph: Graph) -> Iterable[LayerNormMatch]:
        matches = []
        for node in graph.main:
            if is_op(node, "ReduceMean"):
                found = _parse(node)
                if found is not None:
                    matches.append(found)
        return matches

    def check(self, graph: Graph, m: LayerNormMatch) -> str | None:
        if any(n.graph is not graph.main for n in m.nodes):
            return "already rewritten by an overlapping match"
        if graph.opset() < 17:
            return f"opset {graph.opset()} has no LayerNormalization (needs 17)"
        if m.x.dtype not in FLOAT_TYPES:
            return f"input dtype {m.x.dtype} is not a float type"
        shape = Graph.static_shape(m.x)
        if shape is None:
            return "the input shape is not static"
        axes, reason = _trailing_axes(m.mean, len(shape))
        if reason:
            return reason
        var_axes, reason = _trailing_axes(m.variance, len(shape))
        if reason:
            return reason
        if var_axes != axes:
            return f"the mean reduces axes {axes} but the variance reduces {var_axes}"
        if m.square.op_type == "Pow" and not _is_scalar(m.square.inputs[1], 2.0):
            return "the square is a Pow whose exponent is not the constant 2"
        if m.root.op_type == "Pow" and not _is_scalar(m.root.inputs[1], 0.5):
            return "the root is a Pow whose exponent is not the constant 0.5"
        eps = Graph.constant(m.eps)
        if eps is None:
            return "epsilon is not a constant"
        if eps.size != 1:
            return f"epsilon has {eps.size} values, not one"
        for node in m.nodes[:-1]:
            if not _private(node.outputs[0], m.nodes):
                return f"intermediate {node.outputs[0].name!r} is read outside the LayerNorm pattern"
        if m.output.shape is not None and m.output.shape != m.x.shape:
            return "a constant broadcasts the result to a different shape than the input"
        return None

    def rewrite(self, graph: Graph, m: LayerNormMatch) -> str:
        shape = Graph.static_shape(m.x)
        k = len(_trailing_axes(m.mean, len(shape))[0])
        inputs = [m.x, _affine_input(graph, m.scale, m.normalize.outputs[0], shape, k, 1.0, m.name + "/scale")]
        if m.shift is not None:
            after = (m.scale or m.normalize).outputs[0]
            inputs.append(_affine_input(graph, m.shift, after, shape, k, 0.0, m.name + "/bias"))
        eps = float(Graph.constant(m.eps).reshape(()))
        node = ir.node("LayerNormalization", inputs, {"axis": -k, "epsilon": eps})
        replace_pattern(graph, m.nodes, node, m.output, m.x)
        kept = f"; kept {', '.join(m.kept)}" if m.kept else ""
        return f"recognized LayerNorm {m.mean.name}..{m.nodes[-1].name} ({len(m.nodes)} nodes) as {node_label(node)}{kept}"


# -- parsing -------------------------------------------------------------------------------------

def _parse(mean: ir.Node) -> LayerNormMatch | None:
    """Walk forward from μ = ReduceMean(x) along the LayerNorm data flow; None when it is not one."""
    x, mu = mean.inputs[0], mean.outputs[0]
    center = first_reader(mu, "Sub", lambda n: n.inputs[0] is x and n.inputs[1] is mu)
    if center is None:
        return None
    d = center.outputs[0]
    square = first_reader(d, "Pow", lambda n: n.inputs[0] is d) or first_reader(d, "Mul", lambda n: n.inputs[0] is d and n.inputs[1] is d)
    variance = square and first_reader(square.outputs[0], "ReduceMean")
    add_eps = variance and first_reader(variance.outputs[0], "Add")
    if add_eps is None:
        return None
    ve = add_eps.outputs[0]
    root = first_reader(ve, "Sqrt") or first_reader(ve, "Pow", lambda n: n.inputs[0] is ve)
    if root is None:
        return None
    s = root.outputs[0]
    reciprocal = first_reader(s, "Reciprocal")
    if (normalize := first_reader(d, "Div", lambda n: n.inputs[0] is d and n.inputs[1] is s)) is not None:
        reciprocal = None
    elif reciprocal is not None:
        normalize = first_reader(d, "Mul", lambda n: reciprocal.outputs[0] in n.inputs)
    if normalize is None:
        return None
    m = LayerNormMatch(mean, center, square, variance, add_eps, root, normalize, reciprocal)
    _attach_affine(m)
    return m


def _attach_affine(m: LayerNormMatch) -> None:
    """Case 3: absorb γ then β when each is a single-reader constant over the normalized axes."""
    shape = Graph.static_shape(m.x)
    axes, reason = _trailing_axes(m.mean, len(shape)) if shape is not None else ([], "no shape")
    if reason:
        return  # `check` refuses the whole match and says why
    k = len(axes)
    current = m.normalize.outputs[0]
    for op, slot in (("Mul", "scale"), ("Add", "shift")):
        if len(current.uses()) != 1 or current.is_graph_output():
            return
        node = current.uses()[0][0]
        if not is_op(node, op):
            if op == "Mul":
                continue  # no γ: a following Add can still be β
            return
        other = other_operand(node, current)
        if _fits(Graph.constant(other), shape, k):
            setattr(m, slot, node)
            current = node.outputs[0]
        else:
            m.kept.append(f"{node_label(node)} ({'γ' if op == 'Mul' else 'β'} is not a constant over the normalized axes)")
            return


def _fits(value: np.ndarray | None, shape: tuple[int, ...], k: int) -> bool:
    """A constant that broadcasts over x without growing it and is constant along the leading axes."""
    if value is None or value.ndim > len(shape):
        return False
    padded = (1,) * (len(shape) - value.ndim) + value.shape
    lead, trail = padded[:len(shape) - k], padded[len(shape) - k:]
    return all(d == 1 for d in lead) and all(t in (1, s) for t, s in zip(trail, shape[len(shape) - k:]))


def _axes(node: ir.Node) -> tuple[list[int] | None, str | None]:
    """Case 4: the ReduceMean axes (attribute before opset 18, constant input from 18)."""
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        axes = Graph.constant(node.inputs[1])
        if axes is None:
            return None, "ReduceMean axes are not constant"
        return [int(a) for a in axes.reshape(-1)], None
    attribute = node.attributes.get("axes")
    if attribute is not None:
        return [int(a) for a in attribute.value], None
    if node.attributes.get_int("noop_with_empty_axes", 0):
        return None, "ReduceMean reduces no axis"
    return [], None  # empty: every axis


def _trailing_axes(node: ir.Node, rank: int) -> tuple[list[int], str | None]:
    """The reduced axes (non-negative) if they are the trailing ones, else the reason they are not."""
    axes, reason = _axes(node)
    if reason:
        return [], reason
    if node.attributes.get_int("keepdims", 1) != 1:
        return [], f"{node_label(node)} drops the reduced axes (keepdims=0)"
    if any(not -rank <= a < rank for a in axes):
        return [], f"{node_label(node)} axes {axes} are out of range for rank {rank}"
    normalized = sorted({a % rank for a in axes}) if axes else list(range(rank))
    if normalized != list(range(rank - len(normalized), rank)):
        return [], f"axes {axes} are not the trailing axes of a rank-{rank} input"
    return normalized, None


# -- small IR helpers ----------------------------------------------------------------------------


def _is_scalar(value: ir.Value, expected: float) -> bool:
    array = Graph.constant(value)
    return array is not None and array.size == 1 and abs(float(array.reshape(())) - expected) <= 1e-6 * abs(expected)


def _private(value: ir.Value, nodes: list[ir.Node]) -> bool:
    """Read only by nodes of the pattern (so removing the pattern loses nothing)."""
    return not value.is_graph_output() and all(user in nodes for user, _ in value.uses())


def _affine_input(graph: Graph, node: ir.Node | None, operand_of: ir.Value, shape: tuple[int, ...], k: int,
                  fill: float, name: str) -> ir.Value:
    """γ or β in the normalized shape: the graph's constant when it already is, else a fresh copy."""
    norm_shape, dtype = shape[len(shape) - k:], operand_of.dtype.numpy()
    if node is None:
        return add_initializer(graph, np.full(norm_shape, fill, dtype=dtype), name)
    value = other_operand(node, operand_of)
    array = Graph.constant(value)
    if array.shape == norm_shape:
        return value  # read, never mutated: sharing it is safe
    # `_fits` made sure the leading (padded) dims are 1, so dropping them keeps every value.
    trailing = array.reshape(array.shape[max(array.ndim - k, 0):]) if array.ndim > k else array
    return add_initializer(graph, np.ascontiguousarray(np.broadcast_to(trailing, norm_shape), dtype=dtype), name)
