"""Run a graph on calibration batches in onnxruntime and keep chosen intermediate values.

Pruning needs a few activations (the inputs and outputs of the layers it ranks or re-fits),
not every one, so only the named values become extra graph outputs.  Graph optimizations
are off: the values seen are exactly the graph's own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx

from edgekiln.compiler.graph import Graph


def capture(graph: Graph, batches: Sequence[dict[str, np.ndarray]], names: Sequence[str],
            reduce: Callable[[str, int, np.ndarray], np.ndarray] | None = None) -> dict[str, list[np.ndarray]]:
    """{value name: [its array for each batch]} for `names` (graph inputs, outputs or node outputs).

    `reduce(name, batch_index, array)`, when given, is kept instead of the array (a sample of
    its rows, say), so memory holds one batch of full activations at a time.
    """
    import onnxruntime as ort

    names = list(dict.fromkeys(names))
    if not names or not batches:
        return {n: [] for n in names}
    proto = graph.to_proto()
    present = {o.name for o in proto.graph.output} | {i.name for i in proto.graph.input}
    types = {v.name: v.dtype for v in [*graph.inputs, *(o for n in graph.nodes for o in n.outputs)]}
    for name in names:
        if name not in present:
            proto.graph.output.append(onnx.helper.make_tensor_value_info(name, int(types[name]), None))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    input_names = [i.name for i in session.get_inputs()]
    captured: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for index, batch in enumerate(batches):
        feeds = {n: batch[n] for n in input_names}
        for name, array in zip(names, session.run(names, feeds)):
            captured[name].append(array if reduce is None else reduce(name, index, array))
    return captured
