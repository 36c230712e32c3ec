"""The QDQ spelling: what the builders write runs in onnxruntime and the matchers read it back."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx import helper, numpy_helper

from edgekiln.compiler.graph import Graph
from edgekiln.compiler.qdq_format import (
    dequantized_bias,
    dequantized_weight,
    match_activation,
    match_weight,
    quantize_activation,
)
from edgekiln.compiler.requantize import dequantize, quantize
from tests.conftest import run_ort
from tests.support.graphs import conv_relu_model

X = np.random.default_rng(4).standard_normal((1, 3, 8, 8)).astype(np.float32)


def _graph() -> Graph:
    return Graph.from_proto(onnx.shape_inference.infer_shapes(conv_relu_model()))


def test_activation_qdq_runs_and_reads_back_keeping_the_output_name():
    graph = _graph()
    conv = graph.node("conv")
    quantize_activation(graph, graph.inputs[0], 0.05, -3)
    quantize_activation(graph, graph.outputs[0], 0.02, -128)
    onnx.checker.check_model(graph.to_proto())
    assert [v.name for v in graph.outputs] == ["y"]
    got = run_ort(graph.to_proto(), {"x": X})[0]
    reference = run_ort(conv_relu_model(), {"x": dequantize(quantize(X, 0.05, -3), 0.05, -3)})[0]
    np.testing.assert_array_equal(got, dequantize(quantize(reference, 0.02, -128), 0.02, -128))
    found = match_activation(conv.inputs[0])
    assert found is not None and found.source is graph.inputs[0]
    assert (found.scale, found.zero_point) == (np.float32(0.05), -3)


def test_per_channel_and_grouped_weights_round_trip():
    graph = _graph()
    conv = graph.node("conv")
    w = Graph.constant(conv.inputs[1])
    q = np.clip(np.round(w / 0.1), -127, 127).astype(np.int8)
    per_channel = dequantized_weight(graph, conv, q, np.full(4, 0.1, np.float32), "int8", "W")
    conv.replace_input_with(1, per_channel)
    onnx.checker.check_model(graph.to_proto())
    read = match_weight(conv.inputs[1])
    assert read.precision == "int8" and read.group_size is None and read.bits == 8
    np.testing.assert_array_equal(read.q_values, q)

    q4 = np.clip(np.round(w / 0.3), -8, 7).astype(np.int8)  # K = 27 = 3 groups of 9
    scales = np.linspace(0.2, 0.4, 12, dtype=np.float32).reshape(4, 3)
    grouped = dequantized_weight(graph, conv, q4, scales, "int4:g9", "W4", group_size=9)
    conv.replace_input_with(1, grouped)
    read = match_weight(conv.inputs[1])
    assert read.precision == "int4:g9" and read.group_size == 9 and read.bits == 4
    np.testing.assert_array_equal(read.scale, scales)
    expected_w = (q4.reshape(4, 3, 9) * scales[:, :, None]).reshape(w.shape)
    reference = conv_relu_model()
    reference.graph.initializer[0].CopyFrom(numpy_helper.from_array(expected_w.astype(np.float32), "W"))
    np.testing.assert_allclose(run_ort(graph.to_proto(), {"x": X})[0], run_ort(reference, {"x": X})[0], rtol=1e-6,
                               atol=1e-6)


def test_transposed_weight_and_bias():
    graph = Graph.from_proto(onnx.shape_inference.infer_shapes(helper.make_model(helper.make_graph(
        [helper.make_node("Gemm", ["a", "B", "C"], ["y"], name="gemm")], "g",
        [helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 4])],
        [numpy_helper.from_array(np.ones((3, 4), np.float32), "B"),
         numpy_helper.from_array(np.zeros(4, np.float32), "C")]), opset_imports=[helper.make_opsetid("", 17)],
        ir_version=8)))
    gemm = graph.node("gemm")
    q = np.arange(12, dtype=np.int8).reshape(4, 3)  # [N, K]
    gemm.replace_input_with(1, dequantized_weight(graph, gemm, q, np.full(4, 0.5, np.float32), "int8", "B",
                                                  transposed=True))
    gemm.replace_input_with(2, dequantized_bias(graph, gemm, np.array([1, 2, 3, 4], np.int32),
                                                np.full(4, 0.25, np.float32), "C"))
    a = np.ones((2, 3), np.float32)
    np.testing.assert_allclose(run_ort(graph.to_proto(), {"a": a})[0], a @ (q.T * 0.5) + np.array([1, 2, 3, 4]) * 0.25)
    assert match_weight(gemm.inputs[1]).transposed
    assert match_weight(gemm.inputs[2]).precision == "int32"
    assert match_activation(gemm.inputs[0]) is None and isinstance(gemm.inputs[0], ir.Value)
