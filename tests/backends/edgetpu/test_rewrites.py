"""Edge TPU rewrites: fire count, structure, onnxruntime numerics, idempotence, where they must not fire;
static batch 1; the --cpu-tail split (TPU head + CPU tail == original in onnxruntime)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekiln.backends.edgetpu.rewrites_cpu_tail import CpuTailError, split_cpu_tail
from edgekiln.compiler.explain import ExplainTrace
from edgekiln.compiler.graph import Graph
from edgekiln.passes.divide_by_constant_to_mul import DivideByConstantToMulPass
from edgekiln.passes.fold_transpose_into_fully_connected import (
    FoldTransposeIntoFullyConnectedPass,
)
from edgekiln.passes.leaky_relu_to_prelu import LeakyReluToPReluPass
from edgekiln.passes.pin_batch_to_one import batch_one_shapes
from tests.conftest import max_relative_error, run_ort
from tests.support.graphs import build_graph

RNG = np.random.default_rng(7)
SHAPE = [1, 4, 5, 6]
X = (RNG.standard_normal(SHAPE) * 3).astype(np.float32)


def const(name, array):
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def node(op, inputs, out, **attrs):
    return helper.make_node(op, inputs, [out], name=out, **attrs)


def run_pass(pass_, graph, feeds, tolerance=0.0):
    """Apply, check numerics against onnxruntime, and check a second run is a no-op."""
    original = graph.to_proto()
    result = pass_.run(graph)
    onnx.checker.check_model(graph.to_proto())
    for want, got in zip(run_ort(original, feeds), run_ort(graph.to_proto(), feeds)):
        assert want.shape == got.shape
        assert max_relative_error(want, got) <= tolerance
    snapshot = graph.to_bytes()
    again = type(pass_)().run(graph)
    assert not again.changed and not again.applied and graph.to_bytes() == snapshot
    return result


# -- LeakyRelu -> PRelu ---------------------------------------------------------------------

def test_leaky_relu_becomes_a_per_channel_prelu_exactly():
    graph = build_graph([node("LeakyRelu", ["x"], "y", alpha=0.125)], [("x", SHAPE)], [("y", SHAPE)])
    result = run_pass(LeakyReluToPReluPass(), graph, {"x": X})
    assert result.changed and len(result.applied) == 1
    assert graph.count_ops() == {"PRelu": 1}
    slope = Graph.constant(graph.nodes[0].inputs[1])
    assert slope.shape == (4, 1, 1) and np.all(slope == np.float32(0.125))
    assert [v.name for v in graph.outputs] == ["y"]


def test_leaky_relu_on_a_2d_tensor_gets_a_scalar_slope():
    graph = build_graph([node("LeakyRelu", ["x"], "h"), node("Relu", ["h"], "y")], [("x", [3, 7])], [("y", [3, 7])])
    x = RNG.standard_normal((3, 7)).astype(np.float32)
    run_pass(LeakyReluToPReluPass(), graph, {"x": x})
    assert Graph.constant(graph.nodes[0].inputs[1]).shape == (1,)  # default alpha 0.01


def test_leaky_relu_in_another_domain_is_left_with_the_reason():
    graph = build_graph([helper.make_node("LeakyRelu", ["x"], ["y"], name="y", domain="custom.domain")],
                        [("x", SHAPE)], [("y", SHAPE)], extra_opsets=[("custom.domain", 1)])
    result = LeakyReluToPReluPass().run(graph)
    assert not result.changed and "not the default one" in result.not_applied[0]


# -- Div by a constant -> Mul ---------------------------------------------------------------

def test_division_by_a_constant_becomes_a_multiplication():
    divisor = np.array([2.0, 3.0, 0.5, 7.0], np.float32).reshape(4, 1, 1)
    graph = build_graph([node("Div", ["x", "d"], "y")], [("x", SHAPE)], [("y", SHAPE)], [const("d", divisor)])
    # x·(1/c) differs from x/c by at most one rounding of 1/c and one of the product.
    result = run_pass(DivideByConstantToMulPass(), graph, {"x": X}, tolerance=2.5e-7)
    assert len(result.applied) == 1 and graph.count_ops() == {"Mul": 1}
    assert np.allclose(Graph.constant(graph.nodes[0].inputs[1]), 1 / divisor)


@pytest.mark.parametrize("divisor, reason", [(np.float32(0.0), "zero"), (None, "not a constant")])
def test_division_that_must_not_be_rewritten(divisor, reason):
    if divisor is None:
        graph = build_graph([node("Div", ["x", "z"], "y")], [("x", SHAPE), ("z", SHAPE)], [("y", SHAPE)])
    else:
        graph = build_graph([node("Div", ["x", "d"], "y")], [("x", SHAPE)], [("y", SHAPE)], [const("d", divisor)])
    result = DivideByConstantToMulPass().run(graph)
    assert not result.changed and reason in result.not_applied[0]


# -- Transpose -> Flatten -> dense --------------------------------------------------------------

@pytest.mark.parametrize("flatten", ["Flatten", "Reshape"])
@pytest.mark.parametrize("dense", ["MatMul", "Gemm", "GemmTransB"])
def test_nhwc_flatten_transpose_folds_into_the_dense_weights(flatten, dense):
    features = 4 * 5 * 6
    weight = RNG.standard_normal((features, 10)).astype(np.float32)
    nodes = [node("Transpose", ["x"], "t", perm=[0, 2, 3, 1])]
    inits = []
    if flatten == "Flatten":
        nodes.append(node("Flatten", ["t"], "f", axis=1))
    else:
        nodes.append(node("Reshape", ["t", "shape"], "f"))
        inits.append(numpy_helper.from_array(np.array([1, -1], np.int64), "shape"))
    if dense == "MatMul":
        nodes.append(node("MatMul", ["f", "w"], "y"))
        inits.append(const("w", weight))
    else:
        trans_b = int(dense == "GemmTransB")
        nodes.append(node("Gemm", ["f", "w", "b"], "y", transB=trans_b))
        inits += [const("w", weight.T if trans_b else weight), const("b", RNG.standard_normal(10))]
    graph = build_graph(nodes, [("x", SHAPE)], [("y", [1, 10])], inits)
    result = run_pass(FoldTransposeIntoFullyConnectedPass(), graph, {"x": X}, tolerance=1e-5)
    assert len(result.applied) == 1 and "Transpose" not in graph.count_ops()


def test_transpose_that_moves_the_batch_axis_is_not_folded():
    nodes = [node("Transpose", ["x"], "t", perm=[1, 0, 2, 3]), node("Flatten", ["t"], "f", axis=1),
             node("MatMul", ["f", "w"], "y")]
    graph = build_graph(nodes, [("x", SHAPE)], [("y", [4, 3])], [const("w", RNG.standard_normal((30, 3)))])
    result = FoldTransposeIntoFullyConnectedPass().run(graph)
    assert not result.changed and "moves the batch axis" in result.not_applied[0]


# -- static batch 1 -------------------------------------------------------------------------------

def test_dynamic_batch_is_pinned_to_one_and_user_shapes_win():
    graph = helper.make_graph(
        [node("Relu", ["x"], "y"), node("Relu", ["z"], "w")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 3, "H", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, None)])
    model = helper.make_model(graph)
    trace = ExplainTrace()
    assert batch_one_shapes(model, {}, trace) == {"x": (1, 3, 8, 8)}  # z has another dynamic dim: the frontend names it
    assert "pinned to 1" in trace.notes[0]
    assert batch_one_shapes(model, {"x": (2, 3, 8, 8)}) == {"x": (2, 3, 8, 8)}


# -- --cpu-tail ---------------------------------------------------------------------------------

def _model_with_unsupported_tail():
    """conv -> relu -> [Exp -> ReduceSum -> Div] (softmax spelled out, Exp unsupported); a second output
    taken from the conv part; the tail also reads the model input."""
    w = RNG.standard_normal((4, 4, 3, 3)).astype(np.float32) * 0.3
    nodes = [node("Conv", ["x", "w"], "c", pads=[1, 1, 1, 1]), node("Relu", ["c"], "features"),
             node("Exp", ["features"], "e"), node("ReduceSum", ["e", "axes"], "s", keepdims=1),
             node("Div", ["e", "s"], "probs"), node("Add", ["probs", "x"], "y")]
    inits = [const("w", w), numpy_helper.from_array(np.array([1], np.int64), "axes")]
    return build_graph(nodes, [("x", SHAPE)], [("y", SHAPE), ("features", SHAPE)], inits)


def test_cpu_tail_head_plus_tail_reproduces_the_model():
    graph = _model_with_unsupported_tail()
    original = graph.to_proto()
    split = split_cpu_tail(graph, "edgetpu")
    assert split.tail_nodes == ["e", "s", "probs", "y"] and split.cut == ["features"]
    assert split.head.count_ops() == {"Conv": 1, "Relu": 1}
    assert "Exp" in split.describe()
    head_out = dict(zip([o.name for o in split.head.outputs], run_ort(split.head.to_proto(), {"x": X})))
    assert set(head_out) == {"features"}
    tail_inputs = [i.name for i in split.tail.graph.input]
    assert sorted(tail_inputs) == ["features", "x"]
    (tail_y,) = run_ort(split.tail, {"x": X, "features": head_out["features"]})
    want_y, want_features = run_ort(original, {"x": X})
    assert np.array_equal(tail_y, want_y) and np.array_equal(head_out["features"], want_features)


def test_cpu_tail_of_a_fully_supported_model_is_nothing():
    graph = build_graph([node("Relu", ["x"], "y")], [("x", SHAPE)], [("y", SHAPE)])
    split = split_cpu_tail(graph)
    assert split.tail is None and split.head is graph


def test_cpu_tail_refuses_when_nothing_would_stay_on_the_tpu():
    graph = build_graph([node("Exp", ["x"], "y")], [("x", SHAPE)], [("y", SHAPE)])
    with pytest.raises(CpuTailError, match="nothing would run on the Edge TPU"):
        split_cpu_tail(graph)


# -- through compile and inspect (int8 .tflite) ------------------------------------------------------

def _argmax_model(path):
    """conv -> relu -> global pool -> gemm -> ArgMax (no Edge TPU op), dynamic batch 'N'."""
    w = RNG.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3
    nodes = [node("Conv", ["x", "w"], "c", pads=[1, 1, 1, 1]), node("Relu", ["c"], "r"),
             node("GlobalAveragePool", ["r"], "g"), node("Flatten", ["g"], "f"),
             node("Gemm", ["f", "fw", "fb"], "logits", transB=1),
             node("ArgMax", ["logits"], "cls", axis=1, keepdims=0)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("cls", TensorProto.INT64, None)],
        [const("w", w), const("fw", RNG.standard_normal((10, 8))), const("fb", RNG.standard_normal(10))])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_compile_with_cpu_tail_stores_the_tail_and_the_report(tmp_path):
    pytest.importorskip("ai_edge_litert")
    import json
    import warnings

    import edgekiln

    path = _argmax_model(tmp_path / "argmax.onnx")
    calib = [{"x": RNG.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(2)]
    with warnings.catch_warnings():  # "edgetpu_compiler is not on PATH" (said once per process)
        warnings.simplefilter("ignore")
        artifact = edgekiln.compile(path, "edgetpu", quant="int8", calib=calib, cpu_tail=True, progress=False)
    files = artifact.files
    assert {"model.tflite", "cpu_tail.onnx", "edgetpu_report.json", "edgetpu_report.txt"} <= set(files)
    tail = onnx.load_from_string(files["cpu_tail.onnx"])
    assert [n.op_type for n in tail.graph.node] == ["ArgMax"] and [i.name for i in tail.graph.input] == ["logits"]
    report = json.loads(files["edgetpu_report.json"])
    assert report["counts"]["cpu"] == 0 and report["segment_end"] is None  # the TPU part maps whole
    # The tail is the original model's ArgMax: fed the original logits it gives the original classes.
    x = calib[0]["x"]
    original = onnx.load(path)
    original.graph.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, None))
    want_cls, logits = run_ort(original, {"x": x})
    (got_cls,) = run_ort(tail, {"logits": logits})
    assert np.array_equal(got_cls, want_cls)
    # Running the artifact runs the tail after the .tflite: the model's own output comes back.
    outputs = artifact.run({"x": x})
    assert set(outputs) == {"cls"} and outputs["cls"].dtype == np.int64 and outputs["cls"].shape == want_cls.shape


def test_inspect_onnx_for_edgetpu_reports_the_int8_tflite_and_the_tail(tmp_path):
    pytest.importorskip("ai_edge_litert")
    from click.testing import CliRunner

    from edgekiln.cli import main

    path = _argmax_model(tmp_path / "argmax.onnx")
    result = CliRunner().invoke(main, ["inspect", str(path), "--target", "edgetpu"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "TPU segment ends at op #4 ArgMax (ONNX)" in text and "synthetic (data-free) calibration" in text


def test_cpu_tail_is_refused_for_other_targets():
    from edgekiln.compiler.compile import compile_model
    from edgekiln.errors import OptionError

    model = helper.make_model(helper.make_graph(
        [node("Relu", ["x"], "y")], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, SHAPE)]), opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(OptionError, match="--cpu-tail"):
        compile_model(model, "host", cpu_tail=True)
