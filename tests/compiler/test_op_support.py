"""Which nodes each backend reports as unsupported, and why."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekiln.compiler.graph import Graph
from tests.support.graphs import build_graph
from edgekiln.compiler.op_support import (
    BACKENDS,
    foldable_nodes,
    load_backend_ops,
    supported_op_types,
    unsupported_nodes,
)
from edgekiln.errors import UnknownTargetError

F = TensorProto.FLOAT

# The usual CNN / transformer ops the ARM CPU runtime must cover.
USUAL_OPS = set(
    """Conv ConvTranspose Gemm MatMul Add Sub Mul Div Relu Clip Sigmoid HardSigmoid HardSwish
    LeakyRelu PRelu Tanh Gelu Erf Softmax LayerNormalization BatchNormalization MaxPool AveragePool
    GlobalAveragePool Concat Reshape Transpose Flatten Squeeze Unsqueeze Resize Pad Slice Split
    ReduceMean Pow Sqrt Shape Gather Cast QuantizeLinear DequantizeLinear""".split()
)


def build(nodes, inputs, outputs=(("y", None),), initializers=(), opset=17, extra_opsets=()) -> Graph:
    return build_graph(nodes, inputs, outputs, initializers, opset, extra_opsets, strict=False)


def const(name: str, array) -> TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def reasons(graph: Graph, backend: str) -> dict[str, str]:
    return {u.node_name: u.reason for u in unsupported_nodes(graph, backend)}


# -- the data files -------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_file_loads(backend):
    spec = load_backend_ops(backend)
    assert spec.backend == backend and spec.precisions and spec.summary
    ops = supported_op_types(backend)
    assert isinstance(ops, frozenset) and {"Conv", "Relu", "Add", "Concat"} <= ops
    assert not ops & set(spec.unsupported)


def test_arm_cpu_covers_the_usual_ops():
    assert USUAL_OPS <= supported_op_types("arm_cpu")


def test_smaller_backends_are_subsets_of_arm_cpu():
    arm = supported_op_types("arm_cpu")
    for backend in ("mobile_gpu", "edgetpu", "fpga_hls"):
        assert supported_op_types(backend) - arm <= {"LSTM"}, backend
        assert len(supported_op_types(backend)) < len(arm)


def test_edgetpu_is_int8_only():
    assert load_backend_ops("edgetpu").precisions == ("int8",)


def test_unknown_backend_names_the_known_ones():
    with pytest.raises(UnknownTargetError, match="arm_cpu"):
        supported_op_types("tpu_v5")


# -- rules every backend shares -------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_custom_domain_is_unsupported_everywhere(backend):
    node = helper.make_node("FusedConv", ["x"], ["y"], name="fused", domain="com.microsoft")
    graph = build([node], [("x", [1, 4])], extra_opsets=[("com.microsoft", 1)])
    (u,) = unsupported_nodes(graph, backend)
    assert (u.node_name, u.op_type, u.domain) == ("fused", "FusedConv", "com.microsoft")
    assert "com.microsoft" in u.reason and "domain" in u.reason


@pytest.mark.parametrize("backend", BACKENDS)
def test_removed_and_folded_nodes_are_not_judged(backend):
    nodes = [
        helper.make_node("Identity", ["x"], ["i"], name="identity"),
        helper.make_node("Dropout", ["i"], ["d"], name="dropout"),
        helper.make_node("Shape", ["d"], ["s"], name="shape"),  # static input: folds
        helper.make_node("Cast", ["s"], ["c"], name="cast", to=TensorProto.INT64),
        helper.make_node("Reshape", ["d", "c"], ["y"], name="reshape"),
    ]
    graph = build(nodes, [("x", [1, 8])])
    assert foldable_nodes(graph) == {"shape", "cast"}
    assert unsupported_nodes(graph, backend) == []


def test_shape_of_a_dynamic_tensor_does_not_fold_and_says_to_pin_dims():
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="shape"),
        helper.make_node("Reshape", ["x", "s"], ["y"], name="reshape"),
    ]
    graph = build(nodes, [("x", ["batch", 8])])
    assert foldable_nodes(graph) == set()
    assert "--input-shape" in reasons(graph, "arm_cpu")["shape"]
    edgetpu = reasons(graph, "edgetpu")
    assert "--input-shape" in edgetpu["shape"]
    assert "compile-time constant" in edgetpu["reshape"]


def test_op_missing_from_the_list_with_its_hint():
    graph = build([helper.make_node("Exp", ["x"], ["y"], name="exp")], [("x", [1, 8])])
    assert unsupported_nodes(graph, "arm_cpu") == []
    assert "no Edge TPU op" in reasons(graph, "edgetpu")["exp"]
    graph = build([helper.make_node("Hardmax", ["x"], ["y"], name="hm")], [("x", [1, 8])])
    assert reasons(graph, "edgetpu")["hm"] == "Hardmax is not supported on edgetpu"


# -- edgetpu limits (Coral's supported-operations table) ------------------------------------


@pytest.mark.parametrize(
    ("shape", "axis", "problem"),
    [
        ([1, 10], -1, None),
        ([10], 0, None),
        ([1, 10, 5], 1, "not the last axis"),
        ([1, 1, 10], -1, "rank 3 > 2"),
        ([4, 10], -1, "not effectively 1-D"),
        ([1, 20000], -1, "20000 > 16000"),
    ],
)
def test_edgetpu_softmax(shape, axis, problem):
    graph = build([helper.make_node("Softmax", ["x"], ["y"], name="sm", axis=axis)], [("x", shape)])
    found = reasons(graph, "edgetpu")
    if problem is None:
        assert found == {}
    else:
        assert problem in found["sm"]


def test_edgetpu_softmax_default_axis_follows_the_opset():
    # opset 11: axis defaults to 1, which on [1, 10, 5] is not the last axis
    graph = build([helper.make_node("Softmax", ["x"], ["y"], name="sm")], [("x", [1, 10, 5])], opset=11)
    assert "axis 1" in reasons(graph, "edgetpu")["sm"]


def test_edgetpu_rank_and_batch_limits():
    graph = build([helper.make_node("Relu", ["x"], ["y"], name="r")], [("x", [1, 2, 3, 4, 5])])
    assert "rank 5 > 4" in reasons(graph, "edgetpu")["r"]
    assert unsupported_nodes(graph, "arm_cpu") == []
    graph = build([helper.make_node("Relu", ["x"], ["y"], name="r")], [("x", [2, 3, 8, 8])])
    assert "innermost 3 dims" in reasons(graph, "edgetpu")["r"]


def test_edgetpu_conv_dilation_and_constant_weights():
    w = const("w", np.zeros((4, 4, 3, 3), np.float32))
    plain = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", kernel_shape=[3, 3])
    dilated = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", kernel_shape=[3, 3], dilations=[2, 2])
    assert reasons(build([plain], [("x", [1, 4, 16, 16])], initializers=[w]), "edgetpu") == {}
    found = reasons(build([dilated], [("x", [1, 4, 16, 16])], initializers=[w]), "edgetpu")
    assert "dilations=[2, 2]" in found["conv"] and "SPACE_TO_BATCH_ND" in found["conv"]
    dynamic_w = build([plain], [("x", [1, 4, 16, 16]), ("w", [4, 4, 3, 3])])
    assert "input 1 ('w') must be a compile-time constant" in reasons(dynamic_w, "edgetpu")["conv"]


def test_edgetpu_matmul_needs_a_constant_right_operand():
    node = helper.make_node("MatMul", ["a", "b"], ["y"], name="mm")
    graph = build([node], [("a", [1, 4, 8]), ("b", [1, 8, 4])])
    assert "BATCH_MATMUL" in reasons(graph, "edgetpu")["mm"]
    graph = build([node], [("a", [1, 4, 8])], initializers=[const("b", np.zeros((8, 4), np.float32))])
    assert reasons(graph, "edgetpu") == {}


def test_edgetpu_resize_modes_and_axes():
    def resize(mode, scales):
        node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="rs", mode=mode)
        return build([node], [("x", [1, 4, 8, 8])], initializers=[const("scales", np.array(scales, np.float32))])

    assert reasons(resize("nearest", [1, 1, 2, 2]), "edgetpu") == {}
    assert reasons(resize("linear", [1, 1, 2, 2]), "edgetpu") == {}
    assert "mode='cubic'" in reasons(resize("cubic", [1, 1, 2, 2]), "edgetpu")["rs"]
    assert "only the spatial axes" in reasons(resize("nearest", [1, 2, 2, 2]), "edgetpu")["rs"]
    assert "mode='linear'" in reasons(resize("linear", [1, 1, 2, 2]), "fpga_hls")["rs"]


def test_edgetpu_reductions():
    def mean(axes):
        node = helper.make_node("ReduceMean", ["x"], ["y"], name="mean", axes=axes)
        return build([node], [("x", [1, 4, 8, 8])], opset=13)

    assert reasons(mean([2, 3]), "edgetpu") == {}
    assert "only the spatial axes" in reasons(mean([1]), "edgetpu")["mean"]
    node = helper.make_node("ReduceMax", ["x", "axes"], ["y"], name="max")
    graph = build([node], [("x", [2, 4])], initializers=[const("axes", np.array([0], np.int64))], opset=18)
    assert "batch axis" in reasons(graph, "edgetpu")["max"]


def test_edgetpu_squeeze_only_leading_ones():
    def squeeze(shape, axes):
        node = helper.make_node("Squeeze", ["x", "axes"], ["y"], name="sq")
        return build([node], [("x", shape)], initializers=[const("axes", np.array(axes, np.int64))])

    assert reasons(squeeze([1, 5, 10], [0]), "edgetpu") == {}
    assert reasons(squeeze([1, 1, 10], [1]), "edgetpu") == {}
    assert "relayout" in reasons(squeeze([1, 5, 1, 10], [2]), "edgetpu")["sq"]


def test_edgetpu_slice_steps_and_concat_constants():
    starts, ends = const("st", np.array([0], np.int64)), const("en", np.array([8], np.int64))
    axes = const("ax", np.array([3], np.int64))
    node = helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["y"], name="sl")
    for step, ok in ((1, True), (2, False)):
        graph = build([node], [("x", [1, 2, 8, 8])], initializers=[starts, ends, axes, const("sp", np.array([step], np.int64))])
        assert (reasons(graph, "edgetpu") == {}) is ok

    def concat(values, extra=0):
        names = ["x", "c"] + [f"e{i}" for i in range(extra)]
        node = helper.make_node("Concat", names, ["y"], name="cat", axis=3)
        inits = [const("c", np.full((1, 2, 4, 2), values, np.float32))]
        return build([node], [("x", [1, 2, 4, 4])] + [(f"e{i}", [1, 2, 4, 1]) for i in range(extra)], initializers=inits)

    assert reasons(concat(0.0), "edgetpu") == {}
    assert "not all zeros" in reasons(concat(1.0), "edgetpu")["cat"]
    assert "only with 2 inputs" in reasons(concat(0.0, extra=1), "edgetpu")["cat"]


# -- fpga_hls and mobile_gpu ------------------------------------------------------------------


def test_fpga_conv_must_be_dense_or_depthwise():
    def conv(group, cin):
        node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", kernel_shape=[1, 1], group=group)
        w = const("w", np.zeros((8, cin // group, 1, 1), np.float32))
        return build([node], [("x", [1, cin, 4, 4])], initializers=[w])

    assert reasons(conv(1, 8), "fpga_hls") == {}
    assert reasons(conv(8, 8), "fpga_hls") == {}
    assert "neither dense nor depthwise" in reasons(conv(2, 8), "fpga_hls")["conv"]
    assert reasons(conv(2, 8), "arm_cpu") == {}


def test_layer_norm_support_differs_by_backend():
    node = helper.make_node("LayerNormalization", ["x", "g"], ["y"], name="ln", axis=-1)
    graph = build([node], [("x", [1, 16, 64])], initializers=[const("g", np.ones(64, np.float32))])
    assert reasons(graph, "arm_cpu") == {} and reasons(graph, "mobile_gpu") == {}
    assert "LayerNormalization" in reasons(graph, "fpga_hls")["ln"]
    assert "channel axis" in reasons(graph, "edgetpu")["ln"]


def test_fpga_softmax_width_limit():
    graph = build([helper.make_node("Softmax", ["x"], ["y"], name="sm")], [("x", [1, 6625])])
    assert "6625 > 1024" in reasons(graph, "fpga_hls")["sm"]
    assert reasons(graph, "arm_cpu") == {}


def test_unsupported_nodes_are_in_graph_order():
    nodes = [
        helper.make_node("Gelu", ["x"], ["a"], name="first"),
        helper.make_node("Relu", ["a"], ["b"], name="ok"),
        helper.make_node("Erf", ["b"], ["y"], name="second"),
    ]
    graph = build(nodes, [("x", [1, 8])], opset=20)
    assert [u.node_name for u in unsupported_nodes(graph, "edgetpu")] == ["first", "second"]


# -- edgekiln fused nodes ---------------------------------------------------------------------


def fused(op_type: str, inputs=("x", "w", "b"), x_shape=(1, 4, 8, 8), initializers=None, **attrs) -> Graph:
    """One edgekiln-domain node over x (weights w, b constant unless left out of initializers)."""
    if initializers is None:
        initializers = [const("w", np.zeros((4, 4, 3, 3), np.float32)), const("b", np.zeros(4, np.float32))]
    node = helper.make_node(op_type, list(inputs), ["y"], name="fused", domain="edgekiln", **attrs)
    return build([node], [("x", list(x_shape))], initializers=initializers, extra_opsets=[("edgekiln", 1)])


def test_epilogue_needs_cover_every_fused_step():
    from edgekiln.compiler import fused_ops
    from edgekiln.compiler.op_support import EPILOGUE_NEEDS

    assert set(EPILOGUE_NEEDS) == {fused_ops.RESIDUAL, *fused_ops.ACTIVATIONS}


@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_conv_with_supported_epilogue_is_supported_everywhere(backend):
    for op_type in ("FusedConvRelu", "FusedConvAddClip", "FusedConvSiLU", "FusedConvHardSwish", "FusedConv"):
        inputs = ("x", "w", "b", "x") if "Add" in op_type else ("x", "w", "b")
        assert reasons(fused(op_type, inputs, kernel_shape=[3, 3], pads=[1, 1, 1, 1]), backend) == {}, op_type


def test_fused_epilogue_steps_need_their_ops():
    gelu = fused("FusedConvGelu", kernel_shape=[3, 3])
    assert reasons(gelu, "arm_cpu") == {} and reasons(gelu, "mobile_gpu") == {}
    assert reasons(gelu, "edgetpu")["fused"] == ("FusedConvGelu on edgetpu: the Gelu step needs Gelu or Erf "
                                                 "(no Edge TPU op)")
    assert "the Gelu step needs Gelu or Erf" in reasons(gelu, "fpga_hls")["fused"]
    # LeakyRelu is written as PRELU for the Edge TPU; Exp has no Edge TPU op at all.
    assert reasons(fused("FusedConvLeakyRelu", act_alpha=0.1), "edgetpu") == {}
    # GeluTanh needs only Tanh, which the Edge TPU has.
    assert reasons(fused("FusedConvGeluTanh"), "edgetpu") == {}


def test_fused_node_is_judged_by_its_base_op_constraints():
    # The base op's attribute defaults and constant-input rules apply to the fused node.
    dilated = fused("FusedConvRelu", kernel_shape=[3, 3], dilations=[2, 2])
    assert "dilations=[2, 2]" in reasons(dilated, "edgetpu")["fused"]
    grouped = fused("FusedConvRelu", x_shape=(1, 8, 8, 8), group=2,
                    initializers=[const("w", np.zeros((4, 4, 3, 3), np.float32)), const("b", np.zeros(4, np.float32))])
    assert "neither dense nor depthwise" in reasons(grouped, "fpga_hls")["fused"]
    node = helper.make_node("FusedMatMulRelu", ["x", "w", "b"], ["y"], name="fused", domain="edgekiln")
    attention_like = build([node], [("x", [1, 4, 8]), ("w", [8, 8])], initializers=[const("b", np.zeros(8, np.float32))],
                           extra_opsets=[("edgekiln", 1)])
    assert "input 1 ('w') must be a compile-time constant" in reasons(attention_like, "edgetpu")["fused"]
    assert reasons(attention_like, "arm_cpu") == {}
    gemm = fused("FusedGemmRelu", ("x", "w", "b"), x_shape=(2, 4), transA=1,
                 initializers=[const("w", np.zeros((2, 4), np.float32)), const("b", np.zeros(4, np.float32))])
    assert "transA=1 not in [0]" in reasons(gemm, "edgetpu")["fused"]


def test_standalone_edgekiln_gelu_and_unknown_edgekiln_ops():
    gelu, gelu_tanh = fused("Gelu", ("x",), initializers=[]), fused("GeluTanh", ("x",), initializers=[])
    assert reasons(gelu, "arm_cpu") == {} and reasons(gelu_tanh, "arm_cpu") == {}
    assert "the Gelu step needs Gelu or Erf" in reasons(gelu, "edgetpu")["fused"]
    assert reasons(gelu_tanh, "edgetpu") == {}  # tanh-GELU needs only Tanh
    unknown = fused("FusedPool", ("x",), initializers=[])
    for backend in BACKENDS:
        assert "not one of edgekiln's fused ops" in reasons(unknown, backend)["fused"]
