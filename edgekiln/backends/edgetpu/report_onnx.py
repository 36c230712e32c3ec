"""The Edge TPU report of an ONNX model (`edgekiln inspect model.onnx --target edgetpu`).

An ONNX model is judged through the file the Edge TPU would get: it is compiled to int8 for
the `edgetpu` target (calibration: the data given, else synthetic data-free samples matched to
the BatchNorm statistics, which is enough for the op list but not for accuracy) and the
resulting `.tflite` is reported op by op (`report.py`).

When the compile refuses unsupported ONNX ops, the model is compiled with `--cpu-tail`
semantics instead (`rewrites_cpu_tail.py`): the TPU part is reported from its `.tflite`, and
every node of the split-off tail is appended as a CPU op, the nodes that start it with their
op-support reason and the rest "after segment".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx

from edgekiln.backends.edgetpu.compatibility_model import read_tflite_graph
from edgekiln.backends.edgetpu.partition import CPU, partition
from edgekiln.backends.edgetpu.report import EdgeTpuReport, build_report
from edgekiln.errors import UnsupportedOpError

SYNTHETIC_SAMPLES = "synthetic:2"


def report_for_onnx(model: str | Path, target: Any, input_shapes: Any = None, calib: Any = None) -> EdgeTpuReport:
    """Compile `model` to int8 for the Edge TPU `target` and report its .tflite (see the module docstring)."""
    from edgekiln.compiler.compile import compile_model
    from edgekiln.compiler.quant_options import QuantOptions

    calibration = calib if calib is not None else SYNTHETIC_SAMPLES
    how = "given calibration data" if calib is not None else "synthetic (data-free) calibration"
    options = QuantOptions(quant="int8", calib=calibration)
    label = Path(model).name
    try:
        result = compile_model(model, target, input_shapes=input_shapes, quantization=options, progress=False)
        tail = None
        analysis = f"compiled to an int8 .tflite ({how}); its ops judged by Coral's documented Edge TPU rules"
    except UnsupportedOpError:
        result = compile_model(model, target, input_shapes=input_shapes, quantization=options, progress=False,
                               cpu_tail=True)
        tail = result.artifact.files.get("cpu_tail.onnx")
        analysis = (f"unsupported ONNX ops: the part before them compiled to an int8 .tflite ({how}) and judged by "
                    "Coral's documented rules; the ONNX nodes from the first unsupported one on are listed as CPU ops")
    graph = read_tflite_graph(result.artifact.files["model.tflite"])
    part = partition(graph)
    report = build_report(graph, part, target, label, analysis)
    if tail is not None:
        _append_tail(report, onnx.load_from_string(tail), result.trace.notes)
    return report


def _append_tail(report: EdgeTpuReport, tail: onnx.ModelProto, notes: list[str]) -> None:
    from edgekiln.compiler.graph import Graph
    from edgekiln.compiler.model_stats import layer_stats
    from edgekiln.compiler.op_support import unsupported_nodes

    graph = Graph.from_proto(tail)
    reasons = {p.node_name: p.reason for p in unsupported_nodes(graph, "edgetpu")}
    start = len(report.ops)
    first = None
    for offset, stats in enumerate(layer_stats(graph)):
        reason = reasons.get(stats.name)
        category = "unsupported op" if reason else "after segment"
        if first is None and reason:
            first = {"index": start + offset, "op": f"{stats.op_type} (ONNX)", "reason": reason, "category": category}
        report.ops.append({
            "index": start + offset, "op": f"{stats.op_type} (ONNX)", "version": 0, "device": CPU,
            "reason": reason or "after the TPU segment (in the CPU tail)", "category": category,
            "macs": stats.macs or 0, "parameter_bytes": 4 * stats.params,
            "output_shape": [d if isinstance(d, int) else -1 for d in (stats.output_shape or ())]})
        report.cpu_after_segment.append(f"#{start + offset} {stats.op_type} (ONNX)")
        report.counts["total"] += 1
        report.counts["cpu"] += 1
        report.macs["total"] += stats.macs or 0
        report.macs["cpu"] += stats.macs or 0
    if report.segment_end is None:
        report.segment_end = first
    report.notes.extend(n for n in notes if n.startswith("cpu-tail"))
