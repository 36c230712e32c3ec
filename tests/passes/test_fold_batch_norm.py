"""FoldBatchNormPass: Conv/ConvTranspose/Gemm/MatMul + BN, numerics, idempotence, refusals, zoo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgekiln.compiler.explain import ExplainTrace
from edgekiln.compiler.frontend import load_model
from edgekiln.compiler.graph import Graph
from edgekiln.compiler.pass_manager import PassManager
from edgekiln.passes.fold_affine_into_conv import FoldAffineIntoConvPass
from edgekiln.passes.fold_batch_norm import FoldBatchNormPass, batch_norm_as_affine
from edgekiln.passes.fold_pad import FoldPadPass
from edgekiln.passes.fuse_matmul_add import FuseMatMulAddPass
from edgekiln.passes.make_pads_explicit import MakePadsExplicitPass
from tests.conftest import max_relative_error, run_ort
from tests.support.graphs import build_graph
from tests.support.numerics import assert_same_outputs, with_logits_exposed
from tests.zoo import input_shapes, model_path, sample_input

RNG = np.random.default_rng(7)
BN_PARAMS = ("gamma", "beta", "mean", "var")


def _array(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _bn_inits(channels: int, prefix: str = "") -> list[onnx.TensorProto]:
    values = (_array(channels), _array(channels), _array(channels), RNG.uniform(0.5, 2.0, channels).astype(np.float32))
    return [numpy_helper.from_array(v, prefix + n) for v, n in zip(values, BN_PARAMS)]


def _bn(source: str, output: str = "y", prefix: str = "", **attrs) -> onnx.NodeProto:
    return helper.make_node("BatchNormalization", [source] + [prefix + n for n in BN_PARAMS], [output],
                            name=f"{prefix}bn", epsilon=1e-3, **attrs)


def _fold(graph: Graph, inputs: dict[str, np.ndarray], expected_applied: int):
    """Run the pass, check count, checker, ORT numerics against the original, idempotence."""
    original = graph.to_proto()
    result = FoldBatchNormPass().run(graph)
    assert len(result.applied) == expected_applied, result.not_applied
    assert result.changed == bool(expected_applied)
    onnx.checker.check_model(graph.to_proto())
    for want, got in zip(run_ort(original, inputs), run_ort(graph.to_proto(), inputs), strict=True):
        assert got.shape == want.shape
        assert max_relative_error(want, got) <= 1e-5
    snapshot = graph.to_bytes()
    again = FoldBatchNormPass().run(graph)
    assert not again.changed and not again.applied and graph.to_bytes() == snapshot
    return result


def _conv_bn(with_bias: bool = True, group: int = 1, extra_nodes=(), outputs=(("y", None),)) -> Graph:
    cin, cout = 4, 6
    inits = [numpy_helper.from_array(_array(cout, cin // group, 3, 3), "W"), *_bn_inits(cout)]
    conv_inputs = ["x", "W"]
    if with_bias:
        inits.append(numpy_helper.from_array(_array(cout), "B"))
        conv_inputs.append("B")
    nodes = [helper.make_node("Conv", conv_inputs, ["c"], name="conv", pads=[1, 1, 1, 1], group=group), _bn("c"),
             *extra_nodes]
    return build_graph(nodes, [("x", [1, cin, 8, 8])], outputs, inits)


X = {"x": _array(1, 4, 8, 8)}


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("group", [1, 2])
def test_conv_bn_folds_into_the_conv(with_bias, group):
    graph = _conv_bn(with_bias, group)
    result = _fold(graph, X, 1)
    assert result.applied == ["folded bn (BatchNormalization) into conv (Conv)"]
    assert graph.count_ops() == {"Conv": 1}
    conv = graph.node("conv")
    assert len(conv.inputs) == 3 and Graph.constant(conv.inputs[2]).shape == (6,)
    assert [v.name for v in graph.outputs] == ["y"] and graph.outputs[0].producer() is conv
    assert not [n for n in graph.main.initializers if n in BN_PARAMS]  # no dead BN parameters left


def test_batch_norm_as_affine_matches_the_definition():
    graph = _conv_bn()
    bn = graph.node("bn")
    scale, shift = batch_norm_as_affine(graph, bn)
    gamma, beta, mean, var = (Graph.constant(v).astype(np.float64) for v in bn.inputs[1:])
    y = RNG.standard_normal((5, 6))
    assert np.allclose(scale * y + shift, gamma * (y - mean) / np.sqrt(var + 1e-3) + beta)


@pytest.mark.parametrize("group", [1, 2, 3])
def test_grouped_conv_transpose_bn(group):
    cin, per_group_out = 6, 2  # ConvTranspose W is [Cin, Cout/group, kh, kw]
    cout = per_group_out * group
    inits = [numpy_helper.from_array(_array(cin, per_group_out, 3, 3), "W"),
             numpy_helper.from_array(_array(cout), "B"), *_bn_inits(cout)]
    nodes = [helper.make_node("ConvTranspose", ["x", "W", "B"], ["c"], name="deconv", group=group, strides=[2, 2]),
             _bn("c")]
    graph = build_graph(nodes, [("x", [1, cin, 5, 5])], [("y", None)], inits)
    _fold(graph, {"x": _array(1, cin, 5, 5)}, 1)
    assert graph.count_ops() == {"ConvTranspose": 1}


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("bias", ["none", "vector", "matrix"])
def test_gemm_bn_over_the_feature_axis(trans_b, bias):
    k, n = 5, 7
    inits = [numpy_helper.from_array(_array(n, k) if trans_b else _array(k, n), "W"), *_bn_inits(n)]
    gemm_inputs = ["a", "W"]
    if bias != "none":
        inits.append(numpy_helper.from_array(_array(n) if bias == "vector" else _array(3, n), "C"))
        gemm_inputs.append("C")
    nodes = [helper.make_node("Gemm", gemm_inputs, ["g"], name="gemm", transB=trans_b, alpha=0.5, beta=2.0),
             _bn("g")]
    graph = build_graph(nodes, [("a", [3, k])], [("y", None)], inits)
    _fold(graph, {"a": _array(3, k)}, 1)
    assert graph.count_ops() == {"Gemm": 1}
    assert graph.node("gemm").attributes["beta"].value == 1.0


def _matmul_bn(rows: list[int]) -> Graph:
    inits = [numpy_helper.from_array(_array(5, 4), "W"), *_bn_inits(4 if len(rows) == 1 else rows[-1])]
    nodes = [helper.make_node("MatMul", ["a", "W"], ["m"], name="matmul"), _bn("m")]
    return build_graph(nodes, [("a", [*rows, 5])], [("y", None)], inits)


def test_matmul_bn_becomes_matmul_add_then_gemm():
    graph = _matmul_bn([3])
    original = graph.to_proto()
    feeds = {"a": _array(3, 5)}
    _fold(graph, feeds, 1)
    assert graph.count_ops() == {"Add": 1, "MatMul": 1}
    assert len(FuseMatMulAddPass().run(graph).applied) == 1
    assert graph.count_ops() == {"Gemm": 1}
    assert max_relative_error(run_ort(original, feeds)[0], run_ort(graph.to_proto(), feeds)[0]) <= 1e-5


def test_bn_over_a_3d_matmul_normalizes_the_wrong_axis():
    graph = _matmul_bn([2, 4])  # output [2, 4, 4]: BN axis 1 is rows, the weights' columns are axis 2
    result = FoldBatchNormPass().run(graph)
    assert not result.changed
    assert result.not_applied == ["bn: BN normalizes axis 1, but MatMul output channels are on axis 2"]


def test_bn_output_that_is_a_graph_output_keeps_its_name():
    graph = _conv_bn(outputs=(("y", None),))
    _fold(graph, X, 1)
    assert [v.name for v in graph.outputs] == ["y"]


# --- must not fire ------------------------------------------------------------------------


def _refusal(graph: Graph) -> str:
    before = graph.to_bytes()
    result = FoldBatchNormPass().run(graph)
    assert not result.changed and not result.applied and graph.to_bytes() == before
    assert len(result.not_applied) == 1
    return result.not_applied[0]


def test_bn_with_parameters_fed_from_graph_inputs_is_refused():
    inits = [numpy_helper.from_array(_array(6, 4, 3, 3), "W"), *_bn_inits(6)[1:]]
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]), _bn("c")]
    graph = build_graph(nodes, [("x", [1, 4, 8, 8]), ("gamma", [6])], [("y", None)], inits)
    assert _refusal(graph) == "bn: BN scale is not a constant initializer"


def test_conv_output_with_other_readers_is_refused():
    graph = _conv_bn(extra_nodes=[helper.make_node("Relu", ["c"], ["r"], name="relu")],
                     outputs=(("y", None), ("r", None)))
    assert _refusal(graph) == "bn: Conv output has other readers: relu (Relu)"


def test_conv_output_that_is_a_graph_output_is_refused():
    graph = _conv_bn(outputs=(("y", None), ("c", None)))
    assert _refusal(graph) == "bn: Conv output is a graph output"


def test_shared_weights_are_refused():
    graph = _conv_bn(extra_nodes=[helper.make_node("Conv", ["x", "W"], ["c2"], name="twin", pads=[1, 1, 1, 1])],
                     outputs=(("y", None), ("c2", None)))
    assert _refusal(graph) == "bn: weights are shared with node twin (Conv)"


def test_training_mode_bn_is_refused():
    inits = [numpy_helper.from_array(_array(6, 4, 3, 3), "W"), *_bn_inits(6)]
    bn = helper.make_node("BatchNormalization", ["c", *BN_PARAMS], ["y", "running_mean", "running_var"],
                          name="bn", training_mode=1)
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]), bn]
    graph = build_graph(nodes, [("x", [1, 4, 8, 8])], [("y", None), ("running_mean", None)], inits)
    assert _refusal(graph) == "bn: BN is in training mode (it has running mean/variance outputs)"


def test_standalone_bn_is_left_for_re_parameterization():
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"), _bn("r")]
    graph = build_graph(nodes, [("x", [1, 6, 4, 4])], [("y", None)], _bn_inits(6))
    assert _refusal(graph) == "bn: its input comes from relu (Relu), which has no weights to fold into"
    assert isinstance(batch_norm_as_affine(graph, graph.node("bn")), tuple)  # still readable as (s, t)


# --- zoo and PP-OCR ---------------------------------------------------------------------------

# BNs that must stay: identity branches of RepVGG/MobileOne blocks (after a Relu) and, in the
# PP-OCR detector, one after a ConvTranspose whose bias is a separate Add (fold-affine-into-conv
# folds that Add first; then this BN folds too).
STANDALONE_BNS = {"repvgg": 1, "mobileone": 4, "ppocr_det": 1}
MODELS_WITH_BN = ("digits_cnn", "inverted_residual", "resnet_basic", "repvgg", "mobileone", "se_hardswish",
                  "ppocr_det", "ppocr_rec", "ppocr_cls")


def load_with_logits(name: str, tmp_path) -> tuple[Graph, Path, dict[str, str]]:
    """The model as the compiler loads it, the original file (logits exposed) and its probability outputs."""
    path, probabilities = with_logits_exposed(model_path(name), tmp_path)
    return load_model(path, input_shapes(name)), path, probabilities


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS_WITH_BN)
def test_every_bn_after_a_conv_is_folded_in_zoo_models(name, tmp_path):
    graph, original, probabilities = load_with_logits(name, tmp_path)
    bns_before = graph.count_ops()["BatchNormalization"]
    result = FoldBatchNormPass().run(graph)
    left = [n for n in graph.main if n.op_type == "BatchNormalization"]
    assert len(left) == STANDALONE_BNS.get(name, 0), result.not_applied
    assert len(result.applied) == bns_before - len(left)
    for bn in left:
        assert bn.inputs[0].producer().op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul")
    assert_same_outputs(original, graph.to_proto(), sample_input(name), probabilities)
    assert not FoldBatchNormPass().run(graph).changed


# The folding passes in pipeline order; (nodes before, nodes after, fires per pass) per model.
FOLDING = (MakePadsExplicitPass, FoldPadPass, FoldBatchNormPass, FoldAffineIntoConvPass, FuseMatMulAddPass)
FOLDED = {
    "lenet_mnist": (12, 12, {}),
    "digits_cnn": (9, 7, {"fold-batch-norm": 2}),
    "inverted_residual": (32, 22, {"fold-batch-norm": 10}),
    "resnet_basic": (22, 16, {"fold-batch-norm": 6}),
    "repvgg": (20, 15, {"fold-batch-norm": 5}),
    "mobileone": (56, 41, {"fold-batch-norm": 15}),
    "se_hardswish": (18, 15, {"fold-batch-norm": 3}),
    "tiny_transformer": (73, 73, {}),  # its MatMul + Add have 3-D inputs: no Gemm
    # PP-LCNet blocks: a scalar Mul and Add after convs (learnable affine), bias Adds after
    # ConvTranspose and bias-free convs; the detector's last BN folds once its Add has.
    "ppocr_det": (330, 269, {"fold-batch-norm": 3, "fold-affine-into-conv": 58}),
    "ppocr_rec": (409, 347, {"fold-batch-norm": 6, "fold-affine-into-conv": 56}),
    "ppocr_cls": (234, 180, {"fold-batch-norm": 35, "fold-affine-into-conv": 18, "fuse-matmul-add": 1}),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FOLDED))
def test_folding_passes_in_pipeline_order_on_zoo_models(name, tmp_path):
    graph, original, probabilities = load_with_logits(name, tmp_path)
    before, after, fires = FOLDED[name]
    assert len(graph.main) == before
    trace = ExplainTrace()
    graph = PassManager([p() for p in FOLDING]).run(graph, trace)
    fired: dict[str, int] = {}
    for record in trace.records:
        if record.applied:
            fired[record.pass_name] = fired.get(record.pass_name, 0) + len(record.applied)
    assert fired == fires
    assert len(graph.main) == after
    identity_branches = {"repvgg": 1, "mobileone": 4}  # the re-parameterization pass's to merge
    assert graph.count_ops().get("BatchNormalization", 0) == identity_branches.get(name, 0)
    assert_same_outputs(original, graph.to_proto(), sample_input(name), probabilities)
