"""CorrectBiasPass: the bias absorbs the mean error of quantized weights (depthwise, Gemm), once."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgekiln.compiler.graph import Graph
from edgekiln.passes.correct_bias import CORRECTED_KEY, CorrectBiasPass
from edgekiln.passes.quantize_graph import QuantizeGraphPass
from edgekiln.quantization import QuantConfig, quantize_weight
from tests.conftest import run_ort
from tests.quantization.helpers import minmax_ranges, sqnr_db
from tests.support.graphs import build_graph

RNG = np.random.default_rng(21)


def feeds(count, shape=(1, 8, 8, 8)):
    # a non-zero mean input, as after a Relu: the mean shift is what bias correction removes
    return [{"x": (RNG.standard_normal(shape) + 2.0).astype(np.float32)} for _ in range(count)]


def depthwise_graph():
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 1, 3, 3)).astype(np.float32), "W")]
    node = helper.make_node("Conv", ["x", "W"], ["y"], "dw", group=8, pads=[1, 1, 1, 1])
    return build_graph([node], [("x", [1, 8, 8, 8])], [("y", [1, 8, 8, 8])], inits)


def channel_mean_error(reference: Graph, quantized: Graph, data) -> np.ndarray:
    """|mean over data and positions of (quantized − float)| per output channel."""
    diffs = [run_ort(quantized.to_proto(), f)[0] - run_ort(reference.to_proto(), f)[0] for f in data]
    return np.abs(np.mean(np.concatenate(diffs), axis=(0, 2, 3)))


def test_depthwise_int4_mean_error_drops_and_a_second_run_changes_nothing():
    config = QuantConfig("w4a16:g32")  # int4 weights (K = 9: per channel), float activations: weights only
    calibration, test = feeds(16), feeds(16)
    float_graph = depthwise_graph()
    plain, corrected = float_graph.clone(), float_graph.clone()
    result = CorrectBiasPass(calibration, config).run(corrected)
    assert result.changed and len(result.applied) == 1 and "dw (Conv): w4a16:g32: bias corrected" in result.applied[0]
    assert corrected.node("dw").metadata_props[CORRECTED_KEY] == "w4a16:g32"
    onnx.checker.check_model(corrected.to_proto(), full_check=True)
    before = corrected.to_bytes()
    again = CorrectBiasPass(calibration, config).run(corrected)
    assert not again.changed and corrected.to_bytes() == before
    for g in (plain, corrected):
        QuantizeGraphPass(config, {}).run(g)
    error_plain = channel_mean_error(float_graph, plain, test)
    error_corrected = channel_mean_error(float_graph, corrected, test)
    print(f"depthwise int4 mean output error per channel: {error_plain.mean():.4f} -> {error_corrected.mean():.4f}")
    assert error_corrected.mean() < error_plain.mean() / 3


def test_gemm_shift_is_delta_w_times_the_input_mean():
    rng = np.random.default_rng(4)
    w, c = rng.standard_normal((16, 5)).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    graph = build_graph([helper.make_node("Gemm", ["x", "W", "C"], ["y"], "fc")], [("x", [2, 16])], [("y", [2, 5])],
                        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(c, "C")])
    data = [{"x": (rng.standard_normal((2, 16)) + 1).astype(np.float32)} for _ in range(4)]
    CorrectBiasPass(data, QuantConfig("int4", keep_first_last_int8=False)).run(graph)
    mean_x = np.mean(np.concatenate([d["x"] for d in data]), axis=0).astype(np.float64)
    delta = quantize_weight(w.T, "int4").dequantized().astype(np.float64) - w.T  # stored [N, K]
    np.testing.assert_allclose(Graph.constant(graph.node("fc").inputs[2]), c - delta @ mean_x, rtol=1e-5, atol=1e-6)


def test_nodes_it_cannot_correct_say_why():
    rng = np.random.default_rng(5)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], "mm"),
             helper.make_node("Gemm", ["h", "G"], ["y"], "fc", transB=1)]
    graph = build_graph(nodes, [("x", [2, 6])], [("y", [2, 3])],
                        [numpy_helper.from_array(rng.standard_normal((6, 4)).astype(np.float32), "W"),
                         numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float32), "G")])
    data = [{"x": rng.standard_normal((2, 6)).astype(np.float32)}]
    result = CorrectBiasPass(data, QuantConfig.from_options("int8", keep_float=["fc"])).run(graph)
    assert not result.changed
    assert result.not_applied == ["mm (MatMul): a plain MatMul has no bias input (fuse MatMul + Add first)",
                                  "fc (Gemm): precision fp32: its weights are not quantized"]
    # a Gemm without C gets one
    result = CorrectBiasPass(data, QuantConfig("int8")).run(graph)
    assert result.changed and Graph.constant(graph.node("fc").inputs[2]).shape == (3,)


def test_ternary_layers_are_not_corrected():
    graph = depthwise_graph()
    result = CorrectBiasPass(feeds(4), QuantConfig("ternary", keep_first_last_int8=False)).run(graph)
    assert not result.changed and len(result.not_applied) == 1 and "ternary" in result.not_applied[0]


@pytest.mark.slow
@pytest.mark.parametrize("name, precision, min_gain_db", [("inverted_residual", "int4", 1.5),
                                                          ("repvgg", "int8", 3.0)])
def test_zoo_sqnr_improves_with_bias_correction(name, precision, min_gain_db):
    from tests.quantization.helpers import quantization_float_graph
    from tests.zoo import sample_input

    shape = sample_input(name)["input"].shape
    rng = np.random.default_rng(1)
    calibration = [{"input": rng.standard_normal(shape).astype(np.float32)} for _ in range(32)]
    test = [{"input": rng.standard_normal(shape).astype(np.float32)} for _ in range(32)]
    graph = quantization_float_graph(name)
    want = np.concatenate([run_ort(graph.to_proto(), f)[0] for f in test])
    config = QuantConfig(precision, keep_first_last_int8=False)
    sqnr = {}
    for corrected in (False, True):
        g = graph.clone()
        if corrected:
            CorrectBiasPass(calibration, config).run(g)
        QuantizeGraphPass(config, minmax_ranges(g, calibration)).run(g)
        sqnr[corrected] = sqnr_db(want, np.concatenate([run_ort(g.to_proto(), f)[0] for f in test]))
    print(f"{name} {precision}: output SQNR {sqnr[False]:.2f} dB -> {sqnr[True]:.2f} dB with bias correction")
    assert sqnr[True] > sqnr[False] + min_gain_db
