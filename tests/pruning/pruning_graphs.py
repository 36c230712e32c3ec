"""Small hand-built CNNs for the pruning tests: each one exercises one kind of channel coupling."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _model(nodes, inits, x_shape, y_shape, name: str) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


class _Weights:
    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.inits: list[onnx.TensorProto] = []

    def conv(self, name: str, c_out: int, c_in: int, k: int = 1) -> list[str]:
        w = (self.rng.standard_normal((c_out, c_in, k, k)) / np.sqrt(c_in * k * k)).astype(np.float32)
        b = (0.1 * self.rng.standard_normal(c_out)).astype(np.float32)
        self.inits += [numpy_helper.from_array(w, f"{name}.w"), numpy_helper.from_array(b, f"{name}.b")]
        return [f"{name}.w", f"{name}.b"]

    def bn(self, name: str, c: int) -> list[str]:
        arrays = [1 + 0.5 * self.rng.standard_normal(c), 0.1 * self.rng.standard_normal(c),
                  0.1 * self.rng.standard_normal(c), 0.5 + self.rng.random(c)]
        names = [f"{name}.{p}" for p in ("gamma", "beta", "mean", "var")]
        self.inits += [numpy_helper.from_array(a.astype(np.float32), n) for a, n in zip(arrays, names)]
        return names

    def array(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name


def conv(name, x, y, params, k=1, **attrs):
    pads = [k // 2] * 4
    return helper.make_node("Conv", [x, *params], [y], name=name, pads=pads, **attrs)


def residual_model() -> onnx.ModelProto:
    """stem(8) -> relu -> [a(8, 3x3) -> bn -> relu] + stem -> head(4) -> y."""
    w = _Weights(1)
    nodes = [conv("stem", "x", "s", w.conv("stem", 8, 3, 3), 3), helper.make_node("Relu", ["s"], ["sr"], name="r0"),
             conv("a", "sr", "a", w.conv("a", 8, 8, 3), 3),
             helper.make_node("BatchNormalization", ["a", *w.bn("bn", 8)], ["ab"], name="bn"),
             helper.make_node("Relu", ["ab"], ["ar"], name="r1"),
             helper.make_node("Add", ["ar", "sr"], ["sum"], name="add"),
             conv("head", "sum", "y", w.conv("head", 4, 8), 1)]
    return _model(nodes, w.inits, [1, 3, 8, 8], [1, 4, 8, 8], "residual")


def concat_model() -> onnx.ModelProto:
    """a(6) and b(4) from x, Concat -> relu -> head(3)."""
    w = _Weights(2)
    nodes = [conv("a", "x", "a", w.conv("a", 6, 3, 3), 3), conv("b", "x", "b", w.conv("b", 4, 3, 1), 1),
             helper.make_node("Concat", ["a", "b"], ["cat"], name="cat", axis=1),
             helper.make_node("Relu", ["cat"], ["r"], name="relu"),
             conv("head", "r", "y", w.conv("head", 3, 10, 3), 3)]
    return _model(nodes, w.inits, [1, 3, 8, 8], [1, 3, 8, 8], "concat")


def depthwise_se_model() -> onnx.ModelProto:
    """expand(8) -> relu -> depthwise(8) -> SE(GAP -> reduce(4) -> relu -> gate(8) -> sigmoid) * dw -> project(5)."""
    w = _Weights(3)
    nodes = [conv("expand", "x", "e", w.conv("expand", 8, 3), 1), helper.make_node("Relu", ["e"], ["er"], name="r0"),
             conv("dw", "er", "d", w.conv("dw", 8, 1, 3), 3, group=8),
             helper.make_node("Relu", ["d"], ["dr"], name="r1"),
             helper.make_node("GlobalAveragePool", ["dr"], ["pool"], name="gap"),
             conv("reduce", "pool", "sq", w.conv("reduce", 4, 8), 1),
             helper.make_node("Relu", ["sq"], ["sqr"], name="r2"),
             conv("gate", "sqr", "g", w.conv("gate", 8, 4), 1),
             helper.make_node("Sigmoid", ["g"], ["gs"], name="sig"),
             helper.make_node("Mul", ["dr", "gs"], ["se"], name="scale"),
             conv("project", "se", "y", w.conv("project", 5, 8), 1)]
    return _model(nodes, w.inits, [1, 3, 8, 8], [1, 5, 8, 8], "depthwise_se")


def flatten_gemm_model(use_reshape: bool = False) -> onnx.ModelProto:
    """conv(6) -> relu -> maxpool -> Flatten (or Reshape) [1, 6*4*4] -> fc1(10) -> relu -> fc2(3)."""
    w = _Weights(4)
    rng = np.random.default_rng(5)
    fc1 = w.array("fc1.w", (rng.standard_normal((10, 96)) / 10).astype(np.float32))
    fc1b = w.array("fc1.b", (0.1 * rng.standard_normal(10)).astype(np.float32))
    fc2 = w.array("fc2.w", (rng.standard_normal((10, 3)) / 3).astype(np.float32))
    fc2b = w.array("fc2.b", (0.1 * rng.standard_normal(3)).astype(np.float32))
    flat = (helper.make_node("Reshape", ["p", w.array("shape", np.array([1, 96], np.int64))], ["f"], name="flat")
            if use_reshape else helper.make_node("Flatten", ["p"], ["f"], name="flat", axis=1))
    nodes = [conv("conv", "x", "c", w.conv("conv", 6, 3, 3), 3), helper.make_node("Relu", ["c"], ["cr"], name="r0"),
             helper.make_node("MaxPool", ["cr"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]), flat,
             helper.make_node("Gemm", ["f", fc1, fc1b], ["h"], name="fc1", transB=1),
             helper.make_node("Relu", ["h"], ["hr"], name="r1"),
             helper.make_node("Gemm", ["hr", fc2, fc2b], ["y"], name="fc2")]
    return _model(nodes, w.inits, [1, 3, 8, 8], [1, 3], "flatten_gemm")


def split_model() -> onnx.ModelProto:
    """conv(8) -> Split [3, 5] -> relu(first) -> Concat(second, first') -> head(2)."""
    w = _Weights(6)
    nodes = [conv("conv", "x", "c", w.conv("conv", 8, 3, 3), 3),
             helper.make_node("Split", ["c", w.array("sizes", np.array([3, 5], np.int64))], ["s0", "s1"],
                              name="split", axis=1),
             helper.make_node("Relu", ["s0"], ["s0r"], name="relu"),
             helper.make_node("Concat", ["s1", "s0r"], ["cat"], name="cat", axis=1),
             conv("head", "cat", "y", w.conv("head", 2, 8), 1)]
    return _model(nodes, w.inits, [1, 3, 8, 8], [1, 2, 8, 8], "split")


def mlp_model() -> onnx.ModelProto:
    """Token features x[1, 4, 6] -> MatMul(10) + bias -> Relu -> MatMul(6) -> y: channels on the last axis."""
    w = _Weights(7)
    rng = np.random.default_rng(8)
    w1 = w.array("w1", (rng.standard_normal((6, 10)) / 3).astype(np.float32))
    b1 = w.array("b1", (0.1 * rng.standard_normal(10)).astype(np.float32))
    w2 = w.array("w2", (rng.standard_normal((10, 6)) / 3).astype(np.float32))
    nodes = [helper.make_node("MatMul", ["x", w1], ["h"], name="fc1"),
             helper.make_node("Add", ["h", b1], ["hb"], name="bias"),
             helper.make_node("Relu", ["hb"], ["hr"], name="relu"),
             helper.make_node("MatMul", ["hr", w2], ["y"], name="fc2")]
    return _model(nodes, w.inits, [1, 4, 6], [1, 4, 6], "mlp")


def slice_multiplier_model() -> onnx.ModelProto:
    """conv(4) -> depthwise x2 multiplier (8) -> Slice channels [3:7] -> head(2)."""
    w = _Weights(9)
    nodes = [conv("conv", "x", "c", w.conv("conv", 4, 3, 3), 3),
             conv("dw", "c", "d", w.conv("dw", 8, 1, 3), 3, group=4),
             helper.make_node("Slice", ["d", w.array("starts", np.array([3], np.int64)),
                                        w.array("ends", np.array([7], np.int64)),
                                        w.array("axes", np.array([1], np.int64))], ["s"], name="slice"),
             conv("head", "s", "y", w.conv("head", 2, 4), 1)]
    return _model(nodes, w.inits, [1, 3, 8, 8], [1, 2, 8, 8], "slice_multiplier")
