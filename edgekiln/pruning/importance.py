"""How much each channel of a dependency group matters: the lowest-scoring channels are removed.

A channel's score sums one term per layer that holds weights for it, each layer's terms
divided by their mean over the group (so a layer with large weights does not outvote the
others):

    l1     producers: sum |W[c, ...]| (the channel's output filter); consumers: sum |W[:, c, ...]|
    l2     the same with the Euclidean norm
    bn     |gamma_c| of every BatchNorm / InstanceNorm on the channel (network slimming);
           groups without one fall back to l1
    data   output reconstruction error: the energy the channel contributes to each consumer's
           output on calibration data, E_c = sum_m ||W[:, c] * x_m,c||^2.  For a Conv with the
           input patches P (im2col) this is trace(W_c Sigma_c W_c^T) with Sigma_c = P_c^T P_c; for a
           Gemm/MatMul it is ||x_c||^2 ||W[c]||^2.  Removing the channel adds that much squared
           error to the consumer's output before any re-fit.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgekiln.compiler.graph import Graph
from edgekiln.passes.graph_edits import int_attr
from edgekiln.pruning.conv_patches import conv_geometry, conv_patches, output_hw
from edgekiln.pruning.dependency_groups import (
    ChannelAnalysis,
    DependencyGroup,
    GroupMember,
)

MAX_PATCH_ROWS = 4096


def channel_importance(graph: Graph, analysis: ChannelAnalysis, group: DependencyGroup, method: str,
                       activations: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, str]:
    """Scores per channel of `group` (higher = keep), and the method that produced them.

    `activations`: `consumer_statistics` of the graph, for the `data` method.
    """
    members = {m.value: m for m in group.members}
    if method == "bn":
        terms = [_per_channel(members[n.inputs[0].name], np.abs(Graph.constant(n.inputs[1])), group.size)
                 for n in analysis.norms if n.inputs[0].name in members and Graph.constant(n.inputs[1]) is not None]
        if terms:
            return _combine(terms), "bn"
        method = "l1"
    if method == "data" and activations is not None:
        terms = [_reconstruction_energy(node, members[x.name], activations[node.name], group.size)
                 for node, x in analysis.consumers if x.name in members and node.name in activations]
        if terms:
            return _combine(terms), "data"
        method = "l1"
    order = 1 if method in ("l1", "data") else 2
    terms = []
    for node in analysis.producers:
        if node.outputs[0].name in members:
            rows = _weight_slices(node, output_side=True)
            terms.append(_per_channel(members[node.outputs[0].name], _norm(rows, order), group.size))
    for node, x in analysis.consumers:
        if x.name in members:
            columns = _weight_slices(node, output_side=False)
            terms.append(_per_channel(members[x.name], _norm(columns, order), group.size))
    return _combine(terms), "l1" if order == 1 else "l2"


def _weight_slices(node: ir.Node, output_side: bool) -> np.ndarray:
    """The weights as [channel position, everything else] for the output (or input) side of a layer."""
    weight = Graph.constant(node.inputs[1])
    if node.op_type == "Conv":
        moved = weight if output_side else np.swapaxes(weight, 0, 1)
    elif node.op_type == "Gemm" and int_attr(node, "transB", 0):
        moved = weight if output_side else weight.T
    else:  # Gemm without transB and MatMul: B is [K, N]
        moved = weight.T if output_side else weight
    return moved.reshape(moved.shape[0], -1)


def _norm(rows: np.ndarray, order: int) -> np.ndarray:
    rows = rows.astype(np.float64)
    return np.abs(rows).sum(axis=1) if order == 1 else np.sqrt((rows * rows).sum(axis=1))


def _per_channel(member: GroupMember, per_position: np.ndarray, size: int) -> np.ndarray:
    scores = np.zeros(size)
    np.add.at(scores, member.channels, np.asarray(per_position, np.float64)[member.positions])
    return scores


def _combine(terms: list[np.ndarray]) -> np.ndarray:
    total = np.zeros_like(terms[0])
    for term in terms:
        mean = term.mean()
        total += term / mean if mean > 0 else term
    return total


def consumer_statistics(graph: Graph, analysis: ChannelAnalysis,
                        batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per consumer layer, the input statistic `data` importance needs, summed over the batches.

    Conv: Sigma[c] = P_c^T P_c over sampled output positions ([C, K, K]); Gemm/MatMul: the energy
    of every input feature ([K]).  Reduced batch by batch, so no activation is kept.
    """
    from edgekiln.pruning.activations import capture

    readers: dict[str, list] = {}
    for node, x in analysis.consumers:
        readers.setdefault(x.name, []).append(node)
    totals: dict[str, np.ndarray] = {}
    rng = np.random.default_rng(0)

    def reduce(name: str, _: int, x: np.ndarray) -> None:
        for node in readers[name]:
            stat = _input_statistic(node, x.astype(np.float64), max(1, MAX_PATCH_ROWS // len(batches)), rng)
            totals[node.name] = stat if node.name not in totals else totals[node.name] + stat

    capture(graph, batches, list(readers), reduce=reduce)
    return totals


def _input_statistic(node: ir.Node, x: np.ndarray, rows: int, rng: np.random.Generator) -> np.ndarray:
    if node.op_type != "Conv":
        return (x.reshape(-1, x.shape[-1]) ** 2).sum(axis=0)
    kernel = Graph.constant(node.inputs[1]).shape[2:]
    strides, dilations, pads = conv_geometry(node, x.shape[2:], kernel)
    count = x.shape[0] * int(np.prod(output_hw(x.shape[2:], kernel, strides, dilations, pads)))
    positions = np.sort(rng.choice(count, min(count, rows), replace=False))
    patches = conv_patches(node, x, kernel, positions)
    return np.einsum("mck,mcl->ckl", patches, patches)


def _reconstruction_energy(node: ir.Node, member: GroupMember, statistic: np.ndarray, size: int) -> np.ndarray:
    weight = Graph.constant(node.inputs[1]).astype(np.float64)
    if node.op_type == "Conv":
        w = weight.reshape(weight.shape[0], weight.shape[1], -1)  # [O, C, K]
        return _per_channel(member, np.einsum("ock,ckl,ocl->c", w, statistic, w), size)
    columns = _weight_slices(node, output_side=False).astype(np.float64)
    return _per_channel(member, statistic * (columns ** 2).sum(axis=1), size)
