"""RecognizeGeluPass: fire count, structure, ORT numerics, idempotence, and where it must not fire."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgekiln.compiler import fused_ops
from edgekiln.compiler.graph import Graph
from edgekiln.passes.recognize_gelu import RecognizeGeluPass
from tests.conftest import max_relative_error, run_ort
from tests.support.graphs import build_graph

SHAPE = [2, 16]
X = (np.random.default_rng(3).standard_normal(SHAPE) * 2).astype(np.float32)


def _const(name: str, value: float) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, dtype=np.float32), name)


def _mul(a, b, out):
    return helper.make_node("Mul", [a, b], [out], name=out)


SQRT2 = math.sqrt(2)


def _erf_head(scale="div", root=SQRT2):
    """Case 1: p = 1 + erf(x/√2)."""
    if scale == "div":
        nodes, inits = [helper.make_node("Div", ["x", "k"], ["a"], name="a")], [_const("k", root)]
    else:
        nodes, inits = [_mul("k", "x", "a")], [_const("k", 1 / root)]
    nodes += [helper.make_node("Erf", ["a"], ["e"], name="e"), helper.make_node("Add", ["one", "e"], ["p"], name="p")]
    return nodes, inits + [_const("one", 1.0)]


def _tanh_head(cube="pow", c=0.044715):
    """Case 2: p = 1 + tanh(√(2/π)·(x + c·x³))."""
    if cube == "pow":
        nodes, inits = [helper.make_node("Pow", ["x", "three"], ["x3"], name="x3")], [_const("three", 3.0)]
    else:
        nodes, inits = [_mul("x", "x", "x2"), _mul("x2", "x", "x3")], []
    nodes += [_mul("x3", "c", "cubic"), helper.make_node("Add", ["x", "cubic"], ["inner"], name="inner"),
              _mul("k", "inner", "arg"), helper.make_node("Tanh", ["arg"], ["t"], name="t"),
              helper.make_node("Add", ["t", "one"], ["p"], name="p")]
    return nodes, inits + [_const("c", c), _const("k", math.sqrt(2 / math.pi)), _const("one", 1.0)]


def _tail(order="a", half="mul"):
    """Case 3: y = 0.5·x·p in one of its association orders."""
    halve = ((lambda a, out: _mul(a, "half", out)) if half == "mul"
             else (lambda a, out: helper.make_node("Div", [a, "two"], [out], name=out)))
    init = _const("half", 0.5) if half == "mul" else _const("two", 2.0)
    if order == "a":
        return [_mul("x", "p", "xp"), halve("xp", "y")], [init]
    if order == "b":
        return [halve("p", "ph"), _mul("ph", "x", "y")], [init]
    return [halve("x", "xh"), _mul("p", "xh", "y")], [init]


def _graph(head, tail, opset=17, outputs=(("y", SHAPE),)) -> Graph:
    return build_graph(head[0] + tail[0], [("x", SHAPE)], list(outputs), head[1] + tail[1], opset=opset)


def _run(graph: Graph):
    original = graph.to_proto()
    result = RecognizeGeluPass().run(graph)
    onnx.checker.check_model(graph.to_proto())
    for want, got in zip(run_ort(original, {"x": X}), run_ort(graph.to_proto(), {"x": X})):
        assert max_relative_error(want, got) <= 1e-5
    snapshot = graph.to_bytes()
    again = RecognizeGeluPass().run(graph)
    assert not again.changed and not again.applied and graph.to_bytes() == snapshot
    return result


@pytest.mark.parametrize("scale", ["div", "mul"])
@pytest.mark.parametrize("order", ["a", "b", "c"])
@pytest.mark.parametrize("half", ["mul", "div"])
def test_erf_form_becomes_the_edgekiln_gelu_function(scale, order, half):
    graph = _graph(_erf_head(scale), _tail(order, half))
    result = _run(graph)
    assert result.changed and len(result.applied) == 1 and "erf form" in result.applied[0]
    (node,) = graph.nodes
    assert (node.domain, node.op_type) == (fused_ops.DOMAIN, "Gelu")
    assert (fused_ops.DOMAIN, "Gelu", "") in graph.model.functions
    assert [v.name for v in graph.outputs] == ["y"] and not graph.main.initializers


@pytest.mark.parametrize("cube", ["pow", "muls"])
@pytest.mark.parametrize("order", ["a", "c"])
def test_tanh_form_becomes_gelu_tanh(cube, order):
    graph = _graph(_tanh_head(cube), _tail(order))
    result = _run(graph)
    assert len(result.applied) == 1 and "tanh form" in result.applied[0]
    (node,) = graph.nodes
    assert (node.domain, node.op_type) == (fused_ops.DOMAIN, "GeluTanh")


@pytest.mark.parametrize("head, approximate", [(_erf_head, "none"), (_tanh_head, "tanh")])
def test_opset_20_emits_onnx_gelu(head, approximate):
    graph = _graph(head(), _tail(), opset=20)
    assert len(_run(graph).applied) == 1
    (node,) = graph.nodes
    assert (node.domain, node.op_type) == ("", "Gelu")
    assert node.attributes["approximate"].value == approximate
    assert not graph.model.functions


def test_torch_float32_constants_are_accepted():
    graph = _graph(_erf_head("div", root=1.4142135381698608), _tail())  # √2 as torch writes it
    assert len(_run(graph).applied) == 1


@pytest.mark.parametrize("build, reason", [
    (lambda: _graph(_erf_head(root=1.41), _tail()), "constant 1.41 is not √2"),
    (lambda: _graph(_erf_head("mul", root=1.41), _tail()), "is not 1/√2"),
    (lambda: _graph(_tanh_head(c=0.05), _tail()), "constant 0.05 is not 0.044715"),
    (lambda: _graph(_erf_head(), ([_mul("x", "p", "xp"), _mul("xp", "half", "y")], [_const("half", 0.6)])),
     "constant 0.6 is not ½"),
    (lambda: _graph(_erf_head(), _tail(), outputs=(("y", SHAPE), ("e", SHAPE))), "'e' is read outside"),
])
def test_does_not_fire(build, reason):
    graph = build()
    before = graph.to_bytes()
    result = RecognizeGeluPass().run(graph)
    assert not result.changed and not result.applied
    assert len(result.not_applied) == 1 and reason in result.not_applied[0], result.not_applied
    assert graph.to_bytes() == before


def test_erf_of_something_else_is_not_a_candidate():
    nodes = [helper.make_node("Erf", ["x"], ["e"], name="e"), helper.make_node("Add", ["e", "one"], ["y"], name="y")]
    graph = build_graph(nodes, [("x", SHAPE)], [("y", SHAPE)], [_const("one", 1.0)])
    result = RecognizeGeluPass().run(graph)
    assert not result.changed and not result.not_applied


@pytest.mark.slow
def test_tiny_transformer_gelus_are_recognized():
    from edgekiln.compiler.frontend import load_model
    from tests.zoo import input_shapes, model_path, sample_input

    graph = load_model(model_path("tiny_transformer"), input_shapes("tiny_transformer"))
    nodes_before = len(graph.main)
    result = RecognizeGeluPass().run(graph)
    assert len(result.applied) == 2 and not result.not_applied
    ops = graph.count_ops()
    assert ops["Gelu"] == 2 and "Erf" not in ops
    assert len(graph.main) == nodes_before - 2 * 4
    onnx.checker.check_model(graph.to_proto())
    feeds = sample_input("tiny_transformer")
    for want, got in zip(run_ort(model_path("tiny_transformer"), feeds), run_ort(graph.to_proto(), feeds)):
        assert max_relative_error(want, got) <= 1e-5
    assert not RecognizeGeluPass().run(graph).changed
