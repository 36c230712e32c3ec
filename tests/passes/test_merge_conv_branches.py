"""MergeConvBranchesPass: RepVGG / MobileOne branch sums become one Conv.

Per case: fire count, structure, onnxruntime outputs equal to the original model, a
second run changes nothing, and the sums it must leave alone with their reason.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekiln.compiler.graph import Graph
from edgekiln.passes.merge_conv_branches import MergeConvBranchesPass
from tests.conftest import max_relative_error, run_ort

RNG = np.random.default_rng(7)


class Builder:
    """Collects onnx.helper nodes and numpy initializers for one small model reading `x`."""

    def __init__(self, shape=(1, 4, 8, 8)) -> None:
        self.shape, self.nodes, self.inits, self.extra_inputs = list(shape), [], [], []

    def const(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def conv(self, name: str, source: str, c_out: int, kernel, *, group: int = 1, bias: bool = True,
             weight: str | None = None, c_in: int | None = None, **attrs) -> str:
        kernel = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
        c_in = self.shape[1] if c_in is None else c_in
        attrs.setdefault("pads", [k // 2 for k in kernel] * 2)
        if weight is None:
            weight = self.const(f"{name}.w", RNG.standard_normal((c_out, c_in // group, *kernel)) * 0.3)
        inputs = [source, weight] + ([self.const(f"{name}.b", RNG.standard_normal(c_out))] if bias else [])
        self.nodes.append(helper.make_node("Conv", inputs, [name], name=name, group=group, **attrs))
        return name

    def bn(self, name: str, source: str, channels: int | None = None) -> str:
        c = self.shape[1] if channels is None else channels
        params = [self.const(f"{name}.gamma", RNG.uniform(0.5, 1.5, c)), self.const(f"{name}.beta", RNG.normal(0, 0.1, c)),
                  self.const(f"{name}.mean", RNG.normal(0, 0.2, c)), self.const(f"{name}.var", RNG.uniform(0.5, 2, c))]
        self.nodes.append(helper.make_node("BatchNormalization", [source, *params], [name], name=name, epsilon=1e-5))
        return name

    def op(self, op_type: str, inputs: list[str], name: str) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=name))
        return name

    def add_chain(self, terms: list[str], prefix: str = "add") -> str:
        """((t0 + t1) + t2) + ...: the exporter's left-deep Add chain."""
        total = terms[0]
        for i, term in enumerate(terms[1:]):
            total = self.op("Add", [total, term], f"{prefix}_{i}")
        return total

    def model(self, output: str, relu: bool = True) -> onnx.ModelProto:
        if relu:
            output = self.op("Relu", [output], "relu")
        self.nodes.append(helper.make_node("Identity", [output], ["y"], name="out"))
        graph = helper.make_graph(
            self.nodes, "branches",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, self.shape), *self.extra_inputs],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def _feeds(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
            for i in model.graph.input}


def _merge(model: onnx.ModelProto, fires: int = 1) -> Graph:
    """Run the pass and check fire count, numerics and idempotence; return the graph."""
    graph = Graph.from_proto(model)
    result = MergeConvBranchesPass().run(graph)
    assert result.changed and len(result.applied) == fires, result.not_applied
    onnx.checker.check_model(graph.to_proto(), full_check=True)
    feeds = _feeds(model)
    for want, got in zip(run_ort(model, feeds), run_ort(graph.to_proto(), feeds)):
        assert got.shape == want.shape
        assert max_relative_error(want, got) <= 1e-5
    before = graph.to_bytes()
    again = MergeConvBranchesPass().run(graph)
    assert not again.changed and not again.applied and graph.to_bytes() == before
    return graph


def _refused(model: onnx.ModelProto) -> str:
    """The one reason the pass gives for leaving the model unchanged."""
    graph = Graph.from_proto(model)
    before = graph.to_bytes()
    result = MergeConvBranchesPass().run(graph)
    assert not result.changed and not result.applied and graph.to_bytes() == before
    assert len(result.not_applied) == 1, result.not_applied
    return result.not_applied[0]


def _only_conv(graph: Graph) -> onnx.NodeProto:
    convs = [n for n in graph.to_proto().graph.node if n.op_type == "Conv"]
    assert len(convs) == 1
    return convs[0]


# -- merges ----------------------------------------------------------------------------

def test_repvgg_block_becomes_one_3x3_conv():
    # Cases 1 + 3: 3x3 conv + 1x1 conv (BN already folded) + identity BN, then ReLU.
    b = Builder()
    total = b.add_chain([b.conv("dense", "x", 4, 3), b.conv("pointwise", "x", 4, 1), b.bn("identity", "x")])
    graph = _merge(b.model(total))
    assert graph.count_ops() == {"Conv": 1, "Identity": 1, "Relu": 1}
    conv = _only_conv(graph)
    assert conv.name == "dense" and list(helper.get_attribute_value(conv.attribute[0])) == [3, 3]
    # the branches' own weights are gone; only the merged ones remain
    assert sorted(graph.main.initializers) == ["dense.w_merged", "dense.w_merged_bias"]


