"""Integer lowering of small QDQ graphs: which kernel each node becomes, the constants it gets,
and that the integer reference agrees with onnxruntime running the QDQ graph."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekiln.backends.reference import run_program
from edgekiln.compiler.graph import Graph
from edgekiln.compiler.integer_lowering import IntegerLowering, lower_quantized_graph
from edgekiln.compiler.pass_manager import PassManager
from edgekiln.compiler.program import Program
from edgekiln.compiler.qdq_format import dequantized_weight, quantize_activation
from edgekiln.errors import QuantizationError
from edgekiln.passes.fuse_epilogue import FuseEpiloguePass
from tests.backends.reference.qdq_models import calibrate, quantize_graph, session
from tests.support.graphs import build_graph, conv_relu_model

RNG = np.random.default_rng(0)


def _init(name, shape, scale=0.3):
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def _feeds(graph: Graph, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {v.name: rng.standard_normal(Graph.static_shape(v)).astype(np.float32) for v in graph.inputs}


def _quantized(graph: Graph, fuse: bool = False, **options) -> Graph:
    if fuse:
        graph = PassManager([FuseEpiloguePass(activations=frozenset({"Relu", "Clip"}), residual=False)]).run(graph)
    ranges = calibrate(graph, [_feeds(graph, seed) for seed in range(3)])
    return quantize_graph(graph, ranges, **options)


def _compare(qdq: Graph, program: Program, seed: int = 7) -> tuple[float, float]:
    """(share equal, share within 1 LSB) of every output, against onnxruntime on the QDQ graph."""
    feeds = _feeds(qdq, seed)
    expected = session(qdq.to_proto()).run(None, feeds)
    got = run_program(program, feeds)
    equal = within = total = 0
    for name, reference in zip(program.outputs, expected):
        scale = program.tensors[next(c for c in program.calls if name in c.outputs).inputs[0]].quant.scale[0]
        steps = np.rint(np.abs(got[name].astype(np.float64) - reference) / scale)
        equal, within, total = equal + int((steps == 0).sum()), within + int((steps <= 1).sum()), total + steps.size
    return equal / total, within / total


def _ops(program: Program) -> list[str]:
    return [c.op for c in program.calls]


def test_fused_conv_relu_is_one_clamped_qconv_with_int8_tensors():
    graph = _quantized(Graph.from_proto(onnx.shape_inference.infer_shapes(conv_relu_model())), fuse=True)
    program = lower_quantized_graph(graph)
    assert _ops(program) == ["Quantize", "QConv2D", "Identity", "Dequantize"]  # Identity: int8 data movement
    conv = program.calls[1]
    out = program.tensors[conv.outputs[0]]
    assert out.dtype == "int8" and out.quant is not None
    assert conv.attrs["act_min"] == out.quant.zero_point[0] and conv.attrs["act_max"] == 127  # Relu = clamp
    weight = program.tensors[conv.inputs[1]]
    assert weight.dtype == "int8" and weight.quant.bits == 8 and weight.quant.axis == 0 and len(weight.quant.scale) == 4
    assert [program.constants[n].dtype for n in conv.inputs[2:]] == [np.int32] * 3
    assert program.outputs == ["y"] and program.tensors["y"].dtype == "float32"
    assert _compare(graph, program) == (1.0, 1.0)
    text = program.to_text()
    assert "QConv2D" in text and "q8" in text


def test_depthwise_is_detected_by_groups(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "Wd"], ["d"], name="dw", group=6, pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["d", "Wg"], ["y"], name="grouped", group=2, strides=[2, 2])]
    graph = _quantized(build_graph(nodes, [("x", [1, 6, 9, 9])], [("y", None)],
                                   [_init("Wd", (6, 1, 3, 3)), _init("Wg", (4, 3, 1, 1))]))
    program = lower_quantized_graph(graph)
    assert _ops(program) == ["Quantize", "QDepthwiseConv2D", "QConv2D", "Dequantize"]
    assert program.calls[2].attrs["group"] == 2
    equal, within = _compare(graph, program)
    assert within == 1.0 and equal > 0.99
    program.save(tmp_path)  # the Program round-trips through its files and runs the same
    feeds = _feeds(graph, 3)
    np.testing.assert_array_equal(run_program(Program.load(tmp_path), feeds)["y"], run_program(program, feeds)["y"])


def test_gemm_and_matmul_weights_become_fully_connected_and_activation_products_qmatmul():
    nodes = [helper.make_node("Gemm", ["x", "B0", "C0"], ["g0"], name="gemm_nt"),
             helper.make_node("Gemm", ["g0", "B1", "C1"], ["g1"], name="gemm_t", transB=1, alpha=0.5),
             helper.make_node("MatMul", ["g1", "B2"], ["m"], name="matmul_w"),
             helper.make_node("Reshape", ["m", "shape"], ["r"], name="reshape"),
             helper.make_node("Transpose", ["r"], ["rt"], name="transpose", perm=[0, 2, 1]),
             helper.make_node("MatMul", ["r", "rt"], ["y"], name="matmul_aa")]
    inits = [_init("B0", (12, 10)), _init("C0", (10,)), _init("B1", (8, 10)), _init("C1", (8,)),
             _init("B2", (8, 6)), numpy_helper.from_array(np.array([3, 2, 2], np.int64), "shape")]
    graph = _quantized(build_graph(nodes, [("x", [2, 12])], [("y", None)], inits))
    program = lower_quantized_graph(graph)
    ops = _ops(program)
    assert ops.count("QFullyConnected") == 3 and ops.count("QMatMul") == 1
    assert "Reshape" in ops and "Transpose" in ops  # int8 data movement
    assert program.tensors[program.calls[ops.index("Reshape")].outputs[0]].dtype == "int8"
    equal, within = _compare(graph, program)
    assert within == 1.0 and equal > 0.9


def test_lookup_tables_agree_with_onnxruntime_on_every_int8_input():
    """Exhaustive: each table entry is what the QDQ graph computes for that int8 value."""
    acts = [("HardSwish", {}), ("Sigmoid", {}), ("Tanh", {}), ("LeakyRelu", {"alpha": 0.1}),
            ("HardSigmoid", {"alpha": 0.25, "beta": 0.4}), ("Relu", {}), ("Elu", {})]
    nodes = [helper.make_node(op, ["x"], [f"y{i}"], name=op.lower(), **attrs) for i, (op, attrs) in enumerate(acts)]
    nodes.append(helper.make_node("Mul", ["x", "half"], ["y_mul"], name="mul_scalar"))
    nodes.append(helper.make_node("Div", ["x", "three"], ["y_div"], name="div_scalar"))
    outputs = [(f"y{i}", [1, 256]) for i in range(len(acts))] + [("y_mul", [1, 256]), ("y_div", [1, 256])]
    graph = build_graph(nodes, [("x", [1, 256])], outputs, [
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
        numpy_helper.from_array(np.array(3.0, np.float32), "three")])
    graph = quantize_graph(graph, calibrate(graph, [{"x": np.linspace(-6, 6, 256, dtype=np.float32)[None]}]))
    program = lower_quantized_graph(graph)
    assert _ops(program).count("QLookupTable") == len(acts) + 2
    quantize = program.calls[0]
    s, zp = quantize.attrs["scale"], quantize.attrs["zero_point"]
    every_int8 = ((np.arange(-128, 128) - zp) * np.float32(s)).astype(np.float32)[None]
    expected = session(graph.to_proto()).run(None, {"x": every_int8})
    got = run_program(program, {"x": every_int8})
    for name, reference in zip(program.outputs, expected):
        np.testing.assert_array_equal(got[name], reference, err_msg=name)


def test_transformer_pieces_softmax_layernorm_add_mul():
    nodes = [helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["ln"], name="ln", epsilon=1e-5),
             helper.make_node("MatMul", ["ln", "Wq"], ["q"], name="q"),
             helper.make_node("Transpose", ["q"], ["qt"], name="qt", perm=[0, 2, 1]),
             helper.make_node("MatMul", ["q", "qt"], ["scores"], name="scores"),
             helper.make_node("Softmax", ["scores"], ["p"], name="softmax", axis=-1),
             helper.make_node("MatMul", ["p", "ln"], ["ctx"], name="ctx"),
             helper.make_node("Add", ["ctx", "x"], ["res"], name="residual"),
             helper.make_node("Mul", ["res", "ln"], ["y"], name="gate")]
    inits = [_init("gamma", (16,), 1.0), _init("beta", (16,), 0.2), _init("Wq", (16, 16))]
    graph = _quantized(build_graph(nodes, [("x", [1, 5, 16])], [("y", None)], inits))
    program = lower_quantized_graph(graph)
    ops = _ops(program)
    for op in ("QLayerNorm", "QSoftmax", "QMatMul", "QAdd", "QMul", "QFullyConnected"):
        assert op in ops, op
    equal, within = _compare(graph, program)
    assert within == 1.0 and equal > 0.95


def test_pooling_concat_resize_pad_and_requantized_data_movement():
    nodes = [helper.make_node("MaxPool", ["x"], ["mp"], name="maxpool", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("AveragePool", ["x"], ["ap"], name="avgpool", kernel_shape=[3, 3], strides=[2, 2],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["ap"], ["apr"], name="relu"),
             helper.make_node("Concat", ["mp", "apr"], ["cat"], name="concat", axis=1),
             helper.make_node("Resize", ["cat", "", "scales"], ["up"], name="resize", mode="nearest"),
             helper.make_node("Pad", ["up", "pads"], ["padded"], name="pad"),
             helper.make_node("GlobalAveragePool", ["padded"], ["gap"], name="gap"),
             helper.make_node("Flatten", ["gap"], ["y"], name="flatten")]
    inits = [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
             numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 0, 2], np.int64), "pads")]
    graph = _quantized(build_graph(nodes, [("x", [1, 3, 8, 8])], [("y", None)], inits, opset=17))
    lowering = IntegerLowering(graph)
    program = lowering.lower(64)
    ops = _ops(program)
    for op in ("QMaxPool", "QAveragePool", "QConcat", "QResizeNearest", "QPad", "QGlobalAveragePool", "Flatten"):
        assert op in ops, op
    assert "QRequantize" in ops  # MaxPool's output range differs from its input's
    assert not lowering.float_reasons
    equal, within = _compare(graph, program)
    assert within == 1.0 and equal > 0.9


@pytest.mark.parametrize("precision", ["int4:g9", "ternary"])
def test_low_bit_weights_keep_their_precision_and_agree(precision):
    model = conv_relu_model()
    graph = Graph.from_proto(onnx.shape_inference.infer_shapes(model))
    conv = graph.node("conv")
    w = Graph.constant(conv.inputs[1])
    if precision == "ternary":
        scale = np.abs(w).reshape(4, -1).mean(axis=1).astype(np.float32)
        q = np.clip(np.rint(w / scale[:, None, None, None]), -1, 1).astype(np.int8)
        conv.replace_input_with(1, dequantized_weight(graph, conv, q, scale, "ternary", "W"))
    else:
        rows = w.reshape(12, 9)
        scale = (np.abs(rows).max(axis=1) / 7).astype(np.float32)
        q = np.clip(np.rint(rows / scale[:, None]), -7, 7).astype(np.int8).reshape(w.shape)
        conv.replace_input_with(1, dequantized_weight(graph, conv, q, scale.reshape(4, 3), precision, "W",
                                                      group_size=9))
    graph = _quantized(graph)
    program = lower_quantized_graph(graph)
    call = next(c for c in program.calls if c.op == "QConv2D")
    quant = program.tensors[call.inputs[1]].quant
    assert quant.bits == (2 if precision == "ternary" else 4)
    assert (quant.group_size, len(call.inputs)) == ((9, 6) if precision != "ternary" else (None, 5))
    equal, within = _compare(graph, program)
    assert within == 1.0 and equal > 0.97


def test_weight_only_int4_stays_float_and_reads_dequantized_weights():
    graph = Graph.from_proto(onnx.shape_inference.infer_shapes(conv_relu_model()))
    conv = graph.node("conv")
    w = Graph.constant(conv.inputs[1]).reshape(4, 27)
    scale = (np.abs(w).max(axis=1) / 7).astype(np.float32)
    q = np.clip(np.rint(w / scale[:, None]), -7, 7).astype(np.int8).reshape(4, 3, 3, 3)
    conv.replace_input_with(1, dequantized_weight(graph, conv, q, scale, "int4", "W"))
    lowering = IntegerLowering(graph)
    program = lowering.lower(64)
    assert _ops(program) == ["DequantizeWeight", "Conv", "Relu", "Identity"]  # no activation is quantized
    assert program.tensors[program.calls[0].inputs[0]].quant.bits == 4
    assert "conv" in lowering.float_reasons
    feeds = _feeds(graph, 1)
    np.testing.assert_allclose(run_program(program, feeds)["y"], session(graph.to_proto()).run(None, feeds)[0],
                               rtol=1e-5, atol=1e-5)


def test_a_node_without_an_integer_kernel_is_a_float_island_with_boundaries():
    nodes = [helper.make_node("Softmax", ["x"], ["s"], name="softmax_axis1", axis=1),
             helper.make_node("Sigmoid", ["s"], ["y"], name="sigmoid")]
    graph = _quantized(build_graph(nodes, [("x", [2, 5, 3])], [("y", None)]))
    lowering = IntegerLowering(graph)
    program = lowering.lower(64)
    assert _ops(program) == ["Quantize", "Dequantize", "Softmax", "Quantize", "QLookupTable", "Dequantize"]
    assert "axis" in lowering.float_reasons["softmax_axis1"]
    assert _compare(graph, program)[1] == 1.0


def test_block_ids_and_names_are_carried_over():
    graph = Graph.from_proto(onnx.shape_inference.infer_shapes(conv_relu_model()))
    graph.node("conv").metadata_props["edgekiln.block"] = "block_0"
    graph = _quantized(graph, fuse=True)
    program = lower_quantized_graph(graph)
    conv = next(c for c in program.calls if c.op == "QConv2D")
    assert conv.name == "conv" and conv.block == "block_0"


def test_unreadable_qdq_is_an_error_naming_the_node():
    x = helper.make_tensor_value_info("x", TensorProto.INT8, [1, 4])
    dq = helper.make_node("DequantizeLinear", ["x", "s", "z"], ["y"], name="stray_dq")
    model = helper.make_model(helper.make_graph(
        [dq], "g", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(np.array(0, np.int8), "z")]),
        opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(QuantizationError, match="stray_dq"):
        lower_quantized_graph(Graph.from_proto(model))

    graph = build_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], [("x", [1, 4])], [("y", [1, 4])])
    q, _ = quantize_activation(graph, graph.inputs[0], 0.1, 0)
    q.inputs[2].const_value = __import__("onnx_ir").tensor(np.array(0, np.uint8))  # a uint8 quantizer
    with pytest.raises(QuantizationError, match="QuantizeLinear"):
        lower_quantized_graph(graph)


def test_conv_transpose_with_per_input_channel_weight_scales():
    nodes = [helper.make_node("ConvTranspose", ["x", "W", "B"], ["up"], name="deconv", strides=[2, 2],
                              kernel_shape=[2, 2]),
             helper.make_node("Relu", ["up"], ["y"], name="relu")]
    w = (RNG.standard_normal((4, 3, 2, 2)) * np.array([0.1, 0.5, 1.0, 2.0]).reshape(4, 1, 1, 1)).astype(np.float32)
    graph = _quantized(build_graph(nodes, [("x", [1, 4, 5, 6])], [("y", None)],
                                   [numpy_helper.from_array(w, "W"), _init("B", (3,))]))
    program = lower_quantized_graph(graph)
    call = next(c for c in program.calls if c.op == "QConvTranspose2D")
    assert call.inputs[-1].endswith("channel_ratio") and call.attrs["acc_frac_bits"] > 0
    equal, within = _compare(graph, program)
    assert within == 1.0 and equal > 0.97
