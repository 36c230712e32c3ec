"""Where the single Edge TPU segment of a TFLite model ends, and what runs on the CPU after it.

The documented rule ([MODELS] "Compiling"): the Edge TPU compiler maps one segment.  At the
first op it cannot map, it cuts the graph; that op and every op after it (in the file's
execution order) run on the CPU, even ops the Edge TPU could run — edgetpu_compiler logs them
as "More than one subgraph is not supported".  Float <-> int8 conversions at the model's edges
(`OpVerdict.boundary`) run on the CPU without cutting.  The compiler's `-a` / `-d` options, which
allow further segments, are not modelled.

Each op also carries its MAC count (multiply-accumulates of CONV_2D, DEPTHWISE_CONV_2D,
FULLY_CONNECTED, TRANSPOSE_CONV, BATCH_MATMUL; other ops count 0) and the bytes of the constant
parameters it is the first op to read (shared constants count once).
"""

from __future__ import annotations

from dataclasses import dataclass

from edgekiln.backends.edgetpu.compatibility import OpVerdict, judge_op
from edgekiln.backends.edgetpu.compatibility_model import TfliteGraph, TfliteOp

TPU, CPU = "tpu", "cpu"


@dataclass
class Placement:
    index: int
    op: str
    version: int
    device: str              # TPU or CPU
    reason: str | None       # why on the CPU (None on the TPU)
    category: str | None     # compatibility category, or "after segment"
    macs: int
    parameter_bytes: int
    output_shape: tuple[int, ...]


@dataclass
class Partition:
    placements: list[Placement]
    segment_end: int | None  # index of the op that ends the TPU segment, None when nothing does

    @property
    def after_segment(self) -> list[Placement]:
        if self.segment_end is None:
            return []
        return [p for p in self.placements if p.index > self.segment_end]


def op_macs(op: TfliteOp) -> int:
    """Multiply-accumulates of one op (weights are OHWI, depthwise 1HWC, FC [out, in])."""
    if not op.outputs or len(op.inputs) < 2 or op.inputs[1] is None or op.inputs[0] is None:
        return 0
    out, weight = op.outputs[0], op.inputs[1]
    if op.name == "CONV_2D" and len(weight.shape) == 4:
        return out.elements * weight.shape[1] * weight.shape[2] * weight.shape[3]
    if op.name == "DEPTHWISE_CONV_2D" and len(weight.shape) == 4:
        return out.elements * weight.shape[1] * weight.shape[2]
    if op.name == "FULLY_CONNECTED" and weight.shape:
        return out.elements * weight.shape[-1]
    if op.name == "BATCH_MATMUL" and len(weight.shape) >= 2:
        transposed = op.option("adjY", False)
        return out.elements * (weight.shape[-1] if transposed else weight.shape[-2])
    if op.name == "TRANSPOSE_CONV" and len(op.inputs) > 2 and op.inputs[2] is not None:
        # inputs: output_shape, weights [O, kh, kw, I], input: each input element feeds kh·kw·O outputs.
        weight, data = op.inputs[1], op.inputs[2]
        if len(weight.shape) == 4:
            return data.elements * weight.shape[0] * weight.shape[1] * weight.shape[2]
    return 0


def partition(graph: TfliteGraph, verdicts: list[OpVerdict] | None = None) -> Partition:
    """Place every op of `graph` on the TPU or the CPU under the single-segment rule."""
    verdicts = verdicts if verdicts is not None else [judge_op(graph, op) for op in graph.ops]
    placements, seen_constants, segment_end = [], set(), None
    for op, verdict in zip(graph.ops, verdicts):
        parameters = [t for t in op.inputs if t is not None and t.is_constant and t.index not in seen_constants]
        seen_constants.update(t.index for t in parameters)
        if segment_end is not None:
            cut = graph.ops[segment_end]
            after = f"after the TPU segment, which ends at op #{cut.index} {cut.name} (one segment only)"
            reason = after if verdict.mappable or verdict.boundary else f"{verdict.reason}; {after}"
            device, category = CPU, verdict.category if not verdict.mappable else "after segment"
        elif verdict.mappable:
            device, reason, category = TPU, None, None
        else:
            device, reason, category = CPU, verdict.reason, verdict.category
            if not verdict.boundary:
                segment_end = op.index
        placements.append(Placement(
            index=op.index, op=op.name, version=op.version, device=device, reason=reason, category=category,
            macs=op_macs(op), parameter_bytes=sum(t.nbytes for t in parameters),
            output_shape=tuple(op.outputs[0].shape) if op.outputs else ()))
    return Partition(placements, segment_end)
