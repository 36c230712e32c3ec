"""PassManager: fixed point, checking after each pass, blame, and the explain trace."""

from __future__ import annotations

import onnx
import pytest

from edgekiln.compiler.explain import ExplainTrace
from edgekiln.compiler.graph import Graph
from edgekiln.compiler.pass_contract import NodeRewriteFailed, Pass, PassResult
from edgekiln.compiler.pass_manager import PassManager, find_structural_problem
from edgekiln.errors import PassError
from edgekiln.passes.eliminate_identity import EliminateIdentityPass
from edgekiln.passes.remove_dead_nodes import RemoveDeadNodesPass
from tests.support.graphs import conv_relu_model


def _graph(**kwargs) -> Graph:
    return Graph.from_proto(onnx.shape_inference.infer_shapes(conv_relu_model(**kwargs)))


class CountingPass(Pass):
    """Changes the graph on its first `budget` runs only (a pass that converges)."""

    name = "counting"

    def __init__(self, budget: int) -> None:
        self.budget, self.runs = budget, 0

    def run(self, graph: Graph) -> PassResult:
        self.runs += 1
        changed = self.runs <= self.budget
        return PassResult(graph, changed, [f"run {self.runs}"] if changed else [])


class DisconnectingPass(Pass):
    """A broken pass: rewires the Relu to read a value that nobody produces."""

    name = "disconnecting"

    def run(self, graph: Graph) -> PassResult:
        import onnx_ir as ir

        relu = next(n for n in graph.main if n.op_type == "Relu")
        relu.replace_input_with(0, ir.Value(name="dangling"))
        return PassResult(graph, True)


class RaisingPass(Pass):
    name = "raising"

    def run(self, graph: Graph) -> PassResult:
        raise NodeRewriteFailed("conv", "weights have an unexpected rank")


def test_runs_sweeps_until_nothing_changes():
    counting = CountingPass(budget=2)
    trace = ExplainTrace()
    PassManager([counting], check=False).run(_graph(), trace)
    assert counting.runs == 3  # two changing sweeps, one quiet sweep that proves the fixed point
    assert [r.changed for r in trace.records] == [True, True, False]


def test_stops_at_the_sweep_limit_and_says_so():
    counting = CountingPass(budget=100)
    trace = ExplainTrace()
    PassManager([counting], max_sweeps=4, check=False).run(_graph(), trace)
    assert counting.runs == 4
    assert any("after 4 sweeps" in n for n in trace.notes)


def test_a_pass_that_breaks_the_graph_is_named_with_the_node_and_its_predecessors():
    manager = PassManager([RemoveDeadNodesPass(), CountingPass(budget=1), DisconnectingPass()])
    with pytest.raises(PassError) as info:
        manager.run(_graph())
    message = str(info.value)
    assert "pass disconnecting" in message
    assert "relu (Relu)" in message and "dangling" in message
    assert "remove-dead-nodes, counting" in message


def test_a_failing_rewrite_names_the_node():
    with pytest.raises(PassError, match=r"pass raising failed on node 'conv'.*unexpected rank"):
        PassManager([RaisingPass()]).run(_graph())


def test_structural_check_accepts_a_sound_graph():
    assert find_structural_problem(_graph()) is None


def test_explain_trace_lists_applied_and_not_applied_rewrites():
    graph = _graph(extra_dead_node=True)
    trace = ExplainTrace()
    PassManager([EliminateIdentityPass(), RemoveDeadNodesPass()]).run(graph, trace)
    text = trace.render()
    assert "removed identity (Identity)" in text
    assert "removed 1 dead node(s)" in text
    assert '"pass_name": "eliminate-identity"' in trace.to_json()
