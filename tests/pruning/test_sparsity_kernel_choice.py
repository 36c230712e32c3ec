"""Choosing sparse kernels per layer (pruning/sparsity_kernels.py + sparsity_cost.py) and the
whole path: --sparsity -> zeros in the ONNX weights -> cost model -> sparse runtime kernels,
checked against onnxruntime (float) and the integer reference (int8, bit-exact)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgekiln.backends.reference.interpreter import run_program
from edgekiln.compiler.compile import compile_model
from edgekiln.compiler.prune_options import PruneOptions
from edgekiln.compiler.quant_options import QuantOptions
from edgekiln.compiler.target import get_target
from edgekiln.pruning.sparsity_cost import COSTS, MARGIN, dense_cost, sparse_cost
from edgekiln.pruning.sparsity_kernels import choose_sparse_kernels
from tests.conftest import max_relative_error, run_ort
from tests.runtime_arm.harness import one_call
from tests.runtime_arm.int8_cases import multipliers


def qconv(rng, o: int, k: int, keep: float, kernel: int = 1):
    w = rng.integers(-127, 128, (o, k, kernel, kernel)) * (rng.random((o, k, 1, 1)) < keep)
    mult, shift = multipliers(rng, o, k)
    attrs = {"strides": [1, 1], "pads": [kernel // 2] * 4, "dilations": [1, 1], "group": 1, "input_zero_point": 0,
             "output_zero_point": 0, "act_min": -128, "act_max": 127}
    return one_call("QConv2D", [("x", rng.integers(-128, 128, (1, k, 14, 14)).astype(np.int8), False),
                                ("w", w.astype(np.int8), True), ("bias", np.zeros(o, np.int32), True),
                                ("mult", mult, True), ("shift", shift, True)], attrs)[0]


def test_choices_follow_the_cost_model():
    rng = np.random.default_rng(0)
    a53, a76 = get_target("cortex-a53"), get_target("cortex-a76")
    sparse = qconv(rng, 128, 128, keep=0.1)
    plan, [decision] = choose_sparse_kernels(sparse, a53)
    assert plan == {"qconv2d": decision.choice} and decision.modeled_speedup > 1 / MARGIN
    assert "sparse kernel for qconv2d" in decision.describe()
    _, [dense] = choose_sparse_kernels(qconv(rng, 128, 128, keep=1.0), a53)
    assert dense.choice is None and "non-zero" in dense.reason and not dense.reported
    _, [three] = choose_sparse_kernels(qconv(rng, 16, 16, keep=0.1, kernel=3), a53)
    assert three.choice is None and "not a 1x1 convolution" in three.reason
    # dotprod makes the dense kernel cheaper: somewhere between, a53 goes sparse and a76 stays dense
    split = [keep for keep in (0.1, 0.15, 0.2, 0.3)
             if choose_sparse_kernels(qconv(np.random.default_rng(1), 256, 256, keep), a53)[0]
             and not choose_sparse_kernels(qconv(np.random.default_rng(1), 256, 256, keep), a76)[0]]
    assert split


def test_cost_model_break_even_is_sane():
    """Every fitted row: very sparse weights pick the sparse kernel, dense weights never do."""
    for (isa, dtype), costs in COSTS.items():
        o = k = 256
        assert sparse_cost(costs, o * k // 20, 1, o, k) < MARGIN * dense_cost(costs, o, k), (isa, dtype)
        assert sparse_cost(costs, o * k, 1, o, k) > MARGIN * dense_cost(costs, o, k), (isa, dtype)


def pointwise_model(c: int = 32, e: int = 96) -> onnx.ModelProto:
    """x [1, c, 12, 12] -> 1x1 conv to e channels, Relu -> 1x1 conv back to c -> Flatten -> Gemm 10."""
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="expand"),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2"], ["c"], name="project"),
             helper.make_node("Flatten", ["c"], ["f"], name="flatten", axis=1),
             helper.make_node("Gemm", ["f", "wf"], ["y"], name="fc", transB=1)]
    inits = [numpy_helper.from_array(rng.standard_normal((e, c, 1, 1)).astype(np.float32) * 0.2, "w1"),
             numpy_helper.from_array(rng.standard_normal(e).astype(np.float32) * 0.1, "b1"),
             numpy_helper.from_array(rng.standard_normal((c, e, 1, 1)).astype(np.float32) * 0.2, "w2"),
             numpy_helper.from_array(rng.standard_normal((10, c * 12 * 12)).astype(np.float32) * 0.02, "wf")]
    graph = helper.make_graph(nodes, "pw", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, c, 12, 12])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_float_end_to_end_on_host():
    result = compile_model(pointwise_model(), "host", pruning=PruneOptions.parse(sparsity="0.9"), progress=False)
    decisions = result.artifact.manifest["options"]["sparse_kernels"]
    assert {d["call"] for d in decisions if d["choice"]} >= {"expand", "project"}
    assert "sparse kernel for expand" in result.trace.render()
    x = np.random.default_rng(3).standard_normal((1, 32, 12, 12)).astype(np.float32)
    expected = run_ort(result.graph.to_proto(), {"x": x})[0]  # the sparsified model, in onnxruntime
    got = result.artifact.run({"x": x})["y"]
    assert max_relative_error(expected, got) < 1e-4


def test_int8_end_to_end_on_host_is_bit_exact():
    calib = [np.random.default_rng(s).standard_normal((1, 64, 12, 12)).astype(np.float32) for s in range(4)]
    result = compile_model(pointwise_model(64, 256), "host", pruning=PruneOptions.parse(sparsity="1:4"), progress=False,
                           quantization=QuantOptions(quant="int8", calib=calib))
    chosen = [d for d in result.artifact.manifest["options"]["sparse_kernels"] if d["choice"]]
    assert chosen and all(d["choice"] == {"format": "n:m", "n": 1, "m": 4} for d in chosen)
    x = np.random.default_rng(9).standard_normal((1, 64, 12, 12)).astype(np.float32)
    expected = run_program(result.program, {"x": x})
    got = result.artifact.run({"x": x})
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value)
