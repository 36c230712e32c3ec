"""MarkAttentionPass: marked units, metadata only, idempotence, and where it must not fire."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgekiln.compiler.graph import Graph
from edgekiln.passes.mark_attention import BLOCK_KEY, BLOCK_KIND_KEY, MarkAttentionPass
from tests.conftest import max_relative_error, run_ort
from tests.support.graphs import build_graph

B, H, S, D = 1, 2, 5, 8
QKV = [B, H, S, D]
RNG = np.random.default_rng(11)
FEEDS = {name: RNG.standard_normal(QKV).astype(np.float32) for name in ("q", "k", "v")}


def _node(op, inputs, out, **attrs):
    return helper.make_node(op, inputs, [out], name=out, **attrs)


def _attention(*, scale="after", mask=True, softmax_axis=-1, flattened=False, prefix=""):
    """softmax(s·Q·Kᵀ + M)·V with the scale on Q ("before") or on the scores ("after")."""
    p = prefix
    nodes = [_node("Transpose", [p + "k"], p + "kt", perm=[0, 1, 3, 2])]
    q = p + "q"
    if scale == "before":
        nodes.append(_node("Mul", [q, "scale"], p + "qs"))
        q = p + "qs"
    nodes.append(_node("MatMul", [q, p + "kt"], p + "scores"))
    current = p + "scores"
    if scale == "after":
        nodes.append(_node("Div", [current, "root_d"], p + "scaled"))
        current = p + "scaled"
    if mask:
        nodes.append(_node("Add", ["mask", current], p + "masked"))
        current = p + "masked"
    if flattened:  # what the opset converter leaves for an opset-11 softmax over the last axis
        nodes += [_node("Flatten", [current], p + "rows", axis=3), _node("Softmax", [p + "rows"], p + "probs2d", axis=1),
                  _node("Reshape", [p + "probs2d", "scores_shape"], p + "probs")]
    else:
        nodes.append(_node("Softmax", [current], p + "probs", axis=softmax_axis))
    nodes.append(_node("MatMul", [p + "probs", p + "v"], p + "y"))
    return nodes


INITS = [numpy_helper.from_array(np.array(1 / np.sqrt(D), np.float32), "scale"),
         numpy_helper.from_array(np.array(np.sqrt(D), np.float32), "root_d"),
         numpy_helper.from_array(np.triu(np.full((S, S), -1e4, np.float32), 1), "mask"),
         numpy_helper.from_array(np.array([B, H, S, S], np.int64), "scores_shape")]


def _graph(nodes, outputs=(("y", QKV),), inputs=("q", "k", "v"), inits=()) -> Graph:
    shaped = [n if isinstance(n, tuple) else (n, QKV) for n in inputs]
    return build_graph(nodes, shaped, list(outputs), [*INITS, *inits])


def _blocks(graph: Graph) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for node in graph.main:
        if BLOCK_KEY in node.metadata_props:
            assert node.metadata_props[BLOCK_KIND_KEY] == "attention"
            found.setdefault(node.metadata_props[BLOCK_KEY], []).append(node.op_type)
    return found


def _run(graph: Graph, feeds=None):
    feeds = feeds or FEEDS
    original, ops = graph.to_proto(), graph.count_ops()
    result = MarkAttentionPass().run(graph)
    assert graph.count_ops() == ops  # metadata only
    onnx.checker.check_model(graph.to_proto())
    for want, got in zip(run_ort(original, feeds), run_ort(graph.to_proto(), feeds)):
        assert max_relative_error(want, got) == 0.0
    snapshot = graph.to_bytes()
    again = MarkAttentionPass().run(graph)
    assert not again.changed and not again.applied and graph.to_bytes() == snapshot
    return result


def test_scaled_masked_attention_is_one_unit():
    graph = _graph(_attention())
    result = _run(graph)
    assert result.changed and len(result.applied) == 1 and result.applied[0].startswith("marked attention_0")
    assert _blocks(graph) == {"attention_0": ["Transpose", "MatMul", "Div", "Add", "Softmax", "MatMul"]}


def test_scale_on_q_and_flattened_softmax_join_the_unit():
    graph = _graph(_attention(scale="before", mask=False, flattened=True))
    assert len(_run(graph).applied) == 1
    assert _blocks(graph) == {"attention_0": ["Transpose", "Mul", "MatMul", "Flatten", "Softmax", "Reshape", "MatMul"]}


def test_two_attentions_get_two_labels():
    nodes = _attention() + _attention(prefix="b_")
    graph = _graph(nodes, outputs=(("y", QKV), ("b_y", QKV)), inputs=("q", "k", "v", "b_q", "b_k", "b_v"))
    feeds = {**FEEDS, **{"b_" + k: v[:, ::-1].copy() for k, v in FEEDS.items()}}
    assert len(_run(graph, feeds).applied) == 2
    assert sorted(_blocks(graph)) == ["attention_0", "attention_1"]


def _mark(node, label: str) -> None:
    node.metadata_props[BLOCK_KEY] = label
    node.metadata_props[BLOCK_KIND_KEY] = "attention"


def test_a_new_attention_does_not_reuse_a_label():
    graph = _graph(_attention() + [_node("Relu", ["y"], "z")], outputs=(("z", QKV),))
    _mark(graph.node("z"), "attention_4")  # left by an earlier run on a larger graph
    assert len(MarkAttentionPass().run(graph).applied) == 1
    assert _blocks(graph)["attention_5"][-1] == "MatMul"


def test_a_unit_grown_around_a_marked_attention_keeps_its_label():
    graph = _graph(_attention())
    for node in graph.main:
        if node.op_type != "Transpose":  # as if the Kᵀ Transpose was not there at the first run
            _mark(node, "attention_3")
    assert len(MarkAttentionPass().run(graph).applied) == 1
    assert list(_blocks(graph)) == ["attention_3"] and len(_blocks(graph)["attention_3"]) == 6


@pytest.mark.parametrize("build, reason", [
    (lambda: _graph(_attention(softmax_axis=2)), "normalizes axis 2, not the last axis"),
    (lambda: _graph([_node("MatMul", ["q", "w"], "scores"), _node("Softmax", ["scores"], "probs", axis=-1),
                     _node("MatMul", ["probs", "v"], "y")], outputs=(("y", [B, H, S, D]),), inputs=("q", "v"),
                    inits=[numpy_helper.from_array(np.ones((D, S), np.float32), "w")]), "constant operand"),
    (lambda: _graph(_attention(), outputs=(("y", QKV), ("scores", [B, H, S, S]))), "'scores' is read outside"),
    (lambda: _graph([n if n.op_type != "Div" else _node("Div", ["scores", "q_len"], "scaled")
                     for n in _attention()], inputs=("q", "k", "v", ("q_len", [1]))),
     "not by a single constant"),
])
def test_does_not_fire(build, reason):
    graph = build()
    before = graph.to_bytes()
    result = MarkAttentionPass().run(graph)
    assert not result.changed and not result.applied
    assert len(result.not_applied) == 1 and reason in result.not_applied[0], result.not_applied
    assert graph.to_bytes() == before


def test_a_node_of_another_block_is_not_taken():
    graph = _graph(_attention())
    softmax = next(n for n in graph.main if n.op_type == "Softmax")
    softmax.metadata_props[BLOCK_KEY] = "residual_2"
    softmax.metadata_props[BLOCK_KIND_KEY] = "residual"
    result = MarkAttentionPass().run(graph)
    assert not result.changed and "already belongs to block 'residual_2'" in result.not_applied[0]


def test_a_softmax_classifier_is_not_a_candidate():
    nodes = [_node("MatMul", ["x", "w"], "logits"), _node("Softmax", ["logits"], "y", axis=-1)]
    graph = build_graph(nodes, [("x", [1, D])], [("y", [1, 3])],
                        [numpy_helper.from_array(np.ones((D, 3), np.float32), "w")])
    result = MarkAttentionPass().run(graph)
    assert not result.changed and not result.not_applied


# -- real models ------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name, count, unit", [
    ("tiny_transformer", 2, ["Transpose", "MatMul", "Mul", "Softmax", "MatMul"]),
    ("ppocr_rec", 2, ["Mul", "Transpose", "MatMul", "Flatten", "Softmax", "Reshape", "MatMul"]),
])
def test_model_attentions_are_marked(name, count, unit):
    from edgekiln.compiler.frontend import load_model
    from tests.zoo import input_shapes, model_path, sample_input

    graph = load_model(model_path(name), input_shapes(name))
    result = _run(graph, sample_input(name))
    assert len(result.applied) == count and not result.not_applied
    blocks = _blocks(graph)
    assert sorted(blocks) == [f"attention_{i}" for i in range(count)]
    assert all(ops == unit for ops in blocks.values())
    for want, got in zip(run_ort(model_path(name), sample_input(name)), run_ort(graph.to_proto(), sample_input(name))):
        assert max_relative_error(want, got) <= 1e-5
