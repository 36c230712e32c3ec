"""RecognizeLayerNormPass: fire count, structure, ORT numerics, idempotence, and where it must not fire."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgekiln.compiler.graph import Graph
from edgekiln.passes.recognize_layer_norm import RecognizeLayerNormPass
from tests.conftest import max_relative_error, run_ort
from tests.support.graphs import build_graph

SHAPE = [2, 5, 8]
RNG = np.random.default_rng(7)
X = (RNG.standard_normal(SHAPE) * 3 + 1).astype(np.float32)
GAMMA = RNG.standard_normal(8).astype(np.float32)
BETA = RNG.standard_normal(8).astype(np.float32)


def _const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)


def _layer_norm_nodes(*, square="Pow", normalize="Div", axes=(-1,), eps_first=False, exponent=2.0,
                      opset=17, gamma=GAMMA, beta=BETA, eps_input=False):
    """LayerNorm in primitives: x -> y, plus its initializers (Cases 1-4 of the pass)."""
    inits = ([_const("two", exponent)] if square == "Pow" else []) + ([] if eps_input else [_const("eps", 1e-5)])
    if opset >= 18:
        inits.append(numpy_helper.from_array(np.array(axes, dtype=np.int64), "axes"))
        reduce = lambda i, o, n: helper.make_node("ReduceMean", [i, "axes"], [o], name=n)
    else:
        reduce = lambda i, o, n: helper.make_node("ReduceMean", [i], [o], name=n, axes=list(axes))
    nodes = [reduce("x", "mean", "mean"), helper.make_node("Sub", ["x", "mean"], ["d"], name="center")]
    nodes.append(helper.make_node("Pow", ["d", "two"], ["sq"], name="square") if square == "Pow"
                 else helper.make_node("Mul", ["d", "d"], ["sq"], name="square"))
    nodes.append(reduce("sq", "var", "variance"))
    nodes.append(helper.make_node("Add", ["eps", "var"] if eps_first else ["var", "eps"], ["ve"], name="add_eps"))
    nodes.append(helper.make_node("Sqrt", ["ve"], ["s"], name="root"))
    last = "y" if gamma is None and beta is None else "n"
    if normalize == "Div":
        nodes.append(helper.make_node("Div", ["d", "s"], [last], name="normalize"))
    else:
        nodes += [helper.make_node("Reciprocal", ["s"], ["r"], name="reciprocal"),
                  helper.make_node("Mul", ["r", "d"], [last], name="normalize")]
    if gamma is not None:
        inits.append(_const("gamma", gamma))
        nodes.append(helper.make_node("Mul", ["gamma", "n"], ["scaled" if beta is not None else "y"], name="scale"))
    if beta is not None:
        inits.append(_const("beta", beta))
        nodes.append(helper.make_node("Add", ["scaled" if gamma is not None else "n", "beta"], ["y"], name="shift"))
    return nodes, inits


def _graph(nodes, inits, opset=17, extra_inputs=(), outputs=(("y", SHAPE),)) -> Graph:
    return build_graph(nodes, [("x", SHAPE), *extra_inputs], list(outputs), inits, opset=opset)


def _run(graph: Graph, feeds=None):
    """Run the pass and check ORT outputs against the graph before it, plus idempotence."""
    feeds = feeds or {"x": X}
    original = graph.to_proto()
    result = RecognizeLayerNormPass().run(graph)
    onnx.checker.check_model(graph.to_proto())
    for want, got in zip(run_ort(original, feeds), run_ort(graph.to_proto(), feeds)):
        assert max_relative_error(want, got) <= 1e-5
    snapshot = graph.to_bytes()
    again = RecognizeLayerNormPass().run(graph)
    assert not again.changed and not again.applied and graph.to_bytes() == snapshot
    return result


@pytest.mark.parametrize("square, normalize, eps_first", [("Pow", "Div", False), ("Mul", "Reciprocal", True)])
def test_layer_norm_with_affine_becomes_one_node(square, normalize, eps_first):
    graph = _graph(*_layer_norm_nodes(square=square, normalize=normalize, eps_first=eps_first))
    result = _run(graph)
    assert result.changed and len(result.applied) == 1
    assert graph.count_ops() == {"LayerNormalization": 1}
    (node,) = graph.nodes
    assert node.attributes["axis"].value == -1 and node.attributes["epsilon"].value == pytest.approx(1e-5)
    assert [v.name for v in node.inputs] == ["x", "gamma", "beta"]  # γ, β already normalized-shaped: shared
    assert [v.name for v in graph.outputs] == ["y"]
    assert set(graph.main.initializers) == {"gamma", "beta"}  # ε and the exponent went with the pattern


def test_without_affine_gets_a_unit_scale():
    graph = _graph(*_layer_norm_nodes(gamma=None, beta=None))
    assert len(_run(graph).applied) == 1
    (node,) = graph.nodes
    assert node.op_type == "LayerNormalization" and len(node.inputs) == 2
    np.testing.assert_array_equal(Graph.constant(node.inputs[1]), np.ones(8, np.float32))


def test_opset_18_axes_input_over_two_trailing_axes():
    graph = _graph(*_layer_norm_nodes(axes=(-2, -1), opset=18, gamma=np.full((5, 8), 1.5), beta=None), opset=18)
    assert len(_run(graph).applied) == 1
    (node,) = graph.nodes
    assert node.attributes["axis"].value == -2
    assert Graph.constant(node.inputs[1]).shape == (5, 8)


def test_gamma_broadcast_from_a_padded_shape_is_copied():
    graph = _graph(*_layer_norm_nodes(gamma=GAMMA.reshape(1, 1, 8), beta=np.float32(0.25)))
    assert len(_run(graph).applied) == 1
    (node,) = graph.nodes
    assert Graph.constant(node.inputs[1]).shape == (8,) and Graph.constant(node.inputs[2]).shape == (8,)


def test_gamma_varying_over_a_leading_axis_stays_a_mul():
    gamma = RNG.standard_normal((5, 1)).astype(np.float32)  # varies over axis 1: not a LayerNorm scale
    graph = _graph(*_layer_norm_nodes(gamma=gamma))
    result = _run(graph)
    assert len(result.applied) == 1 and "kept scale (Mul)" in result.applied[0]
    assert graph.count_ops() == {"Add": 1, "LayerNormalization": 1, "Mul": 1}


def test_shared_gamma_is_read_not_mutated():
    nodes, inits = _layer_norm_nodes()
    nodes.append(helper.make_node("Mul", ["x", "gamma"], ["other"], name="other_reader"))
    graph = _graph(nodes, inits, outputs=(("y", SHAPE), ("other", SHAPE)))
    assert len(_run(graph).applied) == 1
    np.testing.assert_array_equal(Graph.constant(graph.main.initializers["gamma"]), GAMMA)


@pytest.mark.parametrize("build, reason", [
    (lambda: _graph(*_layer_norm_nodes(axes=(1,))), "axes [1] are not the trailing axes"),
    (lambda: _graph(*_layer_norm_nodes(exponent=3.0)), "exponent is not the constant 2"),
    (lambda: _graph(*_layer_norm_nodes(eps_input=True), extra_inputs=[("eps", [1])]), "epsilon is not a constant"),
    (lambda: _graph(*_layer_norm_nodes(), outputs=(("y", SHAPE), ("d", SHAPE))), "'d' is read outside"),
    (lambda: _graph(*_layer_norm_nodes(opset=16), opset=16), "opset 16 has no LayerNormalization"),
])
def test_does_not_fire(build, reason):
    graph = build()
    before = graph.to_bytes()
    result = RecognizeLayerNormPass().run(graph)
    assert not result.changed and not result.applied
    assert len(result.not_applied) == 1 and reason in result.not_applied[0], result.not_applied
    assert result.not_applied[0].startswith("mean:")
    assert graph.to_bytes() == before


def test_a_plain_reduce_mean_is_not_a_candidate():
    node = helper.make_node("ReduceMean", ["x"], ["y"], name="pool", axes=[1], keepdims=0)
    graph = build_graph([node], [("x", SHAPE)], [("y", [2, 8])])
    result = RecognizeLayerNormPass().run(graph)
    assert not result.changed and not result.not_applied


# -- real models ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ppocr_rec_layer_norms_are_all_recognized():
    from edgekiln.compiler.frontend import load_model
    from tests.zoo import input_shapes, model_path, sample_input

    graph = load_model(model_path("ppocr_rec"), input_shapes("ppocr_rec"))
    before = graph.count_ops()
    result = RecognizeLayerNormPass().run(graph)
    after = graph.count_ops()
    assert len(result.applied) == 5 and not result.not_applied
    assert after["LayerNormalization"] == 5
    assert all(op not in after for op in ("ReduceMean", "Pow", "Sqrt", "Sub"))
    assert len(graph.main) == sum(before.values()) - 5 * 8
    onnx.checker.check_model(graph.to_proto())
    feeds = sample_input("ppocr_rec")
    for want, got in zip(run_ort(model_path("ppocr_rec"), feeds), run_ort(graph.to_proto(), feeds)):
        assert max_relative_error(want, got) <= 1e-5
    assert not RecognizeLayerNormPass().run(graph).changed


@pytest.mark.slow
def test_tiny_transformer_already_has_layer_norm_ops():
    from edgekiln.compiler.frontend import load_model
    from tests.zoo import input_shapes, model_path

    graph = load_model(model_path("tiny_transformer"), input_shapes("tiny_transformer"))
    result = RecognizeLayerNormPass().run(graph)
    assert not result.changed and not result.not_applied  # its global-pool ReduceMean is no candidate
