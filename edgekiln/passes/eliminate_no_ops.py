"""EliminateNoOpsPass: remove nodes that compute the identity, y = x.

A node is bypassed (its readers read x instead, and it is deleted) when y equals x in
shape, dtype and every element:

Case 1: Reshape / Flatten / Squeeze / Unsqueeze / Expand whose static output shape equals
        its input shape (row-major data order is untouched, so equal shapes mean y = x).
Case 2: Transpose with the identity perm, or one that only moves size-1 axes and leaves
        the shape unchanged (the row-major order of the elements is the same).
Case 3: Transpose(Transpose(x, p), q) whose perms compose to the identity,
        p[q[i]] = i for all i: both cancel, y = x.
Case 4: Transpose(Transpose(x, p), q) otherwise: one Transpose(x, r) with r[i] = p[q[i]],
        when the inner Transpose has no other reader.
Case 5: Mul(x, 1), Mul(1, x), Div(x, 1) with a constant exactly 1: x * 1 = x / 1 = x
        bit for bit (NaN and -0.0 included).
Case 6: Add(x, 0), Add(0, x), Sub(x, 0) with a constant exactly 0.  x + 0 = x except that
        -0.0 + 0.0 = +0.0; the two compare equal, and ONNX Runtime and onnxsim drop the Add
        as well.
Case 7: Pad with all-zero pads (any mode).
Case 8: Slice with unit steps whose output shape equals its input shape (a unit-step window
        as long as the axis starts at 0: it keeps the full range).
Case 9: Cast / CastLike to the dtype x already has.
Case 10: Concat / Sum / Max / Min / Mean of a single input.

In Cases 5 and 6 the constant must not broadcast x up: Mul(x[3], ones[2, 3]) has shape
[2, 3] and stays.  Multipliers within 1e-6 of 1 (0.99999994, left by float rounding) are
listed as candidates only so `--explain` can say why they stay; near-zero addends are
not, as they are mostly deliberate epsilons.  Identity and inference Dropout are
EliminateIdentityPass's job; constant operands are FoldConstantsPass's.

A node whose output is a graph output stays when x is a graph input, a graph output or a
constant: bypassing it would merge two model boundary values or turn a weight into an
output.  Otherwise x takes the graph output's name, so the model's outputs keep theirs.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx_ir as ir

from edgekiln.compiler.graph import Graph
from edgekiln.compiler.pass_contract import RewritePass, node_label

RESHAPING_OPS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Expand")  # Case 1
SINGLE_INPUT_OPS = ("Concat", "Sum", "Max", "Min", "Mean")  # Case 10
# Cases 5 and 6: the neutral operand of each op, and how near to it a constant must be to
# be worth a "not applied" line.
NEUTRAL = {"Mul": (1.0, 1e-6), "Div": (1.0, 1e-6), "Add": (0.0, 0.0), "Sub": (0.0, 0.0)}


class EliminateNoOpsPass(RewritePass[ir.Node]):
    name = "eliminate-no-ops"

    def match(self, graph: Graph) -> Iterable[ir.Node]:
        return [n for n in graph.main if n.domain in ("", "ai.onnx") and self._looks_like_no_op(n)]

    def check(self, graph: Graph, node: ir.Node) -> str | None:
        op = node.op_type
        if _is_transpose_pair(node):
            return self._check_transpose_pair(node)
        if op in NEUTRAL:
            reason = self._check_arithmetic(node)
        elif op in RESHAPING_OPS or op in ("Transpose", "Pad", "Slice"):
            reason = self._check_same_shape(node)
        elif op in ("Cast", "CastLike"):
            source, target = node.inputs[0].dtype, _cast_target(node)
            reason = None if source is not None and source == target else (
                f"it changes the dtype from {_name(source)} to {_name(target)}")
        else:
            reason = None  # Case 10: one input, nothing else to check
        return reason or _check_bypass(node, _data_input(node))

    def rewrite(self, graph: Graph, node: ir.Node) -> str:
        if _is_transpose_pair(node):
            inner = node.inputs[0].producer()
            perm = _compose(_perm(inner), _perm(node))
            if perm != list(range(len(perm))):  # Case 4
                node.replace_input_with(0, inner.inputs[0])
                node.attributes["perm"] = ir.AttrInt64s("perm", perm)
                _remove_if_dead(graph, inner)
                return f"merged {node_label(inner)} into {node_label(node)} (perm {perm})"
            _bypass(graph, node, inner.inputs[0])  # Case 3
            _remove_if_dead(graph, inner)
            return f"removed {node_label(inner)} and {node_label(node)}: their perms cancel"
        _bypass(graph, node, _data_input(node))
        return f"removed {node_label(node)}: it computes the identity"

    # -- candidates ------------------------------------------------------------------
    @staticmethod
    def _looks_like_no_op(node: ir.Node) -> bool:
        """Cheap pre-selection: nodes that are no-ops unless a caveat in `check` says otherwise."""
        op = node.op_type
        if op in RESHAPING_OPS or op == "Slice":
            shapes = Graph.static_shape(node.inputs[0]), Graph.static_shape(node.outputs[0])
            return None in shapes or shapes[0] == shapes[1]
        if op == "Transpose":
            return _moves_only_unit_axes(node) or _is_transpose_pair(node)
        if op in NEUTRAL:
            return _neutral_operand(node) is not None
        if op == "Pad":
            pads = Graph.constant(node.inputs[1]) if len(node.inputs) > 1 else None
            return pads is not None and not pads.any()
        if op in ("Cast", "CastLike"):
            return node.inputs[0].dtype is not None and node.inputs[0].dtype == _cast_target(node)
        return op in SINGLE_INPUT_OPS and len(node.inputs) == 1

    # -- checks ----------------------------------------------------------------------
    @staticmethod
    def _check_same_shape(node: ir.Node) -> str | None:
        """Cases 1, 2, 7, 8: the output must have the input's static shape."""
        in_shape, out_shape = Graph.static_shape(node.inputs[0]), Graph.static_shape(node.outputs[0])
        if in_shape is None or out_shape is None:
            return "its input or output shape is not static"
        if in_shape != out_shape:
            return f"it changes the shape from {list(in_shape)} to {list(out_shape)}"
        if node.op_type == "Slice" and len(node.inputs) > 4 and node.inputs[4] is not None:
            steps = Graph.constant(node.inputs[4])
            if steps is None or not np.all(steps == 1):
                return "its steps are not all constant 1 (it may reverse an axis)"
        return None

    @staticmethod
    def _check_arithmetic(node: ir.Node) -> str | None:
        """Cases 5 and 6: exactly 1 (or 0), on the side where it is neutral, without broadcasting."""
        neutral, _ = NEUTRAL[node.op_type]
        index = _neutral_operand(node)
        constant = Graph.constant(node.inputs[index])
        if not np.all(constant == neutral):
            off = constant.flat[np.argmax(np.abs(constant.astype(np.float64) - neutral))]
            return f"the constant is {float(off):.9g}, not exactly {neutral:g}"
        source = node.inputs[1 - index]
        in_shape, out_shape = Graph.static_shape(source), Graph.static_shape(node.outputs[0])
        if in_shape is None or out_shape is None:
            return "its input or output shape is not static"
        if in_shape != out_shape:
            return f"the constant broadcasts the result up from {list(in_shape)} to {list(out_shape)}"
        return None

    @staticmethod
    def _check_transpose_pair(node: ir.Node) -> str | None:
        """Cases 3 and 4."""
        inner = node.inputs[0].producer()
        perm = _compose(_perm(inner), _perm(node))
        if perm == list(range(len(perm))):  # Case 3
            return _check_bypass(node, inner.inputs[0])
        if node.inputs[0].is_graph_output() or len(node.inputs[0].uses()) > 1:
            return f"the inner {node_label(inner)} is read elsewhere, so merging saves nothing"
        return None  # Case 4 keeps the outer node and its output


