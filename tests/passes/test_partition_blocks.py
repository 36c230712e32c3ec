"""PartitionBlocksPass: which fused convs form a block, the annotations, refusals, idempotence."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgekiln.compiler.graph import Graph
from edgekiln.compiler.lowering import lower_graph
from edgekiln.passes.fuse_epilogue import FuseEpiloguePass
from edgekiln.passes.partition_blocks import (
    BLOCK_KEY,
    BLOCK_KIND_KEY,
    PartitionBlocksPass,
)
from tests.conftest import max_relative_error, run_ort
from tests.support.graphs import build_graph


class Net:
    """Conv chains from onnx.helper pieces, with random weights."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.rng = np.random.default_rng(0)

    def conv(self, name: str, source: str, cin: int, cout: int, k: int, stride: int = 1, group: int = 1) -> str:
        w = self.rng.standard_normal((cout, cin // group, k, k)).astype(np.float32) * 0.3
        self.inits += [numpy_helper.from_array(w, f"{name}.w"),
                       numpy_helper.from_array(self.rng.standard_normal(cout).astype(np.float32), f"{name}.b")]
        self.nodes.append(helper.make_node("Conv", [source, f"{name}.w", f"{name}.b"], [f"{name}.out"], name,
                                           kernel_shape=[k, k], pads=[k // 2] * 4, strides=[stride] * 2, group=group))
        return f"{name}.out"

    def op(self, op_type: str, inputs: list[str], name: str) -> str:
        if op_type == "Clip":
            self.inits += [numpy_helper.from_array(np.float32(0), f"{name}.lo"),
                           numpy_helper.from_array(np.float32(6), f"{name}.hi")]
            inputs = [*inputs, f"{name}.lo", f"{name}.hi"]
        self.nodes.append(helper.make_node(op_type, inputs, [f"{name}.out"], name))
        return f"{name}.out"

    def graph(self, inputs, outputs) -> Graph:
        graph = build_graph(self.nodes, inputs, [(o, None) for o in outputs], self.inits)
        FuseEpiloguePass().run(graph)
        return graph


def inverted_residual(expand: bool = True, expand_stride: int = 1, residual: bool = True,
                      dw_extra_reader: bool = False, project_act: bool = False) -> tuple[Graph, dict]:
    net = Net()
    h = "x"
    if expand:
        h = net.op("Clip", [net.conv("expand", h, 8, 16, 1, expand_stride)], "expand_act")
    channels = 16 if expand else 8
    d = net.op("Clip", [net.conv("dw", h, channels, channels, 3, group=channels)], "dw_act")
    p = net.conv("project", d, channels, 8, 1)
    if project_act:
        p = net.op("Relu", [p], "project_act")
    outputs = [net.op("Add", [p, "x"], "add") if residual and expand_stride == 1 else p]
    if dw_extra_reader:
        outputs.append(net.op("Sigmoid", [d], "side"))
    x = np.random.default_rng(1).standard_normal((1, 8, 8, 8)).astype(np.float32)
    return net.graph([("x", [1, 8, 8, 8])], outputs), {"x": x}


def basic_residual(downsample: bool = False, extra_reader: bool = False) -> tuple[Graph, dict]:
    net = Net()
    stride, cout = (2, 8) if downsample else (1, 4)
    h = net.op("Relu", [net.conv("conv1", "x", 4, cout, 3, stride)], "relu1")
    skip = net.conv("downsample", "x", 4, cout, 1, stride) if downsample else "x"
    out = net.op("Relu", [net.op("Add", [net.conv("conv2", h, cout, cout, 3), skip], "add")], "relu2")
    outputs = [out, net.op("Sigmoid", [h], "side")] if extra_reader else [out]
    x = np.random.default_rng(2).standard_normal((1, 4, 8, 8)).astype(np.float32)
    return net.graph([("x", [1, 4, 8, 8])], outputs), {"x": x}


def partition(graph: Graph, feeds: dict, expect_blocks: int):
    """Run the pass; the annotations change no numbers, and a second run changes nothing."""
    before = graph.to_proto()
    result = PartitionBlocksPass().run(graph)
    assert len(result.applied) == expect_blocks, (result.applied, result.not_applied)
    assert result.changed == (expect_blocks > 0)
    proto = graph.to_proto()
    onnx.checker.check_model(proto, full_check=True)
    for want, got in zip(run_ort(before, feeds), run_ort(proto, feeds)):
        assert max_relative_error(want, got) == 0.0
    snapshot = graph.to_bytes()
    again = PartitionBlocksPass().run(graph)
    assert not again.changed and again.applied == [] and graph.to_bytes() == snapshot
    return result


def blocks(graph: Graph) -> dict[str, str]:
    return {n.name: n.metadata_props[BLOCK_KEY] for n in graph.nodes if BLOCK_KEY in n.metadata_props}


# -- Case 1: inverted residual -------------------------------------------------------------------

def test_inverted_residual_with_expand_and_residual():
    graph, feeds = inverted_residual()
    assert graph.count_ops() == {"FusedConvAdd": 1, "FusedConvClip": 2}
    result = partition(graph, feeds, expect_blocks=1)
    assert result.applied == ["block inverted_residual_0: expand -> dw -> project (+residual)"]
    assert blocks(graph) == {"expand": "inverted_residual_0", "dw": "inverted_residual_0",
                             "project": "inverted_residual_0"}
    assert {n.metadata_props[BLOCK_KIND_KEY] for n in graph.nodes} == {"inverted_residual"}


def test_inverted_residual_without_expand_stage_or_residual():
    graph, feeds = inverted_residual(expand=False, residual=False)
    assert graph.count_ops() == {"Conv": 1, "FusedConvClip": 1}  # the project conv has no epilogue
    result = partition(graph, feeds, expect_blocks=1)
    assert result.applied == ["block inverted_residual_0: dw -> project"]


def test_stride_two_expand_is_left_out_of_the_block():
    graph, feeds = inverted_residual(expand_stride=2)
    result = partition(graph, feeds, expect_blocks=1)
    assert result.applied == [("block inverted_residual_0: dw -> project; "
                              "expand conv expand (FusedConvClip) left out: stride-2 expand")]
    assert "expand" not in blocks(graph)


def test_depthwise_output_read_twice_is_refused():
    graph, feeds = inverted_residual(dw_extra_reader=True)
    result = partition(graph, feeds, expect_blocks=0)
    assert result.not_applied == ["inverted_residual at dw (FusedConvClip): depthwise output read by 2 nodes"]


# -- Case 3: depthwise separable -----------------------------------------------------------------

def test_project_conv_with_activation_makes_a_depthwise_separable_block():
    graph, feeds = inverted_residual(residual=False, project_act=True)
    result = partition(graph, feeds, expect_blocks=1)
    assert result.applied == ["block depthwise_separable_0: dw -> project (Clip, then Relu)"]
    assert blocks(graph) == {"dw": "depthwise_separable_0", "project": "depthwise_separable_0"}
    assert "expand" not in blocks(graph)  # an expand conv belongs to linear bottlenecks only


def test_nodes_in_another_block_are_not_taken():
    graph, feeds = inverted_residual()
    graph.node("project").metadata_props.update({BLOCK_KEY: "attention_0", BLOCK_KIND_KEY: "attention"})
    result = partition(graph, feeds, expect_blocks=0)
    assert result.not_applied == [("inverted_residual at dw (FusedConvClip): "
                                  "project (FusedConvAdd) is already in block attention_0")]
    assert blocks(graph) == {"project": "attention_0"}


# -- Case 2: basic residual ----------------------------------------------------------------------

def test_basic_residual_with_identity_skip():
    graph, feeds = basic_residual()
    assert graph.count_ops() == {"FusedConvAddRelu": 1, "FusedConvRelu": 1}
    result = partition(graph, feeds, expect_blocks=1)
    assert result.applied == ["block basic_residual_0: conv1 -> conv2 (+residual)"]


def test_basic_residual_with_downsample_conv_takes_it_in():
    graph, feeds = basic_residual(downsample=True)
    assert graph.count_ops() == {"Conv": 1, "FusedConvAddRelu": 1, "FusedConvRelu": 1}
    result = partition(graph, feeds, expect_blocks=1)
    assert result.applied == [("block basic_residual_0: conv1 -> downsample -> conv2 "
                              "(+residual through downsample downsample)")]
    assert set(blocks(graph)) == {"conv1", "downsample", "conv2"}


def test_basic_residual_first_output_read_elsewhere_is_refused():
    graph, feeds = basic_residual(extra_reader=True)
    result = partition(graph, feeds, expect_blocks=0)
    assert result.not_applied == ["basic_residual at conv2 (FusedConvAddRelu): first conv output read by 2 nodes"]


def test_block_numbers_continue_after_existing_ones_and_lowering_carries_them():
    net = Net()
    h = "x"
    for i in range(2):  # two basic residual blocks in a row
        a = net.op("Relu", [net.conv(f"a{i}", h, 4, 4, 3)], f"relu_a{i}")
        h = net.op("Relu", [net.op("Add", [net.conv(f"b{i}", a, 4, 4, 3), h], f"add{i}")], f"relu_b{i}")
    graph = net.graph([("x", [1, 4, 8, 8])], [h])
    for name in ("a0", "b0"):  # as if an earlier run had made block 4
        graph.node(name).metadata_props.update({BLOCK_KEY: "basic_residual_4", BLOCK_KIND_KEY: "basic_residual"})
    feeds = {"x": np.random.default_rng(3).standard_normal((1, 4, 8, 8)).astype(np.float32)}
    result = partition(graph, feeds, expect_blocks=1)
    assert result.applied == ["block basic_residual_5: a1 -> b1 (+residual)"]
    program = lower_graph(graph)
    assert [(c.name, c.op, c.block) for c in program.calls] == [
        ("a0", "FusedConv", "basic_residual_4"), ("b0", "FusedConv", "basic_residual_4"),
        ("a1", "FusedConv", "basic_residual_5"), ("b1", "FusedConv", "basic_residual_5")]
    assert "# block basic_residual_5" in program.to_text()


# -- the zoo, after BN folding and epilogue fusion ------------------------------------------------

ZOO_BLOCKS = {
    # name: (inverted_residual blocks, basic_residual blocks)
    "inverted_residual": (3, 0), "resnet_basic": (0, 2), "se_hardswish": (0, 0), "tiny_transformer": (0, 0),
    "ppocr_det": (0, 0), "ppocr_rec": (0, 0), "ppocr_cls": (2, 0),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ZOO_BLOCKS))
def test_zoo_models_partition_and_lower_with_block_ids(name):
    from edgekiln.compiler import fused_ops
    from edgekiln.compiler.frontend import load_model
    from edgekiln.passes.fold_batch_norm import FoldBatchNormPass
    from tests.zoo import input_shapes, model_path, sample_input

    graph = load_model(model_path(name), input_shapes(name))
    feeds = sample_input(name)
    FoldBatchNormPass().run(graph)
    FuseEpiloguePass().run(graph)
    fused = run_ort(graph.to_proto(), feeds)
    result = PartitionBlocksPass().run(graph)
    counts = (sum(m.startswith("block inverted_residual_") for m in result.applied),
              sum(m.startswith("block basic_residual_") for m in result.applied))
    assert counts == ZOO_BLOCKS[name], (result.applied, result.not_applied)
    for want, got in zip(fused, run_ort(graph.to_proto(), feeds)):
        assert max_relative_error(want, got) == 0.0
    assert not PartitionBlocksPass().run(graph).changed

    program = lower_graph(graph)
    fused_nodes = [n for n in graph.nodes if n.domain == fused_ops.DOMAIN]
    fused_calls = [c for c in program.calls if c.op.startswith("Fused")]
    assert len(fused_calls) == len(fused_nodes)  # one kernel call per fused node
    # Every fused call says its epilogue; only a MatMul whose bias was all it fused has none.
    assert all(c.attrs["epilogue"] or c.op == "FusedMatMul" for c in fused_calls)
    annotated = {n.name: n.metadata_props[BLOCK_KEY] for n in graph.nodes if BLOCK_KEY in n.metadata_props}
    assert {c.name: c.block for c in program.calls if c.block} == annotated
    assert len(set(annotated.values())) == sum(counts)
