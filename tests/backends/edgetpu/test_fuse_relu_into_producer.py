"""fuse_relu_into_producers on the edgetpu target: the fused Relu is written as the op's fused activation.

The rewrite itself (numpy, unfused Program, cases left alone): tests/compiler/test_fuse_relu_into_producer.py.
Here: an edgetpu compile runs it (a note in the trace), the .tflite has no standalone RELU, TFLite's fused
activation clamps where the Program does, and LiteRT agrees with the rewritten Program within 1 LSB.
"""

from __future__ import annotations

import pytest

pytest.importorskip("ai_edge_litert")

from ai_edge_litert.schema_py_generated import ActivationFunctionType

from edgekiln.backends.edgetpu.tflite_program_converter import activation_bounds
from edgekiln.backends.edgetpu.tflite_reader import builtin_op_names, read_tflite
from edgekiln.backends.edgetpu.tflite_verify import verify_tflite
from edgekiln.backends.edgetpu.tflite_writer import convert_program
from edgekiln.compiler.compile import compile_model
from edgekiln.compiler.quant_options import QuantOptions
from tests.support.relu_fusion_graphs import (
    calibration,
    feeds,
    params,
    residual_block,
    transposed_conv_relu,
)


def compile_edgetpu(onnx_model):
    return compile_model(onnx_model, "edgetpu", quantization=QuantOptions(quant="int8", calib=calibration()),
                         progress=False)


@pytest.mark.filterwarnings("ignore:edgetpu_compiler is not on PATH")
def test_written_as_add_with_a_fused_relu_within_one_lsb_in_litert():
    result = compile_edgetpu(residual_block())
    program = result.program
    assert any("fused 1 Relu(s) into the kernel before them" in note for note in result.trace.notes)
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
    report = verify_tflite(program, feeds(5), conversion=conversion)
    assert report.per_op_max_diff <= 1 and report.output_max_diff <= 1, report.to_text()


@pytest.mark.filterwarnings("ignore:edgetpu_compiler is not on PATH")
def test_relu_after_a_transposed_conv_is_one_transpose_conv_in_litert():
    program = compile_edgetpu(transposed_conv_relu()).program
    conversion = convert_program(program)
    assert builtin_op_names(read_tflite(conversion.data)) == ["TRANSPOSE_CONV"]
    report = verify_tflite(program, feeds(5), conversion=conversion)
    assert report.per_op_max_diff <= 1, report.to_text()
