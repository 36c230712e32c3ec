"""HardSwishToHardSigmoidMulPass: fire count, structure, onnxruntime numerics, idempotence, where it must not fire,
and its place in the edgetpu pipeline (after simplify, so RecognizeHardSwishPass cannot undo it)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from edgekiln.compiler.pipelines import quantized_stages_for, stages_for
from edgekiln.passes.hard_swish_to_hard_sigmoid_mul import HardSwishToHardSigmoidMulPass
from tests.conftest import max_relative_error, run_ort
from tests.support.graphs import build_graph

SHAPE = [1, 4, 5, 6]
# Spans the three pieces of hard-swish: 0 below -3, x²/6 + x/2 in between, x above 3.
X = (np.random.default_rng(11).standard_normal(SHAPE) * 4).astype(np.float32)


def node(op, inputs, out, **attrs):
    return helper.make_node(op, inputs, [out], name=out, **attrs)


def apply(graph):
    """Run the pass, check onnxruntime agrees with the original, and that a second run changes nothing."""
    original = graph.to_proto()
    result = HardSwishToHardSigmoidMulPass().run(graph)
    onnx.checker.check_model(graph.to_proto())
    for want, got in zip(run_ort(original, {"x": X}), run_ort(graph.to_proto(), {"x": X})):
        assert want.shape == got.shape
        assert max_relative_error(want, got) <= 1e-6  # one float rounding apart at most
    snapshot = graph.to_bytes()
    again = HardSwishToHardSigmoidMulPass().run(graph)
    assert not again.changed and not again.applied and graph.to_bytes() == snapshot
    return result


def ops(graph):
    return [n.op_type for n in graph.main]


def test_each_hard_swish_becomes_x_times_its_hard_sigmoid():
    graph = build_graph([node("HardSwish", ["x"], "h"), node("Relu", ["h"], "r"), node("HardSwish", ["r"], "y")],
                        [("x", SHAPE)], [("y", SHAPE)])
    result = apply(graph)
    assert result.changed and len(result.applied) == 2
    assert ops(graph) == ["HardSigmoid", "Mul", "Relu", "HardSigmoid", "Mul"]
    for gate in (n for n in graph.main if n.op_type == "HardSigmoid"):
        assert gate.attributes["alpha"].value == np.float32(1 / 6) and gate.attributes["beta"].value == 0.5
        (product,) = [user for user, _ in gate.outputs[0].uses()]
        # x times its own gate: both Mul operands come from the same tensor
        assert product.op_type == "Mul" and product.inputs[0] is gate.inputs[0]


def test_a_graph_output_keeps_its_name():
    graph = build_graph([node("HardSwish", ["x"], "y")], [("x", SHAPE)], [("y", SHAPE)])
    apply(graph)
    assert [v.name for v in graph.outputs] == ["y"] and graph.outputs[0].producer().op_type == "Mul"


def test_hard_swish_in_another_domain_is_left_with_the_reason():
    graph = build_graph([helper.make_node("HardSwish", ["x"], ["y"], name="y", domain="custom.domain")],
                        [("x", SHAPE)], [("y", SHAPE)], extra_opsets=[("custom.domain", 1)])
    result = HardSwishToHardSigmoidMulPass().run(graph)
    assert not result.changed and result.not_applied == ["y: domain 'custom.domain' is not the default one"]


def test_nothing_to_do_without_hard_swish():
    graph = build_graph([node("HardSigmoid", ["x"], "g"), node("Mul", ["x", "g"], "y")], [("x", SHAPE)], [("y", SHAPE)])
    result = apply(graph)
    assert not result.changed and ops(graph) == ["HardSigmoid", "Mul"]


def test_only_the_edgetpu_pipelines_run_it_after_simplify():
    def stage_of(stages):
        return [s.name for s in stages if any(p.name == HardSwishToHardSigmoidMulPass.name for p in s.passes)]

    assert stage_of(stages_for("edgetpu")) == ["tpu"] and stage_of(quantized_stages_for("edgetpu")) == ["tpu"]
    names = [s.name for s in quantized_stages_for("edgetpu")]
    assert names.index("simplify") < names.index("tpu")  # RecognizeHardSwishPass (simplify) cannot undo it
    for backend in ("arm_cpu", "mobile_gpu", "fpga_hls"):
        assert stage_of(stages_for(backend)) == [] and stage_of(quantized_stages_for(backend)) == []
