"""Least-squares re-fit of the layers that lost input channels (no training needed).

After removal, a consumer layer (group-1 Conv, Gemm, MatMul by a constant) sees only the
kept channels X' of its input.  Its new weights solve a ridge regression of the ORIGINAL
model's output Y of that layer on X', pulled toward the old weights W0 (restricted to the
kept inputs) rather than toward zero, so few samples cannot wreck a layer:

    W = argmin ||Y - [X' 1] W||^2 + lambda ||W - W0||^2 = (A^T A + lambda I)^-1 (A^T Y + lambda W0)

with A = [X' 1] (the bias is fitted as the last row) and lambda = RIDGE * mean(diag(A^T A)),
times inputs/rows when there are fewer rows than inputs.
For a Conv, X' is the im2col patch matrix (rows = sampled output positions, columns =
kept channel x kernel tap) and W the filters flattened the same way.

Rows are output positions sampled from every calibration batch (at most MAX_ROWS in all);
a layer reads batches until it has max(MIN_ROWS, ROWS_PER_INPUT x inputs) rows, since
every batch costs a run of the model.  Layers are re-fit in graph order and each one's X' comes from the pruned model as re-fit so
far, so a layer corrects the error left by the layers before it.  Y only keeps the layer's
own kept output channels (the layer may itself be a pruned producer).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgekiln.compiler.graph import Graph
from edgekiln.passes.graph_edits import float_attr, int_attr, set_constant_input
from edgekiln.pruning.activations import capture
from edgekiln.pruning.conv_patches import conv_geometry, conv_patches, output_hw

RIDGE = 1e-2
MAX_ROWS = 16384     # rows sampled over all batches
MIN_ROWS = 4096      # a layer stops reading batches once it has this many rows ...
ROWS_PER_INPUT = 4   # ... and this many per input (kept channel x kernel tap)


def refit_layers(pruned: Graph, original: Graph, layer_names: Sequence[str], masks: dict[str, np.ndarray],
                 batches: Sequence[dict[str, np.ndarray]], progress: bool = False) -> tuple[list[str], list[str]]:
    """Re-fit `layer_names` of `pruned` in place; returns (what was re-fit, what was skipped and why)."""
    done, skipped = [], []
    layers = [pruned.node(name) for name in layer_names]
    fittable = []
    for node in layers:
        reason = _cannot_refit(node)
        if reason:
            skipped.append(f"{node.op_type} node {node.name!r}: {reason}")
        else:
            fittable.append(node)
    if not fittable or not batches:
        return done, skipped
    sampler = _RowSampler(fittable, len(batches))
    targets = capture(original, batches, [n.outputs[0].name for n in fittable], reduce=sampler.output_rows)
    session = _WeightsFedSession(pruned, fittable)
    with _progress(progress) as bar:
        task = bar.add_task("re-fitting pruned layers", total=len(fittable))
        for node in fittable:
            done.append(_refit_one(pruned, node, session, sampler, targets, masks, batches))
            bar.advance(task)
    return done, skipped


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("layers"),
                    TimeElapsedColumn(), console=Console(stderr=True), disable=not enabled, transient=False)


def _refit_one(pruned: Graph, node, session, sampler, targets, masks, batches) -> str:
    """Re-fit one layer in place (see the module docstring); returns the explain line."""
    x_name, y_name = node.inputs[0].name, node.outputs[0].name
    # Each batch is a full run of the model: stop once the rows pin the fit down well.
    enough = max(MIN_ROWS, ROWS_PER_INPUT * int(np.prod(Graph.constant(node.inputs[1]).shape[1:])))
    parts: list[np.ndarray] = []
    for i, batch in enumerate(batches):
        parts.append(sampler.input_rows(node, i, session.value(x_name, batch)))
        if sum(len(p) for p in parts) >= enough:
            break
    a = np.concatenate(parts)
    y = np.concatenate(targets[y_name][:len(parts)])
    keep = masks.get(y_name)
    if keep is not None:
        y = y[:, keep]
    w0, b0 = _current_weights(node)
    if node.op_type == "MatMul":  # no bias input to hold an intercept
        _store(pruned, node, _ridge(a, y, w0), None)
    else:
        solution = _ridge(np.concatenate([a, np.ones((len(a), 1))], axis=1), y, np.vstack([w0, b0[None]]))
        _store(pruned, node, solution[:-1], solution[-1])
    return f"{node.op_type} node {node.name!r}: re-fit on {len(a)} rows x {a.shape[1]} inputs"


class _WeightsFedSession:
    """One onnxruntime session of the pruned graph whose re-fit layers read their weights as graph inputs.

    Re-fitting changes those weights after every layer; feeding them keeps one session (one
    serialization, one session build) for the whole re-fit instead of one per layer.
    """

    def __init__(self, graph: Graph, nodes) -> None:
        import onnx
        import onnxruntime as ort

        proto = graph.to_proto()
        by_name = {n.name: n for n in proto.graph.node}
        self.fed: dict[str, tuple] = {}  # graph input -> (node, input index)
        for k, node in enumerate(nodes):
            proto_node = by_name[node.name]
            for index in ((1,) if node.op_type == "MatMul" else (1, 2)):
                name = f"__refit_{k}_{index}"
                while len(proto_node.input) <= index:
                    proto_node.input.append("")
                proto_node.input[index] = name
                array = self._current(node, index)
                proto.graph.input.append(onnx.helper.make_tensor_value_info(
                    name, onnx.helper.np_dtype_to_tensor_dtype(array.dtype), list(array.shape)))
                self.fed[name] = (node, index)
        used = {i for n in proto.graph.node for i in n.input}
        kept = [t for t in proto.graph.initializer if t.name in used]
        del proto.graph.initializer[:]
        proto.graph.initializer.extend(kept)
        del proto.graph.output[:]
        for name in dict.fromkeys(n.inputs[0].name for n in nodes):
            proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self.model_inputs = [v.name for v in graph.inputs]

    @staticmethod
    def _current(node, index: int) -> np.ndarray:
        if index == 1:
            return Graph.constant(node.inputs[1])
        _, bias = _current_weights(node)
        return bias.astype(Graph.constant(node.inputs[1]).dtype)

    def value(self, name: str, batch: dict[str, np.ndarray]) -> np.ndarray:
        feeds = {n: batch[n] for n in self.model_inputs}
        for fed, (node, index) in self.fed.items():
            feeds[fed] = self._current(node, index)
        return self.session.run([name], feeds)[0]


def _cannot_refit(node) -> str | None:
    if node.op_type == "Conv":
        if int_attr(node, "group", 1) != 1 or Graph.constant(node.inputs[1]).ndim != 4:
            return "only 2-D convolutions with group 1 are re-fit"
        return None
    if node.op_type == "Gemm":
        if int_attr(node, "transA", 0) or float_attr(node, "alpha", 1.0) != 1.0 or float_attr(node, "beta", 1.0) != 1.0:
            return "Gemm with transA or alpha/beta other than 1 is not re-fit"
        bias = Graph.constant(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
        if bias is not None and bias.ndim == 2 and bias.shape[0] != 1:
            return "Gemm whose C is not a per-feature bias is not re-fit"
        return None
    if node.op_type == "MatMul":
        return None
    return "not a layer with weights"


class _RowSampler:
    """The same rows (output positions) of a layer's input and output, for every batch."""

    def __init__(self, nodes, batch_count: int) -> None:
        self.by_output = {n.outputs[0].name: n for n in nodes}
        self.per_batch = max(1, MAX_ROWS // batch_count)
        self.positions: dict[tuple[str, int], np.ndarray] = {}

    def _rows(self, node, index: int, count: int) -> np.ndarray:
        key = (node.name, index)
        if key not in self.positions:
            rng = np.random.default_rng(index)
            take = min(count, self.per_batch)
            self.positions[key] = np.sort(rng.choice(count, take, replace=False))
        return self.positions[key]

    def output_rows(self, name: str, index: int, y: np.ndarray) -> np.ndarray:
        node = self.by_output[name]
        if node.op_type == "Conv":  # [N, O, OH, OW] -> [(n, oh, ow), O]
            flat = np.moveaxis(y, 1, -1).reshape(-1, y.shape[1])
        else:
            flat = y.reshape(-1, y.shape[-1])
        return flat[self._rows(node, index, len(flat))].astype(np.float64)

    def input_rows(self, node, index: int, x: np.ndarray) -> np.ndarray:
        if node.op_type == "Conv":
            kernel = Graph.constant(node.inputs[1]).shape[2:]
            strides, dilations, pads = conv_geometry(node, x.shape[2:], kernel)
            count = x.shape[0] * int(np.prod(output_hw(x.shape[2:], kernel, strides, dilations, pads)))
            patches = conv_patches(node, x.astype(np.float64), kernel, self._rows(node, index, count))
            return patches.reshape(len(patches), -1)
        flat = x.reshape(-1, x.shape[-1]).astype(np.float64)
        return flat[self._rows(node, index, len(flat))]


def _current_weights(node) -> tuple[np.ndarray, np.ndarray]:
    """The layer's weights as [inputs, outputs] and its bias [outputs] (zeros when absent)."""
    weight = Graph.constant(node.inputs[1]).astype(np.float64)
    if node.op_type == "Conv":
        w = weight.reshape(weight.shape[0], -1).T
    elif node.op_type == "Gemm" and int_attr(node, "transB", 0):
        w = weight.T
    else:
        w = weight
    bias_value = node.inputs[2] if len(node.inputs) > 2 else None
    bias = Graph.constant(bias_value) if bias_value is not None else None
    if bias is None:
        return w, np.zeros(w.shape[1])
    return w, np.broadcast_to(bias.astype(np.float64).reshape(-1), (w.shape[1],)).copy()


def _ridge(a: np.ndarray, y: np.ndarray, prior: np.ndarray) -> np.ndarray:
    gram = a.T @ a
    # Fewer rows than inputs leaves directions the data cannot see: there the prior must win.
    lam = RIDGE * max(1.0, a.shape[1] / len(a)) * max(float(np.mean(np.diag(gram))), 1e-12)
    return np.linalg.solve(gram + lam * np.eye(len(gram)), a.T @ y + lam * prior)


def _store(graph: Graph, node, w: np.ndarray, b: np.ndarray | None) -> None:
    old = Graph.constant(node.inputs[1])
    dtype = old.dtype
    if node.op_type == "Conv":
        weight = w.T.reshape(old.shape)
    elif node.op_type == "Gemm" and int_attr(node, "transB", 0):
        weight = w.T
    else:
        weight = w
    set_constant_input(graph, node, 1, weight.astype(dtype), f"{node.name}_weight")
    if b is not None:
        set_constant_input(graph, node, 2, b.astype(dtype), f"{node.name}_bias")
