"""SparsifyNMPass: N:M weight sparsity along the input channel (2:4, 1:4).

For every weight reader (Conv, Gemm, MatMul and fused forms) whose `--sparsity` spec is N:M,
the input channel axis is split into groups of M consecutive channels (at each output
channel and kernel position) and, in every group, all but the N weights of largest |w| are
set to zero:

    W'[..., g·M + j] = W[..., g·M + j]   if |W[..., g·M + j]| is among the N largest of its group
                     = 0                 otherwise          (ties: the lower channel index is kept)

The zeros are written into the ONNX weight, so onnxruntime computes exactly the function the
sparse kernels compute.  Refused (named in --explain): no spec for the node (or excluded),
a weight that is not a constant float initializer or is shared, depthwise convolutions,
tiny layers, input channels not a multiple of M, and weights that already hold the pattern
(so a second run changes nothing).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from edgekiln.compiler.graph import Graph
from edgekiln.compiler.pass_contract import RewritePass, node_label
from edgekiln.compiler.prune_options import PruneOptions
from edgekiln.pruning.sparsity_weights import (
    SparsityCandidate,
    candidates,
    refusal,
    set_weight,
    zero_fraction,
)


def n_m_mask(weight: np.ndarray, axis: int, n: int, m: int) -> np.ndarray:
    """Keep-mask of the N largest |w| in every group of M along `axis` (whose length M divides)."""
    moved = np.moveaxis(np.abs(weight), axis, -1)
    groups = moved.reshape(*moved.shape[:-1], moved.shape[-1] // m, m)
    # stable sort of −|w|: the largest first, ties kept in channel order
    rank = np.argsort(np.argsort(-groups, axis=-1, kind="stable"), axis=-1, kind="stable")
    keep = (rank < n).reshape(moved.shape)
    return np.moveaxis(keep, -1, axis)


def holds_n_m(weight: np.ndarray, axis: int, n: int, m: int) -> bool:
    moved = np.moveaxis(weight, axis, -1)
    groups = moved.reshape(*moved.shape[:-1], moved.shape[-1] // m, m)
    return bool((np.count_nonzero(groups, axis=-1) <= n).all())


class SparsifyNMPass(RewritePass[SparsityCandidate]):
    name = "sparsify-n-m"

    def __init__(self, options: PruneOptions) -> None:
        self.options = options

    def match(self, graph: Graph) -> Iterable[SparsityCandidate]:
        return candidates(graph, self.options, want_n_m=True)

    def describe(self, match: SparsityCandidate) -> str:
        return node_label(match.node)

    def check(self, graph: Graph, match: SparsityCandidate) -> str | None:
        reason = refusal(graph, match)
        if reason:
            return reason
        n, m = match.spec.n, match.spec.m
        channels = match.weight.shape[match.axis]
        if channels % m:
            return f"{channels} input channels are not a multiple of M = {m}"
        if holds_n_m(match.weight, match.axis, n, m):
            return f"already {n}:{m} sparse"
        return None

    def rewrite(self, graph: Graph, match: SparsityCandidate) -> str:
        n, m = match.spec.n, match.spec.m
        before = zero_fraction(match.weight)
        sparse = np.where(n_m_mask(match.weight, match.axis, n, m), match.weight, 0)
        set_weight(match, sparse)
        return (f"{node_label(match.node)}: {n}:{m} along the input channel, {zero_fraction(sparse):.1%} zeros "
                f"(was {before:.1%})")
