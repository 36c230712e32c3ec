"""Encoders of the data movement ops (any dtype: the ONNX ops on float data and on int8).

Most become an index map (`EK_OP_INDEX_MAP`): per output axis, an int32 table of the input
index each output position reads (−1: the fill value).  The tables are computed here with
numpy's own slicing / padding (Slice, Pad, Split, Tile, Expand, Gather by a constant) or by
running the ONNX reference Resize on index vectors (nearest Resize), so the runtime needs one
small kernel for all of them and cannot disagree with the ONNX definitions.  Linear Resize
gets tap tables the same way (`EK_OP_RESIZE`).  Reshape and friends are copies; Transpose,
DepthToSpace and SpaceToDepth are transposes of a (6-D) view.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from edgekiln.backends.arm_cpu import op_codes
from edgekiln.backends.arm_cpu.encode_context import (
    BlobCall,
    EncodeContext,
    normalize_axis,
)
from edgekiln.compiler.program import KernelCall

A, OP = op_codes.ATTR, op_codes.OP


def copy(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    """Reshape, Flatten, Squeeze, Unsqueeze, Identity: the C-ordered data does not change."""
    return [BlobCall(call.name, OP["COPY"], [call.inputs[0]], [call.outputs[0]])]


def cast(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    return [BlobCall(call.name, OP["CAST"], [call.inputs[0]], [call.outputs[0]])]


def transpose(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    rank = len(ctx.shape(call.inputs[0]))
    perm = call.attrs.get("perm", list(range(rank))[::-1])
    return [BlobCall(call.name, OP["TRANSPOSE"], [call.inputs[0]], [call.outputs[0]], {A["PERM"]: list(perm)})]


def depth_space(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    """DepthToSpace / SpaceToDepth as the transpose of a 6-D view (the ONNX definition)."""
    n, c, h, w = ctx.shape(call.inputs[0])
    b = call.attrs["blocksize"]
    if call.op == "DepthToSpace":
        if call.attrs.get("mode", "DCR") == "DCR":
            dims, perm = [n, b, b, c // (b * b), h, w], [0, 3, 4, 1, 5, 2]
        else:
            dims, perm = [n, c // (b * b), b, b, h, w], [0, 1, 4, 2, 5, 3]
    else:
        dims, perm = [n, c, h // b, b, w // b, b], [0, 3, 5, 1, 2, 4]
    return [BlobCall(call.name, OP["TRANSPOSE"], [call.inputs[0]], [call.outputs[0]], {A["PERM"]: perm, A["DIMS"]: dims})]


def concat(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    if len(call.inputs) > 255:
        raise ctx.fail(call, "more than 255 inputs")
    rank = len(ctx.shape(call.outputs[0]))
    axis = normalize_axis(call, ctx, call.attrs["axis"], rank)
    return [BlobCall(call.name, OP["CONCAT"], list(call.inputs), [call.outputs[0]], {A["AXIS"]: axis})]


def _index_map(ctx: EncodeContext, call: KernelCall, x: str, out: str, tables: list[np.ndarray], fill: float = 0.0,
               dims: list[int] | None = None, in_dims: list[int] | None = None, what: str = "index") -> BlobCall:
    attrs: dict[int, Any] = {}
    if fill:
        attrs[A["FILL"]] = float(fill)
    if dims is not None:
        attrs[A["DIMS"]] = dims
    if in_dims is not None:
        attrs[A["IN_DIMS"]] = in_dims
    flat = np.concatenate([np.asarray(t, np.int64).reshape(-1) for t in tables]) if tables else np.zeros(0, np.int64)
    table = ctx.derive(call, what, flat.astype(np.int32))
    return BlobCall(call.name if what == "index" else f"{call.name}/{what}", OP["INDEX_MAP"], [x, table], [out], attrs)


def slice_(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    shape = ctx.shape(call.inputs[0])
    if "starts" in call.attrs:  # opset < 10
        starts, ends = call.attrs["starts"], call.attrs["ends"]
        axes = call.attrs.get("axes", list(range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts = ctx.need_const(call, 1, "starts").tolist()
        ends = ctx.need_const(call, 2, "ends").tolist()
        axes = ctx.need_const(call, 3, "axes").tolist() if len(call.inputs) > 3 and call.inputs[3] else list(range(len(starts)))
        steps = ctx.need_const(call, 4, "steps").tolist() if len(call.inputs) > 4 and call.inputs[4] else [1] * len(starts)
    tables = [np.arange(d) for d in shape]
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = normalize_axis(call, ctx, axis, len(shape))
        if step == 0:
            raise ctx.fail(call, "a zero step")
        # numpy slicing clamps start and end exactly as the ONNX Slice specification does
        tables[axis] = np.arange(shape[axis])[slice(int(start), int(end), int(step))]
    return [_index_map(ctx, call, call.inputs[0], call.outputs[0], tables)]


def split(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    shape = ctx.shape(call.inputs[0])
    axis = normalize_axis(call, ctx, call.attrs.get("axis", 0), len(shape))
    calls, start = [], 0
    for k, out in enumerate(call.outputs):
        size = ctx.shape(out)[axis] if out else 0
        if out:
            tables = [np.arange(d) for d in shape]
            tables[axis] = np.arange(start, start + size)
            calls.append(_index_map(ctx, call, call.inputs[0], out, tables, what=f"part{k}"))
        start += size
    return calls


def pad_tables(ctx: EncodeContext, call: KernelCall, shape: tuple[int, ...], pads: list[int], mode: str) -> np.ndarray:
    """Concatenated per-axis tables of ONNX Pad: crop negative pads, then pad (−1 = constant)."""
    rank = len(shape)
    if len(pads) != 2 * rank:
        raise ctx.fail(call, f"{len(pads)} pads for rank {rank}")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise ctx.fail(call, f"pad mode {mode!r}")
    tables = []
    for axis, dim in enumerate(shape):
        begin, end = pads[axis], pads[rank + axis]
        index = np.arange(dim)[max(-begin, 0):dim - max(-end, 0)]
        widths = (max(begin, 0), max(end, 0))
        if mode == "constant":
            index = np.pad(index, widths, constant_values=-1)
        elif index.size:
            index = np.pad(index, widths, mode=mode)
        elif widths != (0, 0):
            raise ctx.fail(call, f"{mode} padding of an empty axis")
        tables.append(index)
    return np.concatenate(tables).astype(np.int32) if tables else np.zeros(0, np.int32)


def pad(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    shape = ctx.shape(call.inputs[0])
    rank = len(shape)
    if "pads" in call.attrs:  # opset < 11
        pads, value = list(call.attrs["pads"]), float(call.attrs.get("value", 0.0))
    else:
        pads = ctx.need_const(call, 1, "pads").astype(np.int64).tolist()
        value_array = ctx.const(call.inputs[2]) if len(call.inputs) > 2 and call.inputs[2] else None
        if len(call.inputs) > 2 and call.inputs[2] and value_array is None:
            raise ctx.fail(call, "its constant_value must be a constant")
        value = float(value_array.reshape(-1)[0]) if value_array is not None and value_array.size else 0.0
        if len(call.inputs) > 3 and call.inputs[3]:  # opset 18 axes: pads only for those axes
            axes = [normalize_axis(call, ctx, a, rank) for a in ctx.need_const(call, 3, "axes").tolist()]
            full = [0] * (2 * rank)
            for k, axis in enumerate(axes):
                full[axis], full[rank + axis] = pads[k], pads[len(axes) + k]
            pads = full
    tables = pad_tables(ctx, call, shape, pads, call.attrs.get("mode", "constant"))
    return [BlobCall(call.name, OP["INDEX_MAP"], [call.inputs[0], ctx.derive(call, "index", tables)], [call.outputs[0]],
                     {A["FILL"]: value} if value else {})]


def tile_expand(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    shape, out = ctx.shape(call.inputs[0]), ctx.shape(call.outputs[0])
    view = [1] * (len(out) - len(shape)) + list(shape)
    if call.op == "Tile":
        tables = [np.arange(o) % d for o, d in zip(out, view)]
    else:
        tables = [np.zeros(o, np.int64) if d == 1 else np.arange(o) for o, d in zip(out, view)]
    return [_index_map(ctx, call, call.inputs[0], call.outputs[0], tables,
                       in_dims=view if len(view) != len(shape) else None)]


def gather(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    shape = ctx.shape(call.inputs[0])
    axis = normalize_axis(call, ctx, call.attrs.get("axis", 0), len(shape))
    indices = ctx.const(call.inputs[1])
    if indices is None:
        return [BlobCall(call.name, OP["GATHER"], list(call.inputs[:2]), [call.outputs[0]], {A["AXIS"]: axis})]
    flat = indices.astype(np.int64).reshape(-1)
    if flat.size and (flat.min() < -shape[axis] or flat.max() >= shape[axis]):
        raise ctx.fail(call, f"constant indices outside [-{shape[axis]}, {shape[axis]})")
    tables = [np.arange(d) for d in shape]
    tables[axis] = flat % shape[axis] if shape[axis] else flat
    view = list(shape)
    view[axis] = flat.size
    return [_index_map(ctx, call, call.inputs[0], call.outputs[0], tables,
                       dims=view if tuple(view) != ctx.shape(call.outputs[0]) else None)]


# -- Resize ------------------------------------------------------------------------------------
def _resize_axis(call: KernelCall, ctx: EncodeContext, data: np.ndarray, axis: int, rank: int,
                 scale: float | None, out_dim: int) -> np.ndarray:
    """ONNX Resize of `data` along `axis` only (the node's own attributes)."""
    attrs = {k: v for k, v in call.attrs.items() if k not in ("axes",)}
    inputs = [numpy_helper.from_array(data.astype(np.float32), "x")]
    names = ["x", "roi"]
    roi = ctx.const(call.inputs[1]) if len(call.inputs) > 1 and call.inputs[1] else None
    if roi is not None and roi.size and attrs.get("coordinate_transformation_mode") == "tf_crop_and_resize":
        raise ctx.fail(call, "coordinate_transformation_mode tf_crop_and_resize")
    inputs.append(numpy_helper.from_array(np.zeros(0, np.float32), "roi"))
    if scale is not None:
        scales = np.ones(rank, np.float32)
        scales[axis] = scale
        inputs.append(numpy_helper.from_array(scales, "scales"))
        names.append("scales")
    else:
        sizes = np.array(data.shape, np.int64)
        sizes[axis] = out_dim
        inputs += [numpy_helper.from_array(np.zeros(0, np.float32), "scales"), numpy_helper.from_array(sizes, "sizes")]
        names += ["scales", "sizes"]
    node = helper.make_node("Resize", names, ["y"], **attrs)
    graph = helper.make_graph([node], "resize_axis", [], [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
                              initializer=inputs)
    for opset in (13, 18, 19, 11):
        try:
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
            model.ir_version = 8
            return np.asarray(ReferenceEvaluator(model).run(None, {})[0])
        except (onnx.checker.ValidationError, ValueError, TypeError, KeyError, RuntimeError):
            continue  # an attribute this opset's Resize does not take: try the next
    raise ctx.fail(call, f"Resize attributes {sorted(attrs)} are not understood by the ONNX reference")


def resize(ctx: EncodeContext, call: KernelCall) -> list[BlobCall]:
    x, out = call.inputs[0], call.outputs[0]
    shape, out_shape = ctx.shape(x), ctx.shape(out)
    rank = len(shape)
    mode = call.attrs.get("mode", "nearest")
    if "axes" in call.attrs or call.attrs.get("antialias"):
        raise ctx.fail(call, "Resize with axes or antialias")
    scales = ctx.const(call.inputs[2]) if len(call.inputs) > 2 and call.inputs[2] else None
    if scales is not None and scales.size == 0:
        scales = None
    if scales is None and not (len(call.inputs) > 3 and call.inputs[3] and ctx.const(call.inputs[3]) is not None):
        raise ctx.fail(call, "Resize needs constant scales or sizes")
    def scale_of(axis: int) -> float | None:
        return float(scales[axis]) if scales is not None else None
    if mode == "nearest":
        tables = []
        for axis in range(rank):
            if shape[axis] == out_shape[axis] and (scales is None or scales[axis] == 1):
                tables.append(np.arange(shape[axis]))
                continue
            probe = np.arange(shape[axis], dtype=np.float32).reshape([shape[axis] if d == axis else 1 for d in range(rank)])
            tables.append(np.rint(_resize_axis(call, ctx, probe, axis, rank, scale_of(axis), out_shape[axis])).reshape(-1))
        return [_index_map(ctx, call, x, out, tables)]
    if mode != "linear" or rank < 2 or shape[:-2] != out_shape[:-2]:
        raise ctx.fail(call, f"Resize mode {mode!r} over the leading axes (linear resize of the last two axes only)")
    taps: list[tuple[np.ndarray, np.ndarray]] = []
    for axis in (rank - 2, rank - 1):
        n_in, n_out = shape[axis], out_shape[axis]
        # basis vector j along `axis`, stacked along axis 0 (resized with scale 1 there, the identity)
        probe = np.zeros([n_in if d in (0, axis) else 1 for d in range(rank)], np.float32)
        for j in range(n_in):
            probe[(j,) + tuple(j if d == axis else 0 for d in range(1, rank))] = 1.0
        if axis == 0:
            raise ctx.fail(call, "a linear resize of axis 0")
        weights = _resize_axis(call, ctx, probe, axis, rank, scale_of(axis), n_out)
        taps.append(_taps(weights.reshape(n_in, n_out)))
    t = max(max(idx.shape[1] for idx, _ in taps), 1)
    idx = np.concatenate([np.pad(i, ((0, 0), (0, t - i.shape[1]))).reshape(-1) for i, _ in taps]).astype(np.int32)
    wts = np.concatenate([np.pad(w, ((0, 0), (0, t - w.shape[1]))).reshape(-1) for _, w in taps]).astype(np.float32)
    return [BlobCall(call.name, OP["RESIZE"], [x, ctx.derive(call, "taps", idx), ctx.derive(call, "weights", wts)], [out],
                     {A["TAPS"]: t})]


def _taps(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[n_in, n_out] coefficients -> (indices, weights) [n_out, T] of the nonzero taps."""
    columns = [np.nonzero(matrix[:, i])[0] for i in range(matrix.shape[1])]
    t = max((len(c) for c in columns), default=1) or 1
    idx = np.zeros((matrix.shape[1], t), np.int64)
    wts = np.zeros((matrix.shape[1], t), np.float32)
    for i, c in enumerate(columns):
        idx[i, :len(c)] = c
        wts[i, :len(c)] = matrix[c, i]
    return idx, wts


ENCODERS = {
    "Reshape": copy,
    "Flatten": copy,
    "Squeeze": copy,
    "Unsqueeze": copy,
    "Identity": copy,
    "Cast": cast,
    "Transpose": transpose,
    "DepthToSpace": depth_space,
    "SpaceToDepth": depth_space,
    "Concat": concat,
    "Slice": slice_,
    "Split": split,
    "Pad": pad,
    "Tile": tile_expand,
    "Expand": tile_expand,
    "Gather": gather,
    "Resize": resize,
}

__all__ = ["ENCODERS", "pad_tables"]
