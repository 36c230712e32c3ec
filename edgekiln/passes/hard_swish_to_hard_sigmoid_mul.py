"""HardSwishToHardSigmoidMulPass: HardSwish(x) -> Mul(x, HardSigmoid(x, α=1/6, β=½)), for the Edge TPU.

    HardSwish(x) = x·relu6(x + 3)/6 = x·max(0, min(1, x/6 + ½)) = x·HardSigmoid_{1/6,½}(x)

(the ONNX operator's own function definition, so the rewrite is exact in float).

Why: HARD_SWISH is not in Coral's supported-op table, so the first hard-swish of a MobileNetV3
style model ends its single Edge TPU segment.  Both halves of the product map: the int8 TFLite
writer writes a HardSigmoid lookup table, an affine function with a clamp, as a 1x1
DEPTHWISE_CONV_2D (`fit_affine_table`), and the product as MUL.  Two TPU ops, one fewer than
the textbook spelling ADD(x, 3) + RELU6, MUL by 1/6, MUL: a 1x1 depthwise conv does the scale,
the offset and the clamp in one op (MUL by 1/6 would be a separate int8 op rounding once more).

Run before quantization, so calibration sees the HardSigmoid output and it gets its own int8
parameters (range [0, 1]: a step of 1/255 at most), and the MUL rescales x·h into the
HardSwish output's parameters.

Refused: a HardSwish outside the default domain, or on a non-float input.
"""

from __future__ import annotations

from collections.abc import Iterable

import onnx_ir as ir

from edgekiln.compiler.graph import Graph
from edgekiln.compiler.pass_contract import RewritePass, node_label
from edgekiln.passes.graph_edits import (
    float_activation_refusal,
    replace_keeping_name,
    unique_name,
    unique_node_name,
)

HARD_SWISH_ALPHA, HARD_SWISH_BETA = 1.0 / 6.0, 0.5


class HardSwishToHardSigmoidMulPass(RewritePass[ir.Node]):
    name = "hard-swish-to-hard-sigmoid-mul"

    def match(self, graph: Graph) -> Iterable[ir.Node]:
        return [n for n in graph.main if n.op_type == "HardSwish"]

    def check(self, graph: Graph, node: ir.Node) -> str | None:
        return float_activation_refusal(node)

    def rewrite(self, graph: Graph, node: ir.Node) -> str:
        x, result = node.inputs[0], node.outputs[0]
        gate = ir.Node("", "HardSigmoid", inputs=[x], name=unique_node_name(graph, f"{node.name}_hard_sigmoid"),
                       attributes=[ir.AttrFloat32("alpha", HARD_SWISH_ALPHA), ir.AttrFloat32("beta", HARD_SWISH_BETA)],
                       num_outputs=1)
        gate.outputs[0].name = unique_name(graph, f"{result.name}_gate")
        gate.outputs[0].shape, gate.outputs[0].type = result.shape, result.type
        product = ir.Node("", "Mul", inputs=[x, gate.outputs[0]], name=node.name, num_outputs=1)
        graph.main.insert_after(node, [gate, product])
        replace_keeping_name(graph, node, product.outputs[0])
        return f"{node_label(node)} -> Mul(x, HardSigmoid(x, alpha=1/6, beta=0.5)) (HARD_SWISH is no Edge TPU op)"
