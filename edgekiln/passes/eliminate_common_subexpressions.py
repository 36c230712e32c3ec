"""EliminateCommonSubexpressionsPass: compute each distinct expression once.

Two nodes are the same expression when they have the same op (domain, type, overload),
the same attributes and the same inputs; then f(a, b) computed twice is computed once,
and the readers of the second node read the first one's outputs:

    y1 = f(a, b); y2 = f(a, b)   ->   y1 = f(a, b); y2 := y1

"The same inputs" means:
Case 1: the very same values.  Walking the graph in topological order and merging as we go
        makes whole duplicated chains collapse in one run (their inputs merge first).
Case 2: constants with equal dtype, shape and bytes, even when they are different
        initializers: Mul(x, two_a) and Mul(x, two_b) with two_a = two_b = 2.0.
Case 3: the same values in another order, for the ops where that order cannot change a
        single bit of the result: Add, Mul, And, Or, Xor, Equal, BitwiseAnd/Or/Xor.

onnx-ir's `CommonSubexpressionEliminationPass` does Case 1.  It needs
`DeduplicateInitializersPass` first to see Case 2, and that pass makes distinct weights
that happen to be equal (the zero biases of two convs, the unit scales of untrained BNs)
one shared initializer: a later pass folding a BN into one of those convs must then copy
the weight instead of updating it, or refuse.  Case 2 here compares contents without
merging the initializers themselves: only the duplicate node's own reads go away (the
orphaned initializer is then dead-node removal's job), so this pass never gives a weight
a second reader.  Passes that fold into a weight must still check for other readers:
the model itself may share one.

A duplicate is not merged (and the reason is reported) when
* the op is random (RandomNormal, Dropout, ...): two draws are not one value;
* its domain is neither ONNX nor edgekiln: a custom op may have side effects;
* an output of both nodes is a graph output: keeping both model outputs would need an
  Identity, which saves nothing.
Nodes carrying subgraphs (If, Loop, Scan) are never compared.  When only the duplicate's
output is a graph output, the kept node's output takes its name.
"""

from __future__ import annotations

import hashlib

import onnx_ir as ir

from edgekiln.compiler.graph import Graph
from edgekiln.compiler.pass_contract import Pass, PassResult, node_label

COMMUTATIVE_OPS = frozenset({"Add", "Mul", "And", "Or", "Xor", "Equal", "BitwiseAnd", "BitwiseOr", "BitwiseXor"})
RANDOM_OPS = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
                        "Bernoulli", "Dropout"})
PURE_DOMAINS = frozenset({"", "ai.onnx", "edgekiln"})

Key = tuple


class EliminateCommonSubexpressionsPass(Pass):
    name = "eliminate-common-subexpressions"

    def run(self, graph: Graph) -> PassResult:
        result = PassResult(graph, changed=False)
        constant_keys: dict[int, Key] = {}  # id(value) -> content key, hashed once per run
        first_seen: dict[Key, ir.Node] = {}
        for node in list(graph.main):
            key = _node_key(node, constant_keys)
            if key is None:
                continue
            kept = first_seen.setdefault(key, node)
            if kept is node:
                continue
            reason = _refusal(node, kept)
            if reason is not None:
                result.not_applied.append(f"{node_label(node)}: {reason}")
                continue
            _merge(graph, node, kept)
            result.applied.append(f"merged {node_label(node)} into {node_label(kept)}")
            result.changed = True
        return result


def _refusal(duplicate: ir.Node, kept: ir.Node) -> str | None:
    if duplicate.domain in ("", "ai.onnx") and duplicate.op_type in RANDOM_OPS:
        return f"it duplicates {node_label(kept)}, but {duplicate.op_type} is random: two draws are not one value"
    if duplicate.domain not in PURE_DOMAINS:
        return f"it duplicates {node_label(kept)}, but ops of domain {duplicate.domain!r} may have side effects"
    for old, new in zip(duplicate.outputs, kept.outputs):
        if old.is_graph_output() and new.is_graph_output():
            return f"it duplicates {node_label(kept)}, but both outputs are graph outputs"
    return None


def _merge(graph: Graph, duplicate: ir.Node, kept: ir.Node) -> None:
    renames = []
    for old, new in zip(duplicate.outputs, kept.outputs):
        if old.is_graph_output():
            renames.append((new, old.name))  # the model's output keeps its name
        old.replace_all_uses_with(new, replace_graph_outputs=True)
    graph.main.remove(duplicate, safe=True)
    for value, name in renames:
        value.name = name


def _node_key(node: ir.Node, constant_keys: dict[int, Key]) -> Key | None:
    """What makes two nodes the same expression; None for nodes never compared."""
    if not node.outputs:
        return None
    attributes = []
    for name, attr in sorted(node.attributes.items()):
        value = _attribute_key(attr)
        if value is None:
            return None
        attributes.append((name, value))
    inputs = [_value_key(v, constant_keys) for v in node.inputs]
    if node.op_type in COMMUTATIVE_OPS and node.domain in ("", "ai.onnx"):
        inputs.sort(key=repr)  # Case 3
    return (node.domain, node.op_type, node.overload, len(node.outputs), tuple(inputs), tuple(attributes))


def _value_key(value: ir.Value | None, constant_keys: dict[int, Key]) -> Key:
    if value is None:
        return ("absent",)
    if id(value) not in constant_keys:
        tensor = value.const_value
        if tensor is None or value.is_graph_input():
            constant_keys[id(value)] = ("value", id(value))  # Case 1
        else:
            constant_keys[id(value)] = ("constant", *_tensor_key(tensor))  # Case 2
    return constant_keys[id(value)]


def _tensor_key(tensor: ir.TensorProtocol) -> Key:
    if tensor.dtype == ir.DataType.STRING:
        return (tensor.dtype.name, tuple(tensor.shape), tuple(tensor.numpy().ravel().tolist()))
    # sha256 of the bytes: equal keys mean equal contents for all practical purposes.
    digest = hashlib.sha256(tensor.numpy().tobytes()).hexdigest()
    return (tensor.dtype.name, tuple(tensor.shape), digest)


def _attribute_key(attr: ir.Attr) -> Key | None:
    kind = attr.type
    if kind in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS,
                ir.AttributeType.SPARSE_TENSOR, ir.AttributeType.SPARSE_TENSORS):
        return None
    if kind == ir.AttributeType.TENSOR:
        return (kind.name, _tensor_key(attr.value))
    if kind == ir.AttributeType.TENSORS:
        return (kind.name, tuple(_tensor_key(t) for t in attr.value))
    if kind == ir.AttributeType.FLOAT:
        return (kind.name, repr(attr.value))  # repr keeps -0.0 apart from 0.0
    if kind == ir.AttributeType.FLOATS:
        return (kind.name, tuple(repr(v) for v in attr.value))
    if kind in (ir.AttributeType.INTS, ir.AttributeType.STRINGS):
        return (kind.name, tuple(attr.value))
    if kind in (ir.AttributeType.TYPE_PROTO, ir.AttributeType.TYPE_PROTOS):
        return (kind.name, repr(attr.value))
    return (kind.name, attr.value)
