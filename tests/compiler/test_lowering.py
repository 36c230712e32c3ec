"""Lowering a float graph to a Program: calls, tensors, constants, arena, and refusals."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekiln.compiler.graph import Graph
from edgekiln.compiler.lowering import lower_graph
from edgekiln.compiler.memory_planner import buffer_lifetimes, verify_plan
from edgekiln.compiler.program import Program
from edgekiln.errors import DynamicShapeError, UnsupportedOpError

FLOAT = TensorProto.FLOAT


def make_graph(nodes, inputs, outputs, initializers=(), opset=17) -> Graph:
    model = helper.make_model(
        helper.make_graph(nodes, "g", inputs, outputs, list(initializers)),
        opset_imports=[helper.make_opsetid("", opset)])
    return Graph.from_proto(onnx.shape_inference.infer_shapes(model, strict_mode=True))


def init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(array, name)


def conv_net(batch: int | str = 1) -> Graph:
    """conv1 -> relu -> conv2 -> add(residual) -> global pool -> flatten -> gemm."""
    rng = np.random.default_rng(0)
    weights = [
        init("W1", rng.standard_normal((8, 3, 3, 3)).astype(np.float32)),
        init("B1", rng.standard_normal(8).astype(np.float32)),
        init("W2", rng.standard_normal((8, 8, 3, 3)).astype(np.float32)),
        init("Wfc", rng.standard_normal((10, 8)).astype(np.float32)),
        init("Bfc", rng.standard_normal(10).astype(np.float32)),
        init("unused", np.zeros(3, np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], "conv1",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
        helper.make_node("Conv", ["r1", "W2"], ["c2"], "conv2", kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("Add", ["c2", "r1"], ["s"], "add"),
        helper.make_node("GlobalAveragePool", ["s"], ["p"], "pool"),
        helper.make_node("Flatten", ["p"], ["f"], "flatten", axis=1),
        helper.make_node("Gemm", ["f", "Wfc", "Bfc"], ["y"], "fc", transB=1, alpha=1.0),
    ]
    x = helper.make_tensor_value_info("x", FLOAT, [batch, 3, 16, 16])
    y = helper.make_tensor_value_info("y", FLOAT, None)
    return make_graph(nodes, [x], [y], weights)


def assert_valid_arena(program: Program) -> None:
    assert verify_plan(program.arena, buffer_lifetimes(program.tensors, program.calls)) == []


def test_conv_net_lowers_to_the_expected_calls_and_tensors():
    program = lower_graph(conv_net())
    assert [(c.name, c.op) for c in program.calls] == [
        ("conv1", "Conv"), ("relu1", "Relu"), ("conv2", "Conv"), ("add", "Add"),
        ("pool", "GlobalAveragePool"), ("flatten", "Flatten"), ("fc", "Gemm")]
    conv1, conv2 = program.calls[0], program.calls[2]
    assert conv1.inputs == ("x", "W1", "B1") and conv1.outputs == ("c1",)
    # Only the attributes present on the node, as plain JSON values.
    assert conv1.attrs == {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    assert conv2.attrs == {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [1, 1]}
    assert program.calls[-1].attrs == {"transB": 1, "alpha": 1.0}
    assert program.inputs == ["x"] and program.outputs == ["y"]

    assert set(program.constants) == {"W1", "B1", "W2", "Wfc", "Bfc"}  # "unused" dropped
    assert program.constants["W2"].shape == (8, 8, 3, 3)
    t = program.tensors
    assert (t["x"].kind, t["x"].shape, t["x"].layout) == ("input", (1, 3, 16, 16), "NCHW")
    assert (t["r1"].kind, t["r1"].dtype, t["r1"].shape) == ("intermediate", "float32", (1, 8, 16, 16))
    assert (t["f"].shape, t["f"].layout) == ((1, 8), "NC")
    assert (t["y"].kind, t["y"].shape, t["y"].layout) == ("output", (1, 10), "NC")
    assert (t["W1"].kind, t["W1"].layout) == ("constant", "any")
    assert all(spec.quant is None for spec in t.values())

    # r1 is read by conv2 and add: it must stay apart from c2, and the arena reuses memory.
    assert_valid_arena(program)
    assert set(program.arena.offsets) == {"c1", "r1", "c2", "s", "p", "f"}
    assert program.arena.arena_bytes < program.arena.naive_bytes
    assert program.arena.arena_bytes == program.arena.peak_live_bytes == 3 * 8192
    assert "%c2 = Conv[kernel_shape=3x3, pads=1,1,1,1, strides=1x1](%r1: float32[1,8,16,16] @" \
        in program.to_text()


def test_lowered_program_round_trips_through_files(tmp_path):
    program = lower_graph(conv_net())
    program.save(tmp_path / "a")
    assert Program.load(tmp_path / "a") == program
    lower_graph(conv_net()).save(tmp_path / "b")  # same model, same bytes
    for name in ("program.json", "constants.bin"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_dynamic_batch_is_refused_naming_the_input():
    with pytest.raises(DynamicShapeError) as error:
        lower_graph(conv_net(batch="N"))
    message = str(error.value)
    assert "graph input 'x'" in message and "[N,3,16,16]" in message
    assert "--input-shape" in message


def test_dynamic_intermediate_names_the_producing_node():
    # Static input, but Reshape to a runtime-computed shape: inference cannot know it.
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"], "reshape_dyn")]
    graph = make_graph(nodes, [helper.make_tensor_value_info("x", FLOAT, [2, 6]),
                               helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
                       [helper.make_tensor_value_info("y", FLOAT, None)])
    with pytest.raises(DynamicShapeError) as error:
        lower_graph(graph)
    message = str(error.value)
    assert "'y' produced by node 'reshape_dyn' (Reshape)" in message
    assert "graph inputs are static" in message and "re-export" in message


def test_minus_one_dims_left_in_value_info_are_not_static():
    # Paddle exports (PP-OCR) carry value_info like [-1, 8, 24, 96]; -1 is not a size.
    nodes = [helper.make_node("Relu", ["x"], ["r"], "relu"), helper.make_node("Neg", ["r"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", FLOAT, [1, 4])],
                              value_info=[helper.make_tensor_value_info("r", FLOAT, [-1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(DynamicShapeError, match=r"'r' produced by node 'relu' \(Relu\) has "
                                                r"shape \[-1,4\]"):
        lower_graph(Graph.from_proto(model))


def test_custom_domain_is_refused_naming_node_op_and_domain():
    node = helper.make_node("FusedConv", ["x"], ["y"], "fused", domain="com.microsoft")
    model = helper.make_model(
        helper.make_graph([node], "g", [helper.make_tensor_value_info("x", FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", FLOAT, [1, 4])]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    with pytest.raises(UnsupportedOpError) as error:
        lower_graph(Graph.from_proto(model))
    message = str(error.value)
    assert "'fused'" in message and "com.microsoft::FusedConv" in message
    assert "standard ONNX operators" in message


def test_control_flow_is_refused():
    branch = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["o"])], "branch", [],
        [helper.make_tensor_value_info("o", FLOAT, [1, 4])])
    node = helper.make_node("If", ["cond"], ["y"], "maybe", then_branch=branch, else_branch=branch)
    graph = make_graph([node], [helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
                                helper.make_tensor_value_info("x", FLOAT, [1, 4])],
                       [helper.make_tensor_value_info("y", FLOAT, [1, 4])])
    with pytest.raises(UnsupportedOpError, match=r"node 'maybe' \(If\): control flow"):
        lower_graph(graph)


def test_odd_corners_constant_nodes_tensor_attrs_optional_values_unnamed_nodes():
    nodes = [
        helper.make_node("Constant", [], ["two"], value=init("v", np.float32([2.0]))),
        helper.make_node("Constant", [], ["lo"], value_float=-1.0),
        helper.make_node("Constant", [], ["shp"], value_ints=[2, 3]),
        helper.make_node("Mul", ["x", "two"], ["m"]),
        helper.make_node("Dropout", ["m"], ["d", ""]),                 # absent optional output
        helper.make_node("Clip", ["d", "lo", ""], ["c"]),              # absent optional input
        helper.make_node("ConstantOfShape", ["shp"], ["z"], value=init("v", np.float32([0.5]))),
        helper.make_node("Add", ["c", "z"], ["y"]),
    ]
    graph = make_graph(nodes, [helper.make_tensor_value_info("x", FLOAT, [2, 3])],
                       [helper.make_tensor_value_info("y", FLOAT, None)])
    program = lower_graph(graph)
    # Constant nodes became constants, not calls; unnamed nodes got unique names.
    assert [c.op for c in program.calls] == ["Mul", "Dropout", "Clip", "ConstantOfShape", "Add"]
    assert len({c.name for c in program.calls}) == 5 and all(c.name for c in program.calls)
    np.testing.assert_array_equal(program.constants["two"], np.float32([2.0]))
    assert program.constants["lo"].dtype == np.float32 and program.constants["lo"].shape == ()
    assert program.calls[1].outputs == ("d", "")
    assert program.calls[2].inputs == ("d", "lo", "")
    assert program.calls[3].attrs == {"value": [0.5]}
    assert program.constants["shp"].dtype == np.int64
    assert program.tensors["z"].shape == (2, 3) and program.tensors["z"].layout == "NC"
    assert_valid_arena(program)


def test_initializer_listed_as_graph_input_is_a_constant():
    w = np.ones((4, 4), np.float32)
    graph = make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], "mm")],
                       [helper.make_tensor_value_info("x", FLOAT, [1, 4]),
                        helper.make_tensor_value_info("w", FLOAT, [4, 4])],
                       [helper.make_tensor_value_info("y", FLOAT, None)], [init("w", w)])
    program = lower_graph(graph)
    assert program.inputs == ["x"]
    assert program.tensors["w"].kind == "constant"
    np.testing.assert_array_equal(program.constants["w"], w)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the pinned TorchScript exporter
def test_torch_exported_model_lowers_with_arena_below_naive(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = torch.nn.Conv2d(3, 16, 3, padding=1)
            self.conv2 = torch.nn.Conv2d(16, 16, 3, padding=1)
            self.conv3 = torch.nn.Conv2d(16, 32, 3, padding=1, stride=2)
            self.pool = torch.nn.AdaptiveAvgPool2d(1)
            self.fc = torch.nn.Linear(32, 10)

        def forward(self, x):
            a = torch.relu(self.conv1(x))
            b = self.conv2(a) + a
            c = torch.relu(self.conv3(b))
            return self.fc(torch.flatten(self.pool(c), 1))

    path = tmp_path / "net.onnx"
    torch.onnx.export(Net().eval(), (torch.randn(1, 3, 32, 32),), str(path),
                      input_names=["x"], output_names=["y"], dynamo=False, opset_version=17)
    proto = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    program = lower_graph(Graph.from_proto(proto))

    assert program.op_histogram() == {"Add": 1, "Conv": 3, "Flatten": 1, "Gemm": 1,
                                      "GlobalAveragePool": 1, "Relu": 2}
    assert program.tensors["y"].shape == (1, 10)
    assert program.constant_bytes == 4 * (16 * 3 * 9 + 16 + 16 * 16 * 9 + 16
                                          + 32 * 16 * 9 + 32 + 320 + 10)
    assert_valid_arena(program)
    arena = program.arena
    assert arena.arena_bytes < arena.naive_bytes
    # conv1 out, relu out, conv2 out: three 64 KiB tensors live at the add.
    assert arena.arena_bytes == arena.peak_live_bytes == 3 * 65536
    assert arena.naive_bytes == 4 * 65536 + 2 * 32768 + 2 * 128


# -- edgekiln fused ops --------------------------------------------------------------------------

def test_fused_nodes_lower_to_one_call_each_with_epilogue_and_block():
    from edgekiln.passes.fuse_epilogue import FuseEpiloguePass

    graph = conv_net()
    FuseEpiloguePass().run(graph)  # conv1+relu1 and conv2+add
    graph.node("conv2").metadata_props["edgekiln.block"] = "basic_residual_0"
    program = lower_graph(graph)
    assert [(c.name, c.op, c.block) for c in program.calls] == [
        ("conv1", "FusedConv", None), ("conv2", "FusedConv", "basic_residual_0"),
        ("pool", "GlobalAveragePool", None), ("flatten", "Flatten", None), ("fc", "Gemm", None)]
    conv1, conv2 = program.calls[:2]
    assert conv1.attrs == {"epilogue": ["Relu"], "kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    assert conv2.attrs["epilogue"] == ["Add"]
    # conv2 had no bias: it got a zero one; the residual is the fourth input.
    assert conv2.inputs[:2] == ("r1", "W2") and conv2.inputs[3] == "r1" and conv2.outputs == ("s",)
    assert not program.constants[conv2.inputs[2]].any()
    text = program.to_text()
    assert "%r1 = FusedConv[epilogue=Relu, kernel_shape=3x3, pads=1,1,1,1](%x: float32[1,3,16,16]" in text
    assert "%s = FusedConv[epilogue=Add, kernel_shape=3x3" in text and "# block basic_residual_0" in text
    assert_valid_arena(program)


def test_fused_activation_parameters_and_standalone_gelu_lower():
    from edgekiln.compiler import fused_ops

    nodes = [helper.make_node("FusedGemmClip", ["a", "Wg", "Cg"], ["g"], "fc", domain="edgekiln",
                              transB=1, act_min=0.0, act_max=6.0),
             helper.make_node("GeluTanh", ["g"], ["y"], "gelu", domain="edgekiln")]
    model = helper.make_model(
        helper.make_graph(nodes, "g", [helper.make_tensor_value_info("a", FLOAT, [2, 6])],
                          [helper.make_tensor_value_info("y", FLOAT, [2, 5])],
                          [init("Wg", np.ones((5, 6), np.float32)), init("Cg", np.zeros(5, np.float32))],
                          value_info=[helper.make_tensor_value_info("g", FLOAT, [2, 5])]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("edgekiln", 1)])
    graph = Graph.from_proto(model)
    fused_ops.ensure_fused_function(graph.model, "FusedGemm", ["Clip"])
    fused_ops.ensure_gelu_function(graph.model, "tanh")
    onnx.checker.check_model(graph.to_proto(), full_check=True)
    program = lower_graph(graph)
    assert [(c.op, c.attrs) for c in program.calls] == [
        ("FusedGemm", {"epilogue": ["Clip"], "transB": 1, "act_min": 0.0, "act_max": 6.0}), ("GeluTanh", {})]


def test_unknown_edgekiln_op_is_refused():
    node = helper.make_node("FusedPool", ["x"], ["y"], "pool", domain="edgekiln")
    model = helper.make_model(
        helper.make_graph([node], "g", [helper.make_tensor_value_info("x", FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", FLOAT, [1, 4])]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("edgekiln", 1)])
    with pytest.raises(UnsupportedOpError, match=r"node 'pool' \(edgekiln::FusedPool\): 'FusedPool' is not "
                                                 r"one of edgekiln's fused ops"):
        lower_graph(Graph.from_proto(model))
