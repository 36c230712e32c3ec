"""FoldAffineIntoConvPass: Mul/Add/Sub/Div by per-channel constants folded into Conv/ConvTranspose/Gemm."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgekiln.compiler.graph import Graph
from edgekiln.passes.fold_affine_into_conv import FoldAffineIntoConvPass
from tests.conftest import max_relative_error, run_ort
from tests.support.graphs import build_graph

RNG = np.random.default_rng(11)
C = 6  # output channels in every model below


def _array(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _conv(op: str = "Conv", bias: bool = True) -> tuple[list, list, dict[str, np.ndarray]]:
    """(nodes, initializers, feeds) of x -> `op` -> c, with C output channels."""
    if op == "Conv":
        w, feeds, attrs = _array(C, 4, 3, 3), {"x": _array(1, 4, 8, 8)}, {"pads": [1, 1, 1, 1]}
    elif op == "ConvTranspose":  # grouped: W [Cin, Cout/group, k, k]
        w, feeds, attrs = _array(4, C // 2, 3, 3), {"x": _array(1, 4, 5, 5)}, {"group": 2, "strides": [2, 2]}
    else:  # Gemm with transB=1: W [N, K]
        w, feeds, attrs = _array(C, 5), {"x": _array(3, 5)}, {"transB": 1, "beta": 0.5}
    inits = [numpy_helper.from_array(w, "W")] + ([numpy_helper.from_array(_array(C), "B")] if bias else [])
    return [helper.make_node(op, ["x", "W"] + (["B"] if bias else []), ["c"], name="conv", **attrs)], inits, feeds


def _graph(op: str, tail: list, consts: dict[str, np.ndarray], bias: bool = True, outputs=(("y", None),)):
    nodes, inits, feeds = _conv(op, bias)
    inits += [numpy_helper.from_array(v, k) for k, v in consts.items()]
    shape = list(feeds["x"].shape)
    return build_graph(nodes + tail, [("x", shape)], outputs, inits), feeds


def _fold(graph: Graph, feeds, applied: int) -> list[str]:
    original = graph.to_proto()
    result = FoldAffineIntoConvPass().run(graph)
    assert len(result.applied) == applied, result.not_applied
    assert result.changed == bool(applied)
    onnx.checker.check_model(graph.to_proto())
    for want, got in zip(run_ort(original, feeds), run_ort(graph.to_proto(), feeds), strict=True):
        assert got.shape == want.shape
        assert max_relative_error(want, got) <= 1e-5
    snapshot = graph.to_bytes()
    again = FoldAffineIntoConvPass().run(graph)
    assert not again.changed and graph.to_bytes() == snapshot
    return result.applied


def _node(op: str, inputs: list[str], output: str = "y") -> onnx.NodeProto:
    return helper.make_node(op, inputs, [output], name=op.lower())


POSITIVE = RNG.uniform(0.5, 2.0, C).astype(np.float32)


@pytest.mark.parametrize("producer", ["Conv", "ConvTranspose"])
@pytest.mark.parametrize("op,inputs,const", [
    ("Mul", ["c", "k"], POSITIVE.reshape(C, 1, 1)),
    ("Mul", ["k", "c"], POSITIVE.reshape(1, C, 1, 1)),
    ("Mul", ["c", "k"], np.array([0.25], np.float32)),
    ("Div", ["c", "k"], POSITIVE.reshape(C, 1, 1)),
    ("Add", ["c", "k"], _array(1, C, 1, 1)),
    ("Add", ["k", "c"], np.array(1.5, np.float32)),
    ("Sub", ["c", "k"], _array(C, 1, 1)),
    ("Sub", ["k", "c"], _array(C, 1, 1)),
])
@pytest.mark.parametrize("bias", [True, False])
def test_per_channel_constant_folds_into_conv(producer, op, inputs, const, bias):
    graph, feeds = _graph(producer, [_node(op, inputs)], {"k": const}, bias)
    assert _fold(graph, feeds, 1) == [f"folded {op.lower()} ({op}) into conv ({producer})"]
    assert graph.count_ops() == {producer: 1}
    assert [v.name for v in graph.outputs] == ["y"]
    assert "k" not in graph.main.initializers


def test_a_chain_folds_in_one_run():
    tail = [_node("Mul", ["c", "s"], "m"), _node("Add", ["m", "t"], "a"), _node("Div", ["a", "d"])]
    consts = {"s": POSITIVE.reshape(C, 1, 1), "t": _array(C, 1, 1), "d": np.array([3.0], np.float32)}
    graph, feeds = _graph("Conv", tail, consts)
    assert len(_fold(graph, feeds, 3)) == 3
    assert graph.count_ops() == {"Conv": 1}


@pytest.mark.parametrize("op,const", [("Mul", POSITIVE), ("Add", _array(1, C)), ("Sub", _array(C))])
def test_gemm_columns(op, const):
    graph, feeds = _graph("Gemm", [_node(op, ["c", "k"])], {"k": const})
    _fold(graph, feeds, 1)
    assert graph.count_ops() == {"Gemm": 1}


def test_gemm_without_bias_gets_one():
    graph, feeds = _graph("Gemm", [_node("Add", ["c", "k"])], {"k": _array(C)}, bias=False)
    _fold(graph, feeds, 1)
    assert len(graph.node("conv").inputs) == 3


def test_matmul_takes_a_scale_but_leaves_its_bias_add_to_fuse_matmul_add():
    inits = [numpy_helper.from_array(_array(5, C), "W"), numpy_helper.from_array(POSITIVE, "s"),
             numpy_helper.from_array(_array(C), "t")]
    # x -> MatMul -> Mul(s) -> Add(t) -> y: the Mul folds; the Add is fuse-matmul-add's.
    nodes = [helper.make_node("MatMul", ["x", "W"], ["c"], name="matmul"),
             helper.make_node("Mul", ["c", "s"], ["m"], name="mul"),
             helper.make_node("Add", ["m", "t"], ["y"], name="add")]
    graph = build_graph(nodes, [("x", [2, 3, 5])], [("y", None)], inits)
    assert _fold(graph, {"x": _array(2, 3, 5)}, 1) == ["folded mul (Mul) into matmul (MatMul)"]
    assert graph.count_ops() == {"Add": 1, "MatMul": 1}


# --- must not fire ------------------------------------------------------------------------


def _refusal(graph: Graph) -> str:
    before = graph.to_bytes()
    result = FoldAffineIntoConvPass().run(graph)
    assert not result.changed and graph.to_bytes() == before
    assert len(result.not_applied) == 1, result.not_applied
    return result.not_applied[0]


def test_spatially_varying_constant_is_refused():
    graph, _ = _graph("Conv", [_node("Mul", ["c", "k"])], {"k": _array(1, 1, 8, 8)})
    assert _refusal(graph) == "mul: the constant [1, 1, 8, 8] varies along axis 2, not only along the output-channel axis 1"


def test_constant_that_grows_the_output_is_refused():
    graph, _ = _graph("Conv", [_node("Add", ["c", "k"])], {"k": _array(2, C, 1, 1)})
    assert "broadcasts the output [1, 6, 8, 8] to a larger shape" in _refusal(graph)


def test_non_constant_operand_is_refused():
    nodes, inits, _ = _conv()
    graph = build_graph(nodes + [_node("Mul", ["c", "k"])], [("x", [1, 4, 8, 8]), ("k", [C, 1, 1])],
                        [("y", None)], inits)
    assert _refusal(graph) == "mul: k is not a constant initializer"


def test_zero_divisor_is_refused():
    divisor = POSITIVE.reshape(C, 1, 1).copy()
    divisor[2] = 0
    graph, _ = _graph("Conv", [_node("Div", ["c", "k"])], {"k": divisor})
    assert _refusal(graph) == "div: the divisor has a zero"


def test_other_readers_are_refused():
    graph, _ = _graph("Conv", [_node("Mul", ["c", "k"]), _node("Relu", ["c"], "r")], {"k": POSITIVE.reshape(C, 1, 1)},
                      outputs=(("y", None), ("r", None)))
    assert _refusal(graph) == "mul: Conv output has other readers: relu (Relu)"


def test_shared_weights_are_refused():
    twin = helper.make_node("Conv", ["x", "W"], ["c2"], name="twin", pads=[1, 1, 1, 1])
    graph, _ = _graph("Conv", [_node("Mul", ["c", "k"]), twin], {"k": POSITIVE.reshape(C, 1, 1)},
                      outputs=(("y", None), ("c2", None)))
    assert _refusal(graph) == "mul: weights are shared with node twin (Conv)"


def test_shared_bias_is_copied_not_changed():
    twin = helper.make_node("Conv", ["x", "W2", "B"], ["c2"], name="twin", pads=[1, 1, 1, 1])
    graph, feeds = _graph("Conv", [_node("Add", ["c", "k"]), twin], {"k": _array(C, 1, 1), "W2": _array(C, 4, 3, 3)},
                          outputs=(("y", None), ("c2", None)))
    bias_before = Graph.constant(graph.main.initializers["B"]).copy()
    _fold(graph, feeds, 1)
    assert np.array_equal(Graph.constant(graph.main.initializers["B"]), bias_before)
    assert graph.node("conv").inputs[2].name != "B"
