"""The weight-sparsity passes (passes/sparsify_n_m.py, passes/sparsify_magnitude.py) on a
hand-built graph: where they fire and why not elsewhere, the exact N:M pattern and magnitude
counts (checked against masks computed here independently), onnxruntime numerics, idempotence,
overrides / exclusions, and the global threshold."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgekiln.compiler.explain import ExplainTrace
from edgekiln.compiler.graph import Graph
from edgekiln.compiler.prune_options import PruneOptions
from edgekiln.passes.sparsify_magnitude import SparsifyMagnitudePass
from edgekiln.passes.sparsify_n_m import SparsifyNMPass
from edgekiln.pruning.sparsity_stage import sparsify_graph
from tests.conftest import max_relative_error, run_ort

SHAPES = {"pw": (32, 16, 1, 1), "conv3": (24, 32, 3, 3), "dw": (24, 1, 3, 3), "fc": (10, 24), "mm": (10, 12)}
# input channel axis of each weight (Conv: 1, Gemm transB=1: 1, MatMul: 0)
AXES = {"pw": 1, "conv3": 1, "fc": 1, "mm": 0}


def model(weights: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weights = weights or {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
    nodes = [
        helper.make_node("Conv", ["x", "pw_w"], ["a"], name="pw"),
        helper.make_node("Relu", ["a"], ["b"], name="relu"),
        helper.make_node("Conv", ["b", "conv3_w"], ["c"], name="conv3", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c", "dw_w"], ["d"], name="dw", group=24, pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["d"], ["e"], name="gap"),
        helper.make_node("Flatten", ["e"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w"], ["g"], name="fc", transB=1),
        helper.make_node("MatMul", ["g", "mm_w"], ["y"], name="mm"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 16, 6, 6])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 12])],
                              [numpy_helper.from_array(w, f"{k}_w") for k, w in weights.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def weights_of(graph: Graph) -> dict[str, np.ndarray]:
    return {k: Graph.constant(graph.node(k).inputs[1]) for k in SHAPES}


def expected_n_m(w: np.ndarray, axis: int, n: int, m: int) -> np.ndarray:
    """Independent N:M: per group, zero everything below the N-th largest |w| (no ties in random data)."""
    moved = np.moveaxis(w, axis, -1).copy()
    groups = moved.reshape(-1, m)
    for row in groups:
        row[np.argsort(-np.abs(row))[n:]] = 0
    return np.moveaxis(groups.reshape(moved.shape), -1, axis)


def feeds():
    return {"x": np.random.default_rng(1).standard_normal((1, 16, 6, 6)).astype(np.float32)}


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4)])
def test_n_m_pattern_exact_and_ort_equal(n, m):
    graph = Graph.from_proto(model())
    original = weights_of(graph)
    result = SparsifyNMPass(PruneOptions.parse(sparsity=f"{n}:{m}")).run(graph)
    assert result.changed and len(result.applied) == 3  # pw, conv3, fc
    reasons = " ".join(result.not_applied)
    assert "dw (Conv): depthwise" in reasons and "mm (MatMul): 10 input channels are not a multiple of M = 4" in reasons
    got = weights_of(graph)
    for k, axis in AXES.items():
        want = expected_n_m(original[k], axis, n, m) if k != "mm" else original[k]
        np.testing.assert_array_equal(got[k], want, err_msg=k)
    np.testing.assert_array_equal(got["dw"], original["dw"])
    # onnxruntime runs the rewritten model exactly like a model built with the masked weights
    reference = model({k: (expected_n_m(original[k], AXES[k], n, m) if k in ("pw", "conv3", "fc") else original[k])
                       for k in SHAPES})
    np.testing.assert_array_equal(run_ort(graph.to_proto(), feeds())[0], run_ort(reference, feeds())[0])
    again = SparsifyNMPass(PruneOptions.parse(sparsity=f"{n}:{m}")).run(graph)
    assert not again.changed and not again.applied


def test_n_m_keeps_output_close_when_weights_are_nearly_sparse():
    rng = np.random.default_rng(3)
    base = {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
    nearly = {k: (expected_n_m(w, AXES[k], 2, 4) + 1e-4 * rng.standard_normal(w.shape).astype(np.float32)
                  if k in ("pw", "conv3", "fc") else w) for k, w in base.items()}
    graph = Graph.from_proto(model(nearly))
    SparsifyNMPass(PruneOptions.parse(sparsity="2:4")).run(graph)
    before, after = run_ort(model(nearly), feeds())[0], run_ort(graph.to_proto(), feeds())[0]
    assert 0 < max_relative_error(before, after) < 1e-3


def test_magnitude_per_layer_counts():
    graph = Graph.from_proto(model())
    original = weights_of(graph)
    result = SparsifyMagnitudePass(PruneOptions.parse(sparsity="0.7")).run(graph)
    assert len(result.applied) == 4  # pw, conv3, fc, mm; dw refused
    for k in AXES:
        w, o = weights_of(graph)[k], original[k]
        assert np.count_nonzero(w == 0) == int(0.7 * w.size), k
        kept = np.abs(o[w != 0])
        assert kept.min() >= np.abs(o[w == 0]).max(), k  # only the smallest went
    assert not SparsifyMagnitudePass(PruneOptions.parse(sparsity="0.7")).run(graph).changed


def test_magnitude_global_threshold():
    options = PruneOptions(sparsity=PruneOptions.parse(sparsity="0.6").sparsity, sparsity_scope="global")
    rng = np.random.default_rng(5)
    weights = {k: (rng.standard_normal(s) * (0.1 if k == "conv3" else 1.0)).astype(np.float32) for k, s in SHAPES.items()}
    graph = Graph.from_proto(model(weights))
    SparsifyMagnitudePass(options).run(graph)
    got = weights_of(graph)
    total = sum(got[k].size for k in AXES)
    assert sum(np.count_nonzero(got[k] == 0) for k in AXES) == int(0.6 * total)
    assert np.mean(got["conv3"] == 0) > 0.6 and np.mean(got["fc"] == 0) < 0.3  # small weights lose more


def test_overrides_exclusions_and_explain():
    options = PruneOptions.parse(sparsity=["2:4", "fc=0", "op:MatMul=0.5"], exclude=["pw"])
    graph = Graph.from_proto(model())
    original = weights_of(graph)
    trace = ExplainTrace()
    sparsify_graph(graph, options, trace)
    got = weights_of(graph)
    np.testing.assert_array_equal(got["pw"], original["pw"])
    np.testing.assert_array_equal(got["fc"], original["fc"])
    np.testing.assert_array_equal(got["conv3"], expected_n_m(original["conv3"], 1, 2, 4))
    assert np.count_nonzero(got["mm"] == 0) == int(0.5 * got["mm"].size)
    text = trace.render()
    assert "conv3 (Conv): 2:4 along the input channel" in text and "mm (MatMul): magnitude 0.5" in text
    assert "dw (Conv): depthwise convolution" in text
