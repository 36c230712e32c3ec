"""What `edgekiln inspect model.onnx` reports: model summary, per-layer costs, target support.

`inspect_model` gathers the facts (`model_stats` for sizes and costs, `op_support` for which
nodes each target's backend cannot lower); `InspectReport` prints them with rich or serializes
them to JSON.  Nothing here changes the graph, so inspect runs on any model the frontend
loads, dynamic dims included: those are flagged, and the costs that depend on them are
reported as unknown rather than guessed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from rich.console import Console
from rich.table import Table
from rich.text import Text

from edgekiln.compiler.graph import Graph
from edgekiln.compiler.model_stats import Dim, LayerStats, ModelSummary, TensorInfo, layer_stats, model_summary
from edgekiln.compiler.op_support import (
    REMOVED_BEFORE_LOWERING,
    UnsupportedNode,
    foldable_nodes,
    load_backend_ops,
    unsupported_nodes,
)

DEFAULT_MAX_LAYERS = 15


class TargetLike(Protocol):
    """What inspect needs from a target: its name and which backend lowers for it."""

    name: str
    backend: str


@dataclass(frozen=True)
class TargetSupport:
    """Which nodes one target cannot run.  `lowered` counts the nodes its backend must lower
    (layers less those removed or folded before lowering)."""

    target: str
    backend: str
    precisions: tuple[str, ...]
    lowered: int
    folded: int
    unsupported: list[UnsupportedNode] = field(default_factory=list)

    @property
    def runs_all(self) -> bool:
        return not self.unsupported


@dataclass(frozen=True)
class InspectReport:
    """Everything `edgekiln inspect` shows, for rendering or JSON."""

    model: str
    summary: ModelSummary
    layers: list[LayerStats]
    targets: list[TargetSupport]

    # -- JSON ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        s = self.summary
        return {
            "model": self.model,
            "graph": s.name,
            "opsets": s.opsets,
            "inputs": [_tensor_dict(t) for t in s.inputs],
            "outputs": [_tensor_dict(t) for t in s.outputs],
            "totals": {
                "layers": s.layers,
                "constant_nodes": s.constant_nodes,
                "params": s.params,
                "param_bytes_fp32": s.param_bytes_fp32,
                "macs": s.macs,
                "ops": s.ops,
                "unknown_cost_layers": s.unknown_cost_layers,
                "dynamic_layers": s.dynamic_layers,
            },
            "op_histogram": s.op_histogram,
            "layers": [asdict(layer) for layer in self.layers],
            "targets": [
                {
                    "target": t.target,
                    "backend": t.backend,
                    "precisions": list(t.precisions),
                    "lowered": t.lowered,
                    "folded": t.folded,
                    "runs_all": t.runs_all,
                    "unsupported": [asdict(u) for u in t.unsupported],
                }
                for t in self.targets
            ],
        }

    def to_json(self) -> str:
        """Deterministic: the same graph and targets give the same bytes."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    # -- console -------------------------------------------------------------------------
    def render(self, console: Console, max_layers: int | None = DEFAULT_MAX_LAYERS) -> None:
        """Print the report; `max_layers=None` (`--all`) lists every layer in graph order,
        otherwise the `max_layers` layers with the most MACs."""
        s = self.summary
        opsets = ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in s.opsets.items())
        console.print(Text.assemble(("model ", "bold"), (self.model, "bold cyan"), f"  ({opsets})"))
        for label, tensors in (("input", s.inputs), ("output", s.outputs)):
            for t in tensors:
                console.print(Text.assemble(f"  {label:<6} ", (t.name, "cyan"), f": {t.dtype}", _shape_text(t)))
        if s.dynamic_inputs:
            console.print(
                Text(
                    "  dynamic dims (marked ?): pin them with --input-shape NAME=DIMS to compile "
                    "and to count every layer's cost",
                    style="yellow",
                )
            )
        exact = f"{s.params:,}; " if s.params >= 1000 else ""
        console.print(f"parameters  {humanize(s.params, '')} ({exact}{humanize(s.param_bytes_fp32, 'B')} as fp32)")
        compute = f"compute     {humanize(s.macs, 'MAC')} + {humanize(s.ops, '')} other ops"
        if s.unknown_cost_layers:
            compute += f" (+ {s.unknown_cost_layers} of {s.layers} layers of unknown cost)"
        console.print(compute)
        console.print(f"layers      {s.layers}" + (f" (+ {s.constant_nodes} Constant nodes)" if s.constant_nodes else ""))
        console.print("ops         " + "  ".join(f"{op}×{n}" for op, n in s.op_histogram.items()))
        console.print(self._layer_table(max_layers))
        for t in self.targets:
            self._render_target(console, t)

    def _layer_table(self, max_layers: int | None) -> Table:
        indexed = list(enumerate(self.layers))
        if max_layers is not None and max_layers < len(indexed):
            indexed = sorted(indexed, key=lambda il: (-(il[1].macs or 0), il[0]))[:max_layers]
            title = f"top {max_layers} of {len(self.layers)} layers by MACs (--all lists every layer)"
        else:
            title = f"all {len(self.layers)} layers"
        table = Table(title=title, title_justify="left")
        for column in ("#", "layer", "op", "output shape", "params", "MACs", "ops"):
            table.add_column(column, justify="right" if column in ("#", "params", "MACs", "ops") else "left")
        for index, layer in indexed:
            table.add_row(
                str(index),
                layer.name,
                layer.op_type if not layer.domain else f"{layer.domain}::{layer.op_type}",
                format_shape(layer.output_shape),
                f"{layer.params:,}" if layer.params else "",
                "?" if layer.macs is None else (humanize(layer.macs, "") if layer.macs else ""),
                "?" if layer.ops is None else (humanize(layer.ops, "") if layer.ops else ""),
            )
        return table

    @staticmethod
    def _render_target(console: Console, t: TargetSupport) -> None:
        head = Text.assemble(("target ", "bold"), (t.target, "bold cyan"), f" ({t.backend}, {'/'.join(t.precisions)}):")
        folded = f" ({t.folded} more fold to constants)" if t.folded else ""
        if t.runs_all:
            console.print(head, Text(f"runs all {t.lowered} ops{folded}", style="green"))
            return
        console.print(head, Text(f"cannot run {len(t.unsupported)} of {t.lowered} ops{folded}", style="red"))
        table = Table(show_header=True, box=None, padding=(0, 1))
        for column in ("node", "op", "reason"):
            table.add_column(column, overflow="fold")
        for u in t.unsupported:
            table.add_row(u.node_name, u.op_type if not u.domain else f"{u.domain}::{u.op_type}", u.reason)
        console.print(table)