@pytest.mark.parametrize("group", [1, 2, 4])
def test_identity_branch_in_dense_grouped_and_depthwise_convs(group):
    # Case 2: x itself, the identity at each group's local channel index.
    b = Builder()
    total = b.add_chain([b.conv("c3", "x", 4, 3, group=group), "x", b.conv("c1", "x", 4, 1, group=group, bias=False)])
    graph = _merge(b.model(total))
    assert helper.get_attribute_value(next(a for a in _only_conv(graph).attribute if a.name == "group")) == group


@pytest.mark.parametrize("tree", ["chain", "balanced", "sum"])
def test_mobileone_depthwise_stage_any_add_tree(tree):
    # Case 4: k=3 depthwise 3x3 + depthwise 1x1 scale + skip BN, however the sum is spelled.
    b = Builder()
    terms = [b.conv(f"dw{i}", "x", 4, 3, group=4) for i in range(3)]
    terms += [b.conv("scale", "x", 4, 1, group=4), b.bn("skip", "x")]
    if tree == "chain":
        total = b.add_chain(terms)
    elif tree == "balanced":
        left = b.op("Add", [b.op("Add", terms[:2], "a01"), terms[2]], "a012")
        total = b.op("Add", [left, b.op("Add", terms[3:], "a34")], "a_all")
    else:
        total = b.op("Sum", terms, "sum")
    graph = _merge(b.model(total))
    assert graph.count_ops() == {"Conv": 1, "Identity": 1, "Relu": 1}


def test_mobileone_block_depthwise_then_pointwise_stage():
    b = Builder()
    dw = b.add_chain([b.conv("scale", "x", 4, 1, group=4), b.bn("dw_skip", "x"),
                      *(b.conv(f"dw{i}", "x", 4, 3, group=4) for i in range(3))], "dw_add")
    mid = b.op("Relu", [dw], "dw_relu")
    pw = b.add_chain([b.bn("pw_skip", mid), *(b.conv(f"pw{i}", mid, 4, 1) for i in range(3))], "pw_add")
    graph = _merge(b.model(pw), fires=2)
    assert graph.count_ops() == {"Conv": 2, "Identity": 1, "Relu": 2}


def test_stride_2_branches_and_tf_style_begin_aligned_padding():
    # RepVGG's downsampling block, once with "same" pads and once TF-style (0 before, 1 after):
    # the 1x1 kernel lands where the 3x3 reads the pixel the 1x1 reads (top-left when pads start at 0).
    for pads3 in ([1, 1, 1, 1], [0, 0, 1, 1]):
        b = Builder()
        total = b.add_chain([b.conv("c3", "x", 8, 3, strides=[2, 2], pads=pads3),
                             b.conv("c1", "x", 8, 1, strides=[2, 2])])
        _merge(b.model(total))


def test_asymmetric_kernels_merge_axis_by_axis():
    # ACNet-style 3x3 + 1x3 + 3x1 (+ identity): each axis is aligned on its own.
    b = Builder()
    total = b.add_chain([b.conv("sq", "x", 4, 3), b.conv("hor", "x", 4, (1, 3)), b.conv("ver", "x", 4, (3, 1)), "x"])
    graph = _merge(b.model(total))
    assert _only_conv(graph).name == "sq"


def test_back_to_back_blocks_merge_in_one_run():
    # The first sum is both the second block's identity branch and its conv input; the
    # second rewrite must see the first one's merged conv, not the removed Add.
    b = Builder()
    first = b.add_chain([b.conv("a3", "x", 4, 3), b.conv("a1", "x", 4, 1)], "first")
    second = b.add_chain([b.conv("b3", first, 4, 3), first], "second")
    graph = _merge(b.model(second), fires=2)
    assert graph.count_ops() == {"Conv": 2, "Identity": 1, "Relu": 1}


def test_sum_that_is_a_graph_output_keeps_its_name():
    b = Builder()
    total = b.add_chain([b.conv("c3", "x", 4, 3), b.conv("c1", "x", 4, 1)])
    model = b.model(total, relu=False)
    model.graph.node.pop()  # drop the Identity: the Add itself produces y
    model.graph.node[-1].output[0] = "y"
    graph = _merge(model)
    assert [v.name for v in graph.outputs] == ["y"] and graph.outputs[0].producer().op_type == "Conv"


# -- refusals --------------------------------------------------------------------------

