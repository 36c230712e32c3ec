"""QResizeBilinear written as TFLite RESIZE_BILINEAR and run in LiteRT's reference kernels against the
integer reference: bit-exact where TFLite's 10-bit step reads the same coordinates (2x, 4x, align_corners
with an exact step), refused with a reason where its step drifts by more than 1/1024 of a pixel."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

pytest.importorskip("ai_edge_litert")

from ai_edge_litert import schema_py_generated as schema

from edgekiln.backends.edgetpu.tflite_reader import builtin_op_names, read_tflite
from edgekiln.compiler import bilinear_taps
from edgekiln.backends.edgetpu.tflite_verify import verify_tflite
from edgekiln.backends.edgetpu.tflite_writer import convert_program
from edgekiln.errors import UnsupportedOpError
from edgekiln.backends.reference.interpreter import run_program
from tests.backends.edgetpu.test_tflite_ops import compile_int8, make_model, weight
from tests.conftest import run_ort


def _resize_model(in_hw, out_hw, mode: str):
    """x -> Conv 3x3 -> Resize(linear, sizes) -> y (NCHW, 4 channels)."""
    shape = [1, 3, *in_hw]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Resize", ["c", "", "", "sizes"], ["y"], mode="linear",
                              coordinate_transformation_mode=mode)]
    inits = {"w": weight(4, 3, 3, 3), "sizes": np.array([1, 4, *out_hw], np.int64)}
    return make_model(nodes, shape, inits, opset=18), shape


def _resize_ops(data: bytes) -> list[tuple[int, bool, bool]]:
    """(version, align_corners, half_pixel_centers) of every RESIZE_BILINEAR in a .tflite."""
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
    found = []
    for op in model.subgraphs[0].operators:
        code = model.operatorCodes[op.opcodeIndex]
        if max(code.builtinCode, code.deprecatedBuiltinCode) == schema.BuiltinOperator.RESIZE_BILINEAR:
            found.append((code.version, bool(op.builtinOptions.alignCorners), bool(op.builtinOptions.halfPixelCenters)))
    return found


@pytest.mark.parametrize("in_hw, out_hw, mode, options", [
    ((5, 6), (10, 12), "half_pixel", (3, False, True)),          # 2x, TFLite half_pixel_centers
    ((4, 3), (16, 12), "asymmetric", (2, False, False)),          # 4x, the plain (version 2) op
    ((5, 7), (9, 13), "align_corners", (2, True, False)),         # (in - 1) / (out - 1) = 1/2
    ((8, 6), (4, 3), "pytorch_half_pixel", (3, False, True)),     # downscale by 2
])
def test_resize_bilinear_is_bit_exact_in_litert(in_hw, out_hw, mode, options):
    model, shape = _resize_model(in_hw, out_hw, mode)
    program = compile_int8(model, shape).program
    conversion = convert_program(program)
    assert builtin_op_names(read_tflite(conversion.data)) == ["CONV_2D", "RESIZE_BILINEAR"]
    assert _resize_ops(conversion.data) == [options]
    feeds = {"x": np.random.default_rng(5).standard_normal(shape).astype(np.float32)}
    report = verify_tflite(program, feeds, conversion=conversion)
    resize = [c for c in report.per_op if c.op == "QResizeBilinear"]
    assert resize and all(c.max_diff == 0 for c in resize), report.to_text()  # run alone: bit-exact
    assert report.output_max_diff <= 1, report.to_text()                     # after TFLite's CONV_2D


def test_a_drifting_tflite_step_is_refused_by_the_writer_with_the_reason():
    # 6 -> 17: TFLite's step round(1024·6/17) = 361 is 0.41/1024 short per pixel, 6.6/1024 at the end.
    # A Program lowered for another target keeps the model's coordinates: the writer refuses it.
    model, shape = _resize_model((6, 6), (17, 12), "half_pixel")
    program = compile_int8(model, shape, target="host").program
    with pytest.raises(UnsupportedOpError, match="no RESIZE_BILINEAR .* within 1/1024 of a pixel"):
        convert_program(program)


def test_an_edgetpu_compile_follows_tflite_coordinates_on_a_drifting_step():
    model, shape = _resize_model((6, 6), (17, 12), "half_pixel")
    result = compile_int8(model, shape)
    program = result.program
    assert any("follow TFLite's RESIZE_BILINEAR coordinates" in note for note in result.trace.notes)
    resize = next(c for c in program.calls if c.op == "QResizeBilinear")
    taps_h = program.constants[resize.inputs[1]]
    assert np.array_equal(taps_h, bilinear_taps.tflite_taps(6, 17, False, True))   # TFLite's own rows
    assert not np.array_equal(taps_h, bilinear_taps.onnx_taps(6, 17, "half_pixel"))
    conversion = convert_program(program)
    assert _resize_ops(conversion.data) == [(3, False, True)]
    feeds = {"x": np.random.default_rng(7).standard_normal(shape).astype(np.float32)}
    report = verify_tflite(program, feeds, conversion=conversion)
    assert all(c.max_diff == 0 for c in report.per_op if c.op == "QResizeBilinear"), report.to_text()
    # and it stays close to the model's own resize: the QDQ reference within a few LSB
    reference = run_program(program, feeds)["y"]
    onnx_output = run_ort(result.graph.to_bytes(), feeds)[0]
    scale = float(np.max(program.tensors["y_quantized"].quant.scale))
    assert np.max(np.abs(reference - onnx_output)) <= 3 * scale + 1e-6
