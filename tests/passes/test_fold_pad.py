"""FoldPadPass: zero Pad folded into Conv / AveragePool / MaxPool padding; the TF SAME subgraph."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgekiln.compiler.graph import Graph
from edgekiln.passes.fold_constants import FoldConstantsPass
from edgekiln.passes.fold_pad import FoldPadPass
from edgekiln.passes.make_pads_explicit import MakePadsExplicitPass
from tests.conftest import max_relative_error, run_ort
from tests.support.graphs import build_graph

RNG = np.random.default_rng(13)
X = RNG.standard_normal((1, 3, 9, 10)).astype(np.float32)
W = numpy_helper.from_array(RNG.standard_normal((4, 3, 3, 3)).astype(np.float32), "W")


def _ints(name: str, values) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, np.int64), name)


def _pad(pads=(0, 0, 1, 2, 0, 0, 2, 1), value: float | None = None, source: str = "x", **attrs):
    """(Pad node, its initializers): pads in ONNX order [begins..., ends...]."""
    inits = [_ints("pads", pads)]
    inputs = [source, "pads"]
    if value is not None:
        inits.append(numpy_helper.from_array(np.array(value, np.float32), "value"))
        inputs.append("value")
    return helper.make_node("Pad", inputs, ["p"], name="pad", **attrs), inits


def _graph(reader: onnx.NodeProto, pad_args: dict | None = None, pre=(), extra_inits=(), outputs=(("y", None),),
           opset: int = 17, pad=None) -> Graph:
    pad_node, inits = pad if pad is not None else _pad(**(pad_args or {}))
    return build_graph([*pre, pad_node, reader], [("x", list(X.shape))], outputs, [*inits, *extra_inits], opset=opset)


def _fold(graph: Graph, expected_pads: list[int]) -> Graph:
    original = graph.to_proto()
    result = FoldPadPass().run(graph)
    assert result.changed and len(result.applied) == 1, result.not_applied
    assert "Pad" not in graph.count_ops()
    reader = next(n for n in graph.main if n.op_type in ("Conv", "AveragePool", "MaxPool"))
    assert list(reader.attributes["pads"].value) == expected_pads
    assert "pads" not in graph.main.initializers
    onnx.checker.check_model(graph.to_proto())
    want, got = run_ort(original, {"x": X})[0], run_ort(graph.to_proto(), {"x": X})[0]
    assert got.shape == want.shape and max_relative_error(want, got) <= 1e-5
    snapshot = graph.to_bytes()
    assert not FoldPadPass().run(graph).changed and graph.to_bytes() == snapshot
    return graph


def _conv(**attrs) -> onnx.NodeProto:
    return helper.make_node("Conv", ["p", "W"], ["y"], name="conv", **attrs)


def test_pad_adds_to_conv_pads():
    _fold(_graph(_conv(pads=[1, 1, 1, 1]), extra_inits=[W]), [2, 3, 3, 2])


def test_explicit_zero_value_and_opset_18_axes():
    pad = helper.make_node("Pad", ["x", "pads", "value", "axes"], ["p"], name="pad")
    inits = [_ints("pads", [1, 0, 2, 1]), numpy_helper.from_array(np.array(0, np.float32), "value"),
             _ints("axes", [-2, -1])]
    _fold(_graph(_conv(), pad=(pad, inits), extra_inits=[W], opset=18), [1, 0, 2, 1])


@pytest.mark.parametrize("own_pads,count_include_pad", [(None, 0), ([1, 1, 1, 1], 1)])
def test_pad_into_average_pool(own_pads, count_include_pad):
    attrs = {"kernel_shape": [5, 4], "count_include_pad": count_include_pad}
    if own_pads:
        attrs["pads"] = own_pads
    graph = _fold(_graph(helper.make_node("AveragePool", ["p"], ["y"], name="pool", **attrs)),
                  [1, 2, 2, 1] if own_pads is None else [2, 3, 3, 2])
    assert graph.node("pool").attributes["count_include_pad"].value == 1


def test_zero_pad_into_max_pool_after_relu():
    relu = helper.make_node("Relu", ["x"], ["r"], name="relu")
    pool = helper.make_node("MaxPool", ["p"], ["y"], name="pool", kernel_shape=[3, 3], strides=[2, 2])
    _fold(_graph(pool, {"source": "r"}, pre=[relu]), [1, 2, 2, 1])


def test_minus_infinity_pad_into_max_pool():
    pool = helper.make_node("MaxPool", ["p"], ["y"], name="pool", kernel_shape=[3, 3])
    _fold(_graph(pool, {"value": -np.inf}), [1, 2, 2, 1])


def test_tf_same_pad_subgraph_folds_after_constant_folding():
    # pads = Concat([0, 0, 1, 1], [0, 0, 1, 1]): what a TF "SAME" export leaves after its Shape math.
    concat = helper.make_node("Concat", ["begins", "ends"], ["pads"], name="concat", axis=0)
    pad = helper.make_node("Pad", ["x", "pads"], ["p"], name="pad")
    inits = [_ints("begins", [0, 0, 1, 1]), _ints("ends", [0, 0, 1, 1])]
    graph = _graph(_conv(), pad=(pad, inits), pre=[concat], extra_inits=[W])
    result = FoldPadPass().run(graph)
    assert not result.changed and result.not_applied == ["pad: pads are not constant"]
    assert FoldConstantsPass().run(graph).changed
    _fold(graph, [1, 1, 1, 1])


def test_same_conv_folds_after_make_pads_explicit():
    graph = _graph(_conv(auto_pad="SAME_UPPER"), extra_inits=[W])
    assert FoldPadPass().run(graph).not_applied == ["pad: Conv uses auto_pad=SAME_UPPER (make-pads-explicit runs first)"]
    assert MakePadsExplicitPass().run(graph).changed
    _fold(graph, [2, 3, 3, 2])


# --- must not fire ------------------------------------------------------------------------


def _refusal(graph: Graph) -> str:
    before = graph.to_bytes()
    result = FoldPadPass().run(graph)
    assert not result.changed and graph.to_bytes() == before
    assert len(result.not_applied) == 1, result.not_applied
    return result.not_applied[0]


@pytest.mark.parametrize("pad_args,reason", [
    ({"mode": "reflect"}, "mode is reflect; conv and pool padding is constant"),
    ({"value": 1.0}, "pad value is 1.0, Conv pads with 0"),
    ({"pads": (0, 1, 1, 1, 0, 0, 1, 1)}, "it pads the batch or channel axis"),
    ({"pads": (0, 0, -1, 1, 0, 0, 1, 1)}, "negative pads crop the input"),
])
def test_pads_conv_cannot_express_are_refused(pad_args, reason):
    assert _refusal(_graph(_conv(), pad_args, extra_inits=[W])) == f"pad: {reason}"


def test_pad_output_with_other_readers_is_refused():
    graph = _graph(_conv(), extra_inits=[W], outputs=(("y", None), ("p", None)))
    assert _refusal(graph) == "pad: Pad output is a graph output"
    relu = helper.make_node("Relu", ["p"], ["r"], name="relu")
    graph = build_graph([*_pad()[:1], _conv(), relu], [("x", list(X.shape))], [("y", None), ("r", None)],
                        [*_pad()[1], W])
    assert _refusal(graph) == "pad: Pad output has other readers: relu (Relu)"


def test_zero_pad_into_max_pool_of_signed_input_is_refused():
    pool = helper.make_node("MaxPool", ["p"], ["y"], name="pool", kernel_shape=[3, 3])
    assert _refusal(_graph(pool)).startswith("pad: MaxPool pads with -inf; a Pad with 0.0 folds only when")


def test_average_pool_that_does_not_count_its_own_pads_is_refused():
    pool = helper.make_node("AveragePool", ["p"], ["y"], name="pool", kernel_shape=[5, 5], pads=[1, 1, 1, 1])
    assert _refusal(_graph(pool)) == "pad: AveragePool has its own pads and does not count them (count_include_pad=0)"


def test_pool_pads_reaching_the_kernel_size_are_refused():
    pool = helper.make_node("AveragePool", ["p"], ["y"], name="pool", kernel_shape=[2, 2])
    assert _refusal(_graph(pool)) == "pad: combined pads [1, 2, 2, 1] are not smaller than the kernel [2, 2]"
