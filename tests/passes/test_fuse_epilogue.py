"""FuseEpiloguePass: fire count, fused structure, ORT numerics, idempotence, and refusals."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgekiln.compiler import fused_ops
from edgekiln.compiler.graph import Graph
from edgekiln.passes.fuse_epilogue import FuseEpiloguePass
from tests.conftest import max_relative_error, run_ort
from tests.support.graphs import build_graph

RNG = np.random.default_rng(7)
X = RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)
SKIP = RNG.standard_normal((1, 4, 8, 8)).astype(np.float32)


def const(name: str, array) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def weights(bias: bool = True) -> list[onnx.TensorProto]:
    rng = np.random.default_rng(0)
    inits = [const("W", rng.standard_normal((4, 3, 3, 3)))]
    return inits + ([const("B", rng.standard_normal(4))] if bias else [])


def conv(out: str = "c", bias: bool = True, name: str = "conv", source: str = "x") -> onnx.NodeProto:
    return helper.make_node("Conv", [source, "W"] + (["B"] if bias else []), [out], name,
                            pads=[1, 1, 1, 1], kernel_shape=[3, 3])


def run_pass(graph: Graph, feeds: dict[str, np.ndarray], expect_fired: int):
    """Run the pass; check fire count, checker, ORT numerics against the original, idempotence."""
    original = graph.to_proto()
    result = FuseEpiloguePass().run(graph)
    assert len(result.applied) == expect_fired, (result.applied, result.not_applied)
    assert result.changed == (expect_fired > 0)
    proto = graph.to_proto()
    onnx.checker.check_model(proto, full_check=True)
    for want, got in zip(run_ort(original, feeds), run_ort(proto, feeds)):
        assert max_relative_error(want, got) <= 1e-5
    before = graph.to_bytes()
    again = FuseEpiloguePass().run(graph)
    assert not again.changed and again.applied == [] and graph.to_bytes() == before
    return result


def fused_node(graph: Graph) -> onnx.NodeProto:
    (node,) = [n for n in graph.nodes if n.domain == fused_ops.DOMAIN]
    return node


# -- Case 4 and 5: one activation each ---------------------------------------------------------

ACTIVATIONS = {
    # name: (nodes after conv "c" ending in "y", extra initializers, opset, expected attrs)
    "Relu": ([helper.make_node("Relu", ["c"], ["y"], "act")], [], 17, {}),
    "Relu6": ([helper.make_node("Clip", ["c", "lo", "hi"], ["y"], "act")],
              [const("lo", 0.0), const("hi", 6.0)], 17, {"act_min": 0.0, "act_max": 6.0}),
    "ClipMinOnly": ([helper.make_node("Clip", ["c", "lo"], ["y"], "act")], [const("lo", -0.5)], 17,
                    {"act_min": -0.5, "act_max": float(np.finfo(np.float32).max)}),
    "HardSwish": ([helper.make_node("HardSwish", ["c"], ["y"], "act")], [], 17, {}),
    "HardSigmoid": ([helper.make_node("HardSigmoid", ["c"], ["y"], "act", alpha=0.25, beta=0.4)], [], 17,
                    {"act_alpha": 0.25, "act_beta": 0.4}),
    "HardSigmoidDefaults": ([helper.make_node("HardSigmoid", ["c"], ["y"], "act")], [], 17,
                            {"act_alpha": 0.2, "act_beta": 0.5}),
    "Sigmoid": ([helper.make_node("Sigmoid", ["c"], ["y"], "act")], [], 17, {}),
    "Tanh": ([helper.make_node("Tanh", ["c"], ["y"], "act")], [], 17, {}),
    "LeakyRelu": ([helper.make_node("LeakyRelu", ["c"], ["y"], "act", alpha=0.1)], [], 17, {"act_alpha": 0.1}),
    "SiLU": ([helper.make_node("Sigmoid", ["c"], ["s"], "sig"), helper.make_node("Mul", ["s", "c"], ["y"], "act")],
             [], 17, {}),
    "Gelu": ([helper.make_node("Gelu", ["c"], ["y"], "act")], [], 20, {}),
    "GeluTanh": ([helper.make_node("Gelu", ["c"], ["y"], "act", approximate="tanh")], [], 20, {}),
}
STEP = {"Relu6": "Clip", "ClipMinOnly": "Clip", "HardSigmoidDefaults": "HardSigmoid"}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_conv_plus_each_activation_becomes_one_fused_node(name):
    nodes, inits, opset, attrs = ACTIVATIONS[name]
    graph = build_graph([conv(), *nodes], [("x", [1, 3, 8, 8])], initializers=weights() + inits, opset=opset)
    result = run_pass(graph, {"x": X}, expect_fired=1)
    step = STEP.get(name, name)
    assert graph.count_ops() == {f"FusedConv{step}": 1}
    node = fused_node(graph)
    assert node.name == "conv" and [v.name for v in node.inputs] == ["x", "W", "B"]
    assert node.outputs[0].name == "y" and graph.outputs[0] is node.outputs[0]
    assert {k: a.value for k, a in node.attributes.items() if k.startswith("act_")} == pytest.approx(attrs)
    assert node.attributes["pads"].value == (1, 1, 1, 1)  # conv attributes travel along
    assert result.applied[0].startswith("fused conv (Conv) + ")


@pytest.mark.parametrize("op_type", ["Gelu", "GeluTanh"])
def test_edgekiln_gelu_from_pattern_recognition_is_fused(op_type):
    graph = build_graph([conv(), helper.make_node(op_type, ["c"], ["y"], "gelu", domain=fused_ops.DOMAIN)],
                        [("x", [1, 3, 8, 8])], outputs=[("y", [1, 4, 8, 8])], initializers=weights(),
                        extra_opsets=[(fused_ops.DOMAIN, 1)])
    fused_ops.ensure_gelu_function(graph.model, "none" if op_type == "Gelu" else "tanh")
    run_pass(graph, {"x": X}, expect_fired=1)
    assert graph.count_ops() == {f"FusedConv{op_type}": 1}
    # The standalone Gelu function is no longer used, but it does no harm.


# -- Case 1 to 3: biases and residuals -----------------------------------------------------------

RESIDUALS = {
    # name: (nodes after conv "c", expected epilogue)
    "Add": ([helper.make_node("Add", ["c", "skip"], ["y"], "add")], ("Add",)),
    "AddSwapped": ([helper.make_node("Add", ["skip", "c"], ["y"], "add")], ("Add",)),
    "AddRelu": ([helper.make_node("Add", ["c", "skip"], ["a"], "add"),
                 helper.make_node("Relu", ["a"], ["y"], "relu")], ("Add", "Relu")),
    "ReluAdd": ([helper.make_node("Relu", ["c"], ["r"], "relu"),
                 helper.make_node("Add", ["r", "skip"], ["y"], "add")], ("Relu", "Add")),
    "AddClip": ([helper.make_node("Add", ["c", "skip"], ["a"], "add"),
                 helper.make_node("Clip", ["a", "lo", "hi"], ["y"], "clip")], ("Add", "Clip")),
}


@pytest.mark.parametrize("name", sorted(RESIDUALS))
@pytest.mark.parametrize("bias", [True, False])
def test_residual_add_is_fused_in_graph_order(name, bias):
    nodes, epilogue = RESIDUALS[name]
    graph = build_graph([conv(bias=bias), *nodes], [("x", [1, 3, 8, 8]), ("skip", [1, 4, 8, 8])],
                        initializers=weights(bias) + [const("lo", 0.0), const("hi", 6.0)])
    run_pass(graph, {"x": X, "skip": SKIP}, expect_fired=1)
    node = fused_node(graph)
    assert node.op_type == fused_ops.fused_op_type("FusedConv", epilogue)
    assert graph.count_ops() == {node.op_type: 1}
    assert node.inputs[3].name == "skip" and node.outputs[0].name == "y"
    if not bias:  # Case 1: a zero bias keeps the signature fixed
        zero = Graph.constant(node.inputs[2])
        assert zero.shape == (4,) and not zero.any() and node.inputs[2].shape == (4,)


def test_resnet_downsample_add_goes_to_the_larger_conv_whatever_the_order():
    rng = np.random.default_rng(1)
    inits = [const("W1", rng.standard_normal((4, 3, 3, 3))), const("Wd", rng.standard_normal((4, 3, 1, 1)))]
    main = helper.make_node("Conv", ["x", "W1"], ["c1"], "conv2", pads=[1, 1, 1, 1])
    down = helper.make_node("Conv", ["x", "Wd"], ["cd"], "downsample")
    tail = [helper.make_node("Add", ["c1", "cd"], ["a"], "add"), helper.make_node("Relu", ["a"], ["y"], "relu")]
    for order in ([main, down], [down, main]):
        graph = build_graph([*order, *tail], [("x", [1, 3, 8, 8])], initializers=inits)
        result = run_pass(graph, {"x": X}, expect_fired=1)
        node = fused_node(graph)
        assert (node.name, node.op_type, node.inputs[3].name) == ("conv2", "FusedConvAddRelu", "cd")
        assert graph.count_ops() == {"Conv": 1, "FusedConvAddRelu": 1}
        assert len(result.not_applied) == 1 and result.not_applied[0].startswith("downsample (Conv): ")


def test_gemm_with_and_without_c():
    rng = np.random.default_rng(2)
    inits = [const("Wg", rng.standard_normal((5, 6))), const("Cg", rng.standard_normal(5))]
    for inputs in (["a", "Wg", "Cg"], ["a", "Wg"]):
        graph = build_graph([helper.make_node("Gemm", inputs, ["g"], "fc", transB=1, alpha=0.5),
                             helper.make_node("Relu", ["g"], ["y"], "relu")],
                            [("a", [2, 6])], initializers=inits)
        run_pass(graph, {"a": rng.standard_normal((2, 6)).astype(np.float32)}, expect_fired=1)
        node = fused_node(graph)
        assert node.op_type == "FusedGemmRelu" and len(node.inputs) == 3
        assert {k: a.value for k, a in node.attributes.items()} == {"transB": 1, "alpha": 0.5}


@pytest.mark.parametrize("bias_first", [True, False])
def test_matmul_bias_add_then_residual_and_then_gelu(bias_first):
    rng = np.random.default_rng(3)
    inits = [const("Wm", rng.standard_normal((8, 8))), const("bm", rng.standard_normal(8))]
    add_inputs = ["bm", "m"] if bias_first else ["m", "bm"]
    nodes = [helper.make_node("MatMul", ["t", "Wm"], ["m"], "proj"),
             helper.make_node("Add", add_inputs, ["mb"], "proj_bias"),
             helper.make_node("Add", ["t", "mb"], ["r"], "residual"),
             helper.make_node("Gelu", ["r"], ["y"], "gelu")]
    graph = build_graph(nodes, [("t", [1, 5, 8])], initializers=inits, opset=20)
    run_pass(graph, {"t": rng.standard_normal((1, 5, 8)).astype(np.float32)}, expect_fired=1)
    node = fused_node(graph)
    assert node.op_type == "FusedMatMulAddGelu"
    assert [v.name for v in node.inputs] == ["t", "Wm", "bm", "t"]


@pytest.mark.parametrize("quantized", [False, True])
def test_matmul_bias_alone_is_fused_as_the_kernel_bias(quantized):
    rng = np.random.default_rng(5)
    inits = [const("Wm", rng.standard_normal((8, 4))), const("bm", rng.standard_normal(4))]
    graph = build_graph([helper.make_node("MatMul", ["t", "Wm"], ["m"], "proj"),
                         helper.make_node("Add", ["m", "bm"], ["y"], "proj_bias")],
                        [("t", [1, 5, 8])], initializers=inits)
    original = graph.to_proto()
    fuse = FuseEpiloguePass(activations=frozenset({"Relu", "Clip"}), residual=False) if quantized else FuseEpiloguePass()
    assert len(fuse.run(graph).applied) == 1
    node = fused_node(graph)
    assert node.op_type == "FusedMatMul" and [v.name for v in node.inputs] == ["t", "Wm", "bm"]
    feeds = {"t": rng.standard_normal((1, 5, 8)).astype(np.float32)}
    assert max_relative_error(run_ort(original, feeds)[0], run_ort(graph.to_proto(), feeds)[0]) <= 1e-5


def test_matmul_without_bias_gets_a_zero_bias():
    rng = np.random.default_rng(4)
    graph = build_graph([helper.make_node("MatMul", ["t", "Wm"], ["m"], "mm"),
                         helper.make_node("Tanh", ["m"], ["y"], "tanh")],
                        [("t", [1, 5, 8])], initializers=[const("Wm", rng.standard_normal((8, 3)))])
    run_pass(graph, {"t": rng.standard_normal((1, 5, 8)).astype(np.float32)}, expect_fired=1)
    node = fused_node(graph)
    assert node.op_type == "FusedMatMulTanh" and Graph.constant(node.inputs[2]).shape == (3,)


def test_convs_sharing_weights_both_fuse_and_the_weights_are_untouched():
    nodes = [conv("c1", name="conv_a"), helper.make_node("Relu", ["c1"], ["r1"], "relu_a"),
             conv("c2", bias=False, name="conv_b", source="x2"), helper.make_node("Relu", ["c2"], ["r2"], "relu_b"),
             conv("c3", bias=False, name="conv_c", source="x"), helper.make_node("Sigmoid", ["c3"], ["s3"], "sig"),
             helper.make_node("Add", ["r1", "r2"], ["a"], "add"), helper.make_node("Add", ["a", "s3"], ["y"], "add2")]
    graph = build_graph(nodes, [("x", [1, 3, 8, 8]), ("x2", [1, 3, 8, 8])], initializers=weights())
    w_before = Graph.constant(graph.main.initializers["W"]).copy()
    run_pass(graph, {"x": X, "x2": X[:, ::-1].copy()}, expect_fired=3)
    assert np.array_equal(Graph.constant(graph.main.initializers["W"]), w_before)
    zero_biases = [n.inputs[2].name for n in graph.nodes if n.name in ("conv_b", "conv_c")]
    assert len(set(zero_biases)) == 2  # each its own, uniquely named initializer


def test_block_metadata_is_kept_and_blocks_are_not_crossed():
    nodes = [conv(), helper.make_node("Relu", ["c"], ["y"], "relu")]
    graph = build_graph(nodes, [("x", [1, 3, 8, 8])], initializers=weights())
    graph.node("conv").metadata_props["edgekiln.block"] = "attention_0"
    graph.node("relu").metadata_props["edgekiln.block"] = "attention_0"
    run_pass(graph, {"x": X}, expect_fired=1)
    assert fused_node(graph).metadata_props["edgekiln.block"] == "attention_0"

    graph = build_graph(nodes, [("x", [1, 3, 8, 8])], initializers=weights())
    graph.node("relu").metadata_props["edgekiln.block"] = "attention_0"
    result = run_pass(graph, {"x": X}, expect_fired=0)
    assert result.not_applied == ["conv (Conv): relu (Relu) is in attention_0, conv (Conv) in no block"]


# -- where it must not fire (or must stop) -------------------------------------------------------

def test_conv_output_read_by_another_node_is_refused():
    nodes = [conv(), helper.make_node("Relu", ["c"], ["r"], "relu"),
             helper.make_node("Add", ["r", "c"], ["y"], "add")]
    graph = build_graph(nodes, [("x", [1, 3, 8, 8])], initializers=weights())
    result = run_pass(graph, {"x": X}, expect_fired=0)
    assert result.not_applied == ["conv (Conv): conv output is also read by node add (Add)"]


def test_intermediate_graph_output_stops_the_walk():
    # The conv output itself is a graph output: nothing fuses.
    nodes = [conv(), helper.make_node("Relu", ["c"], ["y"], "relu")]
    graph = build_graph(nodes, [("x", [1, 3, 8, 8])], outputs=[("y", None), ("c", None)], initializers=weights())
    result = run_pass(graph, {"x": X}, expect_fired=0)
    assert result.not_applied == ["conv (Conv): conv output 'c' is a graph output"]
    # The Add output is a graph output: conv + Add fuse, the Relu stays, the output keeps its name.
    nodes = [conv(), helper.make_node("Add", ["c", "skip"], ["a"], "add"), helper.make_node("Relu", ["a"], ["y"], "relu")]
    graph = build_graph(nodes, [("x", [1, 3, 8, 8]), ("skip", [1, 4, 8, 8])],
                        outputs=[("y", None), ("a", None)], initializers=weights())
    result = run_pass(graph, {"x": X, "skip": SKIP}, expect_fired=1)
    assert graph.count_ops() == {"FusedConvAdd": 1, "Relu": 1}
    assert [v.name for v in graph.outputs] == ["y", "a"]
    assert result.applied[0].endswith("stopped there: add output 'a' is a graph output")


def test_broadcast_residual_is_refused():
    nodes = [conv(), helper.make_node("Add", ["c", "gate"], ["y"], "add")]
    graph = build_graph(nodes, [("x", [1, 3, 8, 8]), ("gate", [1, 4, 1, 1])], initializers=weights())
    result = run_pass(graph, {"x": X, "gate": SKIP[:, :, :1, :1].copy()}, expect_fired=0)
    assert result.not_applied == [
        "conv (Conv): residual 'gate' of shape [1, 4, 1, 1] broadcasts to the conv output shape [1, 4, 8, 8]"]


def test_constant_add_is_a_bias_not_a_residual():
    nodes = [conv(), helper.make_node("Add", ["c", "shift"], ["y"], "add")]
    graph = build_graph(nodes, [("x", [1, 3, 8, 8])], initializers=weights() + [const("shift", np.ones((1, 4, 1, 1)))])
    result = run_pass(graph, {"x": X}, expect_fired=0)
    assert "adds the constant 'shift': a bias, not a residual" in result.not_applied[0]


def test_clip_with_a_runtime_bound_is_refused():
    nodes = [conv(), helper.make_node("Clip", ["c", "lo"], ["y"], "clip")]
    graph = build_graph(nodes, [("x", [1, 3, 8, 8]), ("lo", [])], initializers=weights())
    result = run_pass(graph, {"x": X, "lo": np.array(0.5, np.float32)}, expect_fired=0)
    assert result.not_applied == ["conv (Conv): clip (Clip) has a min bound that is not a constant scalar"]


def test_a_second_activation_stays_outside():
    nodes = [conv(), helper.make_node("Relu", ["c"], ["r"], "relu"), helper.make_node("Sigmoid", ["r"], ["y"], "sig")]
    graph = build_graph(nodes, [("x", [1, 3, 8, 8])], initializers=weights())
    result = run_pass(graph, {"x": X}, expect_fired=1)
    assert graph.count_ops() == {"FusedConvRelu": 1, "Sigmoid": 1}
    assert result.applied == [("fused conv (Conv) + relu (Relu) into conv (FusedConvRelu); "
                              "stopped there: a second activation (sig (Sigmoid))")]


def test_silu_needs_both_readers_to_be_the_pattern():
    # Sigmoid(c) * c where the sigmoid is also a graph output: not SiLU, and c has two readers.
    nodes = [conv(), helper.make_node("Sigmoid", ["c"], ["s"], "sig"), helper.make_node("Mul", ["c", "s"], ["y"], "mul")]
    graph = build_graph(nodes, [("x", [1, 3, 8, 8])], outputs=[("y", None), ("s", None)], initializers=weights())
    result = run_pass(graph, {"x": X}, expect_fired=0)
    assert result.not_applied == ["conv (Conv): conv output is also read by node mul (Mul)"]


def test_nothing_fusible_after_the_conv_is_not_a_candidate():
    nodes = [conv(), helper.make_node("MaxPool", ["c"], ["y"], "pool", kernel_shape=[2, 2])]
    graph = build_graph(nodes, [("x", [1, 3, 8, 8])], initializers=weights())
    result = run_pass(graph, {"x": X}, expect_fired=0)
    assert result.not_applied == []


# -- the quantized pipeline's option: only Relu / Clip, no residual -----------------------------

QUANTIZED = {"activations": frozenset({"Relu", "Clip"}), "residual": False}


def run_quantized(graph: Graph, feeds: dict[str, np.ndarray], expect_fired: int):
    original = graph.to_proto()
    result = FuseEpiloguePass(**QUANTIZED).run(graph)
    assert len(result.applied) == expect_fired, (result.applied, result.not_applied)
    assert result.changed == (expect_fired > 0)
    onnx.checker.check_model(graph.to_proto(), full_check=True)
    for want, got in zip(run_ort(original, feeds), run_ort(graph.to_proto(), feeds)):
        assert max_relative_error(want, got) <= 1e-5
    before = graph.to_bytes()
    assert not FuseEpiloguePass(**QUANTIZED).run(graph).changed and graph.to_bytes() == before
    return result


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_quantized_pipeline_fuses_only_clamps(name):
    nodes, inits, opset, _ = ACTIVATIONS[name]
    graph = build_graph([conv(), *nodes], [("x", [1, 3, 8, 8])], initializers=weights() + inits, opset=opset)
    step = STEP.get(name, name)
    clamp = step in ("Relu", "Clip")
    result = run_quantized(graph, {"x": X}, expect_fired=int(clamp))
    if clamp:
        assert graph.count_ops() == {f"FusedConv{step}": 1}
    else:
        assert "FusedConv" not in "".join(graph.count_ops())
        kind = {"Gelu": "Gelu", "GeluTanh": "GeluTanh"}.get(step, step)
        assert result.not_applied == [(f"conv (Conv): {kind} is not fused in a quantized pipeline "
                                      f"(int8 lookup table op)")]


@pytest.mark.parametrize("name", sorted(RESIDUALS))
def test_quantized_pipeline_leaves_the_residual_add_alone(name):
    nodes, epilogue = RESIDUALS[name]
    graph = build_graph([conv(), *nodes], [("x", [1, 3, 8, 8]), ("skip", [1, 4, 8, 8])],
                        initializers=weights() + [const("lo", 0.0), const("hi", 6.0)])
    clamp_first = epilogue[0] != "Add"
    result = run_quantized(graph, {"x": X, "skip": SKIP}, expect_fired=int(clamp_first))
    assert graph.count_ops().get("Add") == 1
    if clamp_first:  # ReluAdd: the Relu is fused, the walk stops at the Add and says why
        assert graph.count_ops().get("FusedConvRelu") == 1
        assert "the residual add (Add) is not fused in a quantized pipeline" in result.applied[0]
    else:
        assert result.not_applied == [("conv (Conv): the residual add (Add) is not fused in a quantized pipeline "
                                      "(an integer Add requantizes both of its inputs)")]


def test_default_options_fuse_everything_and_unknown_activations_are_refused():
    pass_ = FuseEpiloguePass()
    assert pass_.activations is None and pass_.residual
    with pytest.raises(ValueError, match="unknown epilogue activations \\['Swish'\\]"):
        FuseEpiloguePass(activations=frozenset({"Relu", "Swish"}))


# -- the zoo and PP-OCR, after BN folding --------------------------------------------------------

ZOO_CASES = {
    # name: fused nodes expected (after FoldBatchNormPass)
    # (MatMul + constant bias Adds fuse on their own: tiny_transformer 8 of its 12, ppocr_rec 5, ppocr_cls 1.)
    "inverted_residual": 9, "resnet_basic": 5, "se_hardswish": 5, "tiny_transformer": 12,
    "ppocr_det": 21, "ppocr_rec": 13, "ppocr_cls": 14,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ZOO_CASES))
def test_zoo_models_fuse_with_equal_outputs(name):
    from edgekiln.compiler.frontend import load_model
    from edgekiln.passes.fold_batch_norm import FoldBatchNormPass
    from tests.zoo import input_shapes, model_path, sample_input

    graph = load_model(model_path(name), input_shapes(name))
    feeds = sample_input(name)
    reference = run_ort(graph.to_proto(), feeds)
    FoldBatchNormPass().run(graph)
    folded = run_ort(graph.to_proto(), feeds)
    before = len(graph.main)
    result = FuseEpiloguePass().run(graph)
    assert len(result.applied) == ZOO_CASES[name], result.not_applied
    assert len(graph.main) < before
    fused = [n for n in graph.nodes if n.domain == fused_ops.DOMAIN]
    assert len(fused) == ZOO_CASES[name]
    onnx.checker.check_model(graph.to_proto(), full_check=True)
    for want, fold, got in zip(reference, folded, run_ort(graph.to_proto(), feeds)):
        # Fusion itself is exact; vs the original, BN folding's rounding is all the difference.
        assert max_relative_error(fold, got) <= 1e-5
        assert max_relative_error(want, got) <= max(1e-5, 1.01 * max_relative_error(want, fold))
    assert not FuseEpiloguePass().run(graph).changed
