"""Test helpers for quantization: min/max ranges of every value through onnxruntime, SQNR, accuracy.

The calibration package has its own observers; tests of the quantization passes use this
tiny independent min/max so they do not depend on it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from edgekiln.compiler.graph import Graph


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.log_severity_level = 3  # no "unused initializer" chatter
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def with_all_values_as_outputs(graph: Graph) -> tuple[onnx.ModelProto, list[str]]:
    """The graph as protobuf with every float node output also a graph output."""
    proto = graph.to_proto()
    present = {o.name for o in proto.graph.output}
    names = []
    for node in graph.nodes:
        for value in node.outputs:
            if value.name and value.dtype == 1 and value.name not in present:  # FLOAT
                proto.graph.output.append(helper.make_tensor_value_info(value.name, onnx.TensorProto.FLOAT, None))
                present.add(value.name)
    names = [o.name for o in proto.graph.output]
    return proto, names


def minmax_ranges(graph: Graph, feeds: Iterable[dict[str, np.ndarray]]) -> dict[str, tuple[float, float]]:
    """{value name: (min, max)} over `feeds` for graph inputs and every float node output."""
    proto, names = with_all_values_as_outputs(graph)
    run = session(proto)
    ranges: dict[str, tuple[float, float]] = {}

    def update(name: str, array: np.ndarray) -> None:
        low, high = float(np.min(array)), float(np.max(array))
        old = ranges.get(name)
        ranges[name] = (low, high) if old is None else (min(old[0], low), max(old[1], high))

    for feed in feeds:
        for name, array in feed.items():
            update(name, array)
        for name, array in zip(names, run.run(None, feed)):
            update(name, array)
    return ranges


def run_batches(model: onnx.ModelProto, input_name: str, images: np.ndarray) -> np.ndarray:
    """The first output for each image (the zoo exports have a static batch of 1)."""
    run = session(model)
    return np.concatenate([run.run(None, {input_name: images[i:i + 1]})[0] for i in range(len(images))])


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """10·log10(Σ ref² / Σ (ref − test)²)."""
    noise = float(np.sum((np.asarray(reference, np.float64) - test) ** 2))
    signal = float(np.sum(np.asarray(reference, np.float64) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(signal / noise)


def quantization_float_graph(name: str, extra_simplify: list | None = None) -> Graph:
    """Zoo model `name` as a quantized compile sees it: loaded, simplified (plus
    `extra_simplify` passes, e.g. cross-layer equalization), and fused with only Relu / Clip
    epilogues and no residual Add."""
    from edgekiln.compiler.frontend import load_model
    from edgekiln.compiler.pass_manager import PassManager
    from edgekiln.compiler.pipelines import simplify
    from edgekiln.passes.fuse_epilogue import FuseEpiloguePass
    from edgekiln.passes.remove_dead_nodes import RemoveDeadNodesPass
    from tests.zoo import input_shapes, model_path

    graph = load_model(model_path(name), input_shapes(name))
    graph = PassManager([*simplify().passes, *(extra_simplify or [])], stage="simplify").run(graph)
    fuse = FuseEpiloguePass(activations=frozenset({"Relu", "Clip"}), residual=False)
    return PassManager([fuse, RemoveDeadNodesPass()], stage="fuse").run(graph)
