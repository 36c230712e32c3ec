"""Data-free calibration: the ONNX->torch prefix matches onnxruntime, ZeroQ fits BN statistics, fallbacks warn."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgekiln.calibration.calibration_data import InputSpec, open_calibration_data
from edgekiln.calibration.image_folder import ImagePreprocessing
from edgekiln.calibration.torch_prefix import PrefixError, TorchPrefix
from edgekiln.calibration.zeroq import gaussian_inputs, synthesize
from edgekiln.compiler.graph import Graph
from edgekiln.errors import CalibrationError
from tests.conftest import run_ort

torch = pytest.importorskip("torch")
RNG = np.random.default_rng(0)


def const(name: str, array) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def bn_model(before_bn: str | None = None, after_bn: str | None = None) -> onnx.ModelProto:
    """x[1,3,8,8] -> [before] -> Conv(4) -> BN (running mean 1, var 4) -> [after] -> y."""
    nodes, source = [], "x"
    if before_bn:
        nodes.append(helper.make_node(before_bn, ["x"], ["pre"], name="before"))
        source = "pre"
    nodes += [helper.make_node("Conv", [source, "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
              helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["n"], name="bn")]
    nodes.append(helper.make_node(after_bn or "Identity", ["n"], ["y"], name="after"))
    inits = [const("W", RNG.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3),
             const("g", np.ones(4, np.float32)), const("b", np.zeros(4, np.float32)),
             const("m", np.full(4, 1.0, np.float32)), const("v", np.full(4, 4.0, np.float32))]
    graph = helper.make_graph(nodes, "bn_model", [helper.make_tensor_value_info("x", 1, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", 1, [1, 4, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(model)


def spec(shape=(1, 3, 8, 8)) -> list[InputSpec]:
    return [InputSpec("x", shape, np.dtype(np.float32))]


def test_prefix_matches_onnxruntime_on_many_ops():
    """Conv (asymmetric pads) -> BN -> Clip -> MaxPool -> Resize -> HardSwish -> Concat -> AvgPool -> Reshape -> Gemm."""
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[0, 1, 1, 0], strides=[1, 1]),
        helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["n"]),
        helper.make_node("Clip", ["n", "lo", "hi"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Resize", ["p", "", "scales"], ["u"], mode="nearest",
                         coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
        helper.make_node("HardSwish", ["u"], ["h"]),
        helper.make_node("Concat", ["h", "r"], ["cat"], axis=1),
        helper.make_node("AveragePool", ["cat"], ["a"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Reshape", ["a", "shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "Wg", "Bg"], ["y"], transB=1),
    ]
    inits = [const("W", RNG.standard_normal((4, 3, 2, 2)).astype(np.float32)), const("B", np.ones(4, np.float32)),
             const("g", RNG.uniform(0.5, 2, 4).astype(np.float32)), const("b", RNG.standard_normal(4).astype(np.float32)),
             const("m", RNG.standard_normal(4).astype(np.float32)), const("v", RNG.uniform(1, 2, 4).astype(np.float32)),
             const("lo", np.float32(0)), const("hi", np.float32(6)), const("scales", np.float32([1, 1, 2, 2])),
             const("shape", np.int64([1, -1])), const("Wg", RNG.standard_normal((5, 128)).astype(np.float32)),
             const("Bg", np.zeros(5, np.float32))]
    graph = helper.make_graph(nodes, "ops", [helper.make_tensor_value_info("x", 1, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", 1, [1, 5])], inits)
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    prefix = TorchPrefix(Graph.from_proto(model), ["y"])
    x = RNG.standard_normal((3, 3, 8, 8)).astype(np.float32)  # a batch of 3 through a batch-1 graph
    with torch.no_grad():
        got = prefix({"x": torch.from_numpy(x)})["y"].numpy()
    expected = np.concatenate([run_ort(model, {"x": x[i: i + 1]})[0] for i in range(3)])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_prefix_refuses_an_op_that_mixes_the_batch_axis():
    nodes = [helper.make_node("Transpose", ["x"], ["t"], name="swap", perm=[1, 0, 2, 3]),
             helper.make_node("BatchNormalization", ["t", "g", "b", "m", "v"], ["y"])]
    inits = [const(n, np.ones(3, np.float32)) for n in ("g", "b", "m", "v")]
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", 1, [1, 3, 2, 2])],
                              [helper.make_tensor_value_info("y", 1, [3, 1, 2, 2])], inits)
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    with pytest.raises(PrefixError, match="node 'swap' \\(Transpose\\): moves the batch axis"):
        TorchPrefix(Graph.from_proto(model), ["t"])


def test_zeroq_fits_the_batch_norm_statistics():
    result = synthesize(Graph.from_proto(bn_model()), spec(), 16, iterations=150, time_budget_s=10)
    assert result.method == "zeroq" and result.bn_count == 1
    assert result.loss_final < result.loss_noise / 10
    assert result.inputs["x"].shape == (16, 3, 8, 8) and result.inputs["x"].dtype == np.float32


def test_an_unsupported_op_after_the_last_bn_does_not_matter():
    result = synthesize(Graph.from_proto(bn_model(after_bn="Sin")), spec(), 4, iterations=3)
    assert result.method == "zeroq"


def test_an_unsupported_op_before_a_bn_falls_back_to_gaussian():
    with pytest.warns(UserWarning, match="node 'before' \\(Sin\\): op not in the data-free calibration op table "
                                         "\\(it comes before a BatchNormalization\\); using Gaussian inputs"):
        result = synthesize(Graph.from_proto(bn_model(before_bn="Sin")), spec(), 4)
    assert result.method == "gaussian" and result.inputs["x"].shape == (4, 3, 8, 8)


def test_no_batch_norm_warns_and_uses_standard_normal_inputs():
    model = bn_model()
    del model.graph.node[1]
    model.graph.node[1].input[0] = "c"
    with pytest.warns(UserWarning, match="the model has no BatchNormalization layers"):
        result = synthesize(Graph.from_proto(model), spec(), 64)
    x = result.inputs["x"]
    assert result.method == "gaussian" and abs(x.mean()) < 0.05 and abs(x.std() - 1) < 0.05


def test_gaussian_inputs_follow_a_declared_normalization():
    pre = ImagePreprocessing(mean=(0.5,), std=(0.5,))
    x = gaussian_inputs(spec(), 32, preprocessing=pre)["x"]
    assert -1.0 <= x.min() and x.max() <= 1.0 and abs(x.mean()) < 0.05


def test_synthetic_needs_float_inputs():
    with pytest.raises(CalibrationError, match="input 'x' is int64; give real calibration data"):
        synthesize(None, [InputSpec("x", (1, 4), np.dtype(np.int64))], 4)


def test_open_calibration_data_synthetic():
    graph = Graph.from_proto(bn_model())
    data = open_calibration_data("synthetic:6", graph, model_graph=graph)
    assert len(data) == 6 and data.description == "synthetic (zeroq, 6 samples)"
    assert [b["x"].shape for b in data] == [(1, 3, 8, 8)] * 6
    with pytest.warns(UserWarning, match="no model graph was given"):
        assert len(open_calibration_data("synthetic", graph)) == 32
    with pytest.raises(CalibrationError, match="must be an integer, e.g. synthetic:32"):
        open_calibration_data("synthetic:many", graph)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "factor"), [("digits_cnn", 50.0), ("inverted_residual", 4.0)])
def test_zeroq_on_zoo_models(name, factor):
    """The BN-statistics loss of the synthesized batch vs the Gaussian batch it starts from."""
    from edgekiln.compiler.frontend import load_model
    from tests.zoo import input_shapes, model_path

    graph = load_model(model_path(name), input_shapes(name))
    result = synthesize(graph, [InputSpec.from_value(v) for v in graph.inputs], 32)
    print(f"{name}: loss {result.loss_noise:.4g} -> {result.loss_final:.4g} "
          f"({result.loss_noise / result.loss_final:.1f}x) in {result.iterations} steps, {result.seconds:.1f} s")
    assert result.method == "zeroq" and result.seconds < 30
    assert result.loss_final * factor < result.loss_noise
