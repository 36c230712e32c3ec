"""RecognizeHardSwishPass: fire count, structure, ORT numerics, idempotence, and where it must not fire."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgekiln.compiler.graph import Graph
from edgekiln.passes.recognize_hard_swish import RecognizeHardSwishPass
from tests.conftest import max_relative_error, run_ort
from tests.support.graphs import build_graph

SHAPE = [1, 4, 6, 6]
X = (np.random.default_rng(5).standard_normal(SHAPE) * 4).astype(np.float32)


def _const(name: str, value: float) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, dtype=np.float32), name)


def _node(op, inputs, out, **attrs):
    return helper.make_node(op, inputs, [out], name=out, **attrs)


def _relu6(shift=3.0, low=0.0, high=6.0):
    """relu6(x + shift) -> r, Paddle's spelling: Add(x, 3) then Clip(·, 0, 6)."""
    return ([_node("Add", ["x", "three"], "shifted"), _node("Clip", ["shifted", "lo", "hi"], "r")],
            [_const("three", shift), _const("lo", low), _const("hi", high)])


def _sixth(value, out, form, six=6.0):
    """value/6 as Div(value, 6) or Mul(1/6, value)."""
    return (_node("Div", [value, "six"], out), _const("six", six)) if form == "div" else \
        (_node("Mul", ["sixth", value], out), _const("sixth", 1 / six))


def _hard_swish(order="a", form="div", six=6.0, **relu6_args):
    """Case 1: x·relu6(x+3)/6 in association order (a), (b) or (c)."""
    nodes, inits = _relu6(**relu6_args)
    if order == "a":
        divide, const = _sixth("xr", "y", form, six)
        return nodes + [_node("Mul", ["x", "r"], "xr"), divide], inits + [const]
    if order == "b":
        divide, const = _sixth("r", "hs", form, six)
        return nodes + [divide, _node("Mul", ["hs", "x"], "y")], inits + [const]
    divide, const = _sixth("x", "x6", form, six)
    return nodes + [divide, _node("Mul", ["r", "x6"], "y")], inits + [const]


def _linear_clip(alpha=1 / 6, beta=0.5, times_x=False, divide=False):
    """Case 3: Clip(x·α + β, 0, 1) [· x]."""
    scale = _node("Div", ["x", "alpha"], "ax") if divide else _node("Mul", ["x", "alpha"], "ax")
    nodes = [scale, _node("Add", ["beta", "ax"], "lin"),
             _node("Clip", ["lin", "zero", "one"], "hs" if times_x else "y")]
    if times_x:
        nodes.append(_node("Mul", ["x", "hs"], "y"))
    return nodes, [_const("alpha", 1 / alpha if divide else alpha), _const("beta", beta),
                   _const("zero", 0.0), _const("one", 1.0)]


def _graph(nodes_inits, opset=17, outputs=(("y", SHAPE),), inputs=(("x", SHAPE),)) -> Graph:
    nodes, inits = nodes_inits
    return build_graph(nodes, list(inputs), list(outputs), inits, opset=opset)


def _run(graph: Graph, feeds=None):
    feeds = feeds or {"x": X}
    original = graph.to_proto()
    result = RecognizeHardSwishPass().run(graph)
    onnx.checker.check_model(graph.to_proto())
    for want, got in zip(run_ort(original, feeds), run_ort(graph.to_proto(), feeds)):
        assert max_relative_error(want, got) <= 1e-5
    snapshot = graph.to_bytes()
    again = RecognizeHardSwishPass().run(graph)
    assert not again.changed and not again.applied and graph.to_bytes() == snapshot
    return result


@pytest.mark.parametrize("order", ["a", "b", "c"])
@pytest.mark.parametrize("form", ["div", "mul"])
def test_x_relu6_over_six_becomes_hard_swish(order, form):
    graph = _graph(_hard_swish(order, form))
    result = _run(graph)
    assert result.changed and len(result.applied) == 1
    assert graph.count_ops() == {"HardSwish": 1}
    assert [v.name for v in graph.outputs] == ["y"] and not graph.main.initializers


@pytest.mark.parametrize("form", ["div", "mul"])
def test_relu6_over_six_alone_becomes_hard_sigmoid(form):
    nodes, inits = _relu6()
    divide, const = _sixth("r", "y", form)
    graph = _graph((nodes + [divide], inits + [const]))
    assert len(_run(graph).applied) == 1
    (node,) = graph.nodes
    assert node.op_type == "HardSigmoid"
    assert node.attributes["alpha"].value == pytest.approx(1 / 6) and node.attributes["beta"].value == 0.5


