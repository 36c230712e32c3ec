"""Small ONNX graphs that end in `producer -> Relu`, the pairs fuse_relu_into_producer.py folds, and
their calibration data (shared by the compiler, edgetpu and arm_cpu tests of that rewrite)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SHAPE = [1, 4, 8, 8]


def model(nodes, outputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)], outputs,
                              initializer=[numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def residual_block(extra_reader: bool = False, op: str = "Add") -> onnx.ModelProto:
    """relu(conv1(x)) <op> conv2(x) -> Relu -> y (a ResNet block's tail for Add); `extra_reader`: the sum is an
    output too."""
    rng = np.random.default_rng(3)
    inits = {"w1": rng.standard_normal((4, 4, 3, 3)) * 0.3, "b1": rng.standard_normal(4) * 0.1,
             "w2": rng.standard_normal((4, 4, 3, 3)) * 0.3, "b2": rng.standard_normal(4) * 0.1}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["t0"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["t0"], ["t1"]),
             helper.make_node("Conv", ["x", "w2", "b2"], ["t2"], pads=[1, 1, 1, 1]),
             helper.make_node(op, ["t1", "t2"], ["s"], name="add"),
             helper.make_node("Relu", ["s"], ["y"], name="relu")]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if extra_reader:
        outputs.append(helper.make_tensor_value_info("s", TensorProto.FLOAT, None))
    return model(nodes, outputs, inits)


def transposed_conv_relu() -> onnx.ModelProto:
    """x -> ConvTranspose(3, 2x2, stride 2) -> Relu -> y (ppocr_det's upsampling head); the quantized fuse
    stage fuses Relu into Conv / Gemm only, so this Relu stays a standalone table until the rewrite."""
    rng = np.random.default_rng(4)
    inits = {"w": rng.standard_normal((4, 3, 2, 2)) * 0.4, "b": rng.standard_normal(3) * 0.1}
    nodes = [helper.make_node("ConvTranspose", ["x", "w", "b"], ["t"], strides=[2, 2]),
             helper.make_node("Relu", ["t"], ["y"])]
    return model(nodes, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)


def calibration() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [{"x": rng.standard_normal(SHAPE).astype(np.float32)} for _ in range(4)]


def feeds(seed: int) -> dict[str, np.ndarray]:
    """An input that is not a calibration input."""
    return {"x": np.random.default_rng(seed).standard_normal(SHAPE).astype(np.float32)}


def params(program, name: str) -> tuple[float, int]:
    """(scale, zero point) of int8 tensor `name` in a Program."""
    q = program.tensors[name].quant
    return float(np.float32(q.scale[0])), int(q.zero_point[0])
