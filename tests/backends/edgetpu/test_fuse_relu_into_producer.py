"""fuse_relu_into_producers: a standalone Relu becomes the clamp of the integer kernel before it (Add, ConvTranspose).

Checked against numpy (relu of the dequantized sum, quantized once at the Relu's parameters), the
written .tflite in LiteRT against the rewritten Program (1 LSB), and the cases it must leave alone.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("ai_edge_litert")

from ai_edge_litert.schema_py_generated import ActivationFunctionType

from edgekiln.backends.edgetpu.fuse_relu_into_producer import fuse_relu_into_producers
from edgekiln.backends.edgetpu.tflite_program_converter import activation_bounds
from edgekiln.backends.edgetpu.tflite_reader import builtin_op_names, read_tflite
from edgekiln.backends.edgetpu.tflite_verify import verify_tflite
from edgekiln.backends.edgetpu.tflite_writer import convert_program
from edgekiln.backends.reference.interpreter import run_program
from edgekiln.compiler.compile import compile_model
from edgekiln.compiler.quant_options import QuantOptions
from edgekiln.compiler.target import get_target

SHAPE = [1, 4, 8, 8]


def model(nodes, outputs, inits):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)], outputs,
                              initializer=[numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def residual_block(extra_reader: bool = False, op: str = "Add"):
    """relu(conv1(x)) <op> conv2(x) -> Relu -> y (a ResNet block's tail for Add); `extra_reader`: the sum is an
    output too."""
    rng = np.random.default_rng(3)
    inits = {"w1": rng.standard_normal((4, 4, 3, 3)) * 0.3, "b1": rng.standard_normal(4) * 0.1,
             "w2": rng.standard_normal((4, 4, 3, 3)) * 0.3, "b2": rng.standard_normal(4) * 0.1}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["t0"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["t0"], ["t1"]),
             helper.make_node("Conv", ["x", "w2", "b2"], ["t2"], pads=[1, 1, 1, 1]),
             helper.make_node(op, ["t1", "t2"], ["s"], name="add"),
             helper.make_node("Relu", ["s"], ["y"], name="relu")]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if extra_reader:
        outputs.append(helper.make_tensor_value_info("s", TensorProto.FLOAT, None))
    return model(nodes, outputs, inits)


def calibration():
    rng = np.random.default_rng(1)
    return [{"x": rng.standard_normal(SHAPE).astype(np.float32)} for _ in range(4)]


def compile_edgetpu(onnx_model):
    return compile_model(onnx_model, "edgetpu", quantization=QuantOptions(quant="int8", calib=calibration()),
                         progress=False)


def params(program, name):
    q = program.tensors[name].quant
    return float(np.float32(q.scale[0])), int(q.zero_point[0])


@pytest.mark.filterwarnings("ignore:edgetpu_compiler is not on PATH")
@pytest.mark.parametrize("op", ["Add", "Mul"])
def test_relu_after_add_or_mul_is_its_clamp_and_rounds_once(op):
    result = compile_edgetpu(residual_block(op=op))
    program = result.program
    assert not any(c.op == "QLookupTable" for c in program.calls)
    add = next(c for c in program.calls if c.op == f"Q{op}")
    (y,) = add.outputs
    s_y, zp_y = params(program, y)
    assert (add.attrs["act_min"], add.attrs["act_max"]) == (max(-128, zp_y), 127)
    assert any("fused 1 Relu(s) into the kernel before them" in note for note in result.trace.notes)

    # independent numpy: relu(dequant(a) <op> dequant(b)), quantized once at the Relu's parameters
    x = {"x": np.random.default_rng(9).standard_normal(SHAPE).astype(np.float32)}
    values = run_program(dataclasses.replace(program, outputs=[*add.inputs, y]), x)  # the operands too
    (a_s, a_zp), (b_s, b_zp) = params(program, add.inputs[0]), params(program, add.inputs[1])
    a = (values[add.inputs[0]].astype(np.float64) - a_zp) * a_s
    b = (values[add.inputs[1]].astype(np.float64) - b_zp) * b_s
    real = np.maximum(0.0, a + b if op == "Add" else a * b)
    want = np.clip(np.round(real / s_y) + zp_y, -128, 127)
    assert np.max(np.abs(values[y].astype(np.int64) - want)) <= 1


@pytest.mark.filterwarnings("ignore:edgetpu_compiler is not on PATH")
def test_written_as_add_with_a_fused_relu_within_one_lsb_in_litert():
    program = compile_edgetpu(residual_block()).program
    conversion = convert_program(program)
    model = read_tflite(conversion.data)
    ops = builtin_op_names(model)
    assert "RELU" not in ops and ops.count("ADD") == 1
    options = model.subgraphs[0].operators[ops.index("ADD")].builtinOptions
    names = {v: k for k, v in vars(ActivationFunctionType).items() if not k.startswith("_")}
    call = next(c for c in program.calls if c.op == "QAdd")
    # TFLite clamps where the Program's QAdd does (RELU, or NONE when the zero point is -128 and int8 saturation
    # is the clamp already)
    assert activation_bounds(names[options.fusedActivationFunction], *params(program, call.outputs[0])) == (
        call.attrs["act_min"], call.attrs["act_max"])
    report = verify_tflite(program, {"x": np.random.default_rng(5).standard_normal(SHAPE).astype(np.float32)},
                           conversion=conversion)
    assert report.per_op_max_diff <= 1 and report.output_max_diff <= 1, report.to_text()


@pytest.mark.filterwarnings("ignore:edgetpu_compiler is not on PATH")
def test_an_add_whose_sum_is_also_read_elsewhere_keeps_its_relu():
    result = compile_edgetpu(residual_block(extra_reader=True))
    assert [c.attrs.get("function") for c in result.program.calls if c.op == "QLookupTable"] == ["Relu"]
    assert any("not fused" in note and "read by more than the Relu" in note for note in result.trace.notes)


def test_a_program_without_the_pair_is_returned_unchanged():
    result = compile_edgetpu(residual_block())
    assert fuse_relu_into_producers(result.program) is result.program  # nothing left to fuse: idempotent


@pytest.mark.filterwarnings("ignore:edgetpu_compiler is not on PATH")
def test_relu_after_a_transposed_conv_becomes_its_clamp():
    # the quantized fuse stage fuses Relu into Conv/Gemm only: a ConvTranspose keeps a standalone Relu until here
    rng = np.random.default_rng(4)
    inits = {"w": rng.standard_normal((4, 3, 2, 2)) * 0.4, "b": rng.standard_normal(3) * 0.1}
    nodes = [helper.make_node("ConvTranspose", ["x", "w", "b"], ["t"], strides=[2, 2]),
             helper.make_node("Relu", ["t"], ["y"])]
    onnx_model = model(nodes, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    # the same quantization through host's passes (mobile_gpu backend: builds nothing), where nothing fuses it
    host_passes = dataclasses.replace(get_target("host"), backend="mobile_gpu")
    unfused = compile_model(onnx_model, host_passes, check_ops=False, progress=False,
                            quantization=QuantOptions(quant="int8", calib=calibration())).program
    program = compile_edgetpu(onnx_model).program
    def kernels(p):
        return [c.op for c in p.calls if c.op not in ("Quantize", "Dequantize")]

    assert kernels(program) == ["QConvTranspose2D"] and kernels(unfused) == ["QConvTranspose2D", "QLookupTable"]
    feeds = {"x": np.random.default_rng(5).standard_normal(SHAPE).astype(np.float32)}
    # the same function, rounded once instead of twice: within an LSB of the unfused Program
    (fused_y,), (unfused_y,) = run_program(program, feeds).values(), run_program(unfused, feeds).values()
    s_y, _ = params(program, next(c for c in program.calls if c.op == "QConvTranspose2D").outputs[0])
    lsb = np.abs(fused_y.astype(np.float64) - unfused_y) / s_y
    assert np.max(lsb) <= 1.001 and np.mean(lsb < 0.5) > 0.5
    conversion = convert_program(program)
    assert builtin_op_names(read_tflite(conversion.data)) == ["TRANSPOSE_CONV"]
    report = verify_tflite(program, feeds, conversion=conversion)
    assert report.per_op_max_diff <= 1, report.to_text()
