"""QResizeBilinear: tap tables against the ONNX coordinate transformations, lowering of a linear
Resize in a QDQ graph, and the integer reference against onnxruntime on that graph (within 1 LSB)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekiln.backends.reference import run_program
from edgekiln.compiler import bilinear_taps
from edgekiln.compiler.graph import Graph
from edgekiln.compiler.integer_lowering import IntegerLowering
from tests.backends.reference.qdq_models import (
    calibrate,
    quantize_graph,
    quantize_with_pass,
    session,
)
from tests.support.graphs import build_graph

# (input H, W), (output H, W): upscale, downscale, odd sizes, identity, a single output pixel
SIZES = [((4, 5), (8, 10)), ((7, 6), (3, 4)), ((5, 3), (11, 7)), ((6, 6), (6, 6)), ((3, 5), (1, 9))]


def _onnx_weights(in_size: int, out_size: int, mode: str, scale: float | None) -> np.ndarray:
    """[out, in] float weights of onnxruntime's linear Resize, from basis images.  (onnxruntime, not
    onnx.reference: with `scales` and align_corners the latter divides by in·scale − 1, not out − 1.)"""
    basis = np.eye(in_size, dtype=np.float32).reshape(in_size, 1, in_size, 1)
    feeds = {"x": basis}
    if scale is None:
        feeds["sizes"] = np.array([in_size, 1, out_size, 1], np.int64)
        inputs = ["x", "", "", "sizes"]
    else:
        feeds["scales"] = np.array([1, 1, scale, 1], np.float32)
        inputs = ["x", "", "scales"]
    node = helper.make_node("Resize", inputs, ["y"], mode="linear", coordinate_transformation_mode=mode)
    graph = helper.make_graph([node], "r", [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype),
                                                                          v.shape) for k, v in feeds.items()],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    (y,) = session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])).run(None, feeds)
    return y[:, 0, :, 0].T  # [out, in]


def _tap_weights(taps: np.ndarray, in_size: int) -> np.ndarray:
    weights = np.zeros((len(taps), in_size))
    for row, (i0, i1, f) in enumerate(taps):
        weights[row, i0] += (1024 - f) / 1024
        weights[row, i1] += f / 1024
    return weights


@pytest.mark.parametrize("mode", bilinear_taps.MODES)
@pytest.mark.parametrize("in_size, out_size, scale", [(4, 8, None), (7, 3, None), (5, 11, None), (6, 6, None),
                                                      (5, 1, None), (5, 7, 1.5), (9, 4, 0.45)])
def test_taps_read_the_onnx_coordinates_within_half_a_fixed_point_step(mode, in_size, out_size, scale):
    taps = bilinear_taps.onnx_taps(in_size, out_size, mode, scale)
    assert taps.dtype == np.int32 and taps.shape == (out_size, 3)
    assert np.all((taps[:, 0] >= 0) & (taps[:, 1] < in_size) & (taps[:, 2] >= 0) & (taps[:, 2] < 1024))
    np.testing.assert_allclose(_tap_weights(taps, in_size), _onnx_weights(in_size, out_size, mode, scale),
                               atol=0.5 / 1024 + 1e-6)


def test_tflite_taps_equal_ours_where_the_step_is_an_integer():
    # 2x, 4x and 1/2: TFLite's rounded step is exact, so RESIZE_BILINEAR reads the same coordinates.
    for in_size, out_size in ((4, 8), (3, 12), (8, 4)):
        for half_pixel in (False, True):
            mode = "half_pixel" if half_pixel else "asymmetric"
            np.testing.assert_array_equal(bilinear_taps.tflite_taps(in_size, out_size, False, half_pixel),
                                          bilinear_taps.onnx_taps(in_size, out_size, mode))
    # 6 -> 17: the step 361/1024 is 0.41/1024 short, which adds up along the axis
    drift = bilinear_taps.max_coordinate_difference(bilinear_taps.tflite_taps(6, 17, False, True),
                                                    bilinear_taps.onnx_taps(6, 17, "half_pixel"))
    assert drift > 1


def _resize_model(in_hw, out_hw, mode: str, *, use_scales: bool = False, opset: int = 18, c: int = 3,
                  **attrs) -> Graph:
    """x -> Conv 1x1 -> Resize(linear) -> y: the Conv gives the Resize a quantized input."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.standard_normal((c, 2, 1, 1)).astype(np.float32), "w")]
    if use_scales:
        scales = np.array([1, 1, out_hw[0] / in_hw[0], out_hw[1] / in_hw[1]], np.float32)
        inits.append(numpy_helper.from_array(scales, "scales"))
        resize_inputs = ["c", "", "scales"]
    else:
        inits.append(numpy_helper.from_array(np.array([1, c, *out_hw], np.int64), "sizes"))
        resize_inputs = ["c", "", "", "sizes"]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Resize", resize_inputs, ["y"], name="resize", mode="linear",
                              coordinate_transformation_mode=mode, **attrs)]
    return build_graph(nodes, [("x", [1, 2, *in_hw])], [("y", None)], inits, opset=opset)


