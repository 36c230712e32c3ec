"""The Edge TPU compatibility and partition report of a `.tflite` model: per op TPU or CPU and why.

Built from any TFLite file (edgekiln's or another converter's) by the documented rules
(`compatibility.py`, `partition.py`), and, when edgetpu_compiler ran, with the compiler's own
per-op statuses beside them (`compiler_log.py`).  Besides the op table it gives:

* where the single TPU segment ends and which ops fall to the CPU after it;
* the parameter bytes the TPU segment reads against the target's on-chip memory
  (`on_chip_memory_bytes`, ~8 MiB): what does not fit is streamed over the host link on every
  inference;
* the share of ops and of MACs on the TPU;
* an estimated TPU latency from the target description:

      compute   = 2 * MACs_tpu / (peak_int8_ops * UTILIZATION)
      streaming = streamed parameter bytes / link bandwidth
      transfer  = bytes into and out of the TPU segment / link bandwidth
      latency   = compute + streaming + transfer

  UTILIZATION is an assumption (stated in the report): Coral's published latencies for
  MobileNet-class models imply a small fraction of the 4 TOPS peak.  Ops on the CPU are not
  timed (the host is not in the target description); their MACs are reported instead.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgekiln.backends.edgetpu.compatibility import COMPILED_SEGMENT_OP
from edgekiln.backends.edgetpu.compatibility_model import TfliteGraph, read_tflite_graph
from edgekiln.backends.edgetpu.partition import TPU, Partition, partition

# Assumed share of the peak int8 rate the Edge TPU sustains on conv layers (see the docstring).
UTILIZATION = 0.25


@dataclass
class LatencyEstimate:
    compute_ms: float
    streaming_ms: float
    transfer_ms: float
    total_ms: float
    assumptions: list[str]


@dataclass
class EdgeTpuReport:
    source: str
    analysis: str                  # how the ops were obtained (a .tflite file, or an int8 compile of ONNX)
    ops: list[dict[str, Any]]
    segment_end: dict[str, Any] | None
    cpu_after_segment: list[str]
    counts: dict[str, int]
    macs: dict[str, int]
    parameters: dict[str, int]
    estimate: LatencyEstimate
    notes: list[str] = field(default_factory=list)
    compiler: dict[str, Any] | None = None  # the parsed edgetpu_compiler log, when it ran

    @property
    def op_share_tpu(self) -> float:
        return self.counts["tpu"] / self.counts["total"] if self.counts["total"] else 0.0

    @property
    def mac_share_tpu(self) -> float:
        return self.macs["tpu"] / self.macs["total"] if self.macs["total"] else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["op_share_tpu"] = round(self.op_share_tpu, 4)
        data["mac_share_tpu"] = round(self.mac_share_tpu, 4)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def render(self, console: Any, max_ops: int | None = None) -> None:
        """Print the op table and the summary on a rich console."""
        from rich.table import Table

        table = Table(title=f"Edge TPU partition of {self.source}", title_justify="left")
        for column in ("#", "op", "v", "device", "MACs", "params", "reason"):
            table.add_column(column, justify="right" if column in ("#", "v", "MACs", "params") else "left")
        if self.compiler is not None:
            table.add_column("edgetpu_compiler")
        shown = self.ops if max_ops is None else self.ops[:max_ops]
        for op in shown:
            row = [str(op["index"]), op["op"], str(op["version"]),
                   "[green]TPU[/]" if op["device"] == TPU else "[red]CPU[/]",
                   f"{op['macs']:,}", f"{op['parameter_bytes']:,}", op["reason"] or ""]
            if self.compiler is not None:
                row.append(op.get("compiler_status") or "")
            table.add_row(*row)
        console.print(table)
        if len(shown) < len(self.ops):
            console.print(f"... {len(self.ops) - len(shown)} more ops (--all-layers shows every op)")
        for line in self.summary_lines():
            console.print(line, highlight=False, markup=False)

    def summary_lines(self) -> list[str]:
        c, m, p, e = self.counts, self.macs, self.parameters, self.estimate
        lines = [f"analysis: {self.analysis}",
                 (f"ops on the Edge TPU: {c['tpu']} of {c['total']} ({self.op_share_tpu:.0%}); "
                  f"MACs on the Edge TPU: {m['tpu']:,} of {m['total']:,} ({self.mac_share_tpu:.0%})")]
        if self.segment_end is None:
            lines.append("TPU segment: the whole model (no op ends it)")
        else:
            s = self.segment_end
            lines.append(f"TPU segment ends at op #{s['index']} {s['op']}: {s['reason']}")
            lines.append(f"on the CPU after it ({len(self.cpu_after_segment)}): "
                         + ", ".join(self.cpu_after_segment[:12]) + (" ..." if len(self.cpu_after_segment) > 12 else ""))
        lines.append(f"parameters on the TPU: {p['tpu_bytes']:,} B; on-chip memory {p['on_chip_bytes']:,} B: "
                     f"cached {p['cached_bytes']:,} B, streamed from the host every inference {p['streamed_bytes']:,} B")
        streaming = [f"#{op['index']} {op['op']}" for op in self.ops if op.get("parameters_streamed")]
        if streaming:
            lines.append(f"ops whose parameters stream (cache filled in execution order): {', '.join(streaming[:12])}"
                         + (" ..." if len(streaming) > 12 else ""))
        lines.append(f"estimated TPU latency: {e.total_ms:.3f} ms (compute {e.compute_ms:.3f} + parameter streaming "
                     f"{e.streaming_ms:.3f} + input/output transfer {e.transfer_ms:.3f}); CPU MACs not timed: {m['cpu']:,}")
        lines.extend(f"assumption: {a}" for a in e.assumptions)
        lines.extend(f"note: {n}" for n in self.notes)
        if self.compiler is not None:
            lines.append(f"edgetpu_compiler {self.compiler.get('version') or ''}: {self.compiler.get('summary', '')}")
        return lines

    def to_text(self, max_ops: int | None = None) -> str:
        """The rendered report as plain text (no colour), e.g. for `edgetpu_report.txt`."""
        from rich.console import Console

        buffer = io.StringIO()
        self.render(Console(file=buffer, width=160, no_color=True, color_system=None), max_ops=max_ops)
        return buffer.getvalue()


def report_from_tflite(source: bytes | str | Path, target: Any = "edgetpu", *, label: str | None = None,
                       analysis: str = "the .tflite file's ops, judged by Coral's documented Edge TPU rules"
                       ) -> EdgeTpuReport:
    """The report of a .tflite file (a path or its bytes) for an Edge TPU `target` (name or Target)."""
    from edgekiln.compiler.target import get_target

    target = get_target(target) if isinstance(target, str) else target
    graph = read_tflite_graph(source)
    name = label or (Path(source).name if isinstance(source, (str, Path)) else "<tflite bytes>")
    return build_report(graph, partition(graph), target, name, analysis)


def build_report(graph: TfliteGraph, part: Partition, target: Any, source: str, analysis: str) -> EdgeTpuReport:
    placements = part.placements
    tpu = [p for p in placements if p.device == TPU]
    macs_total = sum(p.macs for p in placements)
    macs_tpu = sum(p.macs for p in tpu)
    tpu_parameter_bytes = sum(p.parameter_bytes for p in tpu)
    on_chip = int(target.on_chip_memory_bytes)
    cached = min(tpu_parameter_bytes, on_chip)
    streamed = tpu_parameter_bytes - cached
    # The compiler fills the cache in execution order (assumed); ops whose parameters do not fit stream them.
    streaming, filled = set(), 0
    for p in tpu:
        filled += p.parameter_bytes
        if p.parameter_bytes and filled > on_chip:
            streaming.add(p.index)
    transfer = _segment_transfer_bytes(graph, part)
    estimate = _estimate(target, macs_tpu, streamed, transfer)
    segment_end = None
    if part.segment_end is not None:
        cut = placements[part.segment_end]
        segment_end = {"index": cut.index, "op": cut.op, "reason": cut.reason, "category": cut.category}
    notes = []
    if graph.subgraph_count > 1:
        notes.append(f"the file has {graph.subgraph_count} subgraphs; only subgraph 0 is analysed")
    if any(p.op == COMPILED_SEGMENT_OP for p in placements):
        notes.append("the file is already compiled by edgetpu_compiler: its TPU segment is the edgetpu-custom-op "
                     "(MACs and parameters inside it are not visible)")
    if any(p.category == "op version" for p in placements):
        notes.append("an op version is newer than edgetpu_compiler 16 parses: it will refuse the model outright")
    return EdgeTpuReport(
        source=source, analysis=analysis,
        ops=[{**asdict(p), "output_shape": list(p.output_shape), "parameters_streamed": p.index in streaming}
             for p in placements],
        segment_end=segment_end,
        cpu_after_segment=[f"#{p.index} {p.op}" for p in part.after_segment],
        counts={"total": len(placements), "tpu": len(tpu), "cpu": len(placements) - len(tpu),
                "boundary": sum(p.category == "model boundary" for p in placements)},
        macs={"total": macs_total, "tpu": macs_tpu, "cpu": macs_total - macs_tpu},
        parameters={"file_bytes": graph.file_parameter_bytes, "tpu_bytes": tpu_parameter_bytes,
                    "on_chip_bytes": on_chip, "cached_bytes": cached, "streamed_bytes": streamed,
                    "transfer_bytes": transfer},
        estimate=estimate, notes=notes)


def _segment_transfer_bytes(graph: TfliteGraph, part: Partition) -> int:
    """Bytes of activations entering the TPU segment from outside it plus those leaving it."""
    on_tpu = {p.index for p in part.placements if p.device == TPU}
    produced_on_tpu = {t.index for i in on_tpu for t in graph.ops[i].outputs}
    consumed_off_tpu = {t.index for op in graph.ops if op.index not in on_tpu for t in op.inputs if t is not None}
    outputs = {t.index for t in graph.outputs}
    entering = {t.index: t.nbytes for i in on_tpu for t in graph.ops[i].inputs
                if t is not None and not t.is_constant and t.index not in produced_on_tpu}
    leaving = {t.index: t.nbytes for i in on_tpu for t in graph.ops[i].outputs
               if t.index in consumed_off_tpu or t.index in outputs}
    return sum(entering.values()) + sum(leaving.values())


def _estimate(target: Any, macs_tpu: int, streamed: int, transfer: int) -> LatencyEstimate:
    peak = float(target.peak_ops_per_second.get("int8", 0.0))
    bandwidth = float(target.memory_bandwidth_gbps) * 1e9
    compute = 2.0 * macs_tpu / (peak * UTILIZATION) if peak else 0.0
    streaming = streamed / bandwidth if bandwidth else 0.0
    moved = transfer / bandwidth if bandwidth else 0.0
    assumptions = [
        f"{UTILIZATION:.0%} of the {peak / 1e12:g} TOPS int8 peak is sustained (1 MAC = 2 ops)",
        (f"the host link moves {target.memory_bandwidth_gbps:g} GB/s (streamed parameters and the segment's "
         "inputs/outputs); parameters that fit on chip are loaded once, before the first inference"),
    ]
    to_ms = 1e3
    return LatencyEstimate(compute_ms=compute * to_ms, streaming_ms=streaming * to_ms, transfer_ms=moved * to_ms,
                           total_ms=(compute + streaming + moved) * to_ms, assumptions=assumptions)
