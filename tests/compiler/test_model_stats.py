"""Parameter, MAC and op counts against numbers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekiln.compiler.graph import Graph
from tests.support.graphs import build_graph
from edgekiln.compiler.model_stats import layer_stats, model_summary

F = TensorProto.FLOAT


def build(nodes, inputs, outputs=(("y", None),), initializers=(), opset=17, extra_opsets=()) -> Graph:
    return build_graph(nodes, inputs, outputs, initializers, opset, extra_opsets, strict=True)


def weight(name: str, *shape: int) -> TensorProto:
    return numpy_helper.from_array(np.zeros(shape, np.float32), name)


def one_layer(node, x_shape, initializers, y_shape=None):
    graph = build([node], [("x", x_shape)], [("y", y_shape)], initializers)
    (stats,) = layer_stats(graph)
    return stats


# -- convolutions: N·Cout·Hout·Wout · (Cin/group)·kh·kw --------------------------------


def test_conv_3x3_same_padding_with_bias():
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    s = one_layer(node, [1, 3, 32, 32], [weight("w", 16, 3, 3, 3), weight("b", 16)])
    assert s.output_shape == (1, 16, 32, 32)
    assert s.macs == 1 * 16 * 32 * 32 * 3 * 3 * 3 == 442_368
    assert s.params == 16 * 3 * 3 * 3 + 16 == 448
    assert s.ops == 16 * 32 * 32  # one bias add per output element
    assert not s.dynamic


def test_conv_strided_and_padded_batch_2():
    # Hout = floor((15 + 2 - 3) / 2) + 1 = 8
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    s = one_layer(node, [2, 8, 15, 15], [weight("w", 4, 8, 3, 3)])
    assert s.output_shape == (2, 4, 8, 8)
    assert s.macs == 2 * 4 * 8 * 8 * 8 * 3 * 3 == 36_864
    assert s.ops == 0  # no bias


def test_conv_5x5_stride_2_valid():
    # Hout = floor((224 - 5) / 2) + 1 = 110
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[5, 5], strides=[2, 2])
    s = one_layer(node, [1, 3, 224, 224], [weight("w", 8, 3, 5, 5)])
    assert s.macs == 8 * 110 * 110 * 3 * 25 == 7_260_000


def test_depthwise_conv():
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=32)
    s = one_layer(node, [1, 32, 16, 16], [weight("w", 32, 1, 3, 3)])
    assert s.macs == 32 * 16 * 16 * 1 * 9 == 73_728
    assert s.params == 32 * 9


def test_grouped_conv():
    # 4 groups of 8 input channels, 64 outputs, 1x1 kernel
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[1, 1], group=4)
    s = one_layer(node, [1, 32, 8, 8], [weight("w", 64, 8, 1, 1)])
    assert s.macs == 64 * 8 * 8 * (32 // 4) == 32_768


def test_dilated_conv():
    # effective kernel 5: Hout = 10 - 4 = 6
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], dilations=[2, 2])
    s = one_layer(node, [1, 4, 10, 10], [weight("w", 4, 4, 3, 3)])
    assert s.output_shape == (1, 4, 6, 6)
    assert s.macs == 4 * 6 * 6 * 4 * 9 == 5_184


def test_conv1d():
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3])
    s = one_layer(node, [1, 2, 10], [weight("w", 6, 2, 3)])
    assert s.macs == 6 * 8 * 2 * 3


def test_conv_transpose():
    # every input pixel scatters a 2x2 window into Cout=8 channels: N·Cin·H·W·Cout·kh·kw
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], kernel_shape=[2, 2], strides=[2, 2])
    s = one_layer(node, [1, 16, 8, 8], [weight("w", 16, 8, 2, 2)])
    assert s.output_shape == (1, 8, 16, 16)
    assert s.macs == 16 * 8 * 8 * 8 * 2 * 2 == 32_768
    # the same count seen from the output: 2048 outputs, each gets Cin·(k/s)² = 16 products
    assert s.macs == 8 * 16 * 16 * 16


# -- dense algebra -----------------------------------------------------------------------


def test_gemm_trans_b_with_bias():
    node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)
    s = one_layer(node, [4, 64], [weight("w", 10, 64), weight("b", 10)])
    assert s.output_shape == (4, 10)
    assert s.macs == 4 * 10 * 64 == 2_560
    assert s.params == 650
    assert s.ops == 40


def test_gemm_trans_a():
    node = helper.make_node("Gemm", ["x", "w"], ["y"], transA=1)
    s = one_layer(node, [64, 4], [weight("w", 64, 10)])
    assert s.macs == 4 * 10 * 64


def test_batched_matmul_with_constant_weight():
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    s = one_layer(node, [2, 3, 5, 7], [weight("w", 7, 4)])
    assert s.output_shape == (2, 3, 5, 4)
    assert s.macs == 2 * 3 * 5 * 4 * 7 == 840
    assert s.params == 28


def test_broadcast_matmul_of_two_activations():
    node = helper.make_node("MatMul", ["a", "b"], ["y"])
    graph = build([node], [("a", [2, 1, 5, 7]), ("b", [3, 7, 4])], [("y", None)])
    (s,) = layer_stats(graph)
    assert s.output_shape == (2, 3, 5, 4)
    assert s.macs == 2 * 3 * 5 * 4 * 7
    assert s.params == 0


def test_matmul_with_1d_operand():
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    s = one_layer(node, [7], [weight("w", 7, 4)])
    assert s.output_shape == (4,)
    assert s.macs == 28


# -- ops and parameters -------------------------------------------------------------------


def test_ops_of_non_mac_layers():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["p"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Softmax", ["f"], ["y"]),
    ]
    graph = build(nodes, [("x", [1, 16, 32, 32])], [("y", None)])
    by_op = {s.op_type: s for s in layer_stats(graph)}
    assert by_op["Relu"].ops == 16 * 32 * 32
    assert by_op["MaxPool"].ops == 16 * 16 * 16 * 4
    assert by_op["GlobalAveragePool"].ops == 16 * 16 * 16
    assert by_op["Flatten"].ops == 0
    assert by_op["Softmax"].ops == 3 * 16
    assert all(s.macs == 0 for s in by_op.values())


def test_layer_norm_and_batch_norm_ops_and_params():
    nodes = [
        helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["n"]),
        helper.make_node("Reshape", ["n", "shape"], ["r"]),
        helper.make_node("LayerNormalization", ["r", "g", "beta"], ["y"], axis=-1),
    ]
    inits = [
        weight("s", 8), weight("b", 8), weight("m", 8), weight("v", 8),
        numpy_helper.from_array(np.array([1, 8, 16], np.int64), "shape"),
        weight("g", 16), weight("beta", 16),
    ]
    graph = build(nodes, [("x", [1, 8, 4, 4])], [("y", None)], inits)
    bn, reshape, ln = layer_stats(graph)
    assert bn.params == 4 * 8  # running mean/var are stored weights until folding
    assert bn.ops == 2 * 128
    assert reshape.params == 0  # an int64 shape is not a parameter
    assert ln.params == 32 and ln.ops == 5 * 128


def test_shared_initializer_counted_once():
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["a"], kernel_shape=[1, 1]),
        helper.make_node("Conv", ["a", "w"], ["y"], kernel_shape=[1, 1]),
    ]
    graph = build(nodes, [("x", [1, 4, 8, 8])], [("y", None)], [weight("w", 4, 4, 1, 1)])
    first, second = layer_stats(graph)
    assert (first.params, second.params) == (16, 0)
    assert model_summary(graph).params == 16
    assert model_summary(graph).macs == 2 * 4 * 8 * 8 * 4


def test_constant_node_weights_count_as_parameters():
    # PP-OCR exports keep weights in Constant nodes rather than initializers.
    w = numpy_helper.from_array(np.zeros((16, 3, 3, 3), np.float32), "wv")
    nodes = [
        helper.make_node("Constant", [], ["w"], value=w),
        helper.make_node("Constant", [], ["lo"], value_float=0.0),
        helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    graph = build(nodes, [("x", [1, 3, 8, 8])], [("y", None)])
    layers = layer_stats(graph)
    assert [s.op_type for s in layers] == ["Conv", "Relu"]  # Constant nodes are data, not layers
    assert layers[0].params == 16 * 27
    summary = model_summary(graph)
    assert summary.constant_nodes == 2
    assert summary.param_bytes_fp32 == 4 * 16 * 27


def test_scalar_constants_are_not_parameters():
    nodes = [helper.make_node("Clip", ["x", "lo", "hi"], ["y"])]
    inits = [numpy_helper.from_array(np.array(0, np.float32), "lo"), numpy_helper.from_array(np.array(6, np.float32), "hi")]
    graph = build(nodes, [("x", [1, 4])], [("y", None)], inits)
    assert layer_stats(graph)[0].params == 0


# -- dynamic dims --------------------------------------------------------------------------


def test_dynamic_dims_give_unknown_costs_not_guesses():
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    graph = build(nodes, [("x", ["batch", 3, "height", 32])], [("y", None)], [weight("w", 8, 3, 3, 3)])
    conv, relu = layer_stats(graph)
    assert conv.dynamic and relu.dynamic
    assert conv.macs is None and relu.ops is None
    assert conv.params == 8 * 27  # parameters never depend on input dims
    assert conv.output_shape[0] == "batch" and conv.output_shape[1] == 8
    summary = model_summary(graph)
    assert summary.dynamic_inputs == {"x": [(0, "batch"), (2, "height")]}
    assert summary.inputs[0].dynamic_axes == (0, 2)
    assert summary.unknown_cost_layers == 2 and summary.dynamic_layers == 2
    assert summary.macs == 0 and summary.params == 8 * 27


def test_summary_histogram_and_totals():
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Add", ["r", "c"], ["a"]),
        helper.make_node("Relu", ["a"], ["y"]),
    ]
    graph = build(nodes, [("x", [1, 2, 4, 4])], [("y", None)], [weight("w", 3, 2, 1, 1)])
    summary = model_summary(graph)
    assert summary.op_histogram == {"Relu": 2, "Add": 1, "Conv": 1}
    assert list(summary.op_histogram) == ["Relu", "Add", "Conv"]  # most frequent first, then by name
    assert summary.layers == 4
    assert summary.macs == 3 * 16 * 2
    assert summary.ops == 3 * 48
    assert summary.unknown_cost_layers == 0
    assert summary.outputs[0].shape == (1, 3, 4, 4) and summary.outputs[0].dtype == "float32"


def test_custom_domain_node_has_unknown_cost():
    node = helper.make_node("FusedGemm", ["x", "w"], ["y"], domain="com.microsoft")
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", F, [2, 4])],
        [helper.make_tensor_value_info("y", F, None)], [weight("w", 4, 4)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    (s,) = layer_stats(Graph.from_proto(model))
    assert s.domain == "com.microsoft" and s.macs is None and s.params == 16
    assert model_summary(Graph.from_proto(model)).op_histogram == {"com.microsoft::FusedGemm": 1}


@pytest.mark.parametrize("opset", [11, 13, 17])
def test_counts_do_not_depend_on_opset(opset):
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3])
    graph = build([node], [("x", [1, 1, 5, 5])], [("y", None)], [weight("w", 2, 1, 3, 3)], opset=opset)
    assert layer_stats(graph)[0].macs == 2 * 3 * 3 * 9