def _refusal_model(case: str) -> onnx.ModelProto:
    b = Builder()
    if case == "strides":  # both give 3x3 outputs on a 5x5 input
        b.shape = [1, 4, 5, 5]
        terms = [b.conv("c3", "x", 4, 3, pads=[0, 0, 0, 0]), b.conv("c1", "x", 4, 1, strides=[2, 2])]
    elif case == "groups":
        terms = [b.conv("dw", "x", 4, 3, group=4), b.conv("pw", "x", 4, 1)]
    elif case == "padding":
        terms = [b.conv("a", "x", 4, 3), b.conv("b", "x", 4, 3, pads=[0, 0, 2, 2])]
    elif case == "dilation":
        terms = [b.conv("dil", "x", 4, 3, dilations=[2, 2], pads=[2, 2, 2, 2]), b.conv("c1", "x", 4, 1)]
    elif case == "read_elsewhere":
        terms = [b.conv("c3", "x", 4, 3), b.conv("c1", "x", 4, 1)]
        b.op("Sigmoid", ["c1"], "peek")  # a second reader of the 1x1 branch
    elif case == "shared_weights":
        weight = b.const("shared.w", RNG.standard_normal((4, 4, 3, 3)))
        terms = [b.conv("a2", "x", 4, 3, weight=weight), b.conv("c1", "x", 4, 1)]
        b.conv("elsewhere", "x", 4, 3, weight=weight)  # tied weights outside the sum
    elif case == "non_constant":
        b.extra_inputs.append(helper.make_tensor_value_info("w_in", TensorProto.FLOAT, [4, 4, 3, 3]))
        terms = [b.conv("c3", "x", 4, 3, weight="w_in"), b.conv("c1", "x", 4, 1)]
    elif case == "nonlinear":
        terms = [b.conv("c3", "x", 4, 3), b.op("Relu", [b.conv("c1", "x", 4, 1)], "branch_relu"), b.bn("skip", "x")]
    elif case == "unfolded_bn":
        terms = [b.conv("c3", "x", 4, 3), b.bn("bn", b.conv("c1", "x", 4, 1, bias=False)), "x"]
    elif case == "channels":
        b.shape = [1, 1, 8, 8]
        terms = [b.conv("c3", "x", 4, 3), "x"]  # Add broadcasts x over 4 channels
    else:
        raise AssertionError(case)
    return b.model(b.add_chain(terms, "sum"))


@pytest.mark.parametrize("case, reason", [
    ("strides", "branches have different strides: 1 vs 2"),
    ("groups", "branches have different groups: 1 vs 4"),
    ("padding", "branch paddings do not line up: b (Conv) 3x3 pads 0 at the start of axis 2, a (Conv) 3x3 pads 1"),
    ("dilation", "branch dil (Conv) has dilation 2, not 1"),
    ("read_elsewhere", "the output of branch c1 (Conv) is read elsewhere"),
    ("shared_weights", "the weights of branch a2 (Conv) are shared with other nodes"),
    ("non_constant", "the weights of branch c3 (Conv) are not constant initializers"),
    ("nonlinear", "branch branch_relu (Relu) is not a Conv, BatchNormalization or identity of x"),
    ("unfolded_bn", "branch bn (BatchNormalization) reads c1, not the shared input x"),
    ("channels", "an identity branch needs Cin == Cout, but the input has 1 channels and the sum 4"),
])
def test_refused_with_reason(case, reason):
    message = _refused(_refusal_model(case))
    assert message.startswith("sum_") and reason in message, message


def test_sums_without_a_conv_branch_or_a_shared_input_are_not_candidates():
    # x + BN(x) has nothing to re-parameterize; a ResNet residual conv(h) + x reads two inputs.
    b = Builder()
    skip = b.add_chain([b.bn("bn", "x"), "x"], "a")
    h = b.op("Relu", [b.conv("c0", skip, 4, 3)], "h")
    total = b.add_chain([b.conv("c1", h, 4, 3), skip], "res")
    result = MergeConvBranchesPass().run(Graph.from_proto(b.model(total)))
    assert not result.changed and result.not_applied == []


# -- the zoo, after BN folding -----------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name, blocks, convs", [("repvgg", 2, 3), ("mobileone", 4, 5)])
def test_zoo_blocks_fold_and_merge_to_one_conv_each(name, blocks, convs):
    from edgekiln.compiler.frontend import load_model
    from edgekiln.passes.fold_batch_norm import FoldBatchNormPass
    from tests.zoo import input_shapes, model_path, sample_input

    graph = load_model(model_path(name), input_shapes(name))
    before = graph.count_ops()
    assert FoldBatchNormPass().run(graph).changed  # the pipeline order: fold first, then merge
    result = MergeConvBranchesPass().run(graph)
    assert len(result.applied) == blocks, result.not_applied
    after = graph.count_ops()
    assert before["Add"] > 0 and "Add" not in after and "BatchNormalization" not in after
    assert after["Conv"] == convs and after["Relu"] == before["Relu"]
    onnx.checker.check_model(graph.to_proto(), full_check=True)
    feeds = sample_input(name)
    for want, got in zip(run_ort(model_path(name), feeds), run_ort(graph.to_proto(), feeds)):
        assert max_relative_error(want, got) <= 1e-5
    assert not MergeConvBranchesPass().run(graph).changed
