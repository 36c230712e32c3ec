"""Small hand-built ONNX models for unit tests (onnx.helper; no torch needed)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def conv_relu_model(*, opset: int = 17, batch: int | str = 1, weights_in_constant_nodes: bool = False,
                    extra_dead_node: bool = False, unnamed: bool = False) -> onnx.ModelProto:
    """x[batch,3,8,8] -> Conv(4, 3x3, pad 1) -> Relu -> Identity -> y."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    nodes, inits = [], []
    if weights_in_constant_nodes:
        nodes += [helper.make_node("Constant", [], ["W"], value=numpy_helper.from_array(w, "W")),
                  helper.make_node("Constant", [], ["B"], value=numpy_helper.from_array(b, "B"))]
    else:
        inits += [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")]
    name = (lambda n: "") if unnamed else (lambda n: n)
    nodes += [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], name=name("conv"), pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name=name("relu")),
        helper.make_node("Identity", ["r"], ["y"], name=name("identity")),
    ]
    if extra_dead_node:
        nodes.append(helper.make_node("Sigmoid", ["c"], ["unused"], name=name("dead")))
    graph = helper.make_graph(
        nodes, "conv_relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4, 8, 8])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def single_op_model(op_type: str, input_shape: list, domain: str = "", output_type: int = TensorProto.FLOAT,
                    **attrs) -> onnx.ModelProto:
    """One node `op_type(x) -> y` (for unsupported-op and data-dependent-shape cases)."""
    node = helper.make_node(op_type, ["x"], ["y"], name=f"{op_type.lower()}_node", domain=domain, **attrs)
    graph = helper.make_graph(
        [node], op_type.lower(),
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("y", output_type, ["d0", "d1"] if op_type == "NonZero" else input_shape)],
    )
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model


def build_graph(nodes, inputs, outputs=(("y", None),), initializers=(), opset: int = 17, extra_opsets=(),
                strict: bool = False):
    """A shape-inferred `Graph` from onnx.helper pieces; inputs/outputs are (name, shape) float tensors."""
    from edgekiln.compiler.graph import Graph

    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        list(initializers),
    )
    opsets = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, v) for d, v in extra_opsets)]
    model = helper.make_model(graph, opset_imports=opsets)
    return Graph.from_proto(onnx.shape_inference.infer_shapes(model, strict_mode=strict))
