"""The weight-sparsity stage of `compile_model` (`--sparsity 2:4 | 1:4 | RATIO`).

It runs after the float stages (BatchNorm is folded, so the zeros written are the final
weights' zeros) and before quantization (symmetric quantization keeps a zero a zero).  Two
passes, each reporting to --explain which layers it sparsified and why it skipped the others:

    SparsifyNMPass         N:M along the input channel (passes/sparsify_n_m.py)
    SparsifyMagnitudePass  unstructured magnitude, per layer or one global threshold
                           (passes/sparsify_magnitude.py)

Whether a sparsified layer then runs a sparse kernel is decided later, per target, from the
cost model (`sparsity_kernels.choose_sparse_kernels`).
"""

from __future__ import annotations

from edgekiln.compiler.explain import ExplainTrace
from edgekiln.compiler.graph import Graph
from edgekiln.compiler.pass_manager import PassManager
from edgekiln.compiler.prune_options import PruneOptions
from edgekiln.passes.sparsify_magnitude import SparsifyMagnitudePass
from edgekiln.passes.sparsify_n_m import SparsifyNMPass


def sparsity_passes(options: PruneOptions) -> list:
    return [SparsifyNMPass(options), SparsifyMagnitudePass(options)]


def sparsify_graph(graph: Graph, options: PruneOptions, trace: ExplainTrace) -> Graph:
    """Zero weights of `graph` as `options.sparsity` (and its overrides) ask; returns the graph."""
    return PassManager(sparsity_passes(options), stage="sparsity").run(graph, trace)