def _feeds(graph: Graph, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {v.name: rng.standard_normal(Graph.static_shape(v)).astype(np.float32) for v in graph.inputs}


def _agreement(qdq: Graph, program) -> tuple[float, float]:
    """(share equal, share within 1 LSB) of the program's output against onnxruntime on the QDQ graph."""
    equal = within = total = 0
    out = program.outputs[0]
    scale = program.tensors[next(c for c in program.calls if out in c.outputs).inputs[0]].quant.scale[0]
    for seed in range(5, 9):
        feeds = _feeds(qdq, seed)
        (expected,) = session(qdq.to_proto()).run(None, feeds)
        steps = np.rint(np.abs(run_program(program, feeds)[out].astype(np.float64) - expected) / scale)
        equal, within, total = equal + int((steps == 0).sum()), within + int((steps <= 1).sum()), total + steps.size
    return equal / total, within / total


@pytest.mark.parametrize("mode", bilinear_taps.MODES)
@pytest.mark.parametrize("in_hw, out_hw", SIZES)
def test_linear_resize_lowers_to_qresize_bilinear_within_one_lsb_of_onnxruntime(mode, in_hw, out_hw):
    graph = _resize_model(in_hw, out_hw, mode)
    qdq = quantize_with_pass(graph, [_feeds(graph, s) for s in range(3)])
    lowering = IntegerLowering(qdq)
    program = lowering.lower(64)
    ops = [c.op for c in program.calls]
    assert "QResizeBilinear" in ops and "QRequantize" not in ops, ops  # shared parameters: no requantization
    assert not lowering.float_reasons
    equal, within = _agreement(qdq, program)
    assert within == 1.0 and equal > 0.75, (equal, within)  # ties: half away from zero vs half to even


def test_scales_input_and_different_output_parameters_add_a_requantize():
    # The test helper quantizes the Resize output with its own (narrower) range: the kernel keeps the
    # input's parameters and a QRequantize follows (two roundings: still within 1 LSB).
    graph = _resize_model((5, 4), (10, 6), "half_pixel", use_scales=True)
    qdq = quantize_graph(graph.clone(), calibrate(graph, [_feeds(graph, s) for s in range(3)]))
    program = IntegerLowering(qdq).lower(64)
    ops = [c.op for c in program.calls]
    assert ops.index("QRequantize") == ops.index("QResizeBilinear") + 1
    equal, within = _agreement(qdq, program)
    assert within == 1.0 and equal > 0.6, (equal, within)  # measured 0.74: two roundings


@pytest.mark.parametrize("attrs, opset, reason", [
    ({"coordinate_transformation_mode": "half_pixel_symmetric"}, 19, "half_pixel_symmetric"),
    ({"coordinate_transformation_mode": "tf_half_pixel_for_nn"}, 18, "tf_half_pixel_for_nn"),
    ({"coordinate_transformation_mode": "half_pixel", "antialias": 1}, 18, "antialiased"),
])
def test_linear_resizes_without_an_integer_kernel_stay_float_with_a_reason(attrs, opset, reason):
    mode = attrs.pop("coordinate_transformation_mode")
    graph = _resize_model((8, 8), (4, 4), mode, opset=opset, **attrs)
    qdq = quantize_with_pass(graph, [_feeds(graph, s) for s in range(2)])
    lowering = IntegerLowering(qdq)
    program = lowering.lower(64)
    assert "QResizeBilinear" not in [c.op for c in program.calls]
    assert any(reason in text for text in lowering.float_reasons.values()), lowering.float_reasons
