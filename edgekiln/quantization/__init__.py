"""Quantization schemes: which precision each node gets, and how weights become integers.

    config = QuantConfig.from_options(quant="int8", weights=["blocks.*:int4:g64"], keep_float=["head.*"])
    precisions = config.assign(graph)          # {node name: "int8" | "int4:g64" | "fp32" | ...}
    q, scale, group = quantize_weight(w, "int4:g64")

Precisions (weights : activations):

    fp32         float : float          (kept float, --keep-float)
    int8         int8 per output channel : int8 per tensor          (W8A8)
    int4         int4 per output channel : int8                     (W4A8)
    int4:g<g>    int4 per group of g along K = prod(W.shape[1:]) : int8
    ternary      {-1, 0, 1} x absmean per channel : int8            (BitNet b1.58)
    ternary:g<g> the same per group
    w4a16:g<g>   int4 groups : float (weight only; the reader stays float)

The graph rewrite itself is `edgekiln.passes.quantize_graph.QuantizeGraphPass`.
"""

from edgekiln.quantization.quant_config import (
    PrecisionRule,
    QuantConfig,
    parse_precision,
)
from edgekiln.quantization.weights import (
    QuantizedWeightValues,
    packed_value_bytes,
    packed_weight_bytes,
    quantize_weight,
)

__all__ = [
    "PrecisionRule",
    "QuantConfig",
    "QuantizedWeightValues",
    "packed_value_bytes",
    "packed_weight_bytes",
    "parse_precision",
    "quantize_weight",
]
