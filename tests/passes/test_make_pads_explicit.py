"""MakePadsExplicitPass: auto_pad SAME_UPPER/SAME_LOWER/VALID -> explicit pads, same outputs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgekiln.compiler.graph import Graph
from edgekiln.passes.make_pads_explicit import MakePadsExplicitPass
from tests.conftest import max_relative_error, run_ort
from tests.support.graphs import build_graph

RNG = np.random.default_rng(3)
X = RNG.standard_normal((1, 3, 9, 10)).astype(np.float32)


def _explicit(node: onnx.NodeProto, inits=()) -> Graph:
    graph = build_graph([node], [("x", list(X.shape))], [("y", None)], inits)
    original = graph.to_proto()
    result = MakePadsExplicitPass().run(graph)
    assert result.changed and len(result.applied) == 1
    rewritten = graph.node(node.name)
    assert "auto_pad" not in rewritten.attributes and "pads" in rewritten.attributes
    onnx.checker.check_model(graph.to_proto())
    want, got = run_ort(original, {"x": X})[0], run_ort(graph.to_proto(), {"x": X})[0]
    assert got.shape == want.shape and max_relative_error(want, got) <= 1e-5
    snapshot = graph.to_bytes()
    assert not MakePadsExplicitPass().run(graph).changed and graph.to_bytes() == snapshot
    return graph


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
@pytest.mark.parametrize("kernel,stride", [(3, 1), (4, 2), (2, 3), (5, 2)])
def test_conv_auto_pad(auto_pad, kernel, stride):
    w = numpy_helper.from_array(RNG.standard_normal((2, 3, kernel, kernel)).astype(np.float32), "W")
    node = helper.make_node("Conv", ["x", "W"], ["y"], name="conv", auto_pad=auto_pad, strides=[stride, stride])
    _explicit(node, [w])


def test_dilated_same_conv_gets_the_spec_pads():
    # onnxruntime refuses dilation with SAME, so check the numbers: e = (3-1)*2+1 = 5, o = i, p = 4.
    w = numpy_helper.from_array(RNG.standard_normal((2, 3, 3, 3)).astype(np.float32), "W")
    node = helper.make_node("Conv", ["x", "W"], ["y"], name="conv", auto_pad="SAME_LOWER", dilations=[2, 2])
    graph = build_graph([node], [("x", list(X.shape))], [("y", None)], [w])
    assert MakePadsExplicitPass().run(graph).changed
    assert list(graph.node("conv").attributes["pads"].value) == [2, 2, 2, 2]
    assert run_ort(graph.to_proto(), {"x": X})[0].shape == (1, 2, 9, 10)


def test_same_upper_puts_the_odd_pixel_at_the_end():
    w = numpy_helper.from_array(RNG.standard_normal((2, 3, 4, 4)).astype(np.float32), "W")
    graph = _explicit(helper.make_node("Conv", ["x", "W"], ["y"], name="conv", auto_pad="SAME_UPPER"), [w])
    assert list(graph.node("conv").attributes["pads"].value) == [1, 1, 2, 2]


@pytest.mark.parametrize("op,extra", [("AveragePool", {"count_include_pad": 0}), ("AveragePool", {"count_include_pad": 1}),
                                      ("MaxPool", {}), ("LpPool", {})])
@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
def test_pool_auto_pad(op, extra, auto_pad):
    _explicit(helper.make_node(op, ["x"], ["y"], name="pool", kernel_shape=[3, 2], strides=[2, 2], auto_pad=auto_pad,
                               **extra))


def test_pool_with_ceil_mode_is_refused():
    node = helper.make_node("MaxPool", ["x"], ["y"], name="pool", kernel_shape=[3, 3], strides=[2, 2],
                            auto_pad="SAME_UPPER", ceil_mode=1)
    graph = build_graph([node], [("x", list(X.shape))], [("y", None)])
    result = MakePadsExplicitPass().run(graph)
    assert not result.changed
    assert result.not_applied == ["pool: ceil_mode=1 rounds explicit pads differently from auto_pad"]


def test_nothing_to_do_without_auto_pad():
    graph = build_graph([helper.make_node("MaxPool", ["x"], ["y"], name="pool", kernel_shape=[2, 2])],
                        [("x", list(X.shape))], [("y", None)])
    result = MakePadsExplicitPass().run(graph)
    assert not result.changed and not result.not_applied
