"""MakePadsExplicitPass: replace `auto_pad` on a Conv or pool by the explicit pads it stands for.

With static shapes `auto_pad` is only a rule for computing pads (ONNX Conv/pool spec).  Per
spatial axis with input size i, stride s, kernel k and dilation d (effective kernel
e = (k − 1)·d + 1):

    SAME_UPPER, SAME_LOWER:  output o = ceil(i / s),  total pad p = max((o − 1)·s + e − i, 0)
        SAME_UPPER:  begin = ⌊p/2⌋,      end = p − ⌊p/2⌋   (an odd pixel goes at the end)
        SAME_LOWER:  begin = p − ⌊p/2⌋,  end = ⌊p/2⌋       (... at the beginning)
    VALID:           begin = end = 0

Case 1: Conv.
Case 2: AveragePool, MaxPool, LpPool.

Afterwards every padding is in `pads`, which fold-pad and lowering read.  Refused: an input
whose shape is not static, a pool with ceil_mode=1 (explicit pads round the output size
differently then), and explicit pads that would not reproduce the node's output shape.
ConvTranspose is not handled (its auto_pad works on the output shape instead).
"""

from __future__ import annotations

from collections.abc import Iterable

import onnx_ir as ir

from edgekiln.compiler.graph import Graph
from edgekiln.compiler.pass_contract import RewritePass, node_label
from edgekiln.passes.graph_edits import int_attr, ints_attr

PADDED_OPS = ("Conv", "AveragePool", "MaxPool", "LpPool")


def _auto_pad(node: ir.Node) -> str:
    attr = node.attributes.get("auto_pad")
    return attr.value if attr is not None else "NOTSET"


def explicit_pads(node: ir.Node) -> list[int] | str:
    """The `pads` equivalent to `node`'s auto_pad, or why they cannot be computed."""
    in_shape = Graph.static_shape(node.inputs[0])
    if in_shape is None:
        return "input shape is not static"
    spatial = in_shape[2:]
    n = len(spatial)
    if node.op_type == "Conv":
        w_shape = Graph.static_shape(node.inputs[1])
        kernel = ints_attr(node, "kernel_shape", list(w_shape[2:]) if w_shape else [])
        if len(kernel) != n:
            return "kernel shape is unknown"
    else:
        if int_attr(node, "ceil_mode", 0):
            return "ceil_mode=1 rounds explicit pads differently from auto_pad"
        kernel = ints_attr(node, "kernel_shape", [])
    strides, dilations = ints_attr(node, "strides", [1] * n), ints_attr(node, "dilations", [1] * n)
    mode = _auto_pad(node)
    begins, ends = [0] * n, [0] * n
    if mode in ("SAME_UPPER", "SAME_LOWER"):
        for axis, (i, s, k, d) in enumerate(zip(spatial, strides, kernel, dilations)):
            out = -(-i // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - i, 0)
            small, large = total // 2, total - total // 2
            begins[axis], ends[axis] = (small, large) if mode == "SAME_UPPER" else (large, small)
    elif mode != "VALID":
        return f"unknown auto_pad {mode!r}"
    # The pads must give the very output shape auto_pad gave.
    out_shape = Graph.static_shape(node.outputs[0])
    if out_shape is None:
        return "output shape is not static"
    for axis, (i, s, k, d) in enumerate(zip(spatial, strides, kernel, dilations)):
        size = (i + begins[axis] + ends[axis] - (k - 1) * d - 1) // s + 1
        if out_shape[2 + axis] != size:
            return f"explicit pads would give output size {size} on axis {2 + axis}, not {out_shape[2 + axis]}"
    return begins + ends


class MakePadsExplicitPass(RewritePass[ir.Node]):
    name = "make-pads-explicit"

    def match(self, graph: Graph) -> Iterable[ir.Node]:
        return [n for n in graph.main if n.op_type in PADDED_OPS and n.domain in ("", "ai.onnx")
                and _auto_pad(n) != "NOTSET"]

    def check(self, graph: Graph, node: ir.Node) -> str | None:
        pads = explicit_pads(node)
        return pads if isinstance(pads, str) else None

    def rewrite(self, graph: Graph, node: ir.Node) -> str:
        pads, mode = explicit_pads(node), _auto_pad(node)
        node.attributes.pop("auto_pad")
        node.attributes["pads"] = ir.AttrInt64s("pads", pads)
        return f"replaced auto_pad={mode} of {node_label(node)} by pads={pads}"