def _check_bypass(node: ir.Node, source: ir.Value | None) -> str | None:
    """Why `node`'s output cannot be replaced by `source`, or None."""
    if source is None:
        return "it has no data input"
    if node.outputs[0].is_graph_output():
        if source.is_graph_input() or source.is_graph_output():
            return "it joins a graph input or output to a graph output"
        if source.const_value is not None:
            return "its input is a constant and its output a graph output"
    return None


def _bypass(graph: Graph, node: ir.Node, source: ir.Value) -> None:
    result = node.outputs[0]
    output_name = result.name if result.is_graph_output() else None
    result.replace_all_uses_with(source, replace_graph_outputs=True)
    graph.main.remove(node, safe=True)
    if output_name is not None:
        source.name = output_name  # the model's output keeps its name


def _remove_if_dead(graph: Graph, node: ir.Node) -> None:
    # The inner Transpose of Cases 3/4 is dead when its one reader was the outer one.
    if not any(v.uses() or v.is_graph_output() for v in node.outputs):
        graph.main.remove(node, safe=True)


def _data_input(node: ir.Node) -> ir.Value | None:
    """The operand that flows through: x in Mul(x, 1) / Add(0, x); the first input otherwise."""
    if node.op_type in NEUTRAL:
        return node.inputs[1 - _neutral_operand(node)]
    return node.inputs[0] if node.inputs else None


