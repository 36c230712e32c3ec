"""EliminateNoOpsPass: each case fires, keeps ORT outputs, is idempotent, and refuses with a reason."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekiln.compiler.frontend import load_model
from edgekiln.compiler.graph import Graph
from edgekiln.passes.eliminate_no_ops import EliminateNoOpsPass
from tests.conftest import max_relative_error, run_ort
from tests.support.graphs import build_graph
from tests.zoo import all_models, input_shapes, model_path, sample_input

SHAPE = [2, 3, 4]
X = np.random.default_rng(3).standard_normal(SHAPE).astype(np.float32)


def _const(name: str, values, dtype=np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype), name)


def _ints(name: str, values) -> onnx.TensorProto:
    return _const(name, values, np.int64)


def _noop(op: str, inputs: list[str], **attrs) -> list[onnx.NodeProto]:
    return [helper.make_node(op, inputs, ["b"], name="noop", **attrs)]


def _sandwich(middle: list[onnx.NodeProto], initializers=(), out_shape=SHAPE) -> Graph:
    """x -> Relu -> a -> <middle: a -> b> -> Sigmoid -> y, so the no-op touches no graph boundary."""
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"), *middle,
             helper.make_node("Sigmoid", ["b"], ["y"], name="sigmoid")]
    return build_graph(nodes, [("x", SHAPE)], [("y", out_shape)], initializers)


def _run_and_compare(graph: Graph):
    """Run the pass; check ORT outputs against the graph before it, and that a rerun is a no-op."""
    original = graph.to_proto()
    result = EliminateNoOpsPass().run(graph)
    onnx.checker.check_model(graph.to_proto(), full_check=True)
    for want, got in zip(run_ort(original, {"x": X}), run_ort(graph.to_proto(), {"x": X})):
        assert want.shape == got.shape
        assert max_relative_error(want, got) <= 1e-5
    assert [v.name for v in graph.outputs] == [o.name for o in original.graph.output]
    frozen = graph.to_bytes()
    again = EliminateNoOpsPass().run(graph)
    assert not again.changed and not again.applied and graph.to_bytes() == frozen
    return result


NO_OPS = {
    # Case 1
    "reshape-same-shape": (_noop("Reshape", ["a", "s"]), [_ints("s", SHAPE)]),
    "reshape-minus-one": (_noop("Reshape", ["a", "s"]), [_ints("s", [2, -1, 4])]),
    "squeeze-nothing": (_noop("Squeeze", ["a"]), []),
    "expand-same-shape": (_noop("Expand", ["a", "s"]), [_ints("s", [3, 1])]),
    # Case 2
    "transpose-identity": (_noop("Transpose", ["a"], perm=[0, 1, 2]), []),
    # Case 5
    "mul-by-one": (_noop("Mul", ["a", "one"]), [_const("one", 1.0)]),
    "mul-one-first": (_noop("Mul", ["one", "a"]), [_const("one", np.ones((3, 1)))]),
    "div-by-one": (_noop("Div", ["a", "one"]), [_const("one", np.ones(4))]),
    # Case 6
    "add-zero": (_noop("Add", ["a", "zero"]), [_const("zero", np.zeros(SHAPE))]),
    "add-zero-first": (_noop("Add", ["zero", "a"]), [_const("zero", 0.0)]),
    "sub-zero": (_noop("Sub", ["a", "zero"]), [_const("zero", [0.0])]),
    # Case 7
    "pad-zero": (_noop("Pad", ["a", "p"], mode="reflect"), [_ints("p", [0] * 6)]),
    # Case 8
    "slice-full": (_noop("Slice", ["a", "s", "e", "ax", "st"]),
                   [_ints("s", [0, 0]), _ints("e", [2**62, 4]), _ints("ax", [1, -1]), _ints("st", [1, 1])]),
    # Case 9
    "cast-same": (_noop("Cast", ["a"], to=TensorProto.FLOAT), []),
    "castlike-same": (_noop("CastLike", ["a", "like"]), [_const("like", [0.0])]),
    # Case 10
    "concat-one": (_noop("Concat", ["a"], axis=1), []),
    "sum-one": (_noop("Sum", ["a"]), []),
    "max-one": (_noop("Max", ["a"]), []),
    "min-one": (_noop("Min", ["a"]), []),
    "mean-one": (_noop("Mean", ["a"]), []),
}


@pytest.mark.parametrize("case", NO_OPS)
def test_no_op_is_removed(case):
    middle, inits = NO_OPS[case]
    graph = _sandwich(middle, inits)
    result = _run_and_compare(graph)
    assert result.changed and len(result.applied) == 1
    assert result.applied[0] == f"removed noop ({middle[0].op_type}): it computes the identity"
    assert graph.count_ops() == {"Relu": 1, "Sigmoid": 1}


def test_flatten_and_unit_axis_transpose_of_matching_shapes():
    # Case 1: Flatten of a [6, 4] at axis 1.  Case 2: perm (0, 2, 1, 3) on [6, 1, 1, 4] swaps two
    # unit axes, so both the shape and the order of the elements stay.
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("Reshape", ["a", "s"], ["r"], name="to_2d"),
             helper.make_node("Flatten", ["r"], ["f"], name="flatten", axis=1),
             helper.make_node("Reshape", ["f", "s3"], ["u"], name="to_unit"),
             helper.make_node("Transpose", ["u"], ["t"], name="swap_units", perm=[0, 2, 1, 3]),
             helper.make_node("Reshape", ["t", "back"], ["y"], name="back")]
    inits = [_ints("s", [6, 4]), _ints("s3", [6, 1, 1, 4]), _ints("back", SHAPE)]
    graph = build_graph(nodes, [("x", SHAPE)], [("y", SHAPE)], inits)
    result = _run_and_compare(graph)
    assert len(result.applied) == 2
    assert graph.count_ops() == {"Relu": 1, "Reshape": 3}


def test_transposes_that_cancel_are_both_removed():
    # Case 3: perm (0, 2, 1) then (0, 2, 1) is the identity.
    middle = [helper.make_node("Transpose", ["a"], ["t"], name="t1", perm=[0, 2, 1]),
              helper.make_node("Transpose", ["t"], ["b"], name="t2", perm=[0, 2, 1])]
    graph = _sandwich(middle)
    result = _run_and_compare(graph)
    assert result.applied == ["removed t1 (Transpose) and t2 (Transpose): their perms cancel"]
    assert graph.count_ops() == {"Relu": 1, "Sigmoid": 1}


def test_transposes_that_compose_become_one():
    # Case 4: p = (1, 2, 0) then q = (1, 0, 2) is r[i] = p[q[i]] = (2, 1, 0).
    middle = [helper.make_node("Transpose", ["a"], ["t"], name="t1", perm=[1, 2, 0]),
              helper.make_node("Transpose", ["t"], ["b"], name="t2", perm=[1, 0, 2])]
    graph = _sandwich(middle, out_shape=[4, 3, 2])
    result = _run_and_compare(graph)
    assert result.applied == ["merged t1 (Transpose) into t2 (Transpose) (perm [2, 1, 0])"]
    assert graph.count_ops() == {"Relu": 1, "Sigmoid": 1, "Transpose": 1}


def test_chain_of_three_transposes_collapses_in_one_run():
    middle = [helper.make_node("Transpose", ["a"], ["t1"], name="t1", perm=[1, 2, 0]),
              helper.make_node("Transpose", ["t1"], ["t2"], name="t2", perm=[1, 2, 0]),
              helper.make_node("Transpose", ["t2"], ["b"], name="t3", perm=[1, 2, 0])]
    graph = _sandwich(middle)
    result = _run_and_compare(graph)
    assert len(result.applied) == 2
    assert graph.count_ops() == {"Relu": 1, "Sigmoid": 1}


def test_no_op_producing_a_graph_output_keeps_the_output_name():
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("Mul", ["a", "one"], ["y"], name="times_one")]
    graph = build_graph(nodes, [("x", SHAPE)], [("y", SHAPE)], [_const("one", 1.0)])
    result = _run_and_compare(graph)
    assert result.changed and graph.count_ops() == {"Relu": 1}
    assert graph.outputs[0].name == "y" and graph.outputs[0].producer().name == "relu"


REFUSED = {
    "not-exactly-one": (_noop("Mul", ["a", "c"]), [_const("c", 0.99999994)], SHAPE,
                        "the constant is 0.99999994, not exactly 1"),
    "ones-broadcast-up": (_noop("Mul", ["a", "c"]), [_const("c", np.ones([2, 1, 1, 1]))],
                          [2, 2, 3, 4], "the constant broadcasts the result up from [2, 3, 4] to [2, 2, 3, 4]"),
    "zeros-broadcast-up": (_noop("Add", ["zero", "a"]), [_const("zero", np.zeros([5, 1, 1, 1]))],
                           [5, 2, 3, 4], "the constant broadcasts the result up from [2, 3, 4] to [5, 2, 3, 4]"),
    "slice-reversed": (_noop("Slice", ["a", "s", "e", "ax", "st"]),
                       [_ints("s", [-1]), _ints("e", [-(2**62)]), _ints("ax", [1]),
                        _ints("st", [-1])], SHAPE,
                       "its steps are not all constant 1 (it may reverse an axis)"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_refused_with_a_reason(case):
    middle, inits, out_shape, reason = REFUSED[case]
    graph = _sandwich(middle, inits, out_shape)
    result = EliminateNoOpsPass().run(graph)
    assert not result.changed and not result.applied
    assert result.not_applied == [f"noop: {reason}"]


def test_transpose_pair_whose_inner_is_read_elsewhere_is_not_merged():
    middle = [helper.make_node("Transpose", ["a"], ["t"], name="t1", perm=[1, 2, 0]),
              helper.make_node("Transpose", ["t"], ["u"], name="t2", perm=[1, 0, 2]),
              helper.make_node("ReduceSum", ["t", "axes"], ["v"], name="other_reader", keepdims=0),
              helper.make_node("Mul", ["u", "v"], ["b"], name="mix")]
    graph = _sandwich(middle, [_ints("axes", [0, 1, 2])], out_shape=[4, 3, 2])
    result = EliminateNoOpsPass().run(graph)
    assert not result.changed
    assert result.not_applied == ["t2: the inner t1 (Transpose) is read elsewhere, so merging saves nothing"]


def test_cancelling_pair_with_a_shared_inner_removes_only_the_outer():
    middle = [helper.make_node("Transpose", ["a"], ["t"], name="t1", perm=[0, 2, 1]),
              helper.make_node("Transpose", ["t"], ["u"], name="t2", perm=[0, 2, 1]),
              helper.make_node("ReduceSum", ["t", "axes"], ["v"], name="other_reader", keepdims=0),
              helper.make_node("Mul", ["u", "v"], ["b"], name="mix")]
    graph = _sandwich(middle, [_ints("axes", [0, 1, 2])])
    result = _run_and_compare(graph)
    assert len(result.applied) == 1
    assert graph.count_ops()["Transpose"] == 1


def test_identity_transpose_after_a_shared_transpose_is_removed_on_its_own():
    # Case 2 wins over Case 4: the inner Transpose is read elsewhere, the outer one is a no-op anyway.
    middle = [helper.make_node("Transpose", ["a"], ["t"], name="t1", perm=[0, 2, 1]),
              helper.make_node("Transpose", ["t"], ["u"], name="t2", perm=[0, 1, 2]),
              helper.make_node("Add", ["t", "u"], ["b"], name="mix")]
    graph = _sandwich(middle, out_shape=[2, 4, 3])
    result = _run_and_compare(graph)
    assert result.applied == ["removed t2 (Transpose): it computes the identity"]
    assert graph.count_ops() == {"Add": 1, "Relu": 1, "Sigmoid": 1, "Transpose": 1}


def test_no_op_between_graph_input_and_output_is_kept():
    nodes = [helper.make_node("Reshape", ["x", "s"], ["y"], name="noop")]
    graph = build_graph(nodes, [("x", SHAPE)], [("y", SHAPE)], [_ints("s", SHAPE)])
    result = EliminateNoOpsPass().run(graph)
    assert not result.changed
    assert result.not_applied == ["noop: it joins a graph input or output to a graph output"]


def test_real_work_is_not_a_candidate():
    # Shape changes, a real scale, Sub(0, x), Div(1, x), a non-zero pad, a widening Cast: nothing to say.
    middle = [helper.make_node("Reshape", ["a", "s"], ["r"], name="reshape"),
              helper.make_node("Reshape", ["r", "back"], ["r2"], name="reshape_back"),
              helper.make_node("Mul", ["r2", "two"], ["m"], name="scale"),
              helper.make_node("Sub", ["zero", "m"], ["n"], name="negate"),
              helper.make_node("Div", ["one", "n"], ["d"], name="reciprocal"),
              helper.make_node("Pad", ["d", "p"], ["pd"], name="pad"),
              helper.make_node("Cast", ["pd"], ["c"], name="to_double", to=TensorProto.DOUBLE),
              helper.make_node("Cast", ["c"], ["b"], name="to_float", to=TensorProto.FLOAT)]
    inits = [_ints("s", [6, 4]), _ints("back", SHAPE), _const("two", 2.0),
             _const("zero", 0.0), _const("one", 1.0), _ints("p", [0, 0, 1, 0, 0, 1])]
    graph = _sandwich(middle, inits, out_shape=[2, 3, 6])
    result = EliminateNoOpsPass().run(graph)
    assert not result.changed and not result.not_applied


@pytest.mark.slow
@pytest.mark.parametrize("name", all_models())
def test_models_keep_their_outputs(name):
    path = model_path(name)
    graph = load_model(path, input_shapes(name))
    before = len(graph.main)
    result = EliminateNoOpsPass().run(graph)
    onnx.checker.check_model(graph.to_proto())
    feeds = sample_input(name)
    for want, got in zip(run_ort(onnx.load(path), feeds), run_ort(graph.to_proto(), feeds)):
        assert max_relative_error(want, got) <= 1e-5
    assert len(graph.main) == before - len(result.applied)
    # The frontend already cleaned the torch exports; PP-OCR keeps a few no-ops (see the report).
    expected = {"ppocr_rec": 7, "ppocr_cls": 1}.get(name, 0)
    assert len(result.applied) == expected
    assert not EliminateNoOpsPass().run(graph).changed
