"""`PassManager`: run an ordered list of passes to a fixed point, checking after each.

A sweep runs every pass once, in order.  Sweeps repeat until one changes nothing (or the
sweep limit is hit, which is reported: passes that undo each other are a bug).  After each
pass that changed the graph, the structural checker and the ONNX checker run; a failure
names the pass, the node and the passes that ran before it.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx

from edgekiln.compiler.explain import ExplainTrace, PassRecord
from edgekiln.compiler.graph import Graph
from edgekiln.compiler.pass_contract import NodeRewriteFailed, Pass, node_label
from edgekiln.errors import PassError


def find_structural_problem(graph: Graph) -> str | None:
    """The first node reading a value nobody defines before it, or None when the graph is sound."""
    defined = {id(v) for v in graph.inputs}
    defined |= {id(v) for v in graph.main.initializers.values()}
    for node in graph.main:
        for value in node.inputs:
            if value is not None and id(value) not in defined:
                return f"node {node_label(node)} reads {value.name!r}, which is not defined before it"
        defined |= {id(v) for v in node.outputs}
    for value in graph.outputs:
        if id(value) not in defined:
            return f"graph output {value.name!r} is not produced by any node"
    return None


class PassManager:
    def __init__(self, passes: Sequence[Pass], max_sweeps: int = 8, check: bool = True, stage: str = "") -> None:
        self.passes = list(passes)
        self.stage = stage
        self.max_sweeps = max_sweeps
        self.check = check

    def run(self, graph: Graph, trace: ExplainTrace | None = None) -> Graph:
        trace = trace if trace is not None else ExplainTrace()
        history: list[str] = []
        for sweep in range(1, self.max_sweeps + 1):
            sweep_changed = False
            for p in self.passes:
                before = len(graph.main)
                try:
                    result = p.run(graph)
                except NodeRewriteFailed as exc:
                    raise PassError(self._blame(p, history, f"failed on node {exc.node_name!r}: {exc}")) from exc
                graph = result.graph
                history.append(p.name)
                trace.records.append(
                    PassRecord(p.name, sweep, result.changed, before, len(graph.main),
                               result.applied, result.not_applied, self.stage)
                )
                if result.changed:
                    sweep_changed = True
                    if self.check:
                        self._check(graph, p, history[:-1])
            if not sweep_changed:
                return graph
        trace.note(f"passes still changing the graph after {self.max_sweeps} sweeps; stopped there")
        return graph

    def _check(self, graph: Graph, p: Pass, before: list[str]) -> None:
        problem = find_structural_problem(graph)
        if problem is None:
            try:
                onnx.checker.check_model(graph.to_proto())
            except onnx.checker.ValidationError as exc:
                problem = str(exc).strip().splitlines()[0]
        if problem is not None:
            raise PassError(self._blame(p, before, f"left an invalid graph: {problem}"))

    @staticmethod
    def _blame(p: Pass, before: list[str], what: str) -> str:
        ran = ", ".join(dict.fromkeys(before)) or "none"
        return f"pass {p.name} {what} (passes run before it: {ran}). This is an edgekiln bug; please report it with the model."
