"""Dependency groups on hand-built graphs: exactly which channels of which tensors go together, and why a group
is left alone."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from edgekiln.compiler.graph import Graph
from edgekiln.pruning.dependency_groups import find_dependency_groups
from tests.pruning import pruning_graphs as graphs
from tests.support.graphs import build_graph


def groups_of(model):
    return find_dependency_groups(Graph.from_proto(model)).groups


def by_producer(groups):
    return {tuple(g.producers): g for g in groups}


def member_map(group):
    """{value: [(position, group channel), ...]}"""
    return {m.value: list(zip(m.positions.tolist(), m.channels.tolist())) for m in group.members}


def identity(n):
    return [(i, i) for i in range(n)]


def test_residual_add_ties_both_producers_into_one_group():
    groups = by_producer(groups_of(graphs.residual_model()))
    assert set(groups) == {("stem", "a"), ("head",)}
    block = groups[("stem", "a")]
    assert block.prunable and block.size == 8
    assert block.consumers == ["a", "head"]
    assert member_map(block) == {v: identity(8) for v in ("s", "sr", "a", "ab", "ar", "sum")}
    assert groups[("head",)].reasons == ["reaches the model output 'y'"]


def test_concat_keeps_each_input_its_own_group_at_its_offset():
    groups = by_producer(groups_of(graphs.concat_model()))
    a, b = groups[("a",)], groups[("b",)]
    assert a.prunable and b.prunable and a.consumers == b.consumers == ["head"]
    assert member_map(a) == {"a": identity(6), "cat": identity(6), "r": identity(6)}
    assert member_map(b) == {"b": identity(4), "cat": [(6 + i, i) for i in range(4)],
                             "r": [(6 + i, i) for i in range(4)]}


def test_depthwise_and_se_gate_join_the_expand_conv_group():
    groups = by_producer(groups_of(graphs.depthwise_se_model()))
    main = groups[("expand", "gate")]
    assert main.prunable and main.size == 8
    assert main.consumers == ["reduce", "project"]
    assert set(member_map(main)) == {"e", "er", "d", "dr", "pool", "g", "gs", "se"}
    squeeze = groups[("reduce",)]
    assert squeeze.prunable and squeeze.consumers == ["gate"] and set(member_map(squeeze)) == {"sq", "sqr"}


@pytest.mark.parametrize("use_reshape", [False, True])
def test_flatten_into_gemm_maps_each_channel_to_a_block_of_features(use_reshape):
    groups = by_producer(groups_of(graphs.flatten_gemm_model(use_reshape)))
    conv = groups[("conv",)]
    assert conv.prunable and conv.consumers == ["fc1"]
    features = dict(member_map(conv)["f"])
    assert features == {f: f // 16 for f in range(96)}  # 6 channels x (4 x 4) pooled pixels
    assert groups[("fc1",)].consumers == ["fc2"] and groups[("fc1",)].prunable
    assert not groups[("fc2",)].prunable


def test_split_outputs_are_sub_ranges_and_concat_reorders_them():
    groups = by_producer(groups_of(graphs.split_model()))
    conv = groups[("conv",)]
    members = member_map(conv)
    assert members["s0"] == identity(3)
    assert members["s1"] == [(i, 3 + i) for i in range(5)]
    assert members["cat"] == [(i, 3 + i) for i in range(5)] + [(5 + i, i) for i in range(3)]
    assert conv.prunable and conv.consumers == ["head"]


def _conv(name, x, y, c_out, c_in, rng, group=1):
    w = helper.make_tensor(f"{name}.w", 1, [c_out, c_in // group, 1, 1],
                           rng.standard_normal(c_out * c_in // group).astype(np.float32).tolist())
    return helper.make_node("Conv", [x, f"{name}.w"], [y], name=name, group=group), w


def test_groups_meeting_unknown_ops_grouped_convs_and_inputs_are_left_alone_with_a_reason():
    rng = np.random.default_rng(0)
    c1, w1 = _conv("c1", "x", "a", 4, 4, rng)
    c2, w2 = _conv("c2", "a", "b", 4, 4, rng, group=2)  # grouped, not depthwise
    c3, w3 = _conv("c3", "x", "c", 4, 4, rng)
    nodes = [c1, c2, c3,
             helper.make_node("LRN", ["c"], ["d"], name="lrn", size=3),  # mixes neighbouring channels
             helper.make_node("Add", ["b", "x"], ["e"], name="add_input"),  # the model input's channels
             helper.make_node("Add", ["d", "e"], ["y"], name="out")]
    graph = build_graph(nodes, [("x", [1, 4, 4, 4])], [("y", [1, 4, 4, 4])], [w1, w2, w3])
    groups = by_producer(find_dependency_groups(graph).groups)
    assert any("grouped convolution (group=2)" in r for r in groups[("c1",)].reasons)
    assert any("LRN node 'lrn'" in r for r in groups[("c3",)].reasons)
    assert not any(g.prunable for g in groups.values())


def test_softmax_over_channels_freezes_but_over_space_passes_through():
    rng = np.random.default_rng(1)
    c1, w1 = _conv("c1", "x", "a", 4, 2, rng)
    c2, w2 = _conv("c2", "a_s", "b", 3, 4, rng)
    for axis, prunable in ((1, False), (3, True)):
        nodes = [c1, helper.make_node("Softmax", ["a"], ["a_s"], name="softmax", axis=axis), c2]
        graph = build_graph(nodes, [("x", [1, 2, 4, 4])], [("b", [1, 3, 4, 4])], [w1, w2])
        group = by_producer(find_dependency_groups(graph).groups)[("c1",)]
        assert group.prunable is prunable, group.reasons


def test_matmul_contracts_the_last_axis_and_its_bias_follows():
    groups = by_producer(groups_of(graphs.mlp_model()))
    hidden = groups[("fc1",)]
    assert hidden.prunable and hidden.consumers == ["fc2"]
    assert member_map(hidden) == {v: identity(10) for v in ("h", "hb", "hr")}
    assert {m.axis for m in hidden.members} == {2}


def test_depthwise_multiplier_repeats_and_slice_takes_a_sub_range():
    conv = by_producer(groups_of(graphs.slice_multiplier_model()))[("conv",)]
    members = member_map(conv)
    assert members["d"] == [(k, k // 2) for k in range(8)]
    assert members["s"] == [(k, (3 + k) // 2) for k in range(4)]
    assert conv.prunable and conv.consumers == ["head"]
