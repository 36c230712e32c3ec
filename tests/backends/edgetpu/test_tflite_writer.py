"""The .tflite file itself: schema round trip, alignment, int8 tensors, weight layouts, op versions, refusals."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

pytest.importorskip("ai_edge_litert")

from ai_edge_litert import schema_py_generated as fb

from edgekiln.backends.edgetpu.litert_interpreter import invoke, make_interpreter
from edgekiln.backends.edgetpu.tflite_builder import BUFFER_ALIGNMENT
from edgekiln.backends.edgetpu.tflite_layout import (
    TensorLayout,
    fc_column_order,
    padding_mode,
    same_pads,
)
from edgekiln.backends.edgetpu.tflite_op_versions import OP_VERSIONS
from edgekiln.backends.edgetpu.tflite_program_converter import (
    fit_affine_table,
    nearest_indices,
)
from edgekiln.backends.edgetpu.tflite_reader import (
    buffer_data_offsets,
    builtin_op_names,
    read_tflite,
)
from edgekiln.backends.edgetpu.tflite_writer import write_tflite
from edgekiln.compiler.requantize import requantize
from edgekiln.errors import UnsupportedOpError
from tests.backends.edgetpu.test_tflite_ops import (
    SHAPE,
    compile_int8,
    conv,
    conv_inits,
    make_model,
    weight,
)


@pytest.fixture(scope="module")
def program():
    """conv 3x3 + Relu -> depthwise 3x3 -> Flatten -> Gemm: every weight layout the writer converts."""
    nodes = [conv("c", "x", "t", "w", "b", pads=[1, 1, 1, 1]), helper.make_node("Relu", ["t"], ["r"]),
             conv("d", "r", "u", "dw", "db", pads=[1, 1, 1, 1], group=6), helper.make_node("Flatten", ["u"], ["f"]),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1)]
    inits = {**conv_inits(), "dw": weight(6, 1, 3, 3), "db": weight(6, scale=0.1), "fw": weight(5, 384, scale=0.05),
             "fb": weight(5, scale=0.1)}
    return compile_int8(make_model(nodes, SHAPE, inits), SHAPE).program


def test_round_trip_through_the_schema_reader(program):
    data = write_tflite(program)
    model = read_tflite(data)
    assert model.version == 3 and len(model.subgraphs) == 1
    assert builtin_op_names(model) == ["CONV_2D", "DEPTHWISE_CONV_2D", "RESHAPE", "FULLY_CONNECTED"]
    # Packing the object tree again gives a model LiteRT runs to the same result.
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    x = np.random.default_rng(0).integers(-128, 128, (1, 8, 8, 4), dtype=np.int8)
    first = invoke(make_interpreter(data), {"x": x})
    second = invoke(make_interpreter(bytes(builder.Output())), {"x": x})
    assert first.keys() == second.keys() and all(np.array_equal(first[k], second[k]) for k in first)


def test_buffers_are_16_byte_aligned_and_sentinel_is_empty(program):
    data = write_tflite(program)
    offsets = buffer_data_offsets(data)
    assert offsets[0] is None
    assert all(o % BUFFER_ALIGNMENT == 0 for o in offsets if o is not None)
    assert sum(o is not None for o in offsets) >= 6  # 3 weights, 3 biases (+ reshape shape)


def test_tensors_are_int8_with_int32_bias_and_per_channel_weights(program):
    model = read_tflite(write_tflite(program))
    graph = model.subgraphs[0]
    tensors = graph.tensors
    inp, out = tensors[graph.inputs[0]], tensors[graph.outputs[0]]
    assert (inp.type, out.type) == (fb.TensorType.INT8, fb.TensorType.INT8)
    assert inp.name.decode() == "x" and out.name.decode() == "y"  # the ONNX names, for the runner
    assert list(inp.shape) == [1, 8, 8, 4]  # NHWC, batch 1
    conv_op, dw_op, _, fc_op = graph.operators
    w, b = tensors[conv_op.inputs[1]], tensors[conv_op.inputs[2]]
    assert list(w.shape) == [6, 3, 3, 4] and w.quantization.quantizedDimension == 0  # OHWI
    assert len(w.quantization.scale) == 6 and not any(w.quantization.zeroPoint)
    assert b.type == fb.TensorType.INT32 and len(b.quantization.scale) == 6
    dw = tensors[dw_op.inputs[1]]
    assert list(dw.shape) == [1, 3, 3, 6] and dw.quantization.quantizedDimension == 3  # 1HWC
    assert list(tensors[fc_op.inputs[1]].shape) == [5, 384]
    for tensor in tensors:
        assert tensor.type in (fb.TensorType.INT8, fb.TensorType.INT32)
        assert all(d > 0 for d in tensor.shape)  # static shapes


def test_bias_scale_is_input_scale_times_weight_scale(program):
    model = read_tflite(write_tflite(program))
    tensors = model.subgraphs[0].tensors
    op = model.subgraphs[0].operators[0]
    x, w, b = (tensors[i].quantization for i in op.inputs)
    expected = np.float32(x.scale[0]) * np.asarray(w.scale, np.float32)
    np.testing.assert_allclose(b.scale, expected, rtol=1e-6)


def test_op_versions_are_the_lowest_that_express_each_op(program):
    model = read_tflite(write_tflite(program))
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    for code in model.operatorCodes:
        name = names[code.builtinCode]
        assert code.version == OP_VERSIONS[name], name
        assert code.deprecatedBuiltinCode == min(code.builtinCode, 127)


def test_program_outputs_and_file_are_deterministic(program):
    assert write_tflite(program) == write_tflite(program)


def test_flatten_column_order_matches_an_nchw_flatten():
    layout = TensorLayout(program_shape=(1, 24), source_shape=(1, 2, 3, 4), perm=(0, 2, 3, 1), tflite_shape=(1, 24))
    x = np.arange(24).reshape(1, 2, 3, 4)
    nhwc_flat = np.transpose(x, (0, 2, 3, 1)).reshape(1, -1)
    w = np.random.default_rng(0).integers(-5, 5, (3, 24))
    # FC on the NHWC-flattened data with permuted columns == FC on the NCHW-flattened data
    np.testing.assert_array_equal(nhwc_flat @ w[:, fc_column_order(layout)].T, x.reshape(1, -1) @ w.T)
    np.testing.assert_array_equal(layout.from_tflite(layout.to_tflite(x.reshape(1, 24))), x.reshape(1, 24))


@pytest.mark.parametrize("size, kernel, stride, expected", [(8, 3, 1, (1, 1)), (8, 3, 2, (0, 1)), (7, 3, 2, (1, 1)),
                                                            (8, 1, 2, (0, 0)), (5, 2, 1, (0, 1))])
def test_same_padding_matches_tflite(size, kernel, stride, expected):
    assert same_pads(size, kernel, stride) == expected
    assert padding_mode([0, 0, 0, 0], (size, size), (kernel, kernel), (stride, stride)) == "VALID"


def test_onnx_symmetric_pads_on_strided_conv_are_not_same():
    assert padding_mode([1, 1, 1, 1], (8, 8), (3, 3), (2, 2)) is None  # TFLite SAME pads 0 before, 1 after


def test_nearest_indices_match_onnx_asymmetric_nearest():
    # ONNX Resize nearest (asymmetric, round_prefer_floor) with scale 2 == TFLite without half pixels
    np.testing.assert_array_equal(nearest_indices(4, 8, False, False), [0, 0, 1, 1, 2, 2, 3, 3])


def test_affine_table_fit_reproduces_hard_sigmoid():
    s_x, zp_x, s_y, zp_y = 0.05, 3, 1 / 255, -128
    q = np.arange(-128, 128)
    table = np.clip(np.rint(np.clip(s_x * (q - zp_x) / 6 + 0.5, 0, 1) / s_y) + zp_y, -128, 127)
    from edgekiln.backends.edgetpu.tflite_program_converter import (
        activation_bounds,
        tflite_multiplier,
    )

    s_w, w, bias, fused = fit_affine_table(table, s_x, zp_x, s_y, zp_y)
    m, sh = tflite_multiplier(s_x, s_w, s_y)
    got = requantize((q - zp_x) * w + bias, m, sh, zp_y, *activation_bounds(fused, s_y, zp_y))
    assert np.abs(got.astype(int) - table).max() <= 1
    assert (got == table).mean() > 0.98


def test_a_table_that_is_not_affine_is_refused():
    q = np.arange(-128, 128)
    table = np.clip(np.rint(np.sin(q / 20.0) * 100), -128, 127)
    assert fit_affine_table(table, 0.05, 0, 0.01, 0) is None


def test_float_island_is_refused_with_the_call_name():
    nodes = [conv("c", "x", "t", "w", "b", pads=[1, 1, 1, 1]), helper.make_node("Sin", ["t"], ["y"])]
    with pytest.raises(UnsupportedOpError, match="call 'Sin'.*fully int8"):
        compile_int8(make_model(nodes, SHAPE, conv_inits()), SHAPE)  # the edgetpu compile writes the .tflite


def test_transpose_is_refused_not_written():
    nodes = [conv("c", "x", "t", "w", "b", pads=[1, 1, 1, 1]), helper.make_node("Transpose", ["t"], ["y"],
                                                                              perm=[0, 2, 3, 1])]
    with pytest.raises(UnsupportedOpError, match="call 'Transpose'.*no TRANSPOSE"):
        compile_int8(make_model(nodes, SHAPE, conv_inits()), SHAPE)
