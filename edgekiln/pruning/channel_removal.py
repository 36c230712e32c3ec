"""Physically remove pruned channels: every tensor position whose channel was chosen disappears.

Given the dependency analysis and the set of removed channels, each tracked value gets a
*keep mask* over its channel axis (position p is kept when its atom's channel is not
removed).  Then every node is rewritten from the masks of what it reads and writes:

    Conv          W[out_keep][:, in_keep] (group 1) or W[out_keep] with group = kept inputs
                  (depthwise); bias[out_keep]
    Gemm          B restricted to kept inputs (K) and outputs (N), C[..., out_keep]
    MatMul        B[in_keep][:, out_keep]
    BatchNorm,    scale, bias, mean, var [keep] (every per-channel parameter)
    InstanceNorm
    elementwise   a constant operand with a full-size channel axis is sliced along it
    Split         new split sizes: the kept count of each output
    Slice         starts/ends renumbered into the kept positions
    Reshape       the target shape's channel-carrying dimension shrinks
    Resize        a `sizes` input's channel entry shrinks

Everything else (activations, pooling, Concat on the channel axis, Flatten) follows from
the shapes, which are rewritten last.  The output is an ordinary dense ONNX model.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgekiln.compiler.graph import Graph
from edgekiln.passes.graph_edits import drop_if_unused, int_attr, set_constant_input
from edgekiln.pruning.dependency_groups import ELEMENTWISE, ChannelAnalysis


def keep_masks(analysis: ChannelAnalysis, removed_units: set[int]) -> dict[str, np.ndarray]:
    """Keep masks of the values that lose at least one position."""
    removed = np.array(sorted(removed_units), dtype=np.int64)
    masks = {}
    for name, d in analysis.dims.items():
        keep = ~np.isin(analysis.unit_of_atom[d.atoms], removed)
        if not keep.all():
            masks[name] = keep
    return masks


def remove_channels(graph: Graph, analysis: ChannelAnalysis, removed_units: set[int]) -> dict[str, np.ndarray]:
    """Remove `removed_units` from `graph` in place; returns the keep masks it applied."""
    masks = keep_masks(analysis, removed_units)
    if not masks:
        return masks
    for node in graph.nodes:
        _rewrite(graph, node, analysis, masks)
    for node in graph.nodes:
        for value in node.outputs:
            if value.name in masks:
                _shrink_shape(value, analysis.dims[value.name].axis, masks[value.name])
    return masks


def _mask(masks: dict[str, np.ndarray], value: ir.Value | None) -> np.ndarray | None:
    return None if value is None else masks.get(value.name)


def _rewrite(graph: Graph, node: ir.Node, analysis: ChannelAnalysis, masks: dict[str, np.ndarray]) -> None:
    op = node.op_type
    first_in = _mask(masks, node.inputs[0] if node.inputs else None)
    out = _mask(masks, node.outputs[0] if node.outputs else None)
    if first_in is None and out is None:
        return
    if op == "Conv":
        weight = Graph.constant(node.inputs[1])
        groups = int_attr(node, "group", 1)
        if out is not None:
            weight = weight[out]
            if len(node.inputs) > 2 and node.inputs[2] is not None:
                set_constant_input(graph, node, 2, Graph.constant(node.inputs[2])[out], f"{node.name}_bias")
        if groups == 1 and first_in is not None:
            weight = weight[:, first_in]
        elif groups > 1 and first_in is not None:
            node.attributes["group"] = ir.AttrInt64("group", int(first_in.sum()))
        set_constant_input(graph, node, 1, weight, f"{node.name}_weight")
    elif op == "Gemm":
        weight = Graph.constant(node.inputs[1])
        trans = int_attr(node, "transB", 0)
        if first_in is not None:
            weight = weight[:, first_in] if trans else weight[first_in]
        if out is not None:
            weight = weight[out] if trans else weight[:, out]
            bias = Graph.constant(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
            if bias is not None and bias.ndim >= 1 and bias.shape[-1] == len(out) and len(out) > 1:
                set_constant_input(graph, node, 2, bias[..., out], f"{node.name}_bias")
        set_constant_input(graph, node, 1, weight, f"{node.name}_weight")
    elif op == "MatMul":
        weight = Graph.constant(node.inputs[1])
        if first_in is not None:
            weight = weight[first_in]
        if out is not None:
            weight = weight[:, out]
        set_constant_input(graph, node, 1, weight, f"{node.name}_weight")
    elif op in ("BatchNormalization", "InstanceNormalization") and first_in is not None:
        for index in range(1, len(node.inputs)):
            set_constant_input(graph, node, index, Graph.constant(node.inputs[index])[first_in],
                               f"{node.name}_param{index}")
    elif op in ELEMENTWISE or op == "Concat":
        _slice_constant_operands(graph, node, analysis, masks)
    elif op == "Split":
        _rewrite_split(graph, node, analysis, masks)
    elif op == "Slice":
        _rewrite_slice(graph, node, analysis, masks)
    elif op == "Reshape" and out is not None:
        shape = list(Graph.static_shape(node.outputs[0]))
        axis = analysis.dims[node.outputs[0].name].axis
        shape[axis] = int(out.sum())
        set_constant_input(graph, node, 1, np.array(shape, np.int64), f"{node.name}_shape")
    elif op == "Resize" and out is not None and len(node.inputs) > 3 and node.inputs[3] is not None:
        sizes = Graph.constant(node.inputs[3]).copy()
        sizes[analysis.dims[node.outputs[0].name].axis] = int(out.sum())
        set_constant_input(graph, node, 3, sizes, f"{node.name}_sizes")


def _slice_constant_operands(graph: Graph, node: ir.Node, analysis: ChannelAnalysis,
                             masks: dict[str, np.ndarray]) -> None:
    """Per-channel constants (a PReLU slope, a scale, a bias) lose the removed channels too."""
    result = node.outputs[0]
    keep = masks.get(result.name)
    if keep is None:
        return
    rank, axis = len(result.shape), analysis.dims[result.name].axis
    for index, value in enumerate(node.inputs):
        array = Graph.constant(value)
        if array is None or value.name in analysis.dims:
            continue
        j = axis - (rank - array.ndim)
        if j >= 0 and array.shape[j] == len(keep) and len(keep) > 1:
            if node.op_type == "Concat" and j == axis:
                continue  # Concat along the channels: a constant part keeps its (frozen) channels
            set_constant_input(graph, node, index, np.compress(keep, array, axis=j), f"{node.name}_operand{index}")


def _rewrite_split(graph: Graph, node: ir.Node, analysis: ChannelAnalysis, masks: dict[str, np.ndarray]) -> None:
    source = node.inputs[0]
    axis = analysis.dims[source.name].axis
    split_axis = int_attr(node, "axis", 0)
    split_axis = split_axis + len(source.shape) if split_axis < 0 else split_axis
    if split_axis != axis:
        return
    sizes = [int(masks[o.name].sum()) if o.name in masks else int(o.shape[axis]) for o in node.outputs]
    if "split" in node.attributes:
        node.attributes["split"] = ir.AttrInt64s("split", sizes)
    else:
        set_constant_input(graph, node, 1, np.array(sizes, np.int64), f"{node.name}_split")
    if "num_outputs" in node.attributes:
        del node.attributes["num_outputs"]


def _rewrite_slice(graph: Graph, node: ir.Node, analysis: ChannelAnalysis, masks: dict[str, np.ndarray]) -> None:
    source = node.inputs[0]
    keep = masks.get(source.name)
    if keep is None:
        return
    rank, axis = len(source.shape), analysis.dims[source.name].axis
    starts, ends = Graph.constant(node.inputs[1]).copy(), Graph.constant(node.inputs[2]).copy()
    axes_value = node.inputs[3] if len(node.inputs) > 3 else None
    axes = list(range(len(starts))) if axes_value is None else [
        int(a) + rank if a < 0 else int(a) for a in Graph.constant(axes_value)]
    if axis not in axes:
        return
    k = axes.index(axis)
    begin, end, _ = slice(int(starts[k]), int(ends[k])).indices(len(keep))
    new_begin = int(keep[:begin].sum())
    starts[k], ends[k] = new_begin, new_begin + int(keep[begin:max(begin, end)].sum())
    set_constant_input(graph, node, 1, starts, f"{node.name}_starts")
    set_constant_input(graph, node, 2, ends, f"{node.name}_ends")


def _shrink_shape(value: ir.Value, axis: int, keep: np.ndarray) -> None:
    dims = list(value.shape)
    dims[axis] = int(keep.sum())
    value.shape = ir.Shape(dims)


def drop_unused_initializers(graph: Graph) -> None:
    for value in list(graph.main.initializers.values()):
        drop_if_unused(graph, value)
