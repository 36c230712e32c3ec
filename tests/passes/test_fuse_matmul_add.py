"""FuseMatMulAddPass: MatMul(A, B) + bias -> Gemm for 2-D A."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgekiln.compiler.graph import Graph
from edgekiln.passes.fuse_matmul_add import FuseMatMulAddPass
from tests.conftest import max_relative_error, run_ort
from tests.support.graphs import build_graph

RNG = np.random.default_rng(5)
K, N = 5, 4


def _array(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _model(bias: np.ndarray | None, a_shape=(3, K), bias_first: bool = False, tail=(), outputs=(("y", None),),
           b_input: bool = False) -> Graph:
    inits = [] if b_input else [numpy_helper.from_array(_array(K, N), "B")]
    if bias is not None:
        inits.append(numpy_helper.from_array(bias, "bias"))
    add_inputs = ["bias", "m"] if bias_first else ["m", "bias"]
    nodes = [helper.make_node("MatMul", ["a", "B"], ["m"], name="matmul"),
             helper.make_node("Add", add_inputs, ["y"], name="add"), *tail]
    inputs = [("a", list(a_shape))] + ([("B", [K, N])] if b_input else [])
    return build_graph(nodes, inputs, outputs, inits)


@pytest.mark.parametrize("bias_shape", [(N,), (1, N), (1,), ()])
@pytest.mark.parametrize("bias_first", [False, True])
def test_matmul_add_becomes_gemm(bias_shape, bias_first):
    graph = _model(_array(*bias_shape), bias_first=bias_first)
    original = graph.to_proto()
    result = FuseMatMulAddPass().run(graph)
    assert result.changed and result.applied == ["fused matmul (MatMul) and add (Add) into Gemm matmul"]
    assert graph.count_ops() == {"Gemm": 1}
    gemm = graph.node("matmul")
    assert Graph.constant(gemm.inputs[2]).shape == (N,)
    assert [v.name for v in graph.outputs] == ["y"]
    onnx.checker.check_model(graph.to_proto())
    feeds = {"a": _array(3, K)}
    assert max_relative_error(run_ort(original, feeds)[0], run_ort(graph.to_proto(), feeds)[0]) <= 1e-5
    snapshot = graph.to_bytes()
    assert not FuseMatMulAddPass().run(graph).changed and graph.to_bytes() == snapshot


def test_unused_bias_initializer_is_dropped_when_reshaped():
    graph = _model(_array(1, N))
    FuseMatMulAddPass().run(graph)
    assert "bias" not in graph.main.initializers


def _refusal(graph: Graph) -> str:
    before = graph.to_bytes()
    result = FuseMatMulAddPass().run(graph)
    assert not result.changed and graph.to_bytes() == before
    assert len(result.not_applied) == 1, result.not_applied
    return result.not_applied[0]


def test_3d_a_is_refused():
    assert _refusal(_model(_array(N), a_shape=(2, 3, K))) == "matmul: A is 3-D; Gemm is 2-D only"


def test_non_constant_b_is_refused():
    assert _refusal(_model(_array(N), b_input=True)) == "matmul: B is not a constant initializer"


def test_per_row_bias_is_refused():
    assert _refusal(_model(_array(3, 1))) == "matmul: bias [3, 1] is not a per-column vector of the [3, 4] output"


def test_other_readers_are_refused():
    graph = _model(_array(N), tail=[helper.make_node("Relu", ["m"], ["r"], name="relu")],
                   outputs=(("y", None), ("r", None)))
    assert _refusal(graph) == "matmul: MatMul output has other readers: relu (Relu)"


def test_non_constant_bias_is_refused():
    nodes = [helper.make_node("MatMul", ["a", "B"], ["m"], name="matmul"),
             helper.make_node("Add", ["m", "c"], ["y"], name="add")]
    graph = build_graph(nodes, [("a", [3, K]), ("c", [N])], [("y", None)], [numpy_helper.from_array(_array(K, N), "B")])
    assert _refusal(graph) == "matmul: bias is not a constant initializer"
