"""The first cleanup passes: fire count, structure, numerics, idempotence, and no-fire cases."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgekiln.compiler.graph import Graph
from edgekiln.passes.eliminate_identity import EliminateIdentityPass
from edgekiln.passes.fold_constants import FoldConstantsPass
from edgekiln.passes.remove_dead_nodes import RemoveDeadNodesPass
from tests.conftest import max_relative_error, run_ort
from tests.support.graphs import conv_relu_model

X = np.random.default_rng(2).standard_normal((1, 3, 8, 8)).astype(np.float32)


def _graph(model: onnx.ModelProto) -> Graph:
    return Graph.from_proto(onnx.shape_inference.infer_shapes(model))


def _assert_same_outputs(model: onnx.ModelProto, graph: Graph) -> None:
    onnx.checker.check_model(graph.to_proto())
    for want, got in zip(run_ort(model, {"x": X}), run_ort(graph.to_proto(), {"x": X})):
        assert max_relative_error(want, got) <= 1e-5


def test_identity_removed_keeping_the_output_name():
    model = conv_relu_model()
    graph = _graph(model)
    result = EliminateIdentityPass().run(graph)
    assert result.changed and len(result.applied) == 1
    assert "Identity" not in graph.count_ops()
    assert [v.name for v in graph.outputs] == ["y"]
    assert graph.outputs[0].producer().op_type == "Relu"
    _assert_same_outputs(model, graph)
    assert not EliminateIdentityPass().run(graph).changed  # idempotent


def _dropout_model(training_mode: bool | None, use_mask: bool) -> onnx.ModelProto:
    inputs = ["x"] + (["", "t"] if training_mode is not None else [])
    outputs = ["d", "mask"] if use_mask else ["d"]
    nodes = [helper.make_node("Dropout", inputs, outputs, name="dropout"),
             helper.make_node("Relu", ["d"], ["y"], name="relu")]
    inits = [numpy_helper.from_array(np.array(training_mode), "t")] if training_mode is not None else []
    graph_outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])]
    if use_mask:
        graph_outputs.append(helper.make_tensor_value_info("mask", TensorProto.BOOL, [1, 3, 8, 8]))
    graph = helper.make_graph(nodes, "dropout", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              graph_outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_inference_dropout_is_removed():
    model = _dropout_model(training_mode=False, use_mask=False)
    graph = _graph(model)
    assert EliminateIdentityPass().run(graph).changed
    assert graph.count_ops() == {"Relu": 1}
    _assert_same_outputs(model, graph)


def test_dropout_is_kept_when_its_mask_is_used_or_training_is_on():
    for model in (_dropout_model(training_mode=None, use_mask=True), _dropout_model(training_mode=True, use_mask=False)):
        graph = _graph(model)
        result = EliminateIdentityPass().run(graph)
        assert not result.changed
        assert result.not_applied and result.not_applied[0].startswith("dropout:")


def test_identity_between_graph_input_and_output_is_kept():
    node = helper.make_node("Identity", ["x"], ["y"], name="passthrough")
    graph_proto = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                                    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    graph = _graph(helper.make_model(graph_proto, opset_imports=[helper.make_opsetid("", 17)], ir_version=8))
    result = EliminateIdentityPass().run(graph)
    assert not result.changed and "joins a graph input" in result.not_applied[0]


def test_dead_nodes_removed_once():
    model = conv_relu_model(extra_dead_node=True)
    graph = _graph(model)
    result = RemoveDeadNodesPass().run(graph)
    assert result.changed and result.applied == ["removed 1 dead node(s)"]
    assert "Sigmoid" not in graph.count_ops()
    _assert_same_outputs(model, graph)
    assert not RemoveDeadNodesPass().run(graph).changed


def test_constant_subgraph_is_folded_into_the_conv_weights():
    # W = Mul(W0, 2): a constant expression left by an exporter.
    model = conv_relu_model()
    model.graph.initializer[0].name = "W0"
    model.graph.initializer.append(numpy_helper.from_array(np.array(2.0, np.float32), "two"))
    model.graph.node.insert(0, helper.make_node("Mul", ["W0", "two"], ["W"], name="scale_weights"))
    graph = _graph(model)
    EliminateIdentityPass().run(graph)
    result = FoldConstantsPass().run(graph)
    assert result.changed and result.applied == ["folded 1 Mul node(s)"]
    assert "Mul" not in graph.count_ops()
    _assert_same_outputs(model, graph)
    assert not FoldConstantsPass().run(graph).changed


def test_nothing_to_fold_when_a_graph_input_is_involved():
    graph = _graph(conv_relu_model())
    EliminateIdentityPass().run(graph)
    assert not FoldConstantsPass().run(graph).changed
