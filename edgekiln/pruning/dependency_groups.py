"""Dependency groups: which channels of which tensors must be removed together (OTOv2's zero-invariant groups).

Every activation that carries channels gets a *channel axis* and, for each position along
that axis, an *atom* id.  A layer with weights (Conv with group 1, Gemm, MatMul by a
constant) creates fresh atoms for its output channels; every other op says how its output
atoms follow from its inputs':

    pass-through   Relu, Sigmoid, Clip, pooling, BatchNorm, InstanceNorm, Resize, Pad, Softmax
                   over another axis, Reduce* over other axes: same atoms (axis renumbered by
                   Transpose, Squeeze, Unsqueeze, Reduce with keepdims=0)
    elementwise    Add, Sub, Mul, Div, Max, ... of two tracked tensors: position i of one and
                   position i of the other are the SAME channel (union): residual Adds, and
                   SE blocks, whose Mul by a per-channel gate ties the gate's producer conv to x
    depthwise      Conv with group = C_in: output channel k*m + j comes from input channel k
    Concat         on the channel axis: the atoms of the inputs, one after the other
    Split / Slice  on the channel axis: the sub-range of the input's atoms
    Flatten /      [N, C, H, W] -> [N, C*H*W]: feature f belongs to channel f // (H*W), so
    Reshape        each atom repeats H*W times (a Gemm after it drops whole blocks of columns)

A *channel* (a removable unit) is a set of atoms joined by unions; a *group* is the set of
channels that share producers (all the output channels of one conv, plus whatever the unions
tie to them: both convs of a residual Add, the expand conv of an SE gate, ...).  Removing a
channel removes every position whose atom is in it: the producers' weight rows and biases,
BatchNorm parameters, per-channel constants, the consumers' weight columns.

A channel is *frozen* (its group is left alone, with the reason) when it reaches a model
output, meets a tensor whose channels are not tracked (a model input, the output of an op
this file does not model) on its own channel axis, or is used by an op that mixes channels
in a way removal cannot follow (a grouped conv, Softmax or LayerNorm over the channel axis,
a Reshape that splits the channel axis, an unknown op).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from edgekiln.compiler.graph import Graph
from edgekiln.passes.graph_edits import int_attr, ints_attr

UNARY_PASS_THROUGH = frozenset({
    "Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu", "Selu", "Celu", "Softplus",
    "Softsign", "Gelu", "Mish", "Erf", "Abs", "Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Floor", "Ceil", "Round",
    "Sign", "Sin", "Cos", "Identity", "Dropout", "Cast", "Clip", "ThresholdedRelu", "Shrink", "Not",
    "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool",
})
CHANNEL_FIRST_ONLY = frozenset({
    "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool",
    "BatchNormalization", "InstanceNormalization",
})
ELEMENTWISE = frozenset({
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu", "Where", "Equal", "Greater",
    "GreaterOrEqual", "Less", "LessOrEqual", "And", "Or", "Xor", "Mod", "BitShift",
})
REDUCE = frozenset({
    "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
    "ReduceLogSumExp", "ReduceSumSquare",
})


@dataclass
class ChannelAxis:
    """A tracked activation: its channel axis and the atom of every position along it."""

    axis: int
    atoms: np.ndarray


@dataclass
class GroupMember:
    """Where a group lives in one tensor: `positions` along `axis`, and which group channel each one is."""

    value: str
    axis: int
    positions: np.ndarray
    channels: np.ndarray


@dataclass
class DependencyGroup:
    """Channels removed together.  `reasons` is empty when the group may be pruned."""

    index: int
    units: list[int]
    members: list[GroupMember] = field(default_factory=list)
    producers: list[str] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.units)

    @property
    def prunable(self) -> bool:
        return not self.reasons and bool(self.producers)

    def describe(self) -> str:
        made = ", ".join(self.producers) or "no weighted producer"
        read = ", ".join(self.consumers) or "no weighted consumer"
        return f"group {self.index} ({self.size} channels; made by {made}; read by {read})"


@dataclass
class ChannelAnalysis:
    """The result of `find_dependency_groups`: tracked axes per value, and the groups."""

    dims: dict[str, ChannelAxis]
    unit_of_atom: np.ndarray
    groups: list[DependencyGroup]
    producers: list[ir.Node]
    consumers: list[tuple[ir.Node, ir.Value]]
    norms: list[ir.Node]


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def add(self, count: int) -> None:
        self.parent.extend(range(len(self.parent), len(self.parent) + count))

    def find(self, a: int) -> int:
        root = a
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[a] != root:
            self.parent[a], a = root, self.parent[a]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


class _Tracker:
    """Walks the graph once in topological order, propagating atoms (see the module docstring)."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.dims: dict[str, ChannelAxis] = {}
        self.units = _UnionFind()    # atoms that are the same channel
        self.groups = _UnionFind()   # atoms whose channels are pruned as one group
        self.frozen: dict[int, list[str]] = {}
        self.producer_of_atom: dict[int, str] = {}
        self.producers: list[ir.Node] = []
        self.consumers: list[tuple[ir.Node, ir.Value]] = []
        self.norms: list[ir.Node] = []

    # -- atoms ---------------------------------------------------------------------------
    def fresh(self, count: int, producer: str | None = None) -> np.ndarray:
        start = len(self.units.parent)
        self.units.add(count)
        self.groups.add(count)
        atoms = np.arange(start, start + count, dtype=np.int64)
        for a in atoms[1:]:
            self.groups.union(int(atoms[0]), int(a))
        if producer is not None:
            self.producer_of_atom.update({int(a): producer for a in atoms})
        return atoms

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        for x, y in zip(a.tolist(), b.tolist()):
            self.units.union(x, y)
            self.groups.union(x, y)

    def freeze(self, dim: ChannelAxis | None, reason: str) -> None:
        if dim is None:
            return
        for a in dim.atoms[:1].tolist():  # the group is frozen as a whole: one atom carries the reason
            self.frozen.setdefault(a, []).append(reason)

    def dim(self, value: ir.Value | None) -> ChannelAxis | None:
        return None if value is None else self.dims.get(value.name)

    def set(self, value: ir.Value, axis: int, atoms: np.ndarray) -> None:
        self.dims[value.name] = ChannelAxis(axis, atoms)

    # -- the walk ------------------------------------------------------------------------
    def run(self) -> None:
        for node in self.graph.nodes:
            self.visit(node)
        for out in self.graph.outputs:
            self.freeze(self.dim(out), f"reaches the model output {out.name!r}")

    def visit(self, node: ir.Node) -> None:
        op = node.op_type
        tracked = [self.dim(v) for v in node.inputs]
        if node.domain not in ("", "ai.onnx"):
            return self.unknown(node, "is not a standard ONNX op")
        if op == "Conv":
            return self.conv(node)
        if op == "Gemm":
            return self.gemm(node)
        if op == "MatMul":
            return self.matmul(node)
        if not any(d is not None for d in tracked):
            return None  # nothing tracked flows through: its outputs stay untracked
        handler = getattr(self, f"op_{op}", None)
        if handler is not None:
            return handler(node)
        if op in ELEMENTWISE:
            return self.elementwise(node)
        if op in REDUCE:
            return self.reduce(node)
        if op in UNARY_PASS_THROUGH:
            return self.pass_through(node, channel_first=op in CHANNEL_FIRST_ONLY)
        return self.unknown(node, "is an op pruning does not model")

    def label(self, node: ir.Node) -> str:
        return f"{node.op_type} node {node.name!r}"

    def unknown(self, node: ir.Node, why: str) -> None:
        for value in node.inputs:
            self.freeze(self.dim(value), f"read by {self.label(node)}, which {why}")

    def pass_through(self, node: ir.Node, channel_first: bool = False, axis_map=None) -> None:
        d = self.dim(node.inputs[0])
        if d is None:
            return None
        if channel_first and d.axis != 1:
            return self.unknown(node, f"works on axis 1 while the channels are on axis {d.axis}")
        axis = d.axis if axis_map is None else axis_map(d.axis)
        if axis is None:
            return None
        self.set(node.outputs[0], axis, d.atoms)
        return None

    # -- layers with weights ---------------------------------------------------------------
    def conv(self, node: ir.Node) -> None:
        x, w = node.inputs[0], node.inputs[1]
        weight = Graph.constant(w)
        d = self.dim(x)
        if weight is None:
            return self.unknown(node, "has non-constant weights")
        groups = int_attr(node, "group", 1)
        c_in, c_out = weight.shape[1] * groups, weight.shape[0]
        if groups == 1:
            if d is not None:
                if d.axis != 1:
                    return self.unknown(node, f"reads channels on axis 1 while they are on axis {d.axis}")
                self.consumers.append((node, x))
            self.set(node.outputs[0], 1, self.fresh(c_out, node.name))
            self.producers.append(node)
            return None
        depthwise = groups == c_in and c_out % c_in == 0  # channel multiplier c_out / c_in
        if depthwise and d is not None and d.axis == 1:
            self.set(node.outputs[0], 1, np.repeat(d.atoms, c_out // c_in))
            return None
        return self.unknown(node, f"is a grouped convolution (group={groups})")

    def gemm(self, node: ir.Node) -> None:
        a, b = node.inputs[0], node.inputs[1]
        weight = Graph.constant(b)
        d = self.dim(a)
        if weight is None:
            return self.unknown(node, "has a non-constant B")
        if d is not None:
            if int_attr(node, "transA", 0) or d.axis != 1:
                return self.unknown(node, "contracts an axis other than the tracked channels")
            self.consumers.append((node, a))
        n = weight.shape[0] if int_attr(node, "transB", 0) else weight.shape[1]
        self.set(node.outputs[0], 1, self.fresh(n, node.name))
        self.producers.append(node)
        return None

    def matmul(self, node: ir.Node) -> None:
        a, b = node.inputs[0], node.inputs[1]
        weight = Graph.constant(b)
        d = self.dim(a)
        if weight is None or weight.ndim != 2 or Graph.constant(a) is not None:
            return self.unknown(node, "multiplies by a non-constant or batched matrix")
        rank = len(a.shape) if a.shape is not None else 0
        if d is not None:
            if d.axis != rank - 1:
                return self.unknown(node, "contracts an axis other than the tracked channels")
            self.consumers.append((node, a))
        self.set(node.outputs[0], rank - 1, self.fresh(weight.shape[1], node.name))
        self.producers.append(node)
        return None

    # -- ops that combine tensors ---------------------------------------------------------
    def elementwise(self, node: ir.Node) -> None:
        out = node.outputs[0]
        rank = _rank(out)
        aligned = [(v, d, d.axis + rank - _rank(v)) for v in node.inputs if (d := self.dim(v)) is not None]
        axes = {a for _, _, a in aligned}
        sizes = {len(d.atoms) for _, d, _ in aligned}
        if len(axes) != 1 or len(sizes) != 1:
            return self.unknown(node, "combines tensors whose channels are on different axes or differ in count")
        axis = axes.pop()
        first = aligned[0][1]
        for _, d, _ in aligned[1:]:
            self.union(first.atoms, d.atoms)
        size = len(first.atoms)
        for v in node.inputs:
            if v is None or self.dim(v) is not None:
                continue
            j = axis - (rank - _rank(v))
            shape = Graph.static_shape(v)
            if j < 0 or shape is None or shape[j] == 1:
                continue  # broadcast along the channels: nothing to remove from it
            if Graph.constant(v) is None:
                return self.unknown(node, f"combines the channels with {v.name!r}, whose channels are not tracked")
        if size == 1 and _dim(out, axis) != 1:
            return self.unknown(node, "broadcasts a single channel across the others")
        self.set(out, axis, first.atoms)
        return None

    def op_Concat(self, node: ir.Node) -> None:
        out = node.outputs[0]
        rank = _rank(out)
        concat_axis = _norm(int_attr(node, "axis", 0), rank)
        dims = [self.dim(v) for v in node.inputs]
        axes = {d.axis for d in dims if d is not None}
        if len(axes) != 1:
            return self.unknown(node, "joins tensors whose channels are on different axes")
        axis = axes.pop()
        if concat_axis == axis:
            parts = []
            for v, d in zip(node.inputs, dims):
                if d is None:  # a model input or constant joined in: its channels stay
                    d = ChannelAxis(axis, self.fresh(_dim(v, axis)))
                    self.freeze(d, f"joined by {self.label(node)} with the untracked tensor {v.name!r}")
                parts.append(d.atoms)
            self.set(out, axis, np.concatenate(parts))
            return None
        return self.elementwise(node)

    def op_Split(self, node: ir.Node) -> None:
        d = self.dim(node.inputs[0])
        split_axis = _norm(int_attr(node, "axis", 0), _rank(node.inputs[0]))
        if split_axis != d.axis:
            for out in node.outputs:
                self.set(out, d.axis, d.atoms)
            return
        start = 0
        for out in node.outputs:
            size = _dim(out, d.axis)
            self.set(out, d.axis, d.atoms[start:start + size])
            start += size
        return

    def op_Slice(self, node: ir.Node) -> None:
        d = self.dim(node.inputs[0])
        rank = _rank(node.inputs[0])
        params = [Graph.constant(v) if v is not None else None for v in list(node.inputs[1:5]) + [None] * 4][:4]
        starts, ends, axes, steps = params
        if starts is None or ends is None:
            return self.unknown(node, "has non-constant starts/ends")
        axes = list(range(len(starts))) if axes is None else [_norm(int(a), rank) for a in axes]
        if d.axis not in axes:
            return self.pass_through(node)
        k = axes.index(d.axis)
        if steps is not None and int(steps[k]) != 1:
            return self.unknown(node, "slices the channels with a step other than 1")
        begin, end, _ = slice(int(starts[k]), int(ends[k])).indices(len(d.atoms))
        self.set(node.outputs[0], d.axis, d.atoms[begin:max(begin, end)])
        return None

    # -- ops that move or reduce axes -------------------------------------------------------
    def op_BatchNormalization(self, node: ir.Node) -> None:
        if self.dim(node.inputs[0]) is not None and self.dim(node.inputs[0]).axis == 1:
            self.norms.append(node)
        return self.pass_through(node, channel_first=True)

    def op_InstanceNormalization(self, node: ir.Node) -> None:
        if self.dim(node.inputs[0]) is not None and self.dim(node.inputs[0]).axis == 1:
            self.norms.append(node)
        return self.pass_through(node, channel_first=True)

    def op_Transpose(self, node: ir.Node) -> None:
        perm = ints_attr(node, "perm", list(reversed(range(_rank(node.inputs[0])))))
        return self.pass_through(node, axis_map=perm.index)

    def op_Squeeze(self, node: ir.Node) -> None:
        rank = _rank(node.inputs[0])
        axes = _axes_input(node, rank)
        if axes is None:
            axes = [i for i, s in enumerate(Graph.static_shape(node.inputs[0]) or ()) if s == 1]
        d = self.dim(node.inputs[0])
        if d.axis in axes:
            return self.unknown(node, "squeezes the channel axis away")
        return self.pass_through(node, axis_map=lambda a: a - sum(1 for x in axes if x < a))

    def op_Unsqueeze(self, node: ir.Node) -> None:
        out_rank = _rank(node.outputs[0])
        axes = _axes_input(node, out_rank) or []
        kept = [i for i in range(out_rank) if i not in axes]
        return self.pass_through(node, axis_map=lambda a: kept[a])

    def reduce(self, node: ir.Node) -> None:
        rank = _rank(node.inputs[0])
        axes = _axes_input(node, rank)
        d = self.dim(node.inputs[0])
        if axes is None or d.axis in axes:
            return self.unknown(node, "reduces over the channel axis")
        if int_attr(node, "keepdims", 1):
            return self.pass_through(node)
        return self.pass_through(node, axis_map=lambda a: a - sum(1 for x in axes if x < a))

    def op_Softmax(self, node: ir.Node) -> None:
        d = self.dim(node.inputs[0])
        if _norm(int_attr(node, "axis", -1), _rank(node.inputs[0])) == d.axis:
            return self.unknown(node, "normalizes over the channel axis")
        return self.pass_through(node)

    op_LogSoftmax = op_Softmax
    op_Hardmax = op_Softmax

    def op_LayerNormalization(self, node: ir.Node) -> None:
        d = self.dim(node.inputs[0])
        if d is not None and d.axis >= _norm(int_attr(node, "axis", -1), _rank(node.inputs[0])):
            return self.unknown(node, "normalizes over the channel axis")
        return self.pass_through(node)

    def op_Pad(self, node: ir.Node) -> None:
        d = self.dim(node.inputs[0])
        rank = _rank(node.inputs[0])
        pads = Graph.constant(node.inputs[1]) if len(node.inputs) > 1 else None
        axes = Graph.constant(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] is not None else None
        if pads is None:
            return self.unknown(node, "has non-constant pads")
        axes = list(range(rank)) if axes is None else [_norm(int(a), rank) for a in axes]
        if d.axis in axes:
            k = axes.index(d.axis)
            if pads[k] != 0 or pads[k + len(axes)] != 0:
                return self.unknown(node, "pads the channel axis")
        return self.pass_through(node)

    def op_Resize(self, node: ir.Node) -> None:
        axis = self.dim(node.inputs[0]).axis
        if _dim(node.inputs[0], axis) != _dim(node.outputs[0], axis):
            return self.unknown(node, "resizes the channel axis")
        return self.pass_through(node)

    def op_Flatten(self, node: ir.Node) -> None:
        shape = Graph.static_shape(node.inputs[0])
        start = _norm(int_attr(node, "axis", 1), len(shape))
        d = self.dim(node.inputs[0])
        if d.axis < start:
            return self.unknown(node, "merges the channel axis into the leading axis")
        return self._merge(node, shape, d, first=start, out_axis=1)

    def op_Reshape(self, node: ir.Node) -> None:
        shape, target = Graph.static_shape(node.inputs[0]), Graph.static_shape(node.outputs[0])
        d = self.dim(node.inputs[0])
        if shape is None or target is None:
            return self.unknown(node, "has an unknown shape")
        before = int(np.prod(shape[:d.axis]))
        for j in range(len(target)):
            if int(np.prod(target[:j])) == before and target[j] % shape[d.axis] == 0 and target[j] > 0:
                inner = target[j] // shape[d.axis]
                if int(np.prod(shape[d.axis + 1:])) % inner == 0:
                    self.set(node.outputs[0], j, np.repeat(d.atoms, inner))
                    return None
        return self.unknown(node, "splits the channel axis or merges it with the axes before it")

    def _merge(self, node: ir.Node, shape, d: ChannelAxis, first: int, out_axis: int) -> None:
        outer = int(np.prod(shape[first:d.axis]))
        inner = int(np.prod(shape[d.axis + 1:]))
        self.set(node.outputs[0], out_axis, np.tile(np.repeat(d.atoms, inner), outer))

    # -- the groups ----------------------------------------------------------------------
    def build(self) -> ChannelAnalysis:
        count = len(self.units.parent)
        unit_of_atom = np.array([self.units.find(a) for a in range(count)], dtype=np.int64)
        group_of_atom = np.array([self.groups.find(a) for a in range(count)], dtype=np.int64)
        groups: dict[int, DependencyGroup] = {}
        unit_index: dict[int, tuple[DependencyGroup, int]] = {}
        for atom in range(count):
            root, unit = int(group_of_atom[atom]), int(unit_of_atom[atom])
            group = groups.setdefault(root, DependencyGroup(len(groups), []))
            if unit not in unit_index:
                unit_index[unit] = (group, len(group.units))
                group.units.append(unit)
            if atom in self.producer_of_atom and self.producer_of_atom[atom] not in group.producers:
                group.producers.append(self.producer_of_atom[atom])
            for reason in self.frozen.get(atom, []):
                if reason not in group.reasons:
                    group.reasons.append(reason)
        roots_of_value = {name: list(dict.fromkeys(group_of_atom[d.atoms].tolist())) for name, d in self.dims.items()}
        consumed = {(n.name, v.name) for n, v in self.consumers}
        for node in self.graph.nodes:
            for value in [*node.inputs, *node.outputs]:
                for root in roots_of_value.get(value.name, []) if value is not None else []:
                    group = groups[root]
                    if node.name not in group.nodes:
                        group.nodes.append(node.name)
                    if (node.name, value.name) in consumed and node.name not in group.consumers:
                        group.consumers.append(node.name)
        for name, d in self.dims.items():
            owners = group_of_atom[d.atoms]
            for root in dict.fromkeys(owners.tolist()):
                group = groups[root]
                positions = np.flatnonzero(owners == root)
                channels = np.array([unit_index[int(unit_of_atom[a])][1] for a in d.atoms[positions]], np.int64)
                group.members.append(GroupMember(name, d.axis, positions, channels))
        for group in groups.values():
            if not group.producers and not group.reasons:
                group.reasons.append("no layer with weights creates these channels")
        return ChannelAnalysis(self.dims, unit_of_atom, list(groups.values()), self.producers, self.consumers,
                               self.norms)


def find_dependency_groups(graph: Graph) -> ChannelAnalysis:
    """The dependency groups of `graph` (a frontend-loaded graph with static shapes)."""
    tracker = _Tracker(graph)
    tracker.run()
    return tracker.build()


def _rank(value: ir.Value | None) -> int:
    return 0 if value is None or value.shape is None else len(value.shape)


def _dim(value: ir.Value, axis: int) -> int:
    return int(value.shape[axis])


def _norm(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _axes_input(node: ir.Node, rank: int) -> list[int] | None:
    """The `axes` of Squeeze/Unsqueeze/Reduce*: the attribute (older opsets) or the constant second input."""
    attr = node.attributes.get("axes")
    if attr is not None:
        return [_norm(int(a), rank) for a in attr.value]
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        axes = Graph.constant(node.inputs[1])
        if axes is not None:
            return [_norm(int(a), rank) for a in np.atleast_1d(axes)]
    return None
