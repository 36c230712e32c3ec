"""Float graph outputs (QuantizeGraphPass float_outputs): the last Conv / Gemm keeps its output float,
computed exactly from the integer accumulator; int8 outputs where that is not exact or not asked."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgekiln.backends.reference.interpreter import run_program
from edgekiln.compiler.graph import Graph
from edgekiln.compiler.integer_lowering import lower_quantized_graph
from edgekiln.compiler.qdq_format import (
    FLOAT_OUTPUT_KEY,
    match_activation,
    match_weight,
)
from edgekiln.passes.quantize_graph import QuantizeGraphPass
from edgekiln.quantization import QuantConfig
from tests.conftest import run_ort
from tests.quantization.helpers import minmax_ranges
from tests.support.graphs import build_graph

RNG = np.random.default_rng(5)
FEEDS = [{"x": RNG.standard_normal((1, 3, 6, 6)).astype(np.float32)} for _ in range(6)]


def conv_gemm(bias_scale: float = 1.0) -> Graph:
    """x -> conv -> relu -> flatten -> gemm (transB=1) -> y: the Gemm writes the graph output."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in (
        ("W", rng.standard_normal((4, 3, 3, 3))), ("B", rng.standard_normal(4)),
        ("G", rng.standard_normal((7, 144))), ("C", rng.standard_normal(7) * bias_scale))]
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], "conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], "relu"),
             helper.make_node("Flatten", ["r"], ["f"], "flatten"),
             helper.make_node("Gemm", ["f", "G", "C"], ["y"], "head", transB=1)]
    return build_graph(nodes, [("x", [1, 3, 6, 6])], [("y", [1, 7])], inits)


def quantized(graph: Graph, float_outputs: bool = True) -> Graph:
    ranges = minmax_ranges(graph, FEEDS)
    QuantizeGraphPass(QuantConfig("int8"), ranges, float_outputs=float_outputs).run(graph)
    return graph


def output_is_quantized(graph: Graph) -> bool:
    return match_activation(graph.outputs[0]) is not None


def test_the_last_gemm_keeps_a_float_output_and_a_second_run_changes_nothing():
    graph = quantized(conv_gemm())
    head = graph.node("head")
    assert head.metadata_props[FLOAT_OUTPUT_KEY] == "1" and not output_is_quantized(graph)
    assert match_activation(head.inputs[0]) is not None and match_weight(head.inputs[2]).precision == "int32"
    before = graph.to_bytes()
    again = QuantizeGraphPass(QuantConfig("int8"), minmax_ranges(conv_gemm(), FEEDS), float_outputs=True).run(graph)
    assert not again.changed and graph.to_bytes() == before


def test_float_outputs_off_quantizes_the_output():
    assert output_is_quantized(quantized(conv_gemm(), float_outputs=False))


def test_an_accumulator_float32_cannot_hold_exactly_keeps_the_int8_output():
    # A bias of ~1e6 at the accumulator scale is far above 2^24 integer steps.
    graph = quantized(conv_gemm(bias_scale=1e6))
    assert FLOAT_OUTPUT_KEY not in graph.node("head").metadata_props and output_is_quantized(graph)


def test_the_integer_program_computes_accumulator_times_scale_exactly():
    graph = quantized(conv_gemm())
    program = lower_quantized_graph(graph)
    ops = [call.op for call in program.calls]
    # the head is the int8 GEMM with a float epilogue: no weight is dequantized at run time
    assert ops[-1] == "QFullyConnected" and "DequantizeWeight" not in ops and "Dequantize" not in ops
    head_call = program.calls[-1]
    assert head_call.attrs["float_output"] and program.tensors[head_call.outputs[0]].dtype == "float32"
    assert [program.tensors[n].dtype for n in head_call.inputs] == ["int8", "int8", "int32", "float32"]
    # Independent numpy: the head's int8 input from the program, W_q and b_q from the QDQ graph, int64 math.
    head = graph.node("head")
    x_act, weight, bias = match_activation(head.inputs[0]), match_weight(head.inputs[1]), match_weight(head.inputs[2])
    values = {}
    for feed in FEEDS:
        keep = run_program_with(program, feed, x_act.quantized.name, values)
        acc = (keep.astype(np.int64) - x_act.zero_point) @ weight.q_values.astype(np.int64).T + bias.q_values
        scale = (np.float32(x_act.scale) * weight.scale.astype(np.float32)).astype(np.float32)
        expected = acc.astype(np.float32) * scale
        got = run_program(program, feed)["y"]
        np.testing.assert_array_equal(got, expected)
        # And the QDQ float reference agrees up to float rounding.
        np.testing.assert_allclose(got, run_ort(graph.to_proto(), feed)[0], rtol=1e-5, atol=1e-5)


def run_program_with(program, feed, name, cache):
    """The int8 tensor `name` as the program computes it (the Program up to its writer)."""
    index = next(i for i, call in enumerate(program.calls) if name in call.outputs)
    head = type(program)(tensors=program.tensors, constants=program.constants, calls=program.calls[:index + 1],
                         inputs=program.inputs, outputs=[name], arena=program.arena)
    return run_program(head, feed)[name]


def test_a_graph_output_read_inside_the_graph_stays_int8():
    graph = conv_gemm()
    proto = graph.to_proto()
    proto.graph.node.append(helper.make_node("Relu", ["y"], ["z"], "after"))
    proto.graph.output.append(helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, [1, 7]))
    graph = Graph.from_proto(proto)
    graph = quantized(graph)
    assert FLOAT_OUTPUT_KEY not in graph.node("head").metadata_props


@pytest.mark.parametrize("target,expected", [("host", True), ("edgetpu", False)])
def test_targets_without_fp32_get_int8_outputs(target, expected):
    from edgekiln.compiler.explain import ExplainTrace
    from edgekiln.compiler.quant_options import QuantOptions
    from edgekiln.compiler.quantize_model import quantize_graph
    from edgekiln.compiler.target import get_target

    graph = conv_gemm()
    options = QuantOptions(calib=[f["x"] for f in FEEDS], bias_correction=False)
    quantize_graph(graph, options, get_target(target), ExplainTrace(), progress=False)
    assert (FLOAT_OUTPUT_KEY in graph.node("head").metadata_props) is expected
