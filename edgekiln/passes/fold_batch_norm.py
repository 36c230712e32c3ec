"""FoldBatchNormPass: fold an inference BatchNormalization into the Conv/Gemm/MatMul before it.

At inference a BatchNormalization is a per-channel affine map over axis 1:

    BN(y) = γ·(y − μ)/√(σ² + ε) + β = s·y + t,    s = γ/√(σ² + ε),   t = β − μ·s

and a conv-like op is linear per output channel (y[o] = W[o] ⋆ x + b[o]), so

    BN(conv(x)) = (W·s) ⋆ x + (b − μ)·s + β        W' = W·s,  b' = (b − μ)·s + β

(`fold_affine_into_conv.fold_affine` does the per-producer weight math).

Case 1: Conv -> BN            W [Cout, Cin/g, k...] scaled per output channel.
Case 2: ConvTranspose -> BN   W [Cin, Cout/g, k...]: per group, column j of the group's rows.
Case 3: Gemm -> BN            BN over the feature axis of the 2-D output: columns of B
                              (rows when transB=1); C' = beta·C·s + t, beta := 1.
Case 4: MatMul -> BN          B a 2-D constant, output 2-D: B' = B·s and the shift
                              becomes MatMul + Add(t) (fuse-matmul-add makes that a Gemm).

Refused: BN parameters that are not constant initializers, BN in training mode (extra
outputs), a producer output read by other nodes or being a graph output, weights shared
with another node.  A standalone BN (after Relu, Add, a graph input) is left alone here;
the re-parameterization pass treats it as an identity branch and reads its (s, t) through
`batch_norm_as_affine`.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx_ir as ir

from edgekiln.compiler.graph import Graph
from edgekiln.compiler.pass_contract import RewritePass, node_label
from edgekiln.passes.fold_affine_into_conv import (
    FOLDABLE_PRODUCERS,
    channel_vector,
    fold_affine,
    fold_blocker,
    output_channels,
)
from edgekiln.passes.graph_edits import bypass

_PARAMETERS = ("scale", "bias", "mean", "variance")


def batch_norm_as_affine(graph: Graph, bn: ir.Node) -> tuple[np.ndarray, np.ndarray] | str:
    """(s, t), float64 vectors over channels with BN(y) = s·y + t along axis 1, or why not.

    Valid for an inference BN only: constant parameters and a single output.
    """
    training = bn.attributes.get("training_mode")
    if (training is not None and int(training.value)) or any(v.name and (v.uses() or v.is_graph_output())
                                                             for v in bn.outputs[1:]):
        return "BN is in training mode (it has running mean/variance outputs)"
    params = []
    for what, value in zip(_PARAMETERS, bn.inputs[1:5]):
        array = Graph.constant(value)
        if array is None:
            return f"BN {what} is not a constant initializer"
        params.append(array.astype(np.float64).reshape(-1))
    gamma, beta, mean, var = params
    epsilon = bn.attributes.get("epsilon")
    eps = float(epsilon.value) if epsilon is not None else 1e-5
    if np.any(var + eps <= 0):
        return "BN variance + epsilon is not positive"
    scale = gamma / np.sqrt(var + eps)
    return scale, beta - mean * scale


class FoldBatchNormPass(RewritePass[ir.Node]):
    name = "fold-batch-norm"

    def match(self, graph: Graph) -> Iterable[ir.Node]:
        return [n for n in graph.main if n.op_type == "BatchNormalization" and n.domain in ("", "ai.onnx")]

    def check(self, graph: Graph, bn: ir.Node) -> str | None:
        plan = self._plan(graph, bn)
        return plan if isinstance(plan, str) else None

    def rewrite(self, graph: Graph, bn: ir.Node) -> str:
        producer, scale, shift = self._plan(graph, bn)
        bypass(graph, bn, fold_affine(graph, producer, scale, shift))
        return f"folded {node_label(bn)} into {node_label(producer)}"

    @staticmethod
    def _plan(graph: Graph, bn: ir.Node) -> tuple[ir.Node, np.ndarray, np.ndarray] | str:
        producer = bn.inputs[0].producer()
        if producer is None or producer.op_type not in FOLDABLE_PRODUCERS or producer.domain not in ("", "ai.onnx"):
            source = "a graph input" if producer is None else node_label(producer)
            return f"its input comes from {source}, which has no weights to fold into"
        affine = batch_norm_as_affine(graph, bn)
        if isinstance(affine, str):
            return affine
        blocker = fold_blocker(graph, producer, bn)
        if blocker is not None:
            return blocker
        out_shape = Graph.static_shape(producer.outputs[0])
        axis, count = output_channels(producer, len(out_shape))
        scale, shift = affine
        if len(out_shape) < 2 or out_shape[1] != len(scale):
            return f"BN has {len(scale)} channels but {producer.op_type} output is {list(out_shape)}"
        # BN's constants as a Mul operand would be shaped: [C, 1, ..., 1] against axis 1.
        operand_shape = (len(scale),) + (1,) * (len(out_shape) - 2)
        scale = channel_vector(scale.reshape(operand_shape), out_shape, axis)
        if isinstance(scale, str):
            return f"BN normalizes axis 1, but {producer.op_type} output channels are on axis {axis}"
        if out_shape[axis] != count:
            return f"{producer.op_type} output has {out_shape[axis]} channels, its weights {count}"
        return producer, scale, channel_vector(shift.reshape(operand_shape), out_shape, axis)
