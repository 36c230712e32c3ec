"""Which weights the sparsity passes may zero, and how a weight tensor is seen along its input
channel.

Readers: Conv (W [O, C/group, kh, kw]), Gemm (B [K, N], or [N, K] with transB = 1), MatMul
with a constant B [..., K, N], and their fused forms (fused_ops.py: FusedConvRelu, ...).  The input channel axis
is where N:M groups lie (M consecutive input channels at one output and kernel position),
because that is the reduction the sparse kernels walk.  Depthwise convolutions are left alone:
no sparse kernel runs them and their few weights per channel carry the most.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from edgekiln.compiler.fused_ops import DOMAIN as FUSED_DOMAIN
from edgekiln.compiler.graph import Graph
from edgekiln.compiler.prune_options import PruneOptions, SparsitySpec
from edgekiln.passes.graph_edits import int_attr, readers_other_than

WEIGHT_READERS = ("Conv", "Gemm", "MatMul")
MIN_WEIGHTS = 64  # smaller layers cost nothing and their weights matter most


@dataclass
class SparsityCandidate:
    node: ir.Node
    weight: np.ndarray | None
    spec: SparsitySpec | None
    axis: int  # the input channel axis of `weight`

    @property
    def name(self) -> str:
        return self.node.name or "<unnamed>"


def base_op(node: ir.Node) -> str | None:
    """Conv, Gemm or MatMul for a weight reader (a fused one included: FusedConvAddRelu -> Conv)."""
    op = node.op_type
    if node.domain in ("", "ai.onnx"):
        return op if op in WEIGHT_READERS else None
    if node.domain == FUSED_DOMAIN and op.startswith("Fused") and not op.startswith("FusedConvTranspose"):
        return next((base for base in WEIGHT_READERS if op.startswith("Fused" + base)), None)
    return None


def input_channel_axis(node: ir.Node, weight: np.ndarray) -> int:
    base = base_op(node)
    if base == "Conv":
        return 1
    if base == "Gemm":
        return 1 if int_attr(node, "transB", 0) else 0
    return weight.ndim - 2


def candidates(graph: Graph, options: PruneOptions, want_n_m: bool) -> list[SparsityCandidate]:
    """Weight readers whose spec (after overrides and exclusions) is N:M (`want_n_m`) or a ratio."""
    found = []
    for node in graph.nodes:
        if base_op(node) is None or len(node.inputs) < 2:
            continue
        spec = options.sparsity_for(node.name or "", node.op_type)
        if spec is None or spec.is_n_m != want_n_m:
            continue
        weight = Graph.constant(node.inputs[1])
        found.append(SparsityCandidate(node, weight, spec, input_channel_axis(node, weight) if weight is not None else 0))
    return found


def refusal(graph: Graph, c: SparsityCandidate) -> str | None:
    """Why a candidate's weight cannot be sparsified, or None."""
    value = c.node.inputs[1]
    if c.weight is None:
        return "the weight is not a constant initializer"
    if c.weight.dtype.kind != "f":
        return f"the weight is {c.weight.dtype} (sparsity runs on float weights, before quantization)"
    if c.weight.ndim < 2:
        return "a 1-D weight"
    if readers_other_than(value, c.node) or value.is_graph_output():
        return "the weight is shared with other nodes"
    if base_op(c.node) == "Conv" and c.weight.shape[1] == 1 and int_attr(c.node, "group", 1) > 1:
        return "depthwise convolution: no sparse kernel runs it and its few weights per channel matter most"
    if c.weight.size < MIN_WEIGHTS:
        return f"only {c.weight.size} weights (fewer than {MIN_WEIGHTS}): nothing to gain"
    return None


def zero_fraction(weight: np.ndarray) -> float:
    return float(np.count_nonzero(weight == 0)) / max(weight.size, 1)


def set_weight(c: SparsityCandidate, weight: np.ndarray) -> None:
    """Write the sparsified weight in place (refusal() made sure only this node reads it)."""
    value = c.node.inputs[1]
    value.const_value = ir.tensor(np.ascontiguousarray(weight.astype(c.weight.dtype)), name=value.name)
