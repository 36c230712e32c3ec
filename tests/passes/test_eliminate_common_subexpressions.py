"""EliminateCommonSubexpressionsPass: merges, numerics, idempotence, and the duplicates it must keep."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgekiln.compiler.frontend import load_model
from edgekiln.compiler.graph import Graph
from edgekiln.passes.eliminate_common_subexpressions import (
    EliminateCommonSubexpressionsPass,
)
from tests.conftest import max_relative_error, run_ort
from tests.support.graphs import build_graph
from tests.zoo import all_models, input_shapes, model_path, sample_input

SHAPE = [1, 3, 6, 6]
X = np.random.default_rng(4).standard_normal(SHAPE).astype(np.float32)
RNG = np.random.default_rng(5)
W = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)


def _const(name: str, values, dtype=np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype), name)


def _run_and_compare(graph: Graph):
    """Run the pass; ORT outputs equal the graph's before it, output names stay, a rerun is a no-op."""
    original = graph.to_proto()
    result = EliminateCommonSubexpressionsPass().run(graph)
    assert result.changed == bool(result.applied)
    onnx.checker.check_model(graph.to_proto(), full_check=True)
    for want, got in zip(run_ort(original, {"x": X}), run_ort(graph.to_proto(), {"x": X})):
        assert max_relative_error(want, got) <= 1e-5
    assert [v.name for v in graph.outputs] == [o.name for o in original.graph.output]
    frozen = graph.to_bytes()
    again = EliminateCommonSubexpressionsPass().run(graph)
    assert not again.changed and not again.applied and graph.to_bytes() == frozen
    return result


def _readers(graph: Graph, name: str) -> int:
    return len(graph.main.initializers[name].uses())


def test_a_duplicated_chain_collapses_in_one_run():
    # Case 1: relu_b duplicates relu_a; once merged, sigmoid_b duplicates sigmoid_a.
    nodes = [helper.make_node("Relu", ["x"], ["ra"], name="relu_a"),
             helper.make_node("Relu", ["x"], ["rb"], name="relu_b"),
             helper.make_node("Sigmoid", ["ra"], ["sa"], name="sigmoid_a"),
             helper.make_node("Sigmoid", ["rb"], ["sb"], name="sigmoid_b"),
             helper.make_node("Add", ["sa", "sb"], ["y"], name="join")]
    graph = build_graph(nodes, [("x", SHAPE)], [("y", SHAPE)])
    result = _run_and_compare(graph)
    assert result.applied == ["merged relu_b (Relu) into relu_a (Relu)",
                              "merged sigmoid_b (Sigmoid) into sigmoid_a (Sigmoid)"]
    assert graph.count_ops() == {"Add": 1, "Relu": 1, "Sigmoid": 1}
    assert [v.name for v in graph.node("join").inputs] == ["sa", "sa"]


def test_equal_constants_in_different_initializers_count_as_the_same_input():
    # Case 2: two_a and two_b hold the same 2.0; minus_zero differs from zero in its bytes.
    nodes = [helper.make_node("Mul", ["x", "two_a"], ["ma"], name="mul_a"),
             helper.make_node("Mul", ["x", "two_b"], ["mb"], name="mul_b"),
             helper.make_node("Add", ["ma", "zero"], ["aa"], name="add_zero"),
             helper.make_node("Add", ["mb", "minus_zero"], ["ab"], name="add_minus_zero"),
             helper.make_node("Div", ["aa", "ab"], ["y"], name="join")]
    inits = [_const("two_a", 2.0), _const("two_b", 2.0), _const("zero", 0.0), _const("minus_zero", -0.0)]
    graph = build_graph(nodes, [("x", SHAPE)], [("y", SHAPE)], inits)
    result = _run_and_compare(graph)
    assert result.applied == ["merged mul_b (Mul) into mul_a (Mul)"]
    assert graph.count_ops() == {"Add": 2, "Div": 1, "Mul": 1}
    # The orphaned initializer is dead-node removal's to drop; the kept one is not shared.
    assert _readers(graph, "two_a") == 1 and _readers(graph, "two_b") == 0


def test_identical_conv_weights_are_merged_only_with_their_node():
    # conv_b duplicates conv_a (same input, equal weights); conv_c has the same weights on
    # another input and keeps reading its own copy: no shared weight appears.
    nodes = [helper.make_node("Conv", ["x", "Wa"], ["ca"], name="conv_a", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "Wb"], ["cb"], name="conv_b", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["x"], ["rx"], name="relu"),
             helper.make_node("Conv", ["rx", "Wc"], ["cc"], name="conv_c", pads=[1, 1, 1, 1]),
             helper.make_node("Sum", ["ca", "cb", "cc"], ["y"], name="join")]
    inits = [numpy_helper.from_array(W.copy(), name) for name in ("Wa", "Wb", "Wc")]
    graph = build_graph(nodes, [("x", SHAPE)], [("y", [1, 4, 6, 6])], inits)
    result = _run_and_compare(graph)
    assert result.applied == ["merged conv_b (Conv) into conv_a (Conv)"]
    assert graph.count_ops() == {"Conv": 2, "Relu": 1, "Sum": 1}
    assert (_readers(graph, "Wa"), _readers(graph, "Wb"), _readers(graph, "Wc")) == (1, 0, 1)


