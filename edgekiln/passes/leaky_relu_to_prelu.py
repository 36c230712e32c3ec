"""LeakyReluToPReluPass: LeakyRelu(x, alpha) -> PRelu(x, slope = alpha), for the Edge TPU.

    LeakyRelu(x) = x if x >= 0 else alpha·x = PRelu(x, alpha)

The two are the same function; the rewrite exists because the Edge TPU maps PRELU (with a
constant alpha) but not LEAKY_RELU, so a LeakyRelu would end the model's single TPU segment.
The slope is written per channel, [C, 1, 1] for an NCHW input with a known C (Coral: "only one
alpha per channel"), and [1] otherwise; both broadcast to x exactly as alpha does.

Refused: a LeakyRelu outside the default domain, or on a non-float input.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx_ir as ir

from edgekiln.compiler.graph import Graph
from edgekiln.compiler.pass_contract import RewritePass, node_label
from edgekiln.passes.graph_edits import (
    add_initializer,
    float_activation_refusal,
    float_attr,
    replace_keeping_name,
)


class LeakyReluToPReluPass(RewritePass[ir.Node]):
    name = "leaky-relu-to-prelu"

    def match(self, graph: Graph) -> Iterable[ir.Node]:
        return [n for n in graph.main if n.op_type == "LeakyRelu"]

    def check(self, graph: Graph, node: ir.Node) -> str | None:
        return float_activation_refusal(node)

    def rewrite(self, graph: Graph, node: ir.Node) -> str:
        x = node.inputs[0]
        alpha = float_attr(node, "alpha", 0.01)
        shape = Graph.static_shape(x) if x.shape is not None else None
        slope_shape = (shape[1], 1, 1) if shape is not None and len(shape) == 4 else (1,)
        dtype = x.dtype.numpy() if x.dtype is not None else np.float32
        slope = add_initializer(graph, np.full(slope_shape, alpha, dtype=dtype), f"{node.name}_slope")
        prelu = ir.Node("", "PRelu", inputs=[x, slope], name=node.name, num_outputs=1)
        graph.main.insert_after(node, prelu)
        replace_keeping_name(graph, node, prelu.outputs[0])
        return f"{node_label(node)} -> PRelu with slope {alpha:g} of shape {list(slope_shape)}"
