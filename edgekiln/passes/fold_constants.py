"""FoldConstantsPass: evaluate nodes whose inputs are all constants.

    y = f(c1, ..., ck)  with every ci constant   ->   y becomes an initializer

Delegates to onnxscript's constant folder (which evaluates with the ONNX reference
implementation and also folds shape arithmetic on static shapes), then lifts the
resulting Constant nodes to initializers so later passes see one kind of constant.
Large results are not folded (the size limit): folding `Tile` of a weight would bloat the
model.
"""

from __future__ import annotations

import onnx_ir.passes.common as ir_passes
import onnxscript.optimizer

from edgekiln.compiler.graph import Graph
from edgekiln.compiler.pass_contract import Pass, PassResult

FOLDED_OUTPUT_LIMIT = 1 << 20  # elements


class FoldConstantsPass(Pass):
    name = "fold-constants"

    def run(self, graph: Graph) -> PassResult:
        before = graph.count_ops()
        result = onnxscript.optimizer.fold_constants_ir(graph.model, output_size_limit=FOLDED_OUTPUT_LIMIT)
        lift = ir_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)
        lifted = lift(graph.model).modified
        changed = result.modified or lifted
        if changed:
            ir_passes.RemoveUnusedNodesPass()(graph.model)
        after = graph.count_ops()
        folded = {op: n - after.get(op, 0) for op, n in before.items() if n > after.get(op, 0)}
        applied = [f"folded {n} {op} node(s)" for op, n in folded.items()]
        return PassResult(graph, changed, applied)