# -- building the report ---------------------------------------------------------------


def inspect_model(graph: Graph, targets: list[TargetLike]) -> InspectReport:
    """Summary, per-layer stats, and for each target the nodes its backend cannot lower."""
    layers = layer_stats(graph)
    summary = model_summary(graph, layers)
    folded = foldable_nodes(graph)
    lowered = sum(
        1 for n in graph.main if n.op_type not in REMOVED_BEFORE_LOWERING and (n.name or "") not in folded
    )
    support = [
        TargetSupport(
            target=target.name,
            backend=target.backend,
            precisions=load_backend_ops(target.backend).precisions,
            lowered=lowered,
            folded=len(folded),
            unsupported=unsupported_nodes(graph, target.backend),
        )
        for target in targets
    ]
    model = graph.source.name if graph.source is not None else (graph.main.name or "model")
    return InspectReport(model=model, summary=summary, layers=layers, targets=support)


# -- formatting ------------------------------------------------------------------------

_PREFIXES = ("", "k", "M", "G", "T", "P")


def humanize(count: int, unit: str) -> str:
    """`1_234_567_890, "MAC"` -> `"1.23 GMAC"`; three significant digits, SI prefixes."""
    value, prefix = float(count), 0
    while abs(value) >= 999.5 and prefix < len(_PREFIXES) - 1:
        value, prefix = value / 1000, prefix + 1
    if prefix == 0:
        return f"{count} {unit}".rstrip()
    digits = 2 if abs(value) < 10 else 1 if abs(value) < 100 else 0
    return f"{value:.{digits}f} {_PREFIXES[prefix]}{unit}"


def format_dim(dim: Dim) -> str:
    """An int as is; a symbolic dim as `name?`; an unnamed unknown as `?`."""
    if isinstance(dim, int):
        return str(dim)
    return "?" if dim == "?" else f"{dim}?"


def format_shape(shape: tuple[Dim, ...] | None) -> str:
    return "?" if shape is None else "[" + ", ".join(format_dim(d) for d in shape) + "]"


def _shape_text(t: TensorInfo) -> Text:
    if t.shape is None:
        return Text("[?]", style="yellow")
    text = Text("[")
    for i, dim in enumerate(t.shape):
        if i:
            text.append(", ")
        text.append(format_dim(dim), style="yellow" if i in t.dynamic_axes else "")
    text.append("]")
    return text


def _tensor_dict(t: TensorInfo) -> dict[str, Any]:
    return {"name": t.name, "dtype": t.dtype, "shape": t.shape, "dynamic_axes": list(t.dynamic_axes)}
