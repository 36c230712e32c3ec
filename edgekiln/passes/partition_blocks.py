"""PartitionBlocksPass: mark groups of fused convs that a backend can run as one kernel.

Block fusion ("On the Efficiency of Convolutional Neural Networks") runs all layers of a
residual block in one kernel, tile by tile, so the block's intermediates stay in cache
instead of round-tripping through memory: for a block f3(f2(f1(x))) (+ x) the traffic drops
from x, t1, t2, t3, y to x and y.  This pass only decides the partition; it records it as
node metadata, the convention MarkAttentionPass uses too:

    node.metadata_props["edgekiln.block"]      = "<kind>_<n>"   (e.g. "inverted_residual_0")
    node.metadata_props["edgekiln.block_kind"] = "<kind>"

and lowering copies the block id onto each `KernelCall`.  It runs after FuseEpiloguePass,
on `edgekiln` FusedConv<epilogue> nodes (a conv with no epilogue is still a plain Conv).

Case 1 "inverted_residual" (MobileNetV2): [1x1 expand conv + activation] -> depthwise conv
        (group = channels) + activation -> 1x1 project conv, with no activation, its residual
        Add fused in or not.  Anchored on the depthwise conv.  The expand stage is optional
        (MobileNetV2's first block has none); a 1x1 conv + activation before the depthwise
        one that cannot join (stride 2, output read elsewhere, in another block) is left out
        of the block with the reason.
Case 2 "basic_residual" (ResNet): kxk conv (+ activation) -> kxk conv with the residual
        Add (+ activation) fused, the residual being the first conv's input, or a 1x1
        downsample conv of it (then the downsample conv is in the block too).  Anchored on
        the second conv.

Case 3 "depthwise_separable" (MobileNetV1, re-parameterized MobileOne): depthwise conv +
        activation -> 1x1 pointwise conv with its own activation.  Found from the same
        anchor as Case 1: a project conv with an activation is not a linear bottleneck, but
        the pair still runs as one kernel with the depthwise output kept in cache.

Every intermediate of a block is read only inside the block (else it must be written out
anyway) and is not a graph output.  Nodes already in a block (attention units, or a block
of an earlier run) are never re-assigned.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import onnx_ir as ir

from edgekiln.compiler import fused_ops
from edgekiln.compiler.graph import Graph
from edgekiln.compiler.pass_contract import RewritePass, node_label

BLOCK_KEY = "edgekiln.block"
BLOCK_KIND_KEY = "edgekiln.block_kind"
INVERTED_RESIDUAL = "inverted_residual"
BASIC_RESIDUAL = "basic_residual"
DEPTHWISE_SEPARABLE = "depthwise_separable"
KINDS = (INVERTED_RESIDUAL, BASIC_RESIDUAL, DEPTHWISE_SEPARABLE)


@dataclass(frozen=True)
class _ConvView:
    """What block matching asks of a Conv or a FusedConv node."""

    node: ir.Node
    kernel: tuple[int, ...] | None
    group: int
    strides: tuple[int, ...]
    channels_in: int | None
    channels_out: int | None
    activation: str | None  # the epilogue's activation step
    residual: ir.Value | None  # the fused residual input

    @property
    def pointwise(self) -> bool:
        return self.kernel is not None and all(k == 1 for k in self.kernel)

    @property
    def depthwise(self) -> bool:
        return self.group > 1 and self.group == self.channels_in == self.channels_out

    @property
    def unit_stride(self) -> bool:
        return all(s == 1 for s in self.strides)

    @property
    def output(self) -> ir.Value:
        return self.node.outputs[0]


@dataclass
class _Candidate:
    kind: str
    anchor: ir.Node
    nodes: list[ir.Node] = field(default_factory=list)  # the block, set by `check`
    summary: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.kind} at {node_label(self.anchor)}"


class PartitionBlocksPass(RewritePass[_Candidate]):
    name = "partition-blocks"

    def __init__(self) -> None:
        self._next_index: dict[str, int] = {}

    def match(self, graph: Graph) -> Iterable[_Candidate]:
        # Number new blocks after the ones already in the graph, so ids stay unique.
        self._next_index = {kind: 0 for kind in KINDS}
        for node in graph.main:
            found = re.fullmatch(r"(.+)_(\d+)", node.metadata_props.get(BLOCK_KEY, ""))
            if found and found.group(1) in self._next_index:
                self._next_index[found.group(1)] = max(self._next_index[found.group(1)], int(found.group(2)) + 1)
        candidates = []
        for node in graph.main:
            view = _conv_view(node)
            if view is None or _block_of(node) in KINDS:
                continue  # an earlier run's block: nothing to say
            if view.depthwise:
                candidates.append(_Candidate(INVERTED_RESIDUAL, node))
            elif view.residual is not None and not view.pointwise and view.group == 1:
                candidates.append(_Candidate(BASIC_RESIDUAL, node))
        return candidates

    def check(self, graph: Graph, candidate: _Candidate) -> str | None:
        if candidate.kind == INVERTED_RESIDUAL:
            reason = self._inverted_residual(graph, candidate)
        else:
            reason = self._basic_residual(graph, candidate)
        if reason is None:
            for node in candidate.nodes:
                if (problem := self._taken(node)) is not None:
                    return problem
        return reason

    def rewrite(self, graph: Graph, candidate: _Candidate) -> str:
        index = self._next_index[candidate.kind]
        self._next_index[candidate.kind] = index + 1
        block = f"{candidate.kind}_{index}"
        for node in candidate.nodes:
            node.metadata_props[BLOCK_KEY] = block
            node.metadata_props[BLOCK_KIND_KEY] = candidate.kind
        chain = " -> ".join(node.name or node.op_type for node in candidate.nodes)
        message = f"block {block}: {chain}{candidate.summary}"
        return message + "".join(f"; {note}" for note in candidate.notes)

    # -- Case 1 --------------------------------------------------------------------------
    def _inverted_residual(self, graph: Graph, c: _Candidate) -> str | None:
        dw = _conv_view(c.anchor)
        if dw.residual is not None:
            return "the depthwise conv has a residual Add fused in"
        if dw.activation is None:
            return "the depthwise conv has no fused activation"
        if (problem := _sole_reader(dw.output, "depthwise output")) is not None:
            return problem
        project = _conv_view(Graph.consumers(dw.output)[0])
        if project is None or not project.pointwise:
            return f"the depthwise output goes to {node_label(Graph.consumers(dw.output)[0])}, not a 1x1 conv"
        if project.node.inputs[0] is not dw.output:
            return "the depthwise output is not the project conv's input"
        if project.group != 1:
            return f"the project conv is grouped (group={project.group})"
        if not project.unit_stride:
            return f"the project conv has strides {list(project.strides)}"
        if project.activation is not None:
            # Not a linear bottleneck: Case 3, the depthwise-separable pair, without an expand stage.
            c.kind, c.nodes = DEPTHWISE_SEPARABLE, [dw.node, project.node]
            c.summary = f" ({dw.activation}, then {project.activation})"
            return None
        expand, left_out = self._expand_stage(dw)
        if left_out is not None:
            c.notes.append(left_out)
        c.nodes = ([expand] if expand is not None else []) + [dw.node, project.node]
        if project.residual is not None:
            block_input = (expand or dw.node).inputs[0]
            c.summary = " (+residual)" if project.residual is block_input else \
                f" (+residual {project.residual.name!r})"
        return None

    def _expand_stage(self, dw: _ConvView) -> tuple[ir.Node | None, str | None]:
        """The 1x1 expand conv before the depthwise conv, or (None, why it stays out)."""
        source = dw.node.inputs[0]
        expand = _conv_view(source.producer()) if source.producer() is not None else None
        # Only a 1x1 conv with an activation is an expand stage; a linear 1x1 conv before the
        # depthwise one is the previous block's project conv (expansion ratio 1).
        if expand is None or not expand.pointwise or expand.activation is None or expand.group != 1:
            return None, None
        label = node_label(expand.node)
        if expand.residual is not None:
            return None, f"expand conv {label} left out: it has a residual Add fused in"
        if not expand.unit_stride:
            return None, f"expand conv {label} left out: stride-{max(expand.strides)} expand"
        if (problem := _sole_reader(source, "expand output")) is not None:
            return None, f"expand conv {label} left out: {problem}"
        if (problem := self._taken(expand.node)) is not None:
            return None, f"expand conv {label} left out: {problem}"
        return expand.node, None

    # -- Case 2 --------------------------------------------------------------------------
    def _basic_residual(self, graph: Graph, c: _Candidate) -> str | None:
        second = _conv_view(c.anchor)
        source = second.node.inputs[0]
        first = _conv_view(source.producer()) if source.producer() is not None else None
        if first is None:
            producer = source.producer()
            return f"its input comes from {node_label(producer) if producer else 'a graph input'}, not a conv"
        if first.pointwise or first.group != 1:
            return f"the first conv {node_label(first.node)} is not a dense kxk conv"
        if first.residual is not None:
            return f"the first conv {node_label(first.node)} has a residual Add fused in"
        if (problem := _sole_reader(source, "first conv output")) is not None:
            return problem
        block_input, skip = first.node.inputs[0], second.residual
        nodes = [first.node, second.node]
        c.summary = " (+residual)"
        if skip is not block_input:
            downsample = _conv_view(skip.producer()) if skip.producer() is not None else None
            if downsample is None or not downsample.pointwise or downsample.node.inputs[0] is not block_input:
                return f"the residual {skip.name!r} is neither the block input nor a 1x1 downsample conv of it"
            if downsample.activation is not None or downsample.residual is not None:
                return f"the downsample conv {node_label(downsample.node)} has an epilogue"
            if (problem := _sole_reader(skip, "downsample output")) is not None:
                return problem
            nodes.append(downsample.node)
            c.summary = f" (+residual through downsample {downsample.node.name or 'conv'})"
        order = {id(node): i for i, node in enumerate(graph.main)}
        c.nodes = sorted(nodes, key=lambda node: order[id(node)])
        return None

    @staticmethod
    def _taken(node: ir.Node) -> str | None:
        block = node.metadata_props.get(BLOCK_KEY)
        return f"{node_label(node)} is already in block {block}" if block is not None else None


# -- helpers -------------------------------------------------------------------------------
def _conv_view(node: ir.Node | None) -> _ConvView | None:
    """A Conv or FusedConv<epilogue> node's shape facts; None for anything else."""
    if node is None:
        return None
    if node.domain in ("", "ai.onnx") and node.op_type == "Conv":
        steps: tuple[str, ...] = ()
    elif node.domain == fused_ops.DOMAIN and (parsed := fused_ops.parse_fused_op_type(node.op_type)) \
            and parsed[0] == "FusedConv":
        steps = parsed[1]
    else:
        return None
    kernel_attr = node.attributes.get("kernel_shape")
    weight = Graph.static_shape(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] is not None else None
    kernel = tuple(kernel_attr.value) if kernel_attr is not None else (weight[2:] if weight else None)
    group = node.attributes.get("group")
    strides = node.attributes.get("strides")
    x_shape, y_shape = Graph.static_shape(node.inputs[0]), Graph.static_shape(node.outputs[0])
    activation = next((s for s in steps if s != fused_ops.RESIDUAL), None)
    residual = node.inputs[3] if fused_ops.RESIDUAL in steps and len(node.inputs) > 3 else None
    return _ConvView(node, kernel, group.value if group is not None else 1,
                     tuple(strides.value) if strides is not None else (1,),
                     x_shape[1] if x_shape and len(x_shape) > 1 else None,
                     y_shape[1] if y_shape and len(y_shape) > 1 else None,
                     activation, residual)


def _sole_reader(value: ir.Value, what: str) -> str | None:
    """Why `value` cannot stay inside a block: other readers or being a graph output."""
    if value.is_graph_output():
        return f"{what} is a graph output"
    readers = list({id(n): n for n in Graph.consumers(value)}.values())
    if len(readers) != 1:
        return f"{what} read by {len(readers)} nodes"
    return None


def _block_of(node: ir.Node) -> str | None:
    """The kind of the block `node` is in, or None."""
    return node.metadata_props.get(BLOCK_KIND_KEY) if BLOCK_KEY in node.metadata_props else None