@pytest.mark.parametrize("alpha, beta, divide", [(1 / 6, 0.5, True), (0.2, 0.5, False), (0.25, 0.4, False)])
def test_clip_of_a_line_becomes_hard_sigmoid(alpha, beta, divide):
    graph = _graph(_linear_clip(alpha, beta, divide=divide))
    assert len(_run(graph).applied) == 1
    (node,) = graph.nodes
    assert node.op_type == "HardSigmoid"
    assert node.attributes["alpha"].value == pytest.approx(alpha) and node.attributes["beta"].value == pytest.approx(beta)


def test_x_times_clip_of_a_line_becomes_hard_swish():
    graph = _graph(_linear_clip(times_x=True))
    assert len(_run(graph).applied) == 1
    assert graph.count_ops() == {"HardSwish": 1}


def test_x_times_clip_of_another_line_keeps_the_mul():
    graph = _graph(_linear_clip(alpha=0.2, times_x=True))  # x·HardSigmoid_{0.2,½}(x) is not HardSwish
    assert len(_run(graph).applied) == 1
    assert graph.count_ops() == {"HardSigmoid": 1, "Mul": 1}


def test_x_times_hard_sigmoid_of_x_becomes_hard_swish():
    nodes = [_node("HardSigmoid", ["x"], "hs", alpha=0.16666670143604279, beta=0.5),  # as Paddle writes 1/6
             _node("Mul", ["x", "hs"], "y")]
    graph = _graph((nodes, []))
    assert len(_run(graph).applied) == 1
    assert graph.count_ops() == {"HardSwish": 1}


def test_squeeze_excitation_gate_is_not_a_candidate():
    nodes = [_node("GlobalAveragePool", ["x"], "pooled"), _node("HardSigmoid", ["pooled"], "gate", alpha=1 / 6),
             _node("Mul", ["x", "gate"], "y")]
    graph = _graph((nodes, []))
    result = RecognizeHardSwishPass().run(graph)
    assert not result.changed and not result.not_applied


@pytest.mark.parametrize("build, reason", [
    (lambda: _graph(_hard_swish(shift=2.0)), "constant 2 is not the shift 3"),
    (lambda: _graph(_hard_swish(low=-1.0)), "constant -1 is not the Clip min 0"),
    (lambda: _graph(_hard_swish(six=5.0)), "constant 5 is not the divisor 6"),
    (lambda: _graph(_hard_swish("b", "mul", six=5.0)), "constant 0.2 is not the factor 1/6"),
    (lambda: _graph(_hard_swish(), outputs=(("y", SHAPE), ("r", SHAPE))), "'r' is read outside"),
    (lambda: _graph(_hard_swish(), opset=13), "opset 13 has no HardSwish"),
    (lambda: _graph(([_node("HardSigmoid", ["x"], "hs", alpha=0.2), _node("Mul", ["hs", "x"], "y")], [])),
     "constant 0.2 is not α=1/6"),
])
def test_does_not_fire(build, reason):
    graph = build()
    before = graph.to_bytes()
    result = RecognizeHardSwishPass().run(graph)
    assert not result.changed and not result.applied
    assert len(result.not_applied) == 1 and reason in result.not_applied[0], result.not_applied
    assert graph.to_bytes() == before


def test_plain_relu6_is_not_a_candidate():
    graph = _graph(([_node("Clip", ["x", "lo", "hi"], "y")], [_const("lo", 0.0), _const("hi", 6.0)]))
    result = RecognizeHardSwishPass().run(graph)
    assert not result.changed and not result.not_applied


# -- real models ------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name, count", [("ppocr_det", 24), ("ppocr_rec", 28), ("ppocr_cls", 18)])
def test_ppocr_hard_swishes_are_all_recognized(name, count, tmp_path):
    from edgekiln.compiler.frontend import load_model
    from tests.support.numerics import assert_same_outputs, with_logits_exposed
    from tests.zoo import input_shapes, model_path, sample_input

    path, probabilities = with_logits_exposed(model_path(name), tmp_path)
    graph = load_model(path, input_shapes(name))
    before = graph.count_ops()
    result = RecognizeHardSwishPass().run(graph)
    after = graph.count_ops()
    assert len(result.applied) == count and not result.not_applied
    assert after["HardSwish"] == count and "Clip" not in after
    assert after["HardSigmoid"] == before["HardSigmoid"]  # the SE gates stay
    assert len(graph.main) == sum(before.values()) - 3 * count
    assert_same_outputs(path, graph.to_proto(), sample_input(name), probabilities)
    assert not RecognizeHardSwishPass().run(graph).changed


@pytest.mark.slow
def test_se_hardswish_zoo_model_has_nothing_to_recognize():
    from edgekiln.compiler.frontend import load_model
    from tests.zoo import input_shapes, model_path

    graph = load_model(model_path("se_hardswish"), input_shapes("se_hardswish"))
    result = RecognizeHardSwishPass().run(graph)
    assert not result.changed and not result.not_applied  # torch exports HardSwish ops already
