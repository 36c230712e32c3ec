"""The quantization step of `compile`: calibrate the fused float graph, then write its QDQ form.

    fused float graph ──(bias correction)──▶ calibrate ranges ──▶ QuantizeGraphPass ──▶ QDQ graph

The QDQ graph is the float reference onnxruntime runs; integer lowering reads it next.
"""

from __future__ import annotations

from edgekiln.compiler.explain import ExplainTrace
from edgekiln.compiler.graph import Graph
from edgekiln.compiler.pass_manager import PassManager
from edgekiln.compiler.quant_options import QuantOptions
from edgekiln.compiler.target import Target
from edgekiln.errors import OptionError, QuantizationError

# A precision kind -> the target precision it needs.
_TARGET_PRECISION = {"int8": "int8", "int4": "int4", "w4a16": "int4", "ternary": "ternary", "fp32": "fp32"}


def check_target_precisions(config, target: Target) -> None:
    """Refuse precisions the target does not run (the EdgeTPU runs int8 only)."""
    from edgekiln.quantization.quant_config import precision_kind

    asked = {config.default, *(rule.precision for rule in config.rules)}
    missing = sorted({p for p in asked if _TARGET_PRECISION[precision_kind(p)] not in target.precisions})
    if missing:
        raise OptionError(
            f"target {target.name} runs {', '.join(target.precisions)} only, but {', '.join(missing)} was asked "
            f"(--quant / --weights); choose one of those precisions or another target"
        )


def refuse_non_finite_weights(graph: Graph) -> None:
    """NaN or Inf in a layer's weights, named before calibration spends any time on it."""
    import numpy as np

    from edgekiln.compiler.pass_contract import node_label
    from edgekiln.quantization.quant_config import is_weighted

    for node in graph.main:
        if not is_weighted(node):
            continue
        for value in node.inputs[1:]:
            array = Graph.constant(value)
            if array is not None and array.dtype.kind == "f" and not np.all(np.isfinite(array)):
                where = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
                raise QuantizationError(
                    f"weight {value.name!r} of node {node_label(node)} holds {array[where]} at index {where}; "
                    "a quantization scale cannot cover it. Fix the model's weights (re-export it)"
                )


def quantize_graph(graph: Graph, options: QuantOptions, target: Target, trace: ExplainTrace,
                   unfolded: Graph | None = None, progress: bool = True) -> Graph:
    """Calibrate `graph` (the fused float graph) and rewrite it into its QDQ form, in place.

    `unfolded` is the graph as loaded, before BatchNorm folding: data-free ('synthetic')
    calibration matches the BatchNorm statistics stored there.
    """
    from edgekiln.calibration import ImagePreprocessing, calibrate, open_calibration_data
    from edgekiln.passes.correct_bias import CorrectBiasPass
    from edgekiln.passes.quantize_graph import QuantizeGraphPass

    config = options.config()
    check_target_precisions(config, target)
    refuse_non_finite_weights(graph)
    preprocessing = ImagePreprocessing.parse(options.preprocessing) if options.preprocessing else None
    data = open_calibration_data(options.calib, graph, preprocessing=preprocessing, model_graph=unfolded,
                                 num_samples=options.calib_samples)
    trace.note(f"calibration: {data.num_samples} sample(s), method {options.calib_method}")
    if options.bias_correction:
        PassManager([CorrectBiasPass(data, config)], stage="bias-correction").run(graph, trace)
    ranges = calibrate(graph, data, method=options.calib_method, progress=progress)
    # A target without fp32 (EdgeTPU, the FPGAs) gets int8 outputs: its graph is integer end to end.
    float_outputs = options.float_outputs and "fp32" in target.precisions
    return PassManager([QuantizeGraphPass(config, ranges, float_outputs=float_outputs)],
                       stage="quantize").run(graph, trace)