def _neutral_operand(node: ir.Node) -> int | None:
    """Cases 5/6: the index (1 preferred) of a constant operand near the op's neutral value.

    Div(1, x) and Sub(0, x) are not no-ops, so only their second operand counts.
    """
    neutral, tolerance = NEUTRAL[node.op_type]
    if len(node.inputs) != 2:
        return None
    for index in (1,) if node.op_type in ("Div", "Sub") else (1, 0):
        constant = Graph.constant(node.inputs[index])
        if constant is None or constant.size == 0 or constant.dtype == np.bool_:
            continue
        if np.issubdtype(constant.dtype, np.number) and np.all(
                np.abs(constant.astype(np.float64) - neutral) <= tolerance):
            return index
    return None


def _is_transpose_pair(node: ir.Node) -> bool:
    """Cases 3/4: a Transpose of a Transpose (unless it is a no-op on its own, Case 2)."""
    return (node.op_type == "Transpose" and _producer_op(node.inputs[0]) == "Transpose"
            and not _moves_only_unit_axes(node))


def _moves_only_unit_axes(node: ir.Node) -> bool:
    """Case 2: the shape is unchanged and the non-1 axes keep their order (so do the elements)."""
    shape = Graph.static_shape(node.inputs[0])
    perm = _perm(node)
    if perm == list(range(len(perm))):
        return True
    if shape is None or sorted(perm) != list(range(len(shape))):
        return False
    kept = [axis for axis in perm if shape[axis] != 1]
    return kept == sorted(kept) and [shape[axis] for axis in perm] == list(shape)


def _perm(node: ir.Node) -> list[int]:
    perm = node.attributes.get_ints("perm")
    if perm is None:  # the default reverses the axes
        shape = node.inputs[0].shape
        rank = len(shape) if shape is not None else 0
        return list(range(rank))[::-1]
    return list(perm)


def _compose(inner: list[int], outer: list[int]) -> list[int]:
    """Transpose(Transpose(x, inner), outer) == Transpose(x, r) with r[i] = inner[outer[i]]."""
    return [inner[axis] for axis in outer]


def _producer_op(value: ir.Value | None) -> str | None:
    producer = value.producer() if value is not None else None
    if producer is None or producer.domain not in ("", "ai.onnx"):
        return None
    return producer.op_type


def _cast_target(node: ir.Node) -> ir.DataType | None:
    if node.op_type == "CastLike":
        return node.inputs[1].dtype if len(node.inputs) > 1 and node.inputs[1] is not None else None
    to = node.attributes.get_int("to")
    return ir.DataType(to) if to is not None else None


def _name(dtype: ir.DataType | None) -> str:
    return dtype.name if dtype is not None else "an unknown dtype"
