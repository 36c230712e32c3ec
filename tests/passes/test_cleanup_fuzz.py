"""Random-graph fuzz test of the cleanup pipeline.

Each seed builds a small random graph over x[1, C, H, W] out of Conv / Relu / Tanh / Add /
Sub / Mul / Max / LeakyRelu / Transpose / Reshape / Identity, seasoned with what the cleanup passes exist
for: constant subexpressions, duplicated nodes and chains (some with equal weights in
different initializers), no-ops (Mul by 1, Add of 0, Reshape to the same shape, Transpose
pairs and triples, zero Pad, full Slice, same-dtype Cast, single-input Concat), near misses
that must stay (Mul by 0.99999994 or by ones that broadcast, the same op on the same input with other attributes,
Sub(a, b) next to Sub(b, a)) and dead branches.  The cleanup pipeline then runs
through `PassManager` (fixed point, checker after every pass) and must keep the ONNX
checker happy, the onnxruntime outputs and the output names, never grow the graph, and
leave nothing for a second run.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekiln.compiler.explain import ExplainTrace
from edgekiln.compiler.graph import Graph
from edgekiln.compiler.pass_manager import PassManager
from edgekiln.passes.eliminate_common_subexpressions import (
    EliminateCommonSubexpressionsPass,
)
from edgekiln.passes.eliminate_identity import EliminateIdentityPass
from edgekiln.passes.eliminate_no_ops import EliminateNoOpsPass
from edgekiln.passes.fold_constants import FoldConstantsPass
from edgekiln.passes.remove_dead_nodes import RemoveDeadNodesPass
from tests.conftest import max_relative_error, run_ort
from tests.support.graphs import build_graph

SEEDS, CHUNK = 300, 25


def cleanup_passes():
    return [EliminateIdentityPass(), EliminateNoOpsPass(), EliminateCommonSubexpressionsPass(),
            FoldConstantsPass(), RemoveDeadNodesPass()]


class RandomGraph:
    """Grows a random graph; every value in `pool` has the shape of x and depends on x."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.shape = [1, int(self.rng.integers(2, 5)), int(self.rng.integers(3, 6)), int(self.rng.integers(3, 6))]
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.pool = ["x"]
        self.counter = 0

    # -- bookkeeping -------------------------------------------------------------------
    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}_{self.counter}"

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        out = self.fresh(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"n_{out}", **attrs))
        return out

    def const(self, values, dtype=np.float32) -> str:
        name = self.fresh("c")
        self.inits.append(numpy_helper.from_array(np.asarray(values, dtype), name))
        return name

    def pick(self) -> str:
        # Favour recent values so the graph gets deep as well as wide.
        k = len(self.pool)
        return self.pool[max(0, k - int(self.rng.geometric(0.4)))]

    # -- building blocks -----------------------------------------------------------------
    def conv(self) -> None:
        c = self.shape[1]
        w = (self.rng.standard_normal((c, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
        b = self.rng.standard_normal(c).astype(np.float32)
        self.pool.append(self.node("Conv", [self.pick(), self.const(w), self.const(b)], pads=[1, 1, 1, 1]))

    def unary(self) -> None:
        self.pool.append(self.node(str(self.rng.choice(["Relu", "Tanh", "Sigmoid"])), [self.pick()]))

    def binary(self) -> None:
        op = str(self.rng.choice(["Add", "Mul", "Max", "Sub"]))
        out = self.node(op, [self.pick(), self.pick()])
        self.pool.append(self.node("Tanh", [out]) if op == "Mul" else out)  # Tanh keeps products bounded

    def constant_subexpression(self) -> None:
        c = self.shape[1]
        a = self.const(self.rng.standard_normal((c, 1, 1)))
        b = self.const(self.rng.standard_normal((c, 1, 1)))
        folded = self.node(str(self.rng.choice(["Add", "Mul", "Sub"])), [a, b])
        self.pool.append(self.node(str(self.rng.choice(["Add", "Mul"])), [self.pick(), folded]))

    def no_op(self) -> None:
        v, c = self.pick(), self.shape[1]
        kind = int(self.rng.integers(11))
        if kind == 0:
            out = self.node("Mul", [v, self.const(np.ones((c, 1, 1)) if self.rng.random() < 0.5 else 1.0)])
        elif kind == 1:
            out = self.node("Add", [self.const(np.zeros((1, c, 1, 1))), v])
        elif kind == 2:
            out = self.node("Reshape", [v, self.const([1, -1, *self.shape[2:]], np.int64)])
        elif kind == 3:
            out = self.node("Identity", [v])
        elif kind == 4:
            out = self.node("Pad", [v, self.const([0] * 8, np.int64)])
        elif kind == 5:
            window = [self.const([bound], np.int64) for bound in (0, 1000, 2)]  # starts, ends, axes
            out = self.node("Slice", [v, *window])
        elif kind == 6:
            out = self.node("Cast", [v], to=TensorProto.FLOAT)
        elif kind == 7:
            out = self.node("Concat", [v], axis=1)
        elif kind == 8:
            out = self.node("Div", [v, self.const(1.0)])
        elif kind == 9:  # a near miss that must stay
            out = self.node("Mul", [v, self.const(0.99999994)])
        else:  # ones that broadcast [1, C, H, W] up to [2, C, H, W] must stay too
            wide = self.node("Mul", [self.const(np.ones((2, 1, 1, 1))), v])
            out = self.node("ReduceSum", [wide, self.const([0], np.int64)], keepdims=1)
        self.pool.append(out)

    def transposes(self) -> None:
        # Two or three Transposes composing to the identity (Cases 3 and 4), or a pair
        # around a Relu that must stay.
        v = self.pick()
        p1 = [int(i) for i in self.rng.permutation(4)]
        if self.rng.random() < 0.3:
            mid = self.node("Transpose", [v], perm=p1)
            p2 = [int(i) for i in self.rng.permutation(4)]
            mid = self.node("Transpose", [mid], perm=p2)
            composed = [p1[i] for i in p2]
        else:
            mid = self.node("Transpose", [v], perm=p1)
            if self.rng.random() < 0.3:
                mid = self.node("Relu", [mid])
            composed = p1
        self.pool.append(self.node("Transpose", [mid], perm=[int(i) for i in np.argsort(composed)]))

    def flatten_round_trip(self) -> None:
        flat = self.node("Reshape", [self.pick(), self.const([1, -1], np.int64)])
        self.pool.append(self.node("Reshape", [flat, self.const(self.shape, np.int64)]))

    def duplicate(self) -> None:
        # Copy an earlier node (sometimes with a copy of its constants under new names), and
        # sometimes its first reader too, so CSE has whole chains to merge.
        candidates = [n for n in self.nodes if n.output[0] in self.pool]
        if not candidates:
            return
        original = candidates[int(self.rng.integers(len(candidates)))]
        copy_constants = self.rng.random() < 0.5
        inputs = []
        for name in original.input:
            init = next((i for i in self.inits if i.name == name), None)
            if init is not None and copy_constants:
                values = numpy_helper.to_array(init)
                name = self.const(values, values.dtype)
            inputs.append(name)
        if original.op_type in ("Add", "Mul", "Sub", "Max") and self.rng.random() < 0.5:
            inputs.reverse()  # the same expression for Add and Mul only
        out = self.node(original.op_type, inputs, **{a.name: helper.get_attribute_value(a) for a in original.attribute})
        self.pool.append(out)
        reader = next((n for n in self.nodes if original.output[0] in n.input and n.output[0] in self.pool), None)
        if reader is not None and self.rng.random() < 0.5:
            inputs = [out if i == original.output[0] else i for i in reader.input]
            attrs = {a.name: helper.get_attribute_value(a) for a in reader.attribute}
            self.pool.append(self.node(reader.op_type, inputs, **attrs))

    def near_duplicate(self) -> None:
        # Same op, same inputs, different attributes: two expressions, not one.
        v = self.pick()
        if self.rng.random() < 0.5:
            for alpha in (0.1, 0.2):
                self.pool.append(self.node("LeakyRelu", [v], alpha=alpha))
            return
        c = self.shape[1]
        w = self.const(self.rng.standard_normal((c, c, 3, 3)) / np.sqrt(9 * c))
        self.pool.append(self.node("Conv", [v, w], pads=[1, 1, 1, 1]))
        self.pool.append(self.node("Conv", [v, w], pads=[2, 2, 2, 2], dilations=[2, 2]))

    def swapped_operands(self) -> None:
        # op(a, b) next to op(b, a): one expression for Add and Mul, two for Sub and Max.
        a, b = self.pick(), self.pick()
        op = str(self.rng.choice(["Add", "Mul", "Sub", "Max"]))
        for inputs in ([a, b], [b, a]):
            out = self.node(op, inputs)
            self.pool.append(self.node("Tanh", [out]) if op == "Mul" else out)

    def dead_branch(self) -> None:
        self.node("Sigmoid", [self.node("Conv", [self.pick(), self.const(np.ones((1, self.shape[1], 1, 1)))])])

    def build(self) -> Graph:
        blocks = [self.conv, self.unary, self.binary, self.constant_subexpression, self.no_op, self.no_op,
                  self.transposes, self.flatten_round_trip, self.duplicate, self.duplicate, self.near_duplicate,
                  self.swapped_operands, self.dead_branch]
        for _ in range(int(self.rng.integers(4, 16))):
            blocks[int(self.rng.integers(len(blocks)))]()
        if len(self.pool) == 1:
            self.unary()
        outputs = [self.pool[-1]]
        others = [v for v in self.pool[1:-1] if v not in outputs]
        if others and self.rng.random() < 0.5:
            outputs.append(others[int(self.rng.integers(len(others)))])
        return build_graph(self.nodes, [("x", self.shape)], [(o, self.shape) for o in outputs], self.inits)


@pytest.mark.parametrize("first", range(0, SEEDS, CHUNK), ids=lambda s: f"seeds{s}-{s + CHUNK - 1}")
def test_cleanup_pipeline_on_random_graphs(first):
    fired: dict[str, int] = {}
    for seed in range(first, first + CHUNK):
        random_graph = RandomGraph(seed)
        graph = random_graph.build()
        original = graph.to_proto()
        onnx.checker.check_model(original)
        trace = ExplainTrace()
        graph = PassManager(cleanup_passes()).run(graph, trace)
        context = f"seed {seed}"

        optimized = graph.to_proto()
        onnx.checker.check_model(optimized, full_check=True)
        assert [o.name for o in optimized.graph.output] == [o.name for o in original.graph.output], context
        for record in trace.records:
            assert record.nodes_after <= record.nodes_before, f"{context}: {record.pass_name} grew the graph"
            fired[record.pass_name] = fired.get(record.pass_name, 0) + len(record.applied)

        x = random_graph.rng.standard_normal(random_graph.shape).astype(np.float32)
        for want, got in zip(run_ort(original, {"x": x}), run_ort(optimized, {"x": x})):
            assert want.shape == got.shape, context
            assert max_relative_error(want, got) <= 1e-5, context

        frozen = graph.to_bytes()
        second = ExplainTrace()
        PassManager(cleanup_passes()).run(graph, second)
        assert not any(r.changed for r in second.records), f"{context}: a second run changed the graph"
        assert graph.to_bytes() == frozen, context
    # Each chunk exercises every pass (a generator that stopped producing work would pass vacuously).
    assert all(fired.get(p.name, 0) > 0 for p in cleanup_passes()), fired
