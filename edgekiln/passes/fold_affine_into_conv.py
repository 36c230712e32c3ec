"""FoldAffineIntoConvPass: fold a per-channel Mul/Add/Sub/Div by a constant into the conv before it.

A Conv, ConvTranspose or Gemm is linear in its weights, separately per output channel o:

    y[o] = W[o] ⋆ x + b[o]

so a following affine map that is the same at every position except the channel,
z = s·y + t, folds into the weights and bias:

    z[o] = (s[o]·W[o]) ⋆ x + (s[o]·b[o] + t[o])        W' = W·s,  b' = b·s + t

Case 1: Mul(y, c) or Mul(c, y) -> s = c;   Div(y, c) -> s = 1/c (a zero divisor is refused).
Case 2: Add(y, c) or Add(c, y) -> t = c;   Sub(y, c) -> t = -c.
Case 3: Sub(c, y)              -> s = -1, t = c.

c must be constant along every axis but the output-channel axis (shape [C,1,1], [1,C,1,1],
[1] or a scalar after a 2-D Conv; [N], [1,N] or a scalar after a Gemm), and must not make
the output larger by broadcasting; otherwise it would scale spatial positions differently.

"Output channel o" per producer (`fold_affine` does the math, BN folding reuses it):

    Conv           W [Cout, Cin/g, k...]   W[o] scaled
    ConvTranspose  W [Cin, Cout/g, k...]   o = gi·Cout/g + j is W[gi·Cin/g:(gi+1)·Cin/g, j]
    Gemm           alpha·A·B + beta·C      column o of B (row o when transB=1);
                                           C' = beta·C·s + t and beta := 1
    MatMul         A·B, B a 2-D constant   column o of B; the shift stays an Add after it

A MatMul has no bias input, so after a MatMul this pass folds only scales (Case 1, the -1
of Case 3); MatMul + Add is left to fuse-matmul-add, which makes it a Gemm.

Refused: a non-constant operand, a constant that varies along a non-channel axis, a producer
output read by other nodes or being a graph output, and weights shared with another node.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from edgekiln.compiler.graph import Graph
from edgekiln.compiler.pass_contract import RewritePass, node_label
from edgekiln.passes.graph_edits import (
    add_initializer,
    bypass,
    describe_nodes,
    float_attr,
    int_attr,
    readers_other_than,
    set_constant_input,
    unique_name,
    unique_node_name,
)

FOLDABLE_PRODUCERS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
AFFINE_OPS = ("Mul", "Add", "Sub", "Div")
FLOAT_TYPES = (ir.DataType.FLOAT, ir.DataType.DOUBLE, ir.DataType.FLOAT16, ir.DataType.BFLOAT16)


def output_channels(producer: ir.Node, out_rank: int) -> tuple[int, int] | str:
    """(axis, count) of `producer`'s output channels, or why its weights cannot be read."""
    weights = Graph.constant(producer.inputs[1]) if len(producer.inputs) > 1 else None
    if weights is None:
        what = "right operand is" if producer.op_type == "MatMul" else "weights are"
        return f"{producer.op_type} {what} not a constant initializer"
    if producer.op_type == "Conv":
        return 1, weights.shape[0]
    if producer.op_type == "ConvTranspose":
        return 1, weights.shape[1] * int_attr(producer, "group", 1)
    if producer.op_type == "Gemm":
        return 1, weights.shape[0] if int_attr(producer, "transB", 0) else weights.shape[1]
    if weights.ndim != 2:
        return f"MatMul right operand is {weights.ndim}-D, not a 2-D weight matrix"
    return out_rank - 1, weights.shape[1]


def channel_vector(const: np.ndarray, out_shape: tuple[int, ...], axis: int) -> np.ndarray | str:
    """The per-channel vector [C] that `const` amounts to when broadcast against `out_shape`."""
    if const.ndim > len(out_shape):
        return f"the constant {list(const.shape)} broadcasts the output {list(out_shape)} to a higher rank"
    aligned = const.reshape((1,) * (len(out_shape) - const.ndim) + const.shape)
    for i, (c, o) in enumerate(zip(aligned.shape, out_shape)):
        if c not in (1, o):  # valid ONNX only when o == 1: the output would grow
            return f"the constant {list(const.shape)} broadcasts the output {list(out_shape)} to a larger shape"
        if c != 1 and i != axis:
            return (f"the constant {list(const.shape)} varies along axis {i}, "
                    f"not only along the output-channel axis {axis}")
    return np.broadcast_to(aligned.reshape(-1).astype(np.float64), (out_shape[axis],))


