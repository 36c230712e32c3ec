"""`--cpu-tail`: split the ops the Edge TPU cannot run off the end of a model, as a CPU ONNX model.

The Edge TPU runs one segment and everything after its first unmappable op on the CPU, so a
model whose post-processing (an ArgMax, a Gather, a 2-D Softmax, ...) the TPU cannot map is
better split explicitly: the TPU model ends at the last op before it, and the rest becomes
`cpu_tail.onnx`, run on the host after the TPU model.

    tail  = every node that is unsupported (`op_support.unsupported_nodes`, the same rules as
            the compile check) or reads, directly or not, a value a tail node writes
    head  = every other node; it never reads a tail value (by construction), so it is a
            graph on its own
    cut   = values the head writes (or model inputs) that tail nodes read: the head's extra
            outputs and the tail's inputs, under their names in the original model

The head keeps the model's outputs it writes itself; the tail writes the others.  Running the
head, then the tail on the cut values (and any model input the tail reads), reproduces the
original model exactly: the nodes are the same, only split in two graphs.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
import onnx.utils

from edgekiln.compiler.graph import Graph
from edgekiln.compiler.op_support import unsupported_nodes
from edgekiln.errors import EdgekilnError


class CpuTailError(EdgekilnError):
    """The model cannot be split into a TPU head and a CPU tail."""


@dataclass
class CpuTailSplit:
    head: Graph
    tail: onnx.ModelProto | None   # None when every node is supported (nothing to split)
    cut: list[str]                 # the tail's inputs that the head writes
    tail_nodes: list[str]
    first_unsupported: list[str]   # "name (Op): reason" of the nodes that start the tail

    def describe(self) -> str:
        if self.tail is None:
            return "cpu-tail: every node maps to the Edge TPU; nothing split off"
        return (f"cpu-tail: {len(self.tail_nodes)} node(s) moved to cpu_tail.onnx, starting at "
                f"{'; '.join(self.first_unsupported)}; cut tensors: {', '.join(self.cut)}")


def split_cpu_tail(graph: Graph, backend: str = "edgetpu") -> CpuTailSplit:
    """Split `graph` (shapes inferred, as after the float pipeline) into a TPU head and a CPU tail."""
    problems = unsupported_nodes(graph, backend)
    if not problems:
        return CpuTailSplit(graph, None, [], [], [])
    starting = {p.node_name for p in problems}
    tail_values: set[str] = set()
    tail_nodes: list[str] = []
    for node in graph.main:  # graph order is topological: producers come first
        reads_tail = any(v is not None and v.name in tail_values for v in node.inputs)
        if node.name in starting or reads_tail:
            tail_nodes.append(node.name)
            tail_values.update(v.name for v in node.outputs)
    in_tail = set(tail_nodes)
    head_nodes = [n for n in graph.main if n.name not in in_tail]
    if not any(n.op_type not in ("Constant",) for n in head_nodes):
        raise CpuTailError(f"--cpu-tail: the first node of the model is already unsupported "
                           f"({problems[0].node_name} ({problems[0].op_type}): {problems[0].reason}); "
                           "nothing would run on the Edge TPU")
    model_inputs = [v.name for v in graph.inputs]
    model_outputs = [v.name for v in graph.outputs]
    initializers = set(graph.main.initializers)
    cut: list[str] = []
    tail_model_inputs: list[str] = []
    for node in graph.main:
        if node.name not in in_tail:
            continue
        for value in node.inputs:
            if value is None or value.name in tail_values or value.name in initializers:
                continue
            if value.name in model_inputs:
                if value.name not in tail_model_inputs:
                    tail_model_inputs.append(value.name)
            elif value.name not in cut:
                cut.append(value.name)
    head_outputs = [name for name in model_outputs if name not in tail_values] + cut
    tail_outputs = [name for name in model_outputs if name in tail_values]
    proto = graph.to_proto()
    head = onnx.utils.Extractor(proto).extract_model(model_inputs, head_outputs)
    tail = onnx.utils.Extractor(proto).extract_model(tail_model_inputs + cut, tail_outputs)
    first = [f"{p.node_name} ({p.op_type}): {p.reason}" for p in problems if p.node_name in in_tail][:3]
    return CpuTailSplit(Graph.from_proto(head, source=graph.source), tail, cut, tail_nodes, first)
