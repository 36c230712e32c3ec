"""RemoveDeadNodesPass: drop nodes whose outputs reach no graph output.

Delegates to onnx-ir's `RemoveUnusedNodesPass`, which also drops initializers nobody
reads.  A node is dead when none of its outputs is a graph output or read by a live node.
"""

from __future__ import annotations

import onnx_ir.passes.common as ir_passes

from edgekiln.compiler.graph import Graph
from edgekiln.compiler.pass_contract import Pass, PassResult


class RemoveDeadNodesPass(Pass):
    name = "remove-dead-nodes"

    def run(self, graph: Graph) -> PassResult:
        before = len(graph.main)
        changed = ir_passes.RemoveUnusedNodesPass()(graph.model).modified
        removed = before - len(graph.main)
        applied = [f"removed {removed} dead node(s)"] if removed else []
        return PassResult(graph, changed, applied)
