"""SparsifyMagnitudePass: unstructured magnitude sparsity (`--sparsity 0.7`).

Per layer (scope "layer"): in each weight reader whose spec is a ratio r, the ⌊r·size⌋
weights of smallest |w| become zero (ties broken by flat index, so the count is exact):

    W' = W · [rank(|W|) ≥ ⌊r·|W|⌋]

Global (scope "global", the `PruneOptions.sparsity_scope`): one threshold for all layers that
take the global ratio, so the ⌊r·Σ size⌋ smallest |w| of the whole model go, and layers whose
weights are small overall lose more (per-layer overrides keep their own ratio).  Zeros
already present count toward the ratio, so a second run changes nothing.  Refused (named in
--explain): no ratio for the node (or excluded), non-constant or shared weights, depthwise
convolutions, tiny layers, layers already at the ratio.
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


def magnitude_mask(weight: np.ndarray, ratio: float) -> np.ndarray:
    """Keep-mask dropping the ⌊ratio·size⌋ smallest |w| (stable: lower flat index goes first)."""
    flat = np.abs(weight).reshape(-1)
    drop = np.argsort(flat, kind="stable")[:int(ratio * flat.size)]
    keep = np.ones(flat.size, bool)
    keep[drop] = False
    return keep.reshape(weight.shape)


class SparsifyMagnitudePass(RewritePass[SparsityCandidate]):
    name = "sparsify-magnitude"

    def __init__(self, options: PruneOptions) -> None:
        self.options = options
        self._global_masks: dict[int, np.ndarray] = {}

    def match(self, graph: Graph) -> Iterable[SparsityCandidate]:
        found = candidates(graph, self.options, want_n_m=False)
        self._global_masks = {}
        if self.options.sparsity_scope == "global" and self.options.sparsity is not None:
            shared = [c for c in found if c.spec == self.options.sparsity and refusal(graph, c) is None]
            if shared:
                flat = np.concatenate([np.abs(c.weight).reshape(-1) for c in shared])
                keep = magnitude_mask(flat, self.options.sparsity.ratio)
                start = 0
                for c in shared:
                    self._global_masks[id(c.node)] = keep[start:start + c.weight.size].reshape(c.weight.shape)
                    start += c.weight.size
        return found

    def describe(self, match: SparsityCandidate) -> str:
        return node_label(match.node)

    def _mask(self, match: SparsityCandidate) -> np.ndarray:
        mask = self._global_masks.get(id(match.node))
        return mask if mask is not None else magnitude_mask(match.weight, match.spec.ratio)

    def check(self, graph: Graph, match: SparsityCandidate) -> str | None:
        reason = refusal(graph, match)
        if reason:
            return reason
        if not (match.weight[~self._mask(match)] != 0).any():
            return f"already {zero_fraction(match.weight):.1%} zeros (ratio {match.spec.ratio:g})"
        return None

    def rewrite(self, graph: Graph, match: SparsityCandidate) -> str:
        before = zero_fraction(match.weight)
        scope = "global threshold" if id(match.node) in self._global_masks else "per layer"
        sparse = np.where(self._mask(match), match.weight, 0)
        set_weight(match, sparse)
        return f"{node_label(match.node)}: magnitude {match.spec.ratio:g} ({scope}), {zero_fraction(sparse):.1%} zeros " \
               f"(was {before:.1%})"
