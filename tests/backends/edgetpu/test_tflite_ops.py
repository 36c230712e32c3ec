"""Every op the TFLite writer emits, on small hand-made graphs, run in LiteRT against the integer reference.

Each graph is compiled for the edgetpu target with int8 quantization (calibrated on random
inputs), written to .tflite, and verified per op: each Program call, run alone in LiteRT's
reference kernels on the reference's own inputs, must agree with the integer reference within
1 LSB; the whole model's output too (a 1-LSB difference can propagate, so the chained check
allows the few LSB a couple of layers add).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("ai_edge_litert")

from ai_edge_litert.schema_py_generated import ActivationFunctionType

from edgekiln.backends.edgetpu.tflite_program_converter import activation_bounds
from edgekiln.backends.edgetpu.tflite_reader import builtin_op_names, read_tflite
from edgekiln.backends.edgetpu.tflite_verify import verify_tflite
from edgekiln.backends.edgetpu.tflite_writer import convert_program
from edgekiln.compiler.compile import compile_model
from edgekiln.compiler.quant_options import QuantOptions
from edgekiln.compiler.target import Target, get_target

RNG = np.random.default_rng(7)


def weight(*shape: int, scale: float = 0.3) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def make_model(nodes, x_shape, initializers=None, opset: int = 17):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(v, k) for k, v in (initializers or {}).items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def compile_int8(model, x_shape, *, float_io: bool = False, target: str | Target = "edgetpu"):
    rng = np.random.default_rng(1)
    calib = [{"x": rng.standard_normal(x_shape).astype(np.float32)} for _ in range(4)]
    return compile_model(model, target, quantization=QuantOptions(quant="int8", calib=calib), check_ops=False,
                         progress=False, float_io=float_io)


def check(model, x_shape, expected_ops, *, chained_lsb: int = 1, float_io: bool = False,
          target: str | Target = "edgetpu"):
    """Compile, write, verify; returns (op names, report).  `target`: whose pass pipeline makes the Program."""
    program = compile_int8(model, x_shape, float_io=float_io, target=target).program
    conversion = convert_program(program, float_io=float_io)
    ops = builtin_op_names(read_tflite(conversion.data))
    for op in expected_ops:
        assert op in ops, f"{op} not in {ops}"
    assert "TRANSPOSE" not in ops
    if not float_io:
        assert "DEQUANTIZE" not in ops and "QUANTIZE" not in ops[:1]
    feeds = {"x": np.random.default_rng(5).standard_normal(x_shape).astype(np.float32)}
    report = verify_tflite(program, feeds, conversion=conversion)
    assert report.per_op, "no op was compared"
    assert report.per_op_max_diff <= 1, report.to_text()
    assert report.output_max_diff <= chained_lsb, report.to_text()
    return ops, report


def conv(name, x, y, w, b, **attrs):
    return helper.make_node("Conv", [x, w, b], [y], name=name, **attrs)


SHAPE = [1, 4, 8, 8]


def conv_inits(out=6, cin=4, k=3, group=1):
    return {"w": weight(out, cin // group, k, k), "b": weight(out, scale=0.1)}


def test_conv_same_padding_with_fused_relu():
    nodes = [conv("c", "x", "t", "w", "b", pads=[1, 1, 1, 1]), helper.make_node("Relu", ["t"], ["y"])]
    ops, _ = check(make_model(nodes, SHAPE, conv_inits()), SHAPE, ["CONV_2D"])
    assert ops == ["CONV_2D"]  # Relu fused, SAME padding, no PAD


def test_strided_conv_with_onnx_pads_gets_explicit_pad_and_relu6():
    nodes = [conv("c", "x", "t", "w", "b", pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Clip", ["t", "lo", "hi"], ["y"])]
    inits = {**conv_inits(), "lo": np.array(0, np.float32), "hi": np.array(6, np.float32)}
    check(make_model(nodes, SHAPE, inits), SHAPE, ["PAD", "CONV_2D"])
    program = compile_int8(make_model(nodes, SHAPE, inits), SHAPE).program
    call = next(c for c in program.calls if c.op == "QConv2D")
    model = read_tflite(convert_program(program).data)
    options = next(o.builtinOptions for o in model.subgraphs[0].operators if hasattr(o.builtinOptions, "strideH"))
    names = {v: k for k, v in vars(type(ActivationFunctionType())).items() if not k.startswith("_")}
    scale, zero_point = program.tensors[call.outputs[0]].quant.scale[0], program.tensors[call.outputs[0]].quant.zero_point[0]
    # the fused activation TFLite applies clamps exactly where the Program's Clip(0, 6) does
    assert activation_bounds(names[options.fusedActivationFunction], scale, zero_point) == (
        call.attrs["act_min"], call.attrs["act_max"])


def test_depthwise_conv():
    nodes = [conv("c", "x", "y", "w", "b", pads=[1, 1, 1, 1], group=4)]
    check(make_model(nodes, SHAPE, conv_inits(out=4, group=4)), SHAPE, ["DEPTHWISE_CONV_2D"])


def test_flatten_into_fully_connected_permutes_weight_columns_not_data():
    nodes = [conv("c", "x", "t", "w", "b", pads=[1, 1, 1, 1]), helper.make_node("Flatten", ["t"], ["f"]),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1)]
    inits = {**conv_inits(), "fw": weight(5, 6 * 64, scale=0.05), "fb": weight(5, scale=0.1)}
    ops, _ = check(make_model(nodes, SHAPE, inits), SHAPE, ["CONV_2D", "RESHAPE", "FULLY_CONNECTED"])
    assert "TRANSPOSE" not in ops


def two_branches(op: str, output: str = "y"):
    """Relu(conv1(x)) <op> conv2(x): two activations with their own parameters (linear branches would
    fold into one conv)."""
    nodes = [conv("c1", "x", "t0", "w", "b", pads=[1, 1, 1, 1]), helper.make_node("Relu", ["t0"], ["t1"]),
             conv("c2", "x", "t2", "w2", "b2", pads=[1, 1, 1, 1]), helper.make_node(op, ["t1", "t2"], [output])]
    inits = {**conv_inits(out=4), "w2": weight(4, 4, 3, 3), "b2": weight(4, scale=0.1)}
    return nodes, inits


@pytest.mark.parametrize("op, tflite", [("Add", "ADD"), ("Sub", "SUB"), ("Mul", "MUL")])
def test_binary_ops_on_two_activations(op, tflite):
    nodes, inits = two_branches(op)
    check(make_model(nodes, SHAPE, inits), SHAPE, [tflite], chained_lsb=2)


def test_average_and_max_pool():
    # SAME average pooling (pads [0, 0, 1, 1] on 8x8 with 3x3 / 2) is AVERAGE_POOL_2D; the VALID one
    # that changes parameters is a depthwise conv (one rounding, as the reference)
    nodes = [helper.make_node("AveragePool", ["x"], ["a"], kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1]),
             helper.make_node("AveragePool", ["a"], ["v"], kernel_shape=[2, 2], strides=[1, 1]),
             helper.make_node("MaxPool", ["v"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])]
    ops, _ = check(make_model(nodes, SHAPE), SHAPE, ["AVERAGE_POOL_2D", "MAX_POOL_2D"], chained_lsb=2)
    assert "DEPTHWISE_CONV_2D" in ops


def test_global_average_pool_and_reduce_mean_become_mean():
    nodes = [conv("c", "x", "t", "w", "b", pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["t"], ["g"]),
             helper.make_node("ReduceMean", ["t"], ["r"], axes=[2, 3], keepdims=0),
             helper.make_node("Flatten", ["g"], ["gf"]),
             helper.make_node("Add", ["gf", "r"], ["y"])]
    inits = conv_inits()
    ops, _ = check(make_model(nodes, SHAPE, inits), SHAPE, ["MEAN"], chained_lsb=2)
    assert ops.count("MEAN") == 2


def test_concat_requantizes_inputs_to_the_output_parameters():
    nodes = [conv("c", "x", "t", "w", "b", pads=[1, 1, 1, 1]), helper.make_node("Concat", ["x", "t"], ["y"], axis=1)]
    ops, _ = check(make_model(nodes, SHAPE, conv_inits()), SHAPE, ["CONCATENATION"])
    assert "QUANTIZE" in ops  # the inputs are calibrated to different ranges


def test_softmax_after_fully_connected():
    nodes = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "fw", "fb"], ["g"], transB=1),
             helper.make_node("Softmax", ["g"], ["y"], axis=-1)]
    inits = {"fw": weight(10, 16, scale=0.5), "fb": weight(10)}
    check(make_model(nodes, [1, 16], inits), [1, 16], ["FULLY_CONNECTED", "SOFTMAX"])


@pytest.mark.parametrize("op, tflite", [("Sigmoid", "LOGISTIC"), ("Tanh", "TANH"), ("HardSigmoid", "DEPTHWISE_CONV_2D"),
                                        ("Relu", "RELU")])
def test_activation_tables(op, tflite):
    attrs = {"alpha": 1 / 6} if op == "HardSigmoid" else {}
    # After an Add, so the activation is not fused into a conv (a Relu after a max pool: the edgetpu compile fuses
    # a Relu after an Add, Mul or weight kernel into it, test_fuse_relu_into_producer.py).
    nodes, inits = two_branches("Add", "s")
    if op == "Relu":
        nodes.append(helper.make_node("MaxPool", ["s"], ["p"], kernel_shape=[2, 2], strides=[2, 2]))
    nodes.append(helper.make_node(op, ["p" if op == "Relu" else "s"], ["y"], **attrs))
    # chained: a 1-LSB difference in the Add can move a steep table's output by more
    ops, _ = check(make_model(nodes, SHAPE, inits), SHAPE, [tflite], chained_lsb=4)
    assert ops[-1] in (tflite, "QUANTIZE")


def test_hard_swish_is_written_as_a_hard_sigmoid_depthwise_conv_and_a_mul_for_the_edgetpu():
    # HARD_SWISH is not in Coral's table: the edgetpu pipeline writes x * hard_sigmoid(x) instead.
    nodes, inits = two_branches("Add", "s")
    nodes.append(helper.make_node("HardSwish", ["s"], ["y"]))
    ops, _ = check(make_model(nodes, SHAPE, inits), SHAPE, ["DEPTHWISE_CONV_2D", "MUL"], chained_lsb=4)
    assert ops[-2:] == ["DEPTHWISE_CONV_2D", "MUL"] and "HARD_SWISH" not in ops


def test_hard_swish_table_of_another_pipeline_is_written_as_hard_swish():
    # A Program lowered by another target's pipeline keeps the HardSwish table: TFLite's own HARD_SWISH.
    # (host's passes and precisions without building its C runtime: the mobile_gpu backend builds nothing)
    host_passes = replace(get_target("host"), backend="mobile_gpu")
    nodes, inits = two_branches("Add", "s")
    nodes.append(helper.make_node("HardSwish", ["s"], ["y"]))
    ops, _ = check(make_model(nodes, SHAPE, inits), SHAPE, ["HARD_SWISH"], chained_lsb=4, target=host_passes)
    assert ops[-1] == "HARD_SWISH"


def test_pad_and_resize_nearest():
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"]),
             helper.make_node("Resize", ["p", "", "scales"], ["y"], mode="nearest")]
    inits = {"pads": np.array([0, 0, 1, 2, 0, 0, 1, 0], np.int64), "scales": np.array([1, 1, 2, 2], np.float32)}
    check(make_model(nodes, SHAPE, inits), SHAPE, ["PAD", "RESIZE_NEAREST_NEIGHBOR"])


def test_float_io_adds_quantize_and_dequantize_at_the_edges():
    nodes = [conv("c", "x", "t", "w", "b", pads=[1, 1, 1, 1]), helper.make_node("Relu", ["t"], ["y"])]
    ops, _ = check(make_model(nodes, SHAPE, conv_inits()), SHAPE, ["CONV_2D"], float_io=True)
    assert ops == ["QUANTIZE", "CONV_2D", "DEQUANTIZE"]


def test_conv_transpose_becomes_transpose_conv():
    nodes = [helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], strides=[2, 2], kernel_shape=[2, 2])]
    inits = {"w": weight(4, 3, 2, 2), "b": weight(3, scale=0.1)}
    ops, _ = check(make_model(nodes, SHAPE, inits), SHAPE, ["TRANSPOSE_CONV"])
    assert ops == ["TRANSPOSE_CONV"]


def test_affine_table_on_a_2d_tensor_goes_through_nhwc_reshapes():
    # SE gate written with fully-connected layers: HardSigmoid on [1, C]
    nodes = [helper.make_node("Gemm", ["x", "fw", "fb"], ["g"], transB=1),
             helper.make_node("HardSigmoid", ["g"], ["y"], alpha=1 / 6)]
    inits = {"fw": weight(8, 16, scale=0.5), "fb": weight(8)}
    ops, _ = check(make_model(nodes, [1, 16], inits), [1, 16], ["FULLY_CONNECTED", "DEPTHWISE_CONV_2D"])
    assert ops == ["FULLY_CONNECTED", "RESHAPE", "DEPTHWISE_CONV_2D", "RESHAPE"]


def test_leaky_relu_table_becomes_prelu():
    nodes, inits = two_branches("Add", "s")
    nodes.append(helper.make_node("LeakyRelu", ["s"], ["y"], alpha=0.1))
    ops, _ = check(make_model(nodes, SHAPE, inits), SHAPE, ["PRELU"], chained_lsb=2)
    assert ops[-1] == "PRELU"


def test_steep_affine_table_of_a_wide_input_range():
    # The input spans about ±1000, so HardSigmoid's ramp (6 wide) covers one or two int8 steps: too few
    # unclamped entries for a least-squares line; the steps of the table pin the 1x1 depthwise conv instead.
    nodes = [helper.make_node("Mul", ["x", "gain"], ["s"]), helper.make_node("HardSigmoid", ["s"], ["y"], alpha=1 / 6)]
    ops, _ = check(make_model(nodes, SHAPE, {"gain": np.array(300, np.float32)}), SHAPE, ["DEPTHWISE_CONV_2D"],
                   chained_lsb=2)
    assert ops[-1] == "DEPTHWISE_CONV_2D"