def fold_blocker(graph: Graph, producer: ir.Node, reader: ir.Node) -> str | None:
    """Why `producer` cannot absorb a per-channel affine map applied by `reader`, or None."""
    op = producer.op_type
    out = producer.outputs[0]
    if out.is_graph_output():
        return f"{op} output is a graph output"
    others = readers_other_than(out, reader)
    if others:
        return f"{op} output has other readers: {describe_nodes(others)}"
    if Graph.static_shape(out) is None:
        return f"{op} output shape is not static"
    if out.type is None or out.type.dtype not in FLOAT_TYPES:
        return f"{op} output is not floating point"
    channels = output_channels(producer, len(Graph.static_shape(out)))
    if isinstance(channels, str):
        return channels
    weights = producer.inputs[1]
    if weights.is_graph_output():
        return "weights are also a graph output"
    sharing = readers_other_than(weights, producer)
    if sharing:
        return f"weights are shared with node {describe_nodes(sharing)}"
    bias = producer.inputs[2] if op != "MatMul" and len(producer.inputs) > 2 else None
    if bias is not None and Graph.constant(bias) is None:
        return f"{op} bias is not a constant initializer"
    return None


def fold_affine(graph: Graph, producer: ir.Node, scale: np.ndarray | None, shift: np.ndarray | None) -> ir.Value:
    """Fold z = scale·y + shift (vectors over output channels) into `producer`; returns the value now holding z.

    The caller has checked `fold_blocker`.  For a MatMul with a shift, an Add is inserted
    after it and its output is returned; otherwise the producer's own output.
    """
    op = producer.op_type
    w = Graph.constant(producer.inputs[1])
    if scale is not None:
        # Scale along the weights' output-channel axis, computed in float64, stored in W's dtype.
        if op == "Conv":
            w_new = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
        elif op == "ConvTranspose":
            group = int_attr(producer, "group", 1)
            grouped = w.reshape((group, w.shape[0] // group) + w.shape[1:])
            w_new = (grouped * scale.reshape((group, 1, -1) + (1,) * (w.ndim - 2))).reshape(w.shape)
        elif op == "Gemm" and int_attr(producer, "transB", 0):
            w_new = w * scale[:, None]
        else:  # Gemm with transB=0, MatMul: columns of B
            w_new = w * scale[None, :]
        set_constant_input(graph, producer, 1, w_new.astype(w.dtype), f"{producer.name}_weight")
    if op == "MatMul":
        return _matmul_shift(graph, producer, shift, w.dtype)
    has_bias = len(producer.inputs) > 2 and producer.inputs[2] is not None
    bias = Graph.constant(producer.inputs[2]).astype(np.float64) if has_bias else None
    if bias is None and shift is None:
        return producer.outputs[0]
    channels = len(scale) if scale is not None else len(shift)
    s = scale if scale is not None else np.ones(channels)
    t = shift if shift is not None else np.zeros(channels)
    if op == "Gemm":
        beta = float_attr(producer, "beta", 1.0)
        new_bias = beta * bias * s + t if bias is not None else t
        producer.attributes["beta"] = ir.AttrFloat32("beta", 1.0)
    else:
        new_bias = (bias * s + t) if bias is not None else t
    set_constant_input(graph, producer, 2, np.asarray(new_bias).astype(w.dtype), f"{producer.name}_bias")
    return producer.outputs[0]


def _matmul_shift(graph: Graph, matmul: ir.Node, shift: np.ndarray | None, dtype: np.dtype) -> ir.Value:
    if shift is None or not np.any(shift):
        return matmul.outputs[0]
    out = matmul.outputs[0]
    bias = add_initializer(graph, shift.astype(dtype), f"{matmul.name}_bias")
    add = ir.node("Add", [out, bias], name=unique_node_name(graph, f"{matmul.name}_bias_add"))
    add.outputs[0].name = unique_name(graph, f"{add.name}_out")
    add.outputs[0].shape = out.shape
    add.outputs[0].type = out.type
    graph.main.insert_after(matmul, add)
    return add.outputs[0]


@dataclass
class _Plan:
    producer: ir.Node
    scale: np.ndarray | None
    shift: np.ndarray | None


class FoldAffineIntoConvPass(RewritePass[ir.Node]):
    name = "fold-affine-into-conv"

    def match(self, graph: Graph) -> Iterable[ir.Node]:
        # Chains (Conv -> Mul -> Add) are matched whole: each link folds once the one before has.
        chain: set[int] = set()
        matches = []
        for node in graph.main:
            if node.op_type in FOLDABLE_PRODUCERS and node.domain in ("", "ai.onnx"):
                chain.add(id(node.outputs[0]))
                continue
            split = _split_operands(node)
            if split is None or id(split[0]) not in chain:
                continue
            if _is_matmul_bias(split[0].producer(), node.op_type, split[2]):
                continue  # MatMul + bias is fuse-matmul-add's (Case 2 after a MatMul)
            matches.append(node)
            chain.add(id(node.outputs[0]))
        return matches

    def check(self, graph: Graph, node: ir.Node) -> str | None:
        plan = self._plan(graph, node)
        return plan if isinstance(plan, str) else None

    def rewrite(self, graph: Graph, node: ir.Node) -> str:
        plan = self._plan(graph, node)
        assert isinstance(plan, _Plan)
        result = fold_affine(graph, plan.producer, plan.scale, plan.shift)
        bypass(graph, node, result)
        return f"folded {node_label(node)} into {node_label(plan.producer)}"

    def _plan(self, graph: Graph, node: ir.Node) -> _Plan | str:
        variable, const, const_index = _split_operands(node)
        producer = variable.producer()
        if producer is None or producer.op_type not in FOLDABLE_PRODUCERS or producer.domain not in ("", "ai.onnx"):
            source = "a graph input" if producer is None else node_label(producer)
            return f"its input comes from {source}, which has no weights to fold into"
        if const is None:
            return f"{node.inputs[const_index].name} is not a constant initializer"
        blocker = fold_blocker(graph, producer, node)
        if blocker is not None:
            return blocker
        out_shape = Graph.static_shape(producer.outputs[0])
        axis, count = output_channels(producer, len(out_shape))
        if out_shape[axis] != count:
            return f"{producer.op_type} output has {out_shape[axis]} channels, its weights {count}"
        vector = channel_vector(const, out_shape, axis)
        if isinstance(vector, str):
            return vector
        op = node.op_type
        if op == "Div" and not np.all(vector):
            return "the divisor has a zero"
        if _is_matmul_bias(producer, op, const_index):
            return "MatMul has no bias input (fuse-matmul-add makes MatMul + Add a Gemm)"
        if op == "Mul":  # Case 1
            return _Plan(producer, vector, None)
        if op == "Div":
            return _Plan(producer, 1.0 / vector, None)
        if op == "Add":  # Case 2
            return _Plan(producer, None, vector)
        if const_index == 1:  # Sub(y, c)
            return _Plan(producer, None, -vector)
        return _Plan(producer, -np.ones_like(vector), vector)  # Case 3: Sub(c, y)


def _is_matmul_bias(producer: ir.Node, op: str, const_index: int) -> bool:
    return producer.op_type == "MatMul" and (op == "Add" or (op == "Sub" and const_index == 1))


def _split_operands(node: ir.Node) -> tuple[ir.Value, np.ndarray | None, int] | None:
    """(variable operand, constant or None, the constant's input index) of a binary op.

    The "constant" side is the operand no node produces (an initializer or a graph input);
    it is None when that operand can change at run time (a graph input), which `_plan`
    reports.  A binary op of two computed values is not an affine map and is not matched.
    """
    if node.op_type not in AFFINE_OPS or node.domain not in ("", "ai.onnx") or len(node.inputs) != 2:
        return None
    fixed = [v is not None and v.producer() is None for v in node.inputs]
    if fixed[0] == fixed[1]:
        return None
    k = 0 if fixed[0] else 1
    if node.op_type == "Div" and k == 0:
        return None  # c / y is not affine in y
    return node.inputs[1 - k], Graph.constant(node.inputs[k]), k
