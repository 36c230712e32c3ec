"""MarkAttentionPass: find scaled-dot-product attention and mark its nodes as one block.

    Attention(Q, K, V) = softmax(s·Q·Kᵀ + M) · V        (softmax over the last axis)

Nothing is rewritten: each node of an attention gets the block annotation that block
partitioning also writes, so a backend can run the unit as one kernel (scores kept on chip):

    node.metadata_props["edgekiln.block"]      = "attention_<n>"
    node.metadata_props["edgekiln.block_kind"] = "attention"

The unit, found from the Softmax:

Case 1: `MatMul(Q', K') -> [scale] -> [Add(·, M)] -> Softmax -> MatMul(·, V)`, the scale a
        `Mul`/`Div` by a constant, before or after the mask Add.
Case 2: the scale applied to an operand before the first MatMul (`MatMul(Mul(Q, s), K')`), and
        the `Transpose` that makes Kᵀ: both join the unit when only the attention reads them.
Case 3: the softmax written as `Flatten(axis=r-1) -> Softmax -> Reshape(back)`, which is what the
        opset converter leaves for an opset < 13 softmax over the last axis (PP-OCR rec).

Refused (with the reason): a constant Q·Kᵀ operand (a linear layer, not attention), a softmax
over another axis, a non-constant scale, a score read outside the unit, a node already in
another block.  `changed` is True only when a new attention is marked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import onnx_ir as ir

from edgekiln.compiler.graph import Graph
from edgekiln.compiler.pass_contract import RewritePass, node_label
from edgekiln.passes.pattern_matching import is_op

BLOCK_KEY = "edgekiln.block"
BLOCK_KIND_KEY = "edgekiln.block_kind"
KIND = "attention"


@dataclass
class AttentionMatch:
    scores: ir.Node                     # MatMul(Q', K')
    softmax: ir.Node
    output: ir.Node                     # MatMul(P, V)
    between: list[ir.Node] = field(default_factory=list)   # scale / mask Add / Flatten / Reshape
    operands: list[ir.Node] = field(default_factory=list)  # Case 2: pre-scale, Kᵀ Transpose
    scales: list[tuple[ir.Node, ir.Value]] = field(default_factory=list)  # (Mul/Div, its factor)
    flatten: ir.Node | None = None

    @property
    def name(self) -> str:
        return self.softmax.name

    @property
    def nodes(self) -> list[ir.Node]:
        return [*self.operands, self.scores, *self.between, self.softmax, *self._after_softmax(), self.output]

    def _after_softmax(self) -> list[ir.Node]:
        reshape = self.softmax.outputs[0].uses()[0][0] if self.flatten is not None else None
        return [reshape] if reshape is not None else []


class MarkAttentionPass(RewritePass[AttentionMatch]):
    name = "mark-attention"

    def match(self, graph: Graph) -> Iterable[AttentionMatch]:
        matches = []
        for node in graph.main:
            found = _parse(node) if is_op(node, "Softmax") else None
            # An attention marked by an earlier run is not proposed again (idempotence).
            if found is not None and not all(n.metadata_props.get(BLOCK_KIND_KEY) == KIND for n in found.nodes):
                matches.append(found)
        return matches

    def check(self, graph: Graph, m: AttentionMatch) -> str | None:
        q, k = m.scores.inputs[0], m.scores.inputs[1]
        if Graph.constant(q) is not None or Graph.constant(k) is not None:
            return "Q·Kᵀ has a constant operand (a linear layer, not attention)"
        if Graph.constant(m.output.inputs[1]) is not None:
            return "V is a constant (a linear layer after a softmax, not attention)"
        reason = _softmax_reason(graph, m)
        if reason:
            return reason
        for scale, factor in m.scales:
            array = Graph.constant(factor)
            if array is None or array.size != 1:
                return f"the scale {node_label(scale)} is not by a single constant"
        nodes = m.nodes
        for node in nodes[:-1]:
            value = node.outputs[0]
            if value.is_graph_output() or any(user not in nodes for user, _ in value.uses()):
                return f"{value.name!r} is read outside the attention"
        for node in nodes:
            block = node.metadata_props.get(BLOCK_KEY)
            if block is not None and node.metadata_props.get(BLOCK_KIND_KEY) != KIND:
                return f"{node_label(node)} already belongs to block {block!r}"
        return None

    def rewrite(self, graph: Graph, m: AttentionMatch) -> str:
        # A unit that grew around an attention marked earlier keeps that attention's label.
        earlier = [n.metadata_props[BLOCK_KEY] for n in m.nodes if n.metadata_props.get(BLOCK_KIND_KEY) == KIND]
        label = earlier[0] if earlier else f"{KIND}_{_next_index(graph)}"
        for node in m.nodes:
            node.metadata_props[BLOCK_KEY] = label
            node.metadata_props[BLOCK_KIND_KEY] = KIND
        ops = " -> ".join(n.op_type for n in m.nodes)
        return f"marked {label}: {len(m.nodes)} nodes from {m.scores.name} to {m.output.name} ({ops})"


# -- parsing ---------------------------------------------------------------------------------

def _parse(softmax: ir.Node) -> AttentionMatch | None:
    """Walk back from the Softmax to Q·Kᵀ and forward to ·V; None when it is not that shape."""
    scores_in, flatten, probs = softmax.inputs[0], None, softmax.outputs[0]
    producer = scores_in.producer()
    if producer is not None and is_op(producer, "Flatten"):  # Case 3
        reshape = _only_user(probs)
        if reshape is None or not is_op(reshape, "Reshape"):
            return None
        flatten, scores_in, probs = producer, producer.inputs[0], reshape.outputs[0]
    output = next((u for u, i in probs.uses() if is_op(u, "MatMul") and i == 0), None)
    if output is None:
        return None
    chain = _back_to_matmul(scores_in)
    if chain is None:
        return None
    scores, between, scales = chain
    m = AttentionMatch(scores, softmax, output, [*between, *([flatten] if flatten else [])], scales=scales,
                       flatten=flatten)
    # Case 2: operand-side scale and the Kᵀ transpose, when only this attention reads them.
    for value in scores.inputs:
        node = value.producer()
        if node is not None and _only_user(value) is scores:
            if is_op(node, "Mul") or is_op(node, "Div"):
                factors = [node.inputs[1]] if is_op(node, "Div") else list(node.inputs)
                factor = next((f for f in factors if Graph.constant(f) is not None), None)
                if factor is not None:
                    m.operands.append(node)
                    m.scales.append((node, factor))
            elif is_op(node, "Transpose") and value is scores.inputs[1]:
                m.operands.append(node)
    return m


def _back_to_matmul(value: ir.Value, seen_scale: bool = False, seen_mask: bool = False):
    """Case 1: from the softmax input back through at most one scale and one mask Add to a MatMul."""
    node = value.producer()
    if node is None:
        return None
    if is_op(node, "MatMul"):
        return node, [], []
    if (is_op(node, "Mul") or is_op(node, "Div")) and not seen_scale:
        operands = [node.inputs[0]] if is_op(node, "Div") else list(node.inputs)
        for operand in operands:
            found = _back_to_matmul(operand, True, seen_mask)
            if found:
                factor = node.inputs[1] if operand is node.inputs[0] else node.inputs[0]
                return found[0], [*found[1], node], [*found[2], (node, factor)]
    if is_op(node, "Add") and not seen_mask:
        for operand in node.inputs:
            found = _back_to_matmul(operand, seen_scale, True)
            if found:
                return found[0], [*found[1], node], found[2]
    return None


def _softmax_reason(graph: Graph, m: AttentionMatch) -> str | None:
    """None when the softmax normalizes the last axis of the scores."""
    default = -1 if graph.opset() >= 13 else 1
    axis = m.softmax.attributes.get_int("axis", default)
    scores_shape = Graph.static_shape(m.scores.outputs[0])
    if m.flatten is None:
        rank = len(m.softmax.inputs[0].shape) if m.softmax.inputs[0].shape is not None else None
        if rank is None:
            return "the scores' rank is unknown"
        if axis % rank != rank - 1:
            return f"the Softmax normalizes axis {axis}, not the last axis"
        return None
    # Case 3: Flatten(axis=r-1) makes rows of the last axis; the Reshape must restore the shape.
    if scores_shape is None:
        return "the scores' shape is not static"
    rank = len(scores_shape)
    if m.flatten.attributes.get_int("axis", 1) % rank != rank - 1 or axis % 2 != 1:
        return "the flattened Softmax does not normalize the last axis"
    reshaped = m.nodes[m.nodes.index(m.softmax) + 1].outputs[0]
    if Graph.static_shape(reshaped) != scores_shape:
        return "the Reshape after the flattened Softmax does not restore the scores' shape"
    return None


def _next_index(graph: Graph) -> int:
    """One past the highest attention_<n> already in the graph (labels stay unique across runs)."""
    used = [int(found.group(1)) for n in graph.main
            if (found := re.fullmatch(rf"{KIND}_(\d+)", n.metadata_props.get(BLOCK_KEY, "")))]
    return max(used, default=-1) + 1


def _only_user(value: ir.Value) -> ir.Node | None:
    users = value.uses()
    return users[0][0] if len(users) == 1 and not value.is_graph_output() else None
