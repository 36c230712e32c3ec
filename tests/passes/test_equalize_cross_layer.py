"""EqualizeCrossLayerPass: equal ranges, float-exact outputs, idempotence, depthwise pairs, refusals."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper, numpy_helper

from edgekiln.compiler.graph import Graph
from edgekiln.passes.equalize_cross_layer import EqualizeCrossLayerPass
from tests.conftest import max_relative_error, run_ort
from tests.support.graphs import build_graph

X = np.random.default_rng(5).standard_normal((2, 4, 8, 8)).astype(np.float32)


def const(name, array):
    return numpy_helper.from_array(np.asarray(array, np.float32), name)


def pair_graph(activation="Relu", group1=1, group2=1, extra=(), clip=(0.0, 6.0)):
    """x[4] -> conv1 (8 out, group1) -> act -> conv2 (8 out, group2) -> y, with uneven channel ranges."""
    rng = np.random.default_rng(1)
    w1 = rng.standard_normal((8, 4 // group1, 3, 3)) * np.geomspace(0.05, 20, 8)[:, None, None, None]
    w2 = rng.standard_normal((8, 8 // group2, 1, 1))
    inits = [const("W1", w1), const("B1", rng.standard_normal(8)), const("W2", w2), const("B2", rng.standard_normal(8))]
    nodes = [helper.make_node("Conv", ["x", "W1", "B1"], ["a"], "conv1", pads=[1, 1, 1, 1], group=group1)]
    source = "a"
    if activation == "Clip":
        inits += [const("lo", clip[0]), const("hi", clip[1])]
        nodes.append(helper.make_node("Clip", ["a", "lo", "hi"], ["r"], "act"))
        source = "r"
    elif activation is not None:
        nodes.append(helper.make_node(activation, ["a"], ["r"], "act"))
        source = "r"
    nodes.append(helper.make_node("Conv", [source, "W2", "B2"], ["y"], "conv2", group=group2))
    return build_graph([*nodes, *extra], [("x", [2, 4, 8, 8])], [("y", [2, 8, 8, 8])], inits)


def run_pass(graph: Graph, expect_fired: int, **options):
    original = graph.to_proto()
    result = EqualizeCrossLayerPass(**options).run(graph)
    assert len(result.applied) == expect_fired, (result.applied, result.not_applied)
    assert result.changed == (expect_fired > 0)
    proto = graph.to_proto()
    onnx.checker.check_model(proto, full_check=True)
    if not options.get("relu6_as_relu"):
        for want, got in zip(run_ort(original, {"x": X}), run_ort(proto, {"x": X})):
            assert max_relative_error(want, got) <= 1e-5
    before = graph.to_bytes()
    again = EqualizeCrossLayerPass(**options).run(graph)
    assert not again.changed and again.applied == [] and graph.to_bytes() == before
    return result


def ranges(graph: Graph):
    w1, w2 = Graph.constant(graph.node("conv1").inputs[1]), Graph.constant(graph.node("conv2").inputs[1])
    r1 = np.abs(w1).reshape(8, -1).max(axis=1)
    return r1, w2


@pytest.mark.parametrize("activation", ["Relu", None])
def test_conv_relu_conv_ranges_become_equal(activation):
    graph = pair_graph(activation)
    r_before, _ = ranges(graph)
    result = run_pass(graph, 1)
    r1, w2 = ranges(graph)
    r2 = np.abs(w2).reshape(8, 8).max(axis=0)  # per input channel of conv2
    np.testing.assert_allclose(r1, r2, rtol=1e-5)
    assert r1.max() / r1.min() < r_before.max() / r_before.min() / 10
    assert "spread (max/min)" in result.applied[0]


@pytest.mark.parametrize("group1, group2", [(4, 1), (1, 8), (4, 8)])
def test_depthwise_and_grouped_pairs(group1, group2):
    # conv1 grouped with 4 groups (1 input channel each) -> pointwise; pointwise -> depthwise conv2
    graph = pair_graph("Relu", group1=group1, group2=group2)
    run_pass(graph, 1)
    r1, w2 = ranges(graph)
    if group2 == 8:  # depthwise conv2: input channel i is row i
        np.testing.assert_allclose(r1, np.abs(w2).reshape(8, -1).max(axis=1), rtol=1e-5)


def test_a_chain_of_three_convs_converges_and_stays_float_exact():
    rng = np.random.default_rng(2)
    inits = [const("W1", rng.standard_normal((8, 4, 1, 1)) * np.geomspace(0.1, 10, 8)[:, None, None, None]),
             const("W2", rng.standard_normal((8, 1, 3, 3)) * np.geomspace(10, 0.1, 8)[:, None, None, None]),
             const("B2", rng.standard_normal(8)), const("W3", rng.standard_normal((8, 8, 1, 1)))]
    nodes = [helper.make_node("Conv", ["x", "W1"], ["a"], "expand"),
             helper.make_node("Relu", ["a"], ["ar"], "relu1"),
             helper.make_node("Conv", ["ar", "W2", "B2"], ["b"], "depthwise", group=8, pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["b"], ["br"], "relu2"),
             helper.make_node("Conv", ["br", "W3"], ["y"], "project")]
    graph = build_graph(nodes, [("x", [2, 4, 8, 8])], [("y", [2, 8, 8, 8])], inits)
    run_pass(graph, 2)


def test_relu6_is_refused_unless_asked_to_become_relu():
    graph = pair_graph("Clip")
    result = run_pass(graph, 0)
    assert any("act (Clip) clips at 6.0: Clip(x/s) != Clip(x)/s" in r for r in result.not_applied)
    graph = pair_graph("Clip")
    result = run_pass(graph, 1, relu6_as_relu=True)
    assert "replaced Relu6 act (Clip) by Relu" in result.applied[0]
    assert len(graph.node("act").inputs) == 2 and "hi" not in graph.main.initializers


def test_clip_without_upper_bound_is_positive_homogeneous_but_a_negative_floor_is_not():
    graph = pair_graph("Clip", clip=(0.0, float(np.finfo(np.float32).max)))
    run_pass(graph, 1)
    result = run_pass(pair_graph("Clip", clip=(-1.0, 6.0)), 0)
    assert any("clips below at -1.0" in r for r in result.not_applied)


def test_refusals_name_the_reason():
    result = run_pass(pair_graph("HardSwish"), 0)
    assert any("act (HardSwish) is not positive homogeneous" in r for r in result.not_applied)
    other = [helper.make_node("Sigmoid", ["r"], ["z"], "other")]
    graph = pair_graph("Relu", extra=other)
    result = run_pass(graph, 0)
    assert any("also read by other (Sigmoid)" in r for r in result.not_applied)


@pytest.mark.slow
def test_inverted_residual_zoo_model():
    """The zoo's MobileNetV2 blocks use Relu6: refused by default; with relu6_as_relu every
    expand -> depthwise -> project pair is equalized, and per-tensor int8 weights lose far less."""
    from edgekiln.compiler.frontend import load_model
    from edgekiln.compiler.pass_manager import PassManager
    from edgekiln.compiler.pipelines import simplify
    from tests.zoo import input_shapes, model_path

    graph = PassManager(simplify().passes).run(load_model(model_path("inverted_residual"),
                                                          input_shapes("inverted_residual")))
    refused = EqualizeCrossLayerPass().run(graph.clone())
    assert not refused.changed and sum("clips at 6.0" in r for r in refused.not_applied) == 7
    equalized = graph.clone()
    result = EqualizeCrossLayerPass(relu6_as_relu=True).run(equalized)
    assert len(result.applied) == 6  # three blocks x (expand -> depthwise, depthwise -> project)
    convs = [n.name for n in graph.nodes if n.op_type == "Conv"]

    def per_tensor_error(g: Graph) -> float:
        """Relative squared error of int8 per-tensor weights, summed over the convs."""
        total = 0.0
        for name in convs:
            w = Graph.constant(g.node(name).inputs[1]).astype(np.float64)
            scale = np.abs(w).max() / 127
            total += np.sum((np.rint(w / scale) * scale - w) ** 2) / np.sum(w ** 2)
        return total

    def per_tensor_weight_sqnr(g: Graph) -> float:
        """Output SQNR of the model against itself with int8 per-tensor weights (activations float)."""
        feeds = {"input": np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)}
        want = run_ort(g.to_proto(), feeds)[0]
        quantized = g.clone()
        for name in convs:
            value = quantized.node(name).inputs[1]
            w = Graph.constant(value)
            scale = np.abs(w).max() / 127
            value.const_value = ir.tensor((np.rint(w / scale) * scale).astype(np.float32), name=value.name)
        got = run_ort(quantized.to_proto(), feeds)[0]
        return float(10 * np.log10(np.sum(want.astype(np.float64) ** 2) / np.sum((want - got) ** 2)))

    before, after = per_tensor_error(graph), per_tensor_error(equalized)
    sqnr_before, sqnr_after = per_tensor_weight_sqnr(graph), per_tensor_weight_sqnr(equalized)
    print(f"inverted_residual int8 per-tensor weights: relative weight error {before:.2e} -> {after:.2e}, "
          f"output SQNR {sqnr_before:.1f} -> {sqnr_after:.1f} dB")
    assert after < 0.75 * before and sqnr_after > sqnr_before
