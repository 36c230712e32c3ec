"""Arithmetic work of one kernel call, counted from the Program's tensor shapes.

A multiply-accumulate counts as 2 ops, as in the targets' `peak_ops_per_second`:

    convolution   2 * out_elements * (weight elements / out_channels)    W: [O, C/g, kh, kw]
    conv transp.  2 * in_elements  * (weight elements / in_channels)     W: [C, O/g, kh, kw]
    matmul / FC   2 * out_elements * K                                   K: A's reduced dim
    inverted res. the three convolutions of the fused block (expand 1x1, depthwise, project 1x1)

Every other op does about one op per output element; those are memory-bound, so their
"achieved ops/s" is not compared with the compute peak (`compute_bound` is False).  The
precision that sets the peak is the weight's (int8 / int4 / ternary by its quant bits) or
fp32 for a float call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

CONV_OPS = {"QConv2D", "QDepthwiseConv2D", "Conv", "FusedConv"}
CONV_TRANSPOSE_OPS = {"QConvTranspose2D", "ConvTranspose"}
MATMUL_OPS = {"QFullyConnected", "QMatMul", "MatMul", "FusedMatMul", "Gemm", "FusedGemm", "QSparseGemm",
              "SparseGemm"}
BITS_PRECISION = {8: "int8", 4: "int4", 2: "ternary"}


@dataclass(frozen=True)
class CallWork:
    ops: int
    compute_bound: bool     # a conv / matmul: compare with the peak
    precision: str          # the key into the target's peak_ops_per_second


def _elements(tensors: dict[str, Any], name: str) -> int:
    return math.prod(tensors[name]["shape"]) if name in tensors else 0


def call_work(call: dict[str, Any], tensors: dict[str, Any]) -> CallWork:
    """The work of `call` (program.json form) given the program's `tensors`."""
    op, inputs, outputs = call["op"], call["inputs"], call["outputs"]
    out = sum(_elements(tensors, o) for o in outputs if o)
    weighted = op in CONV_OPS or op in CONV_TRANSPOSE_OPS or op in MATMUL_OPS or op == "QInvertedResidual"
    # operand 1 is the weight only where the op has one: a lookup table's or a Gather's constant is not
    weight = tensors.get(inputs[1]) if weighted and len(inputs) > 1 and inputs[1] else None
    precision = "-"  # no weights: a data-movement or elementwise call
    if weight is not None and weight.get("kind") == "constant":
        quant = weight.get("quant")
        precision = BITS_PRECISION.get(quant["bits"], f"int{quant['bits']}") if quant else "fp32"
    elif op in MATMUL_OPS and inputs and inputs[0] in tensors:  # activations x activations
        precision = "int8" if tensors[inputs[0]]["dtype"] == "int8" else "fp32"
    if op == "QInvertedResidual":
        return CallWork(_inverted_residual_ops(inputs, outputs, tensors), True, precision)
    if op in CONV_OPS and weight is not None and weight["shape"]:
        per_output = math.prod(weight["shape"]) // max(weight["shape"][0], 1)
        return CallWork(2 * out * per_output, True, precision)
    if op in CONV_TRANSPOSE_OPS and weight is not None and weight["shape"]:
        per_input = math.prod(weight["shape"]) // max(weight["shape"][0], 1)
        return CallWork(2 * _elements(tensors, inputs[0]) * per_input, True, precision)
    if op in MATMUL_OPS and inputs and inputs[0] in tensors:
        a_shape = tensors[inputs[0]]["shape"]
        k = a_shape[-2] if call.get("attrs", {}).get("transA") else a_shape[-1]
        return CallWork(2 * out * k, True, precision)
    return CallWork(out, False, precision)


def _inverted_residual_ops(inputs: list[str], outputs: list[str], tensors: dict[str, Any]) -> int:
    # Operand layout of the fused call (compiler/fused_block_lowering.py): x, expand weight at 1,
    # depthwise weight at 5, project weight at 9.
    n, c, h, w = tensors[inputs[0]]["shape"]
    expanded = tensors[inputs[1]]["shape"][0]
    kh, kw = tensors[inputs[5]]["shape"][2:4]
    _, out_channels, oh, ow = tensors[outputs[0]]["shape"]
    return 2 * n * (h * w * expanded * c + oh * ow * expanded * kh * kw + oh * ow * out_channels * expanded)
