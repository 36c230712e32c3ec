"""QuantizeGraphPass: QDQ structure through the qdq_format matchers, ORT numerics, idempotence,
float islands, errors; on the zoo: SQNR and held-out accuracy per precision."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper, numpy_helper

from edgekiln.compiler.graph import Graph
from edgekiln.compiler.qdq_format import match_activation, match_weight
from edgekiln.errors import QuantizationError
from edgekiln.passes.fuse_epilogue import FuseEpiloguePass
from edgekiln.passes.quantize_graph import QuantizeGraphPass
from edgekiln.quantization import QuantConfig
from tests.conftest import run_ort
from tests.quantization.helpers import minmax_ranges, sqnr_db
from tests.support.graphs import build_graph

RNG = np.random.default_rng(11)
FEEDS = [{"x": RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(8)]


def const(name, array, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(array, dtype), name)


def cnn(extra_nodes=(), last="y", activation="Relu"):
    """x -> conv -> act -> maxpool -> flatten -> gemm(transB=0) -> y."""
    rng = np.random.default_rng(0)
    inits = [const("W", rng.standard_normal((4, 3, 3, 3))), const("B", rng.standard_normal(4)),
             const("G", rng.standard_normal((64, 5))), const("C", rng.standard_normal(5))]
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], "conv", pads=[1, 1, 1, 1]),
             helper.make_node(activation, ["c"], ["r"], "act"),
             helper.make_node("MaxPool", ["r"], ["p"], "pool", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"], "flatten"),
             helper.make_node("Gemm", ["f", "G", "C"], [last], "gemm"), *extra_nodes]
    return build_graph(nodes, [("x", [1, 3, 8, 8])], [("y", [1, 5])], inits)


def quantize(graph: Graph, config: QuantConfig, feeds=FEEDS):
    """Run the pass; check the checker, ORT, idempotence; return (result, float outputs, qdq outputs)."""
    original = graph.to_proto()
    ranges = minmax_ranges(graph, feeds)
    result = QuantizeGraphPass(config, ranges).run(graph)
    proto = graph.to_proto()
    onnx.checker.check_model(proto, full_check=True)
    want = np.concatenate([run_ort(original, f)[0] for f in feeds])
    got = np.concatenate([run_ort(proto, f)[0] for f in feeds])
    before = graph.to_bytes()
    again = QuantizeGraphPass(config, ranges).run(graph)
    assert not again.changed and again.applied == [] and graph.to_bytes() == before
    return result, want, got


def test_int8_cnn_structure_numerics_and_idempotence():
    graph = cnn()
    result, want, got = quantize(graph, QuantConfig("int8"))
    assert result.changed and result.not_applied == []
    assert len(result.applied) == 5 and "conv (Conv): int8: int8 weights, int32 bias, int8 activations" in result.applied
    conv, gemm, pool = graph.node("conv"), graph.node("gemm"), graph.node("pool")
    weight = match_weight(conv.inputs[1])
    assert weight.precision == "int8" and weight.q_values.shape == (4, 3, 3, 3) and not weight.transposed
    gemm_weight = match_weight(gemm.inputs[1])
    assert gemm_weight.transposed and gemm_weight.q_values.shape == (5, 64)  # transB=0: stored [N, K]
    bias = match_weight(conv.inputs[2])
    x = match_activation(conv.inputs[0])
    assert bias.precision == "int32" and bias.q_values.dtype == np.int32
    np.testing.assert_allclose(bias.scale, np.float32(x.scale) * weight.scale, rtol=1e-6)
    # requantization-free ops share their input's parameters
    pooled, pool_in = match_activation(graph.node("flatten").inputs[0]), match_activation(pool.inputs[0])
    assert (pooled.scale, pooled.zero_point) == (pool_in.scale, pool_in.zero_point)
    flat = match_activation(gemm.inputs[0])
    assert (flat.scale, flat.zero_point) == (pool_in.scale, pool_in.zero_point)
    assert [v.name for v in graph.outputs] == ["y"] and match_activation(graph.outputs[0]) is not None
    assert "W" not in graph.main.initializers  # the float weight is gone
    assert sqnr_db(want, got) > 30


def test_int4_groups_and_ternary_weights_read_back():
    graph = cnn()
    config = QuantConfig.from_options("int8", weights=["G:int4:g32", "conv:ternary"])  # by weight / node name
    _result, want, got = quantize(graph, config)
    gemm, conv = match_weight(graph.node("gemm").inputs[1]), match_weight(graph.node("conv").inputs[1])
    assert (gemm.precision, gemm.group_size, gemm.scale.shape) == ("int4:g32", 32, (5, 2))
    assert gemm.q_values.min() >= -7 and gemm.q_values.max() <= 7
    assert conv.precision == "ternary" and set(np.unique(conv.q_values)) <= {-1, 0, 1}
    assert sqnr_db(want, got) > 3  # ternary PTQ on a random conv is rough, but the graph is right


def test_weight_only_w4a16_keeps_activations_and_bias_float():
    graph = cnn()
    result, want, got = quantize(graph, QuantConfig("w4a16:g32"))
    gemm = graph.node("gemm")
    assert match_weight(gemm.inputs[1]).precision == "int4:g32"
    assert match_activation(gemm.inputs[0]) is None and gemm.inputs[2].name == "C"
    assert not any(n.op_type == "QuantizeLinear" for n in graph.nodes)
    assert "act (Relu): kept float: precision w4a16:g32: weight-only, activations stay float" in result.not_applied
    assert sqnr_db(want, got) > 20


def test_keep_float_node_between_quantized_nodes_reads_and_feeds_qdq():
    graph = cnn()
    result, want, got = quantize(graph, QuantConfig.from_options("int8", keep_float=["act"]))
    act = graph.node("act")
    assert "act (Relu): kept float: precision fp32 (--keep-float)" in result.not_applied
    assert match_activation(act.inputs[0]) is not None  # conv output quantized, read dequantized
    assert match_activation(graph.node("pool").inputs[0]) is not None  # a quantized reader needs it
    assert sqnr_db(want, got) > 30


def test_unsupported_op_stays_float_and_its_output_is_quantized_for_quantized_readers():
    graph = cnn(activation="Softplus")
    result, want, got = quantize(graph, QuantConfig("int8"))
    assert "act (Softplus): kept float: Softplus has no integer kernel" in result.not_applied
    assert match_activation(graph.node("act").inputs[0]) is not None
    assert sqnr_db(want, got) > 30


def test_matmul_weight_is_transposed_and_activation_matmul_quantizes_both_operands():
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], "proj"),
             helper.make_node("Transpose", ["h"], ["ht"], "t", perm=[0, 2, 1]),
             helper.make_node("MatMul", ["h", "ht"], ["s"], "scores"),
             helper.make_node("Mul", ["s", "k"], ["sk"], "scale"),
             helper.make_node("Softmax", ["sk"], ["a"], "softmax", axis=-1),
             helper.make_node("Concat", ["a", "s"], ["y"], "concat", axis=-1)]
    graph = build_graph(nodes, [("x", [1, 4, 6])], [("y", [1, 4, 8])],
                        [const("W", rng.standard_normal((6, 4))), const("k", 0.5)])
    feeds = [{"x": rng.standard_normal((1, 4, 6)).astype(np.float32)} for _ in range(6)]
    _result, want, got = quantize(graph, QuantConfig("int8"), feeds)
    proj, scores = graph.node("proj"), graph.node("scores")
    weight = match_weight(proj.inputs[1])
    assert weight.transposed and weight.q_values.shape == (4, 6)
    assert match_activation(scores.inputs[0]) is not None and match_activation(scores.inputs[1]) is not None
    constant = match_activation(graph.node("scale").inputs[1])  # a constant operand, quantized like an activation
    assert constant is not None and constant.source.name == "k"
    assert all(match_activation(v) is not None for v in graph.node("concat").inputs)
    assert sqnr_db(want, got) > 30


def test_fused_clamp_is_quantized_and_other_epilogues_stay_float():
    graph = cnn(activation="HardSwish")
    FuseEpiloguePass().run(graph)  # the float pipeline fuses HardSwish: not an integer clamp
    result, _, _ = quantize(graph, QuantConfig("int8"))
    assert any("conv (FusedConvHardSwish): kept float: fused epilogue HardSwish is not an integer clamp"
               in r for r in result.not_applied)
    graph = cnn(activation="Relu")
    FuseEpiloguePass(activations=frozenset({"Relu", "Clip"}), residual=False).run(graph)
    result, want, got = quantize(graph, QuantConfig("int8"))
    fused = graph.node("conv")
    assert fused.op_type == "FusedConvRelu" and match_weight(fused.inputs[1]).precision == "int8"
    assert match_weight(fused.inputs[2]).precision == "int32"
    assert sqnr_db(want, got) > 30


def test_a_missing_range_names_the_value_and_node_and_changes_nothing():
    graph = cnn()
    ranges = minmax_ranges(graph, FEEDS)
    del ranges["p"]  # MaxPool's output: needed once the MaxPool is float and Flatten is not
    before = graph.to_bytes()
    with pytest.raises(QuantizationError, match=r"no calibration range for value 'p'.*flatten \(Flatten\)"):
        QuantizeGraphPass(QuantConfig.from_options("int8", keep_float=["pool"]), ranges).run(graph)
    assert graph.to_bytes() == before
    # with the MaxPool quantized, its output shares its input's parameters and needs no range
    assert QuantizeGraphPass(QuantConfig("int8"), ranges).run(graph).changed


def test_nan_weight_and_nan_range_are_errors_naming_the_tensor():
    graph = cnn()
    ranges = minmax_ranges(graph, FEEDS)
    w = Graph.constant(graph.node("conv").inputs[1]).copy()
    w[0, 0, 0, 0] = np.inf
    graph.node("conv").inputs[1].const_value = ir.tensor(w, name="W")
    with pytest.raises(QuantizationError, match="'W' of node conv"):
        QuantizeGraphPass(QuantConfig("int8"), ranges).run(graph)
    with pytest.raises(QuantizationError, match="value 'c'.*NaN/Inf"):
        QuantizeGraphPass(QuantConfig("int8"), {**ranges, "c": (float("nan"), 1.0)}).run(cnn())


def test_a_bias_that_would_overflow_int32_raises_that_channels_weight_scale():
    graph = cnn()
    ranges = minmax_ranges(graph, FEEDS)
    graph.node("conv").inputs[2].const_value = ir.tensor(np.array([1e9, 0, 0, 0], np.float32), name="B")
    result = QuantizeGraphPass(QuantConfig("int8"), ranges).run(graph)
    assert any("weight scale raised on 1 channel(s) so the int32 bias fits" in a for a in result.applied)
    conv = graph.node("conv")
    weight, bias = match_weight(conv.inputs[1]), match_weight(conv.inputs[2])
    assert abs(int(bias.q_values[0])) <= 2**30 and bias.q_values[0] * bias.scale[0] == pytest.approx(1e9, rel=1e-6)
    rest = match_weight(quantized_conv_weight(QuantConfig("int8")))  # other channels keep max|w| / 127
    np.testing.assert_allclose(weight.scale[1:], rest.scale[1:], rtol=1e-6)


def quantized_conv_weight(config):
    graph = cnn()
    QuantizeGraphPass(config, minmax_ranges(graph, FEEDS)).run(graph)
    return graph.node("conv").inputs[1]


def test_conv_transpose_is_int8_per_tensor_and_an_overflowing_bias_is_clamped_with_a_warning():
    rng = np.random.default_rng(2)
    node = helper.make_node("ConvTranspose", ["x", "W", "B"], ["y"], "up", strides=[2, 2], kernel_shape=[2, 2])
    graph = build_graph([node], [("x", [1, 3, 8, 8])], [("y", [1, 4, 16, 16])],
                        [const("W", rng.standard_normal((3, 4, 2, 2))), const("B", [1e12, 0, 0, 0])])
    ranges = minmax_ranges(graph, FEEDS)
    with pytest.warns(UserWarning, match=r"node up \(ConvTranspose\): 1 bias value"):
        result = QuantizeGraphPass(QuantConfig("int4:g32", keep_first_last_int8=False), ranges).run(graph)
    assert "(ConvTranspose weights are int8 per tensor, not int4:g32)" in result.applied[0]
    weight = match_weight(graph.node("up").inputs[1])
    assert weight.precision == "int8" and len(set(weight.scale.tolist())) == 1
    assert match_weight(graph.node("up").inputs[2]).q_values[0] == 2**31 - 1
    onnx.checker.check_model(graph.to_proto(), full_check=True)
    assert run_ort(graph.to_proto(), FEEDS[0])[0].shape == (1, 4, 16, 16)


def test_activation_ranges_accept_objects_with_low_and_high():
    class Range:
        def __init__(self, low, high):
            self.low, self.high = low, high

    graph = cnn()
    ranges = {k: Range(*v) for k, v in minmax_ranges(graph, FEEDS).items()}
    assert QuantizeGraphPass(QuantConfig("int8"), ranges).run(graph).changed


# -- the zoo ------------------------------------------------------------------------------------

def _zoo_feeds(name, count, seed):
    from tests.zoo import TRAINED_MODELS, sample_input, zoo_heldout

    if name in TRAINED_MODELS:
        images, _ = zoo_heldout(name)
        return [{"input": images[i:i + 1]} for i in range(seed, seed + count)]
    shape = sample_input(name)["input"].shape
    rng = np.random.default_rng(seed)
    return [{"input": rng.standard_normal(shape).astype(np.float32)} for _ in range(count)]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lenet_mnist", "digits_cnn", "inverted_residual", "resnet_basic", "repvgg",
                                  "mobileone", "se_hardswish", "tiny_transformer"])
def test_zoo_int8_qdq_graph_is_valid_runs_and_is_close(name):
    from tests.quantization.helpers import quantization_float_graph

    graph = quantization_float_graph(name)
    calibration, test = _zoo_feeds(name, 32, 0), _zoo_feeds(name, 16, 100)
    ranges = minmax_ranges(graph, calibration)
    reference = graph.to_proto()
    result = QuantizeGraphPass(QuantConfig("int8"), ranges).run(graph)
    assert result.changed and result.not_applied == [], result.not_applied
    proto = graph.to_proto()
    onnx.checker.check_model(proto, full_check=True)
    want = np.concatenate([run_ort(reference, f)[0] for f in test])
    got = np.concatenate([run_ort(proto, f)[0] for f in test])
    sqnr = sqnr_db(want, got)
    print(f"{name}: int8 output SQNR {sqnr:.1f} dB")
    assert sqnr > (30 if name in ("lenet_mnist", "digits_cnn") else 20)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lenet_mnist", "digits_cnn"])
def test_zoo_heldout_accuracy_per_precision(name):
    """fp32 vs int8 vs int4:g32 vs ternary on the held-out digits, and what int8 guards recover."""
    from tests.quantization.helpers import quantization_float_graph, run_batches
    from tests.zoo import zoo_heldout

    images, labels = zoo_heldout(name)
    graph = quantization_float_graph(name)
    ranges = minmax_ranges(graph, _zoo_feeds(name, 64, 0))
    configs = {
        "int8": QuantConfig("int8"),
        "int4:g32": QuantConfig("int4:g32"),
        "ternary (all layers)": QuantConfig("ternary", keep_first_last_int8=False),
        "ternary (first/last int8)": QuantConfig("ternary"),
        "ternary:g32 (first/last int8)": QuantConfig("ternary:g32"),
    }
    accuracy = {"fp32": float(np.mean(run_batches(graph.to_proto(), "input", images).argmax(1) == labels))}
    for label, config in configs.items():
        quantized = graph.clone()
        QuantizeGraphPass(config, ranges).run(quantized)
        accuracy[label] = float(np.mean(run_batches(quantized.to_proto(), "input", images).argmax(1) == labels))
    print(f"{name} held-out accuracy ({len(labels)} images): "
          + ", ".join(f"{k} {v:.3f}" for k, v in accuracy.items()))
    assert accuracy["int8"] >= accuracy["fp32"] - 0.01
    assert accuracy["int4:g32"] >= accuracy["fp32"] - 0.03
    assert accuracy["ternary (first/last int8)"] >= accuracy["ternary (all layers)"]