def test_commutative_operands_in_either_order_are_merged():
    # Case 3: Add(a, b) == Add(b, a) bit for bit; Sub is not commutative.
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("Add", ["a", "x"], ["s1"], name="add_ax"),
             helper.make_node("Add", ["x", "a"], ["s2"], name="add_xa"),
             helper.make_node("Sub", ["a", "x"], ["d1"], name="sub_ax"),
             helper.make_node("Sub", ["x", "a"], ["d2"], name="sub_xa"),
             helper.make_node("Sum", ["s1", "s2", "d1", "d2"], ["y"], name="join")]
    graph = build_graph(nodes, [("x", SHAPE)], [("y", SHAPE)])
    result = _run_and_compare(graph)
    assert result.applied == ["merged add_xa (Add) into add_ax (Add)"]
    assert graph.count_ops() == {"Add": 1, "Relu": 1, "Sub": 2, "Sum": 1}


def test_different_attributes_are_different_expressions():
    nodes = [helper.make_node("LeakyRelu", ["x"], ["a"], name="leaky_a", alpha=0.1),
             helper.make_node("LeakyRelu", ["x"], ["b"], name="leaky_b", alpha=0.2),
             helper.make_node("Conv", ["x", "W"], ["c1"], name="conv_pad1", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "W"], ["c2"], name="conv_pad0"),
             helper.make_node("Add", ["a", "b"], ["y"], name="join_a"),
             helper.make_node("Mul", ["c1", "c1"], ["z1"], name="square"),
             helper.make_node("ReduceSum", ["c2"], ["z"], name="reduce")]
    graph = build_graph(nodes, [("x", SHAPE)], [("y", SHAPE), ("z1", [1, 4, 6, 6]), ("z", [1, 1, 1, 1])],
                        [numpy_helper.from_array(W, "W")])
    result = EliminateCommonSubexpressionsPass().run(graph)
    assert not result.changed and not result.applied and not result.not_applied


def test_a_duplicate_graph_output_hands_its_name_to_the_kept_node():
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu_a"),
             helper.make_node("Sigmoid", ["r"], ["y"], name="sigmoid"),
             helper.make_node("Relu", ["x"], ["z"], name="relu_b")]
    graph = build_graph(nodes, [("x", SHAPE)], [("y", SHAPE), ("z", SHAPE)])
    result = _run_and_compare(graph)
    assert result.applied == ["merged relu_b (Relu) into relu_a (Relu)"]
    assert graph.outputs[1].name == "z" and graph.outputs[1].producer().name == "relu_a"
    assert graph.node("sigmoid").inputs[0] is graph.outputs[1]


REFUSED = {
    "both-graph-outputs": (
        [helper.make_node("Relu", ["x"], ["y"], name="relu_a"), helper.make_node("Relu", ["x"], ["z"], name="relu_b")],
        [("y", SHAPE), ("z", SHAPE)], [],
        "relu_b (Relu): it duplicates relu_a (Relu), but both outputs are graph outputs"),
    "random": (
        [helper.make_node("RandomNormalLike", ["x"], ["n1"], name="noise_a", seed=1.0),
         helper.make_node("RandomNormalLike", ["x"], ["n2"], name="noise_b", seed=1.0),
         helper.make_node("Add", ["n1", "n2"], ["y"], name="join")],
        [("y", SHAPE)], [],
        ("noise_b (RandomNormalLike): it duplicates noise_a (RandomNormalLike), but RandomNormalLike is random: "
         "two draws are not one value")),
    "custom-domain": (
        [helper.make_node("Tick", ["x"], ["t1"], name="tick_a", domain="com.example"),
         helper.make_node("Tick", ["x"], ["t2"], name="tick_b", domain="com.example"),
         helper.make_node("Add", ["t1", "t2"], ["y"], name="join")],
        [("y", SHAPE)], [("com.example", 1)],
        "tick_b (Tick): it duplicates tick_a (Tick), but ops of domain 'com.example' may have side effects"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_duplicates_that_must_stay(case):
    nodes, outputs, extra_opsets, reason = REFUSED[case]
    graph = build_graph(nodes, [("x", SHAPE)], outputs, extra_opsets=extra_opsets)
    before = graph.count_ops()
    result = EliminateCommonSubexpressionsPass().run(graph)
    assert not result.changed and result.not_applied == [reason]
    assert graph.count_ops() == before


@pytest.mark.slow
@pytest.mark.parametrize("name", all_models())
def test_models_keep_their_outputs(name):
    path = model_path(name)
    graph = load_model(path, input_shapes(name))
    before = len(graph.main)
    result = EliminateCommonSubexpressionsPass().run(graph)
    onnx.checker.check_model(graph.to_proto())
    feeds = sample_input(name)
    for want, got in zip(run_ort(onnx.load(path), feeds), run_ort(graph.to_proto(), feeds)):
        assert max_relative_error(want, got) <= 1e-5
    assert len(graph.main) == before - len(result.applied)
    # The frontend's folding leaves no duplicated expression in these models.
    assert result.applied == [] and not result.changed


@pytest.mark.slow
@pytest.mark.parametrize("name", all_models())
def test_models_as_exported_merge_their_duplicated_constants(name):
    # Before the frontend lifts them, exporters repeat Constant nodes (PP-OCR: one per use).
    path = model_path(name)
    graph = Graph.from_proto(onnx.load(path))
    before = len(graph.main)
    result = EliminateCommonSubexpressionsPass().run(graph)
    onnx.checker.check_model(graph.to_proto())
    feeds = sample_input(name)
    for want, got in zip(run_ort(onnx.load(path), feeds), run_ort(graph.to_proto(), feeds)):
        assert max_relative_error(want, got) <= 1e-5
    assert len(graph.main) == before - len(result.applied)
    merged = {"inverted_residual": 12, "tiny_transformer": 10, "ppocr_det": 101, "ppocr_rec": 177, "ppocr_cls": 76}
    assert len(result.applied) == merged.get(name, 0)
