"""Channel removal and the pruning stage on hand-built graphs.

The exactness check: removed channels reach the output only through the weight columns of their
consumer layers, so the ORIGINAL model with those columns zeroed must compute exactly what the pruned
model computes.  A wrong index map (Concat offset, Split range, Flatten block) breaks the equality."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgekiln.compiler.explain import ExplainTrace
from edgekiln.compiler.graph import Graph
from edgekiln.compiler.prune_options import PruneOptions
from edgekiln.errors import OptionError
from edgekiln.pruning.channel_removal import (
    drop_unused_initializers,
    keep_masks,
    remove_channels,
)
from edgekiln.pruning.dependency_groups import find_dependency_groups
from edgekiln.pruning.prune_stage import prune_channels
from tests.conftest import max_relative_error, run_ort
from tests.pruning import pruning_graphs as graphs

MODELS = {
    "residual": graphs.residual_model,
    "concat": graphs.concat_model,
    "depthwise_se": graphs.depthwise_se_model,
    "flatten_gemm": graphs.flatten_gemm_model,
    "reshape_gemm": lambda: graphs.flatten_gemm_model(use_reshape=True),
    "split": graphs.split_model,
    "mlp": graphs.mlp_model,
    "slice_multiplier": graphs.slice_multiplier_model,
}


def samples(count: int, seed: int, shape=(1, 3, 8, 8)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(count)]


def zero_consumer_columns(model: onnx.ModelProto, analysis, masks) -> onnx.ModelProto:
    zeroed = copy.deepcopy(model)
    inits = {t.name: t for t in zeroed.graph.initializer}
    for node, x in analysis.consumers:
        if x.name not in masks:
            continue
        tensor = inits[node.inputs[1].name]
        w = numpy_helper.to_array(tensor).copy()
        dropped = ~masks[x.name]
        if node.op_type == "Conv" or (node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in
                                                                     _proto_node(zeroed, node.name).attribute)):
            w[:, dropped] = 0
        else:
            w[dropped] = 0
        tensor.CopyFrom(numpy_helper.from_array(w, tensor.name))
    return zeroed


def _proto_node(model, name):
    return next(n for n in model.graph.node if n.name == name)


@pytest.mark.parametrize("name", MODELS)
def test_pruned_model_equals_the_original_with_removed_channels_zeroed(name):
    model = MODELS[name]()
    graph = Graph.from_proto(model)
    analysis = find_dependency_groups(graph)
    removed = {u for g in analysis.groups if g.prunable for u in g.units[1::2]}
    masks = keep_masks(analysis, removed)
    reference = zero_consumer_columns(model, analysis, masks)
    remove_channels(graph, analysis, removed)
    drop_unused_initializers(graph)
    pruned = graph.to_proto()
    onnx.checker.check_model(pruned, full_check=True)
    assert sum(t.ByteSize() for t in pruned.graph.initializer) < sum(t.ByteSize() for t in model.graph.initializer)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    for x in samples(2, seed=7, shape=shape):
        expected, got = run_ort(reference, {"x": x})[0], run_ort(pruned, {"x": x})[0]
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def prune(model, options: PruneOptions) -> tuple[onnx.ModelProto, ExplainTrace]:
    trace = ExplainTrace()
    graph = prune_channels(Graph.from_proto(model), options, trace)
    return graph.to_proto(), trace


def conv_out_channels(model: onnx.ModelProto, node_name: str) -> int:
    node = _proto_node(model, node_name)
    return next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == node.input[1]).shape[0]


def test_ratio_overrides_and_exclusions_pick_the_groups():
    model = graphs.residual_model()
    pruned, trace = prune(model, PruneOptions.parse("channels:0.5", refit=False))
    assert conv_out_channels(pruned, "stem") == conv_out_channels(pruned, "a") == 4
    lines = trace.records[-1].applied + trace.records[-1].not_applied
    assert any("removed 4 of 8 channels by l1" in line for line in lines)
    assert any("left alone: reaches the model output 'y'" in line for line in lines)
    overridden, _ = prune(model, PruneOptions.parse(["channels:0.5", "a=0.25"], refit=False))
    assert conv_out_channels(overridden, "a") == 6
    _, trace = prune(model, PruneOptions.parse("channels:0.5", exclude="head", refit=False))
    assert not trace.records[-1].changed
    assert any("--prune-exclude matches head" in line for line in trace.records[-1].not_applied)


def test_bn_importance_removes_the_smallest_gammas():
    model = graphs.residual_model()
    gamma = next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == "bn.gamma")
    pruned, _ = prune(model, PruneOptions.parse("channels:0.5:bn", refit=False))
    kept_gamma = next(numpy_helper.to_array(t) for t in pruned.graph.initializer
                      if t.name == _proto_node(pruned, "bn").input[1])
    np.testing.assert_array_equal(kept_gamma, gamma[np.sort(np.argsort(np.abs(gamma))[4:])])


def test_no_tensor_is_emptied_even_at_high_ratios():
    pruned, _ = prune(graphs.split_model(), PruneOptions.parse("channels:0.9", refit=False))
    onnx.checker.check_model(pruned, full_check=True)
    split_sizes = next(numpy_helper.to_array(t) for t in pruned.graph.initializer
                       if t.name == _proto_node(pruned, "split").input[1])
    assert all(s >= 1 for s in split_sizes)
    assert run_ort(pruned, {"x": samples(1, 0)[0]})[0].shape == (1, 2, 8, 8)


@pytest.mark.parametrize("name", ["residual", "depthwise_se", "concat"])
@pytest.mark.parametrize("method", ["l1", "data"])
def test_refit_brings_the_output_closer_to_the_original(name, method):
    model = MODELS[name]()
    calib = [x[0] for x in samples(16, seed=1)]
    errors = []
    for refit in (False, True):
        pruned, _ = prune(model, PruneOptions.parse(f"channels:0.5:{method}", refit=refit, calib=calib))
        errors.append(max(max_relative_error(run_ort(model, {"x": x})[0], run_ort(pruned, {"x": x})[0])
                          for x in samples(4, seed=99)))
    assert errors[1] < 0.9 * errors[0], errors


def test_data_importance_needs_calibration_data():
    with pytest.raises(OptionError, match="calibration data"):
        prune(graphs.residual_model(), PruneOptions.parse("channels:0.5:data"))


def test_refit_without_data_is_explained():
    _, trace = prune(graphs.residual_model(), PruneOptions.parse("channels:0.5"))
    assert any("re-fit skipped: no calibration data" in line for line in trace.records[-1].not_applied)
